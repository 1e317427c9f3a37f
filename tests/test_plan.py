"""The compiled plan (hoisting, fusion, deferred static gradients) against the
naive step-by-step interpreter, on random cells; fusion really happening.
The scheduler's own specs (truncated BPTT, stateful layers, the workspace)
are in test_unroll.py."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from checked import compared_every_gradient
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
    assert compared_every_gradient(fused, cell) and compared_every_gradient(plain, cell)


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
        assert compared_every_gradient(check_gradients(cell, batch=2, steps=2, seed=seed, fuse=fuse), cell)
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    xs = rng.uniform(-1, 1, (2, 2, cell.input_size))
    assert compared_every_gradient(check_against_naive(cell, params, xs, seed=seed), cell)


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
