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


# --------------------------------------------------------------------------- updates that ignore the state

def _update_is_the_input():
    c, x, h = builder(3, 3)
    c.update(h=x)  # the update is the input itself: no op, no parameter
    return c.build()


def _update_is_hoisted():
    c, x, h = builder(3, 4)
    c.update(h=gr.tanh(x @ c.param("W", (3, 4))))  # depends on x only
    return c.build()


def _update_unread_by_its_own_state():
    c, x, h = builder(3, 4)
    g = c.state("g", 4)
    c.update(h=gr.tanh(x @ c.param("W", (3, 4))), g=gr.sigmoid(h + g))  # h is read by g's update only
    return c.build()


@pytest.mark.parametrize("make", [_update_is_the_input, _update_is_hoisted, _update_unread_by_its_own_state])
def test_an_update_that_does_not_read_the_state_builds_runs_and_gradchecks(make):
    from graphrnn.testing import check_against_naive, check_gradients

    cell = make()
    assert cell.state_sizes()["h"] == cell.output_size
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    xs = rng.uniform(-1, 1, (2, 3, 3))
    state0 = {k: rng.uniform(-1, 1, (2, s)) for k, s in cell.state_sizes().items()}
    run = gr.unroll(cell, params, xs, state0)
    assert run.hs.shape == (2, 3, cell.output_size) and np.all(np.isfinite(run.hs))
    check_against_naive(cell, params, xs, state0)
    check_gradients(cell, params, xs, state0, mode="full")
    g = run.backward(np.ones_like(run.hs))
    if "g" not in cell.states:  # nothing reads h0: its gradient is exactly zero
        assert not np.any(g.state0["h"])
    for unroll in (None, 2):
        for backward in (False, True):
            gr.render(cell, unroll=unroll, backward=backward)  # draws without error


# --------------------------------------------------------------------------- slices

@pytest.mark.parametrize("key,why", [
    ((slice(None), slice(0, 9)), r"stop 9 of \[:, 0:9\] is outside the last axis, which has 4 columns"),
    ((slice(None), slice(5, None)), r"start 5 of \[:, 5:\] is outside"),
    ((slice(None), slice(-9, 2)), r"start -9 of \[:, -9:2\] is outside"),
    ((slice(None), slice(-1, 2)), r"\[:, -1:2\] selects no columns \(start 3 >= stop 2\)"),
    ((slice(None), slice(2, 2)), r"selects no columns"),
    ((slice(None), slice(3, 1)), r"selects no columns"),
    ((slice(None), slice(None, None, 2)), r"slices with a step are not supported, got \[:, ::2\]"),
    ((slice(None), slice(None, None, -1)), r"with a step"),
    ((slice(None), slice(0, 1.5)), r"slice bounds must be integers, got stop 1.5"),
    ((slice(None), slice(True, 3)), r"must be integers"),
    ((slice(None), 0), r"only slices of the last axis"),
    ((slice(0, 1), slice(None)), r"only the last axis may be sliced"),
])
def test_a_bad_slice_is_a_declaration_error_naming_the_value_and_its_shape(key, why):
    c, x, h = builder(3, 4)
    with pytest.raises(gr.GraphError, match=why) as e:
        h[key]
    assert str(e.value).startswith("cell 't', slice of h (N, 4): ")


def test_a_slice_past_the_end_of_a_parameter_is_not_clamped():
    c, x, h = builder(3, 4)
    b = c.param("b", (8,))
    with pytest.raises(gr.GraphError, match=r"slice of b \(8,\): stop 12 of \[4:12\] is outside"):
        b[4:12]


