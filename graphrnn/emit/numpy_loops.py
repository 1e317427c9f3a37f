"""The numpy emitter: a plan's per-step loops as generated Python source.

One local variable per node: no graph walking, no dict look-ups and no per-node
dispatch in the loop. Every op runs through its primitive's ``forward`` or
``backward`` on the array module in force, so the same loops serve numpy and
cupy. ``forward_source`` and ``backward_source`` show what runs; ``loop``
compiles them once per plan. Nothing here decides anything: the buffers, what
is kept and how each gradient is formed come from the plan.
"""
from __future__ import annotations

import weakref

from .. import primitives
from ..plan import HOISTED, RECURRENT, GradStep, buffer_name

NAME = "numpy"
_made = weakref.WeakKeyDictionary()  # plan -> {(which, *key): compiled loop}


def value(plan, p):
    """The expression for node p's value at step t inside the backward loop."""
    if p in plan.views:
        parent, lo, hi = plan.views[p]
        return f"{value(plan, parent)}[..., {lo}:{hi}]"
    k = plan.timing[p]
    if plan.node_kind[p] == "state":
        return f"{buffer_name('state', p)}[t]"
    if k == RECURRENT:
        return f"{buffer_name('kept', p)}[t]"
    if k == HOISTED:
        return f"{buffer_name('hoisted', p)}[t]"
    return f"v{p}"


def _reads(plan, buffers, head):
    """``head``'s lines binding the buffers these loops read to locals named
    like them (a static value to its node's local, ``v<node>``). Hoisted and
    static values are read as the plan computed them, not through the arrays
    their slices view: only those the loop reads are bound."""
    read = set(plan.boundary) | set(plan.loop_statics)
    for b in buffers:
        if b.role in ("hoisted", "static") and b.node not in read:
            continue
        local = f"v{b.node}" if b.role == "static" else b.name
        head.append(f"    {local} = E[{b.name!r}]")


def forward_source(plan) -> str:
    head = ["def _forward(env):", "    xp = env.xp", "    T = env.T", "    E = env.arrays"]
    _reads(plan, plan.forward_buffers, head)
    body = []
    body += [f"        v{s} = {buffer_name('state', s)}[t]" for _, s, _ in plan.states]
    body += [f"        v{p} = {buffer_name('hoisted', p)}[t]" for p in plan.boundary]
    for n in plan.recurrent_ops:
        op, args = plan.info[n]
        kept = buffer_name("kept", n)
        if op.window is not None:
            lo, hi = op.window
            expr = f"v{args[0]}[..., {lo}:{hi}]"
            if n in plan.stored:
                body += [f"        {kept}[t] = {expr}", f"        v{n} = {kept}[t]"]
            else:
                body.append(f"        v{n} = {expr}")
            continue
        head.append(f"    op{n} = OPS[{n}]")
        call = f"op{n}(xp, {', '.join(f'v{p}' for p in args)}"
        body.append(f"        v{n} = {call}, out={kept}[t])" if n in plan.stored else f"        v{n} = {call})")
    for _, s, u in plan.states:
        if plan.inplace_update.get(s) != u:
            body.append(f"        {buffer_name('state', s)}[t + 1] = v{u}")
    return "\n".join(head + ["    for t in range(T):"] + body + ["        pass"]) + "\n"


def _source_text(src):
    """A gradient source (see ``BackwardFlow``) as an expression at step t."""
    if src[0] == "dhs":
        return f"{buffer_name('dhs', None)}[t]"
    if src[0] == "carry":
        return buffer_name("carry", src[1])
    if src[0] == "grad":
        return f"g{src[1]}"
    return f"r{src[1]}[{src[2]}]"


