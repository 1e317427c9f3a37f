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
  (``choose_form``): at small sizes every numpy call is overhead and the
  native loops win 2-5x; at large ones the matmuls dominate and numpy's
  vectorised ``exp``/``tanh`` beat numba's scalar ones (no SVML here);
- runs the numpy loops first, timing them. A plan that spent
  ``BUILD_AT_EXIT_S`` seconds there gets its kernels compiled into the disk
  cache by a process started when this one ends: a compile running beside a
  run slows it even at idle priority (measured: 5% on a 2-vCPU machine, whose
  vCPUs share a core), so only a run already ``BUILD_AFTER_S`` seconds into its
  loops, long enough for that to vanish, starts one while it runs. Builds run
  at idle priority, in their own process: they take neither the GIL nor CPU
  time a busy machine would give anyone else.
- loads kernels from the cache only where that pays. The first load in a
  process costs 0.5-0.9 s of numba start-up (measured; done in a thread,
  it still takes much of the GIL); native loops save a fraction of the loop
  time still to come, which only the past can tell: each process leaves, beside
  the module, how many runs the plan had and what a run cost on the numpy
  loops (``<hash>.history.json``). A plan whose last process ran long enough
  to repay the load 1.5 times over loads it at once; one without history loads
  after ``LOAD_AFTER_S`` seconds in the numpy loops. Later loads in a process
  cost milliseconds.

``engine="native"`` compiles in the foreground when it must, and says so once
on stderr with the time it took (a cold cache; the next process loads it from
disk). Where a plan's kernels are already in the disk cache, ``engine="auto"``
loads them at once and runs native from its first call.

No process of graphrnn's outlives the user's command unless asked: a build
started while a run goes on ends with it (killed at exit, its lock removed),
and the build of what a short run wanted, started at its exit and left to run
detached, happens only with ``GRAPHRNN_BACKGROUND_BUILD=1``.
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref

import numpy as np

from . import native_layout, numba_loops, numpy_loops, scalar

BUILD_AT_EXIT_S = 0.5   # seconds a plan ran on the numpy loops for its kernels to be built at exit
BUILD_AFTER_S = 10.0    # ... before auto builds them while the run goes on
LOAD_AFTER_S = 3.0      # ... before the process's first load from the cache, without history
LOAD_AGAIN_AFTER_S = 0.02  # ... before a later load (numba already running)
HISTORY_AFTER_S = 0.05  # ... before its history is read (a plan used less never pays for it)
FIRST_LOAD_S = 0.9      # numba's start-up in a process, the most measured
SPEEDUP = {"fused": 3.0, "staged": 1.5}  # native over numpy loops where auto picks them (typical)
CHECK_EVERY_S = 0.25    # loop seconds between two looks at the disk
LOAD_MARGIN = 1.5       # a first load must be repaid this many times over, by the history's measure
_loaded_any = []
STALE_BUILD_S = 600     # a build lock older than this was left by a build that died
_BUILDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_kernels.py")

log = logging.getLogger("graphrnn.native")
_warned = set()
_numba_ok = None


class _PlanNative:
    """What this module keeps for one plan: its per-step costs (made on first
    use), why it has no native form (None while it may have one), and its
    ``Kernels`` per dtype name."""

    def __init__(self):
        self.costs = None
        self.unsupported = None
        self.kernels = {}


_plans = weakref.WeakKeyDictionary()  # plan -> _PlanNative; goes when the plan goes


def _state(plan):
    st = _plans.get(plan)
    if st is None:
        st = _plans[plan] = _PlanNative()
    return st


def numba_available() -> bool:
    """Is numba importable here? (Looked up without importing it.)"""
    global _numba_ok
    if _numba_ok is None:
        try:
            _numba_ok = importlib.util.find_spec("numba") is not None
        except (ImportError, ValueError):  # sys.modules["numba"] = None hides it
            _numba_ok = False
    return _numba_ok


