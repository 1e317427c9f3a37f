"""The gradient checker: tolerances, reports, central differences, and the
checks of cells, functions, engines and primitives (``graphrnn.testing``
re-exports every public name; see its docstring)."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import backend, errors
from ..primitives import PRIMITIVES, Primitive

# --------------------------------------------------------------------------- tolerances

# dtype under test -> (atol, rtol). An entry passes when
# |engine - reference| <= atol + rtol * |reference|. float32 is looser because
# the engine's own rounding (the numeric side is float64) limits agreement.
TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-5),
    np.dtype(np.float32): (1e-3, 1e-2),
}
# Two engines computing the same thing differ only by rounding (their sums run
# in other orders), relative to each array's largest entry.
ENGINE_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}

# Central-difference step, applied in float64: truncation error ~EPS² and
# rounding error ~1e-16/EPS both stay near 1e-10 for these smooth functions.
EPS = 1e-6

# Arrays with more elements than this are sampled (mode="auto"): SAMPLE random
# entries by central differences plus DIRECTIONS random directions. Two forward
# passes per entry made a full check of a GRU at H=1000 take minutes; a sampled
# array costs 2 * (SAMPLE + DIRECTIONS) passes whatever its size.
FULL_LIMIT = 1024
SAMPLE = 64
DIRECTIONS = 8

# A check expected to take longer than this many seconds shows a progress bar.
PROGRESS_AFTER = 3.0

CHECK_KINDS = ("primitive", "cell", "unroll", "compiled-vs-naive", "layer", "model")
MODES = ("auto", "full", "sampled", "projection")


def tolerance(dtype, atol=None, rtol=None):
    """(atol, rtol) for a dtype, with explicit values taking precedence."""
    t_atol, t_rtol = TOLERANCES[np.dtype(dtype)]
    return (t_atol if atol is None else atol), (t_rtol if rtol is None else rtol)


def rel_error(a, b):
    """|a - b| / max(|a|, |b|), taken as 0 where both are 0 (never divides by zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isnan(diff), np.inf, r)


# --------------------------------------------------------------------------- reports

class GradientCheckError(errors.GradientCheckError):
    """An engine gradient differs from its reference; the message names the worst entry.

    Attributes: ``kind`` (primitive / cell / unroll / compiled-vs-naive),
    ``subject`` (the cell or primitive), ``entry`` (the parameter, input or
    state), ``index`` (element index in that entry; ``()`` when the worst
    comparison is along a random direction), ``direction`` (that direction's
    number, else None), ``got`` (the engine's value), ``expected`` (the
    reference), ``abs_err``, ``rel_err``, ``atol``, ``rtol``, and ``report``
    (the full report, or None).
    """

    def __init__(self, kind, subject, entry, index, got, expected, atol, rtol, report=None,
                 reference="central difference", direction=None):
        self.kind, self.subject, self.entry, self.index = kind, subject, entry, index
        self.direction = direction
        self.got, self.expected = float(got), float(expected)
        self.abs_err = abs(self.got - self.expected) if not (math.isnan(self.got) or math.isnan(self.expected)) else math.inf
        self.rel_err = float(rel_error(self.got, self.expected))
        self.atol, self.rtol, self.report, self.reference = atol, rtol, report, reference
        where = (f"along random direction {direction} (⟨u, ∇L⟩)" if direction is not None
                 else f"at index {tuple(index)}")
        msg = (f"{kind} gradient check failed for {subject}: {entry} {where}: "
               f"engine {self.got:.10g} vs {reference} {self.expected:.10g} "
               f"(abs err {self.abs_err:.3g}, rel err {self.rel_err:.3g}; "
               f"allowed {atol:g} + {rtol:g}*|expected|)")
        if report is not None:
            msg += "\n" + str(report)
        super().__init__(msg)


