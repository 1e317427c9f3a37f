"""Output layers and losses that sit on top of an unrolled cell.

Each is a small class with a hand-written forward and backward, in the style
of the textbook's ``common/layers.py``. They work on whole sequences at once:
``hs`` is (N, T, H), so the layer costs one matmul per sequence, not one per
step. Parameters live in the model's shared dict under ``prefix + name`` and
gradients are written to a dict the caller passes, so one optimizer sees the
cell's and the layers' parameters alike.
"""
from __future__ import annotations

import numpy as np

from . import backend


class Affine:
    """y = x W + b over all rows at once;  dW = xᵀ dy,  db = Σ dy,  dx = dy Wᵀ.

    ``x`` may have any leading axes: (N, T, H) runs as one (N·T, H) GEMM, never
    one per time step.
    """

    def __init__(self, in_size, out_size, bias=True, prefix="out."):
        if in_size < 1 or out_size < 1:
            raise ValueError(f"Affine: sizes must be positive, got {in_size} x {out_size}")
        self.in_size, self.out_size, self.bias = in_size, out_size, bias
        self.w = prefix + "W"
        self.b = prefix + "b" if bias else None
        self._x = None

    def param_shapes(self):
        shapes = {self.w: (self.in_size, self.out_size)}
        if self.bias:
            shapes[self.b] = (self.out_size,)
        return shapes

    def forward(self, params, x):
        self._x = x
        y = x @ params[self.w]
        if self.bias:
            y += params[self.b]
        return y

    def backward(self, params, dy, grads):
        x2 = self._x.reshape(-1, self.in_size)
        dy2 = dy.reshape(-1, self.out_size)
        grads[self.w] = x2.T @ dy2
        if self.bias:
            grads[self.b] = dy2.sum(axis=0)
        return dy @ params[self.w].T


class Embedding:
    """y[r] = W[ids[r]];  dW[v] = Σ_{r: ids[r]=v} dy[r]  (one scatter-add for the whole batch).

    ``ids`` is an integer array of any shape; y has that shape plus (D,). The
    gradient is dense (V, D) but only the rows of ids seen are non-zero.
    """

    def __init__(self, vocab_size, dim, key="embed.W"):
        if vocab_size < 1 or dim < 1:
            raise ValueError(f"Embedding: sizes must be positive, got {vocab_size} x {dim}")
        self.vocab_size, self.dim, self.w = vocab_size, dim, key
        self._ids = None

    def param_shapes(self):
        return {self.w: (self.vocab_size, self.dim)}

    def forward(self, params, ids, out=None):
        xp = backend.xp()
        self._ids = ids
        flat = ids.reshape(-1)
        y = xp.take(params[self.w], flat, axis=0, out=out)
        return y.reshape(ids.shape + (self.dim,))

    def backward(self, dy, grads, accumulate=False):
        """Scatter-adds dy into grads[W] (zeroed first unless ``accumulate``)."""
        xp = backend.xp()
        g = grads.get(self.w)
        if g is None:
            g = grads[self.w] = xp.zeros((self.vocab_size, self.dim), dtype=dy.dtype)
        elif not accumulate:
            g.fill(0)
        backend.scatter_add(g, self._ids.reshape(-1), dy.reshape(-1, self.dim))
        return g


class Dropout:
    """Inverted dropout: y = x·m / (1−p) with m ~ Bernoulli(1−p) while training, y = x in
    evaluation;  dx = dy·m / (1−p). Scaling at training time keeps evaluation free."""

    def __init__(self, ratio):
        ratio = float(ratio)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"Dropout: ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self._mask = None

    def forward(self, x, rng, train=True):
        """``rng`` is a numpy Generator (host); its draws decide the mask."""
        if not train or self.ratio == 0.0:
            self._mask = None
            return x
        keep = 1.0 - self.ratio
        u = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        # a byte per entry crosses to the GPU, not a float
        mask = backend.asarray(u >= self.ratio).astype(x.dtype)
        mask *= x.dtype.type(1.0 / keep)
        self._mask = mask
        return x * mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask


