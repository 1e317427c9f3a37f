"""The compiled plan (hoisting, fusion, deferred static gradients) against the
naive step-by-step interpreter, on random cells; fusion really happening;
truncated BPTT and stateful layers."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.emit import numpy_loops
from graphrnn.testing import (check_against_naive, check_gradients, random_cells,
                              scaled_examples, unroll_args)


@settings(max_examples=scaled_examples(40))
@given(data=st.data(), cell=random_cells())
def test_compiled_plan_equals_naive_interpreter_on_random_cells(data, cell):
    params, xs, state0 = data.draw(unroll_args(cell), label="unroll args")
    if data.draw(st.booleans(), label="start from zeros"):
        state0 = None
    seed = data.draw(st.integers(0, 2 ** 16), label="loss seed")
    fused = check_against_naive(cell, params, xs, state0, seed=seed, fuse=True)
    plain = check_against_naive(cell, params, xs, state0, seed=seed, fuse=False)
    assert fused.ok and plain.ok


@settings(max_examples=scaled_examples(20))
@given(data=st.data(), cell=random_cells())
def test_fused_and_unfused_plans_agree_with_only_output_or_only_state_gradients(data, cell):
    params, xs, state0 = data.draw(unroll_args(cell), label="unroll args")
    a = gr.unroll(cell, params, xs, state0, fuse=True)
    b = gr.unroll(cell, params, xs, state0, fuse=False)
    np.testing.assert_allclose(a.hs, b.hs, rtol=1e-10, atol=1e-10)
    if data.draw(st.booleans(), label="dhs only"):
        dhs, dstate = np.ones(a.hs.shape), None
    else:
        dhs, dstate = None, {k: np.ones(v.shape) for k, v in a.state.items()}
    ga, gb = a.backward(dhs, dstate), b.backward(dhs, dstate)
    gc = a.backward(dhs, dstate, need_xs=False)  # another generated loop: its own buffer sharing
    assert gc.xs is None
    for k in ga.params:
        np.testing.assert_allclose(ga.params[k], gb.params[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gc.params[k], ga.params[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ga.xs, gb.xs, rtol=1e-10, atol=1e-10)
    for k in ga.state0:
        np.testing.assert_allclose(ga.state0[k], gb.state0[k], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gc.state0[k], ga.state0[k], rtol=1e-12, atol=1e-12)


@settings(max_examples=scaled_examples(6))
@given(cell=random_cells(max_ops=5, max_width=3), seed=st.integers(0, 2 ** 16))
def test_random_cells_fused_and_naive_both_match_central_differences(cell, seed):
    # Seeded values rather than Hypothesis arrays: relu's kink at exactly 0
    # (which Hypothesis likes to hit) has no central difference.
    for fuse in (True, False):
        assert check_gradients(cell, batch=2, steps=2, seed=seed, fuse=fuse).ok
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    xs = rng.uniform(-1, 1, (2, 2, cell.input_size))
    assert check_against_naive(cell, params, xs, seed=seed).ok


def recurrent_matmuls_reading(plan, node):
    g = plan.graph
    return [n for n in plan.recurrent_ops
            if g.nodes[n]["opname"] == "matmul" and g.nodes[n]["args"][0] == node]


def test_gru_runs_one_fused_matmul_per_step_on_h():
    cell = gr.cells.gru(3, 4)
    plan = gr.compile_cell(cell)
    on_h = recurrent_matmuls_reading(plan, cell.states["h"])
    assert len(on_h) == 1
    assert plan.graph.nodes[on_h[0]]["shape"] == ("N", 8)  # z and r gates packed
    unfused = gr.compile_cell(cell, fuse=False)
    assert len(recurrent_matmuls_reading(unfused, cell.states["h"])) == 2


def test_lstm_runs_one_recurrent_matmul_for_all_four_gates():
    cell = gr.cells.lstm(3, 4)
    plan = gr.compile_cell(cell)
    mm = [n for n in plan.recurrent_ops if plan.graph.nodes[n]["opname"] == "matmul"]
    assert len(mm) == 1 and plan.graph.nodes[mm[0]]["shape"] == ("N", 16)
    assert plan.graph.nodes[mm[0]]["args"][0] == cell.states["h"]
    # the input projection is hoisted out of the loop
    assert any(plan.graph.nodes[n]["opname"] == "matmul" for n in plan.hoisted_ops)


def test_lstm_reverse_loop_keeps_one_gradient_buffer_for_x_wx_plus_b_and_h_wh():
    # Both operands of x Wx + b + h Wh receive the same per-step gradient: one
    # (T, N, 4H) buffer, written once per step by the gates' concatenation, and
    # the add itself costs no call.
    plan = gr.compile_cell(gr.cells.lstm(3, 4))
    for need_xs in (True, False):
        written, shared = plan.written(need_xs, True)
        assert len(shared) == 1
        (alias, source), = shared.items()
        assert {alias[:2], source[:2]} == {"DH", "DB"}
        src = numpy_loops.backward_source(plan, need_xs, True)
        assert src.count(f"out={source}[t]") == 1 and f"{alias}[t]" not in src
        adds = [n for n in plan.recurrent_ops if plan.graph.nodes[n]["opname"] == "add"]
        assert adds and not any(f"op{n}(" in src for n in adds)


@pytest.fixture
def lstm_run():
    cell = gr.cells.lstm(3, 4)
    rng = np.random.default_rng(3)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    xs = rng.uniform(-1, 1, (2, 6, 3))
    s0 = {k: rng.uniform(-1, 1, (2, s)) for k, s in cell.state_sizes().items()}
    dhs = rng.uniform(-1, 1, (2, 6, 4))
    dstate = {k: rng.uniform(-1, 1, (2, s)) for k, s in cell.state_sizes().items()}
    return cell, params, xs, s0, dhs, dstate


def test_truncated_bptt_chunks_equal_one_run_forward(lstm_run):
    cell, params, xs, s0, _, _ = lstm_run
    full = gr.unroll(cell, params, xs, s0)
    r1 = gr.unroll(cell, params, xs[:, :3], s0)
    r2 = gr.unroll(cell, params, xs[:, 3:], r1.state)
    np.testing.assert_allclose(np.concatenate([r1.hs, r2.hs], axis=1), full.hs, rtol=1e-12, atol=1e-12)
    for k in full.state:
        np.testing.assert_allclose(r2.state[k], full.state[k], rtol=1e-12, atol=1e-12)


def test_truncated_bptt_backward_is_the_full_backward_cut_at_the_boundary(lstm_run):
    cell, params, xs, s0, dhs, dstate = lstm_run
    full = gr.unroll(cell, params, xs, s0).backward(dhs, dstate)
    r1 = gr.unroll(cell, params, xs[:, :3], s0)
    r2 = gr.unroll(cell, params, xs[:, 3:], r1.state)
    g2 = r2.backward(dhs[:, 3:], dstate)
    cut = r1.backward(dhs[:, :3])  # truncated: nothing flows back from chunk 2
    across = r1.backward(None, g2.state0)  # what the cut throws away
    for k in full.params:
        # the truncated gradient is the full one minus the flow across the boundary
        np.testing.assert_allclose(cut.params[k] + g2.params[k],
                                   full.params[k] - across.params[k], rtol=1e-10, atol=1e-10)
        assert not np.allclose(cut.params[k] + g2.params[k], full.params[k])
    np.testing.assert_allclose(g2.xs, full.xs[:, 3:], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cut.xs + across.xs, full.xs[:, :3], rtol=1e-10, atol=1e-10)
    for k in s0:
        np.testing.assert_allclose(cut.state0[k] + across.state0[k], full.state0[k], rtol=1e-10, atol=1e-10)


def test_stateful_recurrent_carries_state_between_calls_until_reset(lstm_run):
    cell, params, xs, _, dhs, _ = lstm_run
    full = gr.unroll(cell, params, xs)
    layer = gr.Recurrent(cell, params, stateful=True)
    h1 = layer.forward(xs[:, :3]).copy()
    h2 = layer.forward(xs[:, 3:]).copy()
    np.testing.assert_allclose(np.concatenate([h1, h2], axis=1), full.hs, rtol=1e-12, atol=1e-12)
    dxs = layer.backward(dhs[:, 3:])
    g2 = gr.unroll(cell, params, xs[:, 3:], gr.unroll(cell, params, xs[:, :3]).state).backward(dhs[:, 3:])
    np.testing.assert_allclose(dxs, g2.xs, rtol=1e-12, atol=1e-12)
    for k in params:
        np.testing.assert_allclose(layer.grads[k], g2.params[k], rtol=1e-12, atol=1e-12)
    layer.reset_state()
    np.testing.assert_allclose(layer.forward(xs[:, :3]), h1, rtol=0, atol=0)
    stateless = gr.Recurrent(cell, params, stateful=False)
    stateless.forward(xs[:, :3])
    np.testing.assert_allclose(stateless.forward(xs[:, 3:]), gr.unroll(cell, params, xs[:, 3:]).hs)


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
def test_backward_twice_is_bit_identical_and_leaves_dhs_alone(name):
    cell = gr.cells.CELLS[name](3, 4)
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    run = gr.unroll(cell, params, rng.uniform(-1, 1, (2, 4, 3)))
    dhs = rng.uniform(-1, 1, run.hs.shape)
    dstate = {k: rng.uniform(-1, 1, v.shape) for k, v in run.state.items()}
    keep = dhs.copy(), {k: v.copy() for k, v in dstate.items()}
    g1 = run.backward(dhs, dstate)
    snap = {k: v.copy() for k, v in g1.params.items()}, g1.xs.copy()
    g2 = run.backward(dhs, dstate)
    for k in snap[0]:
        assert snap[0][k].tobytes() == g2.params[k].tobytes()
        assert g1.params[k].tobytes() == snap[0][k].tobytes(), "second backward changed the first's result"
    assert snap[1].tobytes() == g2.xs.tobytes()
    assert np.array_equal(dhs, keep[0]) and all(np.array_equal(dstate[k], keep[1][k]) for k in dstate)


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
def test_need_xs_false_skips_dxs_and_keeps_param_gradients(name):
    cell = gr.cells.CELLS[name](3, 4)
    params = cell.init_params(seed=1)
    run = gr.unroll(cell, params, np.random.default_rng(1).uniform(-1, 1, (2, 3, 3)))
    dhs = np.ones(run.hs.shape)
    a, b = run.backward(dhs), run.backward(dhs, need_xs=False)
    assert b.xs is None
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["earlier_takes_later", "later_takes_earlier"])
def test_a_state_whose_update_is_another_states_old_value(order):
    # A shift register: the update is a state node, not an op. The gradient
    # reaching the copied state at the last step must flow to the other one.
    c = gr.CellBuilder("shift")
    x = c.input("x", 2)
    a, b = c.state("a", 2), c.state("b", 2)
    W = c.param("W", (2, 2))
    if order == "earlier_takes_later":
        c.update(a=b, b=gr.tanh(a @ W + x))
    else:
        c.update(a=gr.tanh(b @ W + x), b=a)
    cell = c.build()
    rng = np.random.default_rng(0)
    params = {"W": rng.uniform(-1, 1, (2, 2))}
    xs = rng.uniform(-1, 1, (1, 1, 2))
    s0 = {"a": rng.uniform(-1, 1, (1, 2)), "b": rng.uniform(-1, 1, (1, 2))}
    src = "b" if order == "earlier_takes_later" else "a"
    dst = "a" if src == "b" else "b"
    g = gr.unroll(cell, params, xs, s0).backward(None, {dst: np.ones((1, 2))})
    np.testing.assert_array_equal(g.state0[src], np.ones((1, 2)))  # d final[dst] / d state0[src] = I
    assert check_against_naive(cell, params, rng.uniform(-1, 1, (2, 3, 2))).ok
    assert check_gradients(cell, steps=3, seed=1).ok


def test_workspace_never_overwrites_what_a_caller_holds():
    cell = gr.cells.gru(3, 5)
    params = cell.init_params(seed=1)
    gr.compile_cell(cell).workspace.min_bytes = 0  # pool even these small arrays
    rng = np.random.default_rng(0)
    xs1, xs2 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3))
    dhs = rng.standard_normal((2, 4, 5))
    run1 = gr.unroll(cell, params, xs1)
    g1 = run1.backward(dhs)
    keep_hs = run1.hs  # a view of the run's state buffer
    hs1, gW1, gx1 = keep_hs.copy(), g1.params["Wh"].copy(), g1.xs.copy()
    del run1
    for _ in range(3):  # later calls on other data, results dropped at once
        gr.unroll(cell, params, xs2).backward(dhs)
    np.testing.assert_array_equal(keep_hs, hs1)
    np.testing.assert_array_equal(g1.params["Wh"], gW1)
    np.testing.assert_array_equal(g1.xs, gx1)


def test_workspace_reuses_buffers_in_steady_state_and_lets_old_shapes_go():
    cell = gr.cells.lstm(3, 4)
    params = cell.init_params(seed=0)
    rng = np.random.default_rng(0)
    ws = gr.compile_cell(cell).workspace
    ws.min_bytes = 0

    def step(t):
        xs = rng.standard_normal((2, t, 3))
        gr.unroll(cell, params, xs).backward(rng.standard_normal((2, t, 4)))
    step(3)
    held3 = ws.nbytes
    for _ in range(2 * ws.keep_calls + 1):
        step(6)
    held = ws.nbytes  # the T=6 buffers alone: the T=3 ones were let go
    assert held > held3
    for _ in range(5):
        step(6)
    assert ws.nbytes == held  # nothing new allocated once warm
    for _ in range(2 * ws.keep_calls + 1):
        step(3)
    assert ws.nbytes == held3
    ws.clear()
    assert ws.nbytes == 0
