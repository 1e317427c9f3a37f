"""The gradient checker itself: it must catch wrong gradients, say where, and stay quiet on right ones."""
import numpy as np
import pytest
from hypothesis import given, settings

import graphrnn as gr
from graphrnn import testing
from graphrnn.cli import main
from graphrnn.primitives import BUILTIN, PRIMITIVES, Primitive, Tanh
from graphrnn.testing import (GradientCheckError, cell_sizes, check_gradients, random_cells,
                              rel_error, unroll_args)


class LeakyTanh(Tanh):
    """A deliberately wrong rule: drops the square in 1 - y²."""

    def backward(self, xp, dy, xs, y, needs):
        return (dy * (1 - y),)


def rnn_with_bad_tanh():
    cell = gr.cells.rnn(2, 3)
    # Swap the tanh node's primitive for the wrong one (test-only surgery on a frozen graph).
    for n, a in cell.graph.nodes(data=True):
        if a.get("opname") == "tanh":
            bad = LeakyTanh()
            bad.in_shapes = a["op"].in_shapes
            a["op"] = bad
    return cell


def test_rel_error_is_safe_at_zero_and_symmetric():
    assert rel_error(0.0, 0.0) == 0.0
    assert rel_error(0.0, 1e-30) == 1.0
    assert rel_error(2.0, 1.0) == rel_error(1.0, 2.0) == 0.5
    assert rel_error(np.nan, 1.0) == np.inf


def test_tolerances_do_not_grow_with_array_size():
    small = testing.compare("a", np.zeros(4), np.full(4, 2e-6), *testing.tolerance(np.float64))
    big = testing.compare("a", np.zeros(10000), np.full(10000, 2e-6), *testing.tolerance(np.float64))
    assert not small.ok and not big.ok
    assert testing.tolerance(np.float32) > testing.tolerance(np.float64)


def test_a_wrong_cell_backward_raises_an_error_naming_kind_entry_index_and_values():
    with pytest.raises(GradientCheckError) as info:
        check_gradients(rnn_with_bad_tanh(), batch=2, steps=3, seed=0)
    err = info.value
    assert isinstance(err, AssertionError)
    assert err.kind == "unroll" and err.subject == "cell 'rnn'"
    assert err.entry in {"param 'Wx'", "param 'Wh'", "param 'b'", "xs", "state0['h']"}
    report = err.report
    w = report.worst()
    assert w.name == err.entry and tuple(w.worst_index) == tuple(err.index)
    assert err.abs_err == pytest.approx(abs(err.got - err.expected))
    assert err.abs_err > 1e-4 and np.isfinite(err.rel_err)
    msg = str(err)
    for part in ("unroll gradient check failed", "cell 'rnn'", err.entry, str(tuple(err.index)),
                 "central difference", "rel err"):
        assert part in msg
    assert "FAIL" in str(report)


def test_one_step_is_reported_as_a_cell_check():
    with pytest.raises(GradientCheckError) as info:
        check_gradients(rnn_with_bad_tanh(), batch=1, steps=1)
    assert info.value.kind == "cell"


def test_projection_mode_also_catches_the_wrong_rule_and_passes_a_right_one():
    with pytest.raises(GradientCheckError):
        check_gradients(rnn_with_bad_tanh(), mode="projection", directions=4)
    report = check_gradients(gr.cells.gru(2, 3), mode="projection", directions=4)
    assert report.ok and all(e.mode == "projection" for e in report.entries)
    assert all(e.shape == tuple(gr.cells.gru(2, 3).param_shapes().get(e.name[7:-1], e.shape))
               for e in report.entries)


def test_report_lists_every_param_input_and_state_without_raising_when_asked():
    report = check_gradients(rnn_with_bad_tanh(), raise_on_failure=False)
    assert not report.ok
    assert [e.name for e in report.entries] == ["param 'Wx'", "param 'Wh'", "param 'b'", "xs", "state0['h']"]
    text = str(report)
    assert "max abs err" in text and "max rel err" in text and "(2, 3)" in text
    assert report["xs"].shape == (2, 3, 2)