def background_builds() -> bool:
    """May a process of graphrnn's outlive the command that started it, to
    compile into the cache? Only when asked (``GRAPHRNN_BACKGROUND_BUILD=1``):
    a user on a shared machine or a batch job does not expect one."""
    return os.environ.get("GRAPHRNN_BACKGROUND_BUILD", "").strip().lower() in ("1", "true", "yes", "on")


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

# Measured with benchmarks/native_threshold.py (benchmarks/results/native_threshold.md:
# float32, one BLAS thread, T=16, forward + backward, interleaved with the numpy
# loops). The fused loops win 2-5x while a step's matmuls are small (their plain
# loops against BLAS) and lose past about 20,000 multiply-adds per step, or
# with more than 16 rows (rnn at N=32, H=16: 0.95x); the staged loops win
# where the numpy loops' per-call cost still exceeds what numba's scalar
# exp/tanh lose to numpy's vectorised ones (no SVML here): about 250
# transcendental entries per step for every elementwise op they save.
FUSED_MAX_MACS = 20_000
FUSED_MAX_ROWS = 16
STAGED_TRANSCENDENTALS_PER_OP = 250


def step_costs(plan):
    """Per batch row and step: (matmul multiply-adds, transcendental entries,
    elementwise ops the numpy loops call)."""
    macs = sum(plan.width[plan.info[m][1][0]] * plan.width[m]
               for what, m in native_layout.stages(plan) if what == "matmul")
    trans = ops = 0
    for n in plan.recurrent_ops:
        op = plan.info[n][0]
        if op.native_form() == "elementwise":
            ops += 1
            if scalar.calls(op.native_forward):  # exp, tanh: the costly part of a pass
                trans += plan.width[n]
    return macs, trans, ops


def choose_form(plan, n, t):
    """``"fused"``, ``"staged"`` or None (numpy) for a run of this size."""
    st = _state(plan)
    if st.costs is None:
        st.costs = step_costs(plan)
    macs, trans, ops = st.costs
    if n <= FUSED_MAX_ROWS and n * macs <= FUSED_MAX_MACS:
        # a Python rule (a user's primitive) needs the staged form's seams
        return "staged" if native_layout.python_nodes(plan) else "fused"
    if n * trans <= STAGED_TRANSCENDENTALS_PER_OP * ops:
        return "staged"
    return None


# --------------------------------------------------------------------------- modules and kernels

