"""The scheduler: the loop environment it makes from the plan's buffer list,
truncated BPTT, stateful layers and the workspace."""
import pathlib
import re

import numpy as np
import pytest

import graphrnn as gr
from checked import compared_every_gradient
from graphrnn.emit import NumpyLoops, cuda_kernels, numba_loops, numpy_loops
from graphrnn.plan import ROLES, LoopEnv, buffer_name
from graphrnn.testing import check_against_naive, check_gradients
from graphrnn.unroll import Run, _prepare

CELLS = ["rnn", "gru", "lstm", "lstm_nico", "mgu"]


class _Recording:
    """The numpy loops, remembering what each call was handed."""
    name = "numpy"

    def __init__(self, plan):
        self.inner, self.seen = NumpyLoops(plan), []

    def forward(self, env):
        self.seen.append(("forward", env))
        return self.inner.forward(env)

    def backward(self, env, need_xs, has_dhs):
        self.seen.append(("backward", env, need_xs, has_dhs))
        return self.inner.backward(env, need_xs, has_dhs)


def _run(cell, loops_for, seed=0, n=2, t=3):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-1, 1, s) for k, s in cell.param_shapes().items()}
    xs = rng.uniform(-1, 1, (n, t, cell.input_size))
    xp, dtype, xs, s0, n, t = _prepare(cell, params, xs, None)
    plan = gr.compile_cell(cell)
    loops = loops_for(plan)
    return plan, loops, Run(plan, xp, params, xs, s0, n, t, dtype, loops)


@pytest.mark.parametrize("name", CELLS)
def test_loops_get_exactly_the_buffers_the_plan_lists_in_the_shapes_it_says(name):
    plan, loops, run = _run(gr.cells.get(name)(3, 4), _Recording)
    run.backward(np.ones(run.hs.shape))
    run.backward(None, {k: np.ones(v.shape) for k, v in run.state.items()}, need_xs=False)
    (_, fwd), (_, b1, *key1), (_, b2, *key2) = loops.seen
    sizes = {"T+1": 4, "T": 3, "N": 2}
    assert all(type(env) is LoopEnv for env in (fwd, b1, b2))
    assert set(fwd.arrays) == {b.name for b in plan.forward_buffers}
    for env, key in ((b1, key1), (b2, key2)):
        listed = plan.forward_buffers + plan.backward_buffers(*key)
        assert set(env.arrays) == {b.name for b in listed}
        for b in listed:
            a = env.arrays[b.name]
            assert b.name == buffer_name(b.role, b.node) and b.lead == ROLES[b.role][1]
            want = plan.shape[b.node] if b.role == "static" else tuple(sizes[x] for x in b.lead) + plan.shape[b.node][1:]
            assert a.shape == want, b
            if b.of is not None:
                assert np.shares_memory(a, env.arrays[b.of]), b
            if b.zero:
                assert not a.any(), b  # no step writes it: it stays the zeros it was made as
    assert loops.seen[0][1].arrays is run.env.arrays  # one environment per call, grown for BPTT


@pytest.mark.parametrize("name", CELLS)
def test_every_emitter_reads_only_buffers_the_plan_lists(name):
    plan = gr.compile_cell(gr.cells.get(name)(3, 4))
    fwd = {b.name for b in plan.forward_buffers}
    every = set(fwd)
    for key in numba_loops.KEYS:
        names = fwd | {b.name for b in plan.backward_buffers(*key)}
        every |= names
        assert set(re.findall(r"E\['(\w+)'\]", numpy_loops.backward_source(plan, *key))) <= names
    assert set(re.findall(r"E\['(\w+)'\]", numpy_loops.forward_source(plan))) <= fwd
    text, _, _ = numba_loops.module_source(plan, np.float64)
    read = set(re.findall(r"E\['(\w+)'\]", text))
    assert read and read <= every
    _, drivers = cuda_kernels.module_text(plan, np.float64)
    assert set(re.findall(r"E\['(\w+)'\]", drivers)) <= every


def test_no_emitter_reads_the_run():
    emit = pathlib.Path(gr.emit.__file__).parent
    for path in emit.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\brun\.\w", text), path.name


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


def test_the_after_loop_runs_as_code_recorded_once_and_writes_slices_into_their_parent():
    """The GRU's gate slices of dWh are written straight into their columns of
    one zero-filled dWh: the recording keeps _Acc's decisions, not a copy and add."""
    from graphrnn.unroll import _programs
    cell = gr.cells.gru(3, 4)
    rng = np.random.default_rng(0)
    params = cell.init_params(seed=0)
    xs, dhs = rng.uniform(-1, 1, (2, 5, 3)), rng.uniform(-1, 1, (2, 5, 4))
    g1 = gr.unroll(cell, params, xs).backward(dhs)
    plan = gr.compile_cell(cell)
    prog = _programs[plan][(True, True)]
    g2 = gr.unroll(cell, params, xs[:, :3]).backward(dhs[:, :3])  # another T: the same code
    assert _programs[plan][(True, True)] is prog
    src = prog.source
    assert src.count("Z(") == 1 and "+=" not in src and "for " not in src, src
    assert [line.split("=")[1].strip() for line in src.splitlines() if "[..., " in line] == ["v2[..., 0:8]", "v2[..., 8:12]"], src
    naive = gr.unroll_naive(cell, params, xs).backward(dhs)
    for k in params:
        np.testing.assert_allclose(g1.params[k], naive.params[k], rtol=1e-12, atol=1e-14)
    assert g2.xs.shape == (2, 3, 3)


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
    assert compared_every_gradient(check_against_naive(cell, params, rng.uniform(-1, 1, (2, 3, 2))), cell)
    assert compared_every_gradient(check_gradients(cell, steps=3, seed=1), cell)


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
