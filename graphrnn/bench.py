"""``graphrnn bench``: forward+backward of one batch against hand-written layers.

This is the harness; the competitors ship with the package
(``graphrnn.contenders``), so the command runs from an installed wheel.
Three kinds of implementation run side by side in one process:

- ``graphrnn``: ``gr.unroll(cell, params, xs).backward(dhs)`` (with dxs).
- ``textbook`` and ``hoisted``: numpy layers, per step in the book's style and
  hoisted by hand (``graphrnn/contenders/cells.py``).
- ``torch``: PyTorch's CPU ``nn.RNN/GRU/LSTM``, and for the minimal gated
  unit, torch ops in a Python loop with autograd.

Timing: warm-up, then k rounds; each round runs every implementation once
(rotating the order), and medians are reported, so a noisy shared machine
slows all contenders alike. A roofline column divides the achieved GEMM rate
(FLOPs counted analytically) by the SGEMM rate measured in the same process.
Memory is measured after all timing, in a separate pass.

Results go to ``--out`` (default ``runs/bench``); ``make bench-results``
refreshes the committed ``benchmarks/results``.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import json
import math
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

from . import files
from .contenders import cells as contenders
from .errors import UsageError

# Where results go unless --out names a folder; the committed results in
# benchmarks/results are refreshed by `make bench-results` only.
DEFAULT_OUT = os.path.join("runs", "bench")

SIZES = {  # name: (N, T, D, H)
    "tiny": (1, 8, 2, 16),
    "small": (20, 35, 200, 200),
    "medium": (20, 35, 650, 650),
}
CELL_NAMES = ("rnn", "gru", "lstm", "mgu", "ln_lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "mgu": 2, "ln_lstm": 4}
HANDWRITTEN = ("rnn", "gru", "lstm", "mgu")  # the cells the textbook and hoisted layers have
TORCH_LOOPS = {"mgu": "TorchLoopMGU", "ln_lstm": "TorchLoopLNLSTM"}  # no fused torch kernel
# A default run times these cells at these sizes only (issue 17 asks for the
# layer-normalised LSTM at the medium size; --cells ln_lstm times it at any)
DEFAULT_ONLY_AT = {"ln_lstm": ("medium",)}
IMPLS = ("graphrnn", "textbook", "hoisted", "torch", "jax")


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ============================================================================ the contenders

def make_case(cell_name, size, dtype=np.float32, seed=0, impls=IMPLS):
    """Callables (no arguments, one forward+backward each) on the same data.

    Returns (dict impl -> callable, info). All see the same xs and dhs; the
    numpy ones share graphrnn's initial parameters (torch's fused modules keep
    their own initialisation: their gate equations differ anyway).
    """
    import graphrnn as gr
    N, T, D, H = size
    cell = gr.cells.get(cell_name)(D, H)
    params = cell.init_params(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (N, T, D)).astype(dtype)
    dhs = rng.uniform(-1, 1, (N, T, H)).astype(dtype)
    fns = {}
    if "graphrnn" in impls:
        # the kernels auto picks for this size, compiled before timing starts
        gr.emit.warm(cell, N, T, dtype)

        def run_graphrnn():
            g = gr.unroll(cell, params, xs, engine="auto").backward(dhs, need_xs=True)
            return g
        run_graphrnn.workspace = gr.compile_cell(cell).workspace
        fns["graphrnn"] = run_graphrnn
    if "textbook" in impls and cell_name in HANDWRITTEN:
        layer = contenders.TimeLayer(cell_name, params)

        def run_textbook():
            layer.forward(xs)
            return layer.backward(dhs)
        fns["textbook"] = run_textbook
    if "hoisted" in impls and cell_name in HANDWRITTEN:
        hoisted = contenders.HoistedLayer(cell_name, params)

        def run_hoisted():
            hoisted.forward(xs)
            return hoisted.backward(dhs)
        fns["hoisted"] = run_hoisted
    if "torch" in impls and torch_available():
        import torch
        txs, tdhs = torch.from_numpy(xs), torch.from_numpy(dhs)
        model = (getattr(contenders, TORCH_LOOPS[cell_name])(params) if cell_name in TORCH_LOOPS
                 else contenders.TorchFused(cell_name, D, H, dtype, seed))

        def run_torch():
            return model(txs, tdhs)
        fns["torch"] = run_torch
    if "jax" in impls:
        from .contenders import jax_cells as jax_contenders
        if jax_contenders.available():
            fns["jax"] = jax_contenders.JaxCell(cell, params, xs, dhs)
    info = {"torch_form": "python loop + autograd" if cell_name in TORCH_LOOPS else f"nn.{cell_name.upper()} (fused)"}
    return fns, info


def gemm_flops(cell_name, size, need_xs=True):
    """Matrix-product FLOPs of one forward+backward (elementwise work ignored).

    Forward: per step an (N, D) @ (D, G*H) and (N, H) @ (H, G*H) in total over
    the gates. Backward: each product has two transposed products (dW and the
    gradient of its left operand), except dxs when it is not needed.
    """
    N, T, D, H = size
    G = GATES[cell_name]
    fwd = 2 * N * T * G * H * (D + H)
    bwd = 2 * fwd - (0 if need_xs else 2 * N * T * G * H * D)
    return fwd + bwd


# ============================================================================ measurement

def numpy_blas():
    """numpy's BLAS and the kernels it runs ("openblas 0.3.31 SkylakeX"): the
    kernel choice moves GEMM-bound ratios by 1.5x (an OPENBLAS_CORETYPE pin
    to Haswell on an AVX-512 machine), so every table says which it had."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return " ".join(str(lib[k]) for k in ("internal_api", "version", "architecture") if lib.get(k))
    return None


