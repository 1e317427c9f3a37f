"""gr.compile_step: the whole training step (forward, head, loss, BPTT, clip,
update) as one native function, against the numpy reference on random cells
and random heads in float64 to 1e-12; its buffers, its errors."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.emit import numba_runtime, step_numba
from graphrnn.step import LOSSES
from graphrnn.testing import random_cells, scaled_examples, unroll_args

needs_numba = pytest.mark.skipif(not numba_runtime.numba_available(), reason="numba is not installed")


def _head(kind, out, width):
    if kind == "linear":
        return gr.Linear(out, bias=True)
    if kind == "linear-nobias":
        return gr.Linear(out, bias=False)
    return gr.Columns(0, min(out, width))


def _targets(rng, loss, n, t, out):
    if loss == "softmax_ce":
        return rng.integers(0, out, (n, t))
    return rng.uniform(-1, 1, (n, t, out)) if loss == "squared_error" else rng.uniform(0, 1, (n, t, out))


def _pair(cell, params, head_kind, out, loss, clip, optimizer, rng):
    """Two steps from the same parameters: native and the numpy reference."""
    runs = []
    for engine in ("native", "numpy"):
        head = _head(head_kind, out, cell.output_size)
        ps = {k: v.copy() for k, v in params.items()}
        for name, shape in head.bind(cell.output_size).param_shapes().items():
            ps[name] = np.random.default_rng(7).uniform(-0.5, 0.5, shape)
        runs.append((gr.compile_step(cell, ps, head=head, loss=loss, clip=clip, optimizer=optimizer,
                                     lr=0.05, engine=engine), ps))
    return runs


def _agree(a, b, what):
    scale = max(1.0, float(np.max(np.abs(b))))
    assert np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0) <= 1e-12 * scale, what



@needs_numba
def test_a_three_operand_primitive_in_the_recurrence_binds_its_own_operand_names():
    # where(m, a, b) names its inputs m, a, b: the step's loops once assumed x or a, b
    c = gr.CellBuilder("w")
    x, s = c.input("x", 1), c.state("s0", 1)
    v = s + x
    c.update(s0=gr.tanh(gr.where(v > 0.123, v, 0.25 * v) @ c.param("p1", (1, 1))))
    cell = c.build()
    rng = np.random.default_rng(0)
    (a, pa), (b, pb) = _pair(cell, {"p1": np.full((1, 1), 0.3)}, "linear", 2, "softmax_ce", None, "sgd", rng)
    xs = rng.uniform(-1, 1, (1, 2, 1))
    ys = _targets(rng, "softmax_ce", 1, 2, a.head.out_size)
    la, lb = a(xs, ys, None), b(xs, ys, None)
    assert (a.engine, b.engine) == ("native", "numpy")
    _agree(la, lb, "loss")
    for k in pb:
        _agree(pa[k], pb[k], f"parameter {k!r}")

@needs_numba
@settings(max_examples=scaled_examples(5), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_random_cells_and_heads_native_step_equals_the_numpy_step(data, cell):
    _random_step_agrees(data, cell)


@needs_numba
@settings(max_examples=scaled_examples(3), deadline=None)
@given(data=st.data(), cell=random_cells(max_ops=6))
def test_products_run_through_blas_inside_the_native_step_agree_too(data, cell):
    # every product whose row operand is a per-step value as a BLAS call (primes' path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(step_numba, "BLAS_MIN_MACS", 1)
        _random_step_agrees(data, cell)


def _random_step_agrees(data, cell):
    params, xs, state0 = data.draw(unroll_args(cell, max_steps=4), label="unroll args")
    head_kind = data.draw(st.sampled_from(["linear", "linear-nobias", "columns"]), label="head")
    loss = data.draw(st.sampled_from(LOSSES), label="loss")
    out = data.draw(st.integers(2, 3), label="outputs")
    if head_kind == "columns":
        out = min(out, cell.output_size)
        if loss == "softmax_ce" and out < 2:
            loss = "squared_error"
    clip = data.draw(st.sampled_from([None, 0.3]), label="clip")
    optimizer = data.draw(st.sampled_from(["sgd", "adam"]), label="optimizer")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    (a, pa), (b, pb) = _pair(cell, params, head_kind, out, loss, clip, optimizer, rng)
    n, t = xs.shape[:2]
    sa = sb = state0
    for i in range(3):  # the state carried on, and Adam's moments, across calls
        ys = _targets(rng, loss, n, t, a.head.out_size)
        la, lb = a(xs, ys, sa), b(xs, ys, sb)
        sa, sb = a.state, b.state
        # a primitive the step's loops do not cover (a feature reduction) runs the
        # reference path, said once; only cells the native step takes are compared
        assume(a.engine == "native")
        assert b.engine == "numpy"
        _agree(la, lb, f"loss at call {i}")
        _agree(a.residual, b.residual, f"residual at call {i}")
        for k in pb:
            _agree(pa[k], pb[k], f"parameter {k!r} after call {i}")
        for k in sb:
            _agree(sa[k], sb[k], f"state {k!r} after call {i}")
        _agree(a.outputs(), b.outputs(), f"outputs at call {i}")


@needs_numba
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_sequences_of_many_lengths_with_the_state_carried_agree_and_learn(name):
    """As dinosaurs: one name per call, each its own length, the state carried on."""
    rng = np.random.default_rng(0)
    cell = gr.cells.from_spec(name, 5, 6)
    params = cell.init_params(seed=3)
    (a, pa), (b, pb) = _pair(cell, params, "linear", 5, "softmax_ce", 5.0, "sgd", rng)
    seqs = [(rng.standard_normal((1, t, 5)), rng.integers(0, 5, (1, t))) for t in (3, 9, 2, 17, 1)]
    sa = sb = None
    first = last = 0.0
    for epoch in range(30):
        total = 0.0
        for xs, ys in seqs:
            la, lb = a(xs, ys, sa), b(xs, ys, sb)
            sa, sb = a.state, b.state
            total += la
        first = first or total
        last = total
        for k in pb:
            _agree(pa[k], pb[k], f"parameter {k!r} after epoch {epoch}")
    assert last < 0.85 * first  # it learns (the targets are random: it memorises them)


@needs_numba
def test_primes_large_product_takes_the_native_step_through_blas_and_a_large_batch_does_not():
    cell = gr.cells.from_spec("lstm_nico", 50, 100)   # one 150 x 400 product per step
    step = gr.compile_step(cell, cell.init_params(seed=0), head=gr.Columns(0, 1), engine="native")
    assert step_numba.blas_products(step.plan)
    step._choose(np.zeros((1, 10, 50)))   # chooses (and writes the module) without compiling it
    assert step.engine == "native"
    wide = gr.compile_step(cell, cell.init_params(seed=0), head=gr.Columns(0, 1), engine="native")
    wide._choose(np.zeros((64, 10, 50)))   # rows one at a time lose to one GEMM over the batch
    assert wide.engine == "numpy"
    with pytest.MonkeyPatch.context() as mp:   # an install without SciPy: numba's np.dot has no BLAS
        mp.setattr(step_numba, "_scipy_blas", lambda: False)
        assert not step_numba.blas_products(step.plan)
        bare = gr.compile_step(cell, cell.init_params(seed=0), head=gr.Columns(0, 1), engine="native")
        bare._choose(np.zeros((1, 10, 50)))   # the large product stays on the reference path's BLAS
        assert bare.engine == "numpy"


def _blas_threads():
    from threadpoolctl import threadpool_info
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_a_step_of_a_few_rows_runs_blas_on_one_thread_and_gives_the_threads_back():
    # OpenBLAS's threads wait for each other on every small call when the cores
    # are busy (primes: 9x slower on two threads with the cores taken)
    from threadpoolctl import threadpool_limits
    cell = gr.cells.from_spec("lstm_nico", 50, 100)
    rng = np.random.default_rng(0)
    seen = []
    with threadpool_limits(2, user_api="blas"):
        if set(_blas_threads().values()) != {2}:
            pytest.skip("BLAS here will not run two threads")
        for rows in (1, 64):
            step = gr.compile_step(cell, cell.init_params(seed=0), head=gr.Columns(0, 1), engine="numpy")
            reference = step._reference_step

            def watched(*args, reference=reference):
                seen.append(_blas_threads())
                return reference(*args)
            step._reference_step = watched
            loss = step(rng.uniform(-1, 1, (rows, 10, 50)), rng.uniform(-1, 1, (rows, 10, 1)))
            assert np.isfinite(loss)
            assert set(_blas_threads().values()) == {2}   # given back
    assert set(seen[0].values()) == {1}   # one row: one thread
    assert set(seen[1].values()) == {2}   # a batch of 64: BLAS as the user set it


@needs_numba
def test_a_native_step_holds_blas_to_one_thread_only_where_it_calls_blas():
    cell = gr.cells.from_spec("lstm_nico", 50, 100)   # primes: its product goes to BLAS
    step = gr.compile_step(cell, cell.init_params(seed=0), head=gr.Columns(0, 1), engine="native")
    step._choose(np.zeros((1, 10, 50)))
    assert step.engine == "native" and step._one_thread is not None and step._one_thread.libs
    loaded = {lib.filepath for lib in step._one_thread.libs}
    step(np.zeros((1, 10, 50)), np.zeros((1, 10, 1)))   # loads (or compiles) the kernel, and SciPy's BLAS
    assert set(_blas_threads()) <= {lib.filepath for lib in step._one_thread.libs}   # every BLAS now loaded
    assert loaded <= set(_blas_threads())
    small = gr.cells.get("rnn")(2, 16)   # binary addition's size: no BLAS in the step
    bare = gr.compile_step(small, small.init_params(seed=0), head=gr.Columns(0, 1), engine="native")
    bare._choose(np.zeros((1, 8, 2)))
    assert bare.engine == "native" and bare._one_thread is None


@needs_numba
def test_a_native_step_allocates_nothing_per_call():
    cell = gr.cells.rnn(2, 16, activation="sigmoid", bias=False)
    params = cell.init_params(seed=0)
    params["out.W"] = np.full((16, 1), 0.1)
    step = gr.compile_step(cell, params, head=gr.Linear(1, bias=False), loss="sigmoid_squared_error",
                           engine="native")
    xs, ys = np.ones((1, 8, 2)), np.ones((1, 8, 1))
    step(xs, ys)
    buffers = [id(a) for a in step._args if isinstance(a, np.ndarray)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(500):
        step(xs, ys)
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # a call's few Python objects (its arguments' tuple, the returned floats) come
    # and go; the smallest array of this step would be 64 bytes kept per call
    assert now - before < 512 and peak - before < 4096, (now - before, peak - before)
    assert [id(a) for a in step._args if isinstance(a, np.ndarray)] == buffers


@pytest.mark.parametrize("engine", ["numpy", pytest.param("native", marks=needs_numba)])
def test_errors_name_what_is_wrong_and_change_nothing(engine):
    cell = gr.cells.gru(3, 4)
    params = cell.init_params(seed=0)
    params["out.W"], params["out.b"] = np.zeros((4, 3)), np.zeros(3)
    step = gr.compile_step(cell, params, head=gr.Linear(3), loss="softmax_ce", engine=engine)
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(gr.GraphError, match=r"xs must be \(N, T, 3\)"):
        step(np.ones((1, 4, 2)), np.zeros((1, 4), np.int64))
    with pytest.raises(gr.GraphError, match=r"targets must be \(1, 4\) int64"):
        step(np.ones((1, 4, 3)), np.zeros((1, 5), np.int64))
    with pytest.raises(gr.GraphError, match=r"a target class is outside 0..2"):
        step(np.ones((1, 4, 3)), np.array([[0, 1, 3, 0]]))
    for k, v in params.items():
        assert np.array_equal(v, before[k]), k
    with pytest.raises(gr.GraphError, match="head parameter 'out.W'"):
        gr.compile_step(cell, {k: v for k, v in params.items() if k != "out.W"}, head=gr.Linear(3))
    with pytest.raises(gr.GraphError, match="unknown loss"):
        gr.compile_step(cell, params, head=gr.Linear(3), loss="hinge")
