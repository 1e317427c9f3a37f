"""The per-step product of 20 rows on two cores, four ways (benchmarks/results/medium.md):
OpenBLAS's own two threads; Wᵀ-first forms; the columns halved over two Python
threads on one OpenBLAS thread each; and the same halves cut into 64-column blocks
(OpenBLAS's no-packing small kernel, products of at most 10⁶ multiply-adds).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/medium_probes/two_threads.py
"""
import threading
import time

import numpy as np
import threadpoolctl


def timed(f, n=300, rounds=7):
    for _ in range(20):
        f()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        per.append((time.perf_counter() - t0) / n)
    return float(np.median(per)) * 1e6


class Halves:
    """A worker thread that runs its share of the products while the caller runs its own."""

    def __init__(self):
        self.go, self.done, self.jobs = threading.Semaphore(0), threading.Semaphore(0), ()
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self):
        while True:
            self.go.acquire()
            for a, b, o in self.jobs:
                np.matmul(a, b, out=o)
            self.done.release()

    def __call__(self, mine, theirs):
        self.jobs = theirs
        self.go.release()
        for a, b, o in mine:
            np.matmul(a, b, out=o)
        self.done.acquire()


def main():
    rng = np.random.default_rng(0)
    pair = Halves()
    print(threadpoolctl.threadpool_info()[0].get("architecture"), "kernels")
    print("| (M, K, N) | OpenBLAS 2 threads µs | Wᵀ hᵀ into o.T µs | halves, 1 thread each µs | 64-col blocks, halves µs | best other / OpenBLAS |")
    print("|---|---:|---:|---:|---:|---:|")
    for M, K, N in [(20, 650, 650), (20, 650, 1300), (20, 650, 2600)]:
        h = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((K, N)).astype(np.float32)
        WT = np.ascontiguousarray(W.T)
        o = np.empty((M, N), np.float32)
        half = N // 2
        halves = [(h, np.ascontiguousarray(W[:, lo:hi]), o[:, lo:hi]) for lo, hi in ((0, half), (half, N))]
        blocks = [(h, np.ascontiguousarray(W[:, lo:lo + 64]), o[:, lo:lo + 64]) for lo in range(0, N, 64)]
        k = len(blocks) // 2
        with threadpoolctl.threadpool_limits(2):
            own = timed(lambda: np.matmul(h, W, out=o))
            wt = timed(lambda: np.matmul(WT, h.T, out=o.T))
        with threadpoolctl.threadpool_limits(1):
            split = timed(lambda: pair(halves[:1], halves[1:]))
            blocked = timed(lambda: pair(blocks[:k], blocks[k:]))
        best = min(wt, split, blocked)
        print(f"| {(M, K, N)} | {own:.0f} | {wt:.0f} | {split:.0f} | {blocked:.0f} | {own / best:.2f}x |")


if __name__ == "__main__":
    main()
