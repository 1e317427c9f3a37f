"""Compile a ``Cell`` once into a ``Plan``: rewrites, classification, storage.

Every node of the compiled graph gets one of three kinds:

- ``static``: depends on parameters and constants only (``Wh[:, :H]``); computed
  once per call, its gradient once after the time loop.
- ``hoisted``: depends on the input and not on a state (``x @ Wx + b``); computed
  for all T*N rows at once, and its local backward runs once over all rows after
  the reverse time loop.
- ``recurrent``: depends on a state; runs per step.

A recurrent node with a static operand that needs a gradient (``h @ Wh``, a
bias add) is *deferred*: per step it only passes gradients on to the dynamic
operands; its upstream gradient is kept per step, and the static operand's
gradient is one batched call after the loop (dWh = Σ_t h_tᵀ dA_t as one GEMM).

Rewrites, each proven by the differential tests against ``unroll_naive``:

- matmul fusion: matmuls that share a left operand and have static right
  operands become one matmul on the columns joined (a wider slice of the same
  parameter when the columns are adjacent, a static concat otherwise), followed
  by slices. A GRU declared gate by gate runs as one packed product per step.
- elementwise fusion: the same elementwise op applied to adjacent column slices
  of the same operands (``sigmoid(a[:, :H])`` and ``sigmoid(a[:, H:2H])``)
  becomes one op over the joined columns, followed by slices.

Only this module and ``unroll`` know about time.
"""
from __future__ import annotations

import math
import sys

import networkx as nx

from .primitives import Concat, MatMul, Slice

STATIC, HOISTED, RECURRENT = "static", "hoisted", "recurrent"


