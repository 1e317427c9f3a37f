"""Where the native loops keep each value and gradient: the plan's buffers
(``plan.forward_buffers`` and ``backward_buffers``, by the plan's names),
windows onto them (slices are views), and scratch rows for what lives within
one step; and the forward step cut into stages (``stages``). Shared by the
native emitters (numba, and through it CUDA); decided from the plan and its
backward flow, never re-deciding them.
"""
from __future__ import annotations

import numpy as np

from ..plan import HOISTED, RECURRENT, STATIC, GradStep, buffer_name
from . import scalar


def python_nodes(plan):
    """The per-step ops without a native form (a user's primitive): native
    loops call their Python rule, once a step over all rows, between kernels."""
    return [n for n in plan.recurrent_ops if plan.info[n][0].native_form() is None]


def stages(plan):
    """The forward step as alternating stages, for emitters that fuse:
    ``("region", [ops])``, every op that can run before the next matmul
    (in topological order), ``("matmul", node)`` and ``("python", node)``
    (an op without a native form). Taking all ready region ops first gives
    the fewest regions."""
    done = {n for n in plan.graph.nodes if plan.timing[n] != RECURRENT or plan.node_kind[n] != "op"}
    todo = list(plan.recurrent_ops)
    out = []
    while todo:
        region = []
        progress = True
        while progress:
            progress = False
            for n in todo:
                op, args = plan.info[n]
                if op.native_form() not in ("matmul", None) and n not in region and all(p in done for p in args):
                    region.append(n)
                    done.add(n)
                    progress = True
        if region:
            out.append(("region", [n for n in todo if n in region]))
            todo = [n for n in todo if n not in region]
        ready = [n for n in todo if all(p in done for p in plan.info[n][1])]
        for n in ready:
            out.append(("matmul" if plan.info[n][0].native_form() == "matmul" else "python", n))
            done.add(n)
        todo = [n for n in todo if n not in ready]
    return out


class NotNative(Exception):
    """This plan has no native form (a primitive without one, or a shape the
    native emitter does not handle); the message says which node."""


class Loc:
    """Where a node's value (or gradient) lives, and how to index one element.

    ``mode``: ``t`` a time-major (T, N, w) buffer at step t; ``t1`` the same at
    t + 1 (a state's next value, written in place); ``row`` a per-call (N, w)
    scratch; ``s1``/``s2``/``s0`` a static (w,), (k, w) or one-element array;
    ``const`` a literal. ``off`` is the first column (slices are views).
    """

    def __init__(self, array, mode, off=0, width=None, array_width=None):
        self.array, self.mode, self.off, self.width = array, mode, off, width
        self.array_width = width if array_width is None else array_width

    def shifted(self, lo, width):
        return Loc(self.array, self.mode, self.off + lo, width, self.array_width)

    def at(self, col, row="r"):
        c = col if self.off == 0 else f"{self.off} + {col}" if col != "0" else str(self.off)
        if self.mode == "t":
            return f"{self.array}[t, {row}, {c}]"
        if self.mode == "t1":
            return f"{self.array}[t + 1, {row}, {c}]"
        if self.mode == "row":
            return f"{self.array}[{row}, {c}]"
        if self.mode == "s1":
            return f"{self.array}[{c}]"
        if self.mode == "s2":  # a (1, w) row, or row ``row`` of a matrix when given one
            return f"{self.array}[{0 if row == 'r' else row}, {c}]"
        if self.mode == "s0":
            return f"{self.array}[0]"
        return self.array  # const: the typed literal's name

    def step_view(self):
        """The (N, width) numpy view at step t, for the staged driver's BLAS calls."""
        base = {"t": f"{self.array}[t]", "t1": f"{self.array}[t + 1]", "row": self.array,
                "s2": self.array}[self.mode]
        full = self.off == 0 and self.width == self.array_width
        return base if full else f"{base}[:, {self.off}:{self.off + self.width}]"


