"""The native engine (numba): every primitive's native form, native loops
against the numpy loops on built-in and random cells (forward, BPTT,
truncated and stateful runs, both forms, float64 and float32), the fallback
for primitives without a native form, auto's background build, the disk
cache, and graphrnn without numba."""
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import graphrnn as gr
from checked import RoundST, compared_every_gradient
from graphrnn.emit import numba_loops, numba_runtime, scalar
from graphrnn.primitives import BUILTIN, PRIMITIVES, Tanh
from graphrnn.testing import check_engines, random_cells, random_inputs, scaled_examples, unroll_args

needs_numba = pytest.mark.skipif(not numba_runtime.numba_available(), reason="numba is not installed")
CELLS = ("rnn", "gru", "lstm", "lstm_nico", "mgu")


# --------------------------------------------------------------------------- native forms

def _scalar_rule(text, env):
    return eval(scalar.python_expr(text, {k: repr(float(v)) for k, v in env.items()},
                                   numba_loops.FUNCTIONS, const=repr),
                {"math": math})


# Primitives that are not elementwise and have no native form of their own: a
# cell reducing per step runs on the numpy loops (said once); a transpose is
# static, computed before the loops.
NOT_NATIVE = {"transpose"}
NATIVE_ATTRS = {"pow": (1.5,), "mod": (0.75,)}
POSITIVE = {"pow", "sqrt", "log"}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_primitive_has_a_native_form_that_computes_its_rule(name):
    cls = PRIMITIVES[name]
    form = cls.native_form()
    if name in NOT_NATIVE:
        assert form is None
        return
    assert form in ("elementwise", "matmul", "window", "join", "reduce")
    if form != "elementwise":
        return
    op = cls(*NATIVE_ATTRS.get(name, ()))
    shapes = [("N", 3)] * (op.arity or 1)
    op.check("test", *shapes)
    rng = np.random.default_rng(1)
    lo = 0.1 if name in POSITIVE else -2
    xs = [rng.uniform(lo, 2, (4, 3)) for _ in shapes]
    xs[0][0, 0] = 0.25  # away from relu's kink
    y = op.forward(np, *xs)
    dy = rng.uniform(-1, 1, y.shape)
    names = op.operands
    for i in range(len(xs)):
        needs = tuple(j == i for j in range(len(xs)))
        want = op.backward(np, dy, xs, y, needs)[i]
        # the native rule reads only what the primitive saves for this gradient
        saved = op.saved_for(needs)
        allowed = {"dy"} | {"y" for s in saved if s == "y"} | {names[s] for s in saved if s != "y"}
        assert scalar.names_read(op.native_backward[i]) <= allowed
        for idx in np.ndindex(y.shape):
            env = {**{n: x[idx] for n, x in zip(names, xs)}, "y": y[idx], "dy": dy[idx]}
            assert _scalar_rule(op.native_forward, env) == pytest.approx(y[idx], rel=1e-12, abs=1e-15)
            assert _scalar_rule(op.native_backward[i], env) == pytest.approx(want[idx], rel=1e-12, abs=1e-15)


class DoubledTanh(Tanh):
    """A user's rule that changes tanh's backward: the native tanh would be wrong for it."""
    def backward(self, xp, dy, xs, y, needs):
        return (2 * dy * (1 - y * y),)


def _cell_with(op_cls):
    cell = gr.cells.rnn(2, 3)
    g = cell.graph
    node = next(n for n in g.nodes if g.nodes[n].get("opname") == "tanh")
    g.nodes[node]["op"] = op_cls()
    g.nodes[node]["op"].check("test", g.nodes[node]["shape"])
    return cell


class Scale(gr.Primitive):
    """y = a * b, b broadcast;  da = dy b,  db = Σ dy a   (a two-input rule
    reading its inputs, returning a new array rather than filling ``out``)"""
    name, arity = "scale_native_test", 2
    saves = (0, 1)

    def shape(self, where, a, b):
        return a

    def forward(self, xp, a, b, out=None):
        return a * b

    def backward(self, xp, dy, xs, y, needs):
        a, b = xs
        return (dy * b if needs[0] else None, _summed_to(dy * a, np.shape(b)) if needs[1] else None)


