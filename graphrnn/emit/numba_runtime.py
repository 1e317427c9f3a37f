"""Running the numba emitter's loops: the disk cache, compiling, and which
loops a run gets.

The generated module is written once to ``<cache>/native/<hash>.py`` (the hash
of its text, so it is keyed by the plan and the dtype) and numba keeps the
compiled kernels beside it (``cache=True``). ``<cache>`` is
``$GRAPHRNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphrnn``, else
``~/.cache/graphrnn``.

Compiling must never make a run slower than the numpy loops would have been,
a cold cache included. So ``engine="auto"``:

- uses native loops only for sizes where they were measured faster
  (``choose_form``): at small sizes every numpy call is overhead and one
  native kernel wins by 10x; at large ones the matmuls dominate and numpy's
  vectorised ``exp``/``tanh`` beat numba's scalar ones (no SVML here);
- loads kernels that are already in the disk cache (a fraction of a second,
  in a background thread) and switches once they are loaded;
- otherwise keeps running the numpy loops and, once the plan has proved hot
  (``HOT_CALLS`` runs), compiles its kernels in a separate process, so the
  compile takes neither the GIL nor the main thread. The next run, or this
  one once the build is done, loads them from the cache.

``engine="native"`` compiles in the foreground when it must (tests, benchmarks).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import warnings

import numpy as np

from . import numba_loops, numpy_loops

HOT_CALLS = 30          # runs of one plan before auto builds its kernels in the background
_BUILDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_kernels.py")

_warned = set()
_numba_ok = None


def numba_available() -> bool:
    """Is numba importable here? (Looked up without importing it.)"""
    global _numba_ok
    if _numba_ok is None:
        try:
            _numba_ok = importlib.util.find_spec("numba") is not None
        except (ImportError, ValueError):  # sys.modules["numba"] = None hides it
            _numba_ok = False
    return _numba_ok


def cache_dir() -> str:
    root = os.environ.get("GRAPHRNN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "graphrnn")
    return os.path.join(root, "native")


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# --------------------------------------------------------------------------- choosing

# Measured with benchmarks/native_threshold.py (float32, one core): per
# forward+backward, the fused native loops against the numpy loops over
# N x H for the built-in cells. Native wins while a step's elementwise work is
# small; past FUSED_MAX_ROWS_H (N*H) its plain matmul loops fall behind BLAS,
# and past STAGED_MAX_ROWS_H its scalar exp/tanh fall behind numpy's SIMD ones.
FUSED_MAX_WORK = 40_000      # N * (matmul columns summed over the step's matmuls) * input width
STAGED_MAX_ELEMS = 0         # the staged form never won where fused did not: off


def choose_form(plan, n, t):
    """``"fused"``, ``"staged"`` or None (numpy) for a run of this size."""
    work = n * sum(plan.width[plan.info[m][1][0]] * plan.width[m]
                   for what, m in plan.stages if what == "matmul")
    if work <= FUSED_MAX_WORK:
        return "fused"
    elems = n * sum(plan.width[m] for m in plan.recurrent_ops)
    if elems <= STAGED_MAX_ELEMS:
        return "staged"
    return None


# --------------------------------------------------------------------------- modules and kernels

class Kernels:
    """One plan's native module for one dtype: its file, build and load state."""

    def __init__(self, plan, dtype):
        self.plan, self.dtype = plan, np.dtype(dtype)
        self.text, self.hash = numba_loops.module_source(plan, dtype)
        self.path = os.path.join(cache_dir(), f"{self.hash}.py")
        self.module = None
        self.ready = set()       # drivers whose kernels are compiled and loaded
        self.wanted = set()      # drivers runs have asked for (what a build compiles)
        self.building, self.failed = set(), set()
        self.loading = None      # a background thread loading from the cache
        self.build = None        # a background process compiling into the cache
        self.calls = 0
        self.lock = threading.Lock()

    def write(self):
        """Write the module file once; never touch an existing one (numba's cache
        is keyed by the file's time stamp as well)."""
        if os.path.exists(self.path):
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(self.text)
        try:
            os.link(tmp, self.path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)

    def _import(self):
        if self.module is None:
            name = f"graphrnn_native_{self.hash}"
            spec = importlib.util.spec_from_file_location(name, self.path)
            mod = importlib.util.module_from_spec(spec)
            # numba's cached kernels name their module: it must be importable by that name
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            self.module = mod
        return self.module

    def compile(self, drivers):
        """Compile (or load from the disk cache) the kernels these drivers call."""
        self.write()
        import numba
        mod = self._import()
        for d in drivers:
            for k in mod.KERNELS[d]:
                sig = tuple(eval(t, {}, vars(numba)) for t in mod.SIGNATURES[k])
                getattr(mod, k).compile(sig)
        with self.lock:
            self.ready |= set(drivers)

    def cached(self, drivers) -> bool:
        """Are these drivers' kernels in numba's disk cache (an index file each)?"""
        if not os.path.exists(self.path):
            return False
        folder = os.path.join(os.path.dirname(self.path), "__pycache__")
        try:
            names = os.listdir(folder)
        except OSError:
            return False
        stem = os.path.splitext(os.path.basename(self.path))[0]
        kernels = {k for d in drivers for k in _kernel_names(self.text, d)}
        return all(any(n.startswith(f"{stem}.{k}-") and n.endswith(".nbi") for n in names) for k in kernels)

    def load_in_background(self, drivers):
        if self.loading is None or not self.loading.is_alive():
            self.loading = threading.Thread(target=self._quiet_compile, args=(drivers,), daemon=True)
            self.loading.start()

    def _quiet_compile(self, drivers):
        try:
            self.compile(drivers)
        except Exception:  # noqa: BLE001 - a failed load leaves the numpy loops in place
            pass

    def build_in_background(self, drivers):
        """Compile into the disk cache in another process (no GIL shared)."""
        if self.build is not None:
            return
        self.write()
        self.building = set(drivers)
        kernels = sorted({k for d in drivers for k in _kernel_names(self.text, d)})
        self.build = subprocess.Popen([sys.executable, _BUILDER, self.path, *kernels],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kernel_names(text, driver):
    line = next(ln for ln in text.splitlines() if ln.startswith("KERNELS = "))
    return eval(line[len("KERNELS = "):], {})[driver]


def backward_driver(form, need_xs, has_dhs):
    return f"backward_{form}_{int(need_xs)}{int(has_dhs)}"


class NativeLoops:
    """The loops seam (see ``graphrnn.emit.NumpyLoops``) over a module's drivers.

    Both engines read and write the same buffers, so a run whose backward
    kernels are not ready yet runs that backward on the numpy loops; with
    ``compile_missing`` (engine="native") they are compiled there and then."""
    name = "native"

    def __init__(self, kernels, form, compile_missing):
        self.kernels, self.form, self.compile_missing = kernels, form, compile_missing
        self._forward = getattr(kernels.module, f"forward_{form}")
        self._backward = {}
        self.numpy = None

    def forward(self, run, E):
        self._forward(run.t, run.n, E, run.hv, run.sv)

    def backward(self, run, E, need_xs, has_dhs):
        fn = self._backward.get((need_xs, has_dhs))
        if fn is None:
            name = backward_driver(self.form, need_xs, has_dhs)
            if name not in self.kernels.ready:
                if not self.compile_missing:
                    self.kernels.wanted.add(name)
                    _advance(self.kernels)
                    return numpy_loops.loop(self.kernels.plan, "backward", need_xs, has_dhs)(run.xp, run.t, E)
                self.kernels.compile([name])
            fn = self._backward[(need_xs, has_dhs)] = getattr(self.kernels.module, name)
        return fn(run.t, run.n, E, run.hv, run.sv)


class PendingLoops:
    """The numpy loops, for auto while a plan's kernels are not ready; it notes
    which backward each run asks for, so that the build compiles those too."""
    name = "numpy"

    def __init__(self, kernels, form):
        self.kernels, self.form = kernels, form

    def forward(self, run, E):
        numpy_loops.loop(self.kernels.plan, "forward")(run.xp, run.t, E)

    def backward(self, run, E, need_xs, has_dhs):
        self.kernels.wanted.add(backward_driver(self.form, need_xs, has_dhs))
        return numpy_loops.loop(self.kernels.plan, "backward", need_xs, has_dhs)(run.xp, run.t, E)


def _kernels(plan, dtype):
    key = ("native-kernels", np.dtype(dtype).name)
    k = plan.compiled.get(key)
    if k is None:
        k = plan.compiled[key] = Kernels(plan, dtype)
    return k


def loops(plan, engine, xp, dtype, n, t):
    """``(native loops or None for the numpy ones, settled)``; ``settled`` is
    False while auto waits for kernels (ask again next run)."""
    if xp is not np or np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None, True
    if not numba_available():
        if engine == "native":
            _warn_once(("no-numba",), "graphrnn: numba is not installed; engine='native' runs the numpy "
                                      "loops (pip install numba)")
        return None, True
    if ("native-unsupported",) in plan.compiled:
        return None, True
    try:
        kernels = _kernels(plan, dtype)
    except numba_loops.NotNative as exc:
        plan.compiled[("native-unsupported",)] = str(exc)
        _warn_once(("not-native", id(plan)), f"graphrnn: cell {plan.cell.name!r} runs on the numpy loops: {exc}")
        return None, True
    if engine == "native":
        form = choose_form(plan, n, t) or "staged"
        if f"forward_{form}" not in kernels.ready:
            kernels.compile([f"forward_{form}"])
        return _native(kernels, form, True), True
    form = choose_form(plan, n, t)
    if form is None:
        return None, True
    kernels.wanted.add(f"forward_{form}")
    if f"forward_{form}" in kernels.ready:
        return _native(kernels, form, False), True
    kernels.calls += 1
    _advance(kernels)
    pending = plan.compiled.get(("native-pending", kernels.dtype.name, form))
    if pending is None:
        pending = plan.compiled[("native-pending", kernels.dtype.name, form)] = PendingLoops(kernels, form)
    return pending, False


def _advance(kernels):
    """One step of auto's start-up: load what the cache has, build what it lacks."""
    if kernels.loading is not None and kernels.loading.is_alive():
        return
    if kernels.build is not None:
        if kernels.build.poll() is None:
            return
        if kernels.build.returncode != 0:  # leave these drivers to the numpy loops
            kernels.failed |= kernels.building
        kernels.build = None
    drivers = sorted(kernels.wanted - kernels.ready - kernels.failed)
    if not drivers:
        return
    if kernels.cached(drivers):
        kernels.load_in_background(drivers)
    elif kernels.calls >= HOT_CALLS:
        kernels.build_in_background(drivers)


def _native(kernels, form, compile_missing):
    key = (kernels.dtype.name, form, compile_missing)
    loops = kernels.plan.compiled.get(("native-loops", key))
    if loops is None:
        loops = kernels.plan.compiled[("native-loops", key)] = NativeLoops(kernels, form, compile_missing)
    return loops
