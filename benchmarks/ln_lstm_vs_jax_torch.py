"""The layer-normalised LSTM (gr.cells.ln_lstm, Ba et al. 2016) at the medium
size, forward + backward of one sequence, graphrnn against JAX (jit of
value_and_grad over lax.scan, graphrnn/contenders/jax_cells.py) and a PyTorch loop
with autograd (the input product and its layer norm hoisted out of the loop,
as graphrnn's compiler does and as a careful user writes it).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. \\
        .venv/bin/python benchmarks/ln_lstm_vs_jax_torch.py [--size 20,35,650,650] [--repeats 5]

Sizes are N, T, D, H; float32; each contender warmed up, then timed
interleaved with the others, fastest of --repeats. Gradients agree with
JAX's before anything is timed. Results: benchmarks/results/ln_lstm.md.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import graphrnn as gr  # noqa: E402


def torch_loop(params, xs, dhs):
    """The same cell in torch ops, in a Python loop, with autograd (the
    contender `graphrnn bench` runs: contenders.TorchLoopLNLSTM)."""
    import torch

    from graphrnn.contenders.cells import TorchLoopLNLSTM
    model = TorchLoopLNLSTM(params)
    x, d = torch.from_numpy(xs), torch.from_numpy(dhs)

    def run():
        _, gx = model(x, d)
        return {k: v.grad for k, v in model.p.items()}, gx
    return run


def fastest(fns, repeats):
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="20,35,650,650")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="BLAS / torch / XLA threads (default: all)")
    args = ap.parse_args(argv)
    n, t, d, h = (int(v) for v in args.size.split(","))
    import jax
    import torch
    from graphrnn.contenders import jax_cells as jc
    from threadpoolctl import threadpool_info
    if args.threads:
        torch.set_num_threads(args.threads)
    cell = gr.cells.ln_lstm(d, h)
    rng = np.random.default_rng(0)
    params = {k: v for k, v in cell.init_params(seed=0, dtype=np.float32).items()}
    params = {k: (v + rng.uniform(-0.1, 0.1, v.shape)).astype(np.float32) for k, v in params.items()}
    xs = rng.uniform(-1, 1, (n, t, d)).astype(np.float32)
    dhs = rng.uniform(-1, 1, (n, t, h)).astype(np.float32)

    def graphrnn(engine):
        def f():
            run = gr.unroll(cell, params, xs, engine=engine)
            g = run.backward(dhs)
            return g.params, g.xs, run.engine
        return f
    fns = {"graphrnn numpy": graphrnn("numpy"), "graphrnn native": graphrnn("native"),
           "jax": jc.JaxCell(cell, params, xs, dhs), "torch loop": torch_loop(params, xs, dhs)}
    # agreement first (float32: relative to the largest entry)
    gp, gx = fns["jax"].gradients()
    tp, tx = fns["torch loop"]()
    for name in ("graphrnn numpy", "graphrnn native"):
        p, x, engine = fns[name]()
        assert engine == name.split()[1], (name, engine)
        err = max(float(np.max(np.abs(p[k] - gp[k])) / np.max(np.abs(gp[k]))) for k in gp)
        terr = max(float(np.max(np.abs(tp[k].numpy() - gp[k])) / np.max(np.abs(gp[k]))) for k in gp)
        print(f"{name}: max relative gradient difference to jax {err:.1e} (torch to jax {terr:.1e})")
    for f in fns.values():  # warm up (compiles jit and numba)
        f()
    best = fastest(fns, args.repeats)
    blas = sorted({f"{i['internal_api']} {i.get('architecture', '')} ({i['num_threads']} threads)"
                   for i in threadpool_info() if i["user_api"] == "blas"})
    print(f"ln_lstm N={n} T={t} D={d} H={h} float32, forward+backward, fastest of {args.repeats}")
    print(f"BLAS: {', '.join(blas)}; jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    for k, v in best.items():
        print(f"  {k:16s} {v * 1e3:9.1f} ms   jax/this {best['jax'] / v:5.2f}x   "
              f"torch loop/this {best['torch loop'] / v:5.2f}x")


if __name__ == "__main__":
    main()