def test_float32_run_checked_against_float64_differences():
    cell = gr.cells.lstm(2, 3)
    report = check_gradients(cell, cell.init_params(seed=0, dtype=np.float32), seed=1)
    assert report.dtype == "float32" and report.ok and report.max_abs > 0


def test_check_against_naive_names_the_compiled_vs_naive_check():
    cell = gr.cells.rnn(2, 3)
    params = cell.init_params(seed=0)
    xs = np.random.default_rng(0).uniform(-1, 1, (2, 3, 2))
    assert testing.check_against_naive(cell, params, xs).kind == "compiled-vs-naive"
    # Compile first, then break the declared graph: only the naive interpreter sees it.
    cell = gr.cells.rnn(2, 3)
    gr.compile_cell(cell)
    for n, a in cell.graph.nodes(data=True):
        if a.get("opname") == "tanh":
            bad = LeakyTanh()
            bad.in_shapes = a["op"].in_shapes
            a["op"] = bad
    with pytest.raises(GradientCheckError) as info:
        testing.check_against_naive(cell, params, xs)
    err = info.value
    assert err.kind == "compiled-vs-naive" and "naive interpreter" in str(err)
    assert err.entry.startswith("grad ")


def test_check_primitive_accepts_every_registered_name():
    for name in sorted(BUILTIN):
        assert testing.check_primitive(name, _inputs(name), attrs=_attrs(name), values=_values(name)).ok
    with pytest.raises(ValueError, match="unknown primitive"):
        testing.check_primitive("softmax", [(2, 3)])


@settings(max_examples=5)
@given(sizes=cell_sizes())
def test_cell_sizes_are_small_and_positive(sizes):
    d, h = sizes
    assert 1 <= d <= 4 and 1 <= h <= 4


@settings(max_examples=10)
@given(cell=random_cells())
def test_random_cells_build_use_every_param_and_update_every_state(cell):
    assert isinstance(cell, gr.Cell)
    assert set(cell.updates) == set(cell.states) and 1 <= len(cell.states) <= 2
    for node in cell.params.values():
        assert cell.graph.out_degree(node) > 0
    run = gr.unroll(cell, {k: np.full(s, 0.5) for k, s in cell.param_shapes().items()},
                    np.ones((1, 4, cell.input_size)))
    assert np.all(np.isfinite(run.hs))


def test_unroll_args_in_float32_are_float32():
    cell = gr.cells.gru(2, 2)

    @settings(max_examples=3)
    @given(args=unroll_args(cell, dtype=np.float32))
    def check(args):
        params, xs, state0 = args
        assert xs.dtype == np.float32 and all(v.dtype == np.float32 for v in params.values())
        run = gr.unroll(cell, params, xs, state0)
        ref = gr.unroll_naive(cell, params, xs, state0)
        np.testing.assert_allclose(run.hs, ref.hs, rtol=1e-5, atol=1e-6)
    check()


def test_unroll_args_respect_bounds_and_shapes():
    cell = gr.cells.lstm(2, 3)

    @settings(max_examples=10)
    @given(args=unroll_args(cell))
    def check(args):
        params, xs, state0 = args
        n, t, d = xs.shape
        assert 1 <= n <= 3 and 1 <= t <= 4 and d == 2
        assert set(params) == set(cell.param_shapes()) and set(state0) == {"h", "c"}
        for a in [xs, *params.values(), *state0.values()]:
            assert a.dtype == np.float64 and np.all(np.abs(a) <= 1)
            assert not np.any((a != 0) & (np.abs(a) < np.finfo(np.float64).tiny))
    check()


def test_profiles_are_registered():
    from hypothesis import settings as s
    ci = s.get_profile("ci")
    assert ci.derandomize and ci.database is None and ci.deadline is None
    assert s.get_profile("dev").max_examples < ci.max_examples < s.get_profile("deep").max_examples