@dataclass
class EntryResult:
    """The comparison of one gradient array (a parameter, xs or a state0).

    ``mode`` says how it was checked: ``full`` (every element), ``sampled``
    (``checked`` random elements and ``directions`` random directions) or
    ``projection`` (directions only). ``direction`` is the number of the
    direction that came out worst, or None when the worst is an element.
    """
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    ok: bool
    worst_index: tuple
    got: float
    expected: float
    excess: float  # worst |got - expected| / (atol + rtol*|expected|); <= 1 passes
    mode: str = "full"
    checked: int = -1  # elements compared one by one (-1: all of them)
    directions: int = 0
    direction: int | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def coverage(self) -> str:
        """What was compared, for the report: ``all 48``, ``64 of 3,000,000 + 8 dirs``."""
        n = self.size if self.checked < 0 else self.checked
        text = f"all {n:,}" if n >= self.size else f"{n:,} of {self.size:,}"
        if self.directions:
            text = (f"{self.directions} dirs" if n == 0 else text + f" + {self.directions} dirs")
        return text


@dataclass
class GradCheckReport:
    """Per-entry maximum errors of one check; ``str()`` is a table.

    ``seed`` drew the random inputs, loss weights, sampled elements and
    directions (the same seed repeats the check exactly); ``evaluations``
    counts the forward passes the numeric side made.
    """
    kind: str
    subject: str
    dtype: str
    atol: float
    rtol: float
    entries: list = field(default_factory=list)
    seed: int | None = None
    evaluations: int = 0
    skipped: list = field(default_factory=list)  # what was deliberately not compared, and why

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    @property
    def max_abs(self) -> float:
        return max((e.max_abs for e in self.entries), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((e.max_rel for e in self.entries), default=0.0)

    @property
    def sampled(self) -> bool:
        """True when some array was not compared element by element."""
        return any(e.mode != "full" for e in self.entries)

    def worst(self):
        return max(self.entries, key=lambda e: e.excess, default=None)

    def __getitem__(self, name):
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def __str__(self):
        rows = [(e.name, _fmt_shape(e.shape), e.coverage(), f"{e.max_abs:.2e}", f"{e.max_rel:.2e}",
                 "ok" if e.ok else "FAIL") for e in self.entries]
        head = ("param/input", "shape", "checked", "max abs err", "max rel err", "ok")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        line = "  ".join("{:<%d}" % w for w in widths)
        seed = "" if self.seed is None else f", seed {self.seed}"
        out = [f"{self.kind} check of {self.subject} ({self.dtype}, atol {self.atol:g}, "
               f"rtol {self.rtol:g}{seed})",
               line.format(*head), line.format(*("-" * w for w in widths))]
        out += [line.format(*r).rstrip() for r in rows]
        out += [f"skipped {s}" for s in self.skipped]
        return "\n".join(out)

    def raise_if_failed(self, reference="central difference"):
        w = self.worst()
        if w is not None and not w.ok:
            raise GradientCheckError(self.kind, self.subject, w.name, w.worst_index, w.got, w.expected,
                                     self.atol, self.rtol, self, reference, w.direction)
        return self


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def compare(name, got, expected, atol, rtol, mode="full", shape=None) -> EntryResult:
    """Compare two arrays allclose-style and describe the worst element."""
    got = np.asarray(backend.to_numpy(got), dtype=np.float64)
    expected = np.asarray(backend.to_numpy(expected), dtype=np.float64)
    if got.shape != expected.shape:
        raise GradientCheckError("compare", name, name, (), np.nan, np.nan, atol, rtol,
                                 reference=f"shape {expected.shape} (engine gave {got.shape})")
    shape = tuple(got.shape) if shape is None else tuple(shape)
    if got.size == 0:
        return EntryResult(name, shape, 0.0, 0.0, True, (), 0.0, 0.0, 0.0, mode)
    diff = np.abs(got - expected)
    diff = np.where(np.isnan(diff), np.inf, diff)
    denom = atol + rtol * np.abs(expected)
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(diff == 0, 0.0, diff / np.where(denom > 0, denom, 0.0))
    k = np.unravel_index(int(np.argmax(excess)), got.shape)
    return EntryResult(name, shape, float(diff.max()), float(rel_error(got, expected).max()),
                       bool(excess[k] <= 1.0), tuple(int(i) for i in k), float(got[k]),
                       float(expected[k]), float(excess[k]), mode)


# --------------------------------------------------------------------------- numeric side

def central_differences(f, x, indices, eps=EPS):
    """``(f(x + ε e_i) − f(x − ε e_i)) / 2ε`` for each flat index i of x (float64,
    changed in place and restored exactly)."""
    flat = x.reshape(-1)
    out = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[k] = (fp - fm) / (2 * eps)
    return out


def directional_differences(f, x, analytic, rng, directions, eps=EPS):
    """(⟨u, analytic⟩, (f(x + εu) − f(x − εu)) / 2ε) along ``directions`` random
    unit vectors u (Gaussian, normalised; each made and dropped in turn, so a
    large array costs one extra copy, not one per direction)."""
    base = x.copy()
    got, want = np.empty(directions), np.empty(directions)
    for k in range(directions):
        u = rng.standard_normal(x.shape)
        u /= np.sqrt(np.vdot(u, u))
        got[k] = np.vdot(u, analytic)
        np.add(base, eps * u, out=x)
        fp = f()
        np.subtract(base, eps * u, out=x)
        fm = f()
        want[k] = (fp - fm) / (2 * eps)
    x[...] = base
    return got, want


def sample_indices(shape, k, rng):
    """``k`` distinct flat indices into an array of ``shape`` (all of them when
    it has no more), spread over the last axis.

    The last axis is cut into k equal strata with one sample in each, the other
    axes drawn uniformly: a wrong rule confined to one gate's columns (a
    quarter of an LSTM's) is never missed because the draw left them out.
    """
    size = math.prod(shape)
    if k >= size:
        return np.arange(size)
    width = shape[-1] if shape else 1
    rows = size // width
    edges = np.arange(k + 1) * width // k  # stratum i: columns edges[i] .. edges[i+1]-1
    cols = np.minimum(edges[:-1] + (rng.random(k) * np.maximum(np.diff(edges), 1)).astype(np.int64),
                      width - 1)
    picked = dict.fromkeys((rng.integers(0, rows, k) * width + cols).tolist())
    while len(picked) < k:  # rare repeats when the array has few rows: fill up at random
        picked.setdefault(int(rng.integers(0, size)))
    return np.fromiter(picked, dtype=np.int64, count=k)


def _numeric_grad(f, x, eps, mode, directions, rng):
    """Every element's central difference, as ``(None, gradient)`` (mode "full" only;
    kept for callers of the earlier private helper)."""
    if mode != "full":
        raise ValueError("_numeric_grad: only mode 'full'; use directional_differences")
    return None, central_differences(f, x, range(x.size), eps).reshape(x.shape)


def _check_array(name, f, x, analytic, mode, sample, directions, rng, atol, rtol) -> EntryResult:
    """One array's comparison: every element, or a sample plus random directions."""
    if mode == "full":
        numeric = central_differences(f, x, range(x.size)).reshape(x.shape)
        return compare(name, analytic, numeric, atol, rtol, "full", shape=x.shape)
    idx = sample_indices(x.shape, sample, rng) if mode == "sampled" else np.arange(0)
    numeric = central_differences(f, x, idx)
    got, want = directional_differences(f, x, analytic, rng, directions)
    parts = []
    if idx.size:
        e = compare(name, analytic.reshape(-1)[idx], numeric, atol, rtol)
        e.worst_index = tuple(int(i) for i in np.unravel_index(idx[e.worst_index[0]], x.shape))
        parts.append(e)
    if directions:
        e = compare(name, got, want, atol, rtol)
        e.direction, e.worst_index = e.worst_index[0], ()
        parts.append(e)
    w = max(parts, key=lambda e: e.excess)
    w.max_abs = max(e.max_abs for e in parts)
    w.max_rel = max(e.max_rel for e in parts)
    w.shape, w.mode, w.checked, w.directions = tuple(x.shape), mode, int(idx.size), directions
    return w


def _one_blas_thread():
    """A context in which BLAS runs on one thread (``backend.OneBlasThread``).

    A check makes thousands of small products (2 rows at a time). OpenBLAS's
    threads spin-wait for a core another process holds: on two busy cores
    ``graphrnn gradcheck gru --hidden-size 1000`` took 98 s with the default
    threads and 5.4 s with one (4.9 s of CPU either way when the cores are free).
    """
    return backend.OneBlasThread()


class _Progress:
    """Counts forward passes; shows a tqdm bar once the check looks long."""

    def __init__(self, total, seconds_each, show, desc):
        self.count = 0
        if show is None:
            show = total * seconds_each > PROGRESS_AFTER
        self.bar = None
        if show:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="pass", file=sys.stderr, leave=False)

    def tick(self):
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- cells

