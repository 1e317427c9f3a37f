"""Declaring cells: symbolic values with operators, ``CellBuilder`` and ``Cell``.

A cell is a networkx DiGraph. Every node carries ``kind`` (input, state, param,
const or op), ``shape`` (first entry ``"N"`` for per-example values), ``label``
(a short readable expression such as ``Wh[:, 4:8]``, or the name the user gave
the value) and, for ops, ``op`` (a primitive instance) and ``args`` (the ordered
input node ids; the edges hold the same information without order). A value
named with ``CellBuilder.named`` (or a ``name=`` keyword) also carries ``vname``
and keeps its expression in ``expr``. Shapes are checked as each value is made.

Shapes below are written with ``N`` for the batch (unknown until run time),
``D`` for the input size and ``H`` for a state's size.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType

import networkx as nx
import numpy as np

from . import backend
from .primitives import N, PRIMITIVES, GraphError, fmt_shape

LABEL_MAX = 40


def _cap(label: str) -> str:
    return label if len(label) <= LABEL_MAX else label[: LABEL_MAX - 1] + "…"


class Value:
    """A symbolic value inside a cell being built: an input, a state, a parameter,
    a constant, or the result of a primitive applied to other values.

    Values combine with Python operators, each one primitive, with shapes
    checked at once (a ``GraphError`` names the node and the shapes):

    - ``a @ W``: matmul, (N, D) @ (D, H) -> (N, H); W must be 2-D and not per-example;
    - ``a + b``, ``a - b``, ``a * b``: elementwise, numpy broadcasting
      ((N, H) + (H,) adds a bias row); a Python number on either side is a constant;
    - ``-a``, ``a / 2.0`` (division by a Python number only);
    - ``a[:, i:j]`` (``b[i:j]`` on 1-D values): columns i..j-1 of the last axis.

    >>> c = gr.CellBuilder("demo")
    >>> x, h = c.input("x", 3), c.state("h", 4)
    >>> W = c.param("W", (3, 8))
    >>> (x @ W)[:, 4:] + 1.0
    <Value (x @ W)[:, 4:8] + 1 (N, 4)>
    """

    __slots__ = ("builder", "node")
    __array_priority__ = 1000  # so that numpy scalars on the left defer to us

    def __init__(self, builder: "CellBuilder", node: int):
        self.builder, self.node = builder, node

    @property
    def shape(self):
        """The shape, with ``"N"`` first for per-example values.

        >>> c = gr.CellBuilder("demo")
        >>> c.input("x", 3).shape, c.param("W", (3, 4)).shape
        (('N', 3), (3, 4))
        """
        return self.builder.graph.nodes[self.node]["shape"]

    @property
    def label(self):
        """A short readable form: the value's name, or the expression that made it.

        >>> c = gr.CellBuilder("demo")
        >>> x, W = c.input("x", 3), c.param("W", (3, 4))
        >>> (x @ W).label, gr.tanh(x @ W, name="a").label
        ('x @ W', 'a')
        """
        return self.builder.graph.nodes[self.node]["label"]

    def __repr__(self):
        return f"<Value {self.label} {fmt_shape(self.shape)}>"

    def __matmul__(self, other):
        return _op("matmul", self, other)

    def __rmatmul__(self, other):
        return _op("matmul", other, self)

    def __add__(self, other):
        return _op("add", self, other)

    def __radd__(self, other):
        return _op("add", other, self)

    def __sub__(self, other):
        return _op("sub", self, other)

    def __rsub__(self, other):
        return _op("sub", other, self)

    def __mul__(self, other):
        return _op("mul", self, other)

    def __rmul__(self, other):
        return _op("mul", other, self)

    def __neg__(self):
        return _op("neg", self)

    def __truediv__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            if other == 0:
                raise GraphError(f"cell {self.builder.cell_name!r}: {self.label} / 0: division by zero")
            return _op("mul", self, 1.0 / other)
        return _op("div", self, other)

    def __rtruediv__(self, other):
        return _op("div", other, self)

    def __pow__(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise GraphError(f"cell {self.builder.cell_name!r}: {self.label} ** {_what(k)}: the exponent "
                             "must be a Python number (for a value exponent use gr.exp(b * gr.log(a)))")
        return _op("pow", self, attrs=(k,))

    def __rpow__(self, base):
        raise GraphError(f"cell {self.builder.cell_name!r}: {base!r} ** {self.label}: a value as exponent "
                         "is written gr.exp(v * math.log(base))")

    def __mod__(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise GraphError(f"cell {self.builder.cell_name!r}: {self.label} % {_what(k)}: the divisor "
                             "must be a Python number")
        return _op("mod", self, attrs=(k,))

    def __abs__(self):
        return _op("abs", self)

    def __gt__(self, other):
        return _op("gt", self, other)

    def __lt__(self, other):
        return _op("lt", self, other)

    def __ge__(self, other):
        return _op("ge", self, other)

    def __le__(self, other):
        return _op("le", self, other)

    __hash__ = object.__hash__  # values stay usable as dict keys (== is identity)

    @property
    def T(self):
        """The transpose of a 2-D value of parameters or constants (``W - W.T``),
        computed once per call like every static node.

        >>> W = gr.CellBuilder("demo").param("W", (3, 3))
        >>> W - W.T
        <Value W - W.T (3, 3)>
        """
        return _op("transpose", self)

    def sum(self, axis=-1, keepdims=True):
        """The sum over the last axis, as a column: (N, H) -> (N, 1), (H,) -> (1,);
        it broadcasts back in expressions (``v - v.mean()``).

        >>> c = gr.CellBuilder("demo")
        >>> c.input("x", 3).sum(axis=-1, keepdims=True), c.param("b", 4).sum()
        (<Value x.sum(-1) (N, 1)>, <Value b.sum(-1) (1,)>)
        """
        self._check_reduction("sum", axis, keepdims)
        return _op("sum", self)

    def mean(self, axis=-1, keepdims=True):
        """The mean over the last axis, as a column (see ``sum``): a layer norm is
        ``(a - m) / gr.sqrt(((a - m) ** 2).mean(axis=-1, keepdims=True) + eps)``.

        >>> x = gr.CellBuilder("demo").input("x", 3)
        >>> x - x.mean(axis=-1, keepdims=True)
        <Value x - x.mean(-1) (N, 3)>
        """
        self._check_reduction("mean", axis, keepdims)
        return _op("mean", self)

    def _check_reduction(self, what, axis, keepdims):
        where = f"cell {self.builder.cell_name!r}: {self.label}.{what}"
        if axis not in (-1, len(self.shape) - 1):
            raise GraphError(f"{where}(axis={axis!r}): only the last axis (axis=-1) is reduced")
        if keepdims is not True:
            raise GraphError(f"{where}(keepdims={keepdims!r}): the result keeps its axis "
                             "(keepdims=True), so that it broadcasts against the value")

    def __getitem__(self, key):
        where = f"cell {self.builder.cell_name!r}, slice of {self.label} {fmt_shape(self.shape)}"
        start, stop = _last_axis_slice(key, self.shape, where)
        return _op("slice", self, attrs=(start, stop))

    def __bool__(self):
        raise GraphError(f"cell {self.builder.cell_name!r}: {self.label}: a symbolic value has no truth value "
                         "(use a mask: gr.where(a > b, x, y), or gr.maximum / gr.relu, "
                         "instead of Python if/else)")

    def __iter__(self):
        raise GraphError(f"cell {self.builder.cell_name!r}: {self.label}: a symbolic value cannot be "
                         "iterated; take columns with slices (v[:, i:j])")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        hint = _SPELLINGS.get(name)
        raise _Unsupported(f"cell {self.builder.cell_name!r}: {self.label}: a Value has no {name!r}"
                           + (f"; use {hint}" if hint else _SEE))

    # numpy functions called on values run the primitive (np.tanh(v)) or name the spelling
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _UFUNCS.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if fn is None:
            hint = _SPELLINGS.get(ufunc.__name__)
            raise GraphError(f"numpy's {ufunc.__name__} on a symbolic value ({self.label}) is not "
                             + (f"supported; use {hint}" if hint else "supported" + _SEE))
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        hint = _SPELLINGS.get(func.__name__)
        raise GraphError(f"numpy's {func.__name__} on a symbolic value ({self.label}) is not supported"
                         + (f"; use {hint}" if hint else _SEE))


class _Unsupported(GraphError, AttributeError):
    """An attribute a Value does not have: a GraphError, and an AttributeError for hasattr()."""


_SEE = " (see docs/cells.md for the operations a cell can use)"

# what a reader might reach for -> how a cell writes it
_SPELLINGS = {
    "maximum": "gr.maximum(a, b)", "fmax": "gr.maximum(a, b)", "minimum": "gr.minimum(a, b)",
    "fmin": "gr.minimum(a, b)", "clip": "gr.clip(v, lo, hi)", "where": "gr.where(mask, a, b)",
    "abs": "gr.abs(v) or abs(v)", "absolute": "gr.abs(v) or abs(v)", "sqrt": "gr.sqrt(v)",
    "log": "gr.log(v)", "exp": "gr.exp(v)", "tanh": "gr.tanh(v)", "sin": "gr.sin(v)", "cos": "gr.cos(v)",
    "floor": "gr.floor(v)", "mod": "v % k", "remainder": "v % k", "power": "v ** k",
    "square": "v ** 2", "sign": "v > 0 (a 0/1 mask) or v / abs(v)", "mean": "v.mean(axis=-1, keepdims=True)",
    "sum": "v.sum(axis=-1, keepdims=True)", "var": "((v - m) ** 2).mean(axis=-1, keepdims=True)",
    "std": "gr.sqrt(((v - m) ** 2).mean(axis=-1, keepdims=True))", "transpose": "v.T",
    "dot": "a @ b", "matmul": "a @ b", "concatenate": "gr.concat([a, b])", "reshape": "slices and gr.concat",
    "divide": "a / b", "true_divide": "a / b", "sigmoid": "gr.sigmoid(v)", "relu": "gr.relu(v)",
    "round": "a user primitive (docs/cells.md: a straight-through round)", "rint": "a user primitive",
    "softmax": "gr.exp(v - m) / gr.exp(v - m).sum(axis=-1, keepdims=True)",
    "logaddexp": "gr.log(gr.exp(a) + gr.exp(b))", "tan": "gr.sin(v) / gr.cos(v)",
    "greater": "a > b", "less": "a < b", "greater_equal": "a >= b", "less_equal": "a <= b",
    "equal": "a >= b and a <= b as masks: (a >= b) * (a <= b)",
}


def _what(k):
    return k.label if isinstance(k, Value) else repr(k)


def _fmt_key(key):
    """A subscript as the user wrote it: ``[:, 0:9]``, not ``(slice(None, None, None), ...)``."""
    def one(k):
        if k is Ellipsis:
            return "..."
        if not isinstance(k, slice):
            return repr(k)
        text = ("" if k.start is None else repr(k.start)) + ":" + ("" if k.stop is None else repr(k.stop))
        return text + ("" if k.step is None else ":" + repr(k.step))
    return "[" + ", ".join(one(k) for k in (key if isinstance(key, tuple) else (key,))) + "]"


def _bound(i, width, which, key, where):
    """One slice bound as a column index in [0, width]. numpy would clamp a bound
    past the end (``[:, 0:9]`` of 4 columns is ``[:, 0:4]``) and wrap a negative one;
    in a cell either is almost always a wrong size, so only -width..width is taken."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise GraphError(f"{where}: slice bounds must be integers, got {which} {i!r} in {key}")
    i = int(i)
    if not -width <= i <= width:
        raise GraphError(f"{where}: {which} {i} of {key} is outside the last axis, "
                         f"which has {width} columns (0..{width - 1}, or -{width}..-1 from the end)")
    return i + width if i < 0 else i