def _summed_to(g, shape):
    """g summed over the axes it was broadcast along to reach ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, d in enumerate(shape):
        if d == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def _user_rule_cell(round_st, scale):
    """Skip-RNN-like: a Python rule on a one-column state (broadcast after),
    one on a per-step sum and a parameter, one whose result is a state."""
    c = gr.CellBuilder("python_rules")
    x, h, u = c.input("x", 2), c.state("h", 3), c.state("u", 1)
    a = x @ c.param("W", (2, 3)) + h @ c.param("U", (3, 3))
    gate = round_st(u)
    h_new = gate * gr.tanh(scale(a, c.param("s", (3,)))) + (1 - gate) * h
    c.update(h=h_new, u=scale(gr.sigmoid(h_new @ c.param("w", (3, 1))), u + 0.4))
    return c.build()


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_user_primitive_runs_through_its_python_rule_inside_the_native_loops(dtype):
    round_st, scale = gr.register_primitive(RoundST), gr.register_primitive(Scale)
    try:
        cell = _user_rule_cell(round_st, scale)
        plan = gr.compile_cell(cell)
        assert numba_loops.python_nodes(plan) and numba_loops.ModuleText(plan, dtype).forms == ("staged",)
        rng = np.random.default_rng(3)
        params = {k: v.astype(dtype) for k, v in cell.init_params(seed=1).items()}
        xs = rng.uniform(-1, 1, (4, 5, 2)).astype(dtype)  # (N, T, features)
        state0 = {"h": rng.uniform(-1, 1, (4, 3)).astype(dtype), "u": rng.uniform(0, 1, (4, 1)).astype(dtype)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to say: it runs natively
            runs = [gr.unroll(cell, params, xs, state0, engine=e) for e in ("numpy", "native")]
            assert runs[1].engine == "native"
            report = check_engines(cell, params, xs, state0, runs=runs)  # 1e-12 in float64
            assert len(report.entries) == 1 + 2 + 4 + 1 + 2 and report.ok
            # and both are right: Scale's forward returns a new array, which the
            # numpy loops must copy into the state it updates
            naive = gr.unroll_naive(cell, params, xs, state0)
            np.testing.assert_allclose(runs[0].state["u"], naive.state["u"], rtol=1e-12 if dtype == np.float64 else 1e-5)
            # auto picks the staged form where it would have fused; same numbers
            auto = numba_runtime.loops(plan, "auto", np, np.dtype(dtype), 4, 5)
            assert auto.form == "staged"
        gauto = gr.unroll(cell, params, xs, state0, engine="auto")
        np.testing.assert_array_equal(gauto.hs, runs[1].hs if gauto.engine == "native" else runs[0].hs)
    finally:
        PRIMITIVES.pop(RoundST.name), PRIMITIVES.pop(Scale.name)


def _as_users(op):
    """The same rule as a user's primitive would give it: a backward of its own
    (the built-in one, called), so no native form; the instance keeps its attributes."""
    cls = type(op)
    op.__class__ = type(f"User{cls.__name__}", (cls,), {"backward": lambda self, *a: cls.backward(self, *a)})


@needs_numba
@settings(max_examples=scaled_examples(5), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_random_cells_with_python_rules_inside_the_native_loops_equal_numpy_loops(data, cell):
    """Ops of random cells turned into Python rules, wherever they sit (slices,
    broadcasts, static operands, state updates): the staged loops call them."""
    g = cell.graph
    declared = gr.compile_cell(cell, fuse=False)  # (the fused plan, compiled below, is cached apart)
    ops = [n for n in declared.recurrent_ops if type(g.nodes[n]["op"]).native_form() == "elementwise"]
    if not ops:
        return
    chosen = data.draw(st.lists(st.sampled_from(ops), min_size=1, max_size=3, unique=True), label="python ops")
    for n in chosen:
        _as_users(g.nodes[n]["op"])
    params, xs, state0 = data.draw(unroll_args(cell, max_steps=4), label="unroll args")
    plan = gr.compile_cell(cell)
    a = gr.unroll(cell, params, xs, state0, engine="numpy")
    b = _native(cell, params, xs, state0, "staged")
    report = check_engines(cell, params, xs, state0, runs=(a, b))
    assert compared_every_gradient(report, cell)
    event(f"{len(numba_loops.python_nodes(plan))} Python rules per step")


def test_on_cupy_a_primitive_without_a_native_form_falls_back_to_the_numpy_loops(monkeypatch):
    """The CUDA kernels call no Python rule: said once, the numpy loops. No GPU
    needed to see the seam: an array module named cupy, and the emitter's own refusal."""
    import types
    from graphrnn import emit
    from graphrnn.emit import cuda_kernels
    cell = _cell_with(DoubledTanh)
    assert DoubledTanh.native_form() is None  # it changed tanh's backward
    plan = gr.compile_cell(cell)
    monkeypatch.setattr(cuda_kernels, "CudaLoops", lambda plan, dtype: cuda_kernels.module_text(plan, dtype))
    with pytest.warns(RuntimeWarning, match=r"runs on the numpy loops: primitive 'tanh' \(node 'tanh\(.*\)'\) "
                                            "has no native form, and the CUDA kernels do not call Python rules"):
        loops = emit.loops_for(plan, "native", types.ModuleType("cupy"), np.dtype(np.float64), 2, 4)
    assert loops.name == "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        emit.loops_for(plan, "native", types.ModuleType("cupy"), np.dtype(np.float64), 3, 4)