class SoftmaxOutput:
    """The output side of a language model as one layer: z = x W + b over all
    N·T rows, p = softmax(z), L = mean over rows of −log p[t].

    With e = exp(z), row sums s and r_i = 1 / (count·s_i), the gradient is
    dz = diag(r)·(e − s⊙onehot(t)): e with s_i taken from its target entry,
    rows scaled by r. The scaling of that (rows, V) matrix is never done: the
    backward scales the 100-wide x instead of the 10,000-wide e,

        e[i, t_i] −= s_i                 (rows entries, in place)
        dW = (r⊙x)ᵀ e,   db = rᵀ e,   dx = r ⊙ (e Wᵀ)

    so the whole backward is two GEMMs and passes over (rows, in) arrays.

    ``W`` is (in, V), or with ``transposed`` a (V, in) matrix used as Wᵀ (a
    tied output layer reuses the embedding). When the caller keeps W and b as
    the rows of one (in+1, V) array (``joint``), the bias rides in the GEMMs
    against a column of ones: no bias pass forward, no db pass backward.

    Stability: exp(z) is taken without shifting (a pass fewer); a row whose
    sum overflows or nears underflow (not in [1e-30, inf)) is recomputed with
    its maximum subtracted, so the loss is log s + m − z[t] either way.
    """

    TINY = 1e-30

    def __init__(self, in_size, vocab_size, transposed=False):
        if in_size < 1 or vocab_size < 1:
            raise ValueError(f"SoftmaxOutput: sizes must be positive, got {in_size} x {vocab_size}")
        self.in_size, self.vocab_size, self.transposed = in_size, vocab_size, transposed
        self._x = None

    def scores(self, x, W, b):
        """z = x W + b (rows, V), leaving the saved state alone."""
        return x @ (W.T if self.transposed else W) + b

    def forward(self, x, targets, W, b, joint=None):
        """Mean −log p[targets] for x (rows, in) and integer targets (rows,)."""
        xp = backend.xp()
        rows = x.shape[0]
        z = self._buffer(xp, rows, x.dtype)
        if joint is not None:
            xa = xp.empty((rows, self.in_size + 1), dtype=x.dtype)
            xa[:, :self.in_size] = x
            xa[:, self.in_size] = 1
            xp.matmul(xa, joint, out=z)
        else:
            xp.matmul(x, W.T if self.transposed else W, out=z)
            z += b
        r = xp.arange(rows)
        z_t = z[r, targets]
        with np.errstate(over="ignore"):  # an overflowing row is redone below
            xp.exp(z, out=z)
            # row sums as a matrix-vector product: 3x faster than sum(axis=1) here
            s = z @ self._ones(xp, z.dtype)
        shift = xp.zeros_like(s)
        bad = ~((s >= self.TINY) & xp.isfinite(s))
        if bool(bad.any()):
            idx = xp.flatnonzero(bad)
            zb = self.scores(x[idx], W, b)
            m = zb.max(axis=1, keepdims=True)
            zb -= m
            xp.exp(zb, out=zb)
            z[idx] = zb
            s[idx] = zb.sum(axis=1)
            shift[idx] = m[:, 0]
        nll = xp.log(s) + shift - z_t
        self._x, self._s, self._t, self.count = x, s, targets, rows
        return float(nll.sum(dtype=xp.float64)) / rows

    def _ones(self, xp, dtype):
        ones = getattr(self, "_ones_v", None)
        if ones is None or ones.dtype != dtype or type(ones) is not xp.ndarray:
            ones = self._ones_v = xp.ones(self.vocab_size, dtype=dtype)
        return ones

    def _buffer(self, xp, rows, dtype):
        buf = getattr(self, "_z", None)
        if buf is None or buf.shape[0] != rows or buf.dtype != dtype:
            buf = self._z = xp.empty((rows, self.vocab_size), dtype=dtype)
        return buf

    def backward(self, W, dW, db, djoint=None):
        """Writes dW and db (or [dW; db] into ``djoint``); returns dx (rows, in)."""
        xp = backend.xp()
        e, x, t = self._z, self._x, self._t
        if x is None:
            raise ValueError("SoftmaxOutput: backward needs a forward first (and runs once per forward)")
        e[xp.arange(e.shape[0]), t] -= self._s                      # e − s⊙onehot(t)
        r = (e.dtype.type(1.0 / self.count) / self._s).astype(e.dtype)
        xr = x * r[:, None]                                          # r ⊙ x
        if djoint is not None:
            xra = xp.concatenate([xr, r[:, None]], axis=1)
            xp.matmul(xra.T, e, out=djoint)                          # [dW; db] = (r⊙[x, 1])ᵀ e
        else:
            if self.transposed:
                xp.matmul(e.T, xr, out=dW)                           # dWᵀ = eᵀ (r⊙x)
            else:
                xp.matmul(xr.T, e, out=dW)
            xp.matmul(r, e, out=db)                                  # db = rᵀ e
        dx = e @ W if self.transposed else e @ W.T                   # e Wᵀ
        dx *= r[:, None]
        self._x = None
        return dx


def sigmoid(xp, z):
    # tanh form: no overflow warning for large negative z, same value as 1/(1+e^-z)
    return 0.5 * xp.tanh(0.5 * z) + 0.5


class SigmoidMSE:
    """p = sigmoid(z);  L = 1/2 sum (p - y)^2;  dz = (p - y) p (1 - p).

    The 1/2 makes plain gradient descent with rate a the update of the classic
    hand-written programs (iamtrask's ``W += a * h^T ((y - p) p (1 - p))``).
    """

    def forward(self, z, y):
        xp = backend.xp()
        self.p = p = sigmoid(xp, z)
        self.err = err = p - y
        return 0.5 * float((err * err).sum())

    def backward(self):
        p = self.p
        return self.err * p * (1 - p)


class SquaredError:
    """L = sum (pred - y)^2;  dpred = 2 (pred - y)  (no 1/2: Nico Jimenez's ToyLossLayer)."""

    def forward(self, pred, y):
        self.err = err = pred - y
        return float((err * err).sum())

    def backward(self):
        return 2 * self.err


class SoftmaxCrossEntropy:
    """p = softmax(z) over the last axis;  L = −Σ log p[target];  dz = p − onehot(target).

    ``targets`` holds class indices with the shape of z without its last axis;
    the loss is summed over every position, as in the dinosaur-name program.
    Stable: log p[t] = z[t] − m − log Σ exp(z − m) with m the row's maximum,
    so no exp overflows and no rounded-to-zero probability reaches the log.
    """

    def forward(self, z, targets):
        xp = backend.xp()
        z2 = z.reshape(-1, z.shape[-1])
        rows = xp.arange(z2.shape[0])
        t = targets.reshape(-1)
        e = z2 - z2.max(axis=1, keepdims=True)
        logit_t = e[rows, t]
        xp.exp(e, out=e)
        s = e.sum(axis=1)
        self.p, self.rows, self.t, self.shape = e / s[:, None], rows, t, z.shape
        return float((xp.log(s) - logit_t).sum())

    def backward(self):
        d = self.p.copy()
        d[self.rows, self.t] -= 1
        return d.reshape(self.shape)


def softmax(xp, z):
    z = z - z.max(axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