def _loss_weights(rng, run, cell):
    """Random weights for L = Σ w_h·hs + Σ_s w_s·state_s (both BPTT paths matter)."""
    wh = rng.uniform(-1, 1, tuple(run.hs.shape))
    ws = {k: rng.uniform(-1, 1, tuple(v.shape)) for k, v in run.state.items()}
    return wh, ws


def _loss(run, wh, ws):
    hs = backend.to_numpy(run.hs).astype(np.float64)
    val = float(np.sum(wh * hs))
    for k, w in ws.items():
        val += float(np.sum(w * backend.to_numpy(run.state[k]).astype(np.float64)))
    return val


def _draw(rng, shape, dtype):
    return rng.uniform(-1, 1, shape).astype(dtype)


def random_inputs(cell, rng, batch=2, steps=3, dtype=np.float64):
    """(params, xs, state0) for ``cell``, uniform in [-1, 1], drawn from ``rng``
    in that order: xs (batch, steps, input size), each state (batch, size)."""
    params = {k: _draw(rng, s, dtype) for k, s in cell.param_shapes().items()}
    xs = _draw(rng, (batch, steps, cell.input_size), dtype)
    state0 = {k: _draw(rng, (batch, s), dtype) for k, s in cell.state_sizes().items()}
    return params, xs, state0


