"""``graphrnn bench``: forward+backward of one batch against hand-written layers.

Three kinds of implementation run side by side in one process:

- ``graphrnn``: ``gr.unroll(cell, params, xs).backward(dhs)`` (with dxs).
- ``textbook``: numpy layers written the way "Deep Learning from Scratch 2"
  writes them (``common/time_layers.py``): one cell object per step with its
  own forward and monolithic backward, a Time* wrapper looping over T, the
  input product ``x_t @ Wx`` and the weight gradients computed per step.
  They use graphrnn's parameter layouts so tests can check them for equality.
- ``torch``: PyTorch's CPU ``nn.RNN/GRU/LSTM`` (fused kernels), and for the
  minimal gated unit, which PyTorch has no kernel for, torch ops in a Python
  loop with autograd (input projection hoisted out of the loop, as a careful
  user would write it).

Timing: warm-up, then k rounds; each round runs every implementation once
(rotating the order), and medians are reported, so a noisy shared machine
slows all contenders alike. A roofline column divides the achieved GEMM rate
(FLOPs counted analytically) by the SGEMM rate measured in the same process.
Memory is measured after all timing, in a separate pass.
"""
from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

SIZES = {  # name: (N, T, D, H)
    "tiny": (1, 8, 2, 16),
    "small": (20, 35, 200, 200),
    "medium": (20, 35, 650, 650),
}
CELL_NAMES = ("rnn", "gru", "lstm", "mgu")
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "mgu": 2}
IMPLS = ("graphrnn", "textbook", "hoisted", "torch", "jax")


# ============================================================================ textbook layers
# Written per step, as the book does: nothing is batched over time, every step
# runs its own small GEMMs forward and backward. One deliberate departure: the
# book gives each per-step cell fresh zero gradient arrays that the Time layer
# then sums; here a step adds straight into the layer's gradients, which only
# makes the baseline faster.

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


class _Step:
    """One time step's cell: the layer's parameter and gradient lists (shared by all steps)."""

    def __init__(self, params, grads):
        self.params, self.grads = params, grads


class RNNCell(_Step):
    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        h_next = np.tanh(h_prev @ Wh + x @ Wx + b)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        dWx, dWh, db = self.grads
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next ** 2)
        db += dt.sum(axis=0)
        dWh += h_prev.T @ dt
        dWx += x.T @ dt
        return dt @ Wx.T, dt @ Wh.T


class GRUCell(_Step):
    """Blocks z | r | h~, r gating h before Wh (the book's GRU), weights packed."""

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        xw = x @ Wx + b
        hw = h_prev @ Wh[:, :2 * H]
        z = _sigmoid(xw[:, :H] + hw[:, :H])
        r = _sigmoid(xw[:, H:2 * H] + hw[:, H:])
        hh = np.tanh(xw[:, 2 * H:] + (r * h_prev) @ Wh[:, 2 * H:])
        h_next = (1 - z) * h_prev + z * hh
        self.cache = (x, h_prev, z, r, hh)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        dWx, dWh, db = self.grads
        H = Wh.shape[0]
        x, h_prev, z, r, hh = self.cache
        dh_prev = dh_next * (1 - z)
        dt = dh_next * z * (1 - hh ** 2)
        dWh[:, 2 * H:] += (r * h_prev).T @ dt
        dhr = dt @ Wh[:, 2 * H:].T
        dh_prev += r * dhr
        dz = dh_next * (hh - h_prev) * z * (1 - z)
        dr = dhr * h_prev * r * (1 - r)
        dA = np.hstack((dz, dr, dt))
        dWx += x.T @ dA
        db += dA.sum(axis=0)
        dWh[:, :2 * H] += h_prev.T @ dA[:, :2 * H]
        dh_prev += dA[:, :2 * H] @ Wh[:, :2 * H].T
        return dA @ Wx.T, dh_prev


