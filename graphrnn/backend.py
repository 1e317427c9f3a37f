"""The array module (numpy, or cupy on a GPU) and the dtype policy.

Every op asks this module for ``xp`` instead of importing numpy, so the same
code runs on the GPU once ``set_backend("cupy")`` (or ``GRAPHRNN_BACKEND=cupy``)
is in force.
"""
from __future__ import annotations

import os

import numpy

from .errors import BackendError

FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

# "xp": None until first use. $GRAPHRNN_BACKEND is read then, not at import, so
# that a machine without CuPy still gets `graphrnn --help` and a one-line error
# from the command that needs the array module, not a traceback from an import.
_state = {"name": None, "xp": None}


def _resolve():
    set_backend(os.environ.get("GRAPHRNN_BACKEND", "").strip().lower() or "numpy")
    return _state["xp"]


def set_backend(name: str):
    """Switch every op to ``"numpy"`` or ``"cupy"``; returns the array module."""
    if name == "numpy":
        _state.update(name="numpy", xp=numpy)
        return numpy
    if name != "cupy":
        raise BackendError(f"unknown backend {name!r}: use 'numpy' or 'cupy'")
    try:
        import cupy
    except ImportError as exc:
        raise BackendError(
            "backend 'cupy' needs CuPy: pip install 'graphrnn[gpu]' on a machine with a CUDA GPU"
        ) from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendError("backend 'cupy': CuPy is installed but no CUDA GPU is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendError(f"backend 'cupy': no usable CUDA GPU ({exc})") from exc
    _state.update(name="cupy", xp=cupy)
    return cupy


def use_array_module(name: str, module):
    """Run every op on ``module``, an array module in numpy's image (tests use a
    fake device whose arrays refuse to mix with numpy's); ``set_backend``
    switches back."""
    _state.update(name=name, xp=module)
    return module


def get_backend() -> str:
    """``"numpy"`` or ``"cupy"``: the backend in force (resolving $GRAPHRNN_BACKEND on first use)."""
    if _state["xp"] is None:
        _resolve()
    return _state["name"]


def xp():
    """The array module in force (resolving $GRAPHRNN_BACKEND on first use)."""
    m = _state["xp"]
    return _resolve() if m is None else m


def to_numpy(a):
    """A host (numpy) copy of an array from either backend."""
    if hasattr(a, "get"):
        return a.get()
    return numpy.asarray(a)


def asarray(a, dtype=None):
    """An array of the backend in force (moves host data to the GPU when needed)."""
    return xp().asarray(a, dtype=dtype)


def check_float_dtype(dtype, what: str) -> numpy.dtype:
    dtype = numpy.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what}: dtype {dtype} is not supported; use float32 or float64")
    return dtype


def scatter_add(target, index, rows):
    """target[index[r]] += rows[r] for every r, repeated indices summed: the
    embedding's backward for a whole batch in one call.

    numpy's ``add.at`` is unbuffered and slow; summing the rows of equal indices
    after one sort (``add.reduceat``) and adding each sum once is 2.5x faster
    for a PTB batch (700 rows into a 10,000 x 100 matrix)."""
    m = xp()
    if m is not numpy:
        if m.__name__ != "cupy":  # another array module: its unbuffered add
            m.add.at(target, index, rows)
            return target
        import cupyx
        cupyx.scatter_add(target, index, rows)
        return target
    if index.size == 0:
        return target
    order = numpy.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = numpy.flatnonzero(numpy.r_[True, sorted_index[1:] != sorted_index[:-1]])
    target[sorted_index[starts]] += numpy.add.reduceat(rows[order], starts, axis=0)
    return target


class OneBlasThread:
    """A reusable context in which the BLAS libraries loaded when it was made
    (numpy's OpenBLAS, and SciPy's, which numba's ``np.dot`` calls) run on one
    thread, each getting its own count back on exit; a no-op without
    threadpoolctl.

    Products of a few rows gain nothing from a second thread on idle cores and
    lose many times over on busy ones, where OpenBLAS's threads wait on every
    call for a core another process holds: ``graphrnn train primes`` (one row,
    BLAS inside the compiled step) took 1.83 s for 3,000 iterations on one
    thread or two with the cores free, and 1.2 s against 10.4 s for 300 with
    three training jobs on the two cores. Cheap enough to enter once per
    training step (~8 µs for two libraries), where threadpoolctl's
    ``threadpool_limits`` looks the libraries up each time."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController
            self.libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # threadpoolctl missing or unable to read a library: leave BLAS as it is
            self.libs = []
        self._saved = []

    def __enter__(self):
        saved = [(c, c.get_num_threads()) for c in self.libs]
        for c, n in saved:
            if n != 1:
                c.set_num_threads(1)
        self._saved.append(saved)
        return self

    def __exit__(self, *exc):
        for c, n in self._saved.pop():
            if n != 1:
                c.set_num_threads(n)
        return False