def _grad_lines(plan, step):
    """The lines that form one gradient, as the plan's ``GradStep`` says."""
    n, buf = step.node, step.target
    target = f"{buf}[t]" if buf else None
    fulls = [_source_text(s) for s in step.fulls]
    if step.form == "alias" or step.form == "into":
        return [f"        g{n} = {fulls[0]}"]
    if step.form == "copy":
        return [f"        {target} = {fulls[0]}", f"        g{n} = {fulls[0]}"]
    if step.form == "one":
        return [f"        g{n} = {fulls[0]}"]
    out = f", out={target}" if target else ""
    if step.form == "sum":
        return ([f"        g{n} = xp.add({fulls[0]}, {fulls[1]}{out})"]
                + [f"        g{n} += {e}" for e in fulls[2:]])
    pieces = [(lo, hi, _source_text(src)) for lo, hi, src in step.pieces]
    if step.form == "tile":
        if step.into:
            out = f", out={step.into}[t]"
        parts = ", ".join(e for _, _, e in pieces)
        return [f"        g{n} = xp.concatenate(({parts},), axis=-1{out})"]
    # workspace buffers come back dirty: a target built from pieces is cleared first
    lines = [f"        g{n} = {target}; g{n}.fill(0)" if target
             else f"        g{n} = xp.zeros((N, {plan.width[n]}), DT)"]
    lines += [f"        g{n}[..., {lo}:{hi}] += {e}" for lo, hi, e in pieces]
    lines += [f"        g{n} += {e}" for e in fulls]
    return lines


def _call_lines(plan, step):
    n = step.node
    op, args = plan.info[n]
    xs = ", ".join(value(plan, p) if i in step.saved else "None" for i, p in enumerate(args))
    y = f"{buffer_name('kept', n)}[t]" if "y" in step.saved else "None"
    return [f"        r{n} = op{n}(xp, g{n}, ({xs},), {y}, {step.needs})"]


def _backward_head(plan, flow, need_xs, has_dhs):
    head = ["def _backward(env):", "    xp = env.xp", "    T = env.T", "    N = env.N", "    DT = env.dtype",
            "    E = env.arrays"]
    _reads(plan, plan.forward_buffers + plan.backward_buffers(need_xs, has_dhs), head)
    head += [f"    op{step.node} = OPS[{step.node}]" for step in flow.steps if not isinstance(step, GradStep)]
    return head


def backward_source(plan, need_xs=True, has_dhs=True) -> str:
    flow = plan.backward_flow(need_xs, has_dhs)
    head = _backward_head(plan, flow, need_xs, has_dhs)
    body = []
    for step in flow.steps:
        if isinstance(step, GradStep):
            body += _grad_lines(plan, step)
        else:
            body += _call_lines(plan, step)
    carry = {s: buffer_name("carry", s) for s, _ in flow.carries}
    body += [f"        {carry[s]} = g{s}" if has else f"        {carry[s]} = {buffer_name('zero', s)}"
             for s, has in flow.carries]
    ret = ", ".join(carry[s] for s, _ in flow.carries)
    return "\n".join(head + ["    for t in range(T - 1, -1, -1):"] + body
                     + ["        pass", f"    return ({ret},)"]) + "\n"


def _bound(op, which):
    """``op.forward``/``op.backward``. A user's forward may return a new array
    rather than fill ``out`` (its contract: "where possible"), and the loops
    read a kept value from its buffer: such a forward's result is copied there."""
    fn = getattr(op, which)
    if which != "forward" or type(op).forward.__module__ == primitives.__name__:  # a built-in fills out
        return fn

    def forward(xp, *xs, out=None):
        y = fn(xp, *xs, out=out)
        if out is not None and y is not out:
            out[...] = y
            return out
        return y
    return forward


def loop(plan, which, *key):
    """The compiled loop function (``"forward"`` or ``"backward"``), made once per plan.

    Called as ``fn(env)`` with ``env`` the call's ``LoopEnv``; the backward
    returns the carries (each state's gradient at step 0)."""
    k = (which, *key)
    made = _made.get(plan)
    if made is None:
        made = _made[plan] = {}
    fn = made.get(k)
    if fn is None:
        src = forward_source(plan) if which == "forward" else backward_source(plan, *key)
        # the ops' bound methods are fixed for the plan's life: bound once, here
        namespace = {"OPS": {n: _bound(plan.info[n][0], which) for n in plan.recurrent_ops}}
        exec(compile(src, f"<graphrnn plan {plan.cell.name} {which}>", "exec"), namespace)
        fn = made[k] = namespace["_" + which]
    return fn
