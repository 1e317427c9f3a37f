"""Hypothesis profiles and strategies: cell sizes, unroll arguments, random
cells (one small draw per shape of cell a compiler pass must get right)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import networkx as nx

from .. import backend
from ..graph import (CellBuilder, clip, concat, cos, exp, floor, log, maximum, minimum, relu, sigmoid, sin,
                     sqrt, tanh, where)

PROFILES = {
    "ci": dict(derandomize=True, database=None, max_examples=15, deadline=None, print_blob=True),
    "dev": dict(max_examples=8, deadline=None),
    "deep": dict(max_examples=300, deadline=None),
}


def register_profiles():
    """Register the ``ci``, ``dev`` and ``deep`` Hypothesis profiles (idempotent)."""
    from hypothesis import HealthCheck, settings

    for name, kw in PROFILES.items():
        settings.register_profile(name, suppress_health_check=[HealthCheck.too_slow], **kw)


def scaled_examples(n_ci: int) -> int:
    """``n_ci`` examples under the ``ci`` profile, scaled for the profile in force
    (for tests whose examples are expensive and set their own ``max_examples``)."""
    from hypothesis import settings

    ratio = settings.default.max_examples / PROFILES["ci"]["max_examples"]
    return max(1, int(round(n_ci * ratio)))


try:  # the strategies need Hypothesis; the checks above do not
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover
    st = None
else:
    register_profiles()


def _elements(dtype, lo=-1.0, hi=1.0):
    dtype = np.dtype(dtype)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=32 if dtype == np.float32 else 64)


def cell_sizes(max_input=4, max_hidden=4):
    """(input_size, hidden_size), each from 1."""
    return st.tuples(st.integers(1, max_input), st.integers(1, max_hidden))


@dataclass
class UnrollArgs:
    params: dict
    xs: object
    state0: dict

    def __iter__(self):
        return iter((self.params, self.xs, self.state0))


def unroll_args(cell, dtype=np.float64, max_batch=3, max_steps=4, bound=1.0):
    """``UnrollArgs(params, xs, state0)`` for ``cell``: batch 1..max_batch, T
    1..max_steps, every value in [-bound, bound], no subnormals (so that a
    flush-to-zero GPU and numpy agree). Unpacks as ``params, xs, state0 = args``."""
    dtype = np.dtype(dtype)
    el = _elements(dtype, -bound, bound)

    @st.composite
    def build(draw):
        n = draw(st.integers(1, max_batch))
        t = draw(st.integers(1, max_steps))
        params = {k: backend.asarray(draw(hnp.arrays(dtype, s, elements=el)))
                  for k, s in cell.param_shapes().items()}
        xs = backend.asarray(draw(hnp.arrays(dtype, (n, t, cell.input_size), elements=el)))
        state0 = {k: backend.asarray(draw(hnp.arrays(dtype, (n, s), elements=el)))
                  for k, s in cell.state_sizes().items()}
        return UnrollArgs(params, xs, state0)
    return build()


# Bounds on |value| keep random cells finite over a few steps: exp only of
# values bounded by EXP_MAX, no value above VALUE_MAX (inputs, states and
# params are taken to lie in [-1, 1]).
EXP_MAX = 2.0
VALUE_MAX = 30.0

_UNARY = ("tanh", "sigmoid", "relu", "exp", "neg")
_SQUASH = {"tanh": 1.0, "sigmoid": 1.0}
_FNS = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu, "exp": exp, "neg": lambda v: -v}

# Steps and kinks (floor, %, comparisons, maximum, abs) are taken of values
# offset by an odd constant, so that no drawn point sits on one (two engines'
# roundings could fall on either side).
_OFF = 0.123


class _Cell:
    """One random cell while it is drawn: the builder, the pool of per-example
    (N, w) values with a bound on each one's size, and those no op reads yet
    (``dangling``: folded into the state updates at the end)."""

    def __init__(self, draw, max_width):
        self.draw, self.max_width = draw, max_width
        self.width = st.integers(1, max_width)
        self.c = CellBuilder("random")
        self.pool = []      # (value, bound)
        self.dangling = {}  # node -> value, in the order they were made
        self.params = 0

    def pick(self, items):
        return items[self.draw(st.integers(0, len(items) - 1))]

    def of_width(self, w):
        return [(u, ub) for u, ub in self.pool if u.shape[-1] == w]

    def input_only(self, v):
        """Depends on the input and on no state: hoisted."""
        g = self.c.graph
        return not any(g.nodes[a]["kind"] == "state" for a in nx.ancestors(g, v.node) | {v.node})

    def new_param(self, shape, static_ok=True):
        """A fresh parameter; sometimes (``static_ok``) a static op of it: scaled, squashed, negated."""
        self.params += 1
        p = self.c.param(f"p{self.params}", shape)
        if static_ok and self.draw(st.integers(0, 4)) == 0:
            choice = self.draw(st.sampled_from(["scale", "tanh", "neg"]))
            if choice == "scale":
                return p * 0.5
            return tanh(p) if choice == "tanh" else -p
        return p

    def use(self, v):
        self.dangling.pop(v.node, None)
        return v

    def add(self, v, b):
        self.pool.append((v, b))
        self.dangling[v.node] = v

    def matmul_to(self, v, b, m):
        """v @ (a fresh parameter, or a column window of a wider one), width m."""
        w = v.shape[-1]
        if self.draw(st.booleans()):
            extra = self.draw(st.integers(1, 3))
            lo = self.draw(st.integers(0, extra))
            W = self.new_param((w, m + extra), static_ok=False)
            return v @ W[:, lo:lo + m], b * w
        return v @ self.new_param((w, m)), b * w


# --------------------------------------------------------------------------- the draws
#
# Each takes the cell, a value v from the pool and its bound b, and returns
# (a new value, its bound), or None where v does not fit.

def _draw_matmul(d, v, b):
    return d.matmul_to(d.use(v), b, d.draw(d.width))


def _draw_gates(d, v, b):
    """One parameter, 2-3 adjacent column blocks from any first column, one
    matmul and gate each (fusable), multiplied or added."""
    draw, w = d.draw, v.shape[-1]
    k, m = draw(st.integers(2, 3)), draw(d.width)
    lead, tail = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    W = d.new_param((w, lead + k * m + tail), static_ok=False)
    d.use(v)
    act = _FNS[draw(st.sampled_from(["sigmoid", "tanh"]))]
    gates = [act(v @ W[:, lead + j * m:lead + (j + 1) * m]) for j in range(k)]
    out, ob = gates[0], 1.0
    for gj in gates[1:]:
        if draw(st.booleans()):
            out = out * gj  # a product of gates stays within [-1, 1]
        else:
            out, ob = out + gj, ob + 1.0
    return out, ob


def _draw_arithmetic(op):
    def drawn(d, v, b):
        """v op u, u of v's width, either way round."""
        u, ub = d.pick(d.of_width(v.shape[-1]))
        d.use(v), d.use(u)
        if d.draw(st.booleans()):
            v, u, b, ub = u, v, ub, b
        if op == "add":
            return v + u, b + ub
        return (v - u, b + ub) if op == "sub" else (v * u, b * ub)
    return drawn