class Plan:
    """The compiled form of a cell: node kinds, orders and what backward keeps."""

    def __init__(self, cell, graph):
        self.cell = cell
        self.graph = graph
        g = graph
        self.input_node = cell.input_node
        self.output_node = cell.output_node
        self.states = [(name, node, cell.updates[name]) for name, node in cell.states.items()]
        self.params = dict(cell.params)

        order = list(nx.lexicographical_topological_sort(g))
        kind = {}
        for n in order:
            a = g.nodes[n]
            if a["kind"] in ("param", "const"):
                kind[n] = STATIC
            elif a["kind"] == "input":
                kind[n] = HOISTED
            elif a["kind"] == "state":
                kind[n] = RECURRENT
            else:
                ks = {kind[p] for p in a["args"]}
                kind[n] = RECURRENT if RECURRENT in ks else HOISTED if HOISTED in ks else STATIC
        ops = [n for n in order if g.nodes[n]["kind"] == "op"]
        # A hoisted slice read only by per-step nodes is taken per step instead: a view
        # costs nothing, and the loop then collects gradients straight into the
        # sliced node's buffer rather than into one more buffer per slice.
        keep = {u for _, _, u in self.states} | {self.output_node}
        for n in reversed(ops):
            if kind[n] == HOISTED and g.nodes[n]["opname"] == "slice" and n not in keep:
                succ = list(g.successors(n))
                if succ and all(kind[m] == RECURRENT for m in succ):
                    kind[n] = RECURRENT
        self.kind = kind
        self.static_ops = [n for n in ops if kind[n] == STATIC]
        self.hoisted_ops = [n for n in ops if kind[n] == HOISTED]
        self.recurrent_ops = [n for n in ops if kind[n] == RECURRENT]

        # Which nodes lead to something that wants a gradient, with and without dxs.
        self.requires = {True: {}, False: {}}
        for with_xs in (True, False):
            req = self.requires[with_xs]
            for n in order:
                a = g.nodes[n]
                if a["kind"] == "op":
                    req[n] = any(req[p] for p in a["args"])
                else:
                    req[n] = a["kind"] in ("param", "state") or (a["kind"] == "input" and with_xs)

        # A per-step slice is saved as a view of its parent's saved value, not copied.
        self.views = {n: (g.nodes[n]["args"][0], g.nodes[n]["op"].start, g.nodes[n]["op"].stop)
                      for n in self.recurrent_ops if g.nodes[n]["opname"] == "slice"}

        # Slices computed outside the loop, whose gradients are placed into their parent's.
        self.outer_slices = {n: (g.nodes[n]["args"][0], g.nodes[n]["op"].start, g.nodes[n]["op"].stop)
                             for n in self.static_ops + self.hoisted_ops if g.nodes[n]["opname"] == "slice"}

        # Per-step values that some backward reads: kept for every step.
        self.stored = set()

        def keep_value(p):
            while p in self.views:
                p = self.views[p][0]
            if kind[p] == RECURRENT and g.nodes[p]["kind"] == "op":
                self.stored.add(p)
        for n in self.recurrent_ops:
            a = g.nodes[n]
            needs = [self.requires[True][p] for p in a["args"]]
            for i in needed_saved(a["op"], needs):
                if i == "y":
                    self.stored.add(n)
                else:
                    keep_value(a["args"][i])
        if kind[self.output_node] == RECURRENT and g.nodes[self.output_node]["kind"] == "op":
            self.stored.add(self.output_node)
        self.stored |= {u for _, _, u in self.states if kind[u] == RECURRENT and g.nodes[u]["kind"] == "op"}

        self.deferred = [n for n in self.recurrent_ops
                         if any(kind[p] == STATIC and self.requires[True][p] for p in g.nodes[n]["args"])]
        self.boundary = sorted({p for n in self.recurrent_ops for p in g.nodes[n]["args"]
                                if kind[p] == HOISTED}
                               | {u for _, _, u in self.states if kind[u] == HOISTED}
                               | ({self.output_node} if kind[self.output_node] == HOISTED else set()))
        # the node whose buffer holds each state's next value (written in place)
        self.inplace_update = {}
        for _, snode, unode in self.states:
            if (kind[unode] == RECURRENT and g.nodes[unode]["kind"] == "op"
                    and unode not in self.inplace_update.values()):
                self.inplace_update[snode] = unode
        # static values the per-step ops read (Wh[:, :2H], constants)
        self.loop_statics = sorted({p for n in self.recurrent_ops for p in g.nodes[n]["args"]
                                    if kind[p] == STATIC})
        self._loops = {}
        self._written = {}
        self._after = {}
        self.workspace = Workspace()
        # plain look-up tables, so that running a plan never touches networkx
        self.info = {n: (g.nodes[n]["op"], g.nodes[n]["args"]) for n in ops}
        self.shape = {n: g.nodes[n]["shape"] for n in g.nodes}
        self.width = {n: s[-1] for n, s in self.shape.items() if s}
        self.max_width = max(self.width.values())
        self.consts = {n: g.nodes[n]["value"] for n in g.nodes if g.nodes[n]["kind"] == "const"}

    # ------------------------------------------------------------------ code generation
    # The per-step loops are generated as Python source, one local variable per
    # node: no graph walking, no dict look-ups and no per-node dispatch in the
    # loop. ``forward_source`` and ``backward_source`` show what runs.

    def _val(self, p):
        """The expression for node p's value at step t inside the backward loop."""
        if p in self.views:
            parent, lo, hi = self.views[p]
            return f"{self._val(parent)}[..., {lo}:{hi}]"
        k = self.kind[p]
        if self.graph.nodes[p]["kind"] == "state":
            return f"S{p}[t]"
        if k == RECURRENT:
            return f"B{p}[t]"
        if k == HOISTED:
            return f"H{p}[t]"
        return f"v{p}"

    @property
    def forward_source(self) -> str:
        g = self.graph
        head, body = ["def _forward(xp, T, E):"], []
        head += [f"    v{p} = E['v{p}']" for p in self.loop_statics]
        head += [f"    S{s} = E['S{s}']" for _, s, _ in self.states]
        head += [f"    H{p} = E['H{p}']" for p in self.boundary]
        body += [f"        v{s} = S{s}[t]" for _, s, _ in self.states]
        body += [f"        v{p} = H{p}[t]" for p in self.boundary]
        for n in self.recurrent_ops:
            a = g.nodes[n]
            op, args = a["op"], a["args"]
            if n in self.stored:
                head.append(f"    B{n} = E['B{n}']")
            if isinstance(op, Slice):
                expr = f"v{args[0]}[..., {op.start}:{op.stop}]"
                if n in self.stored:
                    body += [f"        B{n}[t] = {expr}", f"        v{n} = B{n}[t]"]
                else:
                    body.append(f"        v{n} = {expr}")
                continue
            head.append(f"    op{n} = OPS[{n}]")
            call = f"op{n}(xp, {', '.join(f'v{p}' for p in args)}"
            body.append(f"        v{n} = {call}, out=B{n}[t])" if n in self.stored else f"        v{n} = {call})")
        for _, s, u in self.states:
            if self.inplace_update.get(s) != u:
                body.append(f"        S{s}[t + 1] = v{u}")
        return "\n".join(head + ["    for t in range(T):"] + body + ["        pass"]) + "\n"

    def backward_source(self, need_xs=True, has_dhs=True) -> str:
        g = self.graph
        req = self.requires[bool(need_xs)]
        contrib = {}

        def add(node, item):
            contrib.setdefault(node, []).append(item)
        for _, s, u in self.states:
            add(u, ("full", f"c{s}"))
        if has_dhs:
            add(self.output_node, ("full", "DHS[t]"))
        head = ["def _backward(xp, T, E):", "    N = E['N']", "    DT = E['DT']", "    DHS = E['DHS']"]
        head += [f"    S{s} = E['S{s}']" for _, s, _ in self.states]
        head += [f"    c{s} = E['c{s}']" for _, s, _ in self.states]
        head += [f"    Z{s} = E['Z{s}']" for _, s, _ in self.states]
        head += [f"    H{p} = E['H{p}']" for p in self.boundary]
        head += [f"    DH{p} = E['DH{p}']" for p in self.boundary if req[p]]
        head += [f"    DB{n} = E['DB{n}']" for n in self.deferred]
        head += [f"    B{n} = E['B{n}']" for n in sorted(self.stored)]
        head += [f"    v{p} = E['v{p}']" for p in self.loop_statics]
        body = []

        written = set()  # targets (DB, DH buffers) this loop writes whole at every step
        shared = {}      # target buffer -> the buffer it shares (both get the same gradient)
        in_buffer = {}   # gradient expression -> the target buffer it is already in at step t
        concat_at = {}   # gradient made by concatenate -> its line, while it has no out=

        def assemble(n, buf):
            target = f"{buf}[t]" if buf else None
            if target:
                written.add(n)
            items = contrib.get(n, [])
            fulls = [e for k, e, *_ in items if k == "full"]
            pieces = sorted((lo, hi, e) for k, e, lo, hi in (i for i in items if i[0] == "piece"))
            width = g.nodes[n]["shape"][-1]
            out = f", out={target}" if target else ""
            if target and len(fulls) == 1 and not pieces:
                e = fulls[0]
                if e in in_buffer:  # the same gradient as another target: one buffer for both
                    shared[buf] = in_buffer[e]
                elif e in concat_at:  # concatenate straight into the target, no copy
                    i = concat_at.pop(e)
                    body[i] = body[i][:-1] + f", out={target})"
                    in_buffer[e] = buf
                else:
                    body.append(f"        {target} = {e}")
                    in_buffer[e] = buf
                body.append(f"        g{n} = {e}")
                return
            if target:
                in_buffer[f"g{n}"] = buf
            if not pieces:
                if len(fulls) == 1:
                    body.append(f"        g{n} = {fulls[0]}")
                else:
                    body.append(f"        g{n} = xp.add({fulls[0]}, {fulls[1]}{out})")
                    body.extend(f"        g{n} += {e}" for e in fulls[2:])
                return
            tiles = not fulls and pieces[0][0] == 0 and pieces[-1][1] == width and all(
                pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
            if tiles:
                parts = ", ".join(e for _, _, e in pieces)
                if not target:
                    concat_at[f"g{n}"] = len(body)
                body.append(f"        g{n} = xp.concatenate(({parts},), axis=-1{out})")
                return
            # workspace buffers come back dirty: a target built from pieces is cleared first
            body.append(f"        g{n} = {target}; g{n}.fill(0)" if target
                        else f"        g{n} = xp.zeros((N, {width}), DT)")
            body.extend(f"        g{n}[..., {lo}:{hi}] += {e}" for lo, hi, e in pieces)
            body.extend(f"        g{n} += {e}" for e in fulls)

        for n in reversed(self.recurrent_ops):
            if n not in contrib:
                continue  # no gradient reaches this node
            a = g.nodes[n]
            op, args = a["op"], a["args"]
            assemble(n, f"DB{n}" if n in self.deferred else None)
            if isinstance(op, Slice):
                p = args[0]
                if req[p]:
                    add(p, ("piece", f"g{n}", op.start, op.stop))
                continue
            needs = tuple(self.kind[p] != STATIC and req[p] for p in args)
            if not any(needs):
                continue
            passed = op.passes_gradient()
            for i, p in enumerate(args):
                if needs[i] and passed[i]:
                    add(p, ("full", f"g{n}"))
            needs = tuple(need and not passed[i] for i, need in enumerate(needs))
            if not any(needs):
                continue
            saved = needed_saved(op, needs)
            xs = ", ".join(self._val(p) if i in saved else "None" for i, p in enumerate(args))
            y = f"B{n}[t]" if "y" in saved else "None"
            head.append(f"    op{n} = OPS[{n}]")
            body.append(f"        r{n} = op{n}(xp, g{n}, ({xs},), {y}, {needs})")
            for i, p in enumerate(args):
                if needs[i]:
                    add(p, ("full", f"r{n}[{i}]"))
        for p in self.boundary:
            if req[p] and p in contrib:
                assemble(p, f"DH{p}")
        # Assemble every state's gradient before any carry is replaced: a state whose
        # update is another state's old value reads that state's carry.
        for _, s, _ in self.states:
            if s in contrib:
                assemble(s, None)
        for _, s, _ in self.states:
            body.append(f"        c{s} = g{s}" if s in contrib else f"        c{s} = Z{s}")
        self._written[(bool(need_xs), bool(has_dhs))] = written, shared
        ret = ", ".join(f"c{s}" for _, s, _ in self.states)
        return "\n".join(head + ["    for t in range(T - 1, -1, -1):"] + body + ["        pass",
                                                                              f"    return ({ret},)"]) + "\n"

    def after_loop(self, need_xs):
        """The backward steps that run once after the reverse time loop, made once:
        ``(deferred, outer)``. ``deferred`` holds (node, op, args, needs, saved) for
        the static gradients of per-step nodes; ``outer`` the same for hoisted then
        static nodes in reverse order, with ``op`` None for a slice (its gradient
        goes into the parent's columns)."""
        key = bool(need_xs)
        if key not in self._after:
            req, kind = self.requires[bool(need_xs)], self.kind
            deferred = []
            for n in self.deferred:
                op, args = self.info[n]
                needs = tuple(kind[p] == STATIC and req[p] for p in args)
                deferred.append((n, op, args, needs, needed_saved(op, needs)))
            outer = []
            for n in list(reversed(self.hoisted_ops)) + list(reversed(self.static_ops)):
                op, args = self.info[n]
                if isinstance(op, Slice):
                    if req[args[0]]:
                        outer.append((n, None, args, (True,), set()))
                    continue
                needs = tuple(req[p] for p in args)
                outer.append((n, op, args, needs, needed_saved(op, needs)))
            self._after[key] = (deferred, outer)
        return self._after[key]

    def written(self, need_xs, has_dhs):
        """``(written, shared)`` for the backward loop: the nodes whose DB/DH buffer
        it overwrites at every step, and the buffers (``"DH7"``) that are one
        array with another (``"DB33"``) because both get the same gradient."""
        key = (bool(need_xs), bool(has_dhs))
        if key not in self._written:
            self.loop("backward", *key)
        return self._written[key]

    def loop(self, which, *key):
        """The compiled loop function (``"forward"`` or ``"backward"``), made once."""
        k = (which, *key)
        if k not in self._loops:
            src = self.forward_source if which == "forward" else self.backward_source(*key)
            # the ops' bound methods are fixed for the plan's life: bound once, here
            namespace = {"OPS": {n: getattr(self.info[n][0], which) for n in self.recurrent_ops}}
            exec(compile(src, f"<graphrnn plan {self.cell.name} {which}>", "exec"), namespace)
            self._loops[k] = namespace["_" + which]
        return self._loops[k]

    def summary(self) -> str:
        """A few lines saying what the compiler made of the cell."""
        g = self.graph
        lines = [f"plan for cell {self.cell.name!r}:"]
        for title, nodes in (("static (once per call)", self.static_ops),
                             ("hoisted (once for all T*N rows)", self.hoisted_ops),
                             ("recurrent (per step)", self.recurrent_ops)):
            lines.append(f"  {title}: {len(nodes)} ops")
            for n in nodes:
                mark = " [deferred static grad]" if n in self.deferred else ""
                lines.append(f"    {g.nodes[n]['opname']:8s} {g.nodes[n]['label']}{mark}")
        return "\n".join(lines)


class Workspace:
    """Arrays reused across calls of one plan, so that a training loop stops paying
    for fresh memory at every batch (a GRU call at H=650 touched about 10,000 fresh
    pages, 40 MB; without them one side-by-side measurement ran 279 -> 242 ms).

    ``empty`` hands out an array again only when nothing outside the workspace
    refers to it: CPython's reference count sees every view and every result a
    caller kept (``run.hs`` is a view of a state buffer, ``Grads`` holds its
    arrays), so what a caller holds is never overwritten. Every ``keep_calls``
    calls, free arrays not asked for since the last such check are let go. Arrays under ``min_bytes``
    come from the allocator as usual: the heap serves those without faults and
    faster than a look-up here.
    """

    def __init__(self, keep_calls=4, min_bytes=1 << 16):
        self.keep_calls, self.min_bytes = keep_calls, min_bytes
        self.calls = 0
        self._entries = {}  # (backend, shape, dtype) -> [[array, last call], ...]

    def next_call(self):
        self.calls += 1
        if self.calls % self.keep_calls:
            return
        for key, entries in list(self._entries.items()):
            kept = [e for e in entries if self.calls - e[1] <= self.keep_calls or not _is_free(e)]
            if kept:
                self._entries[key] = kept
            else:
                del self._entries[key]

    def empty(self, xp, shape, dtype):
        """An array of this shape and dtype (a dtype object) with arbitrary
        contents that nobody else holds."""
        if math.prod(shape) * dtype.itemsize < self.min_bytes:
            return xp.empty(shape, dtype=dtype)
        key = (xp.__name__, shape, dtype)
        entries = self._entries.get(key)
        if entries is None:
            entries = self._entries[key] = []
        for e in entries:
            if _is_free(e):
                e[1] = self.calls
                return e[0]
        a = xp.empty(shape, dtype=dtype)
        entries.append([a, self.calls])
        return a

    def zeros(self, xp, shape, dtype):
        a = self.empty(xp, shape, dtype)
        a.fill(0)
        return a

    def clear(self):
        """Let go of every array (those a caller still holds stay valid)."""
        self._entries.clear()

    @property
    def nbytes(self):
        return sum(e[0].nbytes for entries in self._entries.values() for e in entries)


def _refs(entry):
    return sys.getrefcount(entry[0])


_FREE_REFS = _refs([object(), 0])  # held by its entry alone (and getrefcount's argument)


def _is_free(entry):
    return _refs(entry) <= _FREE_REFS


def needed_saved(op, needs):
    """Which saved values (input positions, "y") the backward reads for these needs."""
    if isinstance(op, MatMul):
        return {i for i, need in ((1, needs[0]), (0, needs[1])) if need}
    if op.name == "mul":
        return {i for i, need in ((1, needs[0]), (0, needs[1])) if need}
    return set(op.saves)


# --------------------------------------------------------------------------- rewrites

def _new_op(g, op, args, label):
    node = max(g.nodes) + 1
    shape = op.check(f"compiled node ({label})", *[g.nodes[a]["shape"] for a in args])
    g.add_node(node, kind="op", name=None, opname=op.name, op=op, args=tuple(args),
               shape=shape, label=label, fused=True)
    for a in args:
        g.add_edge(a, node)
    return node


def _make_slice_of(g, node, parent, lo, hi):
    """Turn ``node`` in place into parent[..., lo:hi], keeping its id and consumers."""
    for p in set(g.nodes[node]["args"]):
        g.remove_edge(p, node)
    op = Slice(lo, hi)
    op.check("fused slice", g.nodes[parent]["shape"])
    g.nodes[node].update(opname="slice", op=op, args=(parent,))
    g.add_edge(parent, node)


def _slice_parts(g, nodes):
    """If every node is a slice of one parent, (parent, [(lo, hi), ...]); else None."""
    parents = {g.nodes[n]["args"][0] if g.nodes[n].get("opname") == "slice" else None for n in nodes}
    if len(parents) != 1 or None in parents:
        return None
    return parents.pop(), [(g.nodes[n]["op"].start, g.nodes[n]["op"].stop) for n in nodes]


def _join_columns(g, nodes, label):
    """One node holding the columns of ``nodes`` side by side, and each one's offset."""
    sp = _slice_parts(g, nodes)
    if sp is not None:
        parent, ranges = sp
        order = sorted(range(len(nodes)), key=lambda i: ranges[i])
        if all(ranges[order[k]][1] == ranges[order[k + 1]][0] for k in range(len(order) - 1)):
            lo, hi = ranges[order[0]][0], ranges[order[-1]][1]
            offsets = {nodes[i]: ranges[i][0] - lo for i in order}
            if lo == 0 and hi == g.nodes[parent]["shape"][-1]:
                return parent, offsets
            plabel = g.nodes[parent]["label"]
            return _new_op(g, Slice(lo, hi), [parent], _slice_label(plabel, lo, hi, g, parent)), offsets
    offsets, off = {}, 0
    for n in nodes:
        offsets[n] = off
        off += g.nodes[n]["shape"][-1]
    return _new_op(g, Concat(), list(nodes), label), offsets


def _slice_label(plabel, lo, hi, g, parent):
    lead = ":, " * (len(g.nodes[parent]["shape"]) - 1)
    if " " in plabel:  # an expression: slice the whole of it, not its last term
        plabel = f"({plabel})"
    return f"{plabel}[{lead}{'' if lo == 0 else lo}:{hi}]"


def fuse_matmuls(g, kind):
    """Join matmuls that share a left operand and have static right operands."""
    changed = False
    for left in list(g.nodes):
        if left not in g or kind(g, left) == STATIC:
            continue
        group = [m for m in g.successors(left)
                 if g.nodes[m].get("opname") == "matmul" and g.nodes[m]["args"][0] == left
                 and g.nodes[m]["args"][1] != left and kind(g, g.nodes[m]["args"][1]) == STATIC]
        if len(group) < 2:
            continue
        group.sort()
        rights = [g.nodes[m]["args"][1] for m in group]
        if len(set(rights)) != len(rights):
            continue
        joined, offsets = _join_columns(g, rights, "concat(" + ", ".join(g.nodes[r]["label"] for r in rights) + ")")
        label = f"{g.nodes[left]['label']} @ {g.nodes[joined]['label']}"
        if len(label) > 40:
            label = label[:39] + "…"
        fused = _new_op(g, MatMul(), [left, joined], label)
        for m, r in zip(group, rights):
            lo = offsets[r]
            _make_slice_of(g, m, fused, lo, lo + g.nodes[m]["shape"][-1])
        changed = True
    return changed


ELEMENTWISE = {"add", "sub", "mul", "tanh", "sigmoid", "relu", "exp", "neg"}


def fuse_elementwise(g, kind):
    """Join one elementwise op applied to adjacent column slices of the same operands."""
    groups = {}
    for n in g.nodes:
        a = g.nodes[n]
        if a.get("opname") not in ELEMENTWISE or kind(g, n) == STATIC:
            continue
        key, ok = [a["opname"]], True
        for p in a["args"]:
            pa = g.nodes[p]
            if pa.get("opname") == "slice" and len(pa["shape"]) == 2:
                key.append(("slice", pa["args"][0]))
            elif pa["shape"] == ():
                key.append(("scalar", p))
            else:
                ok = False
        if ok and any(k[0] == "slice" for k in key[1:]):
            groups.setdefault(tuple(key), []).append(n)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        # Members agree when every sliced operand is sliced at the same range.
        def ranges(n):
            rs = {g.nodes[p]["op"].start for p in g.nodes[n]["args"] if g.nodes[p].get("opname") == "slice"}
            widths = {g.nodes[p]["op"].stop - g.nodes[p]["op"].start
                      for p in g.nodes[n]["args"] if g.nodes[p].get("opname") == "slice"}
            if len(rs) == 1 and len(widths) == 1:
                lo = rs.pop()
                return lo, lo + widths.pop()
            return None
        spans = sorted((ranges(n), n) for n in members if ranges(n) is not None)
        # Take the longest run of adjacent spans.
        runs, run = [], []
        for span, n in spans:
            if run and run[-1][0][1] == span[0]:
                run.append((span, n))
            else:
                if len(run) > 1:
                    runs.append(run)
                run = [(span, n)]
        if len(run) > 1:
            runs.append(run)
        if not runs:
            continue
        run = runs[0]
        lo, hi = run[0][0][0], run[-1][0][1]
        head = run[0][1]
        new_args = []
        for p in g.nodes[head]["args"]:
            pa = g.nodes[p]
            if pa.get("opname") == "slice":
                parent = pa["args"][0]
                if lo == 0 and hi == g.nodes[parent]["shape"][-1]:
                    new_args.append(parent)
                else:
                    new_args.append(_new_op(g, Slice(lo, hi), [parent],
                                            _slice_label(g.nodes[parent]["label"], lo, hi, g, parent)))
            else:
                new_args.append(p)
        op = type(g.nodes[head]["op"])()
        opname = g.nodes[head]["opname"]
        lbls = [g.nodes[a]["label"] for a in new_args]
        label = (f"{opname}({', '.join(lbls)})" if len(lbls) == 1 else f"{opname}({lbls[0]}, {lbls[1]})")
        fused = _new_op(g, op, new_args, label[:39] + "…" if len(label) > 40 else label)
        for span, n in run:
            _make_slice_of(g, n, fused, span[0] - lo, span[1] - lo)
        return True
    return False


def _prune(g, keep):
    """Drop op nodes nothing reads any more (left behind by fusion)."""
    while True:
        dead = [n for n in g.nodes if g.nodes[n]["kind"] == "op" and g.out_degree(n) == 0 and n not in keep]
        if not dead:
            return
        g.remove_nodes_from(dead)


def _kind_fn():
    cache = {}

    def kind(g, n):
        if n in cache:
            return cache[n]
        a = g.nodes[n]
        if a["kind"] in ("param", "const"):
            k = STATIC
        elif a["kind"] == "input":
            k = HOISTED
        elif a["kind"] == "state":
            k = RECURRENT
        else:
            ks = {kind(g, p) for p in a["args"]}
            k = RECURRENT if RECURRENT in ks else HOISTED if HOISTED in ks else STATIC
        cache[n] = k
        return k
    return kind


def compile_cell(cell, fuse=True) -> Plan:
    """The cell's plan, compiled once and kept on the cell."""
    cached = getattr(cell, "_plans", None)
    if cached is None:
        cached = {}
        object.__setattr__(cell, "_plans", cached)
    if fuse in cached:
        return cached[fuse]
    g = nx.DiGraph(cell.graph)
    for n in g.nodes:  # own copies of the attribute dicts: rewrites must not touch the cell
        g.nodes[n].update(dict(g.nodes[n]))
    keep = set(cell.updates.values()) | {cell.output_node}
    if fuse:
        kind = _kind_fn()  # kinds never change under these rewrites; new nodes are classified lazily
        while fuse_matmuls(g, kind):
            pass
        while fuse_elementwise(g, kind):
            pass
        _prune(g, keep)
    plan = Plan(cell, g)
    cached[fuse] = plan
    return plan
