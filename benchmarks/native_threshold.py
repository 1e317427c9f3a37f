"""Where the native loops pay: numpy loops against the fused and the staged
native loops, forward + backward, over batch size N and hidden size H.

    .venv/bin/python benchmarks/native_threshold.py [--cells rnn,gru,lstm,mgu] [--dtype float32]

Each size times the three side by side in one process, interleaved
(``graphrnn.bench.time_interleaved``), and prints each one's time relative to
the numpy loops. ``graphrnn.emit.numba_runtime.choose_form`` takes its
thresholds from this table (benchmarks/results/native_threshold.md).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import graphrnn as gr
from graphrnn import bench
from graphrnn.emit import numba_runtime
from graphrnn.unroll import Run, _prepare


def native_run(cell, form):
    """A callable running forward + backward on the native loops of ``form``."""
    plan = gr.compile_cell(cell)

    def make(params, xs, dhs):
        xp, dtype, xs_, s0, n, t = _prepare(cell, params, xs, None)
        kernels = numba_runtime._kernels(plan, dtype)
        kernels.compile([f"forward_{form}", numba_runtime.backward_driver(form, True, True)])
        loops = numba_runtime._native(kernels, form, True)

        def run():
            xp_, dtype_, xs2, s0_, n_, t_ = _prepare(cell, params, xs, None)
            return Run(plan, xp_, params, xs2, s0_, n_, t_, dtype_, loops).backward(dhs)
        return run
    return make


def measure(kind, N, T, D, H, dtype, rounds):
    cell = gr.cells.get(kind)(D, H)
    params = cell.init_params(seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (N, T, D)).astype(dtype)
    dhs = rng.uniform(-1, 1, (N, T, H)).astype(dtype)
    fns = {"numpy": lambda: gr.unroll(cell, params, xs, engine="numpy").backward(dhs)}
    for form in ("fused", "staged"):
        fns[form] = native_run(cell, form)(params, xs, dhs)
    res = bench.time_interleaved(fns, rounds=rounds, target_s=0.02)
    base = res["numpy"]["median_s"]
    plan = gr.compile_cell(cell)
    chosen = numba_runtime.choose_form(plan, N, T) or "numpy"
    return {k: base / v["median_s"] for k, v in res.items()}, base, chosen


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default="rnn,gru,lstm,mgu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", default="1,8,32")
    ap.add_argument("--h", default="16,64,128,256,650")
    ap.add_argument("--t", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    print("| cell | N | H | numpy ms | fused x | staged x | auto picks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for kind in args.cells.split(","):
        for N in (int(v) for v in args.n.split(",")):
            for H in (int(v) for v in args.h.split(",")):
                speed, base, chosen = measure(kind, N, args.t, H, H, dtype, args.rounds)
                print(f"| {kind} | {N} | {H} | {base * 1e3:.3f} | {speed['fused']:.2f} | "
                      f"{speed['staged']:.2f} | {chosen} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