def _last_axis_slice(key, shape, where):
    """Accept a[:, i:j], a[..., i:j], and b[i:j] on 1-D values: a slice of the last axis,
    with bounds inside it, step 1 and at least one column."""
    text = _fmt_key(key)
    keys = key if isinstance(key, tuple) else (key,)
    if keys and keys[0] is Ellipsis:
        keys = (slice(None),) * (len(shape) - len(keys) + 1) + keys[1:]
    if len(keys) != len(shape) or not all(isinstance(k, slice) for k in keys):
        raise GraphError(f"{where}: only slices of the last axis are supported, like a[:, i:j]; "
                         f"got {text}")
    for k in keys[:-1]:
        if k != slice(None):
            raise GraphError(f"{where}: only the last axis may be sliced, got {text}")
    last = keys[-1]
    if last.step is not None and (isinstance(last.step, bool) or last.step != 1):
        raise GraphError(f"{where}: slices with a step are not supported, got {text}")
    width = shape[-1]
    start = 0 if last.start is None else _bound(last.start, width, "start", text, where)
    stop = width if last.stop is None else _bound(last.stop, width, "stop", text, where)
    if start >= stop:
        raise GraphError(f"{where}: {text} selects no columns (start {start} >= stop {stop})")
    return start, stop


def _fmt_slice(label, start, stop, ndim):
    lead = ":, " * (ndim - 1)
    lo = "" if start == 0 else str(start)
    return f"{label}[{lead}{lo}:{stop}]"