def numpy_threads():
    """OpenBLAS's thread count, read from the loaded library (no extra dependency)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        libs = set()
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads", "scipy_openblas_get_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return int(fn())
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(env) if env else (os.cpu_count() or 1)


def sgemm_peak(n=1024, reps=8):
    """Best float32 GEMM rate (GFLOP/s) of numpy on an n x n x n product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def torch_sgemm_peak(n=1024, reps=8):
    import torch
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def time_interleaved(fns, rounds, target_s=0.01, warmup=2):
    """Median seconds per call of each callable, measured round-robin.

    Each measurement repeats a call enough times to last about ``target_s``
    (fast cases would otherwise measure the timer); the order rotates each
    round so no implementation always runs right after the same other one.
    """
    names = list(fns)
    reps = {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
        t0 = time.perf_counter()
        fns[name]()
        one = time.perf_counter() - t0
        reps[name] = max(1, int(target_s / max(one, 1e-9)))
    samples = {name: [] for name in names}
    gc_was = gc.isenabled()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            gc.collect()
            gc.disable()
            for name in order:
                fn, k = fns[name], reps[name]
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) / k)
            if gc_was:
                gc.enable()
    finally:
        if gc_was:
            gc.enable()
    return {name: {"median_s": float(np.median(s)), "min_s": float(np.min(s)),
                   "q1_s": float(np.percentile(s, 25)), "q3_s": float(np.percentile(s, 75)),
                   "reps": reps[name], "rounds": len(s)}
            for name, s in samples.items()}


def _proc_status_kib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak():
    """Reset the kernel's resident high-water mark (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _fix_malloc_threshold():
    # glibc raises its mmap threshold after large frees, after which freed
    # buffers stay resident and a second run grows RSS by nothing; a fixed
    # threshold returns every large buffer to the kernel so the high-water mark
    # measures what one call really needs. Called only after all timing.
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        return True
    except (OSError, AttributeError):
        return False


def _trim():
    """Hand malloc's free memory back to the kernel (glibc), so RSS shows what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_held(make):
    """What a contender holds between calls (parameters, gradients, buffers):
    the resident set's growth from building it through its first call, with
    freed memory handed back before and after, so that pages an earlier
    contender freed cannot hide this one's (they once showed 0 MiB)."""
    gc.collect()
    _trim()
    before = _proc_status_kib("VmRSS")
    fn = make()
    fn()
    gc.collect()
    _trim()
    after = _proc_status_kib("VmRSS")
    del fn
    gc.collect()
    _trim()
    return None if before is None or after is None else max(0, after - before) / 1024


