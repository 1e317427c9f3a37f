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

The plan decides; it writes no code. Emitters (``graphrnn.emit``) read a
finished plan and turn it into loops: numpy source, numba source, CUDA kernels.
Only this module, ``unroll`` and the emitters know about time.
"""
from __future__ import annotations

import math
import sys

import networkx as nx

from .primitives import Concat, Slice

STATIC, HOISTED, RECURRENT = "static", "hoisted", "recurrent"


def kind_of(attrs, arg_kinds):
    """The rule, written once: parameters and constants are static, the input is
    hoisted, a state recurrent; an op takes the latest kind among its operands."""
    if attrs["kind"] in ("param", "const"):
        return STATIC
    if attrs["kind"] == "input":
        return HOISTED
    if attrs["kind"] == "state":
        return RECURRENT
    ks = set(arg_kinds)
    return RECURRENT if RECURRENT in ks else HOISTED if HOISTED in ks else STATIC


class Kinds:
    """``kinds(g, n)``: node n's kind, worked out on first use and remembered. The
    rewrites keep every node's kind, so nodes they add are classified lazily."""

    def __init__(self):
        self._memo = {}

    def __call__(self, g, n):
        k = self._memo.get(n)
        if k is None:
            a = g.nodes[n]
            k = self._memo[n] = kind_of(a, [self(g, p) for p in a.get("args", ())])
        return k