def precedence(attrs) -> int:
    """How tightly a node's label binds when it is an operand: a name binds fully.

    >>> c = gr.CellBuilder("demo")
    >>> x = c.input("x", 3)
    >>> [precedence(c.graph.nodes[v.node]) for v in (x, x + 1, x * 2, gr.tanh(x))]
    [9, 2, 3, 9]
    """
    op = attrs.get("op")
    return 9 if attrs.get("vname") or op is None else op.precedence


def _expr_label(op, args):
    """The label of ``op`` applied to ``args``: the primitive's own expression printer."""
    g = [a.builder.graph.nodes[a.node] for a in args]
    ndim = len(g[0]["shape"]) if g else 0
    return op.expression([x["label"] for x in g], [precedence(x) for x in g],
                         lambda lo, hi: _fmt_slice("", lo, hi, ndim))


def _op(name, *args, attrs=()):
    values = [a for a in args if isinstance(a, Value)]
    if not values:
        raise GraphError(f"{name}: needs at least one symbolic value")
    builder = values[0].builder
    for v in values:
        if v.builder is not builder:
            raise GraphError(f"{name}: {v.label} belongs to cell {v.builder.cell_name!r}, "
                             f"not {builder.cell_name!r}")
    args = [a if isinstance(a, Value) else builder.const(a) for a in args]
    return builder._add_op(name, args, attrs)


def _named(value, name):
    return value if name is None else value.builder.named(value, name)


def matmul(a, b, *, name=None):
    """``a @ b``: (N, D) @ (D, H) -> (N, H), or (D, H) @ (H, K) -> (D, K) for
    parameters. The right operand is 2-D and not per-example (a parameter, a
    slice of one, or a value computed from parameters only).

    Backward: ``da = dy bᵀ``, ``db = aᵀ dy`` (summed over the batch and, once
    unrolled, over time in one product after the loop).

    >>> c = gr.CellBuilder("demo")
    >>> x, W = c.input("x", 3), c.param("W", (3, 4))
    >>> gr.matmul(x, W, name="a")
    <Value a (N, 4)>
    """
    return _named(_op("matmul", a, b), name)


def sigmoid(x, *, name=None):
    """The logistic function 1 / (1 + e⁻ˣ), elementwise; the shape is kept.
    ``name`` names the result, as ``CellBuilder.named`` does (diagrams show it).

    Backward: ``dx = dy·y(1−y)``.

    >>> c = gr.CellBuilder("demo")
    >>> x, W = c.input("x", 3), c.param("W", (3, 4))
    >>> gr.sigmoid(x @ W, name="z")
    <Value z (N, 4)>
    """
    return _named(_op("sigmoid", x), name)


def tanh(x, *, name=None):
    """The hyperbolic tangent, elementwise; the shape is kept.

    Backward: ``dx = dy·(1−y²)``.

    >>> c = gr.CellBuilder("demo")
    >>> x, W = c.input("x", 3), c.param("W", (3, 4))
    >>> gr.tanh(x @ W)
    <Value tanh(x @ W) (N, 4)>
    """
    return _named(_op("tanh", x), name)


def relu(x, *, name=None):
    """max(x, 0), elementwise; the shape is kept.

    Backward: ``dx = dy·[y > 0]``.

    >>> c = gr.CellBuilder("demo")
    >>> gr.relu(c.input("x", 3) - 0.5)
    <Value relu(x - 0.5) (N, 3)>
    """
    return _named(_op("relu", x), name)


def exp(x, *, name=None):
    """eˣ, elementwise; the shape is kept. Keep x bounded: nothing guards overflow.

    Backward: ``dx = dy·y``.

    >>> c = gr.CellBuilder("demo")
    >>> gr.exp(-c.input("x", 3))
    <Value exp(-x) (N, 3)>
    """
    return _named(_op("exp", x), name)


def concat(values, axis=-1, *, name=None):
    """Join values along the last axis: (N, D) and (N, H) -> (N, D+H). The other
    axes must agree; only ``axis=-1`` (or its positive form) is supported.

    Backward: each part gets its own columns of ``dy``.

    >>> c = gr.CellBuilder("demo")
    >>> gr.concat([c.input("x", 3), c.state("h", 4)], name="xh")
    <Value xh (N, 7)>
    """
    values = list(values)
    if axis != -1:
        nd = len(values[0].shape) if values else 0
        if axis != nd - 1:
            raise GraphError(f"concat: only the last axis is supported, got axis={axis}")
    return _named(_op("concat", *values), name)


def _unary(opname, doc):
    def fn(x, *, name=None):
        return _named(_op(opname, x), name)
    fn.__name__ = fn.__qualname__ = opname
    fn.__doc__ = doc
    return fn


