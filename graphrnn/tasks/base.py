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
from ..errors import GraphError, TaskError


COMMON = ("iterations", "lr", "seed", "cell", "hidden", "optimizer", "log_every")


class Task:
    name = ""
    description = ""
    defaults: dict = {}
    # Headline figures written to metrics.json and printed in the summary.
    headline: tuple = ()
    # Settings a resumed run may change: they steer the training from the
    # checkpoint on; all others define the model or the data and stay.
    resumable: tuple = ("iterations", "lr", "log_every")
    # What ``extra_state`` keeps in the manifest, checked before
    # ``load_extra_state`` reads it (notation: graphrnn/schema.py).
    state_schema: dict = {}

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
            config[k] = whole_number(config, k, 1, "a positive integer")
        lr = number(config, "lr")
        if not np.isfinite(lr) or lr <= 0:
            raise TaskError(f"lr must be a positive number, got {config['lr']}")
        config["lr"] = lr
        return check_run_settings(config)

    def make_cell(self, input_size):
        spec = self.config["cell"]
        try:
            return cells.from_spec(spec, input_size, self.config["hidden"])
        except GraphError as exc:
            raise TaskError(str(exc)) from None

    def make_optimizer(self):
        return optim.make(self.config["optimizer"], self.params, self.config["lr"])

    def set_lr(self, lr):
        """A new learning rate from the next iteration on (a resumed run's --lr)."""
        self.opt.lr = float(lr)

    def built_cell(self):
        """The recurrent cell the task built (its name is kept in checkpoints)."""
        return getattr(self, "cell", None)

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
        raise TaskError(f"task {self.name!r} has nothing to sample; these tasks can be sampled: "
                        f"{', '.join(samplable())}")


def samplable():
    """The tasks whose trained model can generate (``graphrnn sample``), by name."""
    found, todo = set(), list(Task.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.sample is not Task.sample and getattr(cls, "name", None):
            found.add(cls.name)
    return sorted(found)


def whole_number(config, key, low, says):
    """``config[key]`` as an int >= ``low``; a ``TaskError`` naming the setting otherwise
    (a checkpoint's config is read as untrusted input: "abc", 1.5 and true are refused)."""
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer)) or int(v) != v or v < low:
        raise TaskError(f"{key.replace('_', '-')} must be {says}, got {v!r}")
    return int(v)


def number(config, key):
    """``config[key]`` as a float; a ``TaskError`` naming the setting otherwise."""
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TaskError(f"{key.replace('_', '-')} must be a number, got {v!r}")
    return float(v)


def check_run_settings(config):
    """The settings every task shares beyond its sizes: seed, cell, optimizer."""
    config["seed"] = whole_number(config, "seed", 0, "non-negative")
    if not isinstance(config["cell"], str):
        raise TaskError(f"cell must be a name or module:function, got {config['cell']!r}")
    if not isinstance(config["optimizer"], str) or config["optimizer"] not in optim.OPTIMIZERS:
        raise TaskError(f"unknown optimizer {config['optimizer']!r}; use one of "
                        f"{', '.join(optim.OPTIMIZERS)}")
    return config


def uniform(a, b):
    def draw(rng, shape, name):
        return rng.random_sample(shape) * (b - a) + a
    return draw
