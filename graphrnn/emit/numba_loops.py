"""The numba emitter: a plan's per-step loops as native code.

``module_source(plan, dtype)`` writes one Python module of ``@njit`` kernels
and the plain-Python drivers that call them. Two forms of the same loops:

- ``fused``: one kernel runs all T steps, forward or BPTT. Within a step every
  batch row is independent (a matmul's row r reads only row r of its left
  operand), so each row runs the whole step: its matmuls as plain loops, its
  elementwise ops one column loop each, all within a few kilobytes of cache.
  No BLAS, no interpreter: at small sizes the step costs what its arithmetic
  costs.
- ``staged``: a Python loop over t calls numpy's BLAS for each matmul and
  one kernel for each *region*, the elementwise ops between two matmuls
  (the plan's ``stages``; in BPTT the flow's steps between two matmul
  backwards), each a single pass over the rows. For sizes where the matmuls
  are worth BLAS. An op without a native form (a user's primitive) runs
  here too, as the numpy loops run it: its Python ``forward``/``backward``
  called once a step over all rows, between two kernels (``python_nodes``).
  The fused form has no such seam: a plan with one has the staged form only.

The drivers take the call's loop environment (``T``, ``N`` and its arrays,
the buffers the plan lists, by the plan's names, parameters included); the
kernels read and write them in the same places the numpy loops do, and form every
gradient as the plan's ``BackwardFlow`` says; only values that live within
one step (the numpy loops' temporaries) get scratch rows of their own.
Each primitive brings its scalar forms (``native_forward`` /
``native_backward``); a plan holding one without them raises ``NotNative``.

The source depends only on the plan and the dtype: its hash names the module
on disk, so numba's cache (``cache=True``) is keyed by the plan.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..plan import STATIC, CallStep, GradStep, buffer_name
from . import scalar
from .native_layout import GradPlaces, Layout, NotNative, python_nodes, stages  # noqa: F401  (NotNative: raised from here too)

FUNCTIONS = {"exp": "math.exp", "tanh": "math.tanh", "sqrt": "math.sqrt", "log": "math.log",
             "sin": "math.sin", "cos": "math.cos", "floor": "math.floor", "pow": "math.pow"}
FORMS = ("fused", "staged")
KEYS = [(need_xs, has_dhs) for need_xs in (True, False) for has_dhs in (True, False)]


def _const_lines(consts, dtype):
    ctor = f"np.{np.dtype(dtype).name}"
    return [f"{scalar.const_name(v)} = {ctor}({float(v)!r})" for v in sorted(consts)]


# --------------------------------------------------------------------------- kernel text

class _Kernel:
    """One @njit function: its lines and the arrays it reads. A fused kernel
    makes its scratch rows, carries and transposed weights itself (numba's
    allocation is cheaper than a driver's, per call); a per-step one is handed
    them, since they live across the kernels of one step."""

    def __init__(self, name, per_step):
        self.name, self.per_step = name, per_step
        self.lines, self.arrays = [], []
        self.params, self.prologue = [], []

    def use(self, loc):
        if loc.mode != "const" and loc.array not in self.arrays:
            self.arrays.append(loc.array)
        return loc

    def add(self, indent, text):
        self.lines.append("    " * indent + text)

    def text(self):
        """The body, with ``pass`` under any loop left empty (a step with nothing to do)."""
        out = []
        for i, line in enumerate(self.lines):
            out.append(line)
            if line.endswith(":"):
                depth = len(line) - len(line.lstrip())
                nxt = self.lines[i + 1] if i + 1 < len(self.lines) else ""
                if len(nxt) - len(nxt.lstrip()) <= depth:
                    out.append(" " * (depth + 4) + "pass")
        return out


def _operand(k, loc, width, out_width):
    """Element j of an operand (column 0 when it is broadcast along the row)."""
    k.use(loc)
    return loc.at("0" if width == 1 and out_width > 1 else "j")


def _elementwise_forward(plan, layout, k, n, out, ind):
    op, args = plan.info[n]
    names = op.operands
    w = plan.width[n]
    env = {name: _operand(k, layout.value(p), plan.width.get(p, 1), w) for name, p in zip(names, args)}
    _collect_numbers(layout, op.native_forward)
    expr = scalar.python_expr(op.native_forward, env, FUNCTIONS)
    k.add(ind, f"for j in range({w}):")
    k.add(ind + 1, f"{k.use(out).at('j')} = {expr}")


def _collect_numbers(layout, text):
    layout.consts |= {float(v) for v in scalar.numbers(text)}


def _copy(k, dst, src, width, ind):
    k.use(dst), k.use(src)
    k.add(ind, f"for j in range({width}):")
    k.add(ind + 1, f"{dst.at('j')} = {src.at('j')}")


def _vector_matrix(k, out, n_out, x, n_in, matrix, ind):
    """out[r, :] = x[r, :] @ M, as rows of M scaled and added: the inner loop
    runs along a contiguous row, so it vectorises without reordering sums.
    ``x(i)`` and ``matrix(i, j)`` are element expressions."""
    k.add(ind, f"for j in range({n_out}):")
    k.add(ind + 1, f"{out.at('j')} = K0")
    k.add(ind, f"for i in range({n_in}):")
    k.add(ind + 1, f"s = {x('i')}")
    k.add(ind + 1, f"for j in range({n_out}):")
    k.add(ind + 2, f"{out.at('j')} += s * {matrix('i', 'j')}")


def _matmul_row(k, a, w_loc, out, kdim, m, ind):
    """out[r, :] = a[r, :] @ W."""
    for loc in (a, w_loc, out):
        k.use(loc)
    _vector_matrix(k, out, m, a.at, kdim, lambda i, j: w_loc.at(j, row=i), ind)


def _forward_op(plan, layout, k, n, ind, fused):
    """Row r of op n's forward (matmuls only when ``fused``)."""
    op, args = plan.info[n]
    form = op.native_form()
    if form is None:
        raise NotNative(f"primitive {op.name!r} (node {plan.graph.nodes[n]['label']!r}) has no native form")
    out = layout.value(n)
    if form == "window":
        if n in plan.stored or any(u == n for u in plan.inplace_update.values()):
            parent, lo, hi = plan.views[n]
            _copy(k, out, layout.value(parent).shifted(lo, hi - lo), hi - lo, ind)
        return
    if form == "elementwise":
        for p in args:
            if plan.timing[p] != STATIC and len(plan.shape[p]) != 2:
                raise NotNative(f"node {plan.graph.nodes[n]['label']!r}: operand of shape {plan.shape[p]}")
        _elementwise_forward(plan, layout, k, n, out, ind)
        return
    if form == "reduce":  # a sum (times a scale: a mean) over the row, into column 0
        x, w = layout.value(args[0]), plan.width[args[0]]
        k.use(out), k.use(x)
        layout.consts |= {0.0, float(op.native_scale)}
        k.add(ind, f"{out.at('0')} = K0")
        k.add(ind, f"for j in range({w}):")
        k.add(ind + 1, f"{out.at('0')} += {x.at('j')}")
        if op.native_scale != 1:
            k.add(ind, f"{out.at('0')} *= {scalar.const_name(op.native_scale)}")
        return
    if form == "join":
        lo = 0
        for p in args:
            w = plan.width[p]
            _copy(k, out.shifted(lo, w), layout.value(p), w, ind)
            lo += w
        return
    if form == "matmul" and fused:
        a, wnode = args
        kdim, m = plan.width[a], plan.width[n]
        _matmul_row(k, layout.value(a), layout.static(wnode), out, kdim, m, ind)
        return
    if form != "matmul":
        raise NotNative(f"unknown native form {form!r} of {op.name!r}")


def _state_copies(plan, layout, k, ind):
    for _, s, u in plan.states:
        if plan.inplace_update.get(s) != u:
            dst = layout._env_loc(buffer_name("state", s), "t1", plan.width[s])
            _copy(k, dst, layout.value(u), plan.width[s], ind)


# --------------------------------------------------------------------------- backward

def _source_expr(plan, layout, grads, k, src, width, pre, ind):
    """Element j of a gradient source; a broadcast operand's reduction goes to ``pre``."""
    loc = grads.source_loc(src, width)
    if loc is not None:
        return k.use(loc).at("j")
    _, m, i = src
    op, args = plan.info[m]
    form = op.native_form()
    if form == "join":
        off = sum(plan.width[p] for p in args[:i])
        return k.use(grads.loc(m).shifted(off, width)).at("j")
    if form == "matmul":
        return k.use(layout._loc(f"R{m}", "row", ("scratch", plan.width[args[0]]), plan.width[args[0]])).at("j")
    if form is None:  # a Python rule's result, written by the driver (see ModuleText._python_back)
        return k.use(_python_result(layout, plan, m, i)).at("j")
    if form == "reduce":  # every column gets dy (times the mean's scale)
        layout.consts.add(float(op.native_scale))
        return f"({k.use(grads.loc(m)).at('0')} * {scalar.const_name(op.native_scale)})"
    names = op.operands
    wm = plan.width[m]
    text = op.native_backward[i]
    _collect_numbers(layout, text)

    def env(col):
        e = {"dy": k.use(grads.loc(m)).at(col)}
        if "y" in scalar.names_read(text):
            e["y"] = k.use(layout.value(m, scratch=False)).at(col)
        for name, p in zip(names, args):
            if name in scalar.names_read(text):
                wp = plan.width.get(p, 1)
                e[name] = k.use(layout.value(p, scratch=False)).at("0" if wp == 1 and wm > 1 else col)
        return e
    if width == 1 and wm > 1:  # the operand was broadcast along the row: sum its gradient
        var = f"red{m}_{i}"
        pre.append((ind, f"{var} = K0"))
        pre.append((ind, f"for jj in range({wm}):"))
        pre.append((ind + 1, f"{var} += {scalar.python_expr(text, env('jj'), FUNCTIONS)}"))
        layout.consts.add(0.0)
        return var
    return scalar.python_expr(text, env("j"), FUNCTIONS)


def _python_result(layout, plan, m, i):
    """The (N, w) row where the driver puts input i's gradient from op m's Python backward."""
    w = plan.width[plan.info[m][1][i]]
    return layout._loc(f"P{m}_{i}", "row", ("scratch", w), w)


def _grad_step(plan, layout, grads, k, step, ind):
    n = step.node
    if not grads.is_written(n):
        return
    w = plan.width[n]
    out = k.use(grads.loc(n))
    pre = []
    fulls = [_source_expr(plan, layout, grads, k, src, w, pre, ind) for src in step.fulls]
    pieces = [(lo, hi, src) for lo, hi, src in step.pieces if (n, lo) not in grads.placed]
    body = []
    if fulls:
        body.append((ind, f"for j in range({w}):"))
        body.append((ind + 1, f"{out.at('j')} = {' + '.join(fulls)}"))
    elif pieces and not (step.form == "tile"):
        body.append((ind, f"for j in range({w}):"))
        body.append((ind + 1, f"{out.at('j')} = K0"))
        layout.consts.add(0.0)
    for lo, hi, src in pieces:
        piece_pre = []
        e = _source_expr(plan, layout, grads, k, src, hi - lo, piece_pre, ind)
        body += piece_pre
        op = "=" if step.form == "tile" else "+="
        body.append((ind, f"for j in range({hi - lo}):"))
        body.append((ind + 1, f"{out.shifted(lo, hi - lo).at('j')} {op} {e}"))
    for i, line in pre + body:
        k.add(i, line)


def _matmul_back_row(plan, layout, grads, k, m, ind):
    """R[r, :] = g[r, :] @ Wᵀ, over Wᵀ's rows (contiguous: the driver transposes W once)."""
    a, wnode = plan.info[m][1]
    kdim, w = plan.width[a], plan.width[m]
    wl = layout.static(wnode)
    root = layout.arrays[wl.array][0][1]
    wt = layout._loc(f"T{root}", "s2", ("transposed", root), kdim)
    r = k.use(layout._loc(f"R{m}", "row", ("scratch", kdim), kdim))
    g = k.use(grads.loc(m))
    k.use(wt)
    _vector_matrix(k, r, kdim, g.at, w, lambda i, j: f"{wt.array}[{wl.off} + {i}, {j}]", ind)


def _carry_out(plan, grads, k, ind, layout):
    for s, has in grads.flow.carries:
        w = plan.width[s]
        dst = k.use(layout._loc(f"CN{s}", "row", ("carry-out", s), w))
        if has and grads.loc(s).array == dst.array:
            continue
        k.add(ind, f"for j in range({w}):")
        k.add(ind + 1, f"{dst.at('j')} = {k.use(grads.loc(s)).at('j') if has else 'K0'}")
    layout.consts.add(0.0)


# --------------------------------------------------------------------------- the module

class ModuleText:
    """The generated module: its source, and for each driver the kernels it
    calls with their argument types (so that a build can compile them ahead)."""

    def __init__(self, plan, dtype):
        self.plan, self.dtype = plan, np.dtype(dtype)
        self.layout = Layout(plan, dtype)
        self.layout.consts.add(0.0)
        self.stages = stages(plan)
        self.python = python_nodes(plan)  # their ops are the module's _PY, set when it is loaded
        self.forms = ("staged",) if self.python else FORMS
        self.kernels = []   # _Kernel
        self.drivers = []   # lines
        self.schedules = {}  # driver name -> (calls, reverse, flow)
        self.driver_kernels = {}  # driver name -> kernel names
        for form in self.forms:
            self._forward(form)
            for key in KEYS:
                self._backward(form, key)

    # forward ---------------------------------------------------------------
    def _forward(self, form):
        plan, layout = self.plan, self.layout
        name = f"forward_{form}"
        if form == "fused":
            k = _Kernel(f"{name}_k", False)
            k.add(1, "for t in range(T):")
            k.add(2, "for r in range(N):")
            for n in plan.recurrent_ops:
                _forward_op(plan, layout, k, n, 3, True)
            _state_copies(plan, layout, k, 3)
            self.kernels.append(k)
            self._driver(name, [("call", k)], reverse=False)
            return
        calls = []
        stages = self.stages
        for i, (what, body) in enumerate(stages):
            if what != "region":
                calls.append((what, body))
                continue
            k = _Kernel(f"{name}_{i}", True)
            k.add(1, "for r in range(N):")
            for n in body:
                _forward_op(plan, layout, k, n, 2, False)
            if i == len(stages) - 1:
                _state_copies(plan, layout, k, 2)
            if len(k.lines) > 1:  # a region of views only has nothing to run
                self.kernels.append(k)
                calls.append(("call", k))
        if stages and stages[-1][0] != "region" or not stages:
            k = _Kernel(f"{name}_states", True)
            k.add(1, "for r in range(N):")
            _state_copies(plan, layout, k, 2)
            k.add(2, "pass")
            self.kernels.append(k)
            calls.append(("call", k))
        self._driver(name, calls, reverse=False)

    # backward --------------------------------------------------------------
    def _backward(self, form, key):
        plan, layout = self.plan, self.layout
        flow = plan.backward_flow(*key)
        grads = GradPlaces(plan, layout, flow)
        name = f"backward_{form}_{int(key[0])}{int(key[1])}"
        matmul_calls = [s for s in flow.steps if not isinstance(s, GradStep)
                        and plan.info[s.node][0].native_form() == "matmul"]
        python_calls = [s for s in flow.steps if isinstance(s, CallStep) and s.node in self.python]
        if form == "fused":
            k = _Kernel(f"{name}_k", False)
            k.add(1, "for t in range(T - 1, -1, -1):")
            k.add(2, "for r in range(N):")
            for step in flow.steps:
                if isinstance(step, GradStep):
                    _grad_step(plan, layout, grads, k, step, 3)
                elif step in matmul_calls:
                    _matmul_back_row(plan, layout, grads, k, step.node, 3)
            _carry_out(plan, grads, k, 3, layout)
            self._swap(k, flow, 2)
            k.add(1, f"return ({', '.join(f'C{s}' for s, _ in flow.carries)},)")
            self.kernels.append(k)
            self._driver(name, [("call", k)], reverse=True, flow=flow)
            return
        calls, current, seg = [], None, 0
        for step in flow.steps + [None]:
            if step is None or step in matmul_calls or step in python_calls:
                if current is None:
                    current = _Kernel(f"{name}_{seg}", True)
                    current.add(1, "for r in range(N):")
                if step is None:
                    _carry_out(plan, grads, current, 2, layout)
                if len(current.lines) > 1:  # nothing to run between two matmuls: no kernel
                    self.kernels.append(current)
                    calls.append(("call", current))
                seg += 1
                current = None
                if step in python_calls:
                    calls.append(("python_back", step, grads))
                elif step is not None:
                    calls.append(("matmul_back", step.node, grads))
                continue
            if isinstance(step, GradStep):
                if current is None:
                    current = _Kernel(f"{name}_{seg}", True)
                    current.add(1, "for r in range(N):")
                _grad_step(plan, layout, grads, current, step, 2)
        self._driver(name, calls, reverse=True, flow=flow)

    def _swap(self, k, flow, ind):
        for s, _ in flow.carries:
            k.add(ind, f"C{s}, CN{s} = CN{s}, C{s}")

    # drivers ---------------------------------------------------------------
    def _split(self, k):
        """A kernel's parameters and, for a fused one, the lines that make the rest."""
        if k.per_step:
            k.params = list(k.arrays)
            return
        for a in k.arrays:
            source, width = self.layout.arrays[a]
            if source[0] in ("scratch", "carry-out"):
                k.prologue.append(f"{a} = np.empty((N, {width}), DT)")
            elif source[0] == "carry":
                name = self.layout._array(buffer_name("carry", source[1]), ("carry-in", source[1]), width)
                k.params.append(name)
                k.prologue.append(f"{a} = {name}.copy()")
            elif source[0] == "transposed":
                base = f"V{source[1]}"
                if base not in k.params:
                    k.params.append(base)
                k.prologue.append(f"{a} = np.ascontiguousarray({base}.T)")
            elif a not in k.params:
                k.params.append(a)

    def _driver(self, name, calls, reverse, flow=None):
        """Record a driver's schedule and write its numba text."""
        for c in calls:
            if c[0] == "call":
                self._split(c[1])
        self.driver_kernels[name] = [c[1].name for c in calls if c[0] == "call"]
        self.schedules[name] = (calls, reverse, flow)
        self.drivers.append(self.driver_lines(name, "numba"))

    def driver_lines(self, name, target):
        """Plain Python: gather the arrays, then one kernel call (fused) or the
        time loop over kernels and BLAS calls (staged). ``target`` ``"numba"``
        calls the kernels; ``"cuda"`` launches them (``_launch``) and uses the
        module ``xp`` for arrays and BLAS."""
        calls, reverse, flow = self.schedules[name]
        used = []
        for c in calls:
            if c[0] == "call":
                used += [a for a in c[1].params if a not in used]
        lines = [f"def {name}(T, N, E):"]
        needed = set(used)
        for c in calls:
            if c[0] == "matmul":
                needed |= self._matmul_arrays(c[1])
            elif c[0] == "matmul_back":
                needed |= self._matmul_back_arrays(c[1], c[2])
            elif c[0] == "python":
                needed |= {loc.array for loc in self._python_locs(c[1])}
            elif c[0] == "python_back":
                needed |= {loc.array for loc in self._python_back_locs(c[1], c[2])}
        fused = len(calls) == 1 and not calls[0][1].per_step
        if flow is not None and not fused:
            for s, _ in flow.carries:
                needed |= {f"C{s}", f"CN{s}"}
        for a in sorted(needed, key=_array_order):
            lines.append(f"    {a} = {self._fetch(a)}")
        if fused:
            k = calls[0][1]
            ret = f"return {k.name}(T, N, {', '.join(k.params)})" if flow is not None \
                else f"{k.name}(T, N, {', '.join(k.params)})"
            lines.append("    " + ret)
        else:
            lines.append("    for t in range(T - 1, -1, -1):" if reverse else "    for t in range(T):")
            for c in calls:
                if c[0] == "call" and target == "cuda":
                    lines.append(f"        _launch({c[1].name!r}, t, N, {', '.join(c[1].params)})")
                elif c[0] == "call":
                    lines.append(f"        {c[1].name}(t, N, {', '.join(c[1].params)})")
                elif c[0] == "matmul":
                    lines.append("        " + self._matmul_text(c[1]))
                elif c[0] == "python":
                    lines += ["        " + line for line in self._python_text(c[1])]
                elif c[0] == "python_back":
                    lines += ["        " + line for line in self._python_back_text(c[1], c[2])]
                else:
                    lines.append("        " + self._matmul_back_text(c[1], c[2]))
            if flow is not None:
                for s, _ in flow.carries:
                    lines.append(f"        C{s}, CN{s} = CN{s}, C{s}")
            if flow is not None:
                lines.append(f"    return ({', '.join(f'C{s}' for s, _ in flow.carries)},)")
        if target == "cuda":
            lines = [ln.replace("np.", "xp.") for ln in lines]
        return lines

    def _matmul_arrays(self, n):
        a, w = self.plan.info[n][1]
        return {self.layout.value(a).array, self.layout.static(w).array, self.layout.value(n).array}

    def _matmul_text(self, n):
        a, w = self.plan.info[n][1]
        av, wv, out = self.layout.value(a), self.layout.static(w), self.layout.value(n)
        return f"np.matmul({av.step_view()}, {wv.step_view()}, out={out.step_view()})"

    def _matmul_back_arrays(self, m, grads):
        a, w = self.plan.info[m][1]
        self.layout._loc(f"R{m}", "row", ("scratch", self.plan.width[a]), self.plan.width[a])
        return {grads.loc(m).array, self.layout.static(w).array, f"R{m}"}

    def _matmul_back_text(self, m, grads):
        a, w = self.plan.info[m][1]
        g, wv = grads.loc(m), self.layout.static(w)
        return f"np.matmul({g.step_view()}, {wv.step_view()}.T, out=R{m})"

    # an op without a native form: its Python rule on (N, w) views at step t,
    # as numpy_loops calls it; a static operand is the array the plan lists
    def _operand_text(self, p, loc):
        if self.plan.timing[p] == STATIC:
            if p not in self.plan.loop_statics:
                raise NotNative(f"node {self.plan.graph.nodes[p]['label']!r}: a static operand the loop does not read")
            return f"E[{buffer_name('static', p)!r}]"
        return loc.step_view()

    def _python_locs(self, n):
        plan, layout = self.plan, self.layout
        return [layout.value(p) for p in plan.info[n][1] if plan.timing[p] != STATIC] + [layout.value(n)]

    def _python_text(self, n):
        plan, layout = self.plan, self.layout
        xs = ", ".join(self._operand_text(p, None if plan.timing[p] == STATIC else layout.value(p))
                       for p in plan.info[n][1])
        # forward may return a new array rather than fill ``out`` (its contract: "where possible")
        return [f"_o = {layout.value(n).step_view()}",
                f"_y = _PY[{n}].forward(np, {xs}, out=_o)",
                "if _y is not _o:",
                "    _o[...] = _y"]

    def _python_back_locs(self, step, grads):
        plan, layout = self.plan, self.layout
        args = plan.info[step.node][1]
        locs = [grads.loc(step.node)]
        locs += [layout.value(p, scratch=False) for i, p in enumerate(args)
                 if i in step.saved and plan.timing[p] != STATIC]
        if "y" in step.saved:
            locs.append(layout.value(step.node, scratch=False))
        return locs + [_python_result(layout, plan, step.node, i) for i, need in enumerate(step.needs) if need]

    def _python_back_text(self, step, grads):
        plan, layout = self.plan, self.layout
        m, args = step.node, plan.info[step.node][1]
        xs = "".join(
            (self._operand_text(p, None if plan.timing[p] == STATIC else layout.value(p, scratch=False))
             if i in step.saved else "None") + ", " for i, p in enumerate(args))
        y = layout.value(m, scratch=False).step_view() if "y" in step.saved else "None"
        lines = [f"_r = _PY[{m}].backward(np, {grads.loc(m).step_view()}, ({xs}), {y}, {step.needs})"]
        lines += [f"P{m}_{i}[...] = _r[{i}]" for i, need in enumerate(step.needs) if need]
        return lines

    def _fetch(self, a):
        source, width = self.layout.arrays[a]
        how = source[0]
        if how == "E":
            return f"E[{source[1]!r}]"
        if how == "carry-in":  # a carry handed to a fused kernel, which copies it
            return f"_c(E[{a!r}])"
        if how == "static":
            p = source[1]
            nd = len(self.plan.shape[p])
            return f"_c(E[{a!r}])" if nd else f"_c(E[{a!r}]).reshape(1)"
        if how == "transposed":
            return f"_c(E[{buffer_name('static', source[1])!r}].T)"
        if how == "scratch":
            return f"np.empty((N, {width}), DT)"
        if how == "dhs":
            return f"_c(E[{a!r}])"
        if how == "carry":
            return f"E[{buffer_name('carry', source[1])!r}].copy()"
        if how == "carry-out":
            return f"np.empty((N, {width}), DT)"
        raise AssertionError(how)

    # text ------------------------------------------------------------------
    def source(self) -> str:
        dtname = self.dtype.name
        out = ['"""Generated by graphrnn.emit.numba_loops for cell '
               f'{self.plan.cell.name!r} ({dtname}); do not edit."""',
               "import math", "", "import numpy as np", "from numba import njit", "",
               f"DT = np.{dtname}", ""]
        out += _const_lines(self.layout.consts, self.dtype)
        out += ["", "", "def _c(a):", "    return np.ascontiguousarray(a, dtype=DT)", ""]
        if self.python:  # node -> its primitive: set by whoever loads the module, for its plan
            out += ["", "_PY = {}", ""]
        for k in self.kernels:
            lead = "t" if k.per_step else "T"
            out += ["", "@njit(cache=True, nogil=True, error_model='numpy')",
                    f"def {k.name}({lead}, N, {', '.join(k.params)}):"]
            out += ["    " + line for line in k.prologue] + k.text()
        for d in self.drivers:
            out += ["", ""] + d
        out.append("")
        out.append("SIGNATURES = {")
        for k in self.kernels:
            out.append(f"    {k.name!r}: {tuple(self._types(k))!r},")
        out.append("}")
        out.append(f"KERNELS = {self.driver_kernels!r}")
        return "\n".join(out) + "\n"

    def _types(self, k):
        t = self.dtype.name
        types = ["int64", "int64"]
        for a in k.params:
            types.append(f"{t}[{', '.join([':'] * (self._ndim(a) - 1) + ['::1'])}]")
        return types

    def _ndim(self, a):
        source, _ = self.layout.arrays[a]
        if source[0] == "carry-in":
            return 2
        if source[0] in ("E", "dhs"):
            return 3
        if source[0] == "static":
            return max(1, len(self.plan.shape[source[1]]))
        return 2


def _array_order(name):
    head = name.rstrip("0123456789")
    return head, int(name[len(head):] or 0)


def module_source(plan, dtype):
    """(source text, its hash, driver -> the kernels it calls) of the native
    loops of ``plan`` in ``dtype``."""
    module = ModuleText(plan, dtype)
    text = module.source()
    return text, hashlib.sha256(text.encode()).hexdigest()[:20], module.driver_kernels
