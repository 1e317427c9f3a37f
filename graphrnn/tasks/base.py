"""What every experiment provides to the trainer.

A task owns its model (a cell plus output layers, one parameter dict), its
optimizer and its random stream. The trainer calls ``step(i)`` once per
iteration and never looks inside; to checkpoint and resume, a task hands out
its own extra state (``extra_state``) as arrays plus JSON-able numbers.

Every random draw a task makes during training comes from ``self.rng``, a
legacy ``numpy.random.RandomState(seed)``: it is the generator the original
programs used (``np.random.seed(0)``), so with the same draw order the runs
can be compared with theirs number for number, and its whole state fits in a
checkpoint.
"""
from __future__ import annotations

import numpy as np

from .. import backend, cells, optim
from ..primitives import GraphError


class TaskError(ValueError):
    """A task was configured with settings it cannot use."""


COMMON = ("iterations", "lr", "seed", "cell", "hidden", "optimizer", "log_every")


class Task:
    name = ""
    description = ""
    defaults: dict = {}
    # Headline figures written to metrics.json and printed in the summary.
    headline: tuple = ()

    def __init__(self, config):
        self.config = config
        self.rng = np.random.RandomState(config["seed"])

    @classmethod
    def for_sampling(cls, config, task_state):
        """The task rebuilt to sample from a checkpoint (``task_state``: what its
        ``extra_state`` saved); a task whose data is large builds it without."""
        return cls(config)

    # ---------------------------------------------------------------- building
    @classmethod
    def resolve_config(cls, overrides):
        """Defaults with the given (non-None) overrides; sizes and rates checked."""
        config = {"task": cls.name, **cls.defaults}
        for k, v in overrides.items():
            if v is None:
                continue
            if k not in config:
                raise TaskError(f"task {cls.name!r} has no setting {k!r}")
            config[k] = v
        for k in ("iterations", "hidden", "log_every"):
            if int(config[k]) < 1:
                raise TaskError(f"{k.replace('_', '-')} must be a positive integer, got {config[k]}")
            config[k] = int(config[k])
        lr = float(config["lr"])
        if not np.isfinite(lr) or lr <= 0:
            raise TaskError(f"lr must be a positive number, got {config['lr']}")
        config["lr"] = lr
        if int(config["seed"]) < 0:
            raise TaskError(f"seed must be non-negative, got {config['seed']}")
        config["seed"] = int(config["seed"])
        if config["optimizer"] not in optim.OPTIMIZERS:
            raise TaskError(f"unknown optimizer {config['optimizer']!r}; use one of "
                            f"{', '.join(optim.OPTIMIZERS)}")
        return config

    def make_cell(self, input_size):
        spec = self.config["cell"]
        try:
            return cells.from_spec(spec, input_size, self.config["hidden"])
        except GraphError as exc:
            raise TaskError(str(exc)) from None

    def make_optimizer(self):
        return optim.make(self.config["optimizer"], self.params, self.config["lr"])

    def init_params(self, shapes, draw, transposed=False):
        """One array per name, drawn in ``shapes``' order from ``self.rng``.

        With ``transposed`` a matrix is drawn as its transpose and transposed
        back: programs that store weights as (out, in) and multiply column
        vectors then start from the very numbers they drew.
        """
        out = {}
        for name, shape in shapes.items():
            if transposed and len(shape) == 2:
                a = draw(self.rng, (shape[1], shape[0]), name).T.copy()
            else:
                a = draw(self.rng, shape, name)
            out[name] = backend.asarray(np.ascontiguousarray(a, dtype=np.float64))
        return out

    def cell_params(self):
        """The view of ``self.params`` that the cell's ``unroll`` accepts (same arrays)."""
        return {k: self.params[k] for k in self.cell_names}

    def param_shapes(self):
        return {k: tuple(v.shape) for k, v in self.params.items()}

    # ------------------------------------------------------------- the contract
    def step(self, i):
        """Run iteration ``i`` (0-based): forward, backward, update. Returns its loss."""
        raise NotImplementedError

    def log(self, i, loss):
        """The record for metrics.jsonl after iteration ``i``, and lines to print."""
        return {"iteration": i, "loss": loss}, [f"iteration {i}: loss {loss:.6g}"]

    def final_metrics(self):
        """The headline figures of the trained model."""
        raise NotImplementedError

    def extra_state(self):
        return {}, {}

    def load_extra_state(self, arrays, meta):
        pass

    def sample(self, n, seed):
        raise TaskError(f"task {self.name!r} has nothing to sample; only dinosaurs does")


def uniform(a, b):
    def draw(rng, shape, name):
        return rng.random_sample(shape) * (b - a) + a
    return draw
