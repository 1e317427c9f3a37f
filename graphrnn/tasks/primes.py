"""Primes (Nico Jimenez's lstm.py, primes variant).

The primes below 100, divided by 100. Sample i is the 50 consecutive primes
starting at index i (the index wrapping around the 25 primes); its target is
the prime after them. The 10 samples form one sequence of 10 steps, and the
target of step t is compared with the first hidden unit: L = sum_t (h_t[0] - y_t)^2.
Cell lstm_nico with 100 units, weights and biases uniform in [-0.1, 0.1], SGD.
"""
from __future__ import annotations

from .. import backend, data
from ..step import Columns, compile_step
from ..unroll import unroll
from .base import Task, uniform


class Primes(Task):
    name = "primes"
    description = "predict the next prime from the 50 before it with a 100-unit LSTM"
    defaults = {"iterations": 10_000, "lr": 0.01, "seed": 0, "cell": "lstm_nico", "hidden": 100,
                "optimizer": "sgd", "log_every": 1000}
    headline = ("loss", "max_abs_error")
    width = 50  # inputs per step

    def __init__(self, config):
        super().__init__(config)
        self.cell = self.make_cell(self.width)
        shapes = dict(self.cell.param_shapes())
        self.cell_names = list(shapes)
        self.params = self.draw_params(shapes)
        xs, ys = self.sequence()
        xp = backend.xp()
        self.xs = xp.asarray(xs[None])       # (1, T, width): one sequence of T steps
        self.ys = xp.asarray(ys)
        self.targets = xp.asarray(ys[None, :, None])  # (1, T, 1): the first hidden unit's
        self.opt = self.make_optimizer()
        # L = sum_t (h_t[0] - y_t)^2 and its update, one call per iteration (graphrnn.step)
        self.train_step = compile_step(self.cell, self.params, head=Columns(0, 1), loss="squared_error",
                                       optimizer=self.opt)

    def draw_params(self, shapes):
        """Each array uniform in [-0.1, 0.1), in the cell's order, each weight
        drawn as Nico's (H, D+H) matrix and transposed."""
        return self.init_params(shapes, uniform(-0.1, 0.1), transposed=True)

    def sequence(self):
        """(xs (T, width), ys (T,)): the inputs and the targets of the first hidden unit."""
        return data.primes_sequence(samples=10, width=self.width, limit=100)

    def step(self, i):
        return self.train_step(self.xs, self.targets)

    def predictions(self):
        # one forward pass of 10 steps: the numpy loops, not the cell's native
        # loops (loaded or, on a first run, compiled for this alone: seconds)
        run = unroll(self.cell, self.cell_params(), self.xs, engine="numpy")
        return backend.to_numpy(run.hs[0, :, 0])

    def log(self, i, loss):
        return {"iteration": i, "loss": loss}, [f"iteration {i}: loss {loss:.6e}"]

    def final_metrics(self):
        pred = self.predictions()
        ys = backend.to_numpy(self.ys)
        err = pred - ys
        return {"loss": float((err * err).sum()), "max_abs_error": float(abs(err).max()),
                "predictions": [round(float(p), 6) for p in pred],
                "targets": [float(y) for y in ys]}
