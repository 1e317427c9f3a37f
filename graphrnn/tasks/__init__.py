"""The classic experiments, runnable as ``graphrnn train TASK``.

The task code lives here, inside the package, so the command works from an
installed graphrnn; the scripts in the repository's ``tasks/`` folder are thin
wrappers that call the same trainer.
"""
from __future__ import annotations

from .base import Task, TaskError, samplable
from .binary_addition import BinaryAddition
from .dinosaurs import Dinosaurs
from .lstm_toy import LstmToy
from .primes import Primes
from .ptb import PTB
from .sequences import Sequences
from .text import Text

TASKS = {t.name: t for t in (BinaryAddition, Primes, LstmToy, Dinosaurs, PTB, Text, Sequences)}


def get(name):
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None




__all__ = ["samplable", "TASKS", "Task", "TaskError", "get", "BinaryAddition", "Primes", "Dinosaurs", "LstmToy", "PTB", "Text", "Sequences"]