def measure_memory(fn, numpy_traced):
    """Peak memory of one call: tracemalloc (numpy reports its buffers to it)
    and the growth of the resident set's high-water mark above the resident
    set before the call (the only view that sees torch's allocations).
    graphrnn's workspace is emptied before each measured call, so its buffers
    count as allocated by the call, as they would be without reuse."""
    out = {}
    reset = getattr(fn, "workspace", None)
    reset = reset.clear if reset is not None else (lambda: None)
    gc.collect()
    fn()  # the first call may build caches; measure a steady-state call
    reset()
    gc.collect()
    if _reset_rss_peak():
        before = _proc_status_kib("VmRSS")
        fn()
        peak = _proc_status_kib("VmHWM")
        if before is not None and peak is not None:
            out["rss_peak_delta_mib"] = max(0, peak - before) / 1024
    if numpy_traced:
        reset()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        out["traced_peak_mib"] = (tracemalloc.get_traced_memory()[1] - base) / 2 ** 20
        tracemalloc.stop()
    return out


# ============================================================================ runner

def run_benchmarks(sizes=None, cells=CELL_NAMES, rounds=None, impls=IMPLS, dtype=np.float32,
                   memory=True, log=print, target_s=0.01, only_at=None):
    """Time every (size, cell, impl); returns a JSON-able dict of results.
    ``only_at`` (cell -> size names) limits a cell to those sizes."""
    import graphrnn as gr
    sizes = dict(SIZES) if sizes is None else dict(sizes)
    rounds = rounds or {}
    threads = numpy_threads()
    have_torch = "torch" in impls and torch_available()
    meta = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": sys.version.split()[0], "numpy": np.__version__,
        "graphrnn": getattr(gr, "__version__", "?"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "numpy_blas_threads": threads, "numpy_blas": numpy_blas(),
        "dtype": np.dtype(dtype).name,
        "torch": None, "torch_threads": None, **{k: os.environ.get(k) for k in QUIET_POOLS},
    }
    if have_torch:
        import torch
        torch.set_num_threads(threads)
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    peaks = [sgemm_peak()]
    torch_peaks = [torch_sgemm_peak()] if have_torch else []
    rows = []
    cases = {}
    for sname, size in sizes.items():
        for cell_name in cells:
            if only_at and cell_name in only_at and sname not in only_at[cell_name]:
                continue
            fns, info = make_case(cell_name, size, dtype=dtype, impls=impls)
            cases[(sname, cell_name)] = fns
            k = rounds.get(sname, 10)
            t_start = time.perf_counter()
            timing = time_interleaved(fns, k, target_s=target_s)
            flops = gemm_flops(cell_name, size)
            for impl, tm in timing.items():
                rows.append({"size": sname, "N": size[0], "T": size[1], "D": size[2], "H": size[3],
                             "cell": cell_name, "impl": impl, "gemm_flops": flops, **tm,
                             "torch_form": info["torch_form"] if impl == "torch" else None})
            log(f"  {sname:6s} {cell_name:4s} " + "  ".join(
                f"{impl} {tm['median_s'] * 1e3:8.3f} ms" for impl, tm in timing.items())
                + f"   ({time.perf_counter() - t_start:.1f} s)")
        peaks.append(sgemm_peak())
        if have_torch:
            torch_peaks.append(torch_sgemm_peak())
    peak = max(peaks)
    meta["sgemm_gflops_numpy"] = peak
    meta["sgemm_gflops_numpy_all"] = peaks
    if have_torch:
        meta["sgemm_gflops_torch"] = max(torch_peaks)
    for row in rows:
        row["gflops"] = row["gemm_flops"] / row["median_s"] / 1e9
        row["share_of_sgemm_peak"] = row["gflops"] / peak
    _memory_and_speedups(rows, cases, meta, memory)
    return {"meta": meta, "rounds": rounds, "sizes": {k: list(v) for k, v in sizes.items()}, "rows": rows}


