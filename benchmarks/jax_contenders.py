"""JAX contenders for ``graphrnn bench``: ``jax.jit(jax.value_and_grad(loss))``
over ``lax.scan``, for any cell, built-in or user-declared.

The cell is written in ``jax.numpy`` from its declared graph (not graphrnn's
fused plan: XLA fuses by itself), the way a careful JAX user writes it:
parameters and what depends only on them before the scan, the input's part
(``x @ Wx + b``) once for all steps before the scan, only the per-step part
inside it. The loss is ``sum(hs * dhs)``, so its gradient is graphrnn's
``backward(dhs)``; the gradient is taken with respect to the parameters and
the inputs, as graphrnn computes both.

Requires ``pip install 'graphrnn[jax]'`` (CPU jaxlib is enough).
"""
from __future__ import annotations

import numpy as np


def available():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _ops(jnp, jax):
    from jax import lax
    return {
        "matmul": lambda op, a, b: a @ b,
        "add": lambda op, a, b: a + b,
        "sub": lambda op, a, b: a - b,
        "mul": lambda op, a, b: a * b,
        "neg": lambda op, a: -a,
        "tanh": lambda op, a: jnp.tanh(a),
        "sigmoid": lambda op, a: jax.nn.sigmoid(a),
        "relu": lambda op, a: jnp.maximum(a, 0),
        "exp": lambda op, a: jnp.exp(a),
        "slice": lambda op, a: a[..., op.start:op.stop],
        "concat": lambda op, *xs: jnp.concatenate(xs, axis=-1),
        "div": lambda op, a, b: a / b,
        "pow": lambda op, a: a ** op.k,
        "sqrt": lambda op, a: jnp.sqrt(a),
        "log": lambda op, a: jnp.log(a),
        "abs": lambda op, a: jnp.abs(a),
        "sin": lambda op, a: jnp.sin(a),
        "cos": lambda op, a: jnp.cos(a),
        "maximum": lambda op, a, b: jnp.maximum(a, b),
        "minimum": lambda op, a, b: jnp.minimum(a, b),
        "gt": lambda op, a, b: lax.stop_gradient((a > b).astype(jnp.result_type(a, b))),
        "lt": lambda op, a, b: lax.stop_gradient((a < b).astype(jnp.result_type(a, b))),
        "ge": lambda op, a, b: lax.stop_gradient((a >= b).astype(jnp.result_type(a, b))),
        "le": lambda op, a, b: lax.stop_gradient((a <= b).astype(jnp.result_type(a, b))),
        "where": lambda op, m, a, b: jnp.where(m > 0, a, b),
        "floor": lambda op, a: jnp.floor(a),
        "mod": lambda op, a: jnp.mod(a, op.k),
        "sum": lambda op, a: jnp.sum(a, axis=-1, keepdims=True),
        "mean": lambda op, a: jnp.mean(a, axis=-1, keepdims=True),
        "transpose": lambda op, a: a.T,
    }


def loss_fn(cell):
    """``loss(params, xs, dhs)`` for ``cell`` in jax.numpy (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    import graphrnn as gr
    from graphrnn.plan import HOISTED, RECURRENT, STATIC

    plan = gr.compile_cell(cell, fuse=False)  # the graph as declared, with its kinds
    g, kind, ops = plan.graph, plan.kind, _ops(jnp, jax)
    order = [n for n in plan.ops]
    static = [n for n in order if kind[n] == STATIC]
    hoisted = [n for n in order if kind[n] == HOISTED]
    recurrent = [n for n in order if kind[n] == RECURRENT]
    states = plan.states
    out = plan.output_node

    def evaluate(nodes, v):
        for n in nodes:
            a = g.nodes[n]
            v[n] = ops[a["opname"]](a["op"], *[v[p] for p in a["args"]])

    def loss(params, xs, dhs):
        N, T, D = xs.shape
        v = {node: params[name] for name, node in plan.params.items()}
        for node, value in plan.consts.items():
            v[node] = jnp.asarray(value, dtype=xs.dtype)
        evaluate(static, v)
        h = dict(v)
        h[plan.input_node] = jnp.swapaxes(xs, 0, 1).reshape(T * N, D)
        evaluate(hoisted, h)
        per_step = {n: h[n].reshape(T, N, -1) for n in hoisted + [plan.input_node]
                    if any(kind[m] == RECURRENT for m in g.successors(n)) or n == out
                    or any(n == u for _, _, u in states)}

        def step(carry, xt):
            w = dict(v)
            w.update(xt)
            w.update({s: c for (_, s, _), c in zip(states, carry)})
            evaluate(recurrent, w)
            return tuple(w[u] for _, _, u in states), w[out]
        carry0 = tuple(jnp.zeros((N, plan.width[s]), xs.dtype) for _, s, _ in states)
        _, hs = lax.scan(step, carry0, per_step)
        return jnp.sum(jnp.swapaxes(hs, 0, 1) * dhs)
    return loss


class JaxCell:
    """One forward+backward per call: ``jit(value_and_grad)`` over params and xs."""

    def __init__(self, cell, params, xs, dhs):
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_platforms", "cpu")
        self.jax = jax
        self.fn = jax.jit(jax.value_and_grad(loss_fn(cell), argnums=(0, 1)))
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.xs, self.dhs = jnp.asarray(xs), jnp.asarray(dhs)

    def __call__(self):
        value, grads = self.fn(self.params, self.xs, self.dhs)
        return self.jax.block_until_ready(grads)

    def gradients(self):
        """(dparams, dxs) as numpy arrays."""
        gp, gx = self()
        return {k: np.asarray(v) for k, v in gp.items()}, np.asarray(gx)
