"""One training step of a PTB preset's model timed alone, and what it means
per epoch (1327 steps at N=20, T=35): the figure behind docs/ptb.md's
"timed alone" line, free of whatever else shared the machine during the run.

    .venv/bin/python benchmarks/ptb_step_time.py --preset cpu --cell lstm
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from graphrnn import bench
from graphrnn.tasks.ptb import PRESETS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="steps per round")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    V, N, T = 10000, p["batch"], p["steps"]
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    step = bench.lm_graphrnn_step(V, p["wordvec"], p["hidden"], p["layers"], args.cell, p["dropout"],
                                  p["tie"], xs, ts)
    for _ in range(5):
        step()
    rounds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        rounds.append((time.perf_counter() - t0) / args.steps)
    m = float(np.median(rounds))
    print(f"{args.preset} {args.cell}: {m * 1e3:.1f} ms per step (median of {args.rounds} x {args.steps}; "
          f"numpy BLAS {bench.numpy_blas()}) -> {m * 1327:.0f} s of training per epoch of 1327 steps")


if __name__ == "__main__":
    main()
