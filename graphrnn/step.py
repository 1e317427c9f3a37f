"""The whole training step as one compiled function: ``gr.compile_step``.

A cell alone is not a training step: around it sit an output layer, a loss,
BPTT, clipping and the optimiser's update, and at the small sizes of the
classic experiments each of those is a handful of Python calls costing more
than the arithmetic. ``compile_step`` declares them with the cell::

    step = gr.compile_step(cell, params, head=gr.Linear(27), loss="softmax_ce",
                           clip=5.0, optimizer="sgd", lr=0.01)
    loss = step(xs, targets)            # one Python call: forward, loss, BPTT, update
    loss = step(xs2, targets2, state0=step.state)   # carry the state on

and the plan's engine runs all of it: on the native engine one ``@njit``
function per plan, head, loss and optimiser (``graphrnn.emit.step_numba``),
called once per step, allocating nothing; on the numpy engine the same step
as ``gr.unroll`` + backward and numpy calls (the reference the native one is
checked against, ``tests/test_step.py``). See ``docs/step.md``.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend, emit, optim
from .errors import GraphError
from .plan import compile_cell
from .primitives import fmt_shape

LOSSES = ("softmax_ce", "sigmoid_ce", "squared_error", "sigmoid_squared_error")
# Above this many multiply-adds per step on plain loops (batch rows included;
# the products below step_numba.BLAS_MIN_MACS) the native step's loops lose to
# BLAS, and the step runs as unroll (on the engine in force) + numpy instead.
# Measured interleaved on primes (lstm_nico, H=100, 60,000 per step) before its
# product went to BLAS: the native step 2.4 ms against 1.8 ms; dinosaurs
# (5,200) and binary addition (304) run native. The cell loops' own limit, the same.
STEP_NATIVE_MAX_MACS = 20_000
# Products of step_numba.BLAS_MIN_MACS or more run as BLAS calls inside the
# native step, one row at a time: up to this batch (primes has one row), above
# it the reference path's one GEMM over all rows (not measured in between).
STEP_BLAS_MAX_ROWS = 8


class Linear:
    """Output layer z = h W + b on every step (parameters ``<prefix>W``, ``<prefix>b``)."""
    kind = "linear"

    def __init__(self, out_size, bias=True, prefix="out."):
        if int(out_size) < 1:
            raise GraphError(f"Linear: out_size must be positive, got {out_size}")
        self.out_size, self.bias = int(out_size), bool(bias)
        self.w, self.b = prefix + "W", (prefix + "b" if bias else None)
        self.in_size = None

    def bind(self, in_size):
        self.in_size = in_size
        return self

    def param_names(self):
        return [self.w] + ([self.b] if self.bias else [])

    def param_shapes(self):
        shapes = {self.w: (self.in_size, self.out_size)}
        if self.bias:
            shapes[self.b] = (self.out_size,)
        return shapes


class Columns:
    """The cell's output columns ``lo:hi`` themselves as the loss's input (no parameters)."""
    kind = "columns"

    def __init__(self, lo, hi):
        self.lo, self.hi = int(lo), int(hi)
        self.out_size = self.hi - self.lo
        self.in_size = None

    def bind(self, in_size):
        if not 0 <= self.lo < self.hi <= in_size:
            raise GraphError(f"Columns({self.lo}, {self.hi}): outside the cell's {in_size} outputs")
        self.in_size = in_size
        return self

    def param_names(self):
        return []

    def param_shapes(self):
        return {}


def compile_step(cell, params, *, head=None, loss="squared_error", clip=None, optimizer="sgd", lr=0.01,
                 engine=None):
    """One training step of ``cell`` with an output layer, a loss, clipping and an update.

    ``params`` holds the cell's parameters and the head's (updated in place);
    ``head`` is ``Linear(out)``, ``Columns(lo, hi)`` or None (all the cell's
    outputs); ``loss`` one of ``softmax_ce`` (targets: class indices (N, T)),
    ``sigmoid_ce``, ``squared_error`` (sum of (z - y)², as Nico Jimenez's
    programs), ``sigmoid_squared_error`` (½ Σ (σ(z) − y)², as iamtrask's), the
    others' targets (N, T, out); every loss is summed over all steps and rows.
    ``clip`` clips every gradient element to [-clip, clip]; ``optimizer`` is
    ``"sgd"``, ``"adam"`` or an optimiser of ``graphrnn.optim`` over ``params``
    (its rate and state are used and kept, so checkpoints hold them as before).
    ``engine``: ``"native"`` (the whole step as one compiled function),
    ``"numpy"`` (the reference), ``"auto"`` (native where it is cached);
    default the engine in force when the step first runs.
    """
    return Step(cell, params, head, loss, clip, optimizer, lr, engine)


class Step:
    """A compiled training step; call it with ``(xs, targets, state0=None)``.

    After a call: ``state`` (each state's final value, the same arrays every
    call), ``residual`` (Σ |p − y| over the head's outputs: iamtrask's printed
    error), ``grads`` (the gradients used, clipped), ``engine``."""

    def __init__(self, cell, params, head, loss, clip, optimizer, lr, engine):
        if loss not in LOSSES:
            raise GraphError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
        self.cell, self.params, self.loss_name = cell, params, loss
        self.head = (head if head is not None else Columns(0, cell.output_size)).bind(cell.output_size)
        if loss == "softmax_ce" and self.head.out_size < 2:
            raise GraphError("softmax_ce needs at least 2 outputs")
        self.cell_names = list(cell.param_shapes())
        self.dtype = cell.check_params({k: params[k] for k in self.cell_names})
        if self.dtype is None:  # a cell without parameters: the head's, else the inputs' (first call)
            self.dtype = next((np.asarray(params[k]).dtype for k in self.head.param_shapes() if k in params), None)
        for name, shape in self.head.param_shapes().items():
            a = params.get(name)
            if a is None or tuple(a.shape) != shape or a.dtype != self.dtype:
                got = "missing" if a is None else f"{fmt_shape(tuple(a.shape))} {a.dtype}"
                raise GraphError(f"head parameter {name!r} must be {fmt_shape(shape)} {self.dtype}, got {got}")
        if clip is not None and not clip > 0:
            raise GraphError(f"clip must be positive, got {clip}")
        self.clip = None if clip is None else float(clip)
        self.opt = optim.make(optimizer, params, lr) if isinstance(optimizer, str) else optimizer
        self.plan = compile_cell(cell)
        self.engine_asked = engine
        self.engine = None
        self.state, self.residual, self.grads = {}, float("nan"), {}
        self._shape = None
        self._one_thread, self._blas_seen = None, False

    # ------------------------------------------------------------------ call
    def __call__(self, xs, targets, state0=None):
        if self.engine is None:
            self._choose(xs)
        one = self._one_thread if xs.shape[0] <= STEP_BLAS_MAX_ROWS else None
        if one is None:
            return self._step(xs, targets, state0)
        with one:  # a few rows' products: one BLAS thread (backend.OneBlasThread says why)
            loss = self._step(xs, targets, state0)
        if not self._blas_seen:  # the first call loaded the kernel, and with it SciPy's BLAS (np.dot's)
            self._blas_seen = True
            self._one_thread = backend.OneBlasThread()
        return loss

    def _step(self, xs, targets, state0):
        if self.engine == "native":
            return self._native_step(xs, targets, state0)
        return self._reference_step(xs, targets, state0)

    def _choose(self, xs):
        from .emit import numba_runtime
        if self.dtype is None:
            self.dtype = np.asarray(xs).dtype
        name = emit.engine_setting(self.engine_asked)
        self._cell_engine = name
        n = xs.shape[0]
        native_ok = (name != "numpy" and backend.xp() is np and numba_runtime.numba_available()
                     and self.dtype in (np.dtype(np.float32), np.dtype(np.float64)))
        if native_ok:
            from .emit import step_numba
            plan, blas = self.plan, step_numba.blas_products(self.plan)
            loops = sum(plan.width[plan.info[m][1][0]] * plan.width[m]
                        for m in plan.ops if plan.info[m][0].native_form() == "matmul" and m not in blas)
            loops += self.head.in_size * self.head.out_size if self.head.kind == "linear" else 0
            native_ok = n * loops <= STEP_NATIVE_MAX_MACS and (not blas or n <= STEP_BLAS_MAX_ROWS)
        if native_ok:
            try:
                mod, cached = step_numba.module(self.plan, self.head, self.loss_name, self.clip,
                                                self.opt.name, self.dtype)
            except step_numba.NotNative as exc:
                numba_runtime._warn_once(("step-not-native", id(self.plan)),
                                         f"graphrnn: the training step of cell {self.cell.name!r} runs "
                                         f"on unroll + numpy: {exc}")
                native_ok = False
            else:
                if name == "auto" and not cached:
                    native_ok = False
                else:
                    self._fn, self._cached = mod.train_step, cached
        self.engine = "native" if native_ok else "numpy"
        # BLAS runs in the reference step, and in the native one where a product
        # is large enough to go to it (the library is loaded by now either way)
        calls_blas = True
        if self.engine == "native":
            from .emit import step_numba
            calls_blas = bool(step_numba.blas_products(self.plan))
        self._one_thread = backend.OneBlasThread() if calls_blas and backend.xp() is np else None

    # ------------------------------------------------------------------ native
    def _buffers(self, n, t):
        from .emit.step_numba import Layout
        L = self._layout = getattr(self, "_layout", None) or Layout(self.plan, self.head)
        dt, plan = self.dtype, self.plan
        tmax = max(t, 8 if self._shape is None else self._shape[1] * 2)
        O = self.head.out_size
        self._vals = np.zeros((tmax + 1, n, L.width), dt)
        stat = np.zeros(L.stat_size, dt)
        for node, value in plan.consts.items():
            size = int(np.prod(L.shape2[node]))
            stat[L.stat_off[node]:L.stat_off[node] + size] = np.broadcast_to(np.asarray(value, dt), L.shape2[node]).ravel()
        self._grad = np.zeros(L.grad_size, dt)
        self.grads = {}
        for name, node in plan.params.items():
            shape = plan.shape[node]
            off = L.grad_off.get(node)
            self.grads[name] = (np.zeros(shape, dt) if off is None
                                else self._grad[off:off + int(np.prod(shape))].reshape(shape))
        for name, shape in self.head.param_shapes().items():
            off = L.head_grad_off[name]
            self.grads[name] = self._grad[off:off + int(np.prod(shape))].reshape(shape)
        self._out = np.zeros((tmax, n, O), dt)
        self._zero = {name: np.zeros((n, plan.width[s]), dt) for name, s, _ in plan.states}
        if self._shape is None or self._shape[0] != n:
            self.state = {name: np.zeros((n, plan.width[s]), dt) for name, s, _ in plan.states}
        opt = self.opt
        names = list(plan.params) + self.head.param_names()  # the kernel's order
        args = [0, None, None] + [self.params[k] for k in names]
        if opt.name == "adam":
            args += [opt.m[k] for k in names] + [opt.v[k] for k in names]
        self._s0_at = len(args)
        args += [self._zero[name] for name, _, _ in plan.states]
        args += [self.state[name] for name, _, _ in plan.states]
        args += [self._vals, stat, self._grad, np.zeros(L.width + L.scratch, dt), np.zeros((n, L.width), dt),
                 self._out, np.zeros((tmax, n, O), dt)]
        for m in L.blas_dw:  # step_numba's HA, HD, G of each product through BLAS
            rows, cols = plan.width[plan.info[m][1][0]], plan.width[m]
            args += [np.zeros((n, tmax, rows), dt), np.zeros((n, tmax, cols), dt), np.zeros((rows, cols), dt)]
        self._lr_at = len(args)
        args += [dt.type(0)] * 2 + [dt.type(self.clip or 1.0)]
        if opt.name == "adam":
            args += [dt.type(opt.beta1), dt.type(opt.beta2), dt.type(opt.eps)]
        else:
            args += [dt.type(0)] * 3
        self._args = args
        self._shape = (n, tmax)

    def _native_step(self, xs, targets, state0):
        n, t = self._check(xs, targets)
        if self._shape is None or n != self._shape[0] or t > self._shape[1]:
            self._buffers(n, t)
        args = self._args
        args[0], args[1], args[2] = t, xs, targets
        if state0:
            i = self._s0_at
            for name, _, _ in self.plan.states:
                s = state0.get(name)
                args[i] = self._zero[name] if s is None else self._state_array(name, s, n)
                i += 1
        else:
            i = self._s0_at
            for name, _, _ in self.plan.states:
                args[i] = self._zero[name]
                i += 1
        opt, dt = self.opt, self.dtype.type
        if opt.name == "adam":
            opt.t += 1
            args[self._lr_at + 1] = dt(opt.lr * math.sqrt(1 - opt.beta2 ** opt.t) / (1 - opt.beta1 ** opt.t))
        else:
            args[self._lr_at] = dt(opt.lr)
        fn = self._fn
        if self._cached is not True:
            from .emit import step_numba
            loss, res = step_numba.first_call(fn, args, self.cell.name, self._cached)
            self._cached = True
        else:
            loss, res = fn(*args)
        if res < 0:  # the kernel found a class outside the head, and changed nothing
            raise self._bad_class()
        self.residual = float(res)
        return float(loss)

    def _state_array(self, name, s, n):
        w = self.plan.width[self.plan.cell.states[name]]
        if getattr(s, "shape", None) != (n, w) or s.dtype != self.dtype or not s.flags.c_contiguous:
            s = np.asarray(s)
            if s.shape != (n, w) or s.dtype != self.dtype:
                raise GraphError(f"cell {self.cell.name!r}: state0[{name!r}] has shape "
                                 f"{fmt_shape(s.shape)} {s.dtype}, expected {fmt_shape((n, w))} {self.dtype}")
            s = np.ascontiguousarray(s)
        return s

    def _check(self, xs, targets):
        """(N, T); one line naming what is wrong otherwise."""
        shape = getattr(xs, "shape", None)
        if shape is None or len(shape) != 3 or shape[2] != self.cell.input_size or xs.dtype != self.dtype \
                or type(xs) is not np.ndarray and backend.xp() is np:
            raise GraphError(f"step of cell {self.cell.name!r}: xs must be (N, T, {self.cell.input_size}) "
                             f"{self.dtype}, got {fmt_shape(tuple(np.shape(xs)))} {getattr(xs, 'dtype', '')}")
        n, t = shape[0], shape[1]
        if self.loss_name == "softmax_ce":
            ok = getattr(targets, "shape", None) == (n, t) and targets.dtype == np.int64
        else:
            ok = getattr(targets, "shape", None) == (n, t, self.head.out_size) and targets.dtype == self.dtype
        if not ok:  # the message is only written when needed: a call builds no strings
            want = (f"({n}, {t}) int64 class indices" if self.loss_name == "softmax_ce"
                    else f"({n}, {t}, {self.head.out_size}) {self.dtype}")
            raise GraphError(f"step of cell {self.cell.name!r}: targets must be {want}, got "
                             f"{fmt_shape(tuple(np.shape(targets)))} {getattr(targets, 'dtype', '')}")
        return n, t

    def _bad_class(self):
        return GraphError(f"step of cell {self.cell.name!r}: a target class is outside "
                          f"0..{self.head.out_size - 1}")

    # ------------------------------------------------------------------ reference
    def _reference_step(self, xs, targets, state0):
        from .unroll import unroll
        xp, params, head = backend.xp(), self.params, self.head
        self._check(xs, targets)
        if self.loss_name == "softmax_ce" and targets.size and (
                int(targets.min()) < 0 or int(targets.max()) >= head.out_size):
            raise self._bad_class()
        run = unroll(self.cell, {k: params[k] for k in self.cell_names}, xs, state0,
                     engine=self._cell_engine)
        hs = run.hs
        if head.kind == "linear":
            z = hs @ params[head.w]
            if head.bias:
                z += params[head.b]
        else:
            z = hs[..., head.lo:head.hi]
        loss, p, dz = _loss(xp, self.loss_name, z, targets)
        grads = {}
        if head.kind == "linear":
            h2, d2 = hs.reshape(-1, head.in_size), dz.reshape(-1, head.out_size)
            grads[head.w] = h2.T @ d2
            if head.bias:
                grads[head.b] = d2.sum(axis=0)
            dhs = dz @ params[head.w].T
        else:
            dhs = xp.zeros(hs.shape, dtype=hs.dtype)
            dhs[..., head.lo:head.hi] = dz
        g = run.backward(dhs, need_xs=False)
        grads = {**g.params, **grads}
        if self.clip is not None:
            optim.clip_elementwise(grads, self.clip)
        self.opt.step(grads)
        self.grads, self.state = grads, run.state
        if self.loss_name == "softmax_ce":
            self.residual = float(xp.abs(dz).sum())
        else:
            self.residual = float(xp.abs(p - targets).sum())
        self._outputs = p
        return loss

    def outputs(self):
        """The head's outputs of the last call, (N, T, out): probabilities for
        the sigmoid and softmax losses, z for squared_error."""
        if self.engine == "native":
            return self._out[:self._t_last()].transpose(1, 0, 2)
        return self._outputs

    def _t_last(self):
        return self._args[0]


def _loss(xp, name, z, targets):
    """(loss summed, the head's output p, dL/dz): the formulas the native step runs."""
    if name == "softmax_ce":
        z2 = z.reshape(-1, z.shape[-1])
        rows, t = xp.arange(z2.shape[0]), targets.reshape(-1)
        e = z2 - z2.max(axis=1, keepdims=True)
        zt = e[rows, t]
        xp.exp(e, out=e)
        s = e.sum(axis=1)
        p = e / s[:, None]
        d = p.copy()
        d[rows, t] -= 1
        return float((xp.log(s) - zt).sum()), p.reshape(z.shape), d.reshape(z.shape)
    if name == "squared_error":
        e = z - targets
        return float((e * e).sum()), z, 2 * e
    p = 1 / (1 + xp.exp(-z))
    e = p - targets
    if name == "sigmoid_ce":
        loss = xp.maximum(z, 0) - z * targets + xp.log1p(xp.exp(-xp.abs(z)))
        return float(loss.sum()), p, e
    return 0.5 * float((e * e).sum()), p, e * p * (1 - p)