# --------------------------------------------------------------------------- native == numpy

def _native(cell, params, xs, state0, form):
    """A run on the native loops of ``form`` (compiled if need be)."""
    from graphrnn.unroll import Run, _prepare
    xp, dtype, xs, s0, n, t = _prepare(cell, params, xs, state0)
    plan = gr.compile_cell(cell)
    kernels = numba_runtime._kernels(plan, dtype)
    kernels.compile([f"forward_{form}"])
    return Run(plan, xp, params, xs, s0, n, t, dtype, numba_runtime._native(kernels, form, True))


@needs_numba
@pytest.mark.parametrize("form", numba_loops.FORMS)
@pytest.mark.parametrize("name", CELLS)
def test_builtin_cells_native_loops_equal_numpy_loops_for_every_gradient_request(name, form):
    cell = gr.cells.get(name)(3, 4)
    params, xs, s0 = random_inputs(cell, np.random.default_rng(7), batch=2, steps=5)
    numpy_run = gr.unroll(cell, params, xs, s0, engine="numpy")
    native_run = _native(cell, params, xs, s0, form)
    assert native_run.engine == "native"
    for dhs, dstate in ((None, None), (None, False), (False, None)):
        for need_xs in (True, False):
            report = check_engines(cell, params, xs, s0, dhs=dhs, dstate=dstate, need_xs=need_xs,
                                   runs=(numpy_run, native_run))
            assert compared_every_gradient(report, cell, xs=need_xs)
    # a second backward of the same run gives the same bits (nothing it reads was overwritten)
    dhs = np.cos(numpy_run.hs)
    g1, g2 = native_run.backward(dhs), native_run.backward(dhs)
    for k in g1.params:
        assert np.array_equal(g1.params[k], g2.params[k])
    assert np.array_equal(g1.xs, g2.xs)


