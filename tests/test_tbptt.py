"""TBPTT(k1, k2) inside a sequence, against the full backward cut by hand."""
import numpy as np
import pytest

import graphrnn as gr
from graphrnn.errors import GraphError
from graphrnn.tbptt import plot_modes, tbptt, windows
from graphrnn.testing import random_inputs


def by_hand(cell, params, xs, dhs, k1, k2, state0):
    """The definition, step by step: the forward one step at a time, and every k1
    steps a reverse walk of k2 one-step backwards whose carry is dropped at the cut."""
    T = xs.shape[1]
    states, s = [state0], state0
    for t in range(T):
        s = gr.unroll(cell, params, xs[:, t:t + 1], s).state
        states.append(s)
    gp = {k: np.zeros_like(v) for k, v in params.items()}
    gx = np.zeros_like(xs)
    g0 = {k: np.zeros_like(v) for k, v in state0.items()}
    stop = 0
    while stop < T:
        prev, stop = stop, min(stop + k1, T)
        carry = None
        for t in range(stop - 1, max(0, stop - k2) - 1, -1):
            run = gr.unroll(cell, params, xs[:, t:t + 1], states[t])
            d = dhs[:, t:t + 1] if t >= prev else np.zeros_like(dhs[:, t:t + 1])
            g = run.backward(d, carry)
            for k in gp:
                gp[k] += g.params[k]
            gx[:, t:t + 1] += g.xs
            carry = g.state0
        if stop - k2 <= 0:
            for k in g0:
                g0[k] += carry[k]
    return gp, gx, g0


@pytest.mark.parametrize("name,k1,k2", [("gru", 2, 5), ("lstm", 3, 3), ("rnn", 1, 4), ("mgu", 4, 7)])
def test_tbptt_equals_the_full_backward_cut_by_hand(name, k1, k2):
    cell = gr.cells.CELLS[name](3, 4)
    rng = np.random.default_rng(0)
    params, xs, state0 = random_inputs(cell, rng, batch=2, steps=9)
    dhs = rng.uniform(-1, 1, (2, 9, cell.output_size))
    g, run = tbptt(cell, params, xs, dhs, k1, k2, state0)
    gp, gx, g0 = by_hand(cell, params, xs, dhs, k1, k2, state0)
    for k in gp:
        np.testing.assert_allclose(g.params[k], gp[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.xs, gx, rtol=1e-10, atol=1e-12)
    for k in g0:
        np.testing.assert_allclose(g.state0[k], g0[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.hs, gr.unroll(cell, params, xs, state0).hs)


def test_k1_equal_k2_equal_T_is_full_bptt_and_truncation_changes_the_gradient():
    cell = gr.cells.gru(3, 4)
    rng = np.random.default_rng(1)
    params, xs, state0 = random_inputs(cell, rng, batch=2, steps=8)
    dhs = rng.uniform(-1, 1, (2, 8, 4))
    full = gr.unroll(cell, params, xs, state0).backward(dhs)
    g, _ = tbptt(cell, params, xs, dhs, 8, 8, state0)
    for k in full.params:
        np.testing.assert_allclose(g.params[k], full.params[k], rtol=1e-12, atol=1e-14)
    cut, _ = tbptt(cell, params, xs, dhs, 2, 3, state0)
    assert not np.allclose(cut.params["Wh"], full.params["Wh"])
    # only the first window (steps 1-2) reaches the initial state
    first = gr.unroll(cell, params, xs[:, :2], state0).backward(np.concatenate([dhs[:, :2]], axis=1))
    np.testing.assert_allclose(cut.state0["h"], first.state0["h"], rtol=1e-12)


def test_k1_equal_k2_is_the_stateful_layer_over_chunks():
    cell = gr.cells.lstm(3, 4)
    rng = np.random.default_rng(2)
    params, xs, _ = random_inputs(cell, rng, batch=2, steps=9)
    dhs = rng.uniform(-1, 1, (2, 9, 4))
    layer = gr.Recurrent(cell, params, stateful=True)
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for a in range(0, 9, 3):
        layer.forward(xs[:, a:a + 3])
        layer.backward(dhs[:, a:a + 3])
        for k in total:
            total[k] += layer.grads[k]
    g, _ = tbptt(cell, params, xs, dhs, 3, 3)
    for k in total:
        np.testing.assert_allclose(g.params[k], total[k], rtol=1e-10, atol=1e-12)


def test_windows_and_bad_settings():
    assert windows(7, 2, 3) == [(0, 2, 0), (1, 4, 2), (3, 6, 4), (4, 7, 6)]
    with pytest.raises(GraphError, match="1 <= k1 <= k2"):
        windows(7, 3, 2)


def test_plot_of_the_modes(tmp_path):
    plot_modes(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