def test_slices_inside_the_last_axis_keep_numpy_meaning_including_from_the_end():
    c, x, h = builder(3, 4)
    W = c.param("W", (4, 8))
    cases = [((slice(None), slice(-4, None)), (4, 8)), ((slice(None), slice(None, -2)), (0, 6)),
             ((Ellipsis, slice(2, 8)), (2, 8)), ((slice(None), slice(np.int64(1), 3, 1)), (1, 3)),
             ((slice(None), slice(-8, 8)), (0, 8))]
    for key, (lo, hi) in cases:
        v = W[key]
        op = c.graph.nodes[v.node]["op"]
        assert (op.start, op.stop) == (lo, hi) and v.shape == (4, hi - lo)


# --------------------------------------------------------------------------- parameters that are not arrays

def test_parameters_given_as_lists_are_refused_naming_the_key(gru):
    cell, params = gru
    lists = dict(params, Wh=params["Wh"].tolist())
    with pytest.raises(gr.GraphError, match=r"parameter 'Wh' is a list, not an array; pass np.asarray\(\.\.\.\) "
                                            r"of shape \(4, 12\)"):
        gr.unroll(cell, lists, np.zeros((2, 3, 3)))
    with pytest.raises(gr.GraphError, match=r"parameter 'b' is a float"):
        cell.check_params(dict(params, b=0.5))


def test_parameters_must_be_a_dict_of_float_arrays(gru):
    cell, params = gru
    with pytest.raises(gr.GraphError, match=r"parameters must be a dict of name -> array, got list"):
        gr.unroll(cell, list(params.values()), np.zeros((2, 3, 3)))
    ints = {k: np.zeros(v.shape, np.int64) for k, v in params.items()}
    with pytest.raises(gr.GraphError, match=r"parameter 'Wx' is int64; parameters must be float32 or float64"):
        gr.unroll(cell, ints, np.zeros((2, 3, 3)))


# --------------------------------------------------------------------------- the public API explains itself