def _memory_and_speedups(rows, cases, meta, memory):
    """After all timing: each row's memory (``cases[(size, cell)][impl]`` is the
    callable) and its speed-up of graphrnn (its time / graphrnn's, same case)."""
    if memory:
        meta["malloc_threshold_fixed"] = _fix_malloc_threshold()
        for row in rows:
            fn = cases[(row["size"], row["cell"])][row["impl"]]
            row.update(measure_memory(fn, numpy_traced=row["impl"] not in ("torch", "jax")))
    for row in rows:
        base = {r["impl"]: r["median_s"] for r in rows if r["size"] == row["size"] and r["cell"] == row["cell"]}
        g = base.get("graphrnn")
        row["speedup_of_graphrnn"] = (row["median_s"] / g) if g else None


def _fmt_ms(s):
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _fmt_mib(v):
    return "" if v is None else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def markdown_table(result):
    """The results as a markdown table plus a legend."""
    meta = result["meta"]
    lines = [
        f"forward+backward of one batch (with dxs), {meta['dtype']}, "
        f"{meta['numpy_blas_threads']} BLAS threads (numpy, {meta.get('numpy_blas') or 'BLAS unknown'}), "
        f"torch threads {meta['torch_threads']}; "
        f"median of interleaved rounds. SGEMM peak (numpy, 1024^3): {meta['sgemm_gflops_numpy']:.1f} GFLOP/s"
        + (f"; torch SGEMM {meta['sgemm_gflops_torch']:.1f} GFLOP/s" if meta.get("sgemm_gflops_torch") else "")
        + f". {meta['date_utc']} UTC, numpy {meta['numpy']}, torch {meta['torch']}.",
        "",
        "| size (N,T,D,H) | cell | impl | median ms | graphrnn speedup | GFLOP/s | % SGEMM peak | traced peak MiB | RSS peak MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        sz = f"{row['size']} ({row['N']},{row['T']},{row['D']},{row['H']})"
        impl = row["impl"]
        if impl == "torch":
            impl = "torch loop" if row["cell"] in TORCH_LOOPS else "torch nn"
        elif impl == "hoisted":
            impl = "hoisted by hand"
        sp = row.get("speedup_of_graphrnn")
        lines.append(
            f"| {sz} | {row['cell']} | {impl} | {_fmt_ms(row['median_s'])} | "
            f"{'' if sp is None or row['impl'] == 'graphrnn' else f'{sp:.2f}x'} | "
            f"{row['gflops']:.2f} | {100 * row['share_of_sgemm_peak']:.1f} | "
            f"{_fmt_mib(row.get('traced_peak_mib'))} | {_fmt_mib(row.get('rss_peak_delta_mib'))} |")
    lines += [
        "",
        "- graphrnn speedup: the implementation's median time / graphrnn's (above 1: graphrnn is faster).",
        "- GFLOP/s: matrix-product FLOPs counted analytically (6·N·T·G·H·(D+H), G gates; elementwise "
        "work not counted) over the median time; % SGEMM peak divides it by the numpy SGEMM rate measured "
        "in the same process.",
        "- traced peak: tracemalloc peak during one call (numpy reports its buffers; torch's allocations "
        "are invisible to it, hence blank). RSS peak: growth of the resident high-water mark over the "
        "resident set before one call (Linux clear_refs reset, glibc mmap threshold fixed), the only "
        "column that sees torch; 0 means every buffer fit in memory the process already had resident. "
        "graphrnn keeps its buffers between calls (a workspace); it is emptied before these "
        "measurements, so both columns count every buffer one call needs.",
        "- textbook: per-step numpy cells in the book's common/time_layers.py style (input product and "
        "weight gradients per step, monolithic per-step backward). hoisted by hand: numpy written the way "
        "graphrnn's compiler runs a cell (time-major buffers, input product once for all steps, one GEMM "
        "each for dWx, dWh and dxs after the loop), the best plain numpy we know how to write. torch nn: PyTorch's fused CPU "
        "nn.RNN/GRU/LSTM (its GRU applies r after W_hn h and has two biases: same sizes, not the same "
        "equations). torch loop: the minimal gated unit in torch ops in a Python loop with autograd, "
        "input product hoisted out of the loop. jax: jax.jit(jax.value_and_grad(loss)) over lax.scan, "
        "the cell written in jax.numpy from its declared graph, input product before the scan "
        "(graphrnn/contenders/jax_cells.py).",
    ]
    return "\n".join(lines) + "\n"


def goals_summary(result):
    """The issue's goals, each with the measured ratio and whether it holds."""
    med = {(r["size"], r["cell"], r["impl"]): r["median_s"] for r in result["rows"]}
    goals = []

    def goal(text, size, cell, other, need):
        a, b = med.get((size, cell, other)), med.get((size, cell, "graphrnn"))
        if a is None or b is None:
            return
        ratio = a / b
        goals.append({"goal": text, "size": size, "cell": cell, "against": other,
                      "ratio": ratio, "needed": need, "met": ratio >= need})

    for cell in ("gru", "lstm"):
        goal(f"{cell} vs textbook, medium >= 2x", "medium", cell, "textbook", 2.0)
        goal(f"{cell} vs textbook, small >= 1.5x", "small", cell, "textbook", 1.5)
        goal(f"{cell} vs textbook, tiny no slower", "tiny", cell, "textbook", 1.0)
    goal("gru vs nn.GRU, medium >= 1.2x", "medium", "gru", "torch", 1.2)
    goal("lstm vs nn.LSTM, medium >= 0.8x", "medium", "lstm", "torch", 0.8)
    goal("mgu vs torch loop, medium >= 2x", "medium", "mgu", "torch", 2.0)
    # issue 12 (native loops)
    for cell in HANDWRITTEN:
        goal(f"{cell} vs JAX, tiny >= 1x", "tiny", cell, "jax", 1.0)
    goal("lstm vs nn.LSTM, medium >= 1x", "medium", "lstm", "torch", 1.0)
    goal("gru vs nn.GRU, medium >= 1.5x", "medium", "gru", "torch", 1.5)
    goal("mgu vs JAX, medium >= 1.2x", "medium", "mgu", "jax", 1.2)
    # issue 17 (the layer-normalised LSTM)
    goal("ln_lstm vs JAX, medium >= 1x", "medium", "ln_lstm", "jax", 1.0)
    goal("ln_lstm vs torch loop, medium >= 1.5x", "medium", "ln_lstm", "torch", 1.5)
    return goals


def goals_markdown(goals):
    lines = ["| goal | measured ratio | met |", "|---|---:|:---:|"]
    for g in goals:
        lines.append(f"| {g['goal']} | {g['ratio']:.2f}x | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def profile_gru(size=SIZES["medium"], calls=3, dtype=np.float32):
    """Where graphrnn's time goes for one GRU forward+backward: cProfile by function."""
    import cProfile
    import io
    import pstats

    import graphrnn as gr
    N, T, D, H = size
    cell = gr.cells.gru(D, H)
    params = cell.init_params(seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (N, T, D)).astype(dtype)
    dhs = rng.uniform(-1, 1, (N, T, H)).astype(dtype)
    gr.unroll(cell, params, xs).backward(dhs)
    fwd, bwd = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        run = gr.unroll(cell, params, xs)
        t1 = time.perf_counter()
        run.backward(dhs)
        fwd.append(t1 - t0)
        bwd.append(time.perf_counter() - t1)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        gr.unroll(cell, params, xs).backward(dhs)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(30)
    flops = gemm_flops("gru", size)
    peak = sgemm_peak()
    total = float(np.median(fwd)) + float(np.median(bwd))
    head = [
        f"graphrnn GRU forward+backward, (N,T,D,H) = {size}, {np.dtype(dtype).name}, {calls} calls",
        f"forward median {np.median(fwd) * 1e3:.1f} ms, backward median {np.median(bwd) * 1e3:.1f} ms",
        f"GEMM FLOPs {flops / 1e9:.2f} G; at the measured SGEMM peak {peak:.1f} GFLOP/s they would take "
        f"{flops / peak / 1e6:.1f} ms, i.e. {100 * flops / peak / 1e9 / total:.0f}% of the measured time",
        "cProfile (tottime = time in the function itself; a @ b and ufuncs are charged to their caller):",
        "",
    ]
    return "\n".join(head) + buf.getvalue()


def write_results(result, out, stem):
    files.make_folder(out, "output folder")
    goals = goals_summary(result)
    result = dict(result, goals=goals)
    jpath = os.path.join(out, stem + ".json")
    mpath = os.path.join(out, stem + ".md")
    md = markdown_table(result)
    if goals:
        md += "\nGoals (ratio = other implementation's time / graphrnn's):\n\n" + goals_markdown(goals)
    for path, text in ((jpath, json.dumps(result, indent=1) + "\n"), (mpath, md)):
        files.atomic_write(path, text)
    return jpath, mpath, md


# OpenBLAS's and torch's OpenMP workers both spin for a while after each
# parallel region; with as many threads as cores, the spinning pool steals the
# cores from the other library's next run (measured: torch nn.GRU 1.4x slower
# interleaved with numpy than with short spins). Both libraries read these
# settings only when loaded, so the command runs the measurement in a fresh
# interpreter that has them.
QUIET_POOLS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "OPENBLAS_THREAD_TIMEOUT": "4"}


def _rerun_with_quiet_thread_pools(args, quick, out, cells, names, impls):
    import subprocess
    env = dict(os.environ, GRAPHRNN_BENCH_CHILD="1")
    for k, v in QUIET_POOLS.items():
        env.setdefault(k, v)
    argv = [sys.executable, "-m", "graphrnn.cli", "bench", "--out", out, "--sizes", *names]
    if getattr(args, "cells", None):  # as given: the default's cell-size pairs stay the child's
        argv += ["--cells", *cells]
    if quick:
        argv.append("--quick")
    if getattr(args, "rounds", None):
        argv += ["--rounds", str(args.rounds)]
    if "torch" not in impls:
        argv.append("--no-torch")
    return subprocess.run(argv, env=env).returncode


QUICK_ROUNDS = {"tiny": 7, "small": 5}
FULL_ROUNDS = {"tiny": 30, "small": 15, "medium": 11}


def bench_main(args):
    """The ``graphrnn bench`` command."""
    quick = bool(getattr(args, "quick", False))
    out = getattr(args, "out", None) or DEFAULT_OUT
    only_at = None if getattr(args, "cells", None) else DEFAULT_ONLY_AT
    cells = getattr(args, "cells", None) or list(CELL_NAMES)
    bad = [c for c in cells if c not in GATES]
    if bad:
        raise UsageError(f"unknown cell {bad[0]!r} for bench; choose from {', '.join(CELL_NAMES)}")
    names = getattr(args, "sizes", None) or (["tiny", "small"] if quick else list(SIZES))
    bad = [s for s in names if s not in SIZES]
    if bad:
        raise UsageError(f"unknown size {bad[0]!r}; choose from {', '.join(SIZES)}")
    rounds = dict(QUICK_ROUNDS if quick else FULL_ROUNDS)
    if getattr(args, "rounds", None):
        rounds = {s: args.rounds for s in names}
    impls = IMPLS if not getattr(args, "no_torch", False) else tuple(i for i in IMPLS if i != "torch")
    if getattr(args, "command", None) == "bench" and not os.environ.get("GRAPHRNN_BENCH_CHILD"):
        return _rerun_with_quiet_thread_pools(args, quick, out, cells, names, impls)
    if "torch" in impls and not torch_available():
        print("torch is not installed (pip install 'graphrnn[bench]'): comparing with the textbook layers only")
    from .contenders import jax_cells
    if "jax" in impls and not jax_cells.available():
        print("jax is not installed (pip install 'graphrnn[jax]'): no JAX column")
    print(f"graphrnn bench: sizes {', '.join(names)}; cells {', '.join(cells)}; "
          f"rounds {', '.join(f'{s}={rounds.get(s, 10)}' for s in names)}")
    t0 = time.perf_counter()
    result = run_benchmarks({s: SIZES[s] for s in names}, cells, rounds, impls, only_at=only_at)
    result["meta"]["wall_s"] = time.perf_counter() - t0
    stem = "bench_quick" if quick else "bench"
    jpath, mpath, md = write_results(result, out, stem)
    print()
    print(md)
    print(f"wrote {jpath} and {mpath}")
    if not quick and "medium" in names and "gru" in cells:
        ppath = os.path.join(out, "profile_gru_medium.txt")
        files.atomic_write(ppath, profile_gru())
        print(f"wrote {ppath}")
    return 0


# ============================================================================ language model

LM_SIZES = {  # name: (V, D, H, layers, N, T, dropout, tied) -- the PTB presets
    "ch6": (10000, 100, 100, 1, 20, 35, 0.0, False),
    "better": (10000, 650, 650, 2, 20, 35, 0.5, True),
}
LM_CELLS = ("lstm", "gru")
LM_GOALS = {("better", "gru"): 1.0, ("better", "lstm"): 0.85}   # torch's time / graphrnn's, at least


def lm_graphrnn_step(V, D, H, layers, cell, dropout, tie, xs, ts, lr=20.0, clip=0.25, seed=0):
    """One training step of graphrnn's RNNLM, as ``graphrnn train ptb`` runs it."""
    from . import optim
    from .models import RNNLM
    m = RNNLM(V, D, H, cell=cell, layers=layers, dropout=dropout, tie_weights=tie, seed=seed)
    opt = optim.SGD(m.params, lr)

    def step():
        loss = m.forward(xs, ts)
        m.backward()
        optim.clip_global_norm(m.grads, clip)
        opt.step(m.grads)
        return loss
    return step


def run_lm_benchmarks(sizes, cells, rounds, book=None, use_torch=True, log=print, memory=True):
    """Time one training step of each contender per (size, cell), interleaved."""
    from .contenders import lm
    threads = numpy_threads()
    have_torch = use_torch and torch_available()
    if have_torch:
        import torch
        torch.set_num_threads(threads)
    meta = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "python": sys.version.split()[0],
            "numpy": np.__version__, "cpus": os.cpu_count(), "numpy_blas_threads": threads,
            "numpy_blas": numpy_blas(),
            "torch": __import__("torch").__version__ if have_torch else None, "book": book,
            "sgemm_gflops_numpy": sgemm_peak()}
    rows, cases, builders = [], {}, {}
    for sname in sizes:
        V, D, H, layers, N, T, dropout, tie = LM_SIZES[sname]
        rng = np.random.default_rng(0)
        xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
        for cell in cells:
            P = functools.partial
            makers = {"graphrnn": P(lm_graphrnn_step, V, D, H, layers, cell, dropout, tie, xs, ts)}
            if have_torch:
                makers["torch"] = P(lm.torch_step, V, D, H, layers, cell, dropout, tie, xs, ts)
            if book and cell == "lstm":
                makers["book"] = P(lm.book_step, book, V, D, H, sname == "better", dropout, xs, ts)
            builders[(sname, cell)] = makers
            fns = {impl: make() for impl, make in makers.items()}
            cases[(sname, cell)] = fns
            t0 = time.perf_counter()
            timing = time_interleaved(fns, rounds, target_s=0.0, warmup=1)
            for impl, tm in timing.items():
                rows.append({"size": sname, "cell": cell, "impl": impl, "V": V, "D": D, "H": H,
                             "layers": layers, "N": N, "T": T, "dropout": dropout, "tied": tie, **tm})
            log(f"  {sname:6s} {cell:4s} " + "  ".join(f"{k} {v['median_s'] * 1e3:8.1f} ms"
                                                       for k, v in timing.items())
                + f"   ({time.perf_counter() - t0:.1f} s)")
    _memory_and_speedups(rows, cases, meta, memory)
    if memory:
        cases.clear()
        for row in rows:
            row["held_mib"] = measure_held(builders[(row["size"], row["cell"])][row["impl"]])
    return {"meta": meta, "rounds": rounds, "rows": rows}