def _draw_bias(d, v, b):
    """v with a parameter row added, subtracted or multiplied, on either side."""
    brow = d.new_param((v.shape[-1],))
    d.use(v)
    kind = d.draw(st.sampled_from(["add", "sub", "mul"]))
    left = d.draw(st.booleans())
    if kind == "add":
        return (v + brow if left else brow + v), b + 1.0
    if kind == "sub":
        return (v - brow if left else brow - v), b + 1.0
    return (v * brow if left else brow * v), b


def _draw_scalar(d, v, b):
    """v with a Python number, on either side."""
    k = d.draw(st.sampled_from([0.5, 1.0, 2.0, -1.5]))
    form = d.draw(st.sampled_from(["k+v", "v+k", "k-v", "v-k", "k*v", "v*k", "v/k"]))
    d.use(v)
    out = {"k+v": lambda: k + v, "v+k": lambda: v + k, "k-v": lambda: k - v,
           "v-k": lambda: v - k, "k*v": lambda: k * v, "v*k": lambda: v * k,
           "v/k": lambda: v / k}[form]()
    return out, b * abs(k) if form in ("k*v", "v*k") else b / abs(k) if form == "v/k" else b + abs(k)


def _draw_unary(d, v, b):
    name = d.draw(st.sampled_from(_UNARY))
    if name == "exp" and b > EXP_MAX:
        name = "tanh"
    d.use(v)
    return _FNS[name](v), _SQUASH.get(name, math.exp(b) if name == "exp" else b)