class Kernels:
    """One plan's native module for one dtype: its file, build and load state."""

    def __init__(self, plan, dtype):
        self.plan, self.dtype = plan, np.dtype(dtype)
        self._source = None
        self.module = None
        self.ready = set()       # drivers whose kernels are compiled and loaded
        self.wanted = set()      # drivers runs have asked for (what a build compiles)
        self.building, self.failed = set(), set()
        self.build = None        # a background process compiling into the cache
        self.loading = None      # a thread loading from the cache
        self.loop_seconds = 0.0  # time runs of this plan spent in the numpy loops
        self.runs = self.numpy_runs = 0
        self.next_check = 0.0    # loop seconds at which auto looks at the disk again
        self.history = None      # what the last process recorded, once read
        self.auto = {}           # form -> AutoLoops
        self.loops = {}          # (form, compile_missing) -> NativeLoops
        self.lock = threading.Lock()

    def _generated(self):
        # made on first need: 15-25 ms a plan, which a short run under auto,
        # never needing native code, should not pay
        if self._source is None:
            text, digest, names = numba_loops.module_source(self.plan, self.dtype)
            self._source = (text, digest, names, os.path.join(cache_dir(), f"{digest}.py"))
        return self._source

    text = property(lambda self: self._generated()[0])
    hash = property(lambda self: self._generated()[1])
    kernel_names = property(lambda self: self._generated()[2])
    path = property(lambda self: self._generated()[3])

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
            if hasattr(mod, "_PY"):  # the ops that run through their Python rule
                mod._PY.update({n: self.plan.info[n][0] for n in native_layout.python_nodes(self.plan)})
            self.module = mod
        return self.module

    def compile(self, drivers, say=False):
        """Compile (or load from the disk cache) the kernels these drivers call.
        With ``say``, a compile the cache cannot spare is announced on stderr
        with its time (a run waiting on a compiler should know why)."""
        cold = say and not self.cached(drivers)
        if cold:
            t0 = time.perf_counter()
            print(f"graphrnn: compiling the native loops of cell {self.plan.cell.name!r} "
                  f"(once; cached in {os.path.dirname(self.path)})...", file=sys.stderr, flush=True)
        self._compile(drivers)
        if cold:
            print(f"graphrnn: compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def _compile(self, drivers):
        self.write()
        import numba
        mod = self._import()
        for d in drivers:
            for k in mod.KERNELS[d]:
                sig = tuple(eval(t, {}, vars(numba)) for t in mod.SIGNATURES[k])
                getattr(mod, k).compile(sig)
        with self.lock:
            self.ready |= set(drivers)
        _loaded_any.append(True)

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
        kernels = {k for d in drivers for k in self.kernel_names[d]}
        return all(any(n.startswith(f"{stem}.{k}-") and n.endswith(".nbi") for n in names) for k in kernels)

    def load_in_background(self, drivers):
        """Load in a thread: numba's start-up holds the GIL for much of its
        0.5-0.9 s, but its LLVM calls release it, and the runs go on meanwhile
        (measured on dinosaurs: 0.86x the numpy run's time, against 1.01x
        loading in the foreground)."""
        if self.loading is None or not self.loading.is_alive():
            self.loading = threading.Thread(target=self.load, args=(drivers,), daemon=True)
            self.loading.start()

    def load(self, drivers):
        t0 = time.perf_counter()
        try:
            self.compile(drivers)
        except Exception as exc:  # noqa: BLE001 - a failed load leaves the numpy loops in place
            log.warning("cell %r: loading native kernels failed: %s", self.plan.cell.name, exc)
            self.failed |= set(drivers)
            return
        log.info("cell %r: native %s loaded in %.2f s", self.plan.cell.name, ", ".join(drivers),
                 time.perf_counter() - t0)

    # the history: how long this plan's last process spent in its loops
    def _history_path(self):
        return self.path[:-3] + ".history.json"

    def read_history(self):
        if self.history is None:
            try:
                with open(self._history_path()) as f:
                    h = json.load(f)
                self.history = (int(h["runs"]), float(h["numpy_s_per_run"]))
            except (OSError, ValueError, KeyError, TypeError):
                self.history = ()
        return self.history

    def write_history(self):
        per_run = self.loop_seconds / self.numpy_runs if self.numpy_runs else None
        if per_run is None:
            past = self.read_history()
            per_run = past[1] if past else None
        if per_run is None or not self.runs:
            return
        tmp = f"{self._history_path()}.{os.getpid()}.tmp"
        try:
            self.write()
            with open(tmp, "w") as f:
                json.dump({"runs": self.runs, "numpy_s_per_run": per_run}, f)
            os.replace(tmp, self._history_path())
        except OSError:
            pass

    def build_in_background(self, drivers, detached=False):
        """Compile into the disk cache in another process (no GIL shared), unless
        another process is building this module already (workers of a sweep
        all reach the same plan): then its result is loaded when it is there."""
        if self.build is not None:
            return
        self.write()
        lock = self.path + ".building"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                if time.time() - os.path.getmtime(lock) < STALE_BUILD_S:
                    return
                os.unlink(lock)  # left by a build that died
            except OSError:
                pass
            return
        os.close(fd)
        self.building = set(drivers)
        kernels = sorted({k for d in drivers for k in self.kernel_names[d]})
        log.info("cell %r: building native %s in the background (%s)", self.plan.cell.name,
                 ", ".join(drivers), self.path)
        self.build = subprocess.Popen([sys.executable, _BUILDER, self.path, lock, *kernels],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, start_new_session=detached)
        with open(lock, "w") as f:  # who holds it, for whoever waits on it
            f.write(str(self.build.pid))


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

    def forward(self, env):
        self._forward(env.T, env.N, env.arrays)
        return self.name

    def backward(self, env, need_xs, has_dhs):
        fn = self._backward.get((need_xs, has_dhs))
        if fn is None:
            name = backward_driver(self.form, need_xs, has_dhs)
            if name not in self.kernels.ready:
                if not self.compile_missing:
                    self.kernels.wanted.add(name)
                    _advance(self.kernels, self.form)
                    return numpy_loops.loop(self.kernels.plan, "backward", need_xs, has_dhs)(env)
                self.kernels.compile([name], say=True)
            fn = self._backward[(need_xs, has_dhs)] = getattr(self.kernels.module, name)
        return fn(env.T, env.N, env.arrays)


class AutoLoops:
    """engine="auto" for one plan, size class and dtype: the numpy loops, timed,
    until the native kernels are ready, then those. Each run asks once, at its
    forward; a run's backward uses native kernels where they are ready (both
    engines use the same buffers, so a run may mix them)."""
    name = "numpy"

    def __init__(self, kernels, form):
        self.kernels, self.form = kernels, form
        self.native = None
        self._forward_driver = f"forward_{form}"

    def forward(self, env):
        self.kernels.runs += 1
        native = self.native
        if native is None:
            native = self._poll()
        if native is not None:
            return native.forward(env)
        self.kernels.numpy_runs += 1
        t0 = time.perf_counter()
        numpy_loops.loop(self.kernels.plan, "forward")(env)
        self.kernels.loop_seconds += time.perf_counter() - t0
        return "numpy"

    def backward(self, env, need_xs, has_dhs):
        if self.native is not None:
            return self.native.backward(env, need_xs, has_dhs)
        self.kernels.wanted.add(backward_driver(self.form, need_xs, has_dhs))
        t0 = time.perf_counter()
        carries = numpy_loops.loop(self.kernels.plan, "backward", need_xs, has_dhs)(env)
        self.kernels.loop_seconds += time.perf_counter() - t0
        return carries

    def _poll(self):
        kernels = self.kernels
        if self._forward_driver in kernels.ready:
            self.native = _native(kernels, self.form, False)
            return self.native
        _advance(kernels, self.form)
        if self._forward_driver in kernels.ready:
            self.native = _native(kernels, self.form, False)
        return self.native


def _kernels(plan, dtype):
    made = _state(plan).kernels
    k = made.get(np.dtype(dtype).name)
    if k is None:
        k = made[np.dtype(dtype).name] = Kernels(plan, dtype)
    return k


def loops(plan, engine, xp, dtype, n, t):
    """Native loops for engine="native", ``AutoLoops`` for auto where a native
    form pays at this size, None for the numpy loops."""
    if xp is not np or np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    if not numba_available():
        if engine == "native":
            _warn_once(("no-numba",), "graphrnn: numba is not installed; engine='native' runs the numpy "
                                      "loops (pip install numba)")
        return None
    if _state(plan).unsupported is not None:
        return None
    kernels = _kernels(plan, dtype)
    if engine == "native" and not _generates(kernels):
        return None
    if engine == "native":
        form = choose_form(plan, n, t) or "staged"
        if f"forward_{form}" not in kernels.ready:
            kernels.compile([f"forward_{form}"], say=True)
        return _native(kernels, form, True)
    form = choose_form(plan, n, t)
    if form is None:
        return None
    forward = f"forward_{form}"
    if forward not in kernels.failed and _generates(kernels) and (
            forward in kernels.ready or kernels.cached([forward])):
        # compiled before (by engine="native", graphrnn train, a build): native
        # from the first call; a backward not in the cache runs on the numpy loops
        # until auto has built it, as before
        try:
            if forward not in kernels.ready:
                kernels.compile([forward])
            return _native(kernels, form, False)
        except Exception as exc:  # noqa: BLE001 - a damaged cache leaves the numpy loops
            log.warning("cell %r: loading native kernels failed: %s", plan.cell.name, exc)
            kernels.failed.add(forward)
    kernels.wanted.add(f"forward_{form}")
    auto = kernels.auto.get(form)
    if auto is None:
        auto = kernels.auto[form] = AutoLoops(kernels, form)
    return auto


def _generates(kernels):
    """Can this plan be emitted natively? Says once where it cannot."""
    plan = kernels.plan
    st = _state(plan)
    if st.unsupported is not None:
        return False
    try:
        kernels.path
    except numba_loops.NotNative as exc:
        st.unsupported = str(exc)
        _warn_once(("not-native", id(plan)), f"graphrnn: cell {plan.cell.name!r} runs on the numpy loops: {exc}")
        return False
    return True


def _advance(kernels, form):
    """One step of auto's start-up: load what the cache has where it pays,
    build what it lacks."""
    if kernels.loading is not None and kernels.loading.is_alive():
        return
    if kernels.build is not None:
        if kernels.build.poll() is None:
            return
        if kernels.build.returncode != 0:  # leave these drivers to the numpy loops
            kernels.failed |= kernels.building
        kernels.build = None
        kernels.next_check = 0.0  # its kernels are on disk now
    spent = kernels.loop_seconds
    if spent < kernels.next_check:
        return  # the common case: nothing could have changed since the last look
    drivers = sorted(kernels.wanted - kernels.ready - kernels.failed)
    if not drivers:
        return
    if spent < (LOAD_AGAIN_AFTER_S if _loaded_any else HISTORY_AFTER_S):
        return  # a plan this young never pays for a look at the disk
    kernels.next_check = spent + CHECK_EVERY_S
    if not _generates(kernels):
        kernels.failed |= set(drivers)
        return
    _remember_at_exit(kernels)
    if kernels.cached(drivers):
        if _load_pays(kernels, form, spent):
            kernels.load_in_background(drivers)
    elif spent >= BUILD_AFTER_S:
        kernels.build_in_background(drivers)


def _load_pays(kernels, form, spent):
    if _loaded_any:
        return spent >= LOAD_AGAIN_AFTER_S
    past = kernels.read_history()
    if past:
        runs, per_run = past
        to_come = max(0.0, runs * per_run - spent)
        return to_come * (1 - 1 / SPEEDUP[form]) >= LOAD_MARGIN * FIRST_LOAD_S
    return spent >= LOAD_AFTER_S


_remembered = []


def _remember_at_exit(kernels):
    """Leave this plan's history beside its module when the process ends, and
    start the build of what it wanted and the cache lacks."""
    if not _remembered:
        atexit.register(_at_exit)
    if kernels not in _remembered:
        _remembered.append(kernels)


def _at_exit():
    for kernels in _remembered:
        kernels.write_history()
        _end_build(kernels)
        missing = sorted(kernels.wanted - kernels.ready - kernels.failed)
        if (background_builds() and missing and kernels.build is None
                and kernels.loop_seconds >= BUILD_AT_EXIT_S and not kernels.cached(missing)):
            kernels.build_in_background(missing, detached=True)


def _end_build(kernels):
    """A build still running when its process ends is ended with it (and its
    lock removed, so that the next process may build)."""
    build = kernels.build
    if build is None:
        return
    if build.poll() is None:
        build.kill()
        build.wait()
        try:
            os.unlink(kernels.path + ".building")
        except OSError:
            pass
    kernels.build = None


def _native(kernels, form, compile_missing):
    loops = kernels.loops.get((form, compile_missing))
    if loops is None:
        loops = kernels.loops[(form, compile_missing)] = NativeLoops(kernels, form, compile_missing)
    return loops
