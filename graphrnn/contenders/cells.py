"""The implementations ``graphrnn bench`` times graphrnn's cells against.

- ``TimeLayer``: numpy layers written the way "Deep Learning from Scratch 2"
  writes them (``common/time_layers.py``): one cell object per step with its
  own forward and monolithic backward, a Time* wrapper looping over T, the
  input product ``x_t @ Wx`` and the weight gradients computed per step.
- ``HoistedLayer``: numpy written the way graphrnn's compiler runs a cell,
  by hand (the best plain numpy we know how to write).
- ``TorchFused``: PyTorch's CPU ``nn.RNN/GRU/LSTM`` (fused kernels);
  ``TorchLoopMGU``: the minimal gated unit, which PyTorch has no kernel for,
  in torch ops in a Python loop with autograd (input projection hoisted out of
  the loop, as a careful user would write it); ``TorchLoopLNLSTM``: the
  layer-normalised LSTM the same way (the input product and its layer norm
  hoisted).

The numpy ones use graphrnn's parameter layouts, so ``tests/test_bench.py``
checks in float64 that they compute what graphrnn computes. They are
competitors, not part of the engine: only the harness (``graphrnn/bench.py``)
imports them.
"""
from __future__ import annotations

import numpy as np


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

    def __init__(self, cell_name, params):
        self.cell_name = cell_name
        self.cell_cls = TEXTBOOK_CELLS[cell_name]
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
            if self.cell_name == "lstm":
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
            if self.cell_name == "lstm":
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

    def __init__(self, cell_name, params):
        self.cell_name = cell_name
        self.Wx, self.Wh, self.b = params["Wx"], params["Wh"], params["b"]

    def forward(self, xs):
        N, T, D = xs.shape
        H, dt = self.Wh.shape[0], xs.dtype
        self.X = np.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(T * N, D)
        A = (self.X @ self.Wx + self.b).reshape(T, N, -1)  # pre-activations, gates filled in place
        Hs = np.zeros((T + 1, N, H), dt)
        step = getattr(self, "_fwd_" + self.cell_name)
        self.aux = np.zeros((T + 1, N, H), dt) if self.cell_name == "lstm" else np.empty((T, N, H), dt)
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
        step = getattr(self, "_bwd_" + self.cell_name)
        for t in range(T - 1, -1, -1):
            dh, dc = step(t, dH[t] + dh, dc, DA[t])
        DA = DA.reshape(T * N, -1)
        Hp = self.Hs[:T].reshape(T * N, H)
        dWh = np.empty_like(self.Wh)
        if self.cell_name in ("gru", "mgu"):  # the last block's product reads (gate * h), not h
            k = 2 * H if self.cell_name == "gru" else H
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

class TorchFused:
    """PyTorch's CPU kernel (``nn.RNN``/``nn.GRU``/``nn.LSTM``) with autograd."""

    def __init__(self, cell_name, D, H, dtype, seed=0):
        import torch
        torch.manual_seed(seed)
        cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell_name]
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


class TorchLoopLNLSTM:
    """The layer-normalised LSTM (``gr.cells.ln_lstm``) in torch ops in a Python
    loop; autograd backward. The input product and its layer norm run once for
    all steps before the loop, as graphrnn's compiler and a careful user do."""

    def __init__(self, params, eps=1e-5):
        import torch
        self.torch, self.eps = torch, eps
        self.p = {k: torch.from_numpy(np.array(v)).requires_grad_(True) for k, v in params.items()}

    def _ln(self, v, g):
        m = v.mean(-1, keepdim=True)
        d = v - m
        return d / self.torch.sqrt((d * d).mean(-1, keepdim=True) + self.eps) * g

    def __call__(self, xs, dhs):
        torch, p = self.torch, self.p
        for v in p.values():
            v.grad = None
        x = xs.detach().requires_grad_(True)
        N, T, D = x.shape
        H = p["gc"].shape[0]
        xw = self._ln(x @ p["Wx"], p["gx"])  # (N, T, 4H) once for all steps
        h = torch.zeros((N, H), dtype=x.dtype)
        c = torch.zeros((N, H), dtype=x.dtype)
        hs = []
        for t in range(T):
            a = xw[:, t] + self._ln(h @ p["Wh"], p["gh"]) + p["b"]
            f, g = torch.sigmoid(a[:, :H]), torch.tanh(a[:, H:2 * H])
            i, o = torch.sigmoid(a[:, 2 * H:3 * H]), torch.sigmoid(a[:, 3 * H:])
            c = f * c + i * g
            h = o * torch.tanh(self._ln(c, p["gc"]) + p["bc"])
            hs.append(h)
        hs = torch.stack(hs, dim=1)
        hs.backward(dhs)
        return hs, x.grad


def _torch_dtype(dtype):
    import torch
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


