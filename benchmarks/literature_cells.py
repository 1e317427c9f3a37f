"""Published cells that need the primitives of issue 17, declared with the public
spellings, against an independent autodiff (jax.grad of the same graph over
lax.scan, benchmarks/jax_contenders.py) in float64 on both engines, and against
central differences (check_gradients).

    PYTHONPATH=. .venv/bin/python benchmarks/literature_cells.py
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import graphrnn as gr  # noqa: E402


def antisymmetric(input_size, hidden_size, eps=0.5, gamma=0.1):
    c = gr.CellBuilder("antisymmetric")
    x = c.input("x", input_size)                  # (N, D) per step
    h = c.state("h", hidden_size)                 # (N, H), carried through time
    V = c.param("V", (input_size, hidden_size))
    W = c.param("W", (hidden_size, hidden_size))
    b = c.param("b", hidden_size, init="zeros")
    I = c.const(np.eye(hidden_size), name="I")    # a constant array: not trained
    A = W - W.T - gamma * I                       # parameters only: computed once per call
    c.update(h=h + eps * gr.tanh(x @ V + b + h @ A))
    return c.build()




def softsign_gru(input_size, hidden_size):
    H = hidden_size
    c = gr.CellBuilder("softsign_gru")
    x, h = c.input("x", input_size), c.state("h", H)
    Wx, Wh, b = c.param("Wx", (input_size, 3 * H)), c.param("Wh", (H, 3 * H)), c.param("b", 3 * H)
    xw = x @ Wx + b
    z = gr.sigmoid(xw[:, :H] + h @ Wh[:, :H])
    r = gr.sigmoid(xw[:, H:2 * H] + h @ Wh[:, H:2 * H])
    a = xw[:, 2 * H:] + (r * h) @ Wh[:, 2 * H:]
    c.update(h=(1 - z) * h + z * (a / (1 + abs(a))))
    return c.build()


def lipschitz(input_size, hidden_size, beta=0.75, gamma=0.01, eps=0.1):
    """Erichson et al. 2021: A = (1-β)(M + Mᵀ) + β(M - Mᵀ) - γI; h' = h + ε(A h + tanh(W h + U x + b))."""
    H = hidden_size
    c = gr.CellBuilder("lipschitz")
    x, h = c.input("x", input_size), c.state("h", H)
    M, W = c.param("M", (H, H)), c.param("W", (H, H))
    U, b = c.param("U", (input_size, H)), c.param("b", H)
    A = (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * c.const(np.eye(H))
    c.update(h=h + eps * (h @ A.T + gr.tanh(h @ W.T + x @ U + b)))
    return c.build()


def phased_lstm(input_size, hidden_size, r_on=0.05, alpha=0.001):
    """Neil et al. 2016: a time gate k from the phase of a counter state t."""
    H = hidden_size
    cb = gr.CellBuilder("phased_lstm")
    x, h, c, t = cb.input("x", input_size), cb.state("h", H), cb.state("c", H), cb.state("t", 1)
    Wx, Wh, b = cb.param("Wx", (input_size, 4 * H)), cb.param("Wh", (H, 4 * H)), cb.param("b", 4 * H)
    tau = cb.param("tau", H, init="uniform(2, 5)")
    s = cb.param("s", H, init="uniform(0, 1)")
    phi = ((t - s) / tau) % 1.0
    k = gr.where(phi < 0.5 * r_on, 2 * phi / r_on, gr.where(phi < r_on, 2 - 2 * phi / r_on, alpha * phi))
    a = x @ Wx + b + h @ Wh
    f, g, i, o = (gr.sigmoid(a[:, :H]), gr.tanh(a[:, H:2 * H]), gr.sigmoid(a[:, 2 * H:3 * H]),
                  gr.sigmoid(a[:, 3 * H:]))
    c_new = f * c + i * g
    h_new = o * gr.tanh(c_new)
    cb.update(h=k * h_new + (1 - k) * h, c=k * c_new + (1 - k) * c, t=t + 1.0)
    return cb.build()


def layer_norm_gru(input_size, hidden_size):
    H = hidden_size
    c = gr.CellBuilder("ln_gru")
    x, h = c.input("x", input_size), c.state("h", H)
    Wx, Wh = c.param("Wx", (input_size, 3 * H)), c.param("Wh", (H, 3 * H))
    g1, g2, b = c.param("g1", 3 * H, init="ones"), c.param("g2", 3 * H, init="ones"), c.param("b", 3 * H)
    xw = gr.cells.layer_norm(x @ Wx, g1) + b
    hw = gr.cells.layer_norm(h @ Wh, g2)
    z, r = gr.sigmoid(xw[:, :H] + hw[:, :H]), gr.sigmoid(xw[:, H:2 * H] + hw[:, H:2 * H])
    c.update(h=(1 - z) * h + z * gr.tanh(xw[:, 2 * H:] + r * hw[:, 2 * H:]))
    return c.build()


EXTRA = {"antisymmetric": antisymmetric, "softsign_gru": softsign_gru, "lipschitz": lipschitz,
         "phased_lstm": phased_lstm, "ln_gru": layer_norm_gru}
BUILT_IN = ("peephole_lstm", "cifg_lstm", "ln_lstm", "indrnn", "sru")


def main():
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax_contenders as jc
    from graphrnn.testing import check_gradients
    cells = {**{n: gr.cells.CELLS[n] for n in BUILT_IN}, **EXTRA}
    print(f"{'cell':16s} {'vs jax numpy':>12s} {'vs jax native':>13s} {'engine':>7s} {'central diff':>12s}")
    for name, make in cells.items():
        cell = make(3, 5)
        rng = np.random.default_rng(0)
        params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in cell.init_params().items()}
        xs = rng.uniform(-1, 1, (4, 6, 3))
        dhs = rng.uniform(-1, 1, (4, 6, cell.output_size))
        gp, gx = jc.JaxCell(cell, params, xs, dhs).gradients()
        errs, engine = [], ""
        for eng in ("numpy", "native"):
            run = gr.unroll(cell, params, xs, engine=eng)
            g = run.backward(dhs)
            err = max(np.max(np.abs(g.params[k] - gp[k])) / max(1.0, np.max(np.abs(gp[k]))) for k in gp)
            errs.append(max(err, float(np.max(np.abs(g.xs - gx)))))
            engine = run.engine
        report = check_gradients(make(3, 4), batch=2, steps=4, seed=2, raise_on_failure=False)
        print(f"{name:16s} {errs[0]:12.1e} {errs[1]:13.1e} {engine:>7s} {'ok' if report.ok else 'FAIL':>5s} "
              f"{report.max_abs:.1e}")


if __name__ == "__main__":
    main()
