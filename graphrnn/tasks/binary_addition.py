"""Binary addition (iamtrask, "Anyone Can Learn To Code an LSTM-RNN in Python").

Two integers below 2**(bits-1) are fed one bit pair per step, least
significant first; the target at each step is that bit of the sum. A sigmoid
RNN without bias, a sigmoid output unit on the hidden state (no bias), loss
1/2 sum (y - p)^2, weights uniform in [-1, 1], plain SGD with rate 0.1 on the
gradients summed over the steps, one random pair per iteration.

With seed 0 the draws follow the original's order (synapse_0, synapse_1,
synapse_h, then randint(a), randint(b) per iteration), so the errors printed
every 1,000 iterations are the original's to the last digits.
"""
from __future__ import annotations

import numpy as np

from .. import backend, cells, data, schema
from ..layers import Affine
from ..step import Linear, compile_step
from ..unroll import unroll
from .base import Task, TaskError, uniform, whole_number


class BinaryAddition(Task):
    name = "binary-addition"
    description = "add two 8-bit numbers bit by bit with a 16-unit sigmoid RNN"
    defaults = {"iterations": 10_000, "lr": 0.1, "seed": 0, "cell": "rnn", "hidden": 16,
                "optimizer": "sgd", "log_every": 1000, "bits": 8}
    headline = ("accuracy", "accuracy_unseen", "error")
    state_schema = {"error": schema.NULLABLE_NUMBER}

    @classmethod
    def resolve_config(cls, overrides):
        config = super().resolve_config(overrides)
        config["bits"] = whole_number(config, "bits", 2, "in 2..12")
        if config["bits"] > 12:
            raise TaskError(f"bits must be in 2..12, got {config['bits']}")
        return config

    def __init__(self, config):
        super().__init__(config)
        H, bits = config["hidden"], config["bits"]
        if config["cell"] == "rnn":  # the original network: sigmoid, no bias
            self.cell = cells.rnn(2, H, activation="sigmoid", bias=False)
        else:
            self.cell = self.make_cell(2)
        self.out = Affine(self.cell.output_size, 1, bias=False)
        shapes = dict(self.cell.param_shapes())
        self.cell_names = list(shapes)
        shapes.update(self.out.param_shapes())
        # The original draws synapse_0 (input), synapse_1 (output), synapse_h (recurrent).
        order = [k for k in ("Wx", "out.W", "Wh") if k in shapes]
        order += [k for k in shapes if k not in order]
        self.params = self.init_params({k: shapes[k] for k in order}, uniform(-1.0, 1.0))
        self.opt = self.make_optimizer()
        self.half = 2 ** (bits - 1)
        self.table = data.bit_table(bits)
        # Every (a, b) input sequence once, so a step only indexes.
        a, b = np.meshgrid(np.arange(self.half), np.arange(self.half), indexing="ij")
        xs, ys = data.addition_batch(self.table, a, b)
        xp = backend.xp()
        self.xs_all = xp.asarray(xs)                     # (half, half, bits, 2)
        self.ys_all = xp.asarray(ys)                     # (half, half, bits, 1)
        self.seen = np.zeros((self.half, self.half), dtype=bool)
        self.error = float("nan")
        # forward, sigmoid output, loss, BPTT and update as one call (graphrnn.step)
        self.train_step = compile_step(self.cell, self.params, head=Linear(1, bias=False, prefix="out."),
                                       loss="sigmoid_squared_error", optimizer=self.opt)

    def step(self, i):
        rng = self.rng
        a = rng.randint(self.half)
        b = rng.randint(self.half)
        self.seen[a, b] = True
        loss = self.train_step(self.xs_all[a, b][None], self.ys_all[a, b][None])
        self.error = self.train_step.residual
        return loss

    def log(self, i, loss):
        rec = {"iteration": i, "loss": loss, "error": self.error}
        return rec, [f"iteration {i}: error {self.error:.8f}"]

    def predict(self, a, b):
        """Predicted sum bits (N, bits) for integer arrays a, b, in one batched run."""
        xp = backend.xp()
        xs = self.xs_all[xp.asarray(a), xp.asarray(b)]
        # One forward pass over every pair takes milliseconds on the numpy loops;
        # loading the cell's native loops for it would take longer (~0.4 s).
        run = unroll(self.cell, self.cell_params(), xs, engine="numpy")
        z = self.out.forward(self.params, run.hs)[..., 0]
        return z > 0  # sigmoid(z) > 0.5

    def final_metrics(self):
        half = self.half
        a, b = np.meshgrid(np.arange(half), np.arange(half), indexing="ij")
        a, b = a.ravel(), b.ravel()
        pred = backend.to_numpy(self.predict(a, b))
        right = (pred == (self.table[a + b] > 0.5)).all(axis=1)
        unseen = ~self.seen.ravel()
        return {
            "accuracy": float(right.mean()),
            "accuracy_unseen": float(right[unseen].mean()) if unseen.any() else None,
            "pairs": int(right.size),
            "pairs_unseen": int(unseen.sum()),
            "error": self.error,
        }

    def extra_state(self):
        err = self.error
        return {"seen": self.seen}, {"error": err if err == err else None}  # JSON has no NaN

    def load_extra_state(self, arrays, meta):
        self.seen[...] = arrays["seen"]
        self.error = float("nan") if meta["error"] is None else float(meta["error"])
