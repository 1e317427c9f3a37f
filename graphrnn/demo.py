"""`graphrnn demo`: the whole engine end to end in well under a minute.

Declares a cell that is not built in (a gated leaky unit), checks its
gradients against central differences, shows what the compiler made of it,
trains it on a small copy task with BPTT, and draws its diagrams.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import files
from . import graph as gr
from .plan import compile_cell
from .testing import check_gradients
from .unroll import unroll


def gated_leaky_unit(input_size, hidden_size):
    """A cell that is not built in: one gate f mixes the old state with a tanh candidate."""
    H = hidden_size
    c = gr.CellBuilder("gated_leaky")
    x = c.input("x", input_size)
    h = c.state("h", H)
    Wx = c.param("Wx", (input_size, 2 * H))
    Uf = c.param("Uf", (H, H))
    Uh = c.param("Uh", (H, H))
    bf = c.param("bf", (H,), init="ones")  # start by remembering
    xw = x @ Wx
    f = gr.sigmoid(xw[:, :H] + h @ Uf + bf)
    c.update(h=f * h + (1 - f) * gr.tanh(xw[:, H:] + h @ Uh))
    return c.build()


def _train_delay(cell_factory, steps=1500, seed=0):
    """Learn y_t = x_{t-2} (recall two steps back) with a linear read-out; returns losses."""
    rng = np.random.default_rng(seed)
    D, H, N, T = 1, 16, 32, 12
    cell = cell_factory(D, H)
    params = cell.init_params(seed=seed, dtype=np.float64)
    params["Wy"] = rng.normal(0, 0.3, (H, 1))
    lr, losses = 1.0, []
    cell_params = {k: v for k, v in params.items() if k != "Wy"}
    for _ in range(steps):
        xs = rng.uniform(-1, 1, (N, T, D))
        ys = np.zeros_like(xs)
        ys[:, 2:] = xs[:, :-2]
        run = unroll(cell, cell_params, xs)
        pred = run.hs @ params["Wy"]
        err = pred - ys
        losses.append(float((err ** 2).mean()))
        dpred = 2 * err / err.size
        dWy = np.einsum("nth,nto->ho", run.hs, dpred)
        g = run.backward(dpred @ params["Wy"].T, need_xs=False)
        for k, v in g.params.items():
            np.clip(v, -1, 1, out=v)
            cell_params[k] -= lr * v
        params["Wy"] -= lr * dWy
    return losses


def demo(out_dir="runs/demo"):
    t0 = time.perf_counter()
    print("1. Declare a cell from primitives (a gated leaky unit):")
    cell = gated_leaky_unit(3, 4)
    print(f"   {cell}")

    print("\n2. Check its hand-written local backwards, composed over 4 steps, "
          "against float64 central differences:")
    report = check_gradients(cell, batch=2, steps=4, seed=0)
    print("   " + str(report).replace("\n", "\n   "))

    print("\n3. What the compiler made of it (hoisted = once for all steps):")
    print("   " + compile_cell(cell).summary().replace("\n", "\n   "))

    print("\n4. Train it with BPTT to recall the input from two steps back:")
    losses = _train_delay(gated_leaky_unit)
    # Each batch is new random data, so one step's loss is noisy: every figure
    # printed is the same quantity, the mean over 10 steps, so they compare.
    window = 10
    for end in (window, 250, 500, 1000, len(losses)):
        print(f"   steps {end - window + 1:4d}-{end:<4d}  mean mse {np.mean(losses[end - window:end]):.4f}")
    first, last = np.mean(losses[:window]), np.mean(losses[-window:])
    print(f"   mean mse fell from {first:.4f} (steps 1-{window}) to {last:.4f} "
          f"(steps {len(losses) - window + 1}-{len(losses)}): {first / last:.0f}x lower")

    print("\n5. Draw it:")
    files.make_folder(out_dir, "output folder")
    from .render import render
    import shutil
    ext = ".svg" if shutil.which("dot") else ".dot"
    for suffix, kw in (("cell", {}), ("unrolled", {"unroll": 3}), ("backward", {"backward": True})):
        path = os.path.join(out_dir, f"gated_leaky-{suffix}{ext}")
        render(cell, path, **kw)
        print(f"   wrote {path}")
    if ext == ".dot":
        print("   (Graphviz's `dot` is missing: wrote .dot sources; apt-get install graphviz for SVG)")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s. Next: graphrnn train binary-addition, "
          "graphrnn render gru --unroll 4, graphrnn gradcheck lstm")
    return 0 if last < first / 3 else 1
