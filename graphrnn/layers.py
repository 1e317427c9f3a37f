"""Output layers and losses that sit on top of an unrolled cell.

Each is a small class with a hand-written forward and backward, in the style
of the textbook's ``common/layers.py``. They work on whole sequences at once:
``hs`` is (N, T, H), so the layer costs one matmul per sequence, not one per
step. Parameters live in the model's shared dict under ``prefix + name`` and
gradients are written to a dict the caller passes, so one optimizer sees the
cell's and the layers' parameters alike.
"""
from __future__ import annotations

from . import backend


class Affine:
    """y = x W (+ b);  dW = x^T dy,  db = sum dy,  dx = dy W^T."""

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
        x = self._x
        x2 = x.reshape(-1, self.in_size)
        dy2 = dy.reshape(-1, self.out_size)
        grads[self.w] = x2.T @ dy2
        if self.bias:
            grads[self.b] = dy2.sum(axis=0)
        return dy @ params[self.w].T


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
    """p = softmax(z) over the last axis;  L = -sum log p[target];  dz = p - onehot(target).

    ``targets`` holds class indices with the shape of z without its last axis;
    the loss is summed (not averaged) over every position, as in the
    dinosaur-name program.
    """

    def forward(self, z, targets):
        xp = backend.xp()
        z = z - z.max(axis=-1, keepdims=True)  # shift: exp never overflows
        e = xp.exp(z)
        p = e / e.sum(axis=-1, keepdims=True)
        self.p, self.targets = p, targets
        flat = p.reshape(-1, p.shape[-1])
        idx = targets.reshape(-1)
        picked = flat[xp.arange(flat.shape[0]), idx]
        return -float(xp.log(picked).sum())

    def backward(self):
        xp = backend.xp()
        d = self.p.copy()
        flat = d.reshape(-1, d.shape[-1])
        flat[xp.arange(flat.shape[0]), self.targets.reshape(-1)] -= 1
        return d


def softmax(xp, z):
    z = z - z.max(axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