def lm_markdown(result):
    m = result["meta"]
    lines = [f"One training step of the PTB language model (forward, backward, global-norm clip, SGD), "
             f"float32, median of {result['rounds']} interleaved rounds; {m['date_utc']} UTC, "
             f"{m['cpus']} CPUs, numpy {m['numpy']} ({m.get('numpy_blas') or 'BLAS unknown'}), "
             f"torch {m['torch']}.",
             "Speed-up = the other's time / graphrnn's. Memory: what the model holds between steps "
             "(growth of the resident set from building it through its first step: parameters, "
             "gradients, buffers), the growth of the resident set's peak during one more step, and "
             "numpy's traced peak during a step (numpy contenders).", "",
             "| size | cell | implementation | ms per step | speed-up of graphrnn | held MiB | "
             "step RSS peak growth MiB | step traced peak MiB |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['size']} | {r['cell']} | {r['impl']} | {r['median_s'] * 1e3:.1f} | "
                     f"{r['speedup_of_graphrnn']:.2f}x | {_fmt_mib(r.get('held_mib'))} | "
                     f"{_fmt_mib(r.get('rss_peak_delta_mib'))} | {_fmt_mib(r.get('traced_peak_mib'))} |")
    goals = lm_goals(result)
    if goals:
        lines += ["", "| goal | measured | met |", "|---|---:|:---:|"]
        lines += [f"| {g['goal']} | {g['ratio']:.2f}x | {'yes' if g['met'] else 'NO'} |" for g in goals]
    return "\n".join(lines) + "\n"