def _draw_slice(d, v, b):
    w = v.shape[-1]
    if w < 2:
        return None
    lo = d.draw(st.integers(0, w - 1))
    hi = d.draw(st.integers(lo + 1, w))
    return d.use(v)[:, lo:hi], b


def _draw_concat(d, v, b):
    u, ub = d.pick(d.pool)
    if u.shape[-1] + v.shape[-1] > 2 * d.max_width:
        return None
    return concat([d.use(v), d.use(u)]), max(b, ub)


def _draw_overlap(d, v, b):
    """Two products by overlapping column ranges of one parameter (not to be fused)."""
    w = v.shape[-1]
    m, o = d.draw(d.width), d.draw(st.integers(1, 2))
    o = min(o, m)
    W = d.new_param((w, 2 * m - o), static_ok=False)
    u, ub = d.pick(d.of_width(w))
    d.use(v), d.use(u)
    return tanh(v @ W[:, :m]) * sigmoid(u @ W[:, m - o:]), 1.0


def _draw_fanout(d, v, b):
    """A value of the input alone read by several ops (fan-out inside the hoisted region)."""
    u, ub = d.pick([(u, ub) for u, ub in d.pool if d.input_only(u)])
    d.use(u)
    name = d.draw(st.sampled_from(["tanh", "sigmoid", "neg", "relu", "exp"]))
    if name == "exp" and ub > EXP_MAX:
        name = "tanh"
    out = _FNS[name](u) + u * d.draw(st.sampled_from([0.5, -1.0]))
    ob = _SQUASH.get(name, math.exp(ub) if name == "exp" else ub) + ub
    if d.draw(st.booleans()) and v.shape[-1] == u.shape[-1]:  # and one more reader, per step
        out, ob = out * d.use(v), ob * b
    return out, ob


# The primitives the literature needs.

def _draw_div(d, v, b):
    if d.draw(st.booleans()):
        return 1.0 / (2.0 + abs(d.use(v) - _OFF)), 0.5
    u, _ = d.pick(d.pool)
    den = 1.5 + tanh(d.use(u)) if u.shape[-1] in (1, v.shape[-1]) else 1.0 + d.new_param((v.shape[-1],)) ** 2
    return d.use(v) / den, b / 0.5


def _draw_reduce(d, v, b):
    """v - mean(v), a sum, or a whole layer norm; of a parameter row sometimes."""
    form = d.draw(st.sampled_from(["center", "sum", "norm", "param"]))
    w = v.shape[-1]
    if form == "center":
        return d.use(v) - v.mean(axis=-1, keepdims=True), 2 * b
    if form == "sum":
        return d.use(v) * 0.5 + v.sum(axis=-1, keepdims=True) / w, 1.5 * b
    if form == "param":
        p = d.new_param((w,), static_ok=False)
        return d.use(v) * (p - p.mean()) + p.sum() * 0.25, b * 2 + 0.25 * w
    dv = d.use(v) - v.mean(axis=-1, keepdims=True)
    return dv / sqrt((dv * dv).mean(axis=-1, keepdims=True) + 0.5), math.sqrt(w) * 2


def _draw_mask(d, v, b):
    form = d.draw(st.sampled_from(["where", "maximum", "minimum", "clip", "mask"]))
    v = d.use(v)
    if form == "where":
        mask = v > _OFF if d.draw(st.booleans()) else _OFF < v  # (the second is gt reflected too)
        return where(mask, v, 0.25 * v), b
    if form == "mask":  # every comparison at once, each a 0/1 mask with no gradient
        return (v * (v < _OFF) + 0.5 * v * (v >= -_OFF) - 0.25 * v * (v <= -_OFF)
                + 0.1 * (v > _OFF)), 1.75 * b + 0.1
    if form == "maximum":
        return (maximum(v, -_OFF) if d.draw(st.booleans()) else maximum(_OFF, v)), b + _OFF
    if form == "minimum":
        return minimum(v, _OFF), b + _OFF
    return clip(v, -0.5 - _OFF, 0.5 + _OFF), 1.0


