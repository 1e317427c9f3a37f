"""The toy experiment of Nico Jimenez's lstm.py (its ``example_0``).

Four fixed random inputs, 50 wide, drawn uniformly from [0, 1); the first
hidden unit of a 100-unit ``lstm_nico`` must output -0.5, 0.2, 0.1, -0.5 at
the four steps. Loss: squared error on h[0] summed over the steps; SGD with
rate 0.1 for 100 iterations. The original's loss at its last iteration is
about 2.6e-06; graphrnn's, from the same draws, is 2.611e-06.

Its initialisation is the original's (``init: original``): Nico's
``rand_arr`` reseeds numpy's generator before every array, so the four gate
weights start equal (one (H, D+H) draw each, transposed to graphrnn's layout),
the four biases start equal, and the inputs continue the stream after the
last bias. With ``--seed S`` the reseeding uses S. ``--set init=independent``
draws every array, then the inputs, from one stream instead.
"""
from __future__ import annotations

import numpy as np

from .base import TaskError, uniform
from .primes import Primes

TARGETS = (-0.5, 0.2, 0.1, -0.5)
# The original's arrays in the order it draws them (wg, wi, wf, wo, then the biases).
NICO_ORDER = ("Wg", "Wi", "Wf", "Wo", "bg", "bi", "bf", "bo")


class LstmToy(Primes):
    name = "lstm-toy"
    description = "output -0.5, 0.2, 0.1, -0.5 in h[0] from four random inputs (lstm_nico, 100 units)"
    defaults = {"iterations": 100, "lr": 0.1, "seed": 0, "cell": "lstm_nico", "hidden": 100,
                "optimizer": "sgd", "log_every": 10, "init": "original"}
    INITS = ("original", "independent")

    @classmethod
    def resolve_config(cls, overrides):
        config = super().resolve_config(overrides)
        if config["init"] not in cls.INITS:
            raise TaskError(f"init must be one of {', '.join(cls.INITS)}, got {config['init']!r}")
        return config

    def draw_params(self, shapes):
        order = [k for k in NICO_ORDER if k in shapes] + [k for k in shapes if k not in NICO_ORDER]
        draw = uniform(-0.1, 0.1)
        if self.config["init"] == "original":
            seed, plain = self.config["seed"], draw

            def draw(rng, shape, name):
                rng.seed(seed)
                return plain(rng, shape, name)
        drawn = self.init_params({k: shapes[k] for k in order}, draw, transposed=True)
        return {k: drawn[k] for k in shapes}

    def sequence(self):
        xs = np.stack([self.rng.random_sample(self.width) for _ in TARGETS])
        return xs, np.array(TARGETS)
