"""Anomaly mode: the first node whose value or gradient is not finite, named.

    with gr.detect_anomaly():
        run = gr.unroll(cell, params, xs)      # AnomalyError at the first NaN/inf
        run.backward(dhs)

``graphrnn train --detect-anomaly`` (and ``graphrnn sweep --detect-anomaly``)
train inside it. Off by default, and then free: ``gr.unroll`` asks one
context variable. On, the compiled loops run exactly as they always do; their
inputs, outputs and gradients are checked with ``isfinite`` (the measured cost
is in docs/tasks.md). Only when a check fails is the same call re-run, step by
step, through the declared graph (the naive interpreter behind
``gr.unroll_naive``), checking every node's forward value and every local
backward's result in the order they are computed, so the error names the
first node that went wrong: its label, the step t, the cell and the
primitive's rule. This is JAX's ``debug_nans`` design (re-run un-jitted on a
NaN) rather than PyTorch's (record every op's stack as it runs): what it costs
is paid once, at the failure.
"""
from __future__ import annotations

import contextlib
import contextvars

from .errors import AnomalyError

_ON = contextvars.ContextVar("graphrnn_detect_anomaly", default=False)


@contextlib.contextmanager
def detect_anomaly(enabled=True):
    """Within it, ``gr.unroll`` and its ``backward`` raise ``AnomalyError`` at
    the first non-finite value, naming the node, the step, the cell and the rule."""
    token = _ON.set(bool(enabled))
    try:
        yield
    finally:
        _ON.reset(token)


def active():
    return _ON.get()


# ----------------------------------------------------------------------------- checks

def _bad(xp, a):
    """(kind, index) of the first non-finite element of ``a``, or None."""
    if a is None:
        return None
    ok = xp.isfinite(a)
    if bool(ok.all()):
        return None
    import numpy as np
    from . import backend
    idx = tuple(int(i) for i in np.argwhere(~backend.to_numpy(ok))[0])
    v = float(backend.to_numpy(a[idx]))
    return ("nan" if v != v else "inf" if v > 0 else "-inf"), idx


def check_inputs(cell, xp, params, xs, state0):
    """Refuse a call whose inputs already hold a NaN or inf, naming which."""
    found = _bad(xp, xs)
    if found:
        kind, (n, t, d) = found
        raise AnomalyError(f"anomaly in cell {cell.name!r}: the input xs holds {kind} at sequence {n}, "
                           f"step t={t}, feature {d}: the data, not the cell")
    for name, p in params.items():
        found = _bad(xp, p)
        if found:
            raise AnomalyError(f"anomaly in cell {cell.name!r}: parameter {name!r} holds {found[0]} at "
                               f"{found[1]} (a step before this one diverged)")
    for name, s in (state0 or {}).items():
        found = _bad(xp, s)
        if found:
            raise AnomalyError(f"anomaly in cell {cell.name!r}: the initial state {name!r} holds "
                               f"{found[0]} at {found[1]}")


def watch(run, cell, params, xs, state0, replay):
    """Check a compiled run's outputs now and its gradients when ``backward``
    is called; on a non-finite value, find its first node by ``replay`` (the
    scheduler's step-by-step interpreter, handed in so that the arrow from
    unroll to this module stays one-way). Returns ``run``."""
    xp = run.xp
    check_inputs(cell, xp, params, xs, state0)
    if _bad(xp, run.hs) or any(_bad(xp, s) for s in run.state.values()):
        _first_bad_forward(replay(cell, params, xs, state0), cell, engine=run.engine)
    compiled_backward = run.backward

    def backward(dhs=None, dstate=None, *, need_xs=True):
        found = _bad(xp, dhs)
        if found:
            raise AnomalyError(f"anomaly in cell {cell.name!r}: the gradient given to backward (dhs) "
                               f"holds {found[0]} at {found[1]}, step t={found[1][1]}: the loss above the cell")
        g = compiled_backward(dhs, dstate, need_xs=need_xs)
        results = [*g.params.values(), g.xs, *(g.state0 or {}).values()]
        if any(_bad(xp, r) for r in results):
            _first_bad_backward(replay(cell, params, xs, state0), cell, dhs, dstate, engine=run.engine)
        return g
    run.backward = backward
    return run


# ----------------------------------------------------------------------------- finding the node

def _where(cell, node, t):
    a = cell.graph.nodes[node]
    op = a["op"]
    return f"node {a['label']!r} ({op.name}) at step t={t} of cell {cell.name!r}"


def _forward(op):
    return "forward " + ((type(op).__doc__ or "").strip().split(";")[0].strip() or "(undocumented)")


def _rule(op):
    return f"{_forward(op)}; backward {', '.join(op.rule) or '(no rule declared)'}"


def _first_bad_forward(naive, cell, engine):
    g = cell.graph
    for t, values in enumerate(naive.steps):
        for node in naive.order:
            a = g.nodes[node]
            if a["kind"] != "op":
                continue
            found = _bad(naive.xp, values[node])
            if found:
                args = ", ".join(f"{g.nodes[p]['label']}" for p in a["args"])
                raise AnomalyError(f"anomaly: the forward value of {_where(cell, node, t)} is {found[0]} "
                                   f"at {found[1]}, from finite {args} (rule: {_rule(a['op'])})")
    raise AnomalyError(f"anomaly in cell {cell.name!r}: the {engine} loops produced a non-finite output that "
                       "the declared graph, run step by step, does not: an engine bug; please report it")


def _first_bad_backward(naive, cell, dhs, dstate, engine):
    """The naive interpreter's backward, each local backward's results checked
    as they are made, latest step first (the order BPTT computes them)."""
    xp, g = naive.xp, cell.graph

    def check(t, node, i, d):
        found = _bad(xp, d)
        if found:
            a = g.nodes[node]
            rule = a["op"].rule[i] if i < len(a["op"].rule) else "(no rule declared)"
            raise AnomalyError(
                f"anomaly: the gradient that {_where(cell, node, t)} passes to "
                f"{g.nodes[a['args'][i]]['label']!r} is {found[0]} at {found[1]}, from a finite dL/d"
                f"{a['label']} (its rule: {rule}; {_forward(a['op'])})")
    naive.backward(dhs, dstate, need_xs=False, each_gradient=check)
    raise AnomalyError(f"anomaly in cell {cell.name!r}: the {engine} loops produced a non-finite gradient "
                       "that the declared graph, run step by step, does not: an engine bug; please report it")