def _draw_smooth(d, v, b):
    name = d.draw(st.sampled_from(["sin", "cos", "abs", "log", "sqrt", "square", "cube", "softlog"]))
    if name in ("square", "cube") and b > 3:
        return None  # before use(v): a value marked used must be read
    v = d.use(v)
    if name in ("sin", "cos"):
        return (sin(v) if name == "sin" else cos(v)), 1.0
    if name == "abs":
        return abs(v - _OFF), b + _OFF
    if name == "log":
        return log(1.0 + v * v), math.log1p(b * b)
    if name == "softlog":
        return log(1.5 + cos(v)), math.log(2.5)
    if name == "sqrt":
        return sqrt(v * v + 0.25), b + 0.5
    return (v ** 2, b * b) if name == "square" else (v ** 3, b ** 3)


def _draw_step(d, v, b):
    v = d.use(v)
    if d.draw(st.booleans()):
        return v - floor(v + _OFF), b + 1
    k = d.draw(st.sampled_from([1.0, 0.75, -0.5]))
    return (v + _OFF) % k + v, b + abs(k)


def _draw_static(d, v, b):
    """A product by W - Wᵀ (a square parameter) or by a constant array (a permutation)."""
    w = v.shape[-1]
    if d.draw(st.booleans()):
        W = d.new_param((w, w), static_ok=False)
        return d.use(v) @ (W - W.T), 2 * b * w
    perm = np.eye(w)[d.draw(st.permutations(range(w)))]
    return d.use(v) @ d.c.const(perm), b


def _draw_gap(d, v, b):
    """Column slices of one value that leave a gap between them (v[:, 0:1] and v[:, 3:4])."""
    wide = [u for u, _ in d.pool if u.shape[-1] >= 3 and not d.input_only(u)]  # per-step values first
    if wide:
        v = d.pick(wide)
    w = v.shape[-1]
    if w < 3:
        return None
    lo1 = d.draw(st.integers(0, w - 3))
    hi1 = d.draw(st.integers(lo1 + 1, w - 2))
    lo2 = d.draw(st.integers(hi1 + 1, w - 1))
    hi2 = d.draw(st.integers(lo2 + 1, w))
    d.use(v)
    return concat([tanh(v[:, lo1:hi1]), sigmoid(v[:, lo2:hi2])]), 1.0


def _draw_shared_slice(d, v, b):
    """A hoisted slice read by a hoisted op and by a per-step one:
    s = (x W)[:, i:j];  tanh(s + h U + tanh(s))."""
    u, ub = d.pick([(u, ub) for u, ub in d.pool if d.input_only(u)])
    m = d.draw(st.integers(1, 3))
    extra = d.draw(st.integers(0, 2))
    lo = d.draw(st.integers(0, extra))
    s = (d.use(u) @ d.new_param((u.shape[-1], m + extra), static_ok=False))[:, lo:lo + m]
    return tanh(s + d.use(v) @ d.new_param((v.shape[-1], m), static_ok=False) + tanh(s)), 1.0


# The table of draws, in the order Hypothesis picks from (the order fixes what
# a seed draws); the rarest shapes appear twice.
_DRAWS = {
    "matmul": _draw_matmul, "gates": _draw_gates, "add": _draw_arithmetic("add"),
    "sub": _draw_arithmetic("sub"), "mul": _draw_arithmetic("mul"), "bias": _draw_bias,
    "scalar": _draw_scalar, "unary": _draw_unary, "slice": _draw_slice, "concat": _draw_concat,
    "overlap": _draw_overlap, "fanout": _draw_fanout,
    "div": _draw_div, "reduce": _draw_reduce, "mask": _draw_mask, "smooth": _draw_smooth,
    "step": _draw_step, "static": _draw_static, "gap": _draw_gap, "shared-slice": _draw_shared_slice,
}
_CHOICES = (*_DRAWS, "gap", "shared-slice")


# --------------------------------------------------------------------------- the phases

def _draw_states(d, max_states):
    """1..max_states states; sometimes (a shift register) all of one width, one
    of them to take another's old value. Returns (states, shift)."""
    draw = d.draw
    n_states = draw(st.integers(1, max_states))
    shift = n_states > 1 and draw(st.integers(0, 3)) == 0
    shared = draw(d.width)
    states = [d.c.state(f"s{i}", shared if shift else draw(d.width)) for i in range(n_states)]
    d.pool += [(s, 1.0) for s in states]
    d.dangling = {v.node: v for v, _ in d.pool}
    # Sometimes a state that no update has to read (h' = f(x) only): the
    # engine must still carry it and give its initial value a zero gradient.
    if draw(st.integers(0, 4)) == 0:
        d.dangling.pop(states[0].node)
    return states, shift


