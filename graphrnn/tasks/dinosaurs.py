"""Dinosaur names (Andrew Ng's deep-learning course, "Dinosaurus Island").

Character-level generation over 27 symbols (newline, a-z). Each name is one
sequence: a zero vector first, then the one-hot characters; the targets are
the characters shifted by one, ending in newline. tanh RNN with 50 units and a
softmax output layer, cross-entropy summed over the name, weights
normal(0, 0.01), zero biases, SGD 0.01 with every gradient clipped to [-5, 5],
one name per iteration in a shuffled order, the hidden state carried from one
name to the next (the gradient is not), a smoothed loss 0.999 old + 0.001 new
starting at 7 ln 27.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, data, schema
from ..layers import Affine, softmax
from ..step import Linear, compile_step
from ..unroll import unroll
from .base import Task, TaskError, number, whole_number

VOCAB = len(data.DINO_CHARS)


def _normal_weights(std):
    def draw(rng, shape, name):
        if len(shape) == 1:  # biases start at zero and take no draws
            return np.zeros(shape)
        return rng.randn(*shape) * std
    return draw


class Dinosaurs(Task):
    name = "dinosaurs"
    description = "generate dinosaur names with a character-level 50-unit tanh RNN"
    defaults = {"iterations": 35_000, "lr": 0.01, "seed": 0, "cell": "rnn", "hidden": 50,
                "optimizer": "sgd", "log_every": 2000, "clip": 5.0, "samples": 7,
                "max_length": 50, "data": None, "data_sha256": None}
    headline = ("smoothed_loss",)
    # The data file may move (its content is checked by its SHA256).
    resumable = Task.resumable + ("clip", "samples", "max_length", "data")
    state_schema = {"smoothed_loss": schema.NUMBER, "vocab?": schema.TEXT}

    @classmethod
    def resolve_config(cls, overrides):
        config = super().resolve_config(overrides)
        if not number(config, "clip") > 0:
            raise TaskError(f"clip must be positive, got {config['clip']}")
        config["samples"] = whole_number(config, "samples", 0, "non-negative")
        config["max_length"] = whole_number(config, "max_length", 1, "positive")
        if config["data"] is not None and not isinstance(config["data"], str):
            raise TaskError(f"data must be a file path, got {config['data']!r}")
        return config

    def __init__(self, config, *, sampling=False):
        """``sampling`` builds the model only: no data file is read (it may have moved)."""
        super().__init__(config)
        self.names = [] if sampling else self._load_names(config)
        self.cell = self.make_cell(VOCAB)
        self.out = Affine(self.cell.output_size, VOCAB, bias=True)
        shapes = dict(self.cell.param_shapes())
        self.cell_names = list(shapes)
        shapes.update(self.out.param_shapes())
        self.params = self.init_params(shapes, _normal_weights(0.01), transposed=True)
        self.opt = self.make_optimizer()
        self.order = np.arange(len(self.names))
        self.rng.shuffle(self.order)
        xp = backend.xp()
        # Each name's one-hot inputs and target indices, built once.
        self.examples = []
        eye = np.eye(VOCAB)
        for name in self.names:
            inputs, targets = data.dino_indices(name)
            xs = np.zeros((1, len(inputs), VOCAB))
            xs[0, 1:] = eye[inputs[1:]]
            self.examples.append((xp.asarray(xs), xp.asarray(np.array(targets)[None])))
        self.state = None          # the hidden state carried from name to name
        self.smoothed = 7 * math.log(VOCAB)
        self.clip = float(config["clip"])
        self.train_step = None

    def _compiled_step(self):
        """Forward, softmax, cross-entropy, BPTT, clipping and SGD as one call
        (graphrnn.step); made on first use, since a resumed run may change clip."""
        if self.train_step is None or self.train_step.clip != self.clip:
            self.train_step = compile_step(self.cell, self.params, head=Linear(VOCAB, prefix="out."),
                                           loss="softmax_ce", clip=self.clip, optimizer=self.opt)
        return self.train_step

    @staticmethod
    def _load_names(config):
        """The names of ``config['data']``, refusing a file whose content differs
        from the one the run (``data_sha256``, set on first load) was trained on."""
        try:
            names, digest = data.load_dinos(config["data"], with_sha256=True)
        except data.DataError as exc:
            raise TaskError(str(exc)) from None
        if config.get("data_sha256") not in (None, digest):
            where = config["data"] or "the names shipped with graphrnn"
            raise TaskError(f"the names in {where} differ from the ones this run was trained on "
                            f"(SHA256 {digest[:12]}… vs {config['data_sha256'][:12]}…); resume with "
                            "the original file (--data PATH if it moved)")
        config["data_sha256"] = digest
        return names

    @classmethod
    def for_sampling(cls, config, task_state):
        vocab = task_state.get("vocab", data.DINO_CHARS)
        if vocab != data.DINO_CHARS:
            raise TaskError(f"checkpoint: its vocabulary {vocab!r} is not the dinosaur alphabet")
        return cls(config, sampling=True)

    def step(self, i):
        xs, targets = self.examples[self.order[i % len(self.order)]]
        train_step = self._compiled_step()
        loss = train_step(xs, targets, self.state)
        self.state = train_step.state
        self.smoothed = self.smoothed * 0.999 + loss * 0.001
        return loss

    def sample(self, n, seed):
        """``n`` names drawn from the model, each stopping at newline or max_length characters."""
        xp = backend.xp()
        rng = np.random.RandomState(seed)
        cp = self.cell_params()
        W, b = self.params[self.out.w], self.params[self.out.b]
        eye = xp.eye(VOCAB)
        names = []
        for _ in range(n):
            x = xp.zeros((1, 1, VOCAB))
            state = None
            chars = []
            while len(chars) < self.config["max_length"]:
                # one character at a time on the numpy loops: sampling is too short
                # to pay back loading (or, on a first run, compiling) the native ones
                run = unroll(self.cell, cp, x, state, engine="numpy")
                state = run.state
                p = backend.to_numpy(softmax(xp, run.hs[0, -1] @ W + b))
                idx = rng.choice(VOCAB, p=p / p.sum())
                if idx == 0:
                    break
                chars.append(data.DINO_CHARS[idx])
                x = eye[idx][None, None]
            names.append("".join(chars))
        return names

    def log(self, i, loss):
        # The sampling stream is seeded from (seed, i): it never touches training draws.
        names = self.sample(self.config["samples"], [self.config["seed"], i])
        rec = {"iteration": i, "loss": loss, "smoothed_loss": self.smoothed, "samples": names}
        lines = [f"iteration {i}: smoothed loss {self.smoothed:.6f}"] + [f"  {s}" for s in names]
        return rec, lines

    def final_metrics(self):
        return {"smoothed_loss": self.smoothed}

    def extra_state(self):
        arrays = {f"state.{k}": v for k, v in (self.state or {}).items()}
        return arrays, {"smoothed_loss": self.smoothed, "vocab": data.DINO_CHARS}

    def load_extra_state(self, arrays, meta):
        st = {k[len("state."):]: backend.asarray(v) for k, v in arrays.items() if k.startswith("state.")}
        self.state = st or None
        self.smoothed = float(meta["smoothed_loss"])