class LSTMCell(_Step):
    """Blocks f | g | i | o, as in the book."""

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        A = x @ Wx + h_prev @ Wh + b
        f = _sigmoid(A[:, :H])
        g = np.tanh(A[:, H:2 * H])
        i = _sigmoid(A[:, 2 * H:3 * H])
        o = _sigmoid(A[:, 3 * H:])
        c_next = f * c_prev + g * i
        h_next = o * np.tanh(c_next)
        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, b = self.params
        dWx, dWh, db = self.grads
        x, h_prev, c_prev, i, f, g, o, c_next = self.cache
        tanh_c = np.tanh(c_next)
        ds = dc_next + (dh_next * o) * (1 - tanh_c ** 2)
        dc_prev = ds * f
        di = ds * g * i * (1 - i)
        df = ds * c_prev * f * (1 - f)
        do = dh_next * tanh_c * o * (1 - o)
        dg = ds * i * (1 - g ** 2)
        dA = np.hstack((df, dg, di, do))
        dWh += h_prev.T @ dA
        dWx += x.T @ dA
        db += dA.sum(axis=0)
        return dA @ Wx.T, dA @ Wh.T, dc_prev


class MGUCell(_Step):
    """Minimal gated unit, blocks f | h~, same equations as ``gr.cells.mgu``."""

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        xw = x @ Wx + b
        f = _sigmoid(xw[:, :H] + h_prev @ Wh[:, :H])
        hh = np.tanh(xw[:, H:] + (f * h_prev) @ Wh[:, H:])
        self.cache = (x, h_prev, f, hh)
        return (1 - f) * h_prev + f * hh

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        dWx, dWh, db = self.grads
        H = Wh.shape[0]
        x, h_prev, f, hh = self.cache
        dh_prev = dh_next * (1 - f)
        dt = dh_next * f * (1 - hh ** 2)
        dWh[:, H:] += (f * h_prev).T @ dt
        dfh = dt @ Wh[:, H:].T
        dh_prev += dfh * f
        df = (dh_next * (hh - h_prev) + dfh * h_prev) * f * (1 - f)
        dA = np.hstack((df, dt))
        dWx += x.T @ dA
        db += dA.sum(axis=0)
        dWh[:, :H] += h_prev.T @ df
        dh_prev += df @ Wh[:, :H].T
        return dA @ Wx.T, dh_prev


TEXTBOOK_CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell, "mgu": MGUCell}


class TimeLayer:
    """The book's TimeRNN/TimeGRU/TimeLSTM: a loop over T of per-step cells.

    ``params`` is graphrnn's dict (Wx, Wh, b); ``grads`` gets the same keys.
    Starts from a zero state (not stateful) and returns dxs from ``backward``.
    """

    def __init__(self, kind, params):
        self.kind = kind
        self.cell_cls = TEXTBOOK_CELLS[kind]
        self.names = ("Wx", "Wh", "b")
        self.params = [params[k] for k in self.names]
        self.grads = [np.zeros_like(p) for p in self.params]
        self.layers = None

    def forward(self, xs):
        Wx, Wh, _ = self.params
        N, T, _ = xs.shape
        H = Wh.shape[0]
        hs = np.empty((N, T, H), dtype=xs.dtype)
        h = np.zeros((N, H), dtype=xs.dtype)
        c = np.zeros((N, H), dtype=xs.dtype)
        self.layers = []
        for t in range(T):
            layer = self.cell_cls(self.params, self.grads)
            if self.kind == "lstm":
                h, c = layer.forward(xs[:, t, :], h, c)
            else:
                h = layer.forward(xs[:, t, :], h)
            hs[:, t, :] = h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, _ = self.params
        N, T, H = dhs.shape
        D = Wx.shape[0]
        for g in self.grads:
            g[...] = 0
        dxs = np.empty((N, T, D), dtype=dhs.dtype)
        dh, dc = 0, 0
        for t in reversed(range(T)):
            layer = self.layers[t]
            if self.kind == "lstm":
                dx, dh, dc = layer.backward(dhs[:, t, :] + dh, dc)
            else:
                dx, dh = layer.backward(dhs[:, t, :] + dh)
            dxs[:, t, :] = dx
        self.dh0 = dh
        return dxs

    def grad_dict(self):
        return dict(zip(self.names, self.grads))