class Plan:
    """The compiled form of a cell: what is computed where (static, hoisted, per
    step), what each step keeps for BPTT, which buffers the loops read and
    write, how the per-step gradients flow, and what runs after the loop."""

    def __init__(self, cell, graph):
        self.cell = cell
        self.graph = graph
        self.input_node = cell.input_node
        self.output_node = cell.output_node
        self.states = [(name, node, cell.updates[name]) for name, node in cell.states.items()]
        self.params = dict(cell.params)
        order = list(nx.lexicographical_topological_sort(graph))
        # plain look-up tables, so that running a plan never touches networkx
        self.ops = [n for n in order if graph.nodes[n]["kind"] == "op"]
        self.info = {n: (graph.nodes[n]["op"], graph.nodes[n]["args"]) for n in self.ops}
        self.shape = {n: graph.nodes[n]["shape"] for n in graph.nodes}
        self.width = {n: s[-1] for n, s in self.shape.items() if s}
        self.max_width = max(self.width.values())
        self.consts = {n: graph.nodes[n]["value"] for n in graph.nodes if graph.nodes[n]["kind"] == "const"}
        self.node_kind = {n: graph.nodes[n]["kind"] for n in graph.nodes}

        self._classify(order)
        self._find_requirements(order)
        self._choose_storage()
        self._define_loop_interface()
        self.stages = self._schedule_stages()
        self._flows = {}
        self._after = {}
        self.compiled = {}  # emitters keep what they made for this plan here
        self.workspace = Workspace()

    # ------------------------------------------------------------------ phases of __init__

    def _classify(self, order):
        """Every node's kind, then per-step slices of hoisted values."""
        g, kinds = self.graph, Kinds()
        kind = {n: kinds(g, n) for n in order}
        # A hoisted slice read only by per-step nodes is taken per step instead: a view
        # costs nothing, and the loop then collects gradients straight into the
        # sliced node's buffer rather than into one more buffer per slice.
        keep = {u for _, _, u in self.states} | {self.output_node}
        for n in reversed(self.ops):
            if kind[n] == HOISTED and self.info[n][0].window is not None and n not in keep:
                succ = list(g.successors(n))
                if succ and all(kind[m] == RECURRENT for m in succ):
                    kind[n] = RECURRENT
        self.kind = kind
        self.static_ops = [n for n in self.ops if kind[n] == STATIC]
        self.hoisted_ops = [n for n in self.ops if kind[n] == HOISTED]
        self.recurrent_ops = [n for n in self.ops if kind[n] == RECURRENT]

    def _find_requirements(self, order):
        """``requires[with_xs][n]``: does n lead to something that wants a gradient?"""
        self.requires = {True: {}, False: {}}
        for with_xs in (True, False):
            req = self.requires[with_xs]
            for n in order:
                k = self.node_kind[n]
                if k == "op":
                    req[n] = any(req[p] for p in self.info[n][1])
                else:
                    req[n] = k in ("param", "state") or (k == "input" and with_xs)

    def _choose_storage(self):
        """Views instead of copies, and the per-step values BPTT keeps."""
        kind, info = self.kind, self.info

        def window(n):
            op, args = info[n]
            return (args[0], *op.window)
        # A per-step slice is saved as a view of its parent's saved value, not copied.
        self.views = {n: window(n) for n in self.recurrent_ops if info[n][0].window is not None}
        # Slices computed outside the loop, whose gradients are placed into their parent's.
        self.outer_slices = {n: window(n) for n in self.static_ops + self.hoisted_ops
                             if info[n][0].window is not None}
        # Per-step values that some backward reads: kept for every step.
        self.stored = set()

        def keep_value(p):
            while p in self.views:
                p = self.views[p][0]
            if kind[p] == RECURRENT and self.node_kind[p] == "op":
                self.stored.add(p)
        for n in self.recurrent_ops:
            op, args = info[n]
            for i in op.saved_for([self.requires[True][p] for p in args]):
                if i == "y":
                    self.stored.add(n)
                else:
                    keep_value(args[i])
        if kind[self.output_node] == RECURRENT and self.node_kind[self.output_node] == "op":
            self.stored.add(self.output_node)
        self.stored |= {u for _, _, u in self.states if kind[u] == RECURRENT and self.node_kind[u] == "op"}

    def _define_loop_interface(self):
        """What the per-step loops read and write besides their own values."""
        kind, info = self.kind, self.info
        # per-step nodes with a static operand that wants a gradient: that gradient
        # is one batched call after the loop, over the node's kept per-step dy
        self.deferred = [n for n in self.recurrent_ops
                         if any(kind[p] == STATIC and self.requires[True][p] for p in info[n][1])]
        # hoisted values the loop reads at step t (and gives per-step gradients)
        self.boundary = sorted({p for n in self.recurrent_ops for p in info[n][1] if kind[p] == HOISTED}
                               | {u for _, _, u in self.states if kind[u] == HOISTED}
                               | ({self.output_node} if kind[self.output_node] == HOISTED else set()))
        # the node whose buffer holds each state's next value (written in place)
        self.inplace_update = {}
        for _, snode, unode in self.states:
            if (kind[unode] == RECURRENT and self.node_kind[unode] == "op"
                    and unode not in self.inplace_update.values()):
                self.inplace_update[snode] = unode
        # static values the per-step ops read (Wh[:, :2H], constants)
        self.loop_statics = sorted({p for n in self.recurrent_ops for p in info[n][1] if kind[p] == STATIC})

    def _schedule_stages(self):
        """The forward step as alternating stages, for emitters that fuse:
        ``("region", [ops])``, every op that can run before the next matmul
        (in topological order), and ``("matmul", node)``. Taking all ready
        non-matmul ops first gives the fewest regions."""
        done = {n for n in self.graph.nodes if self.kind[n] != RECURRENT or self.node_kind[n] != "op"}
        todo = list(self.recurrent_ops)
        stages = []
        while todo:
            region = []
            progress = True
            while progress:
                progress = False
                for n in todo:
                    op, args = self.info[n]
                    if op.native_form() != "matmul" and n not in region and all(p in done for p in args):
                        region.append(n)
                        done.add(n)
                        progress = True
            if region:
                stages.append(("region", [n for n in todo if n in region]))
                todo = [n for n in todo if n not in region]
            ready = [n for n in todo if all(p in done for p in self.info[n][1])]
            for n in ready:
                stages.append(("matmul", n))
                done.add(n)
            todo = [n for n in todo if n not in ready]
        return stages

    # ------------------------------------------------------------------ backward decisions

    def backward_flow(self, need_xs, has_dhs) -> "BackwardFlow":
        """How gradients move through one reverse step (made once per key)."""
        key = (bool(need_xs), bool(has_dhs))
        if key not in self._flows:
            self._flows[key] = BackwardFlow(self, *key)
        return self._flows[key]

    def written(self, need_xs, has_dhs):
        """``(written, shared)`` for the backward loop: the nodes whose DB/DH buffer
        it overwrites at every step, and the buffers (``"DH7"``) that are one
        array with another (``"DB33"``) because both get the same gradient."""
        flow = self.backward_flow(need_xs, has_dhs)
        return flow.written, flow.shared

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
                deferred.append((n, op, args, needs, op.saved_for(needs)))
            outer = []
            for n in list(reversed(self.hoisted_ops)) + list(reversed(self.static_ops)):
                op, args = self.info[n]
                if op.window is not None:
                    if req[args[0]]:
                        outer.append((n, None, args, (True,), set()))
                    continue
                needs = tuple(req[p] for p in args)
                outer.append((n, op, args, needs, op.saved_for(needs)))
            self._after[key] = (deferred, outer)
        return self._after[key]

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


