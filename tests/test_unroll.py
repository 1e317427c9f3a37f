"""The scheduler: the loop environment it makes from the plan's buffer list,
truncated BPTT, stateful layers and the workspace."""
import pathlib
import re

import numpy as np
import pytest

import graphrnn as gr
from graphrnn.emit import NumpyLoops, cuda_kernels, numba_loops, numpy_loops
from graphrnn.plan import ROLES, LoopEnv, buffer_name
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
