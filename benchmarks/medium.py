"""gr.unroll + backward at the medium size (N, T, D, H) = (20, 35, 650, 650),
float32, graphrnn's default engine against JAX (jit of value_and_grad over
lax.scan) and PyTorch (nn.LSTM / nn.GRU; a loop with autograd for the MGU and
the layer-normalised LSTM), every contender interleaved in one process
(graphrnn.bench's contenders and timer), with the share of the SGEMM peak
measured in the same process, and the per-step matrix products alone (numpy
against jax.jit) as the ceiling of what a per-step loop over BLAS can reach.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. \\
        .venv/bin/python benchmarks/medium.py [--threads 1] [--rounds 5] [--cells lstm gru mgu ln_lstm]

--threads sets numpy's BLAS, torch's and XLA's threads alike and holds the
process to that many cores (it re-runs the script in a fresh interpreter, since
OpenBLAS and XLA read it at load).
Results: benchmarks/results/medium.md.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np


def gemm_ceiling(N=20, H=650, G=4, reps=20, rounds=5):
    """Per-step products of an H=650 LSTM, numpy (as graphrnn calls them) and jax.jit."""
    import jax
    import jax.numpy as jnp
    rng = np.random.default_rng(0)
    h = rng.standard_normal((N, H)).astype(np.float32)
    W = rng.standard_normal((H, G * H)).astype(np.float32)
    dy = rng.standard_normal((N, G * H)).astype(np.float32)
    out, dh = np.empty((N, G * H), np.float32), np.empty((N, H), np.float32)
    jf, jb = jax.jit(lambda a, b: a @ b), jax.jit(lambda d, w: d @ w.T)
    jh, jW, jdy = jnp.asarray(h), jnp.asarray(W), jnp.asarray(dy)
    cases = {
        "h @ Wh (numpy, out=)": lambda: np.matmul(h, W, out=out),
        "h @ Wh (jax.jit)": lambda: jf(jh, jW).block_until_ready(),
        "dy @ Wh.T (numpy, out=)": lambda: np.matmul(dy, W.T, out=dh),
        "(Wh @ dy.T).T (numpy, copied back)": lambda: np.ascontiguousarray(np.matmul(W, dy.T).T),
        "dy @ Wh.T (jax.jit)": lambda: jb(jdy, jW).block_until_ready(),
    }
    best = {k: np.inf for k in cases}
    for f in cases.values():
        f()
    for _ in range(rounds):
        for k, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            best[k] = min(best[k], (time.perf_counter() - t0) / reps)
    return best, 2 * N * H * G * H


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "mgu", "ln_lstm"])
    ap.add_argument("--size", default="20,35,650,650")
    args = ap.parse_args(argv)
    if args.threads and os.environ.get("_MEDIUM_CHILD") != "1":
        t = str(args.threads)
        env = dict(os.environ, _MEDIUM_CHILD="1", OPENBLAS_NUM_THREADS=t, OMP_NUM_THREADS=t,
                   XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'false' if t == '1' else 'true'} "
                             f"intra_op_parallelism_threads={t}")
        # XLA's CPU client starts threads of its own whatever the flags say (its
        # per-step product ran at 113% of one core's SGEMM rate under
        # --threads 1): the child is held to that many cores, so that every
        # contender gets the same
        cpus = sorted(os.sched_getaffinity(0))[:args.threads]
        return subprocess.run([sys.executable, *sys.argv], env=env,
                              preexec_fn=lambda: os.sched_setaffinity(0, cpus)).returncode
    import torch

    from graphrnn import bench
    size = tuple(int(v) for v in args.size.split(","))
    torch.set_num_threads(bench.numpy_threads())
    print(f"BLAS: numpy {bench.numpy_blas()} ({bench.numpy_threads()} threads), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; "
          f"load average {os.getloadavg()[0]:.1f}")
    peaks = [bench.sgemm_peak(reps=12)]
    rows = []
    for cell in args.cells:
        fns, info = bench.make_case(cell, size, impls=("graphrnn", "torch", "jax"))
        tm = bench.time_interleaved(fns, args.rounds, target_s=0.0, warmup=1)
        rows.append((cell, info, tm))
        peaks.append(bench.sgemm_peak(reps=12))
        print(f"  {cell}: " + "  ".join(f"{k} {v['median_s'] * 1e3:.1f} ms" for k, v in tm.items()), flush=True)
    peak = max(peaks)
    print(f"\nSGEMM peak (numpy 1024^3, best of the {len(peaks)} measured between cases): {peak:.1f} GFLOP/s; "
          f"load average after {os.getloadavg()[0]:.1f}")
    print("\n| cell | contender | median ms | other / graphrnn | GFLOP/s | % SGEMM peak |")
    print("|---|---|---:|---:|---:|---:|")
    for cell, info, tm in rows:
        fl = bench.gemm_flops(cell, size)
        g = tm["graphrnn"]["median_s"]
        for impl, v in tm.items():
            name = info["torch_form"] if impl == "torch" else impl
            ratio = "" if impl == "graphrnn" else f"{v['median_s'] / g:.2f}x"
            gf = fl / v["median_s"] / 1e9
            print(f"| {cell} | {name} | {v['median_s'] * 1e3:.1f} | {ratio} | {gf:.1f} | {100 * gf / peak:.0f} |")
    best, fl = gemm_ceiling(size[0], size[3])
    print("\nPer-step product of the LSTM (20 x 650 @ 650 x 2600 and its transpose), best of 5 x 20:\n")
    print("| product | us | GFLOP/s | % SGEMM peak |")
    print("|---|---:|---:|---:|")
    for k, s in best.items():
        print(f"| {k} | {s * 1e6:.0f} | {fl / s / 1e9:.1f} | {100 * fl / s / 1e9 / peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
