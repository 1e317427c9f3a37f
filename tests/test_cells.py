"""Every built-in cell against a hand-derived monolithic numpy implementation.

Each reference below is written the textbook way (time_layers.py style): one
forward per step keeping a cache, one backward per step in reverse with the
formulas derived by hand, and a driver that runs BPTT. The engine composes
local backwards of primitives instead; the two must agree to 1e-10 in float64.
Layouts and equations: graphrnn/cells.py docstring.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphrnn as gr
from graphrnn.testing import cell_sizes, check_engines, check_gradients, scaled_examples, unroll_args


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------- references
# step(p, x, s) -> (new state dict, cache);  back(p, cache, ds_new) -> (dp, dx, ds_old)

def rnn_ref(activation="tanh", bias=True):
    act = {"tanh": (np.tanh, lambda y: 1 - y * y),
           "sigmoid": (sigmoid, lambda y: y * (1 - y)),
           "relu": (lambda a: np.maximum(a, 0), lambda y: (y > 0).astype(float))}[activation]

    def step(p, x, s):
        h = s["h"]
        a = x @ p["Wx"] + h @ p["Wh"] + (p["b"] if bias else 0)
        hn = act[0](a)
        return {"h": hn}, (x, h, hn)

    def back(p, cache, ds):
        x, h, hn = cache
        da = ds["h"] * act[1](hn)
        dp = {"Wx": x.T @ da, "Wh": h.T @ da}
        if bias:
            dp["b"] = da.sum(0)
        return dp, da @ p["Wx"].T, {"h": da @ p["Wh"].T}
    return step, back


def gru_ref():
    def step(p, x, s):
        h = s["h"]
        H = h.shape[1]
        Wx, Wh, b = p["Wx"], p["Wh"], p["b"]
        z = sigmoid(x @ Wx[:, :H] + h @ Wh[:, :H] + b[:H])
        r = sigmoid(x @ Wx[:, H:2 * H] + h @ Wh[:, H:2 * H] + b[H:2 * H])
        hh = np.tanh(x @ Wx[:, 2 * H:] + (r * h) @ Wh[:, 2 * H:] + b[2 * H:])
        return {"h": (1 - z) * h + z * hh}, (x, h, z, r, hh)

    def back(p, cache, ds):
        x, h, z, r, hh = cache
        H = h.shape[1]
        Wx, Wh = p["Wx"], p["Wh"]
        dhn = ds["h"]
        dhh = dhn * z
        dh = dhn * (1 - z)
        dz = dhn * (hh - h)
        dt = dhh * (1 - hh ** 2)
        dWhh = (r * h).T @ dt
        dhr = dt @ Wh[:, 2 * H:].T
        dr = dhr * h
        dh += dhr * r
        dzp = dz * z * (1 - z)
        drp = dr * r * (1 - r)
        dA = np.hstack([dzp, drp, dt])
        dWh = np.hstack([h.T @ dzp, h.T @ drp, dWhh])
        dh += dzp @ Wh[:, :H].T + drp @ Wh[:, H:2 * H].T
        return {"Wx": x.T @ dA, "Wh": dWh, "b": dA.sum(0)}, dA @ Wx.T, {"h": dh}
    return step, back


def lstm_ref():
    def step(p, x, s):
        h, c = s["h"], s["c"]
        H = h.shape[1]
        A = x @ p["Wx"] + h @ p["Wh"] + p["b"]
        f, g = sigmoid(A[:, :H]), np.tanh(A[:, H:2 * H])
        i, o = sigmoid(A[:, 2 * H:3 * H]), sigmoid(A[:, 3 * H:])
        cn = f * c + g * i
        tc = np.tanh(cn)
        return {"h": o * tc, "c": cn}, (x, h, c, f, g, i, o, tc)

    def back(p, cache, ds):
        x, h, c, f, g, i, o, tc = cache
        dhn, dcn = ds["h"], ds["c"]
        dsum = dcn + dhn * o * (1 - tc ** 2)
        dA = np.hstack([dsum * c * f * (1 - f), dsum * i * (1 - g ** 2),
                        dsum * g * i * (1 - i), dhn * tc * o * (1 - o)])
        dp = {"Wx": x.T @ dA, "Wh": h.T @ dA, "b": dA.sum(0)}
        return dp, dA @ p["Wx"].T, {"h": dA @ p["Wh"].T, "c": dsum * f}
    return step, back


def lstm_nico_ref():
    def step(p, x, s):
        h, sc = s["h"], s["s"]
        xc = np.hstack([x, h])
        g = np.tanh(xc @ p["Wg"] + p["bg"])
        i = sigmoid(xc @ p["Wi"] + p["bi"])
        f = sigmoid(xc @ p["Wf"] + p["bf"])
        o = sigmoid(xc @ p["Wo"] + p["bo"])
        sn = g * i + sc * f
        return {"h": sn * o, "s": sn}, (xc, sc, g, i, f, o, sn)

    def back(p, cache, ds):
        xc, sc, g, i, f, o, sn = cache
        dsn = ds["s"] + ds["h"] * o
        pre = {"g": dsn * i * (1 - g ** 2), "i": dsn * g * i * (1 - i),
               "f": dsn * sc * f * (1 - f), "o": ds["h"] * sn * o * (1 - o)}
        dp, dxc = {}, 0
        for k, d in pre.items():
            dp["W" + k], dp["b" + k] = xc.T @ d, d.sum(0)
            dxc = dxc + d @ p["W" + k].T
        D = xc.shape[1] - sc.shape[1]
        return dp, dxc[:, :D], {"h": dxc[:, D:], "s": dsn * f}
    return step, back


def mgu_ref():
    def step(p, x, s):
        h = s["h"]
        H = h.shape[1]
        Wx, Wh, b = p["Wx"], p["Wh"], p["b"]
        f = sigmoid(x @ Wx[:, :H] + b[:H] + h @ Wh[:, :H])
        hh = np.tanh(x @ Wx[:, H:] + b[H:] + (f * h) @ Wh[:, H:])
        return {"h": (1 - f) * h + f * hh}, (x, h, f, hh)

    def back(p, cache, ds):
        x, h, f, hh = cache
        H = h.shape[1]
        Wx, Wh = p["Wx"], p["Wh"]
        dhn = ds["h"]
        dh = dhn * (1 - f)
        df = dhn * (hh - h)
        dt = dhn * f * (1 - hh ** 2)
        dfh = dt @ Wh[:, H:].T
        df += dfh * h
        dh += dfh * f
        dfp = df * f * (1 - f)
        dh += dfp @ Wh[:, :H].T
        dxw = np.hstack([dfp, dt])
        dWh = np.hstack([h.T @ dfp, (f * h).T @ dt])
        return {"Wx": x.T @ dxw, "Wh": dWh, "b": dxw.sum(0)}, dxw @ Wx.T, {"h": dh}
    return step, back


def reference_bptt(ref, params, xs, state0, dhs, dstate):
    """Forward over T steps, then BPTT in reverse; the output is state 'h'."""
    step, back = ref
    n, t, _ = xs.shape
    s, caches, hs = dict(state0), [], []
    for k in range(t):
        s, cache = step(params, xs[:, k], s)
        caches.append(cache)
        hs.append(s["h"])
    final = s
    dp = {k: np.zeros_like(v) for k, v in params.items()}
    dxs = np.zeros_like(xs)
    ds = {k: dstate[k].copy() for k in state0}
    for k in range(t - 1, -1, -1):
        ds["h"] = ds["h"] + dhs[:, k]
        g, dx, ds = back(params, caches[k], ds)
        for name, v in g.items():
            dp[name] += v
        dxs[:, k] = dx
    return np.stack(hs, axis=1), final, dp, dxs, ds


CASES = {
    "rnn": (lambda d, h: gr.cells.rnn(d, h), rnn_ref()),
    "rnn_sigmoid": (lambda d, h: gr.cells.rnn(d, h, activation="sigmoid"), rnn_ref("sigmoid")),
    "rnn_relu": (lambda d, h: gr.cells.rnn(d, h, activation="relu"), rnn_ref("relu")),
    "rnn_nobias": (lambda d, h: gr.cells.rnn(d, h, bias=False), rnn_ref(bias=False)),
    "gru": (gr.cells.gru, gru_ref()),
    "lstm": (gr.cells.lstm, lstm_ref()),
    "lstm_nico": (gr.cells.lstm_nico, lstm_nico_ref()),
    "mgu": (gr.cells.mgu, mgu_ref()),
}


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=scaled_examples(10))
@given(data=st.data(), sizes=cell_sizes())
def test_unroll_matches_hand_derived_forward_and_bptt(case, data, sizes):
    make, ref = CASES[case]
    cell = make(*sizes)
    params, xs, state0 = data.draw(unroll_args(cell), label="unroll args")
    el = st.floats(-1, 1, allow_subnormal=False)
    n, t = xs.shape[:2]
    dhs = data.draw(hnp.arrays(np.float64, (n, t, cell.output_size), elements=el), label="dhs")
    dstate = {k: data.draw(hnp.arrays(np.float64, (n, s), elements=el), label=f"d{k}")
              for k, s in cell.state_sizes().items()}

    run = gr.unroll(cell, params, xs, state0)
    g = run.backward(dhs, dstate)
    hs, final, dp, dxs, ds0 = reference_bptt(ref, params, xs, state0, dhs, dstate)

    close(run.hs, hs)
    for k in final:
        close(run.state[k], final[k])
    assert set(g.params) == set(dp)
    for k in dp:
        close(g.params[k], dp[k])
    close(g.xs, dxs)
    for k in ds0:
        close(g.state0[k], ds0[k])


@pytest.mark.parametrize("case", sorted(CASES))
def test_unrolled_cell_gradients_match_central_differences(case):
    make, _ = CASES[case]
    report = check_gradients(make(3, 4), batch=2, steps=4, seed=7)
    assert report.ok and report.max_abs < 1e-6
    assert {e.name for e in report.entries} >= {"xs", "state0['h']"}


def minimal_peephole(input_size, hidden_size):
    """A cell that is not built in: gates over concat([x, h]) with relu, exp and neg."""
    c = gr.CellBuilder("minimal_peephole")
    x = c.input("x", input_size)
    h = c.state("h", hidden_size)
    H = hidden_size
    W = c.param("W", (input_size + H, 2 * H))
    b = c.param("b", (2 * H,))
    p = c.param("p", (H,))  # peephole weights on the old state
    a = gr.concat([x, h]) @ W + b
    z = gr.sigmoid(-a[:, :H] + p * h)
    cand = gr.tanh(gr.relu(a[:, H:]) - 0.25 * gr.exp(-a[:, H:]))
    c.update(h=z * h + (1 - z) * cand)
    return c.build()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_user_declared_cell_gradients_match_central_differences(seed):
    cell = minimal_peephole(3, 2)
    report = check_gradients(cell, batch=2, steps=3, seed=seed)
    assert report.ok
    assert [e.name for e in report.entries] == ["param 'W'", "param 'b'", "param 'p'", "xs", "state0['h']"]


# --------------------------------------------------------------------------- cells from the literature
# Forward references written from each paper's equations (numpy, float64); the
# gradients are checked against central differences of the same cells below.

def _ln(v, g, eps=1e-5):
    m = v.mean(-1, keepdims=True)
    return (v - m) / np.sqrt(((v - m) ** 2).mean(-1, keepdims=True) + eps) * g


def peephole_step(p, x, s):
    h, c = s["h"], s["c"]
    H = h.shape[1]
    a = x @ p["Wx"] + h @ p["Wh"] + p["b"]
    f = sigmoid(a[:, :H] + p["p"][:H] * c)
    i = sigmoid(a[:, 2 * H:3 * H] + p["p"][H:2 * H] * c)
    cn = f * c + i * np.tanh(a[:, H:2 * H])
    o = sigmoid(a[:, 3 * H:] + p["p"][2 * H:] * cn)
    hn = o * np.tanh(cn)
    return {"h": hn, "c": cn}, hn


def cifg_step(p, x, s):
    h, c = s["h"], s["c"]
    H = h.shape[1]
    a = x @ p["Wx"] + h @ p["Wh"] + p["b"]
    g, i, o = np.tanh(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:])
    cn = (1 - i) * c + i * g
    hn = o * np.tanh(cn)
    return {"h": hn, "c": cn}, hn


def ln_lstm_step(p, x, s):
    h, c = s["h"], s["c"]
    H = h.shape[1]
    a = _ln(x @ p["Wx"], p["gx"]) + _ln(h @ p["Wh"], p["gh"]) + p["b"]
    f, g, i, o = sigmoid(a[:, :H]), np.tanh(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
    cn = f * c + i * g
    hn = o * np.tanh(_ln(cn, p["gc"]) + p["bc"])
    return {"h": hn, "c": cn}, hn


def indrnn_step(p, x, s):
    hn = np.maximum(x @ p["W"] + p["b"] + p["u"] * s["h"], 0)
    return {"h": hn}, hn


def sru_step(p, x, s):
    c = s["c"]
    H = c.shape[1]
    xw = x @ p["W"]
    f = sigmoid(xw[:, H:2 * H] + p["v"][:H] * c + p["b"][:H])
    r = sigmoid(xw[:, 2 * H:] + p["v"][H:] * c + p["b"][H:])
    cn = f * c + (1 - f) * xw[:, :H]
    skip = x if "P" not in p else x @ p["P"]
    return {"c": cn}, r * cn + (1 - r) * skip


FORWARD_CASES = {"peephole_lstm": peephole_step, "cifg_lstm": cifg_step, "ln_lstm": ln_lstm_step,
                 "indrnn": indrnn_step, "sru": sru_step}


def test_every_builtin_cell_has_a_reference_of_one_kind_or_the_other():
    assert set(gr.cells.CELLS) <= set(CASES) | set(FORWARD_CASES)


@pytest.mark.parametrize("name", sorted(FORWARD_CASES))
@settings(max_examples=scaled_examples(5))
@given(data=st.data(), sizes=cell_sizes())
def test_literature_cells_follow_their_papers_equations(name, data, sizes):
    cell = gr.cells.CELLS[name](*sizes)
    params, xs, state0 = data.draw(unroll_args(cell), label="unroll args")
    run = gr.unroll(cell, params, xs, state0)
    s, outs = dict(state0), []
    for k in range(xs.shape[1]):
        s, out = FORWARD_CASES[name](params, xs[:, k], s)
        outs.append(out)
    close(run.hs, np.stack(outs, axis=1))
    for k in s:
        close(run.state[k], s[k])


@pytest.mark.parametrize("name,sizes", [(n, (3, 4)) for n in sorted(FORWARD_CASES)]
                         + [("sru", (4, 4))])  # sru: a projected and a plain highway
def test_literature_cells_gradients_match_central_differences_and_the_native_engine(name, sizes):
    cell = gr.cells.CELLS[name](*sizes)
    report = check_gradients(cell, batch=2, steps=3, seed=3)
    assert report.ok and report.max_abs < 1e-6
    params, xs, state0 = gr.testing.random_inputs(cell, np.random.default_rng(1))
    assert check_engines(cell, params, xs, state0).max_rel < 1e-10


def test_layer_norm_of_the_input_product_is_hoisted_and_the_recurrent_one_runs_per_step():
    plan = gr.compile_cell(gr.cells.ln_lstm(3, 4))
    kinds = {plan.graph.nodes[n]["opname"]: set() for n in plan.ops}
    for n in plan.ops:
        kinds[plan.graph.nodes[n]["opname"]].add(plan.kind[n])
    assert kinds["mean"] == {"hoisted", "recurrent"} and kinds["sqrt"] == {"hoisted", "recurrent"}
    assert "hoisted" not in kinds["sigmoid"]


def test_a_static_transpose_runs_once_per_call():
    c = gr.CellBuilder("antisymmetric")  # Chang et al. 2019: h' = h + ε tanh(x V + h (W - Wᵀ - γI))
    x, h = c.input("x", 2), c.state("h", 3)
    W = c.param("W", (3, 3))
    A = W - W.T - 0.1 * c.const(np.eye(3))
    c.update(h=h + 0.5 * gr.tanh(x @ c.param("V", (2, 3)) + h @ A))
    cell = c.build()
    plan = gr.compile_cell(cell)
    transposes = [n for n in plan.ops if plan.graph.nodes[n]["opname"] == "transpose"]
    assert len(transposes) == 1 and plan.kind[transposes[0]] == "static"
    assert check_gradients(cell, batch=2, steps=3).max_abs < 1e-6


def test_the_tutorial_runs_as_written():
    """docs/cells.md: its python blocks, in order, in one namespace."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "cells.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    ns = {}
    try:
        for block in blocks:
            exec(compile(block, "docs/cells.md", "exec"), ns)
    finally:
        gr.primitives.PRIMITIVES.pop("round_st", None)
    assert ns["report"].ok and ns["report"].max_abs < 1e-6
    assert ns["run"].hs.shape == (2, 3, 4)
    assert ns["check_primitive"](ns["RoundST"], [(2, 3)]).skipped
