"""The numba emitter of a whole training step (``graphrnn.step``): one
``@njit`` function per plan, head, loss, clipping and optimiser.

One call runs the forward over T steps, the output layer and the loss at
every step, BPTT, the weight gradients, clipping and the parameter update.
Every batch row runs the whole step as plain loops (as the ``fused`` cell
loops do): at the sizes where a step is all per-call overhead, its cost is
then what its arithmetic costs.

It reads the plan's decisions: the rewritten graph (packed matmuls, fused
elementwise ops), which nodes are static (computed once per call from the
parameters, their gradients propagated back to the parameters after the
loop) and which nodes need a gradient. Hoisted nodes run per step here: the
same arithmetic, and no buffer over all T·N rows to go through twice.

Buffers, made once by the caller (``graphrnn.step``) and reused by every call:

- ``VALS`` (T+1, N, width of all per-step nodes): node n's value at step t in
  columns ``off[n]...``; a state's row t is its value entering step t.
- ``STAT`` (flat): static values other than parameters (slices, joins, constants).
- ``GRAD`` (flat): the gradient of every static node that needs one, the
  parameters' among them.
- ``D`` (width of all per-step nodes): the gradients of one row at one step;
  ``C`` (N, same width): each state's gradient carried to the step before.
- ``OUT`` / ``DZ`` (T, N, O): the head's output (probabilities for the
  sigmoid and softmax losses) and the loss gradient at its input.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import time

import numpy as np

from ..plan import STATIC
from . import scalar
from .native_layout import NotNative
from .numba_loops import FUNCTIONS  # one table of the math functions native code may call

LOSSES = ("softmax_ce", "sigmoid_ce", "squared_error", "sigmoid_squared_error")
# A product with at least this many multiply-adds per row runs its forward and
# its input gradient as BLAS gemv calls (np.dot on contiguous views, from inside
# the compiled step) and its weight gradient as one GEMM per row after the loop;
# smaller ones run as plain loops. Measured on primes (150 x 400 per step):
# the plain loops' reduction for the input gradient does not vectorise, and the
# whole step on loops lost to unroll + BLAS (2.4 against 1.8 ms); dinosaurs'
# largest product (50 x 50) and binary addition's stay on loops.
BLAS_MIN_MACS = 10_000


def blas_products(plan):
    """The per-step products the step runs through BLAS: matmuls whose row
    operand is a per-step value (the input's rows are read in place, with its
    zero entries skipped) and whose size reaches ``BLAS_MIN_MACS``. None where
    SciPy is missing: numba's np.dot calls BLAS through SciPy's bindings (a
    dependency of graphrnn; a step without it keeps such products on the
    reference path's BLAS)."""
    if not _scipy_blas():
        return set()
    return {n for n in plan.ops
            if plan.info[n][0].native_form() == "matmul" and plan.kind[n] != STATIC
            and plan.info[n][1][0] != plan.input_node
            and plan.width[plan.info[n][1][0]] * plan.width[n] >= BLAS_MIN_MACS}


@functools.lru_cache(maxsize=1)
def _scipy_blas():
    return importlib.util.find_spec("scipy") is not None


class Layout:
    """Where every value of the step lives (see the module docstring)."""

    def __init__(self, plan, head):
        self.plan = plan
        g = plan.graph
        req = plan.requires[False]
        self.dynamic = [n for n in g.nodes
                        if plan.node_kind[n] in ("state",) or (plan.node_kind[n] == "op" and plan.kind[n] != STATIC)]
        self.off, w = {}, 0
        for n in sorted(self.dynamic, key=str):
            self.off[n] = w
            w += plan.width[n]
        self.width = max(w, 1)
        self.param_index = {node: i for i, node in enumerate(plan.params.values())}
        self.param_names = list(plan.params)
        self.head_params = list(head.param_names())
        # static values: 2-D (rows, cols) each; () is (1, 1), (w,) is (1, w)
        self.stat_off, self.stat_size, s = {}, 0, 0
        self.shape2 = {}
        for n in g.nodes:
            if plan.kind.get(n) == STATIC:
                shp = tuple(plan.shape[n])
                self.shape2[n] = (1, 1) if len(shp) == 0 else (1, shp[0]) if len(shp) == 1 else shp
                if len(shp) > 2:
                    raise NotNative(f"static node {g.nodes[n]['label']!r} of shape {shp}")
        for n in list(plan.consts) + plan.static_ops:
            self.stat_off[n] = s
            s += int(np.prod(self.shape2[n]))
        self.stat_size = max(s, 1)
        self.grad_off, s = {}, 0
        for n in list(plan.params.values()) + plan.static_ops:
            if req.get(n):
                self.grad_off[n] = s
                s += int(np.prod(self.shape2[n]))
        # the head's parameters follow the cell's
        self.head_grad_off = {}
        for name, shp in head.param_shapes().items():
            self.head_grad_off[name] = s
            s += int(np.prod(shp))
        self.grad_size = max(s, 1)
        # D's tail past ``width``: the input gradient of a BLAS product, before it is added in
        self.blas = blas_products(plan)
        self.scratch = max([plan.width[plan.info[n][1][0]] for n in self.blas], default=0)
        # their weight gradients as one GEMM per row after the loop, over the
        # row operand's values (HA) and the product's gradients (HD) at every step
        self.blas_dw = sorted(n for n in self.blas if req.get(plan.info[n][1][1]))


class _Text:
    def __init__(self):
        self.lines, self.consts = [], set()

    def add(self, ind, text):
        self.lines.append("    " * ind + text)

    def k(self, v):
        self.consts.add(float(v))
        return scalar.const_name(v)

    def expr(self, text, env):
        self.consts |= {float(v) for v in scalar.numbers(text)}
        return scalar.python_expr(text, env, FUNCTIONS)


class StepText:
    """The generated module's source for one plan, head, loss, clip and optimiser."""

    def __init__(self, plan, head, loss, clip, optimizer, dtype):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}")
        self.plan, self.head, self.loss = plan, head, loss
        self.clip, self.optimizer, self.dtype = clip is not None, optimizer, np.dtype(dtype)
        self.L = Layout(plan, head)
        self.t = _Text()
        self._check()
        self._write()

    # ------------------------------------------------------------ access
    def _check(self):
        plan = self.plan
        for n in plan.ops:
            form = plan.info[n][0].native_form()
            if form is None:
                raise NotNative(f"primitive {plan.info[n][0].name!r} has no native form")
            if form not in ("matmul", "window", "join", "elementwise"):
                raise NotNative(f"primitive {plan.info[n][0].name!r} ({form}) is not in the step's loops")
            if plan.kind[n] == STATIC and form not in ("window", "join", "elementwise"):
                raise NotNative(f"static node {plan.graph.nodes[n]['label']!r} ({form})")
            if form == "elementwise" and plan.kind[n] != STATIC:
                for p in plan.info[n][1]:
                    if plan.kind.get(p) != STATIC and len(plan.shape[p]) != 2:
                        raise NotNative(f"operand of shape {plan.shape[p]}")
                    if plan.kind.get(p) == STATIC and self.L.shape2[p][0] != 1:
                        raise NotNative("an elementwise op on a matrix")
        for _, s, u in plan.states:
            if plan.kind.get(u) == STATIC:
                raise NotNative("a state updated to a static value")
        if plan.kind.get(plan.output_node) == STATIC:
            raise NotNative("a static output")

    def val(self, p, j):
        """Element j of a per-step value at (t, r); of a static value, row 0."""
        plan, L = self.plan, self.L
        if p == plan.input_node:
            return f"X[r, t, {j}]"
        if p in L.off:
            return f"VALS[t, r, {L.off[p]} + {j}]"
        return self.sacc(p, "0", j)

    def sacc(self, p, i, j):
        L = self.L
        if p in L.param_index:
            k = L.param_index[p]
            return f"P{k}[{j}]" if len(self.plan.shape[p]) == 1 else f"P{k}[{i}, {j}]"
        cols = L.shape2[p][1]
        return f"STAT[{L.stat_off[p]} + ({i}) * {cols} + ({j})]"

    def gacc(self, p, i, j):
        cols = self.L.shape2[p][1]
        return f"GRAD[{self.L.grad_off[p]} + ({i}) * {cols} + ({j})]"

    def matrix(self, p):
        """A 2-D static value as a (rows, cols) array: a parameter, or a view of STAT."""
        L = self.L
        if p in L.param_index:
            return f"P{L.param_index[p]}"
        rows, cols = L.shape2[p]
        return f"STAT[{L.stat_off[p]}:{L.stat_off[p] + rows * cols}].reshape(({rows}, {cols}))"

    def row(self, p):
        """Row r of per-step value p at step t, as a contiguous view of VALS."""
        off = self.L.off[p]
        return f"VALS[t, r, {off}:{off + self.plan.width[p]}]"

    def needs(self, p):
        plan = self.plan
        return bool(plan.requires[False].get(p)) and p != plan.input_node

    # ------------------------------------------------------------ the function
    def _write(self):
        plan, L, t = self.plan, self.L, self.t
        nparams = len(L.param_names)
        nh = len(L.head_params)
        adam = self.optimizer == "adam"
        args = ["T", "X", "Y"] + [f"P{k}" for k in range(nparams)] + [f"Q{k}" for k in range(nh)]
        if adam:
            args += [f"M{k}" for k in range(nparams + nh)] + [f"V{k}" for k in range(nparams + nh)]
        args += [f"S0_{i}" for i in range(len(plan.states))] + [f"SF_{i}" for i in range(len(plan.states))]
        args += ["VALS", "STAT", "GRAD", "D", "C", "OUT", "DZ"]
        args += [f"{b}{i}" for i in range(len(L.blas_dw)) for b in ("HA", "HD", "G")]
        args += ["lr", "lr_t", "clip", "b1", "b2", "eps"]
        self.args = args
        t.add(0, f"def train_step({', '.join(args)}):")
        t.add(1, "N = X.shape[0]")
        if self.loss == "softmax_ce":  # a class outside the head: refused before anything changes
            t.add(1, "for r in range(N):")
            t.add(2, "for t in range(T):")
            t.add(3, f"if Y[r, t] < 0 or Y[r, t] >= {self.head.out_size}:")
            t.add(4, f"return {t.k(0)}, -{t.k(1)}")
        # static values, once per call
        for n in plan.static_ops:
            self._static_forward(n)
        for n in sorted(L.blas):  # the weights of the BLAS products as 2-D views
            t.add(1, f"W{n} = {self.matrix(plan.info[n][1][1])}")
        t.add(1, "for i in range(GRAD.shape[0]):")
        t.add(2, f"GRAD[i] = {t.k(0)}")
        for i, (_, s, _) in enumerate(plan.states):
            t.add(1, "for r in range(N):")
            t.add(2, f"for j in range({plan.width[s]}):")
            t.add(3, f"VALS[0, r, {L.off[s]} + j] = S0_{i}[r, j]")
        t.add(1, f"loss = {t.k(0)}")
        t.add(1, f"res = {t.k(0)}")
        t.add(1, "for t in range(T):")
        t.add(2, "for r in range(N):")
        for n in plan.ops:
            if plan.kind[n] != STATIC:
                self._forward(n, 3)
        for _, s, u in plan.states:
            t.add(3, f"for j in range({plan.width[s]}):")
            t.add(4, f"VALS[t + 1, r, {L.off[s]} + j] = {self.val(u, 'j')}")
        self._head_forward(3)
        # backward
        t.add(1, "for r in range(N):")
        t.add(2, f"for j in range({L.width}):")
        t.add(3, f"C[r, j] = {t.k(0)}")
        t.add(1, "for t in range(T - 1, -1, -1):")
        t.add(2, "for r in range(N):")
        t.add(3, f"for j in range({L.width}):")
        t.add(4, f"D[j] = {t.k(0)}")
        for _, s, u in plan.states:
            if self.needs(u) and u in L.off:
                t.add(3, f"for j in range({plan.width[s]}):")
                t.add(4, f"D[{L.off[u]} + j] += C[r, {L.off[s]} + j]")
        self._head_backward(3)
        for n in reversed(plan.ops):
            if plan.kind[n] != STATIC and self.needs(n):
                self._backward(n, 3)
        for _, s, _ in plan.states:
            t.add(3, f"for j in range({plan.width[s]}):")
            t.add(4, f"C[r, {L.off[s]} + j] = D[{L.off[s]} + j]")
        for i, n in enumerate(L.blas_dw):
            self._blas_weight_gradient(i, n)
        for n in reversed(plan.static_ops):
            if self.needs(n) and n in L.grad_off:
                self._static_backward(n)
        # the final state, then clip and update every parameter
        for i, (_, s, _) in enumerate(plan.states):
            t.add(1, "for r in range(N):")
            t.add(2, f"for j in range({plan.width[s]}):")
            t.add(3, f"SF_{i}[r, j] = VALS[T, r, {L.off[s]} + j]")
        k = 0
        for name, node in plan.params.items():
            if node in L.grad_off:
                self._update(f"P{L.param_index[node]}", plan.shape[node], L.grad_off[node], k)
            k += 1
        for q, name in enumerate(L.head_params):
            self._update(f"Q{q}", self.head.param_shapes()[name], L.head_grad_off[name], nparams + q)
        t.add(1, "return loss, res")

    def _static_forward(self, n):
        plan, t = self.plan, self.t
        op, args = plan.info[n]
        rows, cols = self.L.shape2[n]
        t.add(1, f"for i in range({rows}):")
        if op.native_form() == "elementwise":
            names = op.operands
            env = {nm: self.sacc(p, *self._bcast(p, n)) for nm, p in zip(names, args)}
            t.add(2, f"for j in range({cols}):")
            t.add(3, f"{self.sacc(n, 'i', 'j')} = {t.expr(op.native_forward, env)}")
        for p, at_n, at_p, w in self._moves(n):
            t.add(2, f"for j in range({w}):")
            t.add(3, f"{self.sacc(n, 'i', f'{at_n} + j')} = {self.sacc(p, 'i', f'{at_p} + j')}")

    def _static_backward(self, n):
        plan, t = self.plan, self.t
        op, args = plan.info[n]
        rows, cols = self.L.shape2[n]
        t.add(1, f"for i in range({rows}):")
        for p, at_n, at_p, w in self._moves(n):
            if self.needs(p):
                t.add(2, f"for j in range({w}):")
                t.add(3, f"{self.gacc(p, 'i', f'{at_p} + j')} += {self.gacc(n, 'i', f'{at_n} + j')}")
        if op.native_form() == "elementwise":
            names = op.operands
            for k, p in enumerate(args):
                if not self.needs(p):
                    continue
                text = op.native_backward[k]
                env = {"dy": self.gacc(n, "i", "j"), "y": self.sacc(n, "i", "j")}
                env.update({nm: self.sacc(q, *self._bcast(q, n)) for nm, q in zip(names, args)})
                e = t.expr(text, {a: v for a, v in env.items() if a in scalar.names_read(text)})
                t.add(2, f"for j in range({cols}):")  # a broadcast operand sums over its copies
                t.add(3, f"{self.gacc(p, *self._bcast(p, n))} += {e}")
        t.add(2, "pass")

    def _moves(self, n):
        """What a window or a join moves: (operand, first column in n, first
        column in the operand, width) per operand; forward and backward, per
        step and static, print these one way each."""
        op, args = self.plan.info[n]
        form = op.native_form()
        if form == "window":
            return [(args[0], 0, op.window[0], self.plan.width[n] if n in self.L.off else self.L.shape2[n][1])]
        if form != "join":
            return []
        moves, lo = [], 0
        for p in args:
            w = self.plan.width[p] if n in self.L.off else self.L.shape2[p][1]
            moves.append((p, lo, 0, w))
            lo += w
        return moves

    def _bcast(self, p, n):
        """(row, column) of static operand p read for element (i, j) of n (numpy broadcasting)."""
        (rp, cp), (rn, cn) = self.L.shape2[p], self.L.shape2[n]
        return ("i" if rp == rn else "0"), ("j" if cp == cn else "0")

    def _forward(self, n, ind):
        plan, t, L = self.plan, self.t, self.L
        op, args = plan.info[n]
        form = op.native_form()
        w = plan.width[n]
        out = f"VALS[t, r, {L.off[n]} + j]"
        for p, at_n, at_p, wp in self._moves(n):
            t.add(ind, f"for j in range({wp}):")
            t.add(ind + 1, f"VALS[t, r, {L.off[n] + at_n} + j] = {self.val(p, f'{at_p} + j')}")
        if form == "matmul" and n in L.blas:
            t.add(ind, f"np.dot({self.row(args[0])}, W{n}, {self.row(n)})")
        elif form == "matmul":
            a, wn = args
            t.add(ind, f"for j in range({w}):")
            t.add(ind + 1, f"{out} = {t.k(0)}")
            t.add(ind, f"for i in range({plan.width[a]}):")
            t.add(ind + 1, f"s = {self.val(a, 'i')}")
            ind2 = self._skip_zero(a, ind + 1)
            t.add(ind2, f"for j in range({w}):")
            t.add(ind2 + 1, f"{out} += s * {self.sacc(wn, 'i', 'j')}")
        elif form == "elementwise":
            names = op.operands
            env = {nm: self.val(p, "0" if plan.width.get(p, 1) == 1 and w > 1 else "j")
                   for nm, p in zip(names, args)}
            t.add(ind, f"for j in range({w}):")
            t.add(ind + 1, f"{out} = {t.expr(op.native_forward, env)}")

    def _backward(self, n, ind):
        """Row r's gradients at step t from n's (complete: reverse topological order)."""
        plan, t, L = self.plan, self.t, self.L
        op, args = plan.info[n]
        form = op.native_form()
        w = plan.width[n]
        dn = f"D[{L.off[n]} + j]"
        for p, at_n, at_p, wp in self._moves(n):
            if self.needs(p):
                t.add(ind, f"for j in range({wp}):")
                t.add(ind + 1, self._into(p, f"{at_p} + j", f"D[{L.off[n] + at_n} + j]"))
        if form == "matmul":
            a, wn = args
            if self.needs(a) and n in L.blas:  # da = W · dn, then added in
                scr = L.width
                t.add(ind, f"np.dot(W{n}, D[{L.off[n]}:{L.off[n] + w}], D[{scr}:{scr + plan.width[a]}])")
                t.add(ind, f"for i in range({plan.width[a]}):")
                t.add(ind + 1, self._into(a, "i", f"D[{scr} + i]"))
            elif self.needs(a):
                t.add(ind, f"for i in range({plan.width[a]}):")
                t.add(ind + 1, f"s = {t.k(0)}")
                t.add(ind + 1, f"for j in range({w}):")
                t.add(ind + 2, f"s += D[{L.off[n]} + j] * {self.sacc(wn, 'i', 'j')}")
                t.add(ind + 1, self._into(a, "i", "s"))
            if n in L.blas_dw:  # kept for one GEMM after the loop
                t.add(ind, f"for j in range({w}):")
                t.add(ind + 1, f"HD{L.blas_dw.index(n)}[r, t, j] = D[{L.off[n]} + j]")
            elif self.needs(wn):
                t.add(ind, f"for i in range({plan.width[a]}):")
                t.add(ind + 1, f"s = {self.val(a, 'i')}")
                ind2 = self._skip_zero(a, ind + 1)
                t.add(ind2, f"for j in range({w}):")
                t.add(ind2 + 1, f"{self.gacc(wn, 'i', 'j')} += s * D[{L.off[n]} + j]")
        elif form == "elementwise":
            names = op.operands
            for i, p in enumerate(args):
                if not self.needs(p):
                    continue
                text = op.native_backward[i]
                env = {"dy": dn, "y": f"VALS[t, r, {L.off[n]} + j]"}
                for nm, q in zip(names, args):
                    env[nm] = self.val(q, "0" if plan.width.get(q, 1) == 1 and w > 1 else "j")
                e = t.expr(text, {k: v for k, v in env.items() if k in scalar.names_read(text)})
                if plan.width.get(p, 1) == 1 and w > 1:  # broadcast along the row: summed
                    t.add(ind, f"s = {t.k(0)}")
                    t.add(ind, f"for j in range({w}):")
                    t.add(ind + 1, f"s += {e}")
                    t.add(ind, self._into(p, "0", "s"))
                else:
                    t.add(ind, f"for j in range({w}):")
                    t.add(ind + 1, self._into(p, "j", e))

    def _blas_weight_gradient(self, i, n):
        """dW += Σ_t a_tᵀ dn_t, row by row, as one GEMM over the steps."""
        plan, t = self.plan, self.t
        a, wn = plan.info[n][1]
        t.add(1, "for r in range(N):")
        t.add(2, "for t in range(T):")
        t.add(3, f"for j in range({plan.width[a]}):")
        t.add(4, f"HA{i}[r, t, j] = {self.val(a, 'j')}")
        t.add(2, f"np.dot(HA{i}[r, :T].T, HD{i}[r, :T], G{i})")
        t.add(2, f"for i in range({plan.width[a]}):")
        t.add(3, f"for j in range({plan.width[n]}):")
        t.add(4, f"{self.gacc(wn, 'i', 'j')} += G{i}[i, j]")

    def _skip_zero(self, a, ind):
        """The input's zero entries (one-hot characters, bits) add nothing to a
        product: skipped. Exact, but for an inf or nan in the weights."""
        if a != self.plan.input_node:
            return ind
        self.t.add(ind, f"if s != {self.t.k(0)}:")
        return ind + 1

    def _into(self, p, j, e):
        if p in self.L.off:
            return f"D[{self.L.off[p]} + {j}] += {e}"
        return f"{self.gacc(p, '0', j)} += {e}"

    # ------------------------------------------------------------ head, loss
    def _head_forward(self, ind):
        t, head, o = self.t, self.head, self.plan.output_node
        O = head.out_size
        if head.kind == "linear":
            t.add(ind, f"for k in range({O}):")
            t.add(ind + 1, f"OUT[t, r, k] = {'Q1[k]' if head.bias else t.k(0)}")
            t.add(ind, f"for i in range({head.in_size}):")
            t.add(ind + 1, f"s = {self.val(o, 'i')}")
            t.add(ind + 1, f"for k in range({O}):")
            t.add(ind + 2, "OUT[t, r, k] += s * Q0[i, k]")
        else:
            t.add(ind, f"for k in range({O}):")
            t.add(ind + 1, f"OUT[t, r, k] = {self.val(o, f'{head.lo} + k')}")
        one, half = t.k(1), t.k(0.5)
        if self.loss == "softmax_ce":
            t.add(ind, "m = OUT[t, r, 0]")
            t.add(ind, f"for k in range(1, {O}):")
            t.add(ind + 1, "m = max(m, OUT[t, r, k])")
            t.add(ind, f"s = {t.k(0)}")
            t.add(ind, f"zt = {t.k(0)}")
            t.add(ind, f"for k in range({O}):")
            t.add(ind + 1, "e = OUT[t, r, k] - m")
            t.add(ind + 1, "if k == Y[r, t]:")
            t.add(ind + 2, "zt = e")
            t.add(ind + 1, "e = math.exp(e)")
            t.add(ind + 1, "OUT[t, r, k] = e")
            t.add(ind + 1, "s += e")
            t.add(ind, "loss += math.log(s) - zt")
            t.add(ind, f"for k in range({O}):")
            t.add(ind + 1, "p = OUT[t, r, k] / s")
            t.add(ind + 1, "OUT[t, r, k] = p")
            t.add(ind + 1, f"d = p - {one} if k == Y[r, t] else p")
            t.add(ind + 1, "DZ[t, r, k] = d")
            t.add(ind + 1, "res += abs(d)")
            return
        t.add(ind, f"for k in range({O}):")
        t.add(ind + 1, "z = OUT[t, r, k]")
        t.add(ind + 1, "y = Y[r, t, k]")
        if self.loss == "squared_error":
            t.add(ind + 1, "e = z - y")
            t.add(ind + 1, "loss += e * e")
            t.add(ind + 1, f"DZ[t, r, k] = {t.k(2)} * e")
        else:
            t.add(ind + 1, f"p = {one} / ({one} + math.exp(-z))")
            t.add(ind + 1, "OUT[t, r, k] = p")
            t.add(ind + 1, "e = p - y")
            if self.loss == "sigmoid_ce":
                t.add(ind + 1, f"loss += max(z, {t.k(0)}) - z * y + math.log1p(math.exp(-abs(z)))")
                t.add(ind + 1, "DZ[t, r, k] = e")
            else:
                t.add(ind + 1, f"loss += {half} * (e * e)")
                t.add(ind + 1, f"DZ[t, r, k] = e * p * ({one} - p)")
        t.add(ind + 1, "res += abs(e)")

    def _head_backward(self, ind):
        t, head, o, L = self.t, self.head, self.plan.output_node, self.L
        O = head.out_size
        into = self.needs(o) and o in L.off
        if head.kind == "linear":
            gw, gb = L.head_grad_off[head.w], L.head_grad_off.get(head.b)
            t.add(ind, f"for i in range({head.in_size}):")
            t.add(ind + 1, f"h = {self.val(o, 'i')}")
            t.add(ind + 1, f"s = {t.k(0)}")
            t.add(ind + 1, f"for k in range({O}):")
            t.add(ind + 2, "d = DZ[t, r, k]")
            t.add(ind + 2, f"GRAD[{gw} + i * {O} + k] += h * d")
            t.add(ind + 2, "s += d * Q0[i, k]")
            if into:
                t.add(ind + 1, f"D[{L.off[o]} + i] += s")
            if gb is not None:
                t.add(ind, f"for k in range({O}):")
                t.add(ind + 1, f"GRAD[{gb} + k] += DZ[t, r, k]")
        elif into:
            t.add(ind, f"for k in range({O}):")
            t.add(ind + 1, f"D[{L.off[o]} + {head.lo} + k] += DZ[t, r, k]")

    def _update(self, p, shape, off, k):
        t = self.t
        size = int(np.prod(shape))
        flat = f"{p}.reshape({size})" if len(shape) != 1 else p
        t.add(1, f"pf = {flat}")
        if self.optimizer == "adam":
            t.add(1, f"mf = M{k}.reshape({size})")
            t.add(1, f"vf = V{k}.reshape({size})")
        t.add(1, f"for i in range({size}):")
        t.add(2, f"g = GRAD[{off} + i]")
        if self.clip:
            t.add(2, "g = min(max(g, -clip), clip)")
            t.add(2, f"GRAD[{off} + i] = g")
        if self.optimizer == "adam":
            one = t.k(1)
            t.add(2, f"m = mf[i] * b1 + ({one} - b1) * g")
            t.add(2, f"v = vf[i] * b2 + ({one} - b2) * (g * g)")
            t.add(2, "mf[i] = m")
            t.add(2, "vf[i] = v")
            t.add(2, "pf[i] -= lr_t * m / (math.sqrt(v) + eps)")
        else:
            t.add(2, "pf[i] -= lr * g")

    # ------------------------------------------------------------ text
    def source(self):
        dt = self.dtype.name
        out = ['"""Generated by graphrnn.emit.step_numba for cell '
               f'{self.plan.cell.name!r} ({dt}); do not edit."""',
               "import math", "", "import numpy as np", "from numba import njit", ""]
        out += [f"{scalar.const_name(v)} = np.{dt}({v!r})" for v in sorted(self.t.consts)]
        out += ["", "", "@njit(cache=True, nogil=True, error_model='numpy')"]
        out += self.t.lines
        return "\n".join(out) + "\n"


def module(plan, head, loss, clip, optimizer, dtype, say=True):
    """The compiled step function (from the disk cache where it is there)."""
    from .numba_runtime import cache_dir
    text = StepText(plan, head, loss, clip, optimizer, dtype).source()
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    folder = cache_dir()
    path = os.path.join(folder, f"step_{digest}.py")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)  # atomic; another process may have got there first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    name = f"graphrnn_step_{digest}"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # numba's cache names the module
        spec.loader.exec_module(mod)
    return mod, _cached(path)


def _cached(path):
    folder = os.path.join(os.path.dirname(path), "__pycache__")
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        return any(n.startswith(f"{stem}.train_step-") and n.endswith(".nbi") for n in os.listdir(folder))
    except OSError:
        return False


def first_call(fn, args, cell_name, cached):
    """The first call compiles (or loads from the cache); a compile says so once."""
    if not cached:
        t0 = time.perf_counter()
        print(f"graphrnn: compiling the training step of cell {cell_name!r} (once; cached for the "
              "next run)...", file=sys.stderr, flush=True)
    out = fn(*args)
    if not cached:
        print(f"graphrnn: compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out
