"""A fake accelerator array module for tests: arrays that, like CuPy's, live
"on the device" and refuse to mix with host (numpy) arrays.

- ``numpy.asarray(device_array)`` raises (``__array__``), as CuPy's does;
  ``.get()`` is the explicit copy to the host.
- A numpy array (any shape, 0-d included) handed to a device function, an
  operator or ``a[...] = host_array`` raises; Python and numpy scalars are
  fine, as they are on CuPy. ``asarray``/``array`` are the explicit copy to
  the device.
- numpy functions and ufuncs called on device arrays raise
  (``__array_function__``, ``__array_ufunc__ = None``).

Nothing is computed anywhere but numpy: this is about where arrays live, not
about speed. ``install()`` makes it graphrnn's backend for a test.
"""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np


class MixedArraysError(TypeError):
    """A host (numpy) array met a device array."""


def _host(x, where):
    if isinstance(x, FakeArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise MixedArraysError(f"{where}: a host numpy array {x.shape} {x.dtype} was given where a "
                               "device array is needed (move it with xp.asarray)")
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v, where) for v in x)
    return x  # Python and numpy scalars, None, slices, dtypes


def _wrap(r, owner=None):
    if isinstance(r, np.ndarray):
        # a view keeps its base alive, as CuPy's views do: graphrnn's workspace
        # counts references to decide whether a buffer is still in use
        base = owner if owner is not None and np.may_share_memory(r, owner._a) else None
        return FakeArray(r, base)
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, np.generic):  # CuPy reductions give 0-d device arrays, not host scalars
        return FakeArray(np.asarray(r))
    return r


def _index(key):
    # integer index arrays may come from the host, as CuPy allows
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, FakeArray):
        return key._a
    return key


class FakeArray:
    """A device array: a numpy array the host may not read implicitly."""
    __array_ufunc__ = None  # numpy's binary operators defer to ours, which refuse host arrays
    __array_priority__ = 1000

    def __init__(self, a, base=None):
        self._a = a
        self._base = base

    # -- no implicit conversion --------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise MixedArraysError("implicit conversion of a device array to numpy: use .get() "
                               "(or graphrnn.backend.to_numpy)")

    def __array_function__(self, func, types_, args, kwargs):
        raise MixedArraysError(f"numpy.{func.__name__} called on a device array: use the backend's xp")

    def get(self):
        """A host copy, as ``cupy.ndarray.get``."""
        return self._a.copy()

    def item(self):
        return self._a.item()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v, self) for v in self._a)

    def __repr__(self):
        return f"fakedevice.array({self._a!r})"

    # -- attributes ----------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: FakeArray(self._a.T, self))
    base = property(lambda self: self._base)

    # -- indexing --------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_index(key)], self)

    def __setitem__(self, key, value):
        self._a[_index(key)] = _host(value, "a[...] = value")

    def __neg__(self):
        return FakeArray(-self._a)

    def __pos__(self):
        return self

    def __abs__(self):
        return FakeArray(abs(self._a))

    def __invert__(self):
        return FakeArray(~self._a)

    __hash__ = None


def _method(name):
    def method(self, *args, **kwargs):
        args = [_host(a, f"ndarray.{name}") for a in args]
        kwargs = {k: (v._a if isinstance(v, FakeArray) else _host(v, f"ndarray.{name}"))
                  for k, v in kwargs.items()}
        return _wrap(getattr(self._a, name)(*args, **kwargs), self)
    method.__name__ = name
    return method


def _operator(name):
    def op(self, other):
        return _wrap(getattr(self._a, name)(_host(other, f"operator {name}")))
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        getattr(self._a, name)(_host(other, f"operator {name}"))
        return self
    op.__name__ = name
    return op


for _name in ("reshape", "transpose", "swapaxes", "sum", "mean", "max", "min", "argmax", "argmin",
              "copy", "astype", "ravel", "flatten", "fill", "clip", "cumsum", "squeeze", "any", "all",
              "dot", "view", "nonzero", "std", "var", "prod", "round", "repeat", "take", "conj"):
    setattr(FakeArray, _name, _method(_name))
for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__floordiv__", "__rfloordiv__", "__pow__", "__rpow__", "__mod__",
              "__matmul__", "__rmatmul__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
              "__and__", "__or__", "__xor__", "__rand__", "__ror__"):
    setattr(FakeArray, _name, _operator(_name))
for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__"):
    setattr(FakeArray, _name, _inplace(_name))
del _name