# ============================================================================ hoisted by hand
# What a careful numpy programmer writes once they know the trick graphrnn's
# compiler applies: time-major buffers, the input product x @ Wx + b once for
# all N*T rows, per step only the recurrent product and the gate arithmetic,
# and after the reverse loop one GEMM each for dWx, dWh and dxs. It is the
# ceiling for plain numpy on the machine, against which the issue's "2x over
# the textbook" goal can be read. Written directly, not generated: no graph.

class HoistedLayer:
    """Forward+backward of rnn/gru/lstm/mgu over (N, T, D), hoisted by hand."""

    def __init__(self, kind, params):
        self.kind = kind
        self.Wx, self.Wh, self.b = params["Wx"], params["Wh"], params["b"]

    def forward(self, xs):
        N, T, D = xs.shape
        H, dt = self.Wh.shape[0], xs.dtype
        self.X = np.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(T * N, D)
        A = (self.X @ self.Wx + self.b).reshape(T, N, -1)  # pre-activations, gates filled in place
        Hs = np.zeros((T + 1, N, H), dt)
        step = getattr(self, "_fwd_" + self.kind)
        self.aux = np.zeros((T + 1, N, H), dt) if self.kind == "lstm" else np.empty((T, N, H), dt)
        for t in range(T):
            step(t, A[t], Hs, self.aux)
        self.A, self.Hs = A, Hs
        return Hs[1:].transpose(1, 0, 2)

    def backward(self, dhs):
        T, N = self.A.shape[:2]
        H = self.Wh.shape[0]
        dH = dhs.transpose(1, 0, 2)
        DA = np.empty_like(self.A)
        dh = np.zeros((N, H), dhs.dtype)
        dc = np.zeros((N, H), dhs.dtype)
        step = getattr(self, "_bwd_" + self.kind)
        for t in range(T - 1, -1, -1):
            dh, dc = step(t, dH[t] + dh, dc, DA[t])
        DA = DA.reshape(T * N, -1)
        Hp = self.Hs[:T].reshape(T * N, H)
        dWh = np.empty_like(self.Wh)
        if self.kind in ("gru", "mgu"):  # the last block's product reads (gate * h), not h
            k = 2 * H if self.kind == "gru" else H
            np.matmul(Hp.T, DA[:, :k], out=dWh[:, :k])
            np.matmul(self.aux.reshape(T * N, H).T, DA[:, k:], out=dWh[:, k:])
        else:
            np.matmul(Hp.T, DA, out=dWh)
        self.grads = {"Wx": self.X.T @ DA, "Wh": dWh, "b": DA.sum(axis=0)}
        self.dh0 = dh
        return (DA @ self.Wx.T).reshape(T, N, -1).transpose(1, 0, 2)

    def grad_dict(self):
        return self.grads

    # ---- per step: A[t] holds x_t Wx + b on entry and the gate values on exit
    def _fwd_rnn(self, t, a, Hs, aux):
        a += Hs[t] @ self.Wh
        np.tanh(a, out=Hs[t + 1])

    def _bwd_rnn(self, t, dh, dc, da):
        h = self.Hs[t + 1]
        np.multiply(dh, 1 - h * h, out=da)
        return da @ self.Wh.T, dc

    def _fwd_lstm(self, t, a, Hs, C):
        H = Hs.shape[2]
        a += Hs[t] @ self.Wh
        a[:, :H] = _sigmoid(a[:, :H])
        np.tanh(a[:, H:2 * H], out=a[:, H:2 * H])
        a[:, 2 * H:] = _sigmoid(a[:, 2 * H:])
        f, g, i, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.multiply(f, C[t], out=C[t + 1])
        C[t + 1] += g * i
        np.multiply(o, np.tanh(C[t + 1]), out=Hs[t + 1])

    def _bwd_lstm(self, t, dh, dc, da):
        a, C = self.A[t], self.aux
        H = C.shape[2]
        f, g, i, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        tc = np.tanh(C[t + 1])
        ds = dc + dh * o * (1 - tc * tc)
        da[:, :H] = ds * C[t] * f * (1 - f)
        da[:, H:2 * H] = ds * i * (1 - g * g)
        da[:, 2 * H:3 * H] = ds * g * i * (1 - i)
        da[:, 3 * H:] = dh * tc * o * (1 - o)
        return da @ self.Wh.T, ds * f

    def _fwd_gru(self, t, a, Hs, RH):
        H = Hs.shape[2]
        h = Hs[t]
        zr = a[:, :2 * H]
        zr += h @ self.Wh[:, :2 * H]
        zr[...] = _sigmoid(zr)
        z, r = a[:, :H], a[:, H:2 * H]
        np.multiply(r, h, out=RH[t])
        hh = a[:, 2 * H:]
        hh += RH[t] @ self.Wh[:, 2 * H:]
        np.tanh(hh, out=hh)
        np.add(h, z * (hh - h), out=Hs[t + 1])

    def _bwd_gru(self, t, dh, dc, da):
        a, h = self.A[t], self.Hs[t]
        H = h.shape[1]
        z, r, hh = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        np.multiply(dh * z, 1 - hh * hh, out=da[:, 2 * H:])
        dhr = da[:, 2 * H:] @ self.Wh[:, 2 * H:].T
        da[:, :H] = dh * (hh - h) * z * (1 - z)
        da[:, H:2 * H] = dhr * h * r * (1 - r)
        return dh * (1 - z) + r * dhr + da[:, :2 * H] @ self.Wh[:, :2 * H].T, dc

    def _fwd_mgu(self, t, a, Hs, FH):
        H = Hs.shape[2]
        h = Hs[t]
        f = a[:, :H]
        f += h @ self.Wh[:, :H]
        f[...] = _sigmoid(f)
        np.multiply(f, h, out=FH[t])
        hh = a[:, H:]
        hh += FH[t] @ self.Wh[:, H:]
        np.tanh(hh, out=hh)
        np.add(h, f * (hh - h), out=Hs[t + 1])

    def _bwd_mgu(self, t, dh, dc, da):
        a, h = self.A[t], self.Hs[t]
        H = h.shape[1]
        f, hh = a[:, :H], a[:, H:]
        np.multiply(dh * f, 1 - hh * hh, out=da[:, H:])
        dfh = da[:, H:] @ self.Wh[:, H:].T
        da[:, :H] = (dh * (hh - h) + dfh * h) * f * (1 - f)
        return dh * (1 - f) + f * dfh + da[:, :H] @ self.Wh[:, :H].T, dc