@needs_numba
@pytest.mark.parametrize("form", numba_loops.FORMS)
def test_a_conditional_rule_summed_with_other_gradients_keeps_them(form):
    """relu's rule is ``dy if y > 0 else 0``; joined into the sum of a value's
    gradients it once took the whole sum under its condition (found by the
    random cells: dstate0 was 0 wherever the state was negative)."""
    c = gr.CellBuilder("relu-and-more")
    x, s = c.input("x", 3), c.state("s", 4)
    W, U = c.param("W", (3, 4)), c.param("U", (4, 4))
    c.update(s=gr.sigmoid(gr.relu(s) @ U + (s + s) @ U + x @ W))
    cell = c.build()
    params, xs, s0 = random_inputs(cell, np.random.default_rng(3), batch=2, steps=2)
    assert (s0["s"] < 0).any()
    a = gr.unroll(cell, params, xs, s0, engine="numpy")
    assert compared_every_gradient(check_engines(cell, params, xs, s0, runs=(a, _native(cell, params, xs, s0, form))),
                                    cell)


def test_scalar_expressions_compose_inside_sums():
    relu_rule = scalar.python_expr("dy if y > 0 else 0", {"dy": "2.0", "y": "-1.0"}, {}, const=repr)
    assert eval(f"3.0 + {relu_rule}") == 3.0


@needs_numba
@settings(max_examples=scaled_examples(25), deadline=None)
@given(data=st.data(), cell=random_cells())
def test_random_cells_native_loops_equal_numpy_loops(data, cell):
    params, xs, state0 = data.draw(unroll_args(cell, max_steps=5), label="unroll args")
    if data.draw(st.booleans(), label="start from zeros"):
        state0 = None
    form = data.draw(st.sampled_from(numba_loops.FORMS), label="form")
    dhs, dstate = data.draw(st.sampled_from([(None, None), (None, False), (False, None)]), label="loss")
    need_xs = data.draw(st.booleans(), label="need_xs")
    a = gr.unroll(cell, params, xs, state0, engine="numpy")
    b = _native(cell, params, xs, state0, form)
    seed = data.draw(st.integers(0, 2 ** 16), label="loss seed")
    report = check_engines(cell, params, xs, state0, dhs=dhs, dstate=dstate, need_xs=need_xs,
                           seed=seed, runs=(a, b))
    assert compared_every_gradient(report, cell, xs=need_xs)


