"""A word-level language model over any cell, in the textbook's style.

``RNNLM`` is chapter 6's ``Rnnlm`` and ``BetterRnnlm`` in one class: an
embedding, L recurrent layers over any ``gr.Cell`` (built-in or declared by the
user), optional dropout (after the embedding, between layers, before the
output), an affine output layer (optionally tied to the embedding) and softmax
cross-entropy averaged over tokens.

Only the recurrent layers know about time. Everything on the input and the
output side runs once over all N·T tokens of a batch: the embedding is one
gather forward and one scatter-add backward, the output layer one GEMM each way
(forward, dW, dx), the loss one fused pass. Inside, the model works time-major
((T, N, ·) rows, the layout the engine's unroll keeps its buffers in), so the
hand-over between the cells and the dense layers needs no copies.
"""
from __future__ import annotations

import numpy as np

from . import backend, cells
from .graph import Cell
from .layers import Dropout, Embedding, SoftmaxOutput, softmax
from .primitives import GraphError
from .unroll import Recurrent


def cell_factory(cell):
    """A factory ``f(input_size, hidden_size) -> Cell`` from a built-in name,
    ``"module:function"`` or a callable."""
    if callable(cell):
        def make(d, h):
            c = cell(d, h)
            if not isinstance(c, Cell):
                raise GraphError(f"cell factory {getattr(cell, '__name__', cell)!r} returned "
                                 f"{type(c).__name__}, not a gr.Cell (did you call c.build()?)")
            return c
        return make
    if not isinstance(cell, str):
        raise GraphError(f"cell must be a built-in name, 'module:function' or a factory, got {cell!r}")
    return lambda d, h: cells.from_spec(cell, d, h)


def init_lm_params(rng, shapes, dtype):
    """The book's initialisation: weights N(0, 1/fan_in) with fan_in the first
    axis (input and recurrent weights alike), biases zero."""
    out = {}
    for name, shape in shapes.items():
        if len(shape) == 2:
            a = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:
            a = np.zeros(shape)
        out[name] = a.astype(dtype)
    return out