sqrt = _unary("sqrt", """√x, elementwise. Backward: ``dx = dy / (2y)``: infinite at x = 0
    (put an eps under it, as a layer norm does: ``gr.sqrt(var + 1e-5)``), nan below.

    >>> c = gr.CellBuilder("demo")
    >>> gr.sqrt(c.input("x", 3) ** 2 + 1.0)
    <Value sqrt(x ** 2 + 1) (N, 3)>
    """)
log = _unary("log", """ln x, elementwise. Backward: ``dx = dy / x`` (x = 0: -inf; x < 0: nan).

    >>> gr.log(gr.exp(gr.CellBuilder("demo").input("x", 3)))
    <Value log(exp(x)) (N, 3)>
    """)
abs = _unary("abs", """|x|, elementwise (also ``abs(v)``). Backward: ``dx = dy·sign(x)``, 0 at x = 0.

    >>> x = gr.CellBuilder("demo").input("x", 3)
    >>> x / (1 + abs(x))
    <Value x / (1 + abs(x)) (N, 3)>
    """)
sin = _unary("sin", """sin x, elementwise. Backward: ``dx = dy·cos x``.

    >>> gr.sin(gr.CellBuilder("demo").input("x", 3) * 2.0)
    <Value sin(x * 2) (N, 3)>
    """)
cos = _unary("cos", """cos x, elementwise. Backward: ``dx = −dy·sin x``.

    >>> gr.cos(gr.CellBuilder("demo").input("x", 3))
    <Value cos(x) (N, 3)>
    """)
floor = _unary("floor", """⌊x⌋, elementwise. Backward: ``dx = 0`` (flat between integers, 0 at the jumps).

    >>> x = gr.CellBuilder("demo").input("x", 3)
    >>> x - gr.floor(x), x % 1.0
    (<Value x - floor(x) (N, 3)>, <Value x % 1 (N, 3)>)
    """)


def maximum(a, b, *, name=None):
    """The larger of a and b, elementwise, broadcasting like ``+``; either may be a
    Python number. Backward: ``da = dy·[a ≥ b]``, ``db = dy·[a < b]`` (a tie's
    gradient goes to a).

    >>> c = gr.CellBuilder("demo")
    >>> gr.maximum(c.input("x", 3), 0.0)
    <Value maximum(x, 0) (N, 3)>
    """
    return _named(_op("maximum", a, b), name)


def minimum(a, b, *, name=None):
    """The smaller of a and b, elementwise (see ``maximum``; a tie's gradient goes to a).

    >>> gr.minimum(1.0, gr.CellBuilder("demo").input("x", 3))
    <Value minimum(1, x) (N, 3)>
    """
    return _named(_op("minimum", a, b), name)


def clip(v, lo, hi, *, name=None):
    """v limited to [lo, hi]: ``minimum(maximum(v, lo), hi)``; the gradient is dy
    inside and 0 outside (at a bound, dy: the tie goes to v).

    >>> gr.clip(gr.CellBuilder("demo").input("x", 3), -1.0, 1.0)
    <Value minimum(maximum(x, -1), 1) (N, 3)>
    """
    return _named(minimum(maximum(v, lo), hi), name)


def where(mask, a, b, *, name=None):
    """a where mask > 0, else b, elementwise with broadcasting (a mask is the
    0/1 value a comparison gives: ``gr.where(x > 0, x, 0.1 * x)``). The mask
    gets no gradient; ``da = dy·[m > 0]``, ``db = dy·[m ≤ 0]``.

    >>> c = gr.CellBuilder("demo")
    >>> x = c.input("x", 3)
    >>> gr.where(x > 0, x, 0.1 * x)
    <Value where(x > 0, x, 0.1 * x) (N, 3)>
    """
    return _named(_op("where", mask, a, b), name)


def register_primitive(cls):
    """Add a user's primitive to the table and return the function that applies it.

    ``cls`` subclasses ``gr.Primitive`` (or ``gr.Elementwise``) and declares
    ``name``, ``arity``, ``shape`` (Elementwise: the input's), ``forward``,
    ``backward``, ``saves`` and ``rule`` exactly as the built-in ones do (and
    ``surrogate``: inputs whose gradient is deliberately not the derivative).
    Check it with ``graphrnn.testing.check_primitive(cls, shapes)``; the
    diagrams draw it with its name and rule. Registering a name twice, a
    wrong arity or a backward that returns wrong shapes is a ``GraphError``.

    >>> class Cube(gr.Elementwise):
    ...     "y = x^3;  dx = dy * 3x^2"
    ...     name, rule, saves = "cube_doc", ("dx = dy·3x²",), (0,)
    ...     def forward(self, xp, x, out=None):
    ...         return xp.multiply(x * x, x, out=out)
    ...     def backward(self, xp, dy, xs, y, needs):
    ...         return (3 * dy * xs[0] * xs[0],)
    >>> cube = gr.register_primitive(Cube)
    >>> cube(gr.CellBuilder("demo").input("x", 2))
    <Value cube_doc(x) (N, 2)>
    """
    from .primitives import register
    register(cls)
    opname = cls.name

    def apply(*values, name=None):
        return _named(_op(opname, *values), name)
    apply.__name__ = apply.__qualname__ = opname
    apply.__doc__ = cls.__doc__
    return apply


def _power(a, k):
    if isinstance(a, Value):
        return a ** k
    raise GraphError(f"numpy's power with a symbolic exponent ({_what(k)}) is not supported; "
                     "write gr.exp(v * math.log(base))")


# numpy ufunc name -> what it runs on values
_UFUNCS = {
    "add": lambda a, b: _op("add", a, b), "subtract": lambda a, b: _op("sub", a, b),
    "multiply": lambda a, b: _op("mul", a, b), "divide": lambda a, b: _op("div", a, b),
    "true_divide": lambda a, b: _op("div", a, b), "negative": lambda a: _op("neg", a),
    "matmul": lambda a, b: _op("matmul", a, b), "power": _power,
    "tanh": tanh, "exp": exp, "log": log, "sqrt": sqrt, "absolute": abs, "sin": sin, "cos": cos,
    "floor": floor, "maximum": maximum, "minimum": minimum,
    "greater": lambda a, b: _op("gt", a, b), "less": lambda a, b: _op("lt", a, b),
    "greater_equal": lambda a, b: _op("ge", a, b), "less_equal": lambda a, b: _op("le", a, b),
}