# ============================================================================ torch baselines

def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchFused:
    """PyTorch's CPU kernel (``nn.RNN``/``nn.GRU``/``nn.LSTM``) with autograd."""

    def __init__(self, kind, D, H, dtype, seed=0):
        import torch
        torch.manual_seed(seed)
        cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
        self.torch = torch
        self.module = cls(D, H, batch_first=True).to(_torch_dtype(dtype))

    def __call__(self, xs, dhs):
        self.module.zero_grad(set_to_none=True)
        x = xs.detach().requires_grad_(True)
        hs, _ = self.module(x)
        hs.backward(dhs)
        return hs, x.grad


class TorchLoopMGU:
    """The minimal gated unit in torch ops in a Python loop; autograd backward.

    Same parameter layout as ``gr.cells.mgu``; the input product runs once for
    all steps before the loop, which is what a careful PyTorch user writes.
    """

    def __init__(self, params):
        import torch
        self.torch = torch
        self.p = {k: torch.from_numpy(np.array(v)).requires_grad_(True) for k, v in params.items()}

    def __call__(self, xs, dhs):
        torch = self.torch
        Wx, Wh, b = self.p["Wx"], self.p["Wh"], self.p["b"]
        for v in self.p.values():
            v.grad = None
        x = xs.detach().requires_grad_(True)
        N, T, D = x.shape
        H = Wh.shape[0]
        xw = (x.reshape(N * T, D) @ Wx + b).reshape(N, T, 2 * H)
        h = torch.zeros((N, H), dtype=x.dtype)
        hs = []
        for t in range(T):
            f = torch.sigmoid(xw[:, t, :H] + h @ Wh[:, :H])
            hh = torch.tanh(xw[:, t, H:] + (f * h) @ Wh[:, H:])
            h = (1 - f) * h + f * hh
            hs.append(h)
        hs = torch.stack(hs, dim=1)
        hs.backward(dhs)
        return hs, x.grad


