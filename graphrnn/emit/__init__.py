"""Emitters: each turns a finished ``Plan`` into loops for one machine.

- ``numpy_loops``: Python source over the array module in force (numpy, cupy).
- ``numba_loops``: native per-step loops compiled with numba, cached on disk
  (``native_layout`` places values, ``numba_runtime`` compiles and chooses).
- ``cuda_kernels``: the fused elementwise regions as CuPy kernel source.

None of them decides what is computed or stored; they read the plan. Loops
(``NumpyLoops`` and its like) are the seam to the scheduler: ``forward(env)``
returns the engine that ran, ``backward(env, need_xs, has_dhs)`` each state's
gradient at step 0; ``env`` is the ``plan.LoopEnv`` holding the buffers the
plan lists, by the plan's names. What an emitter makes for a plan it keeps
itself (per plan, weakly: it goes when the plan goes), never on the plan.
"""
from __future__ import annotations

import contextlib
import os
import weakref

from . import numpy_loops

_loops = weakref.WeakKeyDictionary()  # plan -> {(engine, xp, dtype, n): loops}

ENGINES = ("numpy", "native", "auto")

# The engine a running trainer holds every unroll to (innermost last): auto may
# switch a run from the numpy loops to native ones part-way, which changes the
# rounding, and a resumed run must end bit for bit where an uninterrupted one does.
_pinned = []


@contextlib.contextmanager
def pinned(name):
    """Within the block, runs that do not name an engine use ``name``."""
    _pinned.append(engine_setting(name))
    try:
        yield
    finally:
        _pinned.pop()


class NumpyLoops:
    """The per-step loops as generated Python over the array module in force."""
    name = "numpy"

    def __init__(self, plan):
        self.plan = plan
        self._forward = numpy_loops.loop(plan, "forward")
        self._backward = {}

    def forward(self, env):
        self._forward(env)
        return self.name

    def backward(self, env, need_xs, has_dhs):
        fn = self._backward.get((need_xs, has_dhs))
        if fn is None:
            fn = self._backward[(need_xs, has_dhs)] = numpy_loops.loop(self.plan, "backward", need_xs, has_dhs)
        return fn(env)


def engine_setting(engine=None, default="auto") -> str:
    """The engine asked for: the argument, else ``$GRAPHRNN_ENGINE``, else ``default``."""
    if engine is None and _pinned:
        return _pinned[-1]
    name = engine if engine is not None else (os.environ.get("GRAPHRNN_ENGINE", "").strip().lower() or default)
    if name not in ENGINES:
        from ..primitives import GraphError
        raise GraphError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    return name


def loops_for(plan, engine, xp, dtype, n, t):
    """The loops a run of ``plan`` at these sizes uses (see ``gr.unroll``),
    chosen once per plan, engine and size: a training loop pays one look-up."""
    name = engine_setting(engine)
    # T is not in the key: the choice depends on the batch only, and a task
    # that unrolls sequences of many lengths (dinosaurs) must not rebuild loops
    key = (name, xp, dtype, n)  # a backend switch must not find native loops
    made = _loops.get(plan)
    if made is None:
        made = _loops[plan] = {}
    loops = made.get(key)
    if loops is None:
        if name == "native" and getattr(xp, "__name__", "") == "cupy":
            # the fused regions as CUDA kernels; asked for by name only until
            # they have run on a GPU (see cuda_kernels)
            from . import cuda_kernels, numba_loops, numba_runtime
            try:
                loops = cuda_kernels.CudaLoops(plan, dtype)
            except numba_loops.NotNative as exc:  # as on the CPU: the numpy loops, said once
                numba_runtime._warn_once(("not-native", id(plan)),
                                         f"graphrnn: cell {plan.cell.name!r} runs on the numpy loops: {exc}")
        elif name != "numpy":
            from . import numba_runtime
            loops = numba_runtime.loops(plan, name, xp, dtype, n, t)
        if loops is None:
            loops = made.get("numpy")
            if loops is None:
                loops = made["numpy"] = NumpyLoops(plan)
        made[key] = loops
    return loops


def warm(cell, n, t, dtype, need_xs=True, has_dhs=True, fuse=True):
    """Compile now the native kernels engine="auto" would use for runs of
    ``cell`` at batch ``n``, ``t`` steps and ``dtype``, so that such runs use
    them from the first call (benchmarks: no compile inside a timing). Does
    nothing where auto keeps the numpy loops. Returns the engine such runs get."""
    import numpy

    from ..plan import compile_cell
    plan = compile_cell(cell, fuse)
    loops = loops_for(plan, "auto", numpy, numpy.dtype(dtype), n, t)
    kernels = getattr(loops, "kernels", None)
    from . import numba_runtime
    if kernels is None or not numba_runtime._generates(kernels):
        return "numpy"
    kernels.compile([f"forward_{loops.form}", numba_runtime.backward_driver(loops.form, need_xs, has_dhs)])
    return "native"