_INIT_RE = re.compile(r"^\s*(uniform|normal)\s*\(([^)]*)\)\s*$")


def init_array(spec, shape, rng: np.random.Generator, fan_in: int, dtype):
    """Draw a parameter's initial value of ``shape`` from its ``init`` spec, on the host.

    ``spec`` is ``"zeros"``, ``"ones"``, ``"uniform"`` (±1/√fan_in, PyTorch's
    default for recurrent layers), ``"xavier"``, ``"uniform(a, b)"``,
    ``"normal(std)"``, ``"normal(mean, std)"`` or a callable ``(rng, shape) -> array``.

    >>> init_array("uniform(-0.1, 0.1)", (2, 3), np.random.default_rng(0), 2, np.float64).shape
    (2, 3)
    >>> init_array("ones", (2,), None, 2, np.float32)
    array([1., 1.], dtype=float32)
    """
    if callable(spec):
        a = np.asarray(spec(rng, shape), dtype=np.float64)
        if a.shape != tuple(shape):
            raise GraphError(f"init callable returned shape {a.shape}, expected {tuple(shape)}")
        return a.astype(dtype)
    if spec == "zeros":
        return np.zeros(shape, dtype)
    if spec == "ones":
        return np.ones(shape, dtype)
    if spec == "uniform":  # PyTorch's default for recurrent layers
        k = 1.0 / math.sqrt(max(fan_in, 1))
        return rng.uniform(-k, k, shape).astype(dtype)
    if spec == "xavier":
        fan_out = shape[-1] if shape else 1
        k = math.sqrt(6.0 / max(fan_in + fan_out, 1))
        return rng.uniform(-k, k, shape).astype(dtype)
    m = _INIT_RE.match(spec) if isinstance(spec, str) else None
    if m:
        nums = [float(t) for t in m.group(2).split(",") if t.strip()]
        if m.group(1) == "uniform" and len(nums) == 2:
            return rng.uniform(nums[0], nums[1], shape).astype(dtype)
        if m.group(1) == "normal" and len(nums) in (1, 2):
            mean, std = (0.0, nums[0]) if len(nums) == 1 else nums
            return rng.normal(mean, std, shape).astype(dtype)
    raise GraphError(f"unknown init {spec!r}: use 'zeros', 'ones', 'uniform', 'xavier', "
                     "'uniform(a, b)', 'normal(std)', 'normal(mean, std)' or a callable (rng, shape)")