def _torch_dtype(dtype):
    import torch
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


# ============================================================================ the contenders

def make_case(kind, size, dtype=np.float32, seed=0, impls=IMPLS):
    """Callables (no arguments, one forward+backward each) on the same data.

    Returns (dict impl -> callable, info). All see the same xs and dhs; the
    numpy ones share graphrnn's initial parameters (torch's fused modules keep
    their own initialisation: their gate equations differ anyway).
    """
    import graphrnn as gr
    N, T, D, H = size
    cell = gr.cells.get(kind)(D, H)
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
    if "textbook" in impls:
        layer = TimeLayer(kind, params)

        def run_textbook():
            layer.forward(xs)
            return layer.backward(dhs)
        fns["textbook"] = run_textbook
    if "hoisted" in impls:
        hoisted = HoistedLayer(kind, params)

        def run_hoisted():
            hoisted.forward(xs)
            return hoisted.backward(dhs)
        fns["hoisted"] = run_hoisted
    if "torch" in impls and torch_available():
        import torch
        txs, tdhs = torch.from_numpy(xs), torch.from_numpy(dhs)
        model = TorchLoopMGU(params) if kind == "mgu" else TorchFused(kind, D, H, dtype, seed)

        def run_torch():
            return model(txs, tdhs)
        fns["torch"] = run_torch
    if "jax" in impls:
        jax_contenders = contenders_module("jax_contenders")
        if jax_contenders.available():
            fns["jax"] = jax_contenders.JaxCell(cell, params, xs, dhs)
    info = {"torch_kind": "python loop + autograd" if kind == "mgu" else f"nn.{kind.upper()} (fused)"}
    return fns, info


def gemm_flops(kind, size, need_xs=True):
    """Matrix-product FLOPs of one forward+backward (elementwise work ignored).

    Forward: per step an (N, D) @ (D, G*H) and (N, H) @ (H, G*H) in total over
    the gates. Backward: each product has two transposed products (dW and the
    gradient of its left operand), except dxs when it is not needed.
    """
    N, T, D, H = size
    G = GATES[kind]
    fwd = 2 * N * T * G * H * (D + H)
    bwd = 2 * fwd - (0 if need_xs else 2 * N * T * G * H * D)
    return fwd + bwd


