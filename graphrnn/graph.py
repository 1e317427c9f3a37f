"""Declaring cells: symbolic values with operators, ``CellBuilder`` and ``Cell``.

A cell is a networkx DiGraph. Every node carries ``kind`` (input, state, param,
const or op), ``shape`` (first entry ``"N"`` for per-example values), ``label``
(a short readable expression such as ``Wh[:, 4:8]``, or the name the user gave
the value) and, for ops, ``op`` (a primitive instance) and ``args`` (the ordered
input node ids; the edges hold the same information without order). A value
named with ``CellBuilder.name`` (or a ``name=`` keyword) also carries ``vname``
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
        raise GraphError(f"cell {self.builder.cell_name!r}: {self.label}: only division by a "
                         "Python number is supported")

    def __getitem__(self, key):
        where = f"cell {self.builder.cell_name!r}, slice of {self.label} {fmt_shape(self.shape)}"
        start, stop = _last_axis_slice(key, self.shape, where)
        return _op("slice", self, attrs=(start, stop))

    def __bool__(self):
        raise GraphError(f"cell {self.builder.cell_name!r}: {self.label}: a symbolic value has no truth value "
                         "(use gr.relu or gates instead of Python if/else)")


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


_PREC = {"matmul": 3, "mul": 3, "add": 2, "sub": 2}


def _wrap(label, prec, mine):
    return f"({label})" if prec < mine else label


def _expr_label(name, args, attrs):
    g = [a.builder.graph.nodes[a.node] for a in args]
    labels = [x["label"] for x in g]
    precs = [9 if x.get("vname") else _PREC.get(x.get("opname"), 9) for x in g]
    if name == "matmul":
        return f"{_wrap(labels[0], precs[0], 3)} @ {_wrap(labels[1], precs[1], 4)}"
    if name in ("add", "sub", "mul"):
        sym = {"add": "+", "sub": "-", "mul": "*"}[name]
        mine = _PREC[name]
        right_mine = mine + (name == "sub")
        return f"{_wrap(labels[0], precs[0], mine)} {sym} {_wrap(labels[1], precs[1], right_mine)}"
    if name == "neg":
        return f"-{_wrap(labels[0], precs[0], 9)}"
    if name == "slice":
        return _fmt_slice(_wrap(labels[0], precs[0], 9), attrs[0], attrs[1], len(g[0]["shape"]))
    return f"{name}({', '.join(labels)})"


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
    return value if name is None else value.builder.name(value, name)


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
    ``name`` names the result, as ``CellBuilder.name`` does (diagrams show it).

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

    def const(self, value) -> Value:
        """A constant scalar, shape (). Python numbers in expressions become
        constants by themselves (``1 - z``); call this only to hold one apart.

        >>> gr.CellBuilder("demo").const(0.5)
        <Value 0.5 ()>
        """
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise GraphError(f"cell {self.cell_name!r}: cannot use {value!r} ({type(value).__name__}) "
                             "in a cell; only symbolic values and Python numbers")
        value = float(value)
        if not math.isfinite(value):
            raise GraphError(f"cell {self.cell_name!r}: the constant {value} is not finite")
        node = self._new_node(kind="const", name=None, shape=(), label=f"{value:g}", value=value)
        return Value(self, node)

    # -- ops
    def _add_op(self, name, args, attrs):
        if self._built:
            raise GraphError(f"cell {self.cell_name!r} is already built")
        op = PRIMITIVES[name](*attrs)
        label = _cap(_expr_label(name, args, attrs))
        where = f"cell {self.cell_name!r}, {name} node ({label})"
        shape = op.check(where, *[a.shape for a in args])
        node = self._new_node(kind="op", name=None, opname=name, op=op,
                              args=tuple(a.node for a in args), shape=shape, label=label)
        for a in args:
            self.graph.add_edge(a.node, node)
        return Value(self, node)

    def name(self, value, name: str) -> Value:
        """Give ``value`` a name the reader knows (``"z"``, ``"h~"``, ``"c'"``) and
        return it. Diagrams label the value and the gradient that flows into it
        by this name (``dL/dz``), and expressions and errors read it
        (``(1 - z) * h``). A name is unique within the cell and has no spaces;
        inputs, states and parameters already have theirs. The functions take
        the same as a keyword: ``gr.sigmoid(a, name="z")``.

        >>> c = gr.CellBuilder("demo")
        >>> x, h, W = c.input("x", 3), c.state("h", 4), c.param("W", (3, 4))
        >>> z = c.name(gr.sigmoid(x @ W), "z")
        >>> (1 - z) * h
        <Value (1 - z) * h (N, 4)>
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