class Layout:
    """Locations of every value and gradient the loops touch, from the plan."""

    def __init__(self, plan, dtype):
        self.plan, self.dtype = plan, np.dtype(dtype)
        self.arrays = {}   # array name -> (how the driver gets it, its last-axis width)
        self.consts = set()

    def _array(self, name, source, width):
        self.arrays[name] = (source, width)
        return name

    def _loc(self, name, mode, source, width, off=0, lw=None):
        self._array(name, source, width)
        return Loc(name, mode, off, width if lw is None else lw, width)

    def _env_loc(self, name, mode, width):
        """A buffer of the loop environment (one the plan lists), by its name."""
        return self._loc(name, mode, ("E", name), width)

    def static(self, p):
        """A static value: through its static windows to the array that holds it."""
        plan, off = self.plan, 0
        w = plan.width.get(p, 1)
        while p in plan.outer_slices and plan.timing[p] == STATIC:
            p, lo, _ = plan.outer_slices[p]
            off += lo
        if p in plan.consts and not plan.shape[p]:  # a scalar; a constant array is held like a parameter
            value = float(plan.consts[p])
            self.consts.add(value)
            return Loc(scalar.const_name(value), "const", 0, 1)
        shape = plan.shape[p]
        mode = {0: "s0", 1: "s1", 2: "s2"}.get(len(shape))
        if mode is None:
            raise NotNative(f"static value {plan.graph.nodes[p]['label']!r} of shape {shape}")
        return self._loc(buffer_name("static", p), mode, ("static", p), shape[-1] if shape else 1, off, w)

    def hoisted(self, p):
        """A hoisted value at step t: through hoisted windows to the buffer that holds it."""
        plan, off, w = self.plan, 0, self.plan.width[p]
        while p in plan.outer_slices:
            p, lo, _ = plan.outer_slices[p]
            off += lo
        name = buffer_name("hoisted", p)
        return self._loc(name, "t", ("E", name), plan.width[p], off, w)

    def value(self, p, scratch=True):
        """Node p's value at step t. Per-step values nobody keeps get a scratch
        row when ``scratch`` (the forward), and are an error otherwise."""
        plan = self.plan
        if p in plan.views:
            parent, lo, hi = plan.views[p]
            if p not in plan.stored:
                return self.value(parent, scratch).shifted(lo, hi - lo)
        k, w = plan.timing[p], plan.width.get(p, 1)
        if k == STATIC:
            return self.static(p)
        if k == HOISTED:
            return self.hoisted(p)
        if plan.node_kind[p] == "state":
            return self._env_loc(buffer_name("state", p), "t", w)
        for s, u in plan.inplace_update.items():
            if u == p:
                return self._env_loc(buffer_name("state", s), "t1", w)
        if p in plan.stored:
            return self._env_loc(buffer_name("kept", p), "t", w)
        if not scratch:
            raise NotNative(f"node {plan.graph.nodes[p]['label']!r} is read by BPTT but not kept")
        return self._loc(f"W{p}", "row", ("scratch", w), w)


class GradPlaces:
    """Where each gradient of one reverse step lives, decided from the flow
    before any text is written: a target buffer (``DB``/``DH``, as the plan
    says), the location of the one gradient it equals (no copy), its columns
    of a parent's gradient (slices whose pieces tile the parent), or a
    scratch row."""

    def __init__(self, plan, layout, flow):
        self.plan, self.layout, self.flow = plan, layout, flow
        # node -> ("loc", Loc): its step writes it there; ("same", Loc): another step
        # writes the same gradient there; ("as", source): it is that source;
        # ("in", parent, lo): its step writes it into the parent's columns
        self.place = {}
        self.placed = set()  # pieces computed in place: nothing left to add
        steps = [s for s in flow.steps if isinstance(s, GradStep)]
        by_node = {s.node: s for s in steps}
        states = {node for node, _ in flow.carries}
        for s in steps:
            n, w = s.node, plan.width[s.node]
            target = s.target and flow.shared.get(s.target, s.target)
            if s.form == "alias":  # the run hands over one array for both names
                self.place[n] = ("same", layout._env_loc(target, "t", w))
            elif s.form == "into":  # the tile-formed gradient is made in this target
                loc = layout._env_loc(target, "t", w)
                self.place[s.fulls[0][1]] = ("loc", loc)
                self.place[n] = ("same", loc)
            elif target:
                self.place[n] = ("loc", layout._env_loc(target, "t", w))
            elif s.form == "one" and s.fulls[0][0] != "result":
                self.place[n] = ("as", s.fulls[0])
            elif n in states:  # formed where the next step reads it: no copy
                self.place[n] = ("loc", layout._loc(f"CN{n}", "row", ("carry-out", n), w))
            else:
                self.place[n] = ("loc", layout._loc(f"G{n}", "row", ("scratch", w), w))
        # slices whose gradients tile their parent's: computed in its columns
        for s in steps:
            if s.form == "tile" and all(src[0] == "grad" and by_node[src[1]].target is None
                                        and self.place[src[1]][0] == "loc" for _, _, src in s.pieces):
                for lo, _, src in s.pieces:
                    self.place[src[1]] = ("in", s.node, lo)
                    self.placed.add((s.node, lo))

    def loc(self, n):
        how = self.place[n]
        if how[0] in ("loc", "same"):
            return how[1]
        if how[0] == "in":
            return self.loc(how[1]).shifted(how[2], self.plan.width[n])
        return self.source_loc(how[1], self.plan.width[n])

    def source_loc(self, src, width):
        """A source that is an array element (not an expression): its location."""
        if src[0] == "dhs":
            return self.layout._loc(buffer_name("dhs", None), "t", ("dhs",), width)
        if src[0] == "carry":
            return self.layout._loc(f"C{src[1]}", "row", ("carry", src[1]), width)
        if src[0] == "grad":
            return self.loc(src[1])
        return None

    def is_written(self, n):
        """Does n's own step write it (rather than it being another location)?"""
        return self.place[n][0] in ("loc", "in")
