"""Bad declarations and bad run inputs fail early with a GraphError naming the node and shapes."""
import numpy as np
import pytest

import graphrnn as gr


def builder(d=3, h=4):
    c = gr.CellBuilder("t")
    return c, c.input("x", d), c.state("h", h)


def test_matmul_with_different_inner_sizes_names_the_node_and_shapes():
    c, x, h = builder()
    W = c.param("W", (5, 4))
    with pytest.raises(gr.GraphError) as e:
        x @ W
    msg = str(e.value)
    assert "cell 't'" in msg and "matmul" in msg and "x @ W" in msg
    assert "(N, 3) @ (5, 4)" in msg


def test_add_of_shapes_that_do_not_broadcast_names_both_shapes():
    c, x, h = builder()
    with pytest.raises(gr.GraphError, match=r"\(N, 3\) and \(N, 4\) do not broadcast"):
        x + h


def test_a_state_never_updated_is_refused_at_build():
    c, x, h = builder()
    c.state("g", 2)
    c.update(h=gr.tanh(x @ c.param("W", (3, 4)) + h))
    with pytest.raises(gr.GraphError, match=r"state 'g' is never updated"):
        c.build()


def test_update_of_an_unknown_state_lists_the_declared_ones():
    c, x, h = builder()
    with pytest.raises(gr.GraphError, match=r"unknown state 'q' \(declared states: h\)"):
        c.update(q=h)


def test_update_of_the_wrong_shape_names_state_value_and_shapes():
    c, x, h = builder()
    c.state("g", 2)
    with pytest.raises(gr.GraphError) as e:
        c.update(g=h)
    msg = str(e.value)
    assert "state 'g'" in msg and "(N, 4)" in msg and "(N, 2)" in msg


def test_an_unused_parameter_is_refused_with_its_name_and_shape():
    c, x, h = builder()
    c.param("U", (4, 4))
    c.update(h=gr.tanh(x @ c.param("W", (3, 4)) + h))
    with pytest.raises(gr.GraphError, match=r"parameter 'U' \(4, 4\) is never used"):
        c.build()


def test_a_parameter_that_only_feeds_dead_code_counts_as_unused():
    c, x, h = builder()
    U = c.param("U", (4, 4))
    _ = h @ U  # computed, but nothing reads it
    c.update(h=gr.tanh(x @ c.param("W", (3, 4)) + h))
    with pytest.raises(gr.GraphError, match=r"parameter 'U'"):
        c.build()


@pytest.fixture
def gru():
    cell = gr.cells.gru(3, 4)
    return cell, cell.init_params(seed=0, dtype=np.float64)


def test_unroll_refuses_xs_whose_last_axis_is_not_the_input_size(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError) as e:
        gr.unroll(cell, params, np.zeros((2, 3, 5)))
    msg = str(e.value)
    assert "(2, 3, 5)" in msg and "(N, T, 3)" in msg and "'x'" in msg


def test_unroll_refuses_float32_xs_with_float64_params(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError, match=r"xs is float32 but the parameters are float64"):
        gr.unroll(cell, params, np.zeros((2, 3, 3), np.float32))


def test_unroll_refuses_params_of_mixed_dtypes(gru):
    cell, params = gru
    params = dict(params, b=params["b"].astype(np.float32))
    with pytest.raises(gr.GraphError, match=r"parameter 'b' is float32"):
        gr.unroll(cell, params, np.zeros((2, 3, 3)))


def test_unroll_refuses_a_parameter_of_the_wrong_shape(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError, match=r"parameter 'Wh' has shape \(4, 4\), the cell declares \(4, 12\)"):
        gr.unroll(cell, dict(params, Wh=np.zeros((4, 4))), np.zeros((2, 3, 3)))


def test_unroll_refuses_missing_and_extra_parameters(gru):
    cell, params = gru
    bad = {k: v for k, v in params.items() if k != "b"}
    bad["bias"] = params["b"]
    with pytest.raises(gr.GraphError, match=r"missing \['b'\], unexpected \['bias'\]"):
        gr.unroll(cell, bad, np.zeros((2, 3, 3)))


def test_unroll_refuses_state0_of_the_wrong_shape(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError, match=r"state0\['h'\] has shape \(3, 4\), expected \(2, 4\)"):
        gr.unroll(cell, params, np.zeros((2, 3, 3)), {"h": np.zeros((3, 4))})


def test_unroll_refuses_state0_of_an_unknown_state(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError, match=r"unknown state 'q'"):
        gr.unroll(cell, params, np.zeros((2, 3, 3)), {"q": np.zeros((2, 4))})


def test_backward_refuses_dhs_of_the_wrong_shape(gru):
    cell, params = gru
    run = gr.unroll(cell, params, np.zeros((2, 3, 3)))
    with pytest.raises(gr.GraphError, match=r"dhs has shape \(2, 3, 5\), expected \(2, 3, 4\)"):
        run.backward(np.zeros((2, 3, 5)))