def _public_api():
    """(name, object) for every public class, function, method and property of graph.py."""
    import inspect

    from graphrnn import graph
    for name, obj in sorted(vars(graph).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != graph.__name__ or not callable(obj):
            continue
        yield name, obj
        if inspect.isclass(obj):
            for m, member in vars(obj).items():
                if m.startswith("_"):
                    continue
                if isinstance(member, property):
                    yield f"{name}.{m}", member.fget
                elif inspect.isfunction(member):
                    yield f"{name}.{m}", member


def test_every_public_name_of_graph_py_has_a_docstring_with_an_example():
    names = dict(_public_api())
    for expected in ("CellBuilder.input", "CellBuilder.state", "CellBuilder.param", "CellBuilder.update",
                     "CellBuilder.output", "CellBuilder.build", "CellBuilder.name", "tanh", "sigmoid",
                     "concat", "exp", "relu", "matmul", "Value", "Value.shape", "Cell", "Cell.init_params",
                     "Cell.check_params", "Cell.param_shapes"):
        assert expected in names
    undocumented = [n for n, obj in names.items() if not (obj.__doc__ or "").strip()]
    assert not undocumented, f"no docstring: {undocumented}"
    no_example = [n for n, obj in names.items() if ">>>" not in obj.__doc__]
    assert not no_example, f"no example in the docstring: {no_example}"


def test_the_docstring_examples_of_graph_py_run_as_written():
    import doctest

    from graphrnn import graph
    result = doctest.testmod(graph, extraglobs={"gr": gr, "np": np},
                             optionflags=doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted > 40 and result.failed == 0


def test_help_on_a_builder_method_says_shapes_and_shows_an_example():
    text = gr.CellBuilder.param.__doc__
    assert "(D, 3H)" in text and ">>> c.param(" in text
    assert "(N, size)" in gr.CellBuilder.state.__doc__ and "(N, D) and (N, H)" in gr.concat.__doc__


# --------------------------------------------------------------------------- names the reader knows

def test_a_named_value_reads_by_its_name_in_later_expressions_and_errors():
    c, x, h = builder(3, 4)
    W = c.param("W", (3, 4))
    z = c.name(gr.sigmoid(x @ W), "z")
    h_hat = gr.tanh(x @ W, name="h~")
    mix = (1 - z) * h + z * h_hat
    assert mix.label == "(1 - z) * h + z * h~"
    a = c.graph.nodes[z.node]
    assert (a["vname"], a["label"], a["expr"]) == ("z", "z", "sigmoid(x @ W)")
    with pytest.raises(gr.GraphError, match=r"mul node \(z \* x\)"):
        z * x


@pytest.mark.parametrize("fn", [gr.sigmoid, gr.tanh, gr.relu, gr.exp])
def test_every_function_takes_a_name_keyword(fn):
    c, x, h = builder()
    assert fn(x, name="a").label == "a"
    assert gr.concat([x, h], name="xh").label == "xh"
    assert gr.matmul(x, c.param("W", (3, 2)), name="m").label == "m"


def test_names_are_unique_short_and_only_for_computed_values():
    c, x, h = builder()
    W = c.param("W", (3, 4))
    z = c.name(x @ W, "z")
    with pytest.raises(gr.GraphError, match=r"the name 'z' is already used"):
        c.name(x @ W + 1.0, "z")
    with pytest.raises(gr.GraphError, match=r"the name 'W' is already used"):
        c.name(x @ W + 1.0, "W")
    with pytest.raises(gr.GraphError, match=r"already named 'z'"):
        c.name(z, "a")
    with pytest.raises(gr.GraphError, match=r"x is an input and is already named 'x'"):
        c.name(x, "input")
    for bad in ("", "a b", "x" * 17, 3):
        with pytest.raises(gr.GraphError, match=r"1-16 characters without spaces"):
            c.name(x @ W, bad)
    other = gr.CellBuilder("other")
    with pytest.raises(gr.GraphError, match=r"must be a value of this cell"):
        other.name(z, "q")


def test_names_survive_build_and_compilation():
    cell = gr.cells.gru(3, 4)
    names = {a.get("vname") for _, a in cell.graph.nodes(data=True)} - {None}
    assert {"z", "r", "h~"} <= names
    plan = gr.compile_cell(cell)
    assert {"z", "r", "h~"} <= {a.get("vname") for _, a in plan.graph.nodes(data=True)}


# --------------------------------------------------------------------------- more misuse, one clear message each

@pytest.mark.parametrize("make,why", [
    (lambda c, x, h: c.param("U", None), r"param 'U': shape must be an int or a tuple of sizes, got None"),
    (lambda c, x, h: x / 0, r"x / 0: division by zero"),
    (lambda c, x, h: x + float("nan"), r"the constant nan is not finite"),
    (lambda c, x, h: h * float("inf"), r"the constant inf is not finite"),
    (lambda c, x, h: gr.CellBuilder(3), r"a cell's name must be a non-empty string, got 3"),
])
def test_misuse_is_a_graph_error_not_a_python_error(make, why):
    c, x, h = builder()
    with pytest.raises(gr.GraphError, match=why):
        make(c, x, h)


def test_init_params_in_an_unsupported_dtype_is_a_graph_error():
    with pytest.raises(gr.GraphError, match=r"dtype int64 is not supported; use float32 or float64"):
        gr.cells.rnn(2, 3).init_params(dtype=np.int64)


def test_run_inputs_of_the_wrong_kind_are_graph_errors():
    cell = gr.cells.gru(3, 4)
    params = cell.init_params(seed=0)
    with pytest.raises(gr.GraphError, match=r"xs must be an array"):
        gr.unroll(cell, params, "abc")
    with pytest.raises(gr.GraphError, match=r"state0 must be a dict"):
        gr.unroll(cell, params, np.zeros((2, 3, 3)), [np.zeros((2, 4))])
    run = gr.unroll(cell, params, np.zeros((2, 3, 3)))
    with pytest.raises(gr.GraphError, match=r"dstate must be a dict"):
        run.backward(None, [np.zeros((2, 4))])
