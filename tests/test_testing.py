"""The gradient checker itself: it must catch wrong gradients, say where, and stay quiet on right ones."""
import numpy as np
import pytest
from hypothesis import given, settings

import graphrnn as gr
from graphrnn import testing
from graphrnn.cli import main
from graphrnn.primitives import PRIMITIVES, Tanh
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
    shapes = {"matmul": [(2, 3), (3, 2)], "concat": [(2, 1), (2, 2)], "slice": [(2, 3)]}
    for name in PRIMITIVES:
        attrs = (1, 3) if name == "slice" else ()
        s = shapes.get(name, [(2, 3), (2, 3)] if PRIMITIVES[name].arity == 2 else [(2, 3)])
        assert testing.check_primitive(name, s, attrs=attrs).ok
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
