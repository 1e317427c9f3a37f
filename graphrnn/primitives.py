"""The primitives: a shape rule, a forward and a hand-written local backward each.

Shapes are tuples whose first entry may be the symbol ``"N"`` (the batch, unknown
until run time). A primitive instance belongs to one node: ``shape`` records the
input shapes it was checked against, so ``backward`` knows how to undo
broadcasting or slicing without saving anything at run time.

``rule`` states the local backward in one short line per input, as a reader
would write it by hand (``dx = dy·y(1−y)``); the backward diagram prints it
on every node, so a gradient can be followed from the loss to a parameter.

``saves`` lists what ``backward`` reads: input positions (0, 1, ...) and/or
``"y"`` (the forward's output); ``saved_for(needs)`` narrows it to what the
gradients asked for read. The planner keeps exactly those values per time
step and nothing else. ``backward(xp, dy, xs, y, needs)`` receives the inputs
(``None`` where not saved) and returns one gradient per input, computing only
those whose ``needs`` flag is true (``None`` for the others).

Each primitive also answers what the compiler and the emitters ask, so that
none of them tests for a type or a name:

- ``elementwise``: y's entry i reads entry i of every input (after
  broadcasting); the fusion pass may join such ops over adjacent columns.
- ``packs_columns``: y's column j reads only the right operand's column j, so
  products sharing a left operand may be packed into one over joined columns.
- ``window``: for a column slice, the ``(start, stop)`` it views; else None.
- ``native``: the form native emitters give it: ``"reduce"`` (a sum over
  the row times ``native_scale``), ``"elementwise"`` (then
  ``native_forward``, a scalar expression over the inputs ``x`` or ``a, b``,
  and ``native_backward``, one scalar expression per input over ``dy``, the
  inputs and ``y``), ``"matmul"``, ``"window"`` or ``"join"``; None where the
  primitive has none (the cell then runs on the numpy loops). The
  expressions are plain Python over ``exp``, ``tanh`` and ``x if c else z``,
  so that one text serves numba and CUDA alike; a subclass that
  changes ``forward`` or ``backward`` without restating them has none.
"""
from __future__ import annotations

N = "N"  # the batch dimension, symbolic until run time


_CONSTS = {}


def const(xp, value, dtype):
    """``value`` as an operand of ``dtype``: a cached 0-d array under numpy.

    numpy takes a 0-d array operand in about half the time of a Python float
    (1.0 vs 2.0 µs per call on 16 entries: it skips working out the scalar's
    type), which is most of an op's cost at small sizes. Other backends get the
    plain number.
    """
    if xp.__name__ != "numpy":
        return value
    key = (value, dtype)
    c = _CONSTS.get(key)
    if c is None:
        c = _CONSTS[key] = xp.asarray(value, dtype=dtype)
    return c


from .errors import GraphError  # noqa: F401  (defined with the other errors; imported from here too)


