"""Hypothesis profiles and strategies: cell sizes, unroll arguments, random
cells (one small draw per shape of cell a compiler pass must get right)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import backend

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


# The draws of the primitives the literature needs: each a small function
# (draw, builder, v, bound of v, pool, use, new_param, input_only) -> (value,
# bound) or None when v does not fit. Steps and kinks (floor, %, comparisons,
# maximum, abs) are taken of values offset by an odd constant, so that no
# drawn point sits on one (two engines' roundings could fall on either side).
_OFF = 0.123


def _draw_div(draw, c, v, b, pool, use, new_param, input_only):
    from ..graph import tanh
    if draw(st.booleans()):
        return 1.0 / (2.0 + abs(use(v) - _OFF)), 0.5
    u, _ = pool[draw(st.integers(0, len(pool) - 1))]
    den = 1.5 + tanh(use(u)) if u.shape[-1] in (1, v.shape[-1]) else 1.0 + new_param((v.shape[-1],)) ** 2
    return use(v) / den, b / 0.5


def _draw_reduce(draw, c, v, b, pool, use, new_param, input_only):
    """v - mean(v), a sum, or a whole layer norm; of a parameter row sometimes."""
    from ..graph import sqrt
    form = draw(st.sampled_from(["center", "sum", "norm", "param"]))
    w = v.shape[-1]
    if form == "center":
        return use(v) - v.mean(axis=-1, keepdims=True), 2 * b
    if form == "sum":
        return use(v) * 0.5 + v.sum(axis=-1, keepdims=True) / w, 1.5 * b
    if form == "param":
        p = new_param((w,), static_ok=False)
        return use(v) * (p - p.mean()) + p.sum() * 0.25, b * 2 + 0.25 * w
    d = use(v) - v.mean(axis=-1, keepdims=True)
    return d / sqrt((d * d).mean(axis=-1, keepdims=True) + 0.5), math.sqrt(w) * 2


def _draw_mask(draw, c, v, b, pool, use, new_param, input_only):
    from ..graph import clip, maximum, minimum, where
    form = draw(st.sampled_from(["where", "maximum", "minimum", "clip", "mask"]))
    v = use(v)
    if form == "where":
        mask = v > _OFF if draw(st.booleans()) else _OFF < v  # (the second is gt reflected too)
        return where(mask, v, 0.25 * v), b
    if form == "mask":  # every comparison at once, each a 0/1 mask with no gradient
        return (v * (v < _OFF) + 0.5 * v * (v >= -_OFF) - 0.25 * v * (v <= -_OFF)
                + 0.1 * (v > _OFF)), 1.75 * b + 0.1
    if form == "maximum":
        return (maximum(v, -_OFF) if draw(st.booleans()) else maximum(_OFF, v)), b + _OFF
    if form == "minimum":
        return minimum(v, _OFF), b + _OFF
    return clip(v, -0.5 - _OFF, 0.5 + _OFF), 1.0


def _draw_smooth(draw, c, v, b, pool, use, new_param, input_only):
    from ..graph import cos, log, sin, sqrt
    gr_cos = cos
    name = draw(st.sampled_from(["sin", "cos", "abs", "log", "sqrt", "square", "cube", "softlog"]))
    if name in ("square", "cube") and b > 3:
        return None  # before use(v): a value marked used must be read
    v = use(v)
    if name in ("sin", "cos"):
        return (sin(v) if name == "sin" else cos(v)), 1.0
    if name == "abs":
        return abs(v - _OFF), b + _OFF
    if name == "log":
        return log(1.0 + v * v), math.log1p(b * b)
    if name == "softlog":
        return log(1.5 + gr_cos(v)), math.log(2.5)
    if name == "sqrt":
        return sqrt(v * v + 0.25), b + 0.5
    return (v ** 2, b * b) if name == "square" else (v ** 3, b ** 3)


def _draw_step(draw, c, v, b, pool, use, new_param, input_only):
    from ..graph import floor
    v = use(v)
    if draw(st.booleans()):
        return v - floor(v + _OFF), b + 1
    k = draw(st.sampled_from([1.0, 0.75, -0.5]))
    return (v + _OFF) % k + v, b + abs(k)


def _draw_static(draw, c, v, b, pool, use, new_param, input_only):
    """A product by W - Wᵀ (a square parameter) or by a constant array (a permutation)."""
    w = v.shape[-1]
    if draw(st.booleans()):
        W = new_param((w, w), static_ok=False)
        return use(v) @ (W - W.T), 2 * b * w
    perm = np.eye(w)[draw(st.permutations(range(w)))]
    return use(v) @ c.const(perm), b


def _draw_gap(draw, c, v, b, pool, use, new_param, input_only):
    """Column slices of one value that leave a gap between them (v[:, 0:1] and v[:, 3:4])."""
    from ..graph import concat, sigmoid, tanh
    wide = [u for u, _ in pool if u.shape[-1] >= 3 and not input_only(u)]  # per-step values first
    if wide:
        v = wide[draw(st.integers(0, len(wide) - 1))]
    w = v.shape[-1]
    if w < 3:
        return None
    lo1 = draw(st.integers(0, w - 3))
    hi1 = draw(st.integers(lo1 + 1, w - 2))
    lo2 = draw(st.integers(hi1 + 1, w - 1))
    hi2 = draw(st.integers(lo2 + 1, w))
    use(v)
    return concat([tanh(v[:, lo1:hi1]), sigmoid(v[:, lo2:hi2])]), 1.0


def _draw_shared_slice(draw, c, v, b, pool, use, new_param, input_only):
    """A hoisted slice read by a hoisted op and by a per-step one:
    s = (x W)[:, i:j];  tanh(s + h U + tanh(s))."""
    from ..graph import tanh
    hoisted = [(u, ub) for u, ub in pool if input_only(u)]
    u, ub = hoisted[draw(st.integers(0, len(hoisted) - 1))]
    m = draw(st.integers(1, 3))
    extra = draw(st.integers(0, 2))
    lo = draw(st.integers(0, extra))
    s = (use(u) @ new_param((u.shape[-1], m + extra), static_ok=False))[:, lo:lo + m]
    return tanh(s + use(v) @ new_param((v.shape[-1], m), static_ok=False) + tanh(s)), 1.0


_LITERATURE_DRAWS = {"div": _draw_div, "reduce": _draw_reduce, "mask": _draw_mask, "smooth": _draw_smooth,
                     "step": _draw_step, "static": _draw_static, "gap": _draw_gap,
                     "shared-slice": _draw_shared_slice}


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
    ops, so that the hoisted region has fan-out). Every state is updated
    (through tanh, sigmoid or a gated mix, so states stay bounded; sometimes
    one state simply takes another's old value, a shift register), every
    parameter and the input are used, and sometimes the output is a separate
    value (possibly hoisted, possibly a state before its update, possibly
    ops of its own that no state update reads, one with a parameter only the
    output uses); sometimes no update reads a state at all. For
    compiler-pass writers: compare ``gr.unroll`` with ``gr.unroll_naive``
    (``check_against_naive``) on what this draws.
    """
    import networkx as nx

    from ..graph import CellBuilder, concat, exp, relu, sigmoid, tanh

    fns = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu, "exp": exp, "neg": lambda v: -v}

    @st.composite
    def build(draw):
        c = CellBuilder("random")
        width = st.integers(1, max_width)
        d = draw(width)
        pool = []  # (value, bound) of per-example (N, w) values
        x = c.input("x", d)
        pool.append((x, 1.0))
        states = []
        n_states = draw(st.integers(1, max_states))
        # Sometimes a shift register: one state takes another's old value
        # unchanged (an update that is a state node, not an op).
        shift = n_states > 1 and draw(st.integers(0, 3)) == 0
        shared = draw(width)
        for i in range(n_states):
            s = c.state(f"s{i}", shared if shift else draw(width))
            states.append(s)
            pool.append((s, 1.0))
        counter = [0]
        dangling = {v.node: v for v, _ in pool}

        def input_only(v):  # depends on the input and on no state: hoisted
            return not any(c.graph.nodes[a]["kind"] == "state" for a in nx.ancestors(c.graph, v.node) | {v.node})
        # Sometimes a state that no update has to read (h' = f(x) only): the
        # engine must still carry it and give its initial value a zero gradient.
        if draw(st.integers(0, 4)) == 0:
            dangling.pop(states[0].node)

        def new_param(shape, static_ok=True):
            counter[0] += 1
            p = c.param(f"p{counter[0]}", shape)
            # sometimes a static op on the parameter: slice, scale, squash
            if static_ok and draw(st.integers(0, 4)) == 0:
                choice = draw(st.sampled_from(["scale", "tanh", "neg"]))
                if choice == "scale":
                    return p * 0.5
                return tanh(p) if choice == "tanh" else -p
            return p

        def use(v):
            dangling.pop(v.node, None)
            return v

        def add(v, b):
            pool.append((v, b))
            dangling[v.node] = v
            return v

        def matmul_to(v, b, m):
            """v @ (a fresh param or a slice of a wider one), width m."""
            w = v.shape[-1]
            if draw(st.booleans()):
                extra = draw(st.integers(1, 3))
                lo = draw(st.integers(0, extra))
                W = new_param((w, m + extra), static_ok=False)
                return v @ W[:, lo:lo + m], b * w
            return v @ new_param((w, m)), b * w

        n_ops = draw(st.integers(1, max_ops))
        for _ in range(n_ops):
            op = draw(st.sampled_from(["matmul", "gates", "add", "sub", "mul", "bias", "scalar",
                                       "unary", "slice", "concat", "overlap", "fanout",
                                       *_LITERATURE_DRAWS, "gap", "shared-slice"]))  # (the rarest twice)
            i = draw(st.integers(0, len(pool) - 1))
            v, b = pool[i]
            w = v.shape[-1]
            if op == "matmul":
                out, ob = matmul_to(use(v), b, draw(width))
            elif op == "gates":
                # one parameter, 2-3 adjacent column blocks from any first column,
                # one matmul + gate each (fusable)
                k, m = draw(st.integers(2, 3)), draw(width)
                lead, tail = draw(st.integers(0, 2)), draw(st.integers(0, 2))
                W = new_param((w, lead + k * m + tail), static_ok=False)
                use(v)
                gates = []
                act = draw(st.sampled_from(["sigmoid", "tanh"]))
                for j in range(k):
                    gates.append(fns[act](v @ W[:, lead + j * m:lead + (j + 1) * m]))
                out, ob = gates[0], 1.0
                for gj in gates[1:]:
                    if draw(st.booleans()):
                        out = out * gj  # a product of gates stays within [-1, 1]
                    else:
                        out, ob = out + gj, ob + 1.0
            elif op in ("add", "sub", "mul"):
                same = [(u, ub) for u, ub in pool if u.shape[-1] == w]
                u, ub = same[draw(st.integers(0, len(same) - 1))]
                use(v)
                use(u)
                if draw(st.booleans()):
                    v, u, b, ub = u, v, ub, b
                if op == "add":
                    out, ob = v + u, b + ub
                elif op == "sub":
                    out, ob = v - u, b + ub
                else:
                    out, ob = v * u, b * ub
            elif op == "bias":
                brow = new_param((w,))
                use(v)
                kind = draw(st.sampled_from(["add", "sub", "mul"]))
                left = draw(st.booleans())
                if kind == "add":
                    out = v + brow if left else brow + v
                    ob = b + 1.0
                elif kind == "sub":
                    out = v - brow if left else brow - v
                    ob = b + 1.0
                else:
                    out = v * brow if left else brow * v
                    ob = b
            elif op == "scalar":
                k = draw(st.sampled_from([0.5, 1.0, 2.0, -1.5]))
                form = draw(st.sampled_from(["k+v", "v+k", "k-v", "v-k", "k*v", "v*k", "v/k"]))
                use(v)
                out = {"k+v": lambda: k + v, "v+k": lambda: v + k, "k-v": lambda: k - v,
                       "v-k": lambda: v - k, "k*v": lambda: k * v, "v*k": lambda: v * k,
                       "v/k": lambda: v / k}[form]()
                ob = b * abs(k) if form in ("k*v", "v*k") else b / abs(k) if form == "v/k" else b + abs(k)
            elif op == "unary":
                name = draw(st.sampled_from(_UNARY))
                if name == "exp" and b > EXP_MAX:
                    name = "tanh"
                use(v)
                out = fns[name](v)
                ob = _SQUASH.get(name, math.exp(b) if name == "exp" else b)
            elif op == "slice":
                if w < 2:
                    continue
                lo = draw(st.integers(0, w - 1))
                hi = draw(st.integers(lo + 1, w))
                out, ob = use(v)[:, lo:hi], b
            elif op == "overlap":
                # two products by overlapping column ranges of one parameter
                m, o = draw(width), draw(st.integers(1, 2))
                o = min(o, m)
                W = new_param((w, 2 * m - o), static_ok=False)
                same = [(u, ub) for u, ub in pool if u.shape[-1] == w]
                u, ub = same[draw(st.integers(0, len(same) - 1))]
                use(v)
                use(u)
                out = tanh(v @ W[:, :m]) * sigmoid(u @ W[:, m - o:])
                ob = 1.0
            elif op == "fanout":
                # a value of the input alone read by several ops (inside the hoisted region)
                hoisted = [(u, ub) for u, ub in pool if input_only(u)]
                u, ub = hoisted[draw(st.integers(0, len(hoisted) - 1))]
                use(u)
                name = draw(st.sampled_from(["tanh", "sigmoid", "neg", "relu", "exp"]))
                if name == "exp" and ub > EXP_MAX:
                    name = "tanh"
                first = fns[name](u)
                second = u * draw(st.sampled_from([0.5, -1.0]))
                out = first + second
                ob = _SQUASH.get(name, math.exp(ub) if name == "exp" else ub) + ub
                if draw(st.booleans()):  # and one more reader, per step
                    out = out * use(v) if v.shape[-1] == u.shape[-1] else out
                    ob = ob * b if v.shape[-1] == u.shape[-1] else ob
            elif op in _LITERATURE_DRAWS:
                drawn = _LITERATURE_DRAWS[op](draw, c, v, b, pool, use, new_param, input_only)
                if drawn is None:
                    continue
                out, ob = drawn
            else:  # concat
                j = draw(st.integers(0, len(pool) - 1))
                u, ub = pool[j]
                if u.shape[-1] + w > 2 * max_width:
                    continue
                out, ob = concat([use(v), use(u)]), max(b, ub)
            if ob > VALUE_MAX:
                # too large to stay finite through exp and time: squash it
                out, ob = tanh(out), 1.0
            add(out, ob)

        # Optionally a separate output (may be hoisted: it need not depend on a state).
        output = None
        if draw(st.booleans()):
            v, b = pool[draw(st.integers(0, len(pool) - 1))]
            output = use(v)  # may be a state: the output is then the state before the step
            tail = draw(st.sampled_from(["none", "tanh", "head", "gate"]))
            if tail == "tanh":
                output = tanh(output)
            elif tail == "head":  # ops and a parameter that only the output reads
                output = tanh(output @ new_param((output.shape[-1], draw(width)), static_ok=False))
            elif tail == "gate":
                output = sigmoid(output) * tanh(output)

        # Fold every value nothing reads yet into the state updates, so that the
        # input and every parameter reach an update.
        rest = [v for k, v in dangling.items()]
        folded = states
        if shift:
            dst = draw(st.integers(0, n_states - 1))
            c.update(**{f"s{dst}": states[(dst + 1) % n_states]})
            folded = [s for i, s in enumerate(states) if i != dst]
        for si, s in enumerate(folded):
            mine = rest[si::len(folded)] or [pool[draw(st.integers(0, len(pool) - 1))][0]]
            h = s.shape[-1]
            acc = None
            for v in mine:
                term = v if v.shape[-1] == h and draw(st.booleans()) else v @ new_param((v.shape[-1], h))
                acc = term if acc is None else acc + term
            squash = draw(st.sampled_from(["tanh", "sigmoid", "gru"]))
            if squash == "gru":  # convex mix with the old state, as gated cells do
                z = sigmoid(acc)
                nxt = (1 - z) * s + z * tanh(acc)
            else:
                nxt = fns[squash](acc)
            c.update(**{s.label: nxt})
        if output is not None:
            c.output(output)
        return c.build()
    return build()