def _draw_op(d):
    """One op from the table on a value of the pool, squashed where it could grow too large."""
    op = d.draw(st.sampled_from(_CHOICES))
    v, b = d.pick(d.pool)
    drawn = _DRAWS[op](d, v, b)
    if drawn is None:
        return
    out, ob = drawn
    if ob > VALUE_MAX:  # too large to stay finite through exp and time: squash it
        out, ob = tanh(out), 1.0
    d.add(out, ob)


def _draw_output(d):
    """Sometimes a separate output: any value (hoisted, or a state: the state
    before the step), bare or through ops of its own, one with a parameter
    only the output reads. None: the cell's output is its first state."""
    if not d.draw(st.booleans()):
        return None
    output = d.use(d.pick(d.pool)[0])
    tail = d.draw(st.sampled_from(["none", "tanh", "head", "gate"]))
    if tail == "tanh":
        return tanh(output)
    if tail == "head":
        return tanh(output @ d.new_param((output.shape[-1], d.draw(d.width)), static_ok=False))
    if tail == "gate":
        return sigmoid(output) * tanh(output)
    return output


def _draw_updates(d, states, shift):
    """Every value nothing reads yet folded into the state updates (so that
    the input and every parameter reach one), each update squashed or a gated
    mix with the old state; with ``shift``, one state takes another's old value."""
    draw = d.draw
    rest = list(d.dangling.values())
    folded = states
    if shift:
        dst = draw(st.integers(0, len(states) - 1))
        d.c.update(**{f"s{dst}": states[(dst + 1) % len(states)]})
        folded = [s for i, s in enumerate(states) if i != dst]
    for si, s in enumerate(folded):
        mine = rest[si::len(folded)] or [d.pick(d.pool)[0]]
        h = s.shape[-1]
        acc = None
        for v in mine:
            term = v if v.shape[-1] == h and draw(st.booleans()) else v @ d.new_param((v.shape[-1], h))
            acc = term if acc is None else acc + term
        squash = draw(st.sampled_from(["tanh", "sigmoid", "gru"]))
        if squash == "gru":  # convex mix with the old state, as gated cells do
            z = sigmoid(acc)
            nxt = (1 - z) * s + z * tanh(acc)
        else:
            nxt = _FNS[squash](acc)
        d.c.update(**{s.label: nxt})


def random_cells(max_ops=8, max_states=2, max_width=4):
    """Random valid cells built from the primitives through ``CellBuilder``.

    Random wiring with consistent shapes: one input, 1..max_states states and
    parameters of random sizes; ops drawn from every primitive (matmul by a
    parameter, by a parameter slice or by a block of adjacent slices of one
    parameter, starting at any column, so that fusion has work to do; two
    matmuls by overlapping slices of one parameter, which must not be fused;
    add/sub/mul with another value, a bias row or a Python scalar on either
    side; neg, tanh, sigmoid, relu, exp; slices at any offset; concat; static
    ops on parameters; a value depending on the input only read by several
    ops, so that the hoisted region has fan-out; and the literature's
    primitives: division, reductions, masks, kinks and steps, W - Wᵀ, constant
    arrays). Every state is updated
    (through tanh, sigmoid or a gated mix, so states stay bounded; sometimes
    one state simply takes another's old value, a shift register), every
    parameter and the input are used, and sometimes the output is a separate
    value (possibly hoisted, possibly a state before its update, possibly
    ops of its own that no state update reads, one with a parameter only the
    output uses); sometimes no update reads a state at all. For
    compiler-pass writers: compare ``gr.unroll`` with ``gr.unroll_naive``
    (``check_against_naive``) on what this draws. The draws are a table
    (``_DRAWS``), one small function each.
    """
    @st.composite
    def build(draw):
        d = _Cell(draw, max_width)
        d.pool.append((d.c.input("x", draw(d.width)), 1.0))
        states, shift = _draw_states(d, max_states)
        for _ in range(draw(st.integers(1, max_ops))):
            _draw_op(d)
        output = _draw_output(d)
        _draw_updates(d, states, shift)
        if output is not None:
            d.c.output(output)
        return d.c.build()
    return build()