def fmt_shape(shape) -> str:
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def broadcast_shapes(a, b, where: str):
    """numpy broadcasting over shapes that may hold the symbol N."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise GraphError(f"{where}: shapes {fmt_shape(a)} and {fmt_shape(b)} do not broadcast")
    return tuple(reversed(out))


def unbroadcast(xp, g, shape):
    """Sum a gradient of the broadcast shape back down to an input's ``shape``."""
    if g.ndim > len(shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _each_reads_the_other(needs):
    """A product's saves: the gradient of each input reads the other input."""
    return {i for i, need in ((1, needs[0]), (0, needs[1])) if need}


class Primitive:
    """One primitive: the rule table's row for it, and its shape rule, forward and backward.

    A subclass (built-in, or a user's through ``gr.register_primitive``) declares:

    - ``name`` (a unique identifier) and ``arity`` (the number of inputs; None: any);
    - ``shape(where, *in_shapes)`` -> the output shape, raising a ``GraphError``
      that starts with ``where`` when the inputs do not fit;
    - ``forward(xp, *xs, out=None)`` -> y (into ``out`` where given and possible);
    - ``backward(xp, dy, xs, y, needs)`` -> one gradient per input, of that
      input's shape (None where ``needs`` is false); ``xs`` and ``y`` hold only
      what ``saved_for(needs)`` names (None elsewhere);
    - ``saves`` (input positions and/or ``"y"``) and, where some gradients read
      less, ``saved_for(needs)``;
    - ``rule``: the backward, one short line per input, drawn in diagrams;
    - ``surrogate``: input positions whose gradient is deliberately not the
      derivative (a straight-through estimator): the checker skips and names them;
    - optionally, the calculus as expression trees, which ``gr.explain``,
      ``graphrnn export`` and the backward diagram's edge labels print:
      ``formula(args)`` (y) and ``gradient(i, dy, args, y)`` (input i's
      gradient, in the order of operations ``backward`` uses), over trees
      ``args[i]``, ``dy`` and ``y`` (the vocabulary: "formula trees" below).
      Without them printers write ``name(args)`` and the ``rule`` text.

    And what printers ask (one printer, ``expression``, serves graph labels,
    diagrams and the plan): ``symbol`` (an infix operator such as ``"+"``; empty:
    written ``name(args)``), ``precedence`` (how tightly that form binds), and
    ``operands``, the names its native scalar texts give the inputs.
    """
    name = ""
    arity = 1
    rule: tuple = ()  # the local backward, one line per input (see the module docstring)
    saves: tuple = ()
    surrogate: tuple = ()  # inputs whose gradient is a chosen surrogate, not the derivative
    symbol = ""        # infix symbol ("+", "@"); empty: the call form name(args)
    precedence = 9     # 9: an atom or a call; lower binds looser (see expression)
    operands = ("x",)  # the inputs' names in native_forward / native_backward
    writes_gradients = False  # backward_into computes into its destinations (no copy)
    elementwise = False
    packs_columns = False
    native = None            # "elementwise", "matmul", "window", "join" or None
    native_forward = ""      # for native == "elementwise": y as a scalar expression
    native_backward: tuple = ()  # ... and each input's gradient as one
    formula = None   # (self, args) -> tree: y; see the class docstring
    gradient = None  # (self, i, dy, args, y) -> tree: input i's gradient

    def __init__(self):
        self.in_shapes = ()

    def check(self, where: str, *shapes):
        """Run the shape rule, remember the input shapes, return the output shape."""
        self.in_shapes = tuple(shapes)
        return self.shape(where, *shapes)

    def shape(self, where, *shapes):  # pragma: no cover - abstract
        raise NotImplementedError

    def attrs(self) -> dict:
        """Static attributes, for labels and for comparing nodes."""
        return {}

    @property
    def window(self):
        """``(start, stop)`` of the columns this op views, for a column slice; else None."""
        return None

    def saved_for(self, needs) -> set:
        """Which saved values (input positions, ``"y"``) ``backward`` reads for these needs."""
        return set(self.saves)

    def expression(self, texts, precs, subscript=None) -> str:
        """This op applied to operands written ``texts`` (binding as tightly as
        ``precs``): ``a + b``, ``(a + b) * c``, ``tanh(x)``. ``subscript(start,
        stop)`` writes a column window (graph labels use numbers, diagrams H)."""
        def wrap(i, mine):
            return f"({texts[i]})" if precs[i] < mine else texts[i]
        if self.symbol and len(texts) == 2:
            mine = self.precedence
            # a - (b - c), a / (b * c), a @ (b @ c): the right operand binds tighter;
            # one of another op at nearly this level (a matmul beside a product) is bracketed
            right = mine + (not self.associative or precs[1] != mine)
            return f"{wrap(0, mine)} {self.symbol} {wrap(1, right)}"
        if self.symbol and len(texts) == 1:
            return f"{self.symbol}{wrap(0, 9)}"
        return f"{self.name}({', '.join(texts)})"

    associative = False  # for expression: (a + b) + c prints as a + b + c

    @classmethod
    def _describes_itself(cls, member):
        """Does what the class that declared ``member`` says still hold here:
        no subclass below it redefined ``forward`` or ``backward``?"""
        declared = _owner(cls, member)
        return all(_owner(cls, m) in _ancestors_from(declared) for m in ("forward", "backward"))

    @classmethod
    def native_form(cls):
        """``native``, or None where a subclass redefined ``forward`` or
        ``backward`` below the class that declared the native form: a native
        emitter would otherwise run the parent's rule, not the one written."""
        if cls.native is None or not cls._describes_itself("native"):
            return None
        return cls.native

    @classmethod
    def formulas(cls) -> bool:
        """Are ``formula`` and ``gradient`` this class's calculus (declared, and
        not inherited past a subclass that changed ``forward`` or ``backward``)?"""
        return cls.formula is not None and cls.gradient is not None and cls._describes_itself("gradient")

    def passes_gradient(self):
        """Per input: is its gradient dy itself, whatever dy is? The generated
        BPTT loop hands dy on to those inputs without calling ``backward``."""
        return (False,) * len(self.in_shapes)

    def backward_into(self, xp, dy, xs, y, needs, out):
        """``backward``, with gradient i written into ``out[i]`` where that is not None.

        The scheduler hands out destinations (a parameter gradient's buffer, or
        the columns of it a slice owns) so that large gradients are not made in
        a temporary and copied. Returns the gradients; those with a destination
        are that destination. Primitives that can write in place override this.
        """
        res = self.backward(xp, dy, xs, y, needs)
        done = []
        for r, o in zip(res, out):
            if r is not None and o is not None:
                o[...] = r
                r = o
            done.append(r)
        return tuple(done)

    def __repr__(self):
        extra = ", ".join(f"{k}={v!r}" for k, v in self.attrs().items())
        return f"{self.name}({extra})"


# --------------------------------------------------------------------------- formula trees
#
# What ``formula`` and ``gradient`` return, printed by graphrnn.explain as text,
# LaTeX and Python: ("v", node) a value, ("g", node) its gradient, ("num", x),
# ("bin", sym, a, b) with sym in + - * / @, ("mm", a, b) a product in a backward
# line, ("neg", a), ("T", a), ("sq", a), ("pos", a) = [a > 0], ("fn", name, a,
# ...), ("cols", a, lo, hi), ("cat", [a, ...]), ("sumto", a, in_shape,
# out_shape) (a summed over broadcast axes), ("pow", a, k), ("mod", a, k),
# ("mask", sym, a, b) = [a sym b] as 0/1 numbers, ("cmp", sym, a, b) the same as
# a boolean factor, ("where", m, a, b), ("repeat", a, n) = a on each of n
# columns, ("scale", a, n) = a / n, ("zero", a) = zeros of a's shape; a slice's
# gradient is ("piece", lo, hi, tree). Each built-in's trees state its
# docstring's calculus with backward's conventions at kinks and steps, in
# backward's order of operations, so that export's code agrees to rounding.

def _times(a, b):
    return ("bin", "*", a, b)


def _one_minus(t):
    return ("bin", "-", ("num", 1.0), t)


def _summed(tree, op, i):
    """Input i's gradient of a broadcasting op: summed back to the input's shape."""
    ins = op.in_shapes
    n = max(len(s) for s in ins)
    padded = [(1,) * (n - len(s)) + tuple(s) for s in ins]
    out = tuple(next((d for d in col if d != 1), 1) for col in zip(*padded))
    return tree if tuple(ins[i]) == out else ("sumto", tree, tuple(ins[i]), out)


def _owner(cls, member):
    return next(k for k in cls.__mro__ if member in k.__dict__)


def _ancestors_from(cls):
    return set(cls.__mro__)


class Elementwise(Primitive):
    elementwise = True

    def shape(self, where, *shapes):
        return shapes[0]


class Binary(Primitive):
    """An elementwise op over broadcast operands (numpy's rules; N stays N)."""
    arity = 2
    elementwise = True
    operands = ("a", "b")

    def shape(self, where, *shapes):
        out = shapes[0]
        for s in shapes[1:]:
            out = broadcast_shapes(out, s, where)
        self._broadcast = tuple(tuple(s) != out for s in shapes)  # known once, not per step
        return out

    def reduce(self, xp, g, i):
        """The gradient for input i: g summed over the axes that input was broadcast along."""
        return unbroadcast(xp, g, self.in_shapes[i]) if self._broadcast[i] else g


# --------------------------------------------------------------------------- linear

class MatMul(Primitive):
    """y = a @ w;  da = dy @ wᵀ,  dw = aᵀ dy   (rows of a are independent)"""
    # Python reads * and @ alike, left to right; a reader does not, so a product
    # meeting a matmul is bracketed either way: (r * h) @ W, r * (h @ W)
    symbol, precedence = "@", 3.5
    name = "matmul"
    arity = 2
    rule = ("da = dy Wᵀ", "dW = aᵀ dy")
    saves = (0, 1)
    writes_gradients = True
    packs_columns = True
    native = "matmul"

    def shape(self, where, a, w):
        if len(w) != 2 or w[0] == N:
            raise GraphError(f"{where}: the right operand must be a 2-D parameter-like value, got {fmt_shape(w)}")
        if len(a) < 1 or a[-1] != w[0]:
            raise GraphError(f"{where}: inner sizes differ: {fmt_shape(a)} @ {fmt_shape(w)}")
        return tuple(a[:-1]) + (w[1],)

    def saved_for(self, needs):
        return _each_reads_the_other(needs)   # da reads w, dw reads a

    def forward(self, xp, a, w, out=None):
        return xp.matmul(a, w, out=out)

    def formula(self, a):
        return ("bin", "@", a[0], a[1])

    def gradient(self, i, dy, a, y):
        return ("mm", dy, ("T", a[1])) if i == 0 else ("mm", ("T", a[0]), dy)

    def backward(self, xp, dy, xs, y, needs):
        a, w = xs
        da = None
        if needs[0]:
            if w.size >= 16384 and dy.ndim == 2 and dy.shape[0] <= 32 and xp.__name__ == "numpy":
                # A per-step product with few rows: OpenBLAS runs (w @ dyᵀ)ᵀ 1.1-1.2x
                # faster than dy @ wᵀ at 20 rows (copy back included), the same at 64
                # and slower at 1 row (benchmarks/matmul_forms.py).
                da = xp.ascontiguousarray(xp.matmul(w, dy.T).T)
            else:
                da = dy @ w.T
        dw = None
        if needs[1]:
            k = a.shape[-1]
            dw = a.reshape(-1, k).T @ dy.reshape(-1, dy.shape[-1])
        return da, dw

    def backward_into(self, xp, dy, xs, y, needs, out):
        a, w = xs
        da = dw = None
        if needs[0]:
            da = xp.matmul(dy, w.T, out=out[0])
        if needs[1]:
            dw = xp.matmul(a.reshape(-1, a.shape[-1]).T, dy.reshape(-1, dy.shape[-1]), out=out[1])
        return da, dw


class Add(Binary):
    """y = a + b;  da = dy,  db = dy   (summed over broadcast axes)"""
    symbol, precedence, associative = "+", 2, True
    name = "add"
    rule = ("da = dy", "db = dy")
    native = "elementwise"
    native_forward = "a + b"
    native_backward = ("dy", "dy")

    def forward(self, xp, a, b, out=None):
        return xp.add(a, b, out=out)

    def passes_gradient(self):
        return (not self._broadcast[0], not self._broadcast[1])

    def formula(self, a):
        return ("bin", "+", a[0], a[1])

    def gradient(self, i, dy, a, y):
        return _summed(dy, self, i)

    def backward(self, xp, dy, xs, y, needs):
        return (self.reduce(xp, dy, 0) if needs[0] else None,
                self.reduce(xp, dy, 1) if needs[1] else None)


class Sub(Binary):
    """y = a - b;  da = dy,  db = -dy"""
    symbol, precedence = "-", 2
    name = "sub"
    rule = ("da = dy", "db = −dy")
    native = "elementwise"
    native_forward = "a - b"
    native_backward = ("dy", "-dy")

    def forward(self, xp, a, b, out=None):
        return xp.subtract(a, b, out=out)

    def passes_gradient(self):
        return (not self._broadcast[0], False)

    def formula(self, a):
        return ("bin", "-", a[0], a[1])

    def gradient(self, i, dy, a, y):
        return _summed(dy, self, 0) if i == 0 else ("neg", _summed(dy, self, 1))

    def backward(self, xp, dy, xs, y, needs):
        return (self.reduce(xp, dy, 0) if needs[0] else None,
                -self.reduce(xp, dy, 1) if needs[1] else None)


class Neg(Elementwise):
    """y = -x;  dx = -dy"""
    symbol, precedence = "-", 8
    name = "neg"
    rule = ("dx = −dy",)
    native = "elementwise"
    native_forward = "-x"
    native_backward = ("-dy",)

    def forward(self, xp, x, out=None):
        return xp.negative(x, out=out)

    def formula(self, a):
        return ("neg", a[0])

    def gradient(self, i, dy, a, y):
        return ("neg", dy)

    def backward(self, xp, dy, xs, y, needs):
        return (-dy,)


class Slice(Primitive):
    """y = x[..., start:stop];  dx = zeros with dy placed at [..., start:stop]"""
    name = "slice"
    rule = ("dx[:, i:j] = dy",)
    native = "window"

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def attrs(self):
        return {"start": self.start, "stop": self.stop}

    @property
    def window(self):
        return self.start, self.stop

    def shape(self, where, x):
        if len(x) == 0:
            raise GraphError(f"{where}: cannot slice a scalar")
        if not 0 <= self.start < self.stop <= x[-1]:
            raise GraphError(f"{where}: slice [{self.start}:{self.stop}] is empty or outside "
                             f"the last axis of {fmt_shape(x)}")
        return tuple(x[:-1]) + (self.stop - self.start,)

    def expression(self, texts, precs, subscript=None):
        sub = subscript or (lambda lo, hi: f"[:, {lo or ''}:{hi}]")
        return (f"({texts[0]})" if precs[0] < 9 else texts[0]) + sub(self.start, self.stop)

    def forward(self, xp, x, out=None):
        return x[..., self.start:self.stop]

    def formula(self, a):
        return ("cols", a[0], self.start, self.stop)

    def gradient(self, i, dy, a, y):
        return ("piece", self.start, self.stop, dy)

    def backward(self, xp, dy, xs, y, needs):
        dx = xp.zeros(dy.shape[:-1] + (self.in_shapes[0][-1],), dtype=dy.dtype)
        dx[..., self.start:self.stop] = dy
        return (dx,)


class Concat(Primitive):
    """y = [x1 | x2 | ...] along the last axis;  dxi = dy[..., offset_i : offset_i + width_i]"""
    name = "concat"
    arity = None  # any number of inputs
    rule = ("dxₖ = dy[:, xₖ's columns]",)  # one line for every input
    native = "join"

    def shape(self, where, *shapes):
        if len(shapes) < 1:
            raise GraphError(f"{where}: concat needs at least one value")
        lead = shapes[0][:-1]
        for s in shapes:
            if len(s) == 0 or tuple(s[:-1]) != tuple(lead):
                raise GraphError(f"{where}: cannot concatenate shapes "
                                 + " and ".join(fmt_shape(t) for t in shapes)
                                 + " along the last axis")
        return tuple(lead) + (sum(s[-1] for s in shapes),)

    def forward(self, xp, *xs, out=None):
        return xp.concatenate(xs, axis=-1, out=out)

    def formula(self, a):
        return ("cat", list(a))

    def gradient(self, i, dy, a, y):
        lo = sum(s[-1] for s in self.in_shapes[:i])
        return ("cols", dy, lo, lo + self.in_shapes[i][-1])

    def backward(self, xp, dy, xs, y, needs):
        grads, lo = [], 0
        for s, need in zip(self.in_shapes, needs):
            hi = lo + s[-1]
            grads.append(dy[..., lo:hi] if need else None)
            lo = hi
        return tuple(grads)


# --------------------------------------------------------------------------- nonlinear

class Mul(Binary):
    """y = a * b;  da = dy * b,  db = dy * a"""
    symbol, precedence, associative = "*", 3, True
    name = "mul"
    rule = ("da = dy·b", "db = dy·a")
    saves = (0, 1)
    native = "elementwise"
    native_forward = "a * b"
    native_backward = ("dy * b", "dy * a")

    def saved_for(self, needs):
        return _each_reads_the_other(needs)   # da reads b, db reads a

    def forward(self, xp, a, b, out=None):
        return xp.multiply(a, b, out=out)

    def formula(self, a):
        return ("bin", "*", a[0], a[1])

    def gradient(self, i, dy, a, y):
        return _summed(_times(dy, a[1 - i]), self, i)

    def backward(self, xp, dy, xs, y, needs):
        a, b = xs
        return (self.reduce(xp, dy * b, 0) if needs[0] else None,
                self.reduce(xp, dy * a, 1) if needs[1] else None)


class Tanh(Elementwise):
    """y = tanh(x);  dx = dy * (1 - y²)   (reuses the forward's output)"""
    name = "tanh"
    rule = ("dx = dy·(1−y²)",)
    saves = ("y",)
    native = "elementwise"
    native_forward = "tanh(x)"
    native_backward = ("dy * (1 - y * y)",)

    def forward(self, xp, x, out=None):
        return xp.tanh(x, out=out)

    def formula(self, a):
        return ("fn", "tanh", a[0])

    def gradient(self, i, dy, a, y):
        return _times(dy, _one_minus(("sq", y)))

    def backward(self, xp, dy, xs, y, needs):
        return (dy * xp.subtract(const(xp, 1, y.dtype), y * y),)


_EXP_CAP = {4: 88.0, 8: 708.0}  # largest x with exp(x) finite, by float size (float16: 11)


class Sigmoid(Elementwise):
    """y = 1 / (1 + e⁻ˣ);  dx = dy * y * (1 - y)"""
    name = "sigmoid"
    rule = ("dx = dy·y(1−y)",)
    saves = ("y",)
    native = "elementwise"
    # exp(-x) overflowing to inf gives 1 / inf = 0, the right limit: no cap needed
    native_forward = "1 / (1 + exp(-x))"
    native_backward = ("dy * y * (1 - y)",)

    def forward(self, xp, x, out=None):
        if x.size < 2048:
            # Few entries: the cost is per ufunc call, and this form needs four.
            # 0.5·tanh(0.5x) + 0.5 is the logistic function and never overflows.
            half = const(xp, 0.5, x.dtype)
            y = xp.multiply(x, half, out=out)
            xp.tanh(y, out=y)
            y *= half
            y += half
            return y
        # Many entries: 1 / (1 + e^-x) with -x capped below exp's overflow; numpy's
        # exp is 1.3x (float32) to 3x (float64) faster than its tanh here, and the
        # cap only moves results below 1e-38 (float32) or 1e-307 (float64).
        y = xp.negative(x, out=out)
        xp.minimum(y, const(xp, _EXP_CAP.get(y.dtype.itemsize, 11.0), y.dtype), out=y)
        xp.exp(y, out=y)
        y += const(xp, 1, y.dtype)
        xp.reciprocal(y, out=y)
        return y

    def formula(self, a):
        return ("fn", "sigmoid", a[0])

    def gradient(self, i, dy, a, y):
        return _times(_times(dy, y), _one_minus(y))

    def backward(self, xp, dy, xs, y, needs):
        return (dy * y * xp.subtract(const(xp, 1, y.dtype), y),)


class Relu(Elementwise):
    """y = max(x, 0);  dx = dy * [y > 0]"""
    name = "relu"
    rule = ("dx = dy·[y>0]",)
    saves = ("y",)
    native = "elementwise"
    native_forward = "x if x > 0 else 0"
    native_backward = ("dy if y > 0 else 0",)

    def forward(self, xp, x, out=None):
        return xp.maximum(x, const(xp, 0, x.dtype), out=out)

    def formula(self, a):
        return ("fn", "relu", a[0])

    def gradient(self, i, dy, a, y):
        return _times(dy, ("pos", y))

    def backward(self, xp, dy, xs, y, needs):
        return (dy * (y > 0),)


class Exp(Elementwise):
    """y = eˣ;  dx = dy * y"""
    name = "exp"
    rule = ("dx = dy·y",)
    saves = ("y",)
    native = "elementwise"
    native_forward = "exp(x)"
    native_backward = ("dy * y",)

    def forward(self, xp, x, out=None):
        return xp.exp(x, out=out)

    def formula(self, a):
        return ("fn", "exp", a[0])

    def gradient(self, i, dy, a, y):
        return _times(dy, y)

    def backward(self, xp, dy, xs, y, needs):
        return (dy * y,)


# --------------------------------------------------------------------------- for the literature
#
# Conventions where a derivative is not defined, stated once here and on each
# class: the gradient at a kink is the one-sided value named in its rule (relu:
# 0 at 0; abs: 0 at 0; maximum/minimum: the tie goes to a); steps (floor, %,
# comparisons) have gradient 0 where they are flat (and at their jumps). Near
# a division by zero, log(0) or sqrt(0) the values and gradients are numpy's
# (±inf, nan), never clipped silently: add an eps where a cell may reach one
# (a layer norm divides by sqrt(var + eps)).


class Div(Binary):
    """y = a / b;  da = dy / b,  db = -dy * y / b   (b = 0: numpy's inf / nan)"""
    name = "div"
    symbol, precedence = "/", 3
    rule = ("da = dy / b", "db = −dy·y / b")
    saves = (1, "y")
    native = "elementwise"
    native_forward = "a / b"
    native_backward = ("dy / b", "-dy * y / b")

    def saved_for(self, needs):
        return ({1} if any(needs) else set()) | ({"y"} if needs[1] else set())

    def forward(self, xp, a, b, out=None):
        return xp.divide(a, b, out=out)

    def formula(self, a):
        return ("bin", "/", a[0], a[1])

    def gradient(self, i, dy, a, y):  # da = dy / b, db = −dy·y / b (= −dy·a / b²)
        if i == 0:
            return _summed(("bin", "/", dy, a[1]), self, 0)
        return ("neg", _summed(("bin", "/", _times(dy, y), a[1]), self, 1))

    def backward(self, xp, dy, xs, y, needs):
        b = xs[1]
        return (self.reduce(xp, dy / b, 0) if needs[0] else None,
                self.reduce(xp, -(dy * y) / b, 1) if needs[1] else None)


class Pow(Elementwise):
    """y = xᵏ for a Python number k;  dx = dy * k * xᵏ⁻¹
    (a k that is not an integer needs x >= 0; x = 0 with k < 1: numpy's inf)"""
    name = "pow"
    symbol, precedence = "**", 6
    rule = ("dx = dy·k·xᵏ⁻¹",)
    saves = (0,)
    native = "elementwise"

    def __init__(self, k: float):
        super().__init__()
        self.k = float(k)

    def attrs(self):
        return {"k": self.k}

    def expression(self, texts, precs, subscript=None):
        base = f"({texts[0]})" if precs[0] < 9 else texts[0]
        return f"{base} ** {self.k:g}"

    @property
    def native_forward(self):
        return f"x * x" if self.k == 2 else f"pow(x, {self.k!r})"

    @property
    def native_backward(self):
        return (f"dy * 2.0 * x",) if self.k == 2 else (f"dy * {self.k!r} * pow(x, {self.k - 1!r})",)

    def forward(self, xp, x, out=None):
        if self.k == 2:
            return xp.multiply(x, x, out=out)
        return xp.power(x, const(xp, self.k, _dtype(x)), out=out)

    def formula(self, a):
        return ("pow", a[0], self.k)

    def gradient(self, i, dy, a, y):  # as backward computes it (k = 2: dy·2x)
        return _times(_times(dy, ("num", self.k)), a[0] if self.k == 2 else ("pow", a[0], self.k - 1))

    def backward(self, xp, dy, xs, y, needs):
        x = xs[0]
        if self.k == 2:
            return (dy * (x + x),)
        return (dy * const(xp, self.k, _dtype(x)) * xp.power(x, const(xp, self.k - 1, _dtype(x))),)


class Sqrt(Elementwise):
    """y = √x;  dx = dy / (2y)   (x = 0: dx = inf·dy; x < 0: nan — add an eps under it)"""
    name = "sqrt"
    rule = ("dx = dy / (2y)",)
    saves = ("y",)
    native = "elementwise"
    native_forward = "sqrt(x)"
    native_backward = ("dy / (2 * y)",)

    def forward(self, xp, x, out=None):
        return xp.sqrt(x, out=out)

    def formula(self, a):
        return ("fn", "sqrt", a[0])

    def gradient(self, i, dy, a, y):
        return ("bin", "/", dy, _times(("num", 2.0), y))

    def backward(self, xp, dy, xs, y, needs):
        return (dy / (y + y),)


class Log(Elementwise):
    """y = ln x;  dx = dy / x   (x = 0: -inf and inf·dy; x < 0: nan)"""
    name = "log"
    rule = ("dx = dy / x",)
    saves = (0,)
    native = "elementwise"
    native_forward = "log(x)"
    native_backward = ("dy / x",)

    def forward(self, xp, x, out=None):
        return xp.log(x, out=out)

    def formula(self, a):
        return ("fn", "log", a[0])

    def gradient(self, i, dy, a, y):
        return ("bin", "/", dy, a[0])

    def backward(self, xp, dy, xs, y, needs):
        return (dy / xs[0],)


class Abs(Elementwise):
    """y = |x|;  dx = dy * sign(x)   (at x = 0 the gradient is 0, as sign(0) = 0)"""
    name = "abs"
    rule = ("dx = dy·sign(x)",)
    saves = (0,)
    native = "elementwise"
    native_forward = "x if x >= 0 else -x"
    native_backward = ("dy if x > 0 else (-dy if x < 0 else 0)",)

    def forward(self, xp, x, out=None):
        return xp.abs(x, out=out)

    def formula(self, a):
        return ("fn", "abs", a[0])

    def gradient(self, i, dy, a, y):
        return _times(dy, ("fn", "sign", a[0]))  # sign(0) = 0

    def backward(self, xp, dy, xs, y, needs):
        return (dy * xp.sign(xs[0]),)


class Sin(Elementwise):
    """y = sin x;  dx = dy * cos x"""
    name = "sin"
    rule = ("dx = dy·cos x",)
    saves = (0,)
    native = "elementwise"
    native_forward = "sin(x)"
    native_backward = ("dy * cos(x)",)

    def forward(self, xp, x, out=None):
        return xp.sin(x, out=out)

    def formula(self, a):
        return ("fn", "sin", a[0])

    def gradient(self, i, dy, a, y):
        return _times(dy, ("fn", "cos", a[0]))

    def backward(self, xp, dy, xs, y, needs):
        return (dy * xp.cos(xs[0]),)


class Cos(Elementwise):
    """y = cos x;  dx = -dy * sin x"""
    name = "cos"
    rule = ("dx = −dy·sin x",)
    saves = (0,)
    native = "elementwise"
    native_forward = "cos(x)"
    native_backward = ("-dy * sin(x)",)

    def forward(self, xp, x, out=None):
        return xp.cos(x, out=out)

    def formula(self, a):
        return ("fn", "cos", a[0])

    def gradient(self, i, dy, a, y):
        return ("neg", _times(dy, ("fn", "sin", a[0])))

    def backward(self, xp, dy, xs, y, needs):
        return (-(dy * xp.sin(xs[0])),)


class Maximum(Binary):
    """y = max(a, b);  da = dy * [a >= b],  db = dy * [a < b]   (a tie's gradient goes to a)"""
    name = "maximum"
    rule = ("da = dy·[a≥b]", "db = dy·[a<b]")
    saves = (0, 1)
    native = "elementwise"
    native_forward = "a if a >= b else b"
    native_backward = ("dy if a >= b else 0", "0 if a >= b else dy")

    def forward(self, xp, a, b, out=None):
        return xp.maximum(a, b, out=out)

    def formula(self, a):
        return ("fn", "maximum", *a)

    def gradient(self, i, dy, a, y):  # a tie's gradient goes to a
        return _summed(_times(dy, ("cmp", ">=" if i == 0 else "<", a[0], a[1])), self, i)

    def backward(self, xp, dy, xs, y, needs):
        first = xp.greater_equal(*xs)
        return (self.reduce(xp, dy * first, 0) if needs[0] else None,
                self.reduce(xp, dy * ~first, 1) if needs[1] else None)


class Minimum(Binary):
    """y = min(a, b);  da = dy * [a <= b],  db = dy * [a > b]   (a tie's gradient goes to a)"""
    name = "minimum"
    rule = ("da = dy·[a≤b]", "db = dy·[a>b]")
    saves = (0, 1)
    native = "elementwise"
    native_forward = "a if a <= b else b"
    native_backward = ("dy if a <= b else 0", "0 if a <= b else dy")

    def forward(self, xp, a, b, out=None):
        return xp.minimum(a, b, out=out)

    def formula(self, a):
        return ("fn", "minimum", *a)

    def gradient(self, i, dy, a, y):  # a tie's gradient goes to a
        return _summed(_times(dy, ("cmp", "<=" if i == 0 else ">", a[0], a[1])), self, i)

    def backward(self, xp, dy, xs, y, needs):
        first = xp.less_equal(*xs)
        return (self.reduce(xp, dy * first, 0) if needs[0] else None,
                self.reduce(xp, dy * ~first, 1) if needs[1] else None)


def _dtype(*xs):
    """The float dtype of a result over these operands (Python numbers are 0-d arrays here)."""
    return next((x.dtype for x in xs if getattr(x, "ndim", 0)), None) or xs[0].dtype


class Compare(Binary):
    """y = [a ⊙ b] as 0.0 or 1.0 (a mask);  da = db = 0: a mask carries no gradient"""
    rule = ("da = 0·dy", "db = 0·dy")
    precedence = 1
    native = "elementwise"
    native_backward = ("0", "0")
    test = ""  # the numpy ufunc's name

    @property
    def native_forward(self):
        return f"1 if a {self.symbol} b else 0"

    def forward(self, xp, a, b, out=None):
        mask = getattr(xp, self.test)(a, b)
        if out is not None:
            out[...] = mask
            return out
        return mask.astype(_dtype(a, b))

    def formula(self, a):
        return ("mask", self.symbol, a[0], a[1])

    def gradient(self, i, dy, a, y):
        return ("zero", a[i])

    def backward(self, xp, dy, xs, y, needs):
        zero = xp.zeros_like(dy)
        return tuple(self.reduce(xp, zero, i) if need else None for i, need in enumerate(needs))


class Greater(Compare):
    """y = [a > b];  da = db = 0"""
    name, symbol, test = "gt", ">", "greater"


class Less(Compare):
    """y = [a < b];  da = db = 0"""
    name, symbol, test = "lt", "<", "less"


class GreaterEqual(Compare):
    """y = [a >= b];  da = db = 0"""
    name, symbol, test = "ge", ">=", "greater_equal"


class LessEqual(Compare):
    """y = [a <= b];  da = db = 0"""
    name, symbol, test = "le", "<=", "less_equal"


class Where(Binary):
    """y = a where m > 0, else b;  dm = 0,  da = dy * [m > 0],  db = dy * [m <= 0]"""
    name = "where"
    arity = 3
    operands = ("m", "a", "b")
    rule = ("dm = 0·dy", "da = dy·[m>0]", "db = dy·[m≤0]")
    saves = (0,)
    native = "elementwise"
    native_forward = "a if m > 0 else b"
    native_backward = ("0", "dy if m > 0 else 0", "0 if m > 0 else dy")

    def saved_for(self, needs):
        return {0} if needs[1] or needs[2] else set()

    def forward(self, xp, m, a, b, out=None):
        y = xp.where(m > 0, a, b)
        if out is not None:
            out[...] = y
            return out
        return y.astype(_dtype(m, a, b), copy=False)

    def formula(self, a):
        return ("where", *a)

    def gradient(self, i, dy, a, y):
        if i == 0:
            return ("zero", a[0])
        return _summed(_times(dy, ("cmp", ">" if i == 1 else "<=", a[0], ("num", 0.0))), self, i)

    def backward(self, xp, dy, xs, y, needs):
        m = xs[0]
        on = m > 0 if needs[1] or needs[2] else None
        return (self.reduce(xp, xp.zeros_like(dy), 0) if needs[0] else None,
                self.reduce(xp, dy * on, 1) if needs[1] else None,
                self.reduce(xp, dy * ~on, 2) if needs[2] else None)


class Floor(Elementwise):
    """y = ⌊x⌋;  dx = 0   (flat between integers; at the jumps 0 too)"""
    name = "floor"
    rule = ("dx = 0·dy",)
    native = "elementwise"
    native_forward = "floor(x)"
    native_backward = ("0",)

    def forward(self, xp, x, out=None):
        return xp.floor(x, out=out)

    def formula(self, a):
        return ("fn", "floor", a[0])

    def gradient(self, i, dy, a, y):
        return ("zero", a[0])

    def backward(self, xp, dy, xs, y, needs):
        return (xp.zeros_like(dy),)


class Mod(Elementwise):
    """y = x mod k = x - k⌊x/k⌋ for a Python number k ≠ 0 (the sign of k, as
    Python's % and numpy's);  dx = dy   (at the jumps, x/k an integer, dy too)"""
    name = "mod"
    symbol, precedence = "%", 3
    rule = ("dx = dy",)
    native = "elementwise"
    native_backward = ("dy",)

    def __init__(self, k: float):
        super().__init__()
        self.k = float(k)

    def attrs(self):
        return {"k": self.k}

    def shape(self, where, x):
        if self.k == 0:
            raise GraphError(f"{where}: % 0 is not defined (the divisor must be a non-zero number)")
        return x

    def expression(self, texts, precs, subscript=None):
        return f"{f'({texts[0]})' if precs[0] < 3 else texts[0]} % {self.k:g}"

    @property
    def native_forward(self):
        return f"x - {self.k!r} * floor(x / {self.k!r})"

    def passes_gradient(self):
        return (True,)

    def forward(self, xp, x, out=None):
        return xp.mod(x, const(xp, self.k, _dtype(x)), out=out)

    def formula(self, a):
        return ("mod", a[0], self.k)

    def gradient(self, i, dy, a, y):
        return dy  # dx = dy, jumps too

    def backward(self, xp, dy, xs, y, needs):
        return (dy,)


class Sum(Primitive):
    """y = Σⱼ x[..., j] over the last axis, kept as a column of width 1;  dx = dy on every column"""
    name = "sum"
    rule = ("dx = dy (every column)",)
    native = "reduce"  # native emitters: a sum over the row, times native_scale

    @property
    def native_scale(self):
        return 1.0

    def shape(self, where, x):
        if len(x) == 0:
            raise GraphError(f"{where}: a scalar has no last axis to reduce")
        return tuple(x[:-1]) + (1,)

    def expression(self, texts, precs, subscript=None):
        return f"{f'({texts[0]})' if precs[0] < 9 else texts[0]}.{self.name}(-1)"

    def forward(self, xp, x, out=None):
        return xp.sum(x, axis=-1, keepdims=True, out=out)

    def formula(self, a):
        return ("fn", "sum", a[0])

    def gradient(self, i, dy, a, y):
        return ("repeat", dy, self.in_shapes[0][-1])

    def backward(self, xp, dy, xs, y, needs):
        return (xp.repeat(dy, self.in_shapes[0][-1], axis=-1),)


class Mean(Sum):
    """y = (1/n) Σⱼ x[..., j] over the last axis (n columns), as a column;  dx = dy / n on every column"""
    name = "mean"
    rule = ("dx = dy / n (every column)",)
    native = "reduce"

    @property
    def native_scale(self):
        return 1.0 / self.in_shapes[0][-1]

    def forward(self, xp, x, out=None):
        return xp.mean(x, axis=-1, keepdims=True, out=out)

    def formula(self, a):
        return ("fn", "mean", a[0])

    def gradient(self, i, dy, a, y):
        n = self.in_shapes[0][-1]
        return ("repeat", ("scale", dy, n), n)

    def backward(self, xp, dy, xs, y, needs):
        n = self.in_shapes[0][-1]
        return (xp.repeat(dy * const(xp, 1.0 / n, dy.dtype), n, axis=-1),)


class Transpose(Primitive):
    """y = xᵀ for a 2-D value of parameters (static: computed once per call);  dx = dyᵀ"""
    name = "transpose"
    rule = ("dx = dyᵀ",)

    def shape(self, where, x):
        if len(x) != 2 or N in x:
            raise GraphError(f"{where}: .T is for a 2-D value of parameters and constants, got "
                             f"{fmt_shape(x)} (a per-example value is not transposed)")
        return (x[1], x[0])

    def expression(self, texts, precs, subscript=None):
        return f"{f'({texts[0]})' if precs[0] < 9 else texts[0]}.T"

    def forward(self, xp, x, out=None):
        if out is None:
            return xp.ascontiguousarray(x.T)
        out[...] = x.T
        return out

    def formula(self, a):
        return ("T", a[0])

    def gradient(self, i, dy, a, y):
        return ("T", dy)

    def backward(self, xp, dy, xs, y, needs):
        return (xp.ascontiguousarray(dy.T),)


PRIMITIVES = {cls.name: cls for cls in (
    MatMul, Add, Sub, Neg, Mul, Slice, Concat, Tanh, Sigmoid, Relu, Exp,
    Div, Pow, Sqrt, Log, Abs, Sin, Cos, Maximum, Minimum, Greater, Less, GreaterEqual, LessEqual,
    Where, Floor, Mod, Sum, Mean, Transpose,
)}
BUILTIN = frozenset(PRIMITIVES)  # the table as shipped; gr.register_primitive adds a user's


def register(cls):
    """Add a user's primitive class to ``PRIMITIVES`` after checking what can be
    checked without its shapes (``graphrnn.graph.register_primitive`` is the public
    door): a GraphError of one line for each thing wrong."""
    import inspect
    what = getattr(cls, "__name__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, Primitive)):
        raise GraphError(f"register_primitive: {what} is not a subclass of gr.Primitive")
    name = cls.__dict__.get("name", cls.name)
    if not isinstance(name, str) or not name.isidentifier():
        raise GraphError(f"register_primitive: {what}.name must be an identifier, got {name!r}")
    if name in PRIMITIVES:
        raise GraphError(f"register_primitive: a primitive named {name!r} is already registered "
                         f"({PRIMITIVES[name].__name__}); choose another name")
    if not isinstance(cls.arity, int) or isinstance(cls.arity, bool) or cls.arity < 1:
        raise GraphError(f"register_primitive: {name}: arity must be a positive integer, got {cls.arity!r}")
    for member in ("forward", "backward"):
        if _owner(cls, member) is Primitive:
            raise GraphError(f"register_primitive: {name} does not define {member}")
    if _owner(cls, "shape") is Primitive:
        raise GraphError(f"register_primitive: {name} does not define shape (or subclass gr.Elementwise)")
    sig = inspect.signature(cls.forward)
    takes = [p for p in list(sig.parameters.values())[2:] if p.name != "out"
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()) and len(takes) != cls.arity:
        raise GraphError(f"register_primitive: {name}: arity {cls.arity} but forward takes "
                         f"{len(takes)} input{'s' if len(takes) != 1 else ''} ({', '.join(p.name for p in takes)})")
    if len(cls.rule) not in (0, cls.arity):
        raise GraphError(f"register_primitive: {name}: rule has {len(cls.rule)} lines for {cls.arity} inputs "
                         "(one line per input)")
    bad = [s for s in cls.saves if s != "y" and not (isinstance(s, int) and 0 <= s < cls.arity)]
    if bad:
        raise GraphError(f"register_primitive: {name}: saves names {bad}; use input positions "
                         f"0..{cls.arity - 1} and 'y'")
    _probe(cls, name)
    PRIMITIVES[name] = cls
    return cls


def _probe(cls, name):
    """Run the rule once on small inputs (each (2, 3), when its shape rule takes
    them and it needs no constructor arguments): a backward that returns the
    wrong number or shapes of gradients is refused here, not in a training run."""
    import numpy as np
    try:
        op = cls()
        out = op.check(f"register_primitive: {name}", *[(N, 3)] * cls.arity)
    except (TypeError, GraphError):
        return  # needs attributes or other shapes: check_primitive tests it on the user's shapes
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0.1, 0.9, (2, 3)) for _ in range(cls.arity)]
    y = np.asarray(op.forward(np, *xs))
    want = tuple(2 if d == N else d for d in out)
    if y.shape != want:
        raise GraphError(f"register_primitive: {name}: forward returned shape {y.shape} where its shape "
                         f"rule says {fmt_shape(want)} for inputs (2, 3)")
    needs = (True,) * cls.arity
    saved = op.saved_for(needs)
    grads = op.backward(np, np.ones_like(y), [x if i in saved else None for i, x in enumerate(xs)],
                        y if "y" in saved else None, needs)
    if not isinstance(grads, (tuple, list)) or len(grads) != cls.arity:
        raise GraphError(f"register_primitive: {name}: backward must return a tuple of {cls.arity} "
                         f"gradient{'s' if cls.arity != 1 else ''}, one per input, got {type(grads).__name__}"
                         + (f" of {len(grads)}" if isinstance(grads, (tuple, list)) else ""))
    for i, g in enumerate(grads):
        if np.shape(g) != (2, 3):
            raise GraphError(f"register_primitive: {name}: backward returned a gradient of shape "
                             f"{np.shape(g)} for input {i} of shape (2, 3)")