@needs_numba
@settings(max_examples=scaled_examples(8), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_random_cells_truncated_bptt_agrees_across_engines_chunk_by_chunk(data, cell):
    """Two chunks, the second from the first's final state: each chunk's backward
    stops at its start state, the same on both engines."""
    params, xs, state0 = data.draw(unroll_args(cell, max_steps=6), label="unroll args")
    form = data.draw(st.sampled_from(numba_loops.FORMS), label="form")
    cut = data.draw(st.integers(1, max(1, xs.shape[1] - 1)), label="cut")
    first, second = xs[:, :cut], xs[:, cut:]
    if second.shape[1] == 0:
        second = first
    a1 = gr.unroll(cell, params, first, state0, engine="numpy")
    b1 = _native(cell, params, first, state0, form)
    assert compared_every_gradient(check_engines(cell, params, first, state0, runs=(a1, b1)), cell)
    a2 = gr.unroll(cell, params, second, a1.state, engine="numpy")
    b2 = _native(cell, params, second, b1.state, form)
    assert compared_every_gradient(check_engines(cell, params, second, a1.state, runs=(a2, b2)), cell)


@needs_numba
@settings(max_examples=scaled_examples(8), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_random_cells_in_float32_agree_within_float32_rounding(data, cell):
    params, xs, state0 = data.draw(unroll_args(cell, dtype=np.float32, max_steps=5), label="unroll args")
    a = gr.unroll(cell, params, xs, state0, engine="numpy")
    b = _native(cell, params, xs, state0, "fused")
    assert b.hs.dtype == np.float32
    assert compared_every_gradient(check_engines(cell, params, xs, state0, runs=(a, b)), cell)


@needs_numba
@pytest.mark.parametrize("name", ("lstm", "gru"))
def test_stateful_layer_runs_the_same_on_both_engines(name, monkeypatch):
    cell = gr.cells.get(name)(3, 4)
    rng = np.random.default_rng(5)
    chunks = [rng.uniform(-1, 1, (2, 4, 3)) for _ in range(3)]
    out = {}
    for engine in ("numpy", "native"):
        monkeypatch.setenv("GRAPHRNN_ENGINE", engine)
        layer = gr.Recurrent(cell, stateful=True, seed=3)
        hs, dxs = [], []
        for x in chunks:
            hs.append(layer.forward(x))
            dxs.append(layer.backward(np.cos(hs[-1])))
            assert layer.run.engine == engine
        out[engine] = (np.concatenate(hs, 1), np.concatenate(dxs, 1), dict(layer.grads))
    (h0, d0, g0), (h1, d1, g1) = out["numpy"], out["native"]
    np.testing.assert_allclose(h1, h0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d1, d0, rtol=1e-12, atol=1e-14)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- choosing the engine

def test_unknown_engine_is_refused_naming_the_choices():
    cell = gr.cells.rnn(2, 3)
    with pytest.raises(gr.GraphError, match="unknown engine 'fast'.*numpy, native, auto"):
        gr.unroll(cell, cell.init_params(), np.zeros((1, 2, 2)), engine="fast")


@needs_numba
def test_graphrnn_engine_variable_forces_either_engine(monkeypatch):
    cell = gr.cells.lstm(2, 3)
    xs, params = np.zeros((1, 2, 2)), cell.init_params()
    monkeypatch.setenv("GRAPHRNN_ENGINE", "native")
    assert gr.unroll(cell, params, xs).engine == "native"
    monkeypatch.setenv("GRAPHRNN_ENGINE", "numpy")
    assert gr.unroll(cell, params, xs).engine == "numpy"
    assert gr.unroll(cell, params, xs, engine="native").engine == "native"  # the argument wins


@needs_numba
def test_auto_runs_numpy_while_a_hot_plan_builds_in_another_process_then_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba_runtime, "BUILD_AFTER_S", 0.0)
    monkeypatch.setattr(numba_runtime, "BUILD_AT_EXIT_S", 0.0)
    monkeypatch.setattr(numba_runtime, "LOAD_AFTER_S", 0.0)
    monkeypatch.setattr(numba_runtime, "LOAD_AGAIN_AFTER_S", 0.0)
    monkeypatch.setattr(numba_runtime, "HISTORY_AFTER_S", 0.0)
    monkeypatch.setattr(numba_runtime, "CHECK_EVERY_S", 0.0)
    cell = gr.cells.mgu(2, 5)  # a plan of its own: no kernels loaded in this process yet
    params, xs, _ = random_inputs(cell, np.random.default_rng(2), batch=1, steps=6)
    dhs = np.ones((1, 6, 5))
    engines = []
    for _ in range(3):
        run = gr.unroll(cell, params, xs, engine="auto")
        run.backward(dhs)
        engines.append(run.engine)
    assert engines == ["numpy"] * 3
    kernels = numba_runtime._kernels(gr.compile_cell(cell), np.float64)
    assert kernels.build is not None, "a plan that ran on the numpy loops long enough starts a build"
    # each call advances auto by one step: a build finished is loaded, what a
    # run asked for since is built next; a handful of calls get there
    for _ in range(6):
        if kernels.build is not None:
            assert kernels.build.wait() == 0
        if kernels.loading is not None:
            kernels.loading.join()
        run = gr.unroll(cell, params, xs, engine="auto")
        run.backward(dhs)
    assert run.engine == "native"
    expected = gr.unroll(cell, params, xs, engine="numpy")
    np.testing.assert_allclose(run.hs, expected.hs, rtol=1e-12)
    # its backward was asked for while numpy ran: the build compiled that too
    assert "backward_fused_11" in kernels.ready


_CACHE_PROBE = """
import numpy as np, graphrnn as gr
from graphrnn.emit import numba_runtime
cell = gr.cells.gru(2, 3)
run = gr.unroll(cell, cell.init_params(), np.ones((1, 4, 2)), engine="native")
run.backward(np.ones((1, 4, 3)))
k = numba_runtime._kernels(gr.compile_cell(cell), np.float64)
hits = sum(sum(getattr(k.module, n).stats.cache_hits.values()) for n in k.module.SIGNATURES)
misses = sum(sum(getattr(k.module, n).stats.cache_misses.values()) for n in k.module.SIGNATURES)
print(run.engine, hits, misses)
"""


@needs_numba
def test_a_second_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    env = dict(os.environ, GRAPHRNN_CACHE_DIR=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    engine, hits, misses = first.stdout.split()
    assert engine == "native" and int(misses) > 0 and int(hits) == 0
    engine, hits, misses = second.stdout.split()
    assert engine == "native" and int(hits) > 0 and int(misses) == 0


def test_without_numba_graphrnn_runs_the_numpy_loops(monkeypatch):
    monkeypatch.setattr(numba_runtime, "_numba_ok", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    assert not numba_runtime.numba_available()
    cell = gr.cells.lstm(2, 3)
    params, xs = cell.init_params(), np.ones((1, 3, 2))
    assert gr.unroll(cell, params, xs, engine="auto").engine == "numpy"
    with pytest.warns(RuntimeWarning, match="numba is not installed"):
        assert gr.unroll(cell, params, xs, engine="native").engine == "numpy"


_NO_NUMBA = """
import sys
sys.modules["numba"] = None
import numpy as np, graphrnn as gr
from graphrnn.tasks import get
cell = gr.cells.gru(2, 3)
run = gr.unroll(cell, cell.init_params(), np.ones((1, 4, 2)))
print(run.engine, run.backward(np.ones((1, 4, 3))).params["Wh"].shape)
"""


def test_a_process_that_cannot_import_numba_imports_and_runs_graphrnn():
    out = subprocess.run([sys.executable, "-c", _NO_NUMBA], capture_output=True, text=True,
                         env=dict(os.environ, GRAPHRNN_ENGINE="auto"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "(3,", "9)"]


@needs_numba
def test_one_build_per_module_when_several_processes_want_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    kernels = numba_runtime.Kernels(gr.compile_cell(gr.cells.rnn(2, 3)), np.float64)
    kernels.write()
    lock = kernels.path + ".building"
    open(lock, "w").close()  # another process is building this module
    kernels.build_in_background(["forward_fused"])
    assert kernels.build is None and os.path.exists(lock)
    os.utime(lock, (0, 0))  # ... or was, and died long ago
    kernels.build_in_background(["forward_fused"])
    assert kernels.build is None and not os.path.exists(lock)
    kernels.build_in_background(["forward_fused"])
    assert kernels.build is not None and kernels.build.wait() == 0
    assert not os.path.exists(lock) and kernels.cached(["forward_fused"])


@needs_numba
def test_a_first_load_happens_only_where_the_last_process_ran_long_enough_to_repay_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba_runtime, "_loaded_any", [])  # numba not started in this process
    kernels = numba_runtime.Kernels(gr.compile_cell(gr.cells.rnn(2, 7)), np.float64)
    kernels.write()
    assert not numba_runtime._load_pays(kernels, "fused", 0.1)  # no history: wait LOAD_AFTER_S
    assert numba_runtime._load_pays(kernels, "fused", numba_runtime.LOAD_AFTER_S)
    long_run = 10 * numba_runtime.FIRST_LOAD_S
    for runs, per_run, pays in ((10_000, long_run / 10_000, True), (10_000, 0.1 / 10_000, False)):
        kernels.history = None
        with open(kernels.path[:-3] + ".history.json", "w") as f:
            f.write(f'{{"runs": {runs}, "numpy_s_per_run": {per_run}}}')
        assert numba_runtime._load_pays(kernels, "fused", 0.1) is pays
    # a process leaves its own history
    kernels.runs, kernels.numpy_runs, kernels.loop_seconds = 40, 40, 2.0
    kernels.write_history()
    kernels.history = None
    assert kernels.read_history() == (40, 0.05)


_SHORT_RUN = """
import numpy as np, graphrnn as gr
from graphrnn.emit import numba_runtime
numba_runtime.BUILD_AT_EXIT_S = numba_runtime.HISTORY_AFTER_S = 0.0
cell = gr.cells.rnn(2, 5)
params = cell.init_params()
for _ in range(3):
    run = gr.unroll(cell, params, np.ones((1, 4, 2)), engine="auto")
    run.backward(np.ones((1, 4, 5)))
k = numba_runtime._kernels(gr.compile_cell(cell), np.float64)
print(run.engine, k.build is None, k.path)
"""


@needs_numba
def test_a_run_too_short_to_build_leaves_the_build_to_a_process_started_at_its_exit(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHRNN_BACKGROUND_BUILD", "1")  # asked for: a build may outlive the run
    out = subprocess.run([sys.executable, "-c", _SHORT_RUN], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    engine, no_build_while_running, path = out.stdout.split()
    assert engine == "numpy" and no_build_while_running == "True"
    kernels = numba_runtime.Kernels(gr.compile_cell(gr.cells.rnn(2, 5)), np.float64)
    assert kernels.path == path
    lock = path + ".building"
    while os.path.exists(lock):  # the build started at exit, and is still running or just done
        pid = _lock_holder(lock)   # 0 until the starter has written it
        if pid and not _alive(pid):
            break
        time.sleep(0.2)
    assert not os.path.exists(lock)
    assert kernels.cached(["forward_fused", "backward_fused_11"])
    assert os.path.exists(path[:-3] + ".history.json")


def _lock_holder(lock):
    try:
        with open(lock) as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


_BUSY_RUN = """
import sys, numpy as np, graphrnn as gr
from graphrnn.emit import numba_runtime as nr
nr.BUILD_AT_EXIT_S = nr.HISTORY_AFTER_S = nr.CHECK_EVERY_S = 0.0
nr.BUILD_AFTER_S = float(sys.argv[1])  # 0: a build starts while the script runs
cell = gr.cells.gru(2, 5)
params = cell.init_params()
for _ in range(3):
    run = gr.unroll(cell, params, np.ones((1, 4, 2)), engine="auto")
    run.backward(np.ones((1, 4, 5)))
print(nr._kernels(gr.compile_cell(cell), np.float64).build is not None)
"""


def _processes_naming(text):
    """Live processes whose command line names ``text`` (Linux /proc)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@needs_numba
@pytest.mark.parametrize("build_after", ["0", "1e9"])
def test_no_process_of_graphrnns_outlives_a_plain_script(tmp_path, build_after):
    """A script under auto, with a fresh cache: a build started while it runs
    ends with it, and none starts at its exit unless GRAPHRNN_BACKGROUND_BUILD asks."""
    env = {k: v for k, v in os.environ.items() if k != "GRAPHRNN_BACKGROUND_BUILD"}
    env["GRAPHRNN_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", _BUSY_RUN, build_after], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["True"] if build_after == "0" else ["False"])
    assert _processes_naming(str(tmp_path)) == []
    assert not [n for n in os.listdir(tmp_path / "native") if n.endswith(".building")]


_FIRST_CALL = """
import sys, numpy as np, graphrnn as gr
cell = gr.cells.gru(2, 3)
run = gr.unroll(cell, cell.init_params(), np.ones((1, 4, 2)), engine=sys.argv[1] or None)
print(run.engine)
"""


@needs_numba
def test_a_compile_says_so_once_and_auto_then_runs_native_from_the_first_call(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHRNN_ENGINE"}
    env["GRAPHRNN_CACHE_DIR"] = str(tmp_path)

    def run(engine):
        out = subprocess.run([sys.executable, "-c", _FIRST_CALL, engine], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip(), out.stderr
    assert run("") == ("numpy", "")        # auto, cold cache: the numpy loops, no compiler
    engine, err = run("native")
    assert engine == "native" and err.count("compiling the native loops of cell 'gru'") == 1
    assert "compiled in" in err
    assert run("native") == ("native", "")  # from the disk cache, silently
    assert run("") == ("native", "")        # auto's default, now that it is cached