def _mode_of(mode, size, full_limit):
    if mode != "auto":
        return mode
    return "full" if size <= full_limit else "sampled"


def check_gradients(cell, params=None, xs=None, state0=None, *, batch=2, steps=3, seed=0,
                    atol=None, rtol=None, dtype=None, mode="auto", directions=DIRECTIONS,
                    sample=SAMPLE, full_limit=FULL_LIMIT, fuse=True, kind=None, progress=None,
                    raise_on_failure=True) -> GradCheckReport:
    """Check ``gr.unroll(cell, ...).backward`` against float64 central differences.

    Missing ``params``/``xs``/``state0`` are drawn from ``seed`` (uniform in
    [-1, 1], xs of shape (batch, steps, input size)). The loss is
    ``Σ w·hs + Σ_s v_s·state_s`` with random weights w, v. Every parameter, xs
    and every initial state is checked:

    - ``mode="full"``: element by element (two forward passes per element);
    - ``mode="sampled"``: at ``sample`` random elements (spread over the last
      axis) plus along ``directions`` random unit directions u, comparing
      ⟨u, ∇L⟩ with (L(x+εu) − L(x−εu)) / 2ε;
    - ``mode="projection"``: along the random directions only;
    - ``mode="auto"`` (default): full for arrays up to ``full_limit``
      elements, sampled above, so a GRU at H=1000 costs a few hundred passes.

    The dtype under test is that of ``params`` (default float64); the numeric
    side always runs in float64. ``seed`` also draws the sample and the
    directions, and is recorded in the report. ``progress`` shows a tqdm bar
    on stderr (None: only when the check looks longer than ``PROGRESS_AFTER``
    seconds).

    Returns a ``GradCheckReport``; raises ``GradientCheckError`` naming the worst
    entry unless ``raise_on_failure=False``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    with _one_blas_thread():
        report = _check_gradients(cell, params, xs, state0, batch, steps, seed, atol, rtol, dtype, mode,
                                  directions, sample, full_limit, fuse, kind, progress)
    if raise_on_failure:
        report.raise_if_failed()
    return report


def _check_gradients(cell, params, xs, state0, batch, steps, seed, atol, rtol, dtype, mode, directions,
                     sample, full_limit, fuse, kind, progress):
    from ..unroll import unroll

    rng = np.random.default_rng(seed)
    if params is None:
        params = {k: _draw(rng, s, dtype or np.float64) for k, s in cell.param_shapes().items()}
    if dtype is None:
        dtype = next(iter(params.values())).dtype if params else np.float64
    dtype = np.dtype(dtype)
    atol, rtol = tolerance(dtype, atol, rtol)
    if xs is None:
        xs = _draw(rng, (batch, steps, cell.input_size), dtype)
    n = xs.shape[0]
    if state0 is None:
        state0 = {k: _draw(rng, (n, s), dtype) for k, s in cell.state_sizes().items()}
    state0 = {k: v for k, v in state0.items() if v is not None}

    # The engine, in the dtype under test.
    run = unroll(cell, params, xs, state0, fuse=fuse)
    wh, ws = _loss_weights(rng, run, cell)
    xp = backend.xp()
    g = run.backward(xp.asarray(wh, dtype=dtype), {k: xp.asarray(v, dtype=dtype) for k, v in ws.items()})
    del run

    # The reference: the same engine forward on float64 host copies.
    p64 = {k: backend.to_numpy(v).astype(np.float64) for k, v in params.items()}
    x64 = backend.to_numpy(xs).astype(np.float64)
    s64 = {k: backend.to_numpy(v).astype(np.float64) for k, v in state0.items()}

    def loss64():
        r = unroll(cell, {k: backend.asarray(v) for k, v in p64.items()}, backend.asarray(x64),
                   {k: backend.asarray(v) for k, v in s64.items()}, fuse=fuse)
        return _loss(r, wh, ws)

    targets = [(f"param {k!r}", p64[k], g.params[k]) for k in cell.param_shapes()]
    targets.append(("xs", x64, g.xs))
    targets += [(f"state0[{k!r}]", s64[k], g.state0[k]) for k in cell.state_sizes() if k in s64]
    modes = [_mode_of(mode, arr.size, full_limit) for _, arr, _ in targets]
    total = sum(2 * arr.size if m == "full" else
                2 * (directions + (min(sample, arr.size) if m == "sampled" else 0))
                for (_, arr, _), m in zip(targets, modes))

    t0 = time.perf_counter()
    loss64()  # also warms the float64 plan up: its time is what every pass will cost
    progress = _Progress(total, time.perf_counter() - t0, progress, f"gradcheck {cell.name}")

    def f():
        progress.tick()
        return loss64()

    subject = f"cell {cell.name!r}"
    if kind is None:
        kind = "unroll" if xs.shape[1] > 1 else "cell"
    report = GradCheckReport(kind, subject, str(dtype), atol, rtol, seed=seed)
    # The sample and the directions get a stream of their own: which elements
    # are checked depends on the seed and the shapes, not on what was drawn before.
    pick = np.random.default_rng([seed, 1])
    try:
        for (name, arr, analytic), m in zip(targets, modes):
            analytic = backend.to_numpy(analytic).astype(np.float64)
            report.entries.append(_check_array(name, f, arr, analytic, m, sample, directions, pick,
                                               atol, rtol))
    finally:
        progress.close()
    report.evaluations = progress.count
    return report


def check_function(f, inputs, grads, *, subject="function", atol=None, rtol=None, mode="auto",
                   directions=DIRECTIONS, sample=SAMPLE, full_limit=FULL_LIMIT, seed=0, kind="layer",
                   raise_on_failure=True) -> GradCheckReport:
    """Check hand-written gradients of any scalar function against float64 central differences.

    ``f()`` computes the loss from the float64 arrays in ``inputs`` (dict name
    -> array; the check perturbs them in place and restores them), ``grads``
    holds the analytic gradient of each name. ``mode``, ``sample``,
    ``directions`` and ``full_limit`` choose how much of each array is compared,
    as in ``check_gradients`` (by default element by element up to
    ``FULL_LIMIT`` elements, sampled above). This is how the language-model
    layers and the whole ``RNNLM`` are checked; a user's own layer can be too.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    atol, rtol = tolerance(np.float64, atol, rtol)
    report = GradCheckReport(kind, subject, "float64", atol, rtol, seed=seed)
    pick = np.random.default_rng([seed, 1])
    count = [0]

    def counted():
        count[0] += 1
        return f()
    for name, arr in inputs.items():
        if arr.dtype != np.float64 or not arr.flags.c_contiguous:
            raise ValueError(f"check_function: input {name!r} must be a C-contiguous float64 array "
                             "(the check perturbs it in place)")
    with _one_blas_thread():
        for name, arr in inputs.items():
            analytic = backend.to_numpy(grads[name]).astype(np.float64)
            report.entries.append(_check_array(f"grad {name!r}", counted, arr, analytic,
                                               _mode_of(mode, arr.size, full_limit), sample, directions,
                                               pick, atol, rtol))
    report.evaluations = count[0]
    if raise_on_failure:
        report.raise_if_failed()
    return report