class CellBuilder:
    """Declare a cell: one input, its states and parameters, then the next value
    of every state; ``build()`` checks the whole and returns a ``Cell``.

    Per step the input is (N, D) and each state (N, H); the engine unrolls the
    cell over (N, T, D) sequences. Values are made with operators
    (``x @ W + b``, slices ``a[:, :H]``) and the functions ``gr.sigmoid``,
    ``gr.tanh``, ``gr.relu``, ``gr.exp``, ``gr.concat``, ``gr.matmul``. The
    cell's name is ``cell_name``.

    >>> c = gr.CellBuilder("elman")
    >>> x, h = c.input("x", 3), c.state("h", 4)
    >>> Wx, Wh = c.param("Wx", (3, 4)), c.param("Wh", (4, 4))
    >>> b = c.param("b", 4, init="zeros")
    >>> c.update(h=gr.tanh(x @ Wx + b + h @ Wh))
    >>> c.build()
    <Cell 'elman': input x(3), states h(4), params Wx(3, 4), Wh(4, 4), b(4,)>
    """

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise GraphError(f"a cell's name must be a non-empty string, got {name!r}")
        self.cell_name = name
        self.graph = nx.DiGraph(name=name)
        self._names: dict[str, int] = {}  # every name in use: leaves and named values
        self._input = None
        self._states: dict[str, int] = {}
        self._params: dict[str, int] = {}
        self._updates: dict[str, int] = {}
        self._output = None
        self._counter = 0
        self._built = False

    # -- leaves
    def _leaf(self, kind, name, shape, **extra):
        if self._built:
            raise GraphError(f"cell {self.cell_name!r} is already built")
        if not isinstance(name, str) or not name.isidentifier():
            raise GraphError(f"{kind} name {name!r} must be a Python identifier")
        if name in self._names:
            raise GraphError(f"cell {self.cell_name!r}: the name {name!r} is already used")
        for d in shape:
            if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d <= 0:
                raise GraphError(f"{kind} {name!r}: sizes must be positive integers, got {shape!r}")
        node = self._new_node(kind=kind, name=name, shape=tuple(shape), label=name, **extra)
        self._names[name] = node
        return Value(self, node)

    def _new_node(self, **attrs):
        node = self._counter
        self._counter += 1
        self.graph.add_node(node, **attrs)
        return node

    def input(self, name: str, size: int) -> Value:
        """The cell's input, (N, size) per step (one per cell: concatenate features
        into one input). Runs feed it ``xs`` of shape (N, T, size).

        >>> c = gr.CellBuilder("demo")
        >>> c.input("x", 3)
        <Value x (N, 3)>
        """
        if self._input is not None:
            raise GraphError(f"cell {self.cell_name!r}: only one input per cell is supported "
                             "(concatenate features into one input instead)")
        v = self._leaf("input", name, (size,))
        self.graph.nodes[v.node]["shape"] = (N, int(size))
        self._input = v.node
        return v

    def state(self, name: str, size: int) -> Value:
        """A state carried from step to step, (N, size): the value here is the
        previous step's (or ``state0``, zeros by default); ``update`` gives the next.
        The first state declared is the cell's output unless ``output`` says otherwise.

        >>> c = gr.CellBuilder("demo")
        >>> c.state("h", 4)
        <Value h (N, 4)>
        """
        v = self._leaf("state", name, (size,))
        self.graph.nodes[v.node]["shape"] = (N, int(size))
        self._states[name] = v.node
        return v

    def param(self, name: str, shape, init="uniform") -> Value:
        """A trainable parameter of ``shape``: an int (a bias row, (size,)) or a
        tuple of one or two sizes, e.g. (D, 3H). The same array serves every
        step and every example. ``init`` is how ``Cell.init_params`` draws it:
        ``"uniform"`` (±1/√fan_in, the default), ``"zeros"``, ``"ones"``,
        ``"xavier"``, ``"uniform(a, b)"``, ``"normal(std)"``,
        ``"normal(mean, std)"`` or a callable ``(rng, shape) -> array``.

        >>> c = gr.CellBuilder("demo")
        >>> c.param("Wx", (3, 12)), c.param("b", 12, init="zeros")
        (<Value Wx (3, 12)>, <Value b (12,)>)
        """
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        elif isinstance(shape, (tuple, list)):
            shape = tuple(shape)
        else:
            raise GraphError(f"param {name!r}: shape must be an int or a tuple of sizes, got {shape!r}")
        if not 1 <= len(shape) <= 2:
            raise GraphError(f"param {name!r}: shape must be 1-D or 2-D, got {shape!r}")
        if not (callable(init) or isinstance(init, str)):
            raise GraphError(f"param {name!r}: init must be a string or a callable, got {init!r}")
        v = self._leaf("param", name, shape, init=init)
        self._params[name] = v.node
        return v

    def const(self, value, name=None) -> Value:
        """A constant: a Python number (shape ()), or an array of 1 or 2 axes that
        is not trained (a permutation, a DFT matrix), usable wherever a parameter
        is, the right operand of ``@`` included. Python numbers in expressions
        become constants by themselves (``1 - z``). ``name`` labels an array.

        >>> c = gr.CellBuilder("demo")
        >>> c.const(0.5), c.const(np.eye(3), name="P")
        (<Value 0.5 ()>, <Value P (3, 3)>)
        """
        if isinstance(value, Value):
            raise GraphError(f"cell {self.cell_name!r}: {value.label} is already a value of the cell")
        if isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "__array__"):
            try:
                a = np.array(value, dtype=np.float64)  # an own copy: later edits of theirs change nothing
            except (TypeError, ValueError):
                raise GraphError(f"cell {self.cell_name!r}: cannot make a constant of {type(value).__name__}; "
                                 "use an array of numbers") from None
            if a.ndim == 0:
                value = float(a)
            else:
                return self._const_array(a, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise GraphError(f"cell {self.cell_name!r}: cannot use {value!r} ({type(value).__name__}) "
                             "in a cell; only symbolic values, Python numbers and arrays (c.const)")
        value = float(value)
        if not math.isfinite(value):
            raise GraphError(f"cell {self.cell_name!r}: the constant {value} is not finite")
        node = self._new_node(kind="const", name=None, shape=(), label=f"{value:g}", value=value)
        return Value(self, node)

    def _const_array(self, a, name):
        if a.ndim > 2 or 0 in a.shape:
            raise GraphError(f"cell {self.cell_name!r}: a constant array must have 1 or 2 non-empty "
                             f"axes, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise GraphError(f"cell {self.cell_name!r}: the constant array {fmt_shape(a.shape)} holds inf or nan")
        if name is not None and (not isinstance(name, str) or not name.isidentifier() or name in self._names):
            raise GraphError(f"cell {self.cell_name!r}: constant name {name!r} must be a new identifier")
        a.setflags(write=False)
        node = self._new_node(kind="const", name=name, shape=a.shape,
                              label=name or f"const{fmt_shape(a.shape)}", value=a)
        if name:
            self._names[name] = node
        return Value(self, node)

    # -- ops
    def _add_op(self, name, args, attrs):
        if self._built:
            raise GraphError(f"cell {self.cell_name!r} is already built")
        cls = PRIMITIVES.get(name)
        if cls is None:
            raise GraphError(f"cell {self.cell_name!r}: no primitive named {name!r} is registered")
        if cls.arity is not None and len(args) != cls.arity:
            raise GraphError(f"cell {self.cell_name!r}: {name} takes {cls.arity} value"
                             f"{'s' if cls.arity != 1 else ''}, got {len(args)}")
        op = cls(*attrs)
        label = _cap(_expr_label(op, args))
        where = f"cell {self.cell_name!r}, {name} node ({label})"
        shape = op.check(where, *[a.shape for a in args])
        node = self._new_node(kind="op", name=None, opname=name, op=op,
                              args=tuple(a.node for a in args), shape=shape, label=label)
        for a in args:
            self.graph.add_edge(a.node, node)
        return Value(self, node)

    def named(self, value, name: str) -> Value:
        """Give ``value`` a name the reader knows (``"z"``, ``"h~"``, ``"c'"``) and
        return it. Diagrams label the value and the gradient that flows into it
        by this name (``dL/dz``), and expressions and errors read it
        (``(1 - z) * h``). A name is unique within the cell and has no spaces;
        inputs, states and parameters already have theirs. The functions take
        the same as a keyword: ``gr.sigmoid(a, name="z")``.

        >>> c = gr.CellBuilder("demo")
        >>> x, h, W = c.input("x", 3), c.state("h", 4), c.param("W", (3, 4))
        >>> z = c.named(gr.sigmoid(x @ W), "z")
        >>> (1 - z) * h
        <Value (1 - z) * h (N, 4)>

        (``Cell.name`` is the cell's name, a string; this was ``c.name(value,
        name)`` before, which still works.)
        """
        value = self._own(value, f"name {name!r}")
        if self._built:
            raise GraphError(f"cell {self.cell_name!r} is already built")
        if not isinstance(name, str) or not name or len(name) > 16 or any(ch.isspace() for ch in name):
            raise GraphError(f"cell {self.cell_name!r}: a value's name must be 1-16 characters "
                             f"without spaces, got {name!r}")
        a = self.graph.nodes[value.node]
        if a["kind"] != "op":
            what = {"input": "an input", "state": "a state", "param": "a parameter"}.get(a["kind"], "a constant")
            raise GraphError(f"cell {self.cell_name!r}: {value.label} is {what}"
                             + (f" and is already named {a['name']!r}" if a.get("name") else "")
                             + f"; only computed values take a name (cannot name it {name!r})")
        if a.get("vname"):
            raise GraphError(f"cell {self.cell_name!r}: this value is already named {a['vname']!r} "
                             f"(cannot name it {name!r} too)")
        if name in self._names:
            raise GraphError(f"cell {self.cell_name!r}: the name {name!r} is already used")
        self._names[name] = value.node
        a.update(vname=name, expr=a["label"], label=name)
        return value

    def name(self, value, name: str) -> Value:
        """The former spelling of ``named`` (kept for existing callers): ``c.name(v, "z")``.

        >>> c = gr.CellBuilder("demo")
        >>> c.name(gr.tanh(c.input("x", 3)), "a")
        <Value a (N, 3)>
        """
        return self.named(value, name)

    # -- wiring
    def update(self, **states):
        """The next value of each named state, e.g. ``c.update(h=h_new, c=c_new)``.
        Each value has the state's shape, (N, H); it may read any state's old
        value, or none (``h' = tanh(x W)`` is a valid cell). Every state is updated once.

        >>> c = gr.CellBuilder("demo")
        >>> x, h = c.input("x", 3), c.state("h", 3)
        >>> c.update(h=gr.tanh(x + h))
        """
        for name, value in states.items():
            if name not in self._states:
                known = ", ".join(self._states) or "none"
                raise GraphError(f"cell {self.cell_name!r}: update of unknown state {name!r} "
                                 f"(declared states: {known})")
            if name in self._updates:
                raise GraphError(f"cell {self.cell_name!r}: state {name!r} is updated twice")
            value = self._own(value, f"update of state {name!r}")
            want = self.graph.nodes[self._states[name]]["shape"]
            if value.shape != want:
                raise GraphError(f"cell {self.cell_name!r}: update of state {name!r} has shape "
                                 f"{fmt_shape(value.shape)} ({value.label}), the state is {fmt_shape(want)}")
            self._updates[name] = value.node

    def output(self, value):
        """What the cell emits at each step, (N, size): ``run.hs`` stacks it to
        (N, T, size). Optional; by default the next value of the first state.

        >>> c = gr.CellBuilder("demo")
        >>> x, h, V = c.input("x", 3), c.state("h", 4), c.param("V", (4, 2))
        >>> c.update(h=gr.tanh(x @ c.param("W", (3, 4)) + h))
        >>> c.output(h @ V)
        >>> c.build().output_size
        2
        """
        value = self._own(value, "output")
        if len(value.shape) != 2 or value.shape[0] != N:
            raise GraphError(f"cell {self.cell_name!r}: the output must be (N, size), got "
                             f"{fmt_shape(value.shape)} ({value.label})")
        self._output = value.node

    def _own(self, value, what):
        if not isinstance(value, Value) or value.builder is not self:
            raise GraphError(f"cell {self.cell_name!r}: {what} must be a value of this cell, got {value!r}")
        return value

    def build(self) -> "Cell":
        """Check the declaration as a whole and return the immutable ``Cell``.

        Refused with a ``GraphError`` naming what is wrong: no input, no state,
        a state never updated, a parameter or the input that nothing reaches.
        Values that nothing reads are dropped. After ``build`` the builder
        takes no more declarations.

        >>> c = gr.CellBuilder("demo")
        >>> x, h = c.input("x", 3), c.state("h", 3)
        >>> c.update(h=gr.tanh(x + h))
        >>> c.build()
        <Cell 'demo': input x(3), states h(3), params none>
        """
        if self._input is None:
            raise GraphError(f"cell {self.cell_name!r}: declare an input with c.input(name, size)")
        if not self._states:
            raise GraphError(f"cell {self.cell_name!r}: declare at least one state with c.state(name, size)")
        missing = [s for s in self._states if s not in self._updates]
        if missing:
            raise GraphError(f"cell {self.cell_name!r}: state {', '.join(map(repr, missing))} is never "
                             "updated; call c.update(name=value)")
        out = self._output if self._output is not None else self._updates[next(iter(self._states))]
        # Everything that the updates and the output do not reach is dead code.
        # States stay even when no update reads them (h' = tanh(x W)): the engine
        # still carries them, and their initial value then gets a zero gradient.
        live = set(self._states.values())
        for node in [out, *self._updates.values()]:
            live |= nx.ancestors(self.graph, node) | {node}
        for name, node in self._params.items():
            if node not in live:
                raise GraphError(f"cell {self.cell_name!r}: parameter {name!r} "
                                 f"{fmt_shape(self.graph.nodes[node]['shape'])} is never used")
        if self._input not in live:
            raise GraphError(f"cell {self.cell_name!r}: input "
                             f"{self.graph.nodes[self._input]['name']!r} is never used")
        dead = [n for n in self.graph.nodes if n not in live]
        graph = self.graph.copy()
        graph.remove_nodes_from(dead)
        self._built = True
        return Cell(self.cell_name, graph, self._input, dict(self._states), dict(self._params),
                    dict(self._updates), out)


class Cell:
    """An immutable recurrent cell: a graph of primitives plus its wiring, made by
    ``CellBuilder.build()`` (or a factory such as ``gr.cells.gru``).

    ``graph`` is a frozen networkx DiGraph (node attributes: graph.py's
    docstring); ``states``, ``params`` and ``updates`` map names to its nodes, in
    declaration order. Run it with ``gr.unroll(cell, params, xs)``, draw it
    with ``gr.render(cell)``.

    >>> cell = gr.cells.gru(3, 4)
    >>> cell.input_size, cell.hidden_size, cell.param_shapes()
    (3, 4, {'Wx': (3, 12), 'Wh': (4, 12), 'b': (12,)})
    """

    def __init__(self, name, graph, input_node, states, params, updates, output):
        self.name = name
        self.graph = nx.freeze(graph)
        self.input_node = input_node
        self.states = MappingProxyType(states)  # name -> node, in declaration order
        self.params = MappingProxyType(params)
        self.updates = MappingProxyType(updates)  # state name -> node of its next value
        self.output_node = output
        self._plan = None
        # a cell never changes: sizes are read from the graph once, not per run
        self._param_shapes = {name: self._shape(node) for name, node in params.items()}
        self._state_sizes = {name: self._shape(node)[1] for name, node in states.items()}
        self.input_size = self._shape(input_node)[1]

    # -- sizes
    def _shape(self, node):
        return self.graph.nodes[node]["shape"]

    @property
    def input_name(self):
        """The input's declared name.

        >>> gr.cells.rnn(3, 4).input_name
        'x'
        """
        return self.graph.nodes[self.input_node]["name"]

    @property
    def output_size(self) -> int:
        """The width of what the cell emits per step: ``run.hs`` is (N, T, output_size).

        >>> gr.cells.lstm(3, 4).output_size
        4
        """
        return self._shape(self.output_node)[1]

    @property
    def hidden_size(self) -> int:
        """The size of the first state declared (H).

        >>> gr.cells.lstm(3, 4).hidden_size
        4
        """
        return self._shape(next(iter(self.states.values())))[1]

    def state_sizes(self) -> dict:
        """State name -> size, in declaration order (each state is (N, size)).

        >>> gr.cells.lstm(3, 4).state_sizes()
        {'h': 4, 'c': 4}
        """
        return dict(self._state_sizes)

    def param_shapes(self) -> dict:
        """Parameter name -> shape, in declaration order.

        >>> gr.cells.rnn(3, 4).param_shapes()
        {'Wx': (3, 4), 'Wh': (4, 4), 'b': (4,)}
        """
        return dict(self._param_shapes)

    def topo_order(self):
        """The graph's node ids in a topological order, the same on every call
        (among the nodes ready next, the one declared first).

        >>> cell = gr.cells.rnn(3, 4)
        >>> [cell.graph.nodes[n].get("name") or cell.graph.nodes[n]["opname"] for n in cell.topo_order()]
        ['x', 'h', 'Wx', 'Wh', 'matmul', 'b', 'add', 'matmul', 'add', 'tanh']
        """
        return list(nx.lexicographical_topological_sort(self.graph))

    def _repr_svg_(self):
        """Jupyter shows a cell as its diagram (``gr.render``); None without Graphviz."""
        from .render import svg_or_none
        return svg_or_none(self)

    def __repr__(self):
        ps = ", ".join(f"{k}{fmt_shape(v)}" for k, v in self.param_shapes().items()) or "none"
        ss = ", ".join(f"{k}({v})" for k, v in self.state_sizes().items())
        return (f"<Cell {self.name!r}: input {self.input_name}({self.input_size}), "
                f"states {ss}, params {ps}>")

    # -- parameters
    def init_params(self, seed=0, dtype=np.float64, init=None) -> dict:
        """Fresh parameters: a dict name -> array of the declared shape and
        ``dtype`` (float32 or float64), drawn on the host from ``seed`` and each
        param's ``init`` spec (or ``init`` for all of them), then moved to the
        backend in force (numpy, or cupy on a GPU).

        >>> params = gr.cells.gru(3, 4).init_params(seed=0, dtype=np.float32)
        >>> {k: (v.shape, str(v.dtype)) for k, v in params.items()}
        {'Wx': ((3, 12), 'float32'), 'Wh': ((4, 12), 'float32'), 'b': ((12,), 'float32')}
        """
        try:
            dtype = backend.check_float_dtype(dtype, f"cell {self.name!r}: init_params")
        except TypeError as exc:  # the one error class users catch for a bad cell or run
            raise GraphError(str(exc)) from None
        rng = np.random.default_rng(seed)
        out = {}
        for name, node in self.params.items():
            shape = self._shape(node)
            spec = init if init is not None else self.graph.nodes[node]["init"]
            fan_in = shape[0] if len(shape) == 2 else shape[0]
            if len(shape) == 1:  # a bias: fan-in of the layer it feeds
                fan_in = self.hidden_size
            out[name] = backend.asarray(init_array(spec, shape, rng, fan_in, dtype))
        return out

    def check_params(self, params: dict, dtype=None):
        """Refuse missing, extra, misshapen, non-array or mixed-dtype parameters, naming which.

        ``params`` maps each name of ``param_shapes()`` to a float32 or float64
        array of the backend in force (what ``init_params`` returns). Returns
        their common dtype (``dtype`` if given, which every one must have).

        >>> cell = gr.cells.rnn(2, 3)
        >>> cell.check_params(cell.init_params())
        dtype('float64')
        >>> cell.check_params({"Wx": [[0.0] * 3] * 2})
        Traceback (most recent call last):
        GraphError: cell 'rnn': parameters do not match: missing ['Wh', 'b'], unexpected none
        """
        if not isinstance(params, Mapping):
            raise GraphError(f"cell {self.name!r}: parameters must be a dict of name -> array, "
                             f"got {type(params).__name__}")
        shapes = self._param_shapes
        missing = [k for k in shapes if k not in params]
        extra = [k for k in params if k not in shapes]
        if missing or extra:
            raise GraphError(f"cell {self.name!r}: parameters do not match: "
                             f"missing {missing or 'none'}, unexpected {extra or 'none'}")
        for k, want in shapes.items():
            a = params[k]
            if not (hasattr(a, "shape") and hasattr(a, "dtype")):
                # The run goes on reading the caller's dict, so a list cannot be
                # converted here; say which entry it is instead of an AttributeError.
                raise GraphError(f"cell {self.name!r}: parameter {k!r} is a {type(a).__name__}, not an "
                                 f"array; pass np.asarray(...) of shape {fmt_shape(want)} "
                                 "(cell.init_params() makes them all)")
            got = tuple(a.shape)
            if got != want:
                raise GraphError(f"cell {self.name!r}: parameter {k!r} has shape {fmt_shape(got)}, "
                                 f"the cell declares {fmt_shape(want)}")
            if np.dtype(a.dtype) not in backend.FLOAT_DTYPES:
                raise GraphError(f"cell {self.name!r}: parameter {k!r} is {a.dtype}; "
                                 "parameters must be float32 or float64")
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype:
                raise GraphError(f"cell {self.name!r}: parameter {k!r} is {a.dtype} but the "
                                 f"run is {dtype}; convert all arrays to one dtype (no silent promotion)")
        return dtype
