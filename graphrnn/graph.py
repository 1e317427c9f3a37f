"""Declaring cells: symbolic values with operators, ``CellBuilder`` and ``Cell``.

A cell is a networkx DiGraph. Every node carries ``kind`` (input, state, param,
const or op), ``shape`` (first entry ``"N"`` for per-example values), ``label``
(a short readable expression such as ``Wh[:, 4:8]``) and, for ops, ``op`` (a
primitive instance) and ``args`` (the ordered input node ids; the edges hold the
same information without order). Shapes are checked as each value is made.
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
    """A symbolic value inside a cell being built."""

    __slots__ = ("builder", "node")
    __array_priority__ = 1000  # so that numpy scalars on the left defer to us

    def __init__(self, builder: "CellBuilder", node: int):
        self.builder, self.node = builder, node

    @property
    def shape(self):
        return self.builder.graph.nodes[self.node]["shape"]

    @property
    def label(self):
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
            return _op("mul", self, 1.0 / other)
        raise GraphError(f"{self.label}: only division by a Python number is supported")

    def __getitem__(self, key):
        where = f"cell {self.builder.name!r}, slice of {self.label} {fmt_shape(self.shape)}"
        start, stop = _last_axis_slice(key, self.shape, where)
        return _op("slice", self, attrs=(start, stop))

    def __bool__(self):
        raise GraphError(f"{self.label}: a symbolic value has no truth value "
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
    precs = [_PREC.get(x.get("opname"), 9) for x in g]
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
            raise GraphError(f"{name}: {v.label} belongs to cell {v.builder.name!r}, "
                             f"not {builder.name!r}")
    args = [a if isinstance(a, Value) else builder.const(a) for a in args]
    return builder._add_op(name, args, attrs)


def matmul(a, b):
    return _op("matmul", a, b)


def sigmoid(x):
    return _op("sigmoid", x)


def tanh(x):
    return _op("tanh", x)


def relu(x):
    return _op("relu", x)


def exp(x):
    return _op("exp", x)


def concat(values, axis=-1):
    values = list(values)
    if axis != -1:
        nd = len(values[0].shape) if values else 0
        if axis != nd - 1:
            raise GraphError(f"concat: only the last axis is supported, got axis={axis}")
    return _op("concat", *values)


_INIT_RE = re.compile(r"^\s*(uniform|normal)\s*\(([^)]*)\)\s*$")


def init_array(spec, shape, rng: np.random.Generator, fan_in: int, dtype):
    """Draw a parameter's initial value from its ``init`` spec, on the host."""
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
    """Declare a cell: inputs, states, parameters, then the updates of the states."""

    def __init__(self, name: str):
        self.name = name
        self.graph = nx.DiGraph(name=name)
        self._names: dict[str, int] = {}
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
            raise GraphError(f"cell {self.name!r} is already built")
        if not isinstance(name, str) or not name.isidentifier():
            raise GraphError(f"{kind} name {name!r} must be a Python identifier")
        if name in self._names:
            raise GraphError(f"cell {self.name!r}: the name {name!r} is already used")
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
        if self._input is not None:
            raise GraphError(f"cell {self.name!r}: only one input per cell is supported "
                             "(concatenate features into one input instead)")
        v = self._leaf("input", name, (size,))
        self.graph.nodes[v.node]["shape"] = (N, int(size))
        self._input = v.node
        return v

    def state(self, name: str, size: int) -> Value:
        v = self._leaf("state", name, (size,))
        self.graph.nodes[v.node]["shape"] = (N, int(size))
        self._states[name] = v.node
        return v

    def param(self, name: str, shape, init="uniform") -> Value:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if not 1 <= len(shape) <= 2:
            raise GraphError(f"param {name!r}: shape must be 1-D or 2-D, got {shape!r}")
        if not (callable(init) or isinstance(init, str)):
            raise GraphError(f"param {name!r}: init must be a string or a callable, got {init!r}")
        v = self._leaf("param", name, shape, init=init)
        self._params[name] = v.node
        return v

    def const(self, value) -> Value:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise GraphError(f"cell {self.name!r}: cannot use {value!r} ({type(value).__name__}) "
                             "in a cell; only symbolic values and Python numbers")
        value = float(value)
        node = self._new_node(kind="const", name=None, shape=(), label=f"{value:g}", value=value)
        return Value(self, node)

    # -- ops
    def _add_op(self, name, args, attrs):
        if self._built:
            raise GraphError(f"cell {self.name!r} is already built")
        op = PRIMITIVES[name](*attrs)
        label = _cap(_expr_label(name, args, attrs))
        where = f"cell {self.name!r}, {name} node ({label})"
        shape = op.check(where, *[a.shape for a in args])
        node = self._new_node(kind="op", name=None, opname=name, op=op,
                              args=tuple(a.node for a in args), shape=shape, label=label)
        for a in args:
            self.graph.add_edge(a.node, node)
        return Value(self, node)

    # -- wiring
    def update(self, **states):
        for name, value in states.items():
            if name not in self._states:
                known = ", ".join(self._states) or "none"
                raise GraphError(f"cell {self.name!r}: update of unknown state {name!r} "
                                 f"(declared states: {known})")
            if name in self._updates:
                raise GraphError(f"cell {self.name!r}: state {name!r} is updated twice")
            value = self._own(value, f"update of state {name!r}")
            want = self.graph.nodes[self._states[name]]["shape"]
            if value.shape != want:
                raise GraphError(f"cell {self.name!r}: update of state {name!r} has shape "
                                 f"{fmt_shape(value.shape)} ({value.label}), the state is {fmt_shape(want)}")
            self._updates[name] = value.node

    def output(self, value):
        value = self._own(value, "output")
        if len(value.shape) != 2 or value.shape[0] != N:
            raise GraphError(f"cell {self.name!r}: the output must be (N, size), got "
                             f"{fmt_shape(value.shape)} ({value.label})")
        self._output = value.node

    def _own(self, value, what):
        if not isinstance(value, Value) or value.builder is not self:
            raise GraphError(f"cell {self.name!r}: {what} must be a value of this cell, got {value!r}")
        return value

    def build(self) -> "Cell":
        if self._input is None:
            raise GraphError(f"cell {self.name!r}: declare an input with c.input(name, size)")
        if not self._states:
            raise GraphError(f"cell {self.name!r}: declare at least one state with c.state(name, size)")
        missing = [s for s in self._states if s not in self._updates]
        if missing:
            raise GraphError(f"cell {self.name!r}: state {', '.join(map(repr, missing))} is never "
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
                raise GraphError(f"cell {self.name!r}: parameter {name!r} "
                                 f"{fmt_shape(self.graph.nodes[node]['shape'])} is never used")
        if self._input not in live:
            raise GraphError(f"cell {self.name!r}: input "
                             f"{self.graph.nodes[self._input]['name']!r} is never used")
        dead = [n for n in self.graph.nodes if n not in live]
        graph = self.graph.copy()
        graph.remove_nodes_from(dead)
        self._built = True
        return Cell(self.name, graph, self._input, dict(self._states), dict(self._params),
                    dict(self._updates), out)


class Cell:
    """An immutable recurrent cell: a graph of primitives plus its wiring."""

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
        return self.graph.nodes[self.input_node]["name"]

    @property
    def output_size(self) -> int:
        return self._shape(self.output_node)[1]

    @property
    def hidden_size(self) -> int:
        return self._shape(next(iter(self.states.values())))[1]

    def state_sizes(self) -> dict:
        return dict(self._state_sizes)

    def param_shapes(self) -> dict:
        return dict(self._param_shapes)

    def topo_order(self):
        return list(nx.lexicographical_topological_sort(self.graph))

    def __repr__(self):
        ps = ", ".join(f"{k}{fmt_shape(v)}" for k, v in self.param_shapes().items())
        ss = ", ".join(f"{k}({v})" for k, v in self.state_sizes().items())
        return (f"<Cell {self.name!r}: input {self.input_name}({self.input_size}), "
                f"states {ss}, params {ps}>")

    # -- parameters
    def init_params(self, seed=0, dtype=np.float64, init=None) -> dict:
        """Fresh parameters, drawn on the host from each param's ``init`` spec
        (or ``init`` for all of them) and moved to the backend in force."""
        dtype = backend.check_float_dtype(dtype, f"cell {self.name!r}: init_params")
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