def check_against_naive(cell, params, xs, state0=None, *, dhs=None, dstate=None, fuse=True,
                        seed=0, atol=1e-10, rtol=1e-10, raise_on_failure=True) -> GradCheckReport:
    """Compiled plan (``gr.unroll``) against ``gr.unroll_naive``: hs, final states and
    every gradient. ``dhs``/``dstate`` default to random weights drawn from ``seed``."""
    from ..unroll import unroll, unroll_naive

    xp = backend.xp()
    fast = unroll(cell, params, xs, state0, fuse=fuse)
    slow = unroll_naive(cell, params, xs, state0)
    rng = np.random.default_rng(seed)
    dtype = fast.hs.dtype
    if dhs is None:
        dhs = xp.asarray(rng.uniform(-1, 1, tuple(fast.hs.shape)), dtype=dtype)
    if dstate is None:
        dstate = {k: xp.asarray(rng.uniform(-1, 1, tuple(v.shape)), dtype=dtype) for k, v in fast.state.items()}
    gf = fast.backward(dhs, dstate)
    gs = slow.backward(dhs, dstate)
    report = GradCheckReport("compiled-vs-naive", f"cell {cell.name!r} (fuse={fuse})", str(dtype), atol, rtol)
    report.entries.append(compare("hs", fast.hs, slow.hs, atol, rtol))
    for k in cell.state_sizes():
        report.entries.append(compare(f"state[{k!r}]", fast.state[k], slow.state[k], atol, rtol))
    for k in cell.param_shapes():
        report.entries.append(compare(f"grad param {k!r}", gf.params[k], gs.params[k], atol, rtol))
    report.entries.append(compare("grad xs", gf.xs, gs.xs, atol, rtol))
    for k in cell.state_sizes():
        report.entries.append(compare(f"grad state0[{k!r}]", gf.state0[k], gs.state0[k], atol, rtol))
    if raise_on_failure:
        report.raise_if_failed(reference="naive interpreter")
    return report