class GradStep:
    """One node's gradient assembled in the reverse step.

    ``fulls`` are whole-width contributions and ``pieces`` ``(lo, hi, source)``
    column ranges (from slices). ``target`` names the per-step buffer it must
    land in (``"DB5"``, ``"DH2"``) or is None. ``form`` says how: ``alias`` (the
    target is the buffer that already holds the one contribution), ``into``
    (an earlier step formed it in the target), ``copy``, ``one`` (no target, one
    contribution), ``sum``, ``tile`` (pieces that tile the width, no fulls:
    one concatenation, made in ``into`` when a later step wants it there) or
    ``scatter`` (zeros, then every contribution added)."""

    def __init__(self, node, target, form, fulls, pieces):
        self.node, self.target, self.form = node, target, form
        self.fulls, self.pieces = fulls, pieces
        self.into = None

    def __repr__(self):
        return f"<grad {self.node} {self.form} -> {self.target or self.into}>"


class CallStep:
    """A primitive's local backward run at this step: gradients ``needs`` from ``saved``."""

    def __init__(self, node, needs, saved):
        self.node, self.needs, self.saved = node, needs, saved

    def __repr__(self):
        return f"<call {self.node} needs={self.needs}>"


class BackwardFlow:
    """The reverse step, decided once per (need_xs, has_dhs).

    A gradient source is ``("dhs",)``, ``("carry", state)``, ``("grad", node)``
    (an assembled gradient) or ``("result", node, i)`` (input i's gradient from
    a node's backward). ``steps`` are ``GradStep`` and ``CallStep`` in the
    order they run; then each state's carry becomes its gradient (``carries``:
    ``(state, has_gradient)``). ``written`` holds the nodes whose target
    buffer the step overwrites whole; ``shared`` maps a target buffer to the
    one it is the same array as (both receive the same gradient).
    """

    def __init__(self, plan, need_xs, has_dhs):
        self.steps, self.written, self.shared = [], set(), {}
        self._in_buffer = {}   # source -> the target buffer it is already in at step t
        self._tile_at = {}     # a tile-formed gradient without a target -> its step index
        req, kind, info = plan.requires[need_xs], plan.kind, plan.info
        contrib = {}

        def add(node, item):
            contrib.setdefault(node, []).append(item)
        for _, s, u in plan.states:
            add(u, ("full", ("carry", s)))
        if has_dhs:
            add(plan.output_node, ("full", ("dhs",)))

        for n in reversed(plan.recurrent_ops):
            if n not in contrib:
                continue  # no gradient reaches this node
            op, args = info[n]
            self._assemble(n, f"DB{n}" if n in plan.deferred else None, contrib[n], plan.width[n])
            if op.window is not None:
                if req[args[0]]:
                    add(args[0], ("piece", ("grad", n), *op.window))
                continue
            needs = tuple(kind[p] != STATIC and req[p] for p in args)
            if not any(needs):
                continue
            passed = op.passes_gradient()
            for i, p in enumerate(args):
                if needs[i] and passed[i]:
                    add(p, ("full", ("grad", n)))
            needs = tuple(need and not passed[i] for i, need in enumerate(needs))
            if not any(needs):
                continue
            self.steps.append(CallStep(n, needs, op.saved_for(needs)))
            for i, p in enumerate(args):
                if needs[i]:
                    add(p, ("full", ("result", n, i)))
        for p in plan.boundary:
            if req[p] and p in contrib:
                self._assemble(p, f"DH{p}", contrib[p], plan.width[p])
        # Every state's gradient is assembled before any carry is replaced: a state
        # whose update is another state's old value reads that state's carry.
        for _, s, _ in plan.states:
            if s in contrib:
                self._assemble(s, None, contrib[s], plan.width[s])
        self.carries = [(s, s in contrib) for _, s, _ in plan.states]
        del self._in_buffer, self._tile_at

    def _assemble(self, n, buf, items, width):
        fulls = [src for k, src, *_ in items if k == "full"]
        pieces = sorted(((lo, hi, src) for k, src, lo, hi in (i for i in items if i[0] == "piece")),
                        key=lambda p: (p[0], p[1]))
        if buf:
            self.written.add(n)
        if buf and len(fulls) == 1 and not pieces:
            src = fulls[0]
            if src in self._in_buffer:  # the same gradient as another target: one buffer for both
                self.shared[buf] = self._in_buffer[src]
                form = "alias"
            elif src in self._tile_at:  # the concatenation is made in this target, no copy
                self.steps[self._tile_at.pop(src)].into = buf
                self._in_buffer[src] = buf
                form = "into"
            else:
                self._in_buffer[src] = buf
                form = "copy"
            self.steps.append(GradStep(n, buf, form, fulls, []))
            return
        if buf:
            self._in_buffer[("grad", n)] = buf
        if not pieces:
            form = "one" if len(fulls) == 1 else "sum"
        elif not fulls and pieces[0][0] == 0 and pieces[-1][1] == width and all(
                pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1)):
            form = "tile"
            if not buf:
                self._tile_at[("grad", n)] = len(self.steps)
        else:
            form = "scatter"
        self.steps.append(GradStep(n, buf, form, fulls, pieces))


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