class RNNLM:
    """Word-level language model: ``loss = model.forward(xs, ts)``, ``model.backward()``.

    ``xs`` and ``ts`` are (N, T) integer arrays of word ids (inputs and the
    next words). ``params`` and ``grads`` are dicts with the same keys:
    ``embed.W`` (V, D), ``cell{l}.<name>`` for each layer's cell parameters,
    ``out.W`` (H, V) unless the weights are tied, and ``out.b`` (V,). With
    ``tie_weights`` the output layer uses ``embed.W`` transposed (D must equal
    H) and ``grads["embed.W"]`` is the sum of both of its gradients.

    The state is carried from one ``forward`` to the next (truncated BPTT
    across batches) until ``reset_state()``; a batch of another size starts
    from zeros. ``train()`` and ``eval()`` switch dropout on and off.
    """

    def __init__(self, vocab_size, wordvec_size, hidden_size, cell="lstm", layers=1, dropout=0.0,
                 tie_weights=False, *, seed=0, dtype=np.float32):
        for what, v in (("vocab_size", vocab_size), ("wordvec_size", wordvec_size),
                        ("hidden_size", hidden_size), ("layers", layers)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise GraphError(f"RNNLM: {what} must be a positive integer, got {v!r}")
        if tie_weights and wordvec_size != hidden_size:
            raise GraphError(f"RNNLM: tied weights need wordvec_size == hidden_size "
                             f"(got {wordvec_size} and {hidden_size})")
        V, D, H = int(vocab_size), int(wordvec_size), int(hidden_size)
        self.vocab_size, self.wordvec_size, self.hidden_size = V, D, H
        self.num_layers, self.tie_weights = int(layers), bool(tie_weights)
        self.dtype = backend.check_float_dtype(dtype, "RNNLM")
        make = cell_factory(cell)
        self.cells = [make(D if l == 0 else H, H) for l in range(self.num_layers)]
        if self.cells[0].output_size != H:
            raise GraphError(f"RNNLM: cell {self.cells[0].name!r} outputs {self.cells[0].output_size} "
                             f"values per step, not hidden_size {H}")

        self.embed = Embedding(V, D, "embed.W")
        self.drops = [Dropout(dropout) for _ in range(self.num_layers + 1)]
        self.dropout = float(dropout)
        self.out = SoftmaxOutput(H, V, transposed=self.tie_weights)
        self._init_params(np.random.default_rng(seed))
        self.rnns = []
        for l, c in enumerate(self.cells):
            keys = {k: f"cell{l}.{k}" for k in c.param_shapes()}
            r = Recurrent(c, {k: self.params[v] for k, v in keys.items()}, stateful=True)
            r.grads = {k: self.grads[v] for k, v in keys.items()}  # one set of gradient arrays
            self.rnns.append(r)
        self.rng = np.random.default_rng([seed, 1])  # dropout masks
        self.training = True
        self._tm = None

    def _init_params(self, rng):
        """``params`` and ``grads``, drawn on the host in a fixed order from ``rng``.

        Untied, the output weight and bias are the rows of one (H+1, V) array
        (``joint``: the output layer's GEMMs then carry the bias) and the
        params hold views of it; tied, ``out.b`` stands alone."""
        xp = backend.xp()
        V, D, H, dtype = self.vocab_size, self.wordvec_size, self.hidden_size, self.dtype
        embed = (rng.standard_normal((V, D)) * 0.01).astype(dtype)
        shapes = {}
        for l, c in enumerate(self.cells):
            shapes.update({f"cell{l}.{k}": s for k, s in c.param_shapes().items()})
        host = {"embed.W": embed, **init_lm_params(rng, shapes, dtype)}
        self.joint = self.djoint = None
        if self.tie_weights:
            host["out.b"] = np.zeros(V, dtype)
        else:
            joint = np.zeros((H + 1, V), dtype=dtype)
            joint[:H] = init_lm_params(rng, {"out.W": (H, V)}, dtype)["out.W"]
            self.joint, self.djoint = backend.asarray(joint), xp.zeros((H + 1, V), dtype=dtype)
        self.params = {k: backend.asarray(v) for k, v in host.items()}
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        if not self.tie_weights:
            self.params["out.W"], self.grads["out.W"] = self.joint[:H], self.djoint[:H]
            self.params["out.b"], self.grads["out.b"] = self.joint[H], self.djoint[H]
        self._w = "embed.W" if self.tie_weights else "out.W"

    # ------------------------------------------------------------------ modes
    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def reset_state(self):
        for r in self.rnns:
            r.reset_state()

    def get_state(self):
        """The carried state as a dict ``"{layer}.{state}" -> array`` (empty after a reset)."""
        out = {}
        for l, r in enumerate(self.rnns):
            for k, v in (r.state or {}).items():
                out[f"{l}.{k}"] = v
        return out

    def set_state(self, state):
        for l, r in enumerate(self.rnns):
            mine = {k.split(".", 1)[1]: backend.asarray(v) for k, v in state.items()
                    if k.split(".", 1)[0] == str(l)}
            r.state = mine or None

    # ---------------------------------------------------------------- forward
    def _check_ids(self, a, what, shape=None):
        xp = backend.xp()
        a = xp.asarray(a)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise GraphError(f"RNNLM: {what} must be an (N, T) array of integer word ids, "
                             f"got {a.dtype} of shape {tuple(a.shape)}")
        if shape is not None and tuple(a.shape) != shape:
            raise GraphError(f"RNNLM: {what} has shape {tuple(a.shape)}, xs has {shape}")
        if a.size and (int(a.min()) < 0 or int(a.max()) >= self.vocab_size):
            raise GraphError(f"RNNLM: {what} holds ids outside [0, {self.vocab_size}) "
                             f"(min {int(a.min())}, max {int(a.max())})")
        return a

    def _hidden(self, xs):
        """Time-major top-layer output (T·N, H) for ids xs (N, T)."""
        n, t = xs.shape
        train = self.training
        x = self.embed.forward(self.params, xs.T)                      # (T, N, D)
        x = self.drops[0].forward(x, self.rng, train)
        for l, r in enumerate(self.rnns):
            hs = r.forward(x.transpose(1, 0, 2))                        # (N, T, H) view of (T, N, H)
            x = self.drops[l + 1].forward(hs.transpose(1, 0, 2), self.rng, train)
        self._tm = (t, n)
        return x.reshape(t * n, self.hidden_size)

    def forward(self, xs, ts):
        """Mean cross-entropy (nats per token) of predicting ts from xs."""
        xs = self._check_ids(xs, "xs")
        ts = self._check_ids(ts, "ts", tuple(xs.shape))
        p = self.params
        return self.out.forward(self._hidden(xs), ts.T.reshape(-1), p[self._w], p["out.b"], self.joint)

    def backward(self):
        """Fills ``self.grads`` with the gradient of the last forward's loss."""
        if self._tm is None:
            raise GraphError("RNNLM: backward called before forward")
        t, n = self._tm
        g = self.grads
        dx = self.out.backward(self.params[self._w], g[self._w], g["out.b"], self.djoint)
        for l in range(self.num_layers - 1, -1, -1):
            dx = self.drops[l + 1].backward(dx.reshape(t, n, -1))
            dx = self.rnns[l].backward(dx.transpose(1, 0, 2)).transpose(1, 0, 2)
        dx = self.drops[0].backward(dx)
        # With tying, grads["embed.W"] already holds the output layer's part.
        self.embed.backward(dx, self.grads, accumulate=self.tie_weights)
        self._tm = None

    def logits(self, xs):
        """Scores (N, T, V) for ids xs, carrying the state like forward."""
        xs = self._check_ids(xs, "xs")
        n, t = xs.shape
        z = self.out.scores(self._hidden(xs), self.params[self._w], self.params["out.b"])
        return z.reshape(t, n, -1).transpose(1, 0, 2)

    # ---------------------------------------------------------------- sampling
    def generate(self, start_ids, length, temperature=1.0, seed=None, exclude=()):
        """``length`` word ids sampled after ``start_ids`` (an int or a list).

        Each word is drawn from softmax(scores / temperature); ids in
        ``exclude`` are never drawn. Runs in evaluation mode from a zero state
        and leaves the model's mode and carried state as they were.
        """
        if not temperature > 0:
            raise GraphError(f"RNNLM.generate: temperature must be positive, got {temperature}")
        if length < 0:
            raise GraphError(f"RNNLM.generate: length must be >= 0, got {length}")
        start = np.atleast_1d(np.asarray(start_ids, dtype=np.int64))
        if start.size == 0:
            raise GraphError("RNNLM.generate: give at least one start id")
        rng = np.random.default_rng(seed)
        mode, state = self.training, self.get_state()
        self.eval()
        self.reset_state()
        try:
            out = []
            z = self.logits(start[None, :])[0, -1]
            for _ in range(int(length)):
                p = backend.to_numpy(softmax(backend.xp(), z / temperature)).astype(np.float64)
                if len(exclude):
                    p[list(exclude)] = 0.0
                total = p.sum()
                if not total > 0:
                    raise GraphError("RNNLM.generate: every word is excluded")
                nxt = int(rng.choice(self.vocab_size, p=p / total))
                out.append(nxt)
                z = self.logits(np.array([[nxt]]))[0, -1]
            return out
        finally:
            self.training = mode
            self.set_state(state)

    # ------------------------------------------------------------- evaluation
    def perplexity(self, batches):
        """exp of the mean loss over (xs, ts) batches, in evaluation mode from
        a zero state, the state carried between batches (the book's
        ``eval_perplexity``). Restores the mode; leaves the state reset."""
        mode = self.training
        self.eval()
        self.reset_state()
        total, count = 0.0, 0
        try:
            for xs, ts in batches:
                total += self.forward(xs, ts)
                count += 1
        finally:
            self.training = mode
            self.reset_state()
        if count == 0:
            raise GraphError("RNNLM.perplexity: no batches")
        return float(np.exp(total / count))