def check_engines(cell, params, xs, state0=None, *, dhs=None, dstate=None, need_xs=True,
                  engines=("numpy", "native"), seed=0, rtol=None, raise_on_failure=True,
                  runs=None) -> GradCheckReport:
    """One run per engine (``gr.unroll(..., engine=e)``) from the same inputs:
    hs, final states and every gradient must agree. An entry may differ by
    ``rtol`` times the largest magnitude among all compared values (rounding
    differs between engines: BLAS against plain loops, numpy's exp against
    libm's, and a small gradient summed from large terms keeps their rounding
    error, so its own size is no measure), by default
    ``ENGINE_RTOL``: 1e-12 in float64, 1e-4 in float32. ``dhs``/``dstate`` default to
    random weights from ``seed``; pass None explicitly through ``dhs=False`` /
    ``dstate=False``. ``runs`` may hand in the two runs already made."""
    from ..unroll import unroll

    xp = backend.xp()
    a, b = runs or [unroll(cell, params, xs, state0, engine=e) for e in engines]
    dtype = a.hs.dtype
    if rtol is None:
        rtol = ENGINE_RTOL[np.dtype(dtype)]
    rng = np.random.default_rng(seed)
    if dhs is None:
        dhs = xp.asarray(rng.uniform(-1, 1, tuple(a.hs.shape)), dtype=dtype)
    if dstate is None:
        dstate = {k: xp.asarray(rng.uniform(-1, 1, tuple(v.shape)), dtype=dtype) for k, v in a.state.items()}
    dhs = None if dhs is False else dhs
    dstate = None if dstate is False else dstate
    ga, gb = a.backward(dhs, dstate, need_xs=need_xs), b.backward(dhs, dstate, need_xs=need_xs)
    report = GradCheckReport(f"{engines[1]}-vs-{engines[0]}", f"cell {cell.name!r}", str(dtype), 0.0, rtol)

    pairs = [("hs", b.hs, a.hs)]
    pairs += [(f"state[{k!r}]", b.state[k], a.state[k]) for k in cell.state_sizes()]
    pairs += [(f"grad param {k!r}", gb.params[k], ga.params[k]) for k in cell.param_shapes()]
    if need_xs:
        pairs.append(("grad xs", gb.xs, ga.xs))
    pairs += [(f"grad state0[{k!r}]", gb.state0[k], ga.state0[k]) for k in cell.state_sizes()]
    scale = max(float(np.max(np.abs(backend.to_numpy(e)), initial=0.0)) for _, _, e in pairs)
    for name, got, expected in pairs:
        report.entries.append(compare(name, got, expected, rtol * scale, rtol))
    if raise_on_failure:
        report.raise_if_failed(reference=f"engine {engines[0]!r}")
    return report


