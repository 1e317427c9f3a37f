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
- ``native``: the form native emitters give it: ``"elementwise"`` (then
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
    name = ""
    arity = 1
    rule: tuple = ()  # the local backward, one line per input (see the module docstring)
    saves: tuple = ()
    linear = False  # backward is the transpose of forward and needs no saved value
    writes_gradients = False  # backward_into computes into its destinations (no copy)
    elementwise = False
    packs_columns = False
    native = None            # "elementwise", "matmul", "window", "join" or None
    native_forward = ""      # for native == "elementwise": y as a scalar expression
    native_backward: tuple = ()  # ... and each input's gradient as one

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

    @classmethod
    def native_form(cls):
        """``native``, or None where a subclass redefined ``forward`` or
        ``backward`` below the class that declared the native form: a native
        emitter would otherwise run the parent's rule, not the one written."""
        if cls.native is None:
            return None
        declared = _owner(cls, "native")
        if any(_owner(cls, m) not in _ancestors_from(declared) for m in ("forward", "backward")):
            return None
        return cls.native

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


def _owner(cls, member):
    return next(k for k in cls.__mro__ if member in k.__dict__)


def _ancestors_from(cls):
    return set(cls.__mro__)


class Elementwise(Primitive):
    elementwise = True

    def shape(self, where, *shapes):
        return shapes[0]


class Binary(Primitive):
    arity = 2
    elementwise = True

    def shape(self, where, a, b):
        out = broadcast_shapes(a, b, where)
        self._broadcast = (tuple(a) != out, tuple(b) != out)  # known once, not per step
        return out

    def reduce(self, xp, g, i):
        """The gradient for input i: g summed over the axes that input was broadcast along."""
        return unbroadcast(xp, g, self.in_shapes[i]) if self._broadcast[i] else g


# --------------------------------------------------------------------------- linear

class MatMul(Primitive):
    """y = a @ w;  da = dy @ wᵀ,  dw = aᵀ dy   (rows of a are independent)"""
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
    name = "add"
    rule = ("da = dy", "db = dy")
    linear = True
    native = "elementwise"
    native_forward = "a + b"
    native_backward = ("dy", "dy")

    def forward(self, xp, a, b, out=None):
        return xp.add(a, b, out=out)

    def passes_gradient(self):
        return (not self._broadcast[0], not self._broadcast[1])

    def backward(self, xp, dy, xs, y, needs):
        return (self.reduce(xp, dy, 0) if needs[0] else None,
                self.reduce(xp, dy, 1) if needs[1] else None)


class Sub(Binary):
    """y = a - b;  da = dy,  db = -dy"""
    name = "sub"
    rule = ("da = dy", "db = −dy")
    linear = True
    native = "elementwise"
    native_forward = "a - b"
    native_backward = ("dy", "-dy")

    def forward(self, xp, a, b, out=None):
        return xp.subtract(a, b, out=out)

    def passes_gradient(self):
        return (not self._broadcast[0], False)

    def backward(self, xp, dy, xs, y, needs):
        return (self.reduce(xp, dy, 0) if needs[0] else None,
                -self.reduce(xp, dy, 1) if needs[1] else None)


class Neg(Elementwise):
    """y = -x;  dx = -dy"""
    name = "neg"
    rule = ("dx = −dy",)
    linear = True
    native = "elementwise"
    native_forward = "-x"
    native_backward = ("-dy",)

    def forward(self, xp, x, out=None):
        return xp.negative(x, out=out)

    def backward(self, xp, dy, xs, y, needs):
        return (-dy,)


class Slice(Primitive):
    """y = x[..., start:stop];  dx = zeros with dy placed at [..., start:stop]"""
    name = "slice"
    rule = ("dx[:, i:j] = dy",)
    linear = True
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

    def forward(self, xp, x, out=None):
        return x[..., self.start:self.stop]

    def backward(self, xp, dy, xs, y, needs):
        dx = xp.zeros(dy.shape[:-1] + (self.in_shapes[0][-1],), dtype=dy.dtype)
        dx[..., self.start:self.stop] = dy
        return (dx,)


class Concat(Primitive):
    """y = [x1 | x2 | ...] along the last axis;  dxi = dy[..., offset_i : offset_i + width_i]"""
    name = "concat"
    arity = None  # any number of inputs
    rule = ("dxₖ = dy[:, xₖ's columns]",)  # one line for every input
    linear = True
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

    def backward(self, xp, dy, xs, y, needs):
        return (dy * y,)


PRIMITIVES = {cls.name: cls for cls in (
    MatMul, Add, Sub, Neg, Mul, Slice, Concat, Tanh, Sigmoid, Relu, Exp,
)}