# ============================================================================ measurement

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
                   memory=True, log=print, target_s=0.01):
    """Time every (size, cell, impl); returns a JSON-able dict of results."""
    import graphrnn as gr
    sizes = dict(SIZES) if sizes is None else dict(sizes)
    rounds = rounds or {}
    threads = numpy_threads()
    have_torch = "torch" in impls and torch_available()
    meta = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": sys.version.split()[0], "numpy": np.__version__,
        "graphrnn": getattr(gr, "__version__", "?"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "numpy_blas_threads": threads, "dtype": np.dtype(dtype).name,
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
        for kind in cells:
            fns, info = make_case(kind, size, dtype=dtype, impls=impls)
            cases[(sname, kind)] = fns
            k = rounds.get(sname, 10)
            t_start = time.perf_counter()
            timing = time_interleaved(fns, k, target_s=target_s)
            flops = gemm_flops(kind, size)
            for impl, tm in timing.items():
                rows.append({"size": sname, "N": size[0], "T": size[1], "D": size[2], "H": size[3],
                             "cell": kind, "impl": impl, "gemm_flops": flops, **tm,
                             "torch_kind": info["torch_kind"] if impl == "torch" else None})
            log(f"  {sname:6s} {kind:4s} " + "  ".join(
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
    if memory:
        meta["malloc_threshold_fixed"] = _fix_malloc_threshold()
        for row in rows:
            fn = cases[(row["size"], row["cell"])][row["impl"]]
            row.update(measure_memory(fn, numpy_traced=row["impl"] not in ("torch", "jax")))
    for row in rows:
        base = {r["impl"]: r["median_s"] for r in rows if r["size"] == row["size"] and r["cell"] == row["cell"]}
        g = base.get("graphrnn")
        row["speedup_of_graphrnn"] = (row["median_s"] / g) if g else None
    return {"meta": meta, "rounds": rounds, "sizes": {k: list(v) for k, v in sizes.items()}, "rows": rows}


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
        f"{meta['numpy_blas_threads']} BLAS threads (numpy), torch threads {meta['torch_threads']}; "
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
            impl = "torch loop" if row["cell"] == "mgu" else "torch nn"
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
        "(benchmarks/jax_contenders.py).",
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
    for cell in CELL_NAMES:
        goal(f"{cell} vs JAX, tiny >= 1x", "tiny", cell, "jax", 1.0)
    goal("lstm vs nn.LSTM, medium >= 1x", "medium", "lstm", "torch", 1.0)
    goal("gru vs nn.GRU, medium >= 1.5x", "medium", "gru", "torch", 1.5)
    goal("mgu vs JAX, medium >= 1.2x", "medium", "mgu", "jax", 1.2)
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
    os.makedirs(out, exist_ok=True)
    goals = goals_summary(result)
    result = dict(result, goals=goals)
    jpath = os.path.join(out, stem + ".json")
    mpath = os.path.join(out, stem + ".md")
    md = markdown_table(result)
    if goals:
        md += "\nGoals (ratio = other implementation's time / graphrnn's):\n\n" + goals_markdown(goals)
    for path, text in ((jpath, json.dumps(result, indent=1) + "\n"), (mpath, md)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
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
    argv = [sys.executable, "-m", "graphrnn.cli", "bench", "--out", out, "--cells", *cells, "--sizes", *names]
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
    from .cli import UsageError
    quick = bool(getattr(args, "quick", False))
    out = getattr(args, "out", None) or "benchmarks/results"
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
    print(f"graphrnn bench: sizes {', '.join(names)}; cells {', '.join(cells)}; "
          f"rounds {', '.join(f'{s}={rounds.get(s, 10)}' for s in names)}")
    t0 = time.perf_counter()
    result = run_benchmarks({s: SIZES[s] for s in names}, cells, rounds, impls)
    result["meta"]["wall_s"] = time.perf_counter() - t0
    stem = "bench_quick" if quick else "bench"
    jpath, mpath, md = write_results(result, out, stem)
    print()
    print(md)
    print(f"wrote {jpath} and {mpath}")
    if not quick and "medium" in names and "gru" in cells:
        ppath = os.path.join(out, "profile_gru_medium.txt")
        with open(ppath, "w") as f:
            f.write(profile_gru())
        print(f"wrote {ppath}")
    return 0


# ============================================================================ language model

LM_SIZES = {  # name: (V, D, H, layers, N, T, dropout, tied) -- the PTB presets
    "ch6": (10000, 100, 100, 1, 20, 35, 0.0, False),
    "better": (10000, 650, 650, 2, 20, 35, 0.5, True),
}
LM_CELLS = ("lstm", "gru")
LM_GOALS = {("better", "gru"): 1.0, ("better", "lstm"): 0.85}   # torch's time / graphrnn's, at least


def contenders_module(name):
    """A module from the repository's ``benchmarks/`` folder (competitors are not
    part of the library): found beside the package in a clone, or in the
    current folder."""
    import importlib
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (os.getcwd(), here):
        folder = os.path.join(root, "benchmarks")
        if os.path.isfile(os.path.join(folder, name + ".py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return importlib.import_module(name)
    raise FileNotFoundError(f"benchmarks/{name}.py not found: run graphrnn bench from a clone of graphrnn")


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
    lm = contenders_module("lm_contenders")
    threads = numpy_threads()
    have_torch = use_torch and torch_available()
    if have_torch:
        import torch
        torch.set_num_threads(threads)
    meta = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "python": sys.version.split()[0],
            "numpy": np.__version__, "cpus": os.cpu_count(), "numpy_blas_threads": threads,
            "torch": __import__("torch").__version__ if have_torch else None, "book": book,
            "sgemm_gflops_numpy": sgemm_peak()}
    rows, cases = [], {}
    for sname in sizes:
        V, D, H, layers, N, T, dropout, tie = LM_SIZES[sname]
        rng = np.random.default_rng(0)
        xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
        for cell in cells:
            fns = {"graphrnn": lm_graphrnn_step(V, D, H, layers, cell, dropout, tie, xs, ts)}
            if have_torch:
                fns["torch"] = lm.torch_step(V, D, H, layers, cell, dropout, tie, xs, ts)
            if book and cell == "lstm":
                fns["book"] = lm.book_step(book, V, D, H, sname == "better", dropout, xs, ts)
            cases[(sname, cell)] = fns
            t0 = time.perf_counter()
            timing = time_interleaved(fns, rounds, target_s=0.0, warmup=1)
            for impl, tm in timing.items():
                rows.append({"size": sname, "cell": cell, "impl": impl, "V": V, "D": D, "H": H,
                             "layers": layers, "N": N, "T": T, "dropout": dropout, "tied": tie, **tm})
            log(f"  {sname:6s} {cell:4s} " + "  ".join(f"{k} {v['median_s'] * 1e3:8.1f} ms"
                                                       for k, v in timing.items())
                + f"   ({time.perf_counter() - t0:.1f} s)")
    if memory:
        meta["malloc_threshold_fixed"] = _fix_malloc_threshold()
        for row in rows:
            fn = cases[(row["size"], row["cell"])][row["impl"]]
            row.update(measure_memory(fn, numpy_traced=row["impl"] != "torch"))
    for row in rows:
        g = next(r["median_s"] for r in rows if r["size"] == row["size"] and r["cell"] == row["cell"]
                 and r["impl"] == "graphrnn")
        row["speedup_of_graphrnn"] = row["median_s"] / g
    return {"meta": meta, "rounds": rounds, "rows": rows}


def lm_markdown(result):
    m = result["meta"]
    lines = [f"One training step of the PTB language model (forward, backward, global-norm clip, SGD), "
             f"float32, median of {result['rounds']} interleaved rounds; {m['date_utc']} UTC, "
             f"{m['cpus']} CPUs, numpy {m['numpy']}, torch {m['torch']}.",
             "Speed-up = the other's time / graphrnn's. Memory: growth of the resident set's peak "
             "during one step (all), and numpy's traced peak (numpy contenders).", "",
             "| size | cell | implementation | ms per step | speed-up of graphrnn | RSS peak growth MiB | traced peak MiB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['size']} | {r['cell']} | {r['impl']} | {r['median_s'] * 1e3:.1f} | "
                     f"{r['speedup_of_graphrnn']:.2f}x | {_fmt_mib(r.get('rss_peak_delta_mib'))} | "
                     f"{_fmt_mib(r.get('traced_peak_mib'))} |")
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
    from .cli import UsageError
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
    out = getattr(args, "out", None) or os.path.join("runs", "bench")
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
    try:
        contenders_module("lm_contenders")
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"graphrnn bench --lm: sizes {', '.join(sizes)}; cells {', '.join(cells)}; {rounds} rounds")
    result = run_lm_benchmarks(sizes, cells, rounds, book=book, use_torch=use_torch)
    result["goals"] = lm_goals(result)
    os.makedirs(out, exist_ok=True)
    md = lm_markdown(result)
    for path, text in ((os.path.join(out, "lm.json"), json.dumps(result, indent=1) + "\n"),
                       (os.path.join(out, "lm.md"), md)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    print()
    print(md)
    print(f"wrote {os.path.join(out, 'lm.json')} and {os.path.join(out, 'lm.md')}")
    return 0