# --------------------------------------------------------------------------- primitives

def make_primitive(name_or_op, attrs=()) -> Primitive:
    if isinstance(name_or_op, Primitive):
        return name_or_op
    if isinstance(name_or_op, type) and issubclass(name_or_op, Primitive):
        return name_or_op(*attrs)
    try:
        cls = PRIMITIVES[name_or_op]
    except KeyError:
        raise ValueError(f"unknown primitive {name_or_op!r}; known: {', '.join(PRIMITIVES)}") from None
    return cls(*attrs)


def _all_needs(k):
    """Every combination of needs with at least one gradient asked for, all of them first."""
    combos = [tuple(bool(m >> i & 1) for i in range(k)) for m in range(2 ** k - 1, 0, -1)]
    return combos


def _saved(op, xs, y, needs):
    """What the planner hands ``backward`` for these needs: ``saved_for(needs)``, None elsewhere."""
    keep = op.saved_for(needs)
    undeclared = set(keep) - set(op.saves)
    if undeclared:
        raise GradientCheckError("primitive", op.name, "saves", (), np.nan, np.nan, 0, 0,
                                 reference=f"saved_for({needs}) within saves={op.saves} "
                                           f"(it names {sorted(undeclared, key=str)})")
    return [x if i in keep else None for i, x in enumerate(xs)], (y if "y" in keep else None)


