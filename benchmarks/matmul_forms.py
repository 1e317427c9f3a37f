"""Which form of the per-step backward product OpenBLAS runs fastest.

BPTT computes dh = dA @ Whᵀ at every step, with few rows (the batch). The same
numbers come out of (Wh @ dAᵀ)ᵀ, which hands OpenBLAS a different packing
problem. This measures both, interleaved in one process, over the shapes the
benchmarks use and a few around them, and writes
benchmarks/results/matmul_forms.md. MatMul.backward picks the transposed form
from these measurements (rows <= 32, weight >= 16384 entries, numpy).

    .venv/bin/python benchmarks/matmul_forms.py
"""
import os
import sys
import time

import numpy as np

SHAPES = [(1, 16), (20, 64), (20, 200), (32, 200), (20, 650), (64, 650), (128, 200)]  # (rows, H), weight (H, 3H)


def median_us(fns, rounds=30, reps=10):
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            samples[k].append((time.perf_counter() - t0) / reps * 1e6)
    return {k: float(np.median(v)) for k, v in samples.items()}


def main(out="benchmarks/results/matmul_forms.md"):
    rng = np.random.default_rng(0)
    lines = ["| rows N | H | dA @ Whᵀ (µs) | (Wh @ dAᵀ)ᵀ + copy (µs) | ratio |", "|---:|---:|---:|---:|---:|"]
    for n, h in SHAPES:
        w = rng.standard_normal((h, 3 * h)).astype(np.float32)
        d = rng.standard_normal((n, 3 * h)).astype(np.float32)
        assert np.allclose(d @ w.T, (w @ d.T).T, rtol=1e-4, atol=1e-3)
        t = median_us({"plain": lambda: d @ w.T,
                       "transposed": lambda: np.ascontiguousarray((w @ d.T).T)})
        lines.append(f"| {n} | {h} | {t['plain']:.1f} | {t['transposed']:.1f} | {t['plain'] / t['transposed']:.2f}x |")
        print(lines[-1], flush=True)
    text = (f"Per-step backward product, float32, numpy {np.__version__}, "
            f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
            "ratio = plain / transposed (above 1: the transposed form is faster).\n\n" + "\n".join(lines) + "\n")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
