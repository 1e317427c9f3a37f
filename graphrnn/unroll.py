"""The scheduler: forward over T steps, backpropagation through time in reverse.

Buffers are time-major. A state s lives in one array S of shape (T+1, N, H):
S[0] is the initial state and the node that computes the next value writes
straight into S[t+1], so carrying a state costs no copy. Hoisted values are
(T*N, width) arrays whose rows t*N .. t*N+N-1 belong to step t.

Truncated BPTT is a run started from the previous chunk's ``run.state``: its
backward stops at that state (``g.state0`` is returned, not propagated).
``Recurrent(cell, stateful=True)`` does that bookkeeping for models.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping

import numpy as np

from . import anomaly, backend, emit
from .graph import GraphError
from .plan import HOISTED, LoopEnv, buffer_name, compile_cell
from .primitives import fmt_shape
from .workspace import workspace_for


class Grads:
    """Gradients of a run: ``params`` (dict), ``xs`` (N, T, D) or None, ``state0`` (dict)."""

    def __init__(self, params, xs, state0):
        self.params, self.xs, self.state0 = params, xs, state0

    def __repr__(self):
        return f"<Grads params={list(self.params)} xs={None if self.xs is None else self.xs.shape}>"


class _Acc:
    """Gradients of the hoisted and static nodes, accumulated after the time loop.

    Invariants:

    - ``g[n]`` is n's gradient so far; ``own`` holds the nodes whose array the
      accumulator owns (may add into). Arrays it does not own (views a
      primitive passed through, a caller's buffer) are never written into.
    - A node's first gradient is written straight into a workspace buffer
      (``dest``), so a primitive computes into it rather than copying.
    - A slice's first gradient goes straight into its columns of the parent's
      gradient while those columns are still zeros (``touched[parent]`` lists
      the column ranges written since the zero fill, None once a whole-width
      gradient was added): ``offered`` are the slices handed such a view,
      ``placed`` those whose gradient now lives inside the parent's. So
      ``dWh[:, :2H]`` is one GEMM into dWh, not a GEMM, a zero fill and an add.
    """

    def __init__(self, empty, zeros, slices):
        self.g, self.own = {}, set()
        self.empty, self.zeros = empty, zeros
        self.slices = slices   # slice node -> (parent, lo, hi)
        self.touched = {}
        self.offered = set()
        self.placed = set()

    def _zeros(self, parent):
        self.g[parent] = self.zeros(parent)
        self.own.add(parent)
        self.touched[parent] = []
        return self.g[parent]

    def dest(self, n, fresh):
        """Where the first gradient of n may be written, or None once n has one.

        A slice is offered its columns of the parent's gradient; any other node
        a fresh workspace buffer, if ``fresh`` (the primitive computes into it,
        rather than making its result and copying it there)."""
        if n in self.g:
            return None
        if n in self.slices:
            parent, lo, hi = self.slices[n]
            if parent not in self.g:
                self._zeros(parent)
            ranges = self.touched.get(parent)
            if ranges is not None and all(b <= lo or a >= hi for a, b in ranges):
                ranges.append((lo, hi))  # now, so no other slice is offered these columns
                self.offered.add(n)
                return self.g[parent][..., lo:hi]
        return self.empty(n) if fresh else None

    def put(self, n, d, dest=None, own=False):
        """Record gradient d of n; d is ``dest`` when the primitive wrote there."""
        if dest is not None and d is dest and n not in self.g:
            self.g[n] = d
            self.own.add(n)
            if n in self.offered:
                self.placed.add(n)
            return
        if n in self.touched:
            self.touched[n] = None
        cur = self.g.get(n)
        if cur is None:
            self.g[n] = d
            if own:
                self.own.add(n)
        elif n in self.own:
            cur += d
        else:
            self.g[n] = cur + d
            self.own.add(n)

    def add_slice(self, n, parent, d, lo, hi):
        """Slice's transpose rule, done in place: no zero-filled temporary per use."""
        if n in self.placed:
            return  # already inside the parent's gradient
        cur = self.g.get(parent)
        if cur is None:
            cur = self._zeros(parent)
        elif parent not in self.own:
            cur = self.g[parent] = cur.copy()
            self.own.add(parent)
        if self.touched.get(parent) is not None:
            self.touched[parent].append((lo, hi))
        cur[..., lo:hi] += d


# --------------------------------------------------------------------------- the after-loop, recorded

_programs = weakref.WeakKeyDictionary()  # plan -> {(need_xs, has_dhs): program}


def _after_loop_program(plan, need_xs, has_dhs):
    """The after-loop of ``plan`` as one generated Python function, made on first use.

    Which node's gradient is written where, which arrays the accumulator owns and
    which slices land in their parent's columns depend on the plan alone, never
    on the numbers; so ``_Acc`` runs once, over symbolic arrays (``_Sym``), and
    what it did is written out as straight-line code. At the tiny sizes the
    classic tasks use, the bookkeeping cost 3-4 times the numpy calls it
    ordered; now each call runs only the calls.
    """
    key = (bool(need_xs), bool(has_dhs))
    progs = _programs.setdefault(plan, {})
    prog = progs.get(key)
    if prog is None:
        prog = progs[key] = _record_after_loop(plan, *key)
    return prog


class _Tape:
    """The lines of a function being recorded, and the objects they name."""

    def __init__(self):
        self.lines, self.names, self.k = [], {}, 0

    def sym(self, expr):
        s = _Sym(self, f"v{self.k}")
        self.k += 1
        self.lines.append(f"    {s} = {expr}")
        return s

    def emit(self, line):
        self.lines.append(f"    {line}")

    def name(self, obj, stem):
        """A global of the generated code bound to ``obj``."""
        n = f"{stem}{len(self.names)}"
        self.names[n] = obj
        return n


def _index(key):
    parts = key if isinstance(key, tuple) else (key,)
    return "[" + ", ".join("..." if p is Ellipsis else f"{p.start}:{p.stop}" for p in parts) + "]"


class _Sym:
    """An array in the recording: each operation on it writes the line that does it."""
    __slots__ = ("tape", "name")

    def __init__(self, tape, name):
        self.tape, self.name = tape, name

    def __str__(self):
        return self.name

    def __getitem__(self, key):
        return self.tape.sym(f"{self}{_index(key)}")

    def __setitem__(self, key, value):
        self.tape.emit(f"{self}{_index(key)} = {value}")

    def __iadd__(self, d):
        self.tape.emit(f"{self} += {d}")
        return self

    def __add__(self, d):
        return self.tape.sym(f"{self} + {d}")

    def copy(self):
        return self.tape.sym(f"{self}.copy()")


def _wrong_destination(op, i):
    raise GraphError(f"primitive {op!r}: backward_into returned input {i}'s gradient somewhere other than "
                     f"out[{i}]; a gradient given a destination must be written there and returned "
                     "(Primitive.backward_into does this for a primitive that only defines backward)")


def _record_after_loop(plan, need_xs, has_dhs):
    tape, buffers = _Tape(), plan.backward_buffers(need_xs, has_dhs)
    slices, shape = plan.outer_slices, plan.shape
    in_hv = set(plan.hoisted_ops) | {plan.input_node}

    def grad_shape(p):
        if plan.timing[p] == HOISTED:
            return "(" + ", ".join(["tn", *map(str, shape[p][1:])]) + ")"
        return repr(tuple(shape[p]))
    acc = _Acc(lambda p: tape.sym(f"E(xp, {grad_shape(p)}, dt)"),
               lambda p: tape.sym(f"Z(xp, {grad_shape(p)}, dt)"), slices)

    def listed(items):
        return "[" + ", ".join("None" if a is None else str(a) for a in items) + "]"

    def run_backward(op, args, d, xs, y, needs):
        o = tape.name(op, "op")
        if not op.writes_gradients and not any(p in slices for p in args):
            r = tape.sym(f"{o}.backward(xp, {d}, {listed(xs)}, {y}, {needs!r})")
            res, out = [tape.sym(f"{r}[{i}]") if need else None for i, need in enumerate(needs)], (None,) * len(args)
        else:
            # a node read twice (x * x) gets a destination for its first use only
            out = [acc.dest(p, op.writes_gradients) if need and p not in args[:i] else None
                   for i, (p, need) in enumerate(zip(args, needs))]
            r = tape.sym(f"{o}.backward_into(xp, {d}, {listed(xs)}, {y}, {needs!r}, {listed(out)})")
            # backward_into's contract: a gradient given a destination is that destination
            # (checked: a primitive that wrote elsewhere would leave the buffer's garbage)
            for i, need in enumerate(needs):
                if need and out[i] is not None:
                    tape.emit(f"if {r}[{i}] is not {out[i]}: wrong_destination({o}, {i})")
            res = [None if not need else out[i] if out[i] is not None else tape.sym(f"{r}[{i}]")
                   for i, need in enumerate(needs)]
        for p, need, r, o in zip(args, needs, res, out):
            if need:
                acc.put(p, r, o)

    def value(p):  # a hoisted or static value, as the forward left it
        return f"H[{p!r}]" if p in in_hv else f"V[{p!r}]"

    deferred, outer = plan.after_loop(need_xs)
    dB = {b.node: b.name for b in buffers if b.role == "deferred_grad"}
    for node, op, args, needs, saved in deferred:
        xs = [tape.sym(f"S({p!r})") if i in saved else None for i, p in enumerate(args)]
        y = tape.sym(f"S({node!r})") if "y" in saved else None
        run_backward(op, args, tape.sym(f"A[{dB[node]!r}].reshape(tn, -1)"), xs, y, needs)
    for b in buffers:
        if b.role == "hoisted_grad":
            acc.put(b.node, tape.sym(f"A[{b.name!r}].reshape(tn, -1)"), own=True)
    for node, op, args, needs, saved in outer:
        d = acc.g.get(node)
        if d is None:
            continue
        if op is None:
            sl = slices[node]
            acc.add_slice(node, sl[0], d, sl[1], sl[2])
            continue
        xs = [tape.sym(value(p)) if i in saved else None for i, p in enumerate(args)]
        y = tape.sym(value(node)) if "y" in saved else None
        run_backward(op, args, d, xs, y, needs)

    gradients = ", ".join(f"{node!r}: {d}" for node, d in acc.g.items())
    source = "\n".join(["def after_loop(xp, dt, tn, A, S, H, V, E, Z):", *tape.lines,
                        f"    return {{{gradients}}}", ""])
    scope = dict(tape.names, wrong_destination=_wrong_destination)
    exec(compile(source, f"<after-loop of cell {plan.cell.name!r}>", "exec"), scope)
    prog = scope["after_loop"]
    prog.own, prog.source = frozenset(acc.own), source
    return prog


def _heap_empty(xp, shape, dtype):
    return xp.empty(shape, dtype=dtype)


def _check_array(xp, a, what, shape, dtype):
    """``a`` as an array of this shape and dtype; ``what`` names it in the error
    (a callable, so that the message is only formatted when there is one)."""
    if getattr(a, "shape", None) == shape and getattr(a, "dtype", None) == dtype and type(a) is xp.ndarray:
        return a
    what = what()
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = xp.asarray(a)
    if dtype is not None and a.dtype != dtype:
        raise GraphError(f"{what} is {a.dtype} but the parameters are {dtype}; convert all arrays "
                         "to one dtype (no silent promotion)")
    if tuple(a.shape) != tuple(shape):
        raise GraphError(f"{what} has shape {fmt_shape(tuple(a.shape))}, expected {fmt_shape(tuple(shape))}")
    return xp.asarray(a)


def _prepare(cell, params, xs, state0):
    xp = backend.xp()
    dtype = cell.check_params(params)
    if not hasattr(xs, "shape"):
        try:
            xs = np.asarray(xs, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise GraphError(f"cell {cell.name!r}: xs must be an array of shape (N, T, "
                             f"{cell.input_size}): {exc}") from None
    if xs.ndim != 3 or xs.shape[2] != cell.input_size:
        raise GraphError(f"cell {cell.name!r}: xs has shape {fmt_shape(tuple(xs.shape))}, expected "
                         f"(N, T, {cell.input_size}) for input {cell.input_name!r} of size {cell.input_size}")
    n, t = xs.shape[0], xs.shape[1]
    if n < 1 or t < 1:
        raise GraphError(f"cell {cell.name!r}: xs has shape {fmt_shape(tuple(xs.shape))}; N and T must be >= 1")
    xs = _check_array(xp, xs, lambda: f"cell {cell.name!r}: xs", xs.shape, dtype)
    if dtype is None:  # a cell without parameters runs in the inputs' dtype
        dtype = xs.dtype
    if state0 is not None and not isinstance(state0, Mapping):
        raise GraphError(f"cell {cell.name!r}: state0 must be a dict state name -> (N, size) array, "
                         f"got {type(state0).__name__}")
    state0 = dict(state0 or {})
    sizes = cell.state_sizes()
    unknown = [k for k in state0 if k not in sizes]
    if unknown:
        raise GraphError(f"cell {cell.name!r}: state0 names unknown state {unknown[0]!r} "
                         f"(states: {', '.join(sizes)})")
    s0 = {}
    for name, size in sizes.items():
        if name in state0 and state0[name] is not None:
            s0[name] = _check_array(xp, state0[name], lambda: f"cell {cell.name!r}: state0[{name!r}]", (n, size), dtype)
        else:
            s0[name] = None
    return xp, dtype, xs, s0, n, t


def unroll(cell, params, xs, state0=None, *, fuse=True, engine=None):
    """Run ``cell`` over xs (N, T, D) from ``state0`` (zeros where missing); returns a ``Run``.

    ``engine`` picks the per-step loops: ``"numpy"`` (generated Python over the
    array module), ``"native"`` (compiled with numba; compiles now if it must)
    or ``"auto"`` (native where measured faster for these sizes, once its
    kernels are ready, numpy meanwhile); default ``$GRAPHRNN_ENGINE`` or auto.
    """
    xp, dtype, xs, s0, n, t = _prepare(cell, params, xs, state0)
    plan = compile_cell(cell, fuse)
    run = Run(plan, xp, params, xs, s0, n, t, dtype, emit.loops_for(plan, engine, xp, dtype, n, t))
    if anomaly.active():  # gr.detect_anomaly(): check, and name the first non-finite node
        return anomaly.watch(run, cell, params, xs, state0, unroll_naive)
    return run


class Run:
    """One forward pass over T steps, holding what BPTT needs.

    ``hs`` (N, T, output size) and ``state`` (final value of each state) are the
    results; ``backward(dhs, dstate)`` runs BPTT for these inputs. ``engine``
    names the loops that ran (``"numpy"`` or ``"native"``).

    The loops see one ``LoopEnv``: exactly the buffers the plan lists
    (``plan.forward_buffers``, and for BPTT ``plan.backward_buffers``), made
    here, by the plan's names; they never see the run.
    """

    def __init__(self, plan, xp, params, xs, s0, n, t, dtype, loops=None):
        self.plan, self.xp, self.n, self.t, self.dtype = plan, xp, n, t, dtype
        self.loops = loops or emit.loops_for(plan, "numpy", xp, dtype, n, t)
        self.xs_shape = xs.shape
        ws = self.workspace = workspace_for(plan)
        ws.next_call()
        # A run whose per-step buffers are all small skips the workspace look-ups:
        # the heap serves those at least as fast (the tiny sizes are all overhead).
        self.pooled = (t + 1) * n * plan.max_width * dtype.itemsize >= ws.min_bytes
        self._empty = ws.empty if self.pooled else _heap_empty
        # each buffer's leading axes (plan.ROLES) at this call's sizes
        self._leads = {("T+1", "N"): (t + 1, n), ("T", "N"): (t, n), ("N",): (n,)}
        self.sv = self._static_values(params)
        self.hv = self._hoisted_values(xs)
        self._recurrent_forward(s0)

    def _repr_svg_(self):
        """Jupyter shows a run as its cell unrolled over the run's T steps (folded past 5)."""
        from .render import svg_or_none
        return svg_or_none(self.plan.cell, unroll=self.t)

    def _new(self, b):
        """A fresh array for buffer ``b``: its leading axes, then the node's width."""
        return self._empty(self.xp, self._leads[b.lead] + self.plan.shape[b.node][1:], self.dtype)

    # ------------------------------------------------------------------ forward phases
    def _static_values(self, params):
        """Parameters, constants and what depends only on them: once per call."""
        plan, xp, dtype = self.plan, self.xp, self.dtype
        sv = {node: params[name] for name, node in plan.params.items()}
        for node, value in plan.consts.items():
            sv[node] = xp.asarray(value, dtype=dtype)
        for node in plan.static_ops:
            op, args = plan.info[node]
            out = None if op.window is not None else self.workspace.empty(xp, plan.shape[node], dtype)
            sv[node] = op.forward(xp, *[sv[p] for p in args], out=out)
        return sv

    def _hoisted_values(self, xs):
        """What depends on the input and no state: once for all T*N rows, time-major."""
        plan, xp, t, n, sv = self.plan, self.xp, self.t, self.n, self.sv
        x_tm = self._empty(xp, (t, n, xs.shape[2]), self.dtype)
        x_tm[...] = xs.transpose(1, 0, 2)
        hv = {plan.input_node: x_tm.reshape(t * n, -1)}
        for node in plan.hoisted_ops:
            op, args = plan.info[node]
            out = None if op.window is not None else self._empty(xp, (t * n,) + plan.shape[node][1:], self.dtype)
            hv[node] = op.forward(xp, *[hv[p] if p in hv else sv[p] for p in args], out=out)
        return hv

    def _recurrent_forward(self, s0):
        """The per-step loop, writing into time-major buffers (states: T+1 rows)."""
        plan, t, n = self.plan, self.t, self.n
        first = {snode: s0[name] for name, snode, _ in plan.states}
        arrays = {}
        for b in plan.forward_buffers:
            role = b.role
            if role == "state":
                a = self._new(b)
                a[0] = 0 if first[b.node] is None else first[b.node]
            elif role == "update":
                a = arrays[b.of][1:]  # the node writes the next state in place
            elif role == "kept":
                a = self._new(b)
            elif role == "hoisted":
                a = self.hv[b.node].reshape(t, n, -1)
            else:
                a = self.sv[b.node]
            arrays[b.name] = a
        self.env = LoopEnv(self.xp, t, n, self.dtype, arrays)
        self.engine = self.loops.forward(self.env)

        out = plan.output_node
        if out in plan.states_by_node:
            hs_tm = arrays[plan.step_buffer[out]][:-1]
        elif out in plan.step_buffer:
            hs_tm = arrays[plan.step_buffer[out]]
        else:
            hs_tm = self.hv[out].reshape(t, n, -1)
        self.hs = hs_tm.transpose(1, 0, 2)
        self.state = {name: arrays[plan.step_buffer[snode]][t].copy() for name, snode, _ in plan.states}

    # ------------------------------------------------------------------ backward
    def backward(self, dhs=None, dstate=None, *, need_xs=True):
        """BPTT through the T steps of this run.

        ``dhs`` (N, T, output size) is dL/dhs and ``dstate`` maps a state name to
        dL/d(final state); either may be None. With ``need_xs=False`` the input
        gradient is skipped (one GEMM less for data inputs).
        """
        env = self._backward_environment(dhs, dstate, need_xs)
        carries = self.loops.backward(env, bool(need_xs), dhs is not None)
        g, own = self._after_loop(need_xs, env, dhs is not None)
        return self._gradients(g, own, need_xs, carries)

    def _backward_environment(self, dhs, dstate, need_xs):
        """The forward's buffers and those BPTT adds (dL/dhs time-major, each
        state's incoming carry, checked; the per-step gradient buffers, one
        array where the plan shares them, zeroed where no step writes them)."""
        plan, xp, n, t, dtype = self.plan, self.xp, self.n, self.t, self.dtype
        width, cname = plan.width, plan.cell.name
        if dhs is not None:
            dhs = _check_array(xp, dhs, lambda: f"cell {cname!r}: dhs", (n, t, width[plan.output_node]), dtype)
        if dstate is not None and not isinstance(dstate, Mapping):
            raise GraphError(f"cell {cname!r}: dstate must be a dict state name -> (N, size) array, "
                             f"got {type(dstate).__name__}")
        dstate = dict(dstate or {})
        for k in dstate:
            if k not in plan.cell.states:
                raise GraphError(f"cell {cname!r}: dstate names unknown state {k!r}")
        names = plan.states_by_node
        buffers = plan.backward_buffers(need_xs, dhs is not None)
        arrays = dict(self.env.arrays)
        for b in buffers:
            role = b.role
            if role == "dhs":
                a = dhs.transpose(1, 0, 2)
            elif role == "zero":
                a = xp.zeros((n, width[b.node]), dtype=dtype)
            elif role == "carry":
                name = names[b.node]
                d = dstate.get(name)
                a = arrays[buffer_name("zero", b.node)] if d is None else _check_array(
                    xp, d, lambda: f"cell {cname!r}: dstate[{name!r}]", (n, width[b.node]), dtype)
            elif b.of is not None:
                a = arrays[b.of]
            else:
                a = self._new(b)
                if b.zero:
                    a.fill(0)
            arrays[b.name] = a
        return LoopEnv(xp, t, n, dtype, arrays)

    def _after_loop(self, need_xs, env, has_dhs):
        """The static gradients of per-step nodes, then the hoisted and static
        part: one batched call per node over all T*N rows. Runs the plan's
        recorded program (``_after_loop_program``); returns (gradients, owned)."""
        prog = _after_loop_program(self.plan, need_xs, has_dhs)
        ws, xp, dtype = self.workspace, self.xp, self.dtype
        return prog(xp, dtype, self.t * self.n, env.arrays, self._stacked, self.hv, self.sv,
                    ws.empty, ws.zeros), prog.own

    def _gradients(self, g, own, need_xs, carries):
        """``Grads``: arrays the caller may keep (copies of what the workspace reuses)."""
        plan, xp, t, dtype = self.plan, self.xp, self.t, self.dtype
        gparams = {}
        for name, node in plan.params.items():
            d = g.get(node)
            if d is None:
                d = xp.zeros(plan.shape[node], dtype=dtype)
            elif node not in own:
                d = d.copy()
            gparams[name] = d
        gxs = None
        if need_xs:
            d = g.get(plan.input_node)
            gxs = (xp.zeros(self.xs_shape, dtype=dtype) if d is None
                   else d.reshape(t, self.n, -1).transpose(1, 0, 2))
        gstate0 = {name: c.copy() for (name, _, _), c in zip(plan.states, carries)}
        return Grads(gparams, gxs, gstate0)

    def _stacked(self, p):
        """A node's value over all steps as (T*N, width) rows (static values as they are)."""
        t, n, arrays = self.t, self.n, self.env.arrays
        if p in self.plan.views:
            parent, lo, hi = self.plan.views[p]
            return self._stacked(parent)[..., lo:hi]
        name = self.plan.step_buffer.get(p)
        if name is not None:
            a = arrays[name]
            return (a[:-1] if p in self.plan.states_by_node else a).reshape(t * n, -1)
        if p in self.hv:
            return self.hv[p]
        return self.sv[p]


# --------------------------------------------------------------------------- naive reference

def unroll_naive(cell, params, xs, state0=None):
    """A deliberately simple interpreter of the *declared* graph, step by step.

    No rewrites, no hoisting, no buffers: every node is evaluated at every step
    and every local backward runs at every step. It exists to check the
    compiled plan (differential testing) and is the reference for how the
    engine composes local backwards.
    """
    xp, dtype, xs, s0, n, t = _prepare(cell, params, xs, state0)
    return NaiveRun(cell, xp, params, xs, s0, n, t, dtype)


class NaiveRun:
    def __init__(self, cell, xp, params, xs, s0, n, t, dtype):
        self.cell, self.xp, self.params, self.xs, self.n, self.t, self.dtype = cell, xp, params, xs, n, t, dtype
        g = cell.graph
        self.order = cell.topo_order()
        state = {name: (xp.zeros((n, size), dtype) if s0[name] is None else s0[name])
                 for name, size in cell.state_sizes().items()}
        self.steps = []
        hs = []
        for step in range(t):
            v = {}
            for node in self.order:
                a = g.nodes[node]
                if a["kind"] == "input":
                    v[node] = xs[:, step]
                elif a["kind"] == "state":
                    v[node] = state[a["name"]]
                elif a["kind"] == "param":
                    v[node] = params[a["name"]]
                elif a["kind"] == "const":
                    v[node] = xp.asarray(a["value"], dtype=dtype)
                else:
                    v[node] = a["op"].forward(xp, *[v[p] for p in a["args"]])
            self.steps.append(v)
            state = {name: v[cell.updates[name]] for name in cell.states}
            hs.append(v[cell.output_node])
        self.hs = xp.stack(hs, axis=1)
        self.state = state

    def backward(self, dhs=None, dstate=None, *, need_xs=True, each_gradient=None):
        """BPTT through the declared graph. ``each_gradient(t, node, i, d)``, if
        given, sees every local backward's result (the gradient node ``node``
        passes to its input ``i`` at step t) as it is made, latest step first:
        anomaly mode's hook for naming the first non-finite one."""
        cell, xp, g = self.cell, self.xp, self.cell.graph
        dparams = {name: xp.zeros(s, self.dtype) for name, s in cell.param_shapes().items()}
        dxs = xp.zeros(self.xs.shape, self.dtype)
        carry = {name: (None if not dstate or dstate.get(name) is None else dstate[name])
                 for name in cell.states}
        for step in range(self.t - 1, -1, -1):
            v = self.steps[step]
            grads = {}

            def add(node, d):
                grads[node] = d if node not in grads else grads[node] + d
            for name, d in carry.items():
                if d is not None:
                    add(cell.updates[name], d)
            if dhs is not None:
                add(cell.output_node, dhs[:, step])
            for node in reversed(self.order):
                a = g.nodes[node]
                if node not in grads:
                    continue
                if a["kind"] == "param":
                    dparams[a["name"]] += grads[node]
                elif a["kind"] == "input":
                    dxs[:, step] += grads[node]
                elif a["kind"] == "op":
                    res = a["op"].backward(xp, grads[node], [v[p] for p in a["args"]], v[node],
                                           (True,) * len(a["args"]))
                    for i, (p, r) in enumerate(zip(a["args"], res)):
                        if each_gradient is not None:
                            each_gradient(step, node, i, r)
                        add(p, r)
            carry = {name: grads.get(node) for name, node in cell.states.items()}
        state0 = {name: (xp.zeros((self.n, size), self.dtype) if carry[name] is None else carry[name])
                  for name, size in cell.state_sizes().items()}
        return Grads(dparams, dxs if need_xs else None, state0)


# --------------------------------------------------------------------------- layer

class Recurrent:
    """A sequence layer over a cell, in the style of the textbook's time layers.

    ``forward(xs)`` returns hs (N, T, H); ``backward(dhs)`` returns dxs and sets
    ``grads``. With ``stateful=True`` each forward starts from the state the last
    one ended in (truncated BPTT across calls) until ``reset_state()``.
    """

    def __init__(self, cell, params=None, *, stateful=False, seed=0, dtype=np.float64):
        self.cell = cell
        self.params = params if params is not None else cell.init_params(seed=seed, dtype=dtype)
        self.grads = {k: backend.xp().zeros_like(v) for k, v in self.params.items()}
        self.stateful = stateful
        self.state = None
        self.run = None

    def reset_state(self):
        self.state = None

    def forward(self, xs):
        state0 = self.state if self.stateful else None
        if state0 is not None and next(iter(state0.values())).shape[0] != xs.shape[0]:
            state0 = None  # a new batch size starts a new sequence
        self.run = None  # let the last run's buffers go back to the workspace first
        self.run = unroll(self.cell, self.params, xs, state0)
        if self.stateful:
            self.state = self.run.state
        return self.run.hs

    def backward(self, dhs, dstate=None, *, need_xs=True):
        if self.run is None:
            raise GraphError(f"Recurrent({self.cell.name!r}): backward called before forward")
        g = self.run.backward(dhs, dstate, need_xs=need_xs)
        for k, v in g.params.items():
            self.grads[k][...] = v
        return g.xs
