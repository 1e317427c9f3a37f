"""Optimizers and gradient clipping over dicts name -> array, updated in place.

Parameters are updated in place so every holder of the dict (the cell's
``unroll`` call, the output layers, a checkpoint writer) sees the new values
without re-binding anything. Each optimizer can hand out its state as plain
arrays plus JSON-able numbers (``state_dict``) and take it back
(``load_state_dict``), which is what a checkpoint stores.
"""
from __future__ import annotations

import math

from . import backend
from .errors import OptimError


def _check_lr(lr):
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise OptimError(f"learning rate must be a positive finite number, got {lr}")
    return lr


class SGD:
    """Plain gradient descent: p -= lr * g."""

    name = "sgd"

    def __init__(self, params, lr=0.01):
        self.params = params
        self.lr = _check_lr(lr)

    def step(self, grads):
        lr = self.lr
        params = self.params
        for k, g in grads.items():
            p = params[k]
            p -= lr * g

    def state_dict(self):
        return {}, {"name": self.name, "lr": self.lr}

    def load_state_dict(self, arrays, meta):
        _check_meta(self, meta)
        self.lr = _check_lr(meta["lr"])


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * m^ / (sqrt(v^) + eps)."""

    name = "adam"

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = params
        self.lr = _check_lr(lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise OptimError(f"Adam betas must lie in [0, 1), got {beta1}, {beta2}")
        if eps <= 0:
            raise OptimError(f"Adam eps must be positive, got {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        xp = backend.xp()
        self.m = {k: xp.zeros_like(v) for k, v in params.items()}
        self.v = {k: xp.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads):
        xp = backend.xp()
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # Folding both bias corrections into the step size saves two passes per array.
        lr_t = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            self.params[k] -= lr_t * m / (xp.sqrt(v) + self.eps)

    def state_dict(self):
        arrays = {}
        for k in self.m:
            arrays[f"m.{k}"] = self.m[k]
            arrays[f"v.{k}"] = self.v[k]
        meta = {"name": self.name, "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "t": self.t}
        return arrays, meta

    def load_state_dict(self, arrays, meta):
        _check_meta(self, meta)
        for k in self.m:
            for which, store in (("m", self.m), ("v", self.v)):
                key = f"{which}.{k}"
                if key not in arrays:
                    raise OptimError(f"Adam state has no {key!r}")
                a = arrays[key]
                if tuple(a.shape) != tuple(store[k].shape):
                    raise OptimError(f"Adam state {key!r} has shape {tuple(a.shape)}, "
                                     f"the parameter has {tuple(store[k].shape)}")
                store[k][...] = a
        self.lr = _check_lr(meta["lr"])
        self.beta1, self.beta2, self.eps = meta["beta1"], meta["beta2"], meta["eps"]
        self.t = int(meta["t"])


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def _check_meta(opt, meta):
    if meta.get("name") != opt.name:
        raise OptimError(f"optimizer state is for {meta.get('name')!r}, not {opt.name!r}")


def make(name, params, lr):
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise OptimError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}") from None
    return cls(params, lr=lr)


def clip_elementwise(grads, limit):
    """Clip every gradient element to [-limit, limit], in place; returns grads."""
    if not limit > 0:
        raise OptimError(f"clip limit must be positive, got {limit}")
    xp = backend.xp()
    for g in grads.values():
        xp.clip(g, -limit, limit, out=g)
    return grads


def global_norm(grads):
    """sqrt of the sum of squares of every gradient element."""
    xp = backend.xp()
    return math.sqrt(sum(float(xp.vdot(g, g)) for g in grads.values()))


def clip_global_norm(grads, max_norm):
    """Scale all gradients by max_norm / norm when their joint norm exceeds max_norm
    (in place), so the direction of the step is kept. Returns the norm before clipping."""
    if not max_norm > 0:
        raise OptimError(f"max_norm must be positive, got {max_norm}")
    norm = global_norm(grads)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm
