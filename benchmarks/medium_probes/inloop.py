"""The per-step product h @ Wh timed inside a medium ln_lstm unroll + backward
and alone, alternating in one process (benchmarks/results/medium.md)."""
import time
import numpy as np
import graphrnn as gr
from graphrnn import primitives as P
N, T, D, H = 20, 35, 650, 650
cell = gr.cells.ln_lstm(D, H)
params = cell.init_params(seed=0, dtype=np.float32)
rng = np.random.default_rng(0)
xs = rng.uniform(-1, 1, (N, T, D)).astype(np.float32)
dhs = rng.uniform(-1, 1, (N, T, H)).astype(np.float32)
orig_f, orig_b = P.MatMul.forward, P.MatMul.backward
inloop = {"forward": [], "backward": []}


def fwd(self, xp, a, w, out=None):
    t0 = time.perf_counter()
    r = orig_f(self, xp, a, w, out=out)
    if a.shape[0] == N:
        inloop["forward"].append(time.perf_counter() - t0)
    return r


def bwd(self, xp, dy, xs_, y, needs):
    t0 = time.perf_counter()
    r = orig_b(self, xp, dy, xs_, y, needs)
    if dy.shape[0] == N:
        inloop["backward"].append(time.perf_counter() - t0)
    return r


P.MatMul.forward, P.MatMul.backward = fwd, bwd
W = params["Wh"]
h = rng.standard_normal((N, H)).astype(np.float32)
dy = rng.standard_normal((N, 4 * H)).astype(np.float32)
alone = {"forward": [], "backward": []}
mm = P.MatMul()
for r in range(6):
    gr.unroll(cell, params, xs).backward(dhs)
    for _ in range(T):
        t0 = time.perf_counter(); orig_f(mm, np, h, W); alone["forward"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); orig_b(mm, np, dy, (None, W), None, (True, False)); alone["backward"].append(time.perf_counter() - t0)
for k in ("forward", "backward"):
    print(f"{k}: in the loop median {np.median(inloop[k][T:]) * 1e6:.0f} us, alone median {np.median(alone[k][T:]) * 1e6:.0f} us")