def _window(g, n):
    """(start, stop) when node n is a column slice, else None."""
    op = g.nodes[n].get("op")
    return None if op is None else op.window


def _slice_parts(g, nodes):
    """If every node is a slice of one parent, (parent, [(lo, hi), ...]); else None."""
    parents = {g.nodes[n]["args"][0] if _window(g, n) else None for n in nodes}
    if len(parents) != 1 or None in parents:
        return None
    return parents.pop(), [_window(g, n) for n in nodes]


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
                 if g.nodes[m].get("op") is not None and g.nodes[m]["op"].packs_columns
                 and g.nodes[m]["args"][0] == left
                 and g.nodes[m]["args"][1] != left and kind(g, g.nodes[m]["args"][1]) == STATIC]
        if len(group) < 2:
            continue
        group.sort()
        product = type(g.nodes[group[0]]["op"])
        if any(type(g.nodes[m]["op"]) is not product for m in group):
            continue
        rights = [g.nodes[m]["args"][1] for m in group]
        if len(set(rights)) != len(rights):
            continue
        joined, offsets = _join_columns(g, rights, "concat(" + ", ".join(g.nodes[r]["label"] for r in rights) + ")")
        label = f"{g.nodes[left]['label']} @ {g.nodes[joined]['label']}"
        if len(label) > 40:
            label = label[:39] + "…"
        fused = _new_op(g, product(), [left, joined], label)
        for m, r in zip(group, rights):
            lo = offsets[r]
            _make_slice_of(g, m, fused, lo, lo + g.nodes[m]["shape"][-1])
        changed = True
    return changed


def fuse_elementwise(g, kind):
    """Join one elementwise op applied to adjacent column slices of the same operands."""
    groups = {}
    for n in g.nodes:
        a = g.nodes[n]
        if a.get("op") is None or not a["op"].elementwise or kind(g, n) == STATIC:
            continue
        key, ok = [(type(a["op"]), tuple(a["op"].attrs().items()))], True
        for p in a["args"]:
            pa = g.nodes[p]
            if _window(g, p) and len(pa["shape"]) == 2:
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
            wins = [_window(g, p) for p in g.nodes[n]["args"] if _window(g, p)]
            rs = {lo for lo, _ in wins}
            widths = {hi - lo for lo, hi in wins}
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
            if _window(g, p):
                parent = pa["args"][0]
                if lo == 0 and hi == g.nodes[parent]["shape"][-1]:
                    new_args.append(parent)
                else:
                    new_args.append(_new_op(g, Slice(lo, hi), [parent],
                                            _slice_label(g.nodes[parent]["label"], lo, hi, g, parent)))
            else:
                new_args.append(p)
        op = type(g.nodes[head]["op"])(*g.nodes[head]["op"].attrs().values())
        lbls = [g.nodes[a]["label"] for a in new_args]
        label = op.expression(lbls, [9 if g.nodes[a].get("vname") or g.nodes[a].get("op") is None
                                     else g.nodes[a]["op"].precedence for a in new_args])
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
        kind = Kinds()  # kinds never change under these rewrites; new nodes are classified lazily
        while fuse_matmuls(g, kind):
            pass
        while fuse_elementwise(g, kind):
            pass
        _prune(g, keep)
    plan = Plan(cell, g)
    cached[fuse] = plan
    return plan
