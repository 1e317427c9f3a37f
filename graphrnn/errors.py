"""Every error graphrnn raises on purpose, in one leaf module.

Each class says what went wrong in its message, ready to show a user as it
is; ``graphrnn.cli.main`` turns any ``GraphrnnError`` into one line on stderr
and exit status 2. The classes also keep the standard base their callers
have always caught (a ``GraphError`` is a ``ValueError``, a
``GradientCheckError`` an ``AssertionError`` so pytest shows it as a failed
assertion). Nothing here imports the rest of graphrnn, so any module may
raise these without an import circle; each is also re-exported where it was
first defined (``graphrnn.checkpoint.CheckpointError``, ...).
"""
from __future__ import annotations


class GraphrnnError(Exception):
    """Base of the errors below: a message meant for the user, never a bug report."""


class UsageError(GraphrnnError):
    """Bad input from the command line (a name, a size, a combination of options)."""


class GraphError(GraphrnnError, ValueError):
    """A cell declaration or a run's inputs do not fit; the message names the node."""


class BackendError(GraphrnnError, RuntimeError):
    """The requested array backend cannot be used on this machine."""


class CheckpointError(GraphrnnError, ValueError):
    """A checkpoint is missing, damaged, untrusted, or does not match the model."""


class DataError(GraphrnnError, ValueError):
    """A data file is missing or does not have the expected form."""


class TaskError(GraphrnnError, ValueError):
    """A task was configured with settings it cannot use."""


class OptimError(GraphrnnError, ValueError):
    """An optimizer was given settings or state that cannot work."""


class TrainingError(GraphrnnError, RuntimeError):
    """Training cannot go on (the loss diverged); the message says what was kept."""


class OutputError(GraphrnnError, OSError):
    """A file or folder the user asked for cannot be written; the message names
    the user's path (never a temporary file's) and the reason."""


class GraphvizNotFound(GraphrnnError, RuntimeError):
    """The ``dot`` program is needed for this format and is not installed."""


class GradientCheckError(GraphrnnError, AssertionError):
    """An engine gradient differs from its reference (``graphrnn.testing``
    raises a subclass that carries the numbers)."""


class AnomalyError(GraphrnnError, FloatingPointError):
    """Anomaly mode (``gr.detect_anomaly``) met a NaN or inf; the message names
    the first node that made one, its step, its cell and its primitive's rule."""


class SweepError(GraphrnnError, ValueError):
    """A sweep cannot start: a bad grid, or settings that differ from those of the sweep in its folder."""