def primitive_jacobians(op, xs, eps=1e-6, needs=None):
    """(analytic, numeric) Jacobians of ``op`` at inputs ``xs`` (float64 arrays).

    The analytic Jacobian of input i is built row by row from ``op.backward``
    with one-hot ``dy`` and these ``needs`` (default: every input); the
    backward receives only what ``op.saved_for(needs)`` names (other values are
    None), as the planner hands it, so a rule that reads a value it did not
    declare fails. The numeric one is built column by column by central
    differences. Each Jacobian has shape ``y.shape + x.shape``: an index names
    the output element, then the input element. Inputs not in ``needs`` get None.
    """
    xp = np
    needs = tuple(True for _ in xs) if needs is None else tuple(needs)
    y = np.array(op.forward(xp, *xs), dtype=np.float64)
    saved_xs, saved_y = _saved(op, xs, y, needs)
    analytic = [np.zeros((y.size, np.size(x))) if need else None for x, need in zip(xs, needs)]
    for k in range(y.size):
        dy = np.zeros(y.shape)
        dy.reshape(-1)[k] = 1.0
        try:
            grads = op.backward(xp, dy, saved_xs, saved_y, needs)
        except (TypeError, AttributeError) as exc:  # it read a None: a value saved_for did not keep
            raise GradientCheckError("primitive", op.name, f"needs={needs}", (), np.nan, np.nan, 0, 0,
                                     reference=f"a backward that reads only saved_for({needs}) = "
                                               f"{sorted(op.saved_for(needs), key=str)} ({exc})") from None
        if not isinstance(grads, (tuple, list)) or len(grads) != len(xs):
            raise GradientCheckError("primitive", op.name, "backward", (), np.nan, np.nan, 0, 0,
                                     reference=f"a tuple of {len(xs)} gradients")
        for i, gi in enumerate(grads):
            if not needs[i]:
                if gi is not None:
                    raise GradientCheckError("primitive", op.name, f"input {i}", (), np.nan, np.nan, 0, 0,
                                             reference=f"None for an input not in needs={needs}")
                continue
            gi = np.asarray(gi, dtype=np.float64)
            if gi.shape != np.shape(xs[i]):
                raise GradientCheckError("primitive", op.name, f"input {i}", (), np.nan, np.nan, 0, 0,
                                         reference=f"gradient of shape {np.shape(xs[i])} "
                                                   f"(backward returned {gi.shape})")
            analytic[i][k] = gi.reshape(-1)
    numeric = []
    for i, x in enumerate(xs):
        x = np.array(x, dtype=np.float64)
        jac = np.zeros((y.size, x.size))
        flat = x.reshape(-1)
        for j in range(x.size):
            old = flat[j]
            args = list(xs)
            flat[j] = old + eps
            args[i] = x.copy()
            yp = np.asarray(op.forward(xp, *args), dtype=np.float64).reshape(-1)
            flat[j] = old - eps
            args[i] = x.copy()
            ym = np.asarray(op.forward(xp, *args), dtype=np.float64).reshape(-1)
            flat[j] = old
            jac[:, j] = (yp - ym) / (2 * eps)
        numeric.append(jac.reshape(y.shape + x.shape))
        if analytic[i] is not None:
            analytic[i] = analytic[i].reshape(y.shape + x.shape)
    return analytic, numeric


def check_primitive(name_or_op, shapes, *, attrs=(), values=None, seed=0, atol=None, rtol=None,
                    raise_on_failure=True) -> GradCheckReport:
    """Full-Jacobian float64 check of one primitive on inputs of concrete ``shapes``.

    ``name_or_op`` is a registered name, a primitive class (a user's too) or an
    instance; ``shapes`` holds one tuple per input (``()`` for a Python-scalar
    operand); ``attrs`` are the constructor arguments (``(start, stop)`` for
    slice); ``values`` optionally gives the inputs (else uniform [-1, 1] from
    ``seed``). The backward is run as the planner runs it: for every
    combination of ``needs``, handed only ``saved_for(needs)``; each asked-for
    gradient is compared with central differences and the others must be
    None. Entries are named ``dy/d(input i)`` (all needs) and ``dy/d(input i)
    with needs=...``; their index is the output element's index followed by
    the input element's. Inputs listed in the primitive's ``surrogate``
    (straight-through estimators) are not compared; the report says so.
    """
    op = make_primitive(name_or_op, attrs)
    atol, rtol = tolerance(np.float64, atol, rtol)
    op.check(f"gradcheck of {op.name}", *[tuple(s) for s in shapes])
    rng = np.random.default_rng(seed)
    if values is None:
        values = [rng.uniform(-1, 1, s) if len(s) else float(rng.uniform(-1, 1)) for s in shapes]
    xs = [np.array(v, dtype=np.float64) if np.ndim(v) else np.float64(v) for v in values]
    report = GradCheckReport("primitive", f"primitive {op!r} on {', '.join(_fmt_shape(s) for s in shapes)}",
                             "float64", atol, rtol)
    surrogate = set(getattr(op, "surrogate", ()))
    numeric = None
    for needs in _all_needs(len(xs)):
        analytic, numeric_now = primitive_jacobians(op, xs, EPS, needs)
        numeric = numeric or numeric_now
        suffix = "" if all(needs) else f" with needs={tuple(int(n) for n in needs)}"
        for i, a in enumerate(analytic):
            if a is None or i in surrogate:
                continue
            report.entries.append(compare(f"dy/d(input {i}){suffix}", a, numeric[i], atol, rtol))
    report.skipped = [f"dy/d(input {i}): a surrogate gradient (declared in {type(op).__name__}.surrogate), "
                      "not compared" for i in sorted(surrogate)]
    if raise_on_failure:
        report.raise_if_failed()
    return report
