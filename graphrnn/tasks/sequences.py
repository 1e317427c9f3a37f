"""A user's own sequences: ``graphrnn train sequences --data FILE.npz``.

Any cell (a built-in name or ``--cell MODULE:FUNCTION``) over the inputs
``xs`` (N, T, D), an affine output layer over its outputs, and a loss that
the targets ``ys`` choose (``graphrnn.data.sequences`` lists the forms):
integer classes -> softmax cross-entropy, floats -> squared error; targets
per step or one per sequence. With ``lengths``, sequence n has only
``lengths[n]`` steps: the steps after it are padding, and the loss reads no
output there (a per-sequence target is compared with the output of its last
real step), so sequences of different lengths train in one batch, exactly.

The last ``valid_fraction`` of the sequences (in the file's order) is held
out; after every epoch (one pass over the others in a fresh random order)
the held-out loss, and for classes the accuracy, are logged. The loss is the
mean over the real steps (or sequences) of the batch; gradients are clipped
to a global norm of ``clip``. Checkpoints, ``--resume`` (bit for bit),
sweeps and reports work as for every task.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend, optim, schema
from ..data import sequences as seqdata
from ..errors import DataError
from ..layers import Affine, SoftmaxCrossEntropy, SquaredError
from ..unroll import unroll
from .base import Task, TaskError, check_run_settings, number, whole_number


class Sequences(Task):
    name = "sequences"
    description = "your cell on your own sequences (an .npz of xs, ys and optional lengths)"
    defaults = {"epochs": 20, "batch": 32, "lr": 0.01, "seed": 0, "cell": "gru", "hidden": 32,
                "optimizer": "adam", "log_every": 10, "clip": 5.0, "valid_fraction": 0.2,
                "data": None}
    headline = ("valid_loss",)
    resumable = ("epochs", "lr", "log_every", "clip", "data")
    state_schema = {"order": [schema.COUNT], "history": [{"epoch": schema.COUNT, "valid_loss": schema.NUMBER}]}
    # Set from the data, recorded so a resumed run can be checked against them.
    derived = ("iterations", "data_sha256")

    @classmethod
    def resolve_config(cls, overrides):
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "iterations" in overrides and "data_sha256" not in overrides:
            raise TaskError(f"{cls.name} trains by epochs: use --epochs, not --iterations")
        config = {"task": cls.name, **cls.defaults}
        for k, v in overrides.items():
            if k not in config and k not in cls.derived:
                raise TaskError(f"task {cls.name!r} has no setting {k!r}; settings: "
                                f"{', '.join(cls.defaults)}")
            config[k] = v
        for k in ("epochs", "batch", "hidden", "log_every"):
            config[k] = whole_number(config, k, 1, "a positive integer")
        for k in ("lr", "clip"):
            v = number(config, k)
            if not math.isfinite(v) or v <= 0:
                raise TaskError(f"{k} must be a finite number > 0, got {config[k]!r}")
            config[k] = v
        f = number(config, "valid_fraction")
        if not 0.0 < f < 1.0:
            raise TaskError(f"valid-fraction must be between 0 and 1, got {config['valid_fraction']!r}")
        config["valid_fraction"] = f
        return check_run_settings(config)

    def __init__(self, config):
        super().__init__(config)
        cfg = config
        data = self._load(cfg)
        nvalid = max(1, int(round(data.n * cfg["valid_fraction"])))
        if data.n - nvalid < 1:
            raise TaskError(f"{data.path}: {data.n} sequence(s); at least 2 are needed "
                            "(one to train on, one held out)")
        self.data, self.ntrain = data, data.n - nvalid
        self.epoch_length = math.ceil(self.ntrain / cfg["batch"])
        cfg["iterations"] = cfg["epochs"] * self.epoch_length
        self.cell = self.make_cell(data.d)
        self.out = Affine(self.cell.output_size, data.outputs)
        self.loss_fn = SoftmaxCrossEntropy() if data.classification else SquaredError()
        self.params = dict(self.cell.init_params(seed=cfg["seed"], dtype=np.float64))
        self.cell_names = list(self.params)
        bound = 1.0 / math.sqrt(self.cell.output_size)
        self.params.update(self.init_params(self.out.param_shapes(),
                                            lambda rng, shape, name: rng.uniform(-bound, bound, shape)))
        self.opt = self.make_optimizer()
        xp = backend.xp()
        self.xs, self.ys = xp.asarray(data.xs), xp.asarray(data.ys)
        self.mask, self.last = xp.asarray(data.mask()), xp.asarray(data.lengths - 1)
        self.order = None            # this epoch's order of the training sequences
        self.history = []

    @staticmethod
    def _load(cfg):
        try:
            data = seqdata.load(cfg["data"])
        except DataError as exc:
            raise TaskError(str(exc)) from None
        if cfg.get("data_sha256") not in (None, data.sha256):
            raise TaskError(f"{data.path} differs from the file this run was trained on (SHA256 "
                            f"{data.sha256[:12]}… vs {cfg['data_sha256'][:12]}…); resume with the original file")
        cfg["data_sha256"] = data.sha256
        return data

    # ------------------------------------------------------------- the model
    def _loss(self, idx, train):
        """Mean loss over the real steps (or sequences) of ``idx``; with
        ``train``, the gradients of every parameter too. Returns (loss, grads, correct, count)."""
        xp = backend.xp()
        run = unroll(self.cell, self.cell_params(), self.xs[idx])
        z = self.out.forward(self.params, run.hs)
        if self.data.per_step:
            where = self.mask[idx]
            rows, targets = z[where], self.ys[idx][where]
        else:
            where = (xp.arange(len(idx)), self.last[idx])
            rows, targets = z[where], self.ys[idx]
        count = rows.shape[0] * (1 if self.data.classification else rows.shape[1])
        loss = self.loss_fn.forward(rows, targets) / count
        correct = int((rows.argmax(axis=1) == targets).sum()) if self.data.classification else 0
        if not train:
            return loss, None, correct, rows.shape[0]
        dz = xp.zeros_like(z)
        dz[where] = self.loss_fn.backward() / count
        grads = {}
        dhs = self.out.backward(self.params, dz, grads)
        grads.update(run.backward(dhs, need_xs=False).params)
        return loss, grads, correct, rows.shape[0]

    def step(self, i):
        k = i % self.epoch_length
        if k == 0 or self.order is None:
            self.order = self.rng.permutation(self.ntrain)
        b = self.config["batch"]
        idx = backend.asarray(self.order[k * b:(k + 1) * b])
        loss, grads, _, _ = self._loss(idx, train=True)
        optim.clip_global_norm(grads, self.config["clip"])
        self.opt.step(grads)
        return loss

    def evaluate(self):
        """(mean held-out loss, accuracy or None), in chunks of 256 sequences."""
        total = correct = count = 0.0
        for start in range(self.ntrain, self.data.n, 256):
            idx = backend.asarray(np.arange(start, min(start + 256, self.data.n)))
            loss, _, c, rows = self._loss(idx, train=False)
            total += loss * rows
            correct += c
            count += rows
        return total / count, (correct / count if self.data.classification else None)

    # ------------------------------------------------------------- reporting
    def log(self, i, loss):
        epoch = i // self.epoch_length + 1
        return ({"iteration": i, "epoch": epoch, "loss": loss},
                [f"epoch {epoch} | iteration {i % self.epoch_length + 1}/{self.epoch_length} | loss {loss:.5g}"])

    def end_epoch(self, epoch):
        loss, acc = self.evaluate()
        rec = {"epoch": epoch, "valid_loss": loss}
        line = f"epoch {epoch}: held-out loss {loss:.5g}"
        if acc is not None:
            rec["valid_accuracy"] = acc
            line += f", accuracy {acc:.3f}"
        self.history.append({"epoch": epoch, "valid_loss": loss})
        return rec, [line]

    def final_metrics(self):
        loss, acc = self.evaluate()
        d = self.data
        return {"valid_loss": loss, "valid_accuracy": acc, "cell": self.config["cell"],
                "lr": self.config["lr"], "seed": self.config["seed"], "epochs": len(self.history),
                "sequences": d.n, "held_out": d.n - self.ntrain, "steps": d.t, "features": d.d,
                "targets": ("classes" if d.classification else "values") + (" per step" if d.per_step
                                                                            else " per sequence"),
                "data_sha256": d.sha256}

    # ----------------------------------------------------------- checkpoints
    def extra_state(self):
        order = [] if self.order is None else [int(v) for v in self.order]
        return {}, {"order": order, "history": self.history}

    def load_extra_state(self, arrays, meta):
        order = np.asarray(meta["order"], dtype=np.int64)
        if len(order) and sorted(order.tolist()) != list(range(self.ntrain)):
            raise TaskError("checkpoint: its order of the training sequences does not fit the data")
        self.order = order if len(order) else None
        self.history = list(meta["history"])