def test_cli_gradcheck_prints_a_table_and_succeeds(capsys):
    assert main(["gradcheck", "gru", "--input-size", "2", "--hidden-size", "3", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "param 'Wh'" in out and "max abs err" in out and "ok:" in out


def test_cli_gradcheck_fails_with_status_1_on_a_wrong_cell(capsys, monkeypatch):
    import sys
    import types
    mod = types.ModuleType("badcells_for_test")
    mod.bad = lambda d, h: rnn_with_bad_tanh()
    monkeypatch.setitem(sys.modules, "badcells_for_test", mod)
    assert main(["gradcheck", "badcells_for_test:bad"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED:" in out


def test_cli_gradcheck_unknown_cell_is_a_usage_error(capsys):
    assert main(["gradcheck", "nope"]) == 2
    assert "unknown cell 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the checker against near misses
# A checker with its tolerance x1000, or one that compares only the first
# input of a rule, must fail these: each wrong rule is off by only 0.1%.

def off_by(cls, input_index, factor=1.001, columns=None):
    """A primitive class whose gradient for one input is ``factor`` times the right one
    (only in ``columns`` of it, if given): a near miss, as a typo in a rule makes."""
    def backward(self, xp, dy, xs, y, needs):
        grads = list(cls.backward(self, xp, dy, xs, y, needs))
        g = grads[input_index]
        if g is not None:
            g = np.array(g, dtype=np.float64)
            if columns is None:
                g = g * factor
            else:
                g[..., columns[0]:columns[1]] *= factor
            grads[input_index] = g
        return tuple(grads)
    # the engine writes some gradients in place; the default backward_into calls backward
    return type(f"OffBy{factor}{cls.__name__}{input_index}", (cls,),
                {"backward": backward, "backward_into": Primitive.backward_into, "writes_gradients": False})


PRIMITIVE_SHAPES = {"matmul": [(2, 3), (3, 2)], "concat": [(2, 1), (2, 2)], "slice": [(2, 4)],
                    "transpose": [(2, 3)]}
PRIMITIVE_ATTRS = {"slice": (1, 3), "pow": (1.5,), "mod": (0.5,)}
# inputs inside each rule's domain and away from its kinks and jumps
PRIMITIVE_VALUES = {"sqrt": "positive", "log": "positive", "pow": "positive", "div": "positive",
                    "maximum": "apart", "minimum": "apart", "gt": "apart", "lt": "apart", "ge": "apart",
                    "le": "apart", "floor": "apart", "mod": "apart", "abs": "apart", "relu": "apart"}
ZERO_GRADIENTS = {("gt", 0), ("gt", 1), ("lt", 0), ("lt", 1), ("ge", 0), ("ge", 1), ("le", 0), ("le", 1),
                  ("where", 0), ("floor", 0)}  # a mask's or a step's gradient is 0: no factor changes it


def _inputs(name):
    cls = PRIMITIVES[name]
    return PRIMITIVE_SHAPES.get(name, [(2, 3)] * (cls.arity or 2))


def _attrs(name):
    return PRIMITIVE_ATTRS.get(name, ())


def _values(name):
    rng = np.random.default_rng(0)
    shapes = _inputs(name)
    how = PRIMITIVE_VALUES.get(name)
    if how == "positive":
        return [rng.uniform(0.3, 1.5, s) for s in shapes]
    if how == "apart":  # odd and even sixteenths, off every multiple of 1/4
        return [(2 * rng.integers(-8, 8, s) + (i == 0)) / 16 + 1 / 32 for i, s in enumerate(shapes)]
    return [rng.uniform(-1, 1, s) for s in shapes]


@pytest.mark.parametrize("name,i", [(n, i) for n in sorted(BUILTIN) for i in range(len(_inputs(n)))
                                    if (n, i) not in ZERO_GRADIENTS])
def test_check_primitive_catches_a_rule_off_by_one_part_in_a_thousand_in_any_input(name, i):
    attrs, values = _attrs(name), _values(name)
    assert testing.check_primitive(name, _inputs(name), attrs=attrs, values=values).ok  # the right rule passes
    wrong = off_by(PRIMITIVES[name], i)(*attrs)
    with pytest.raises(GradientCheckError) as info:
        testing.check_primitive(wrong, _inputs(name), values=values)
    assert info.value.entry == f"dy/d(input {i})"
    assert info.value.rel_err < 2e-3  # it really was a near miss


def _with_rule(cell, opname, wrong, only=None):
    """Put ``wrong`` (a primitive class) in place of every ``opname`` node (or of
    node ``only``) of a freshly built cell, before anything is compiled."""
    for n, a in cell.graph.nodes(data=True):
        if a.get("opname") == opname and (only is None or n == only):
            op = wrong(*a["op"].attrs().values())
            op.check("mutant", *a["op"].in_shapes)
            a["op"] = op
    return cell


@pytest.mark.parametrize("opname,i", [("sigmoid", 0), ("tanh", 0), ("matmul", 0), ("matmul", 1),
                                      ("mul", 0), ("mul", 1)])
@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_check_gradients_catches_a_near_miss_rule_in_a_cell(opname, i, mode):
    cell = _with_rule(gr.cells.lstm(2, 3), opname, off_by(PRIMITIVES[opname], i))
    with pytest.raises(GradientCheckError) as info:
        check_gradients(cell, seed=0, fuse=False, mode=mode, sample=4, directions=2)
    err = info.value
    assert err.rel_err < 0.05 and err.report.worst().mode == mode  # a near miss, through T steps
    if (opname, i) == ("matmul", 1):  # dW only: the inputs and states are right
        assert {e.name for e in err.report.entries if not e.ok} <= {"param 'Wx'", "param 'Wh'"}


def test_sampling_never_misses_a_wrong_gate_block():
    """One gate's columns of dWh (a quarter of them) wrong by 0.1%: four samples,
    spread over the columns, find it whatever the seed."""
    H = 4
    cell = gr.cells.lstm(2, H)
    o_gate = [n for n, a in cell.graph.nodes(data=True) if a.get("opname") == "matmul"
              and cell.graph.nodes[a["args"][1]]["label"] == f"Wh[:, {3 * H}:{4 * H}]"]
    assert len(o_gate) == 1
    for seed in range(5):
        bad = _with_rule(gr.cells.lstm(2, H), "matmul", off_by(PRIMITIVES["matmul"], 1), only=o_gate[0])
        report = check_gradients(bad, seed=seed, fuse=False, mode="sampled", sample=4, directions=0,
                                 raise_on_failure=False)
        wh = report["param 'Wh'"]
        assert not wh.ok and 3 * H <= wh.worst_index[1] < 4 * H and wh.checked == 4
        assert all(e.ok for e in report.entries if e.name != "param 'Wh'")


def test_sample_indices_are_distinct_in_range_and_cover_every_column_block():
    rng = np.random.default_rng(0)
    for shape, k in [((8, 32), 4), ((3, 5), 12), ((1000,), 64), ((2, 3, 7), 7)]:
        idx = testing.sample_indices(shape, k, rng)
        assert len(idx) == len(set(idx.tolist())) == k
        assert idx.min() >= 0 and idx.max() < np.prod(shape)
        cols = np.unravel_index(idx, shape)[-1]
        edges = np.arange(k + 1) * shape[-1] // k
        assert all(np.any((cols >= lo) & (cols < hi)) for lo, hi in zip(edges, edges[1:]) if hi > lo)
    assert testing.sample_indices((2, 3), 10, rng).tolist() == list(range(6))


def test_directional_differences_see_a_gradient_off_by_one_part_in_a_thousand():
    x = np.random.default_rng(1).uniform(-1, 1, (40, 50))
    w = np.random.default_rng(2).uniform(-1, 1, (40, 50))

    def f():
        return float(np.sum(w * np.tanh(x)))
    right = w * (1 - np.tanh(x) ** 2)
    for analytic, ok in [(right, True), (right * 1.001, False)]:
        got, want = testing.directional_differences(f, x, analytic, np.random.default_rng(0), 4)
        assert testing.compare("x", got, want, *testing.tolerance(np.float64)).ok == ok
    assert np.array_equal(x, np.random.default_rng(1).uniform(-1, 1, (40, 50)))  # restored exactly


# --------------------------------------------------------------------------- the checker at scale

def _expected_passes(report, sample, directions):
    return sum(2 * e.size if e.mode == "full" else 2 * (min(sample, e.size) + directions)
               for e in report.entries)


def test_large_arrays_are_sampled_at_a_cost_that_does_not_grow_with_their_size():
    costs = []
    for H in (40, 80):
        report = check_gradients(gr.cells.gru(3, H), seed=0)
        modes = {e.name: e.mode for e in report.entries}
        assert modes == {"param 'Wx'": "full", "param 'Wh'": "sampled", "param 'b'": "full" if 3 * H <= 1024
                         else "sampled", "xs": "full", "state0['h']": "full"}
        wh = report["param 'Wh'"]
        assert wh.checked == testing.SAMPLE and wh.directions == testing.DIRECTIONS
        assert report.evaluations == _expected_passes(report, testing.SAMPLE, testing.DIRECTIONS)
        costs.append(2 * (wh.checked + wh.directions))
    assert costs[0] == costs[1]


def test_small_cells_are_still_checked_element_by_element():
    report = check_gradients(gr.cells.lstm(3, 4), seed=0)
    assert all(e.mode == "full" and e.coverage() == f"all {e.size:,}" for e in report.entries)
    assert report.evaluations == 2 * sum(e.size for e in report.entries) and not report.sampled


def test_a_sampled_report_says_how_many_elements_which_seed_and_how_many_directions():
    report = check_gradients(gr.cells.gru(3, 40), seed=5, sample=10, directions=3)
    text = str(report)
    assert "seed 5" in text.splitlines()[0]
    assert "10 of 4,800 + 3 dirs" in text and "all 18" in text
    again = check_gradients(gr.cells.gru(3, 40), seed=5, sample=10, directions=3)
    assert [(e.max_abs, e.worst_index) for e in again.entries] == [(e.max_abs, e.worst_index) for e in report.entries]


def test_a_progress_bar_only_when_asked_or_when_the_check_looks_long(capsys):
    check_gradients(gr.cells.rnn(2, 3), seed=0)
    assert "gradcheck rnn" not in capsys.readouterr().err
    check_gradients(gr.cells.rnn(2, 3), seed=0, progress=True)
    assert "gradcheck rnn" in capsys.readouterr().err
    assert testing._Progress(1000, 0.01, None, "x").bar is not None  # 10 s expected
    assert testing._Progress(10, 0.01, None, "x").bar is None


def test_cli_gradcheck_reports_sampling_and_takes_sample_directions_full_when_declared(capsys):
    import argparse
    assert main(["gradcheck", "gru", "--hidden-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "64 of 4,800 + 8 dirs" in out and "sampled:" in out and "seed 0" in out
    args = argparse.Namespace(cell="gru", input_size=3, hidden_size=40, batch=2, steps=2, seed=1,
                              sample=5, directions=2, full=False)
    assert testing.gradcheck_main(args) == 0
    out = capsys.readouterr().out
    assert "5 of 4,800 + 2 dirs" in out and "seed 1" in out
    args.hidden_size, args.full = 8, True
    assert testing.gradcheck_main(args) == 0
    assert "sampled:" not in capsys.readouterr().out


def test_check_function_samples_large_arrays_and_catches_a_near_miss():
    x = np.random.default_rng(0).uniform(-1, 1, (40, 60))

    def f():
        return float(np.sum(np.tanh(x) ** 2))
    right = 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    report = testing.check_function(f, {"x": x}, {"x": right}, seed=3)
    e = report["grad 'x'"]
    assert report.ok and e.mode == "sampled" and e.checked == testing.SAMPLE and report.seed == 3
    assert report.evaluations == 2 * (testing.SAMPLE + testing.DIRECTIONS)
    with pytest.raises(GradientCheckError):
        testing.check_function(f, {"x": x}, {"x": right * 1.001})


def test_checks_run_blas_on_one_thread_when_threadpoolctl_is_there(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real = testing.central_differences

    def spy(f, x, indices, eps=testing.EPS):
        seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
        return real(f, x, indices, eps)
    monkeypatch.setattr(testing.checker, "central_differences", spy)  # where the checks look it up
    check_gradients(gr.cells.rnn(2, 3), seed=0)
    testing.check_function(lambda: 0.0, {"x": np.zeros(3)}, {"x": np.zeros(3)})
    assert seen and set(seen) == {1}


def test_random_cells_reach_the_shapes_compiler_bugs_hide_in():
    """Offset gate blocks, overlapping slices of one parameter, hoisted fan-out,
    output-only ops, a hoisted slice read by a hoisted and a per-step op, per-step
    slices with a gap, static transposes, constant arrays, reductions: each drawn
    at least a few times in 300 cells; and every primitive at least once."""
    import collections

    import networkx as nx
    from hypothesis import HealthCheck, given, settings

    from graphrnn.testing import random_cells

    seen = collections.Counter()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(random_cells())
    def draw(cell):
        plan = gr.compile_cell(cell)
        g = plan.graph
        for n in plan.ops:
            op, args = plan.info[n]
            seen[op.name] += 1
            if op.window and op.window[0] > 0 and g.nodes[n].get("fused"):
                seen["fused slice at an offset"] += 1
        for p in plan.params.values():
            wins = sorted(plan.info[m][0].window for m in g.successors(p)
                          if m in plan.info and plan.info[m][0].window)
            seen["overlapping slices of a parameter"] += any(a[1] > b[0] for a, b in zip(wins, wins[1:]))
        seen["hoisted fan-out"] += any(
            sum(plan.kind[m] == "hoisted" for m in g.successors(n)) >= 2 for n in plan.hoisted_ops)
        read_by_updates = set().union(*(nx.ancestors(g, u) | {u} for _, _, u in plan.states))
        seen["output-only ops"] += plan.output_node not in read_by_updates
        for n in plan.ops:  # the two shapes issue 18's planted bugs hid in
            succ = list(g.successors(n))
            if plan.info[n][0].window is not None and plan.kind[n] == "hoisted":
                kinds = {plan.kind[m] for m in succ}
                seen["hoisted slice read hoisted and per step"] += {"hoisted", "recurrent"} <= kinds
            wins = sorted(plan.info[m][0].window for m in succ if m in plan.info and plan.info[m][0].window)
            if plan.kind[n] == "recurrent" and len(wins) >= 2:
                seen["per-step slices with a gap"] += any(a[1] < b[0] for a, b in zip(wins, wins[1:]))
        seen["static transpose"] += any(plan.info[n][0].name == "transpose" and plan.kind[n] == "static"
                                        for n in plan.ops)
        seen["constant array"] += any(plan.shape[n] != () for n in plan.consts)
        seen["hoisted reduction"] += any(plan.info[n][0].name in ("sum", "mean") for n in plan.hoisted_ops)
        seen["per-step reduction"] += any(plan.info[n][0].name in ("sum", "mean") for n in plan.recurrent_ops)
    draw()
    for what in ("fused slice at an offset", "overlapping slices of a parameter", "hoisted fan-out",
                 "output-only ops", "exp", "neg", "relu", "hoisted slice read hoisted and per step",
                 "per-step slices with a gap", "static transpose", "constant array", "hoisted reduction",
                 "per-step reduction"):
        assert seen[what] >= 5, (what, dict(seen))
    missing = sorted(BUILTIN - set(seen))
    assert not missing, f"primitives random_cells never draws: {missing}"