def lm_goals(result):
    out = []
    for (size, cell), need in LM_GOALS.items():
        r = next((r for r in result["rows"] if (r["size"], r["cell"], r["impl"]) == (size, cell, "torch")), None)
        if r is not None:
            out.append({"goal": f"{cell} LM vs torch CPU, {size} >= {need}x", "ratio": r["speedup_of_graphrnn"],
                        "met": r["speedup_of_graphrnn"] >= need})
    return out


def lm_main(args):
    """``graphrnn bench --lm``: the PTB model's training step against PyTorch (and the book)."""
    sizes = getattr(args, "sizes", None) or ["better"]
    bad = [s for s in sizes if s not in LM_SIZES]
    if bad:
        raise UsageError(f"unknown size {bad[0]!r} for --lm; choose from {', '.join(LM_SIZES)}")
    cells = getattr(args, "cells", None) or list(LM_CELLS)
    bad = [c for c in cells if c not in LM_CELLS]
    if bad:
        raise UsageError(f"--lm compares {', '.join(LM_CELLS)} (torch has kernels for those), not {bad[0]!r}")
    book = getattr(args, "book", None)
    if book and not os.path.isfile(os.path.join(book, "ch06", "rnnlm.py")):
        raise UsageError(f"--book {book}: not a checkout of deep-learning-from-scratch-2 (no ch06/rnnlm.py)")
    out = getattr(args, "out", None) or DEFAULT_OUT
    rounds = getattr(args, "rounds", None) or 5
    if getattr(args, "command", None) == "bench" and not os.environ.get("GRAPHRNN_BENCH_CHILD"):
        argv = [sys.executable, "-m", "graphrnn.cli", "bench", "--lm", "--out", out, "--sizes", *sizes,
                "--cells", *cells, "--rounds", str(rounds)]
        if book:
            argv += ["--book", book]
        if getattr(args, "no_torch", False):
            argv.append("--no-torch")
        import subprocess
        env = dict(os.environ, GRAPHRNN_BENCH_CHILD="1")
        for k, v in QUIET_POOLS.items():
            env.setdefault(k, v)
        return subprocess.run(argv, env=env).returncode
    use_torch = not getattr(args, "no_torch", False)
    if use_torch and not torch_available():
        print("torch is not installed (pip install 'graphrnn[bench]'): timing graphrnn alone")
    print(f"graphrnn bench --lm: sizes {', '.join(sizes)}; cells {', '.join(cells)}; {rounds} rounds")
    result = run_lm_benchmarks(sizes, cells, rounds, book=book, use_torch=use_torch)
    result["goals"] = lm_goals(result)
    files.make_folder(out, "output folder")
    md = lm_markdown(result)
    for path, text in ((os.path.join(out, "lm.json"), json.dumps(result, indent=1) + "\n"),
                       (os.path.join(out, "lm.md"), md)):
        files.atomic_write(path, text)
    print()
    print(md)
    print(f"wrote {os.path.join(out, 'lm.json')} and {os.path.join(out, 'lm.md')}")
    return 0