def _function(name, host_ok=False):
    fn = getattr(np, name)

    def call(*args, **kwargs):
        out = kwargs.get("out")
        if out is not None and not isinstance(out, FakeArray):
            raise MixedArraysError(f"{name}: out= must be a device array, got {type(out).__name__}")
        raw = args
        args = [(a if host_ok else _host(a, name)) if not isinstance(a, FakeArray) else a._a for a in args]
        kwargs = {k: (v._a if isinstance(v, FakeArray) else v if host_ok else _host(v, name))
                  for k, v in kwargs.items()}
        r = fn(*args, **kwargs)
        if out is not None:
            return out
        owner = next((a for a in raw if isinstance(a, FakeArray) and isinstance(r, np.ndarray)
                      and np.may_share_memory(r, a._a)), None)
        return _wrap(r, owner)
    call.__name__ = name
    return call


class _Ufunc:
    """A ufunc over device arrays, with ``.at`` (``cupy.add.at``) and ``.reduce``."""

    def __init__(self, name):
        self._f = _function(name)
        self._u = getattr(np, name)
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        return self._f(*args, **kwargs)

    def at(self, a, indices, b=None):
        if not isinstance(a, FakeArray):
            raise MixedArraysError(f"{self.__name__}.at: the target must be a device array")
        self._u.at(a._a, _index(indices), _host(b, f"{self.__name__}.at"))

    def reduce(self, a, *args, **kwargs):
        return _wrap(self._u.reduce(_host(a, f"{self.__name__}.reduce"), *args, **kwargs))


UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "negative", "tanh", "exp", "log", "sqrt",
          "maximum", "minimum", "reciprocal", "matmul", "isfinite", "isnan", "abs", "absolute", "power",
          "square", "sign", "greater", "less", "equal", "logical_and", "logical_or", "log1p", "expm1",
          "floor", "ceil", "sin", "cos", "tan", "arctan", "exp2", "log2", "mod", "remainder",
          "greater_equal", "less_equal")
FUNCTIONS = ("concatenate", "stack", "take", "flatnonzero", "vdot", "dot", "sum", "mean", "max", "min",
             "argmax", "where", "clip", "zeros_like", "ones_like", "empty_like", "full_like", "transpose",
             "einsum", "outer", "cumsum", "sort", "argsort", "unique", "diff", "count_nonzero", "linspace",
             "allclose", "array_equal", "tensordot", "squeeze", "expand_dims", "broadcast_to", "split",
             "tile", "repeat", "nonzero", "any", "all", "prod", "triu", "tril", "ravel", "reshape",
             "ascontiguousarray", "copyto", "logaddexp", "sqrt")
CREATION = ("zeros", "empty", "ones", "full", "arange", "eye", "identity")  # no array arguments


def make_module(name="fakedevice"):
    """A fresh array module in the style of ``cupy``."""
    m = types.ModuleType(name, __doc__)
    for f in UFUNCS:
        setattr(m, f, _Ufunc(f))
    for f in FUNCTIONS:
        setattr(m, f, _function(f))
    for f in CREATION:
        setattr(m, f, _function(f, host_ok=True))

    def asarray(a, dtype=None, order=None):
        """The explicit copy to the device (device arrays pass through)."""
        if isinstance(a, FakeArray):
            return a if dtype is None or a.dtype == np.dtype(dtype) else FakeArray(a._a.astype(dtype))
        return FakeArray(np.array(a, dtype=dtype, order=order or "K", copy=True))

    def array(a, dtype=None, copy=True, order="K"):
        if isinstance(a, FakeArray):
            return FakeArray(np.array(a._a, dtype=dtype, copy=copy, order=order))
        return FakeArray(np.array(a, dtype=dtype, order=order))

    def asnumpy(a):
        return a.get() if isinstance(a, FakeArray) else np.asarray(a)

    m.asarray, m.array, m.asnumpy = asarray, array, asnumpy
    m.ndarray = FakeArray
    for attr in ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool_", "intp",
                 "dtype", "newaxis", "inf", "nan", "pi", "e", "integer", "floating", "generic",
                 "finfo", "iinfo", "result_type", "promote_types", "can_cast"):
        setattr(m, attr, getattr(np, attr))
    m.random = types.SimpleNamespace(default_rng=lambda seed=None: _DeviceRng(seed))
    return m


class _DeviceRng:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        f = getattr(self._rng, name)
        return lambda *a, **k: _wrap(f(*a, **k))


@contextlib.contextmanager
def install():
    """graphrnn's backend is this fake device inside the block."""
    from graphrnn import backend
    module = make_module()
    sys.modules[module.__name__] = module
    previous = backend.get_backend()
    backend.use_array_module("fakedevice", module)
    try:
        yield module
    finally:
        backend.set_backend(previous)
        sys.modules.pop(module.__name__, None)
