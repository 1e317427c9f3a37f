"""The trainer behind ``graphrnn train`` and ``graphrnn sample``.

A task (``graphrnn.tasks``) owns the model and knows one iteration; the
trainer owns everything around it: the progress bar, the log
(``metrics.jsonl``), the final ``metrics.json`` and loss plot, checkpoints,
resuming, Ctrl-C and divergence.

Resuming is exact: a checkpoint holds the parameters, the optimizer's state,
the task's own state (e.g. the hidden state carried between names), the
random generator's full state and every loss so far, so a resumed run ends
bit for bit where an uninterrupted one ends. A resumed run may change what
steers the training (more iterations, a new learning rate: see each task's
``resumable``); what defines the model or the data stays as the checkpoint
says.

A checkpoint never makes graphrnn run code it names: a run trained with a
user's cell (``module:function``) is loaded only when the user names the cell
again (``--cell``, checked against the checkpoint) or trusts the checkpoint
(``--trust-checkpoint``).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import signal
import sys
import time

import numpy as np

from . import backend, checkpoint, files, plots, runfolder, schema
from .errors import CheckpointError, TaskError, TrainingError, UsageError


def _tasks():
    from . import tasks
    return tasks


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Runs ``task`` for ``config['iterations']`` iterations, writing into ``out``."""

    def __init__(self, task, out, *, checkpoint_every=0, quiet=False, stream=None, progress=None,
                 engine=None, keep=checkpoint.KEEP):
        self.task = task
        self.keep = int(keep)
        if self.keep < 1:
            raise UsageError(f"--keep must be at least 1 checkpoint, got {keep}")
        self.engine = run_engine(engine)
        self.config = task.config
        self.out = out
        self.checkpoint_every = int(checkpoint_every or 0)
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint-every must be >= 0, got {checkpoint_every}")
        self.quiet = quiet
        self.stream = sys.stdout if stream is None else stream
        err = sys.stderr
        self.progress = (not quiet and hasattr(err, "isatty") and err.isatty()) if progress is None else progress
        self.step = 0            # iterations done
        self.losses = []         # the loss of every iteration done
        self.elapsed = 0.0       # seconds spent in the loop, over all segments of the run
        self.eval_elapsed = 0.0  # the part of it spent in end-of-epoch evaluations
        self._segment_start = None  # perf_counter at the start of the loop now running
        self.saved_step = None   # iteration of the newest checkpoint on disk
        self.resumes = []        # one record per resume that changed a setting: {"step", "changed"}
        self.changed = {}        # what this segment changed on resume: name -> [old, new]
        self._stop = False
        self._curve = None       # the loss curve's drawing, while a run is under way

    # ------------------------------------------------------------ checkpoints
    def state(self):
        task = self.task
        arrays = {f"param/{k}": v for k, v in task.params.items()}
        oa, ometa = task.opt.state_dict()
        arrays.update({f"optim/{k}": v for k, v in oa.items()})
        ta, tmeta = task.extra_state()
        arrays.update({f"task/{k}": v for k, v in ta.items()})
        kind, keys, pos, has_gauss, gauss = task.rng.get_state()
        arrays["rng/keys"] = keys
        arrays["trainer/losses"] = np.asarray(self.losses, dtype=np.float64)
        cell = task.built_cell()
        meta = {"config": self.config, "optimizer": ometa, "task_state": tmeta,
                "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
                "cell_name": None if cell is None else cell.name,
                "resumes": self.resumes, "engine": self.engine,
                "elapsed_s": self._elapsed_now(), "eval_elapsed_s": self.eval_elapsed,
                "graphrnn": _version()}
        return arrays, meta

    def _elapsed_now(self):
        """Loop time so far, the running segment included: a checkpoint saved
        mid-loop must carry it, or a resumed run forgets the time before it."""
        if self._segment_start is None:
            return self.elapsed
        return self.elapsed + time.perf_counter() - self._segment_start

    def save(self):
        arrays, meta = self.state()
        checkpoint.save(self.out, self.step, arrays, meta, keep=self.keep)
        self.saved_step = self.step

    def restore(self, manifest, arrays, where=None):
        """Load a checkpoint into the task, refusing one that does not fit the model."""
        task = self.task
        where = where or os.path.join(self.out, checkpoint.MANIFEST)
        checkpoint.validate(manifest, TRAINER_SCHEMA, where)
        groups = {}
        for name, a in arrays.items():
            group, _, key = name.partition("/")
            groups.setdefault(group, {})[key] = a
        params = groups.get("param", {})
        expected = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in task.params.items()}
        checkpoint.check_arrays(expected, params, f"parameters of {task.name} with cell "
                                f"{self.config['cell']!r}, hidden {self.config['hidden']}")
        oa, _ = task.opt.state_dict()
        expected_o = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in oa.items()}
        checkpoint.check_arrays(expected_o, groups.get("optim", {}), "optimizer state")
        checkpoint.validate(manifest["task_state"], task.state_schema, where, "task_state")
        if "keys" not in groups.get("rng", {}):
            raise CheckpointError(f"{where}: the arrays hold no 'rng/keys' (the random generator's state)")
        for k, a in params.items():
            task.params[k][...] = backend.asarray(a)
        for field, load in (("optimizer", lambda: task.opt.load_state_dict(groups.get("optim", {}),
                                                                          manifest["optimizer"])),
                            ("rng", lambda: self._restore_rng(manifest["rng"], groups["rng"]["keys"])),
                            ("task_state", lambda: task.load_extra_state(groups.get("task", {}),
                                                                        manifest["task_state"]))):
            try:
                load()
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                raise CheckpointError(f"{where}: field {field}: incomplete or damaged ({detail})") from None
        losses = groups.get("trainer", {}).get("losses")
        self.step = int(manifest["step"])
        if losses is None or len(losses) != self.step:
            raise CheckpointError(f"checkpoint in {self.out!r}: loss history does not match step {self.step}")
        self.losses = [float(x) for x in losses]
        self.elapsed = float(manifest.get("elapsed_s", 0.0))
        self.eval_elapsed = float(manifest.get("eval_elapsed_s", 0.0))
        self.resumes = list(manifest.get("resumes", []))
        self.saved_step = self.step

    def _restore_rng(self, rng, keys):
        self.task.rng.set_state((rng["kind"], keys, rng["pos"], rng["has_gauss"], rng["gauss"]))

    # ------------------------------------------------------------------ output
    def _say(self, line):
        if self.quiet:
            return
        if self.progress:
            from tqdm import tqdm
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _metrics_path(self):
        return os.path.join(self.out, runfolder.METRICS_LOG)

    def stop(self):
        """Ask a running ``run`` to checkpoint and return 130 after the current
        iteration, as a first Ctrl-C does (``graphrnn sweep`` stops its runs so)."""
        self._stop = True

    def _on_sigint(self, signum, frame):
        if self._stop:  # a second Ctrl-C: stop now, keep the last checkpoint on disk
            raise KeyboardInterrupt
        self._stop = True

    # --------------------------------------------------------------------- run
    def run(self):
        """Train to the configured number of iterations. Returns 0, or 130 when
        stopped by Ctrl-C (a checkpoint is saved first)."""
        from . import emit
        with emit.pinned(self.engine):
            return self._run()

    def _run(self):
        self._open_run_folder()
        # the loss curve's drawing starts now, beside the training (plots.CurveInChild)
        self._curve = None if hasattr(self.task, "plot") else plots.CurveInChild()
        try:
            try:
                with self._ctrl_c_finishes_the_iteration(), self._progress_bar() as bar, \
                        open(self._metrics_path(), "a", encoding="utf-8") as log:
                    self._log_resume(log)
                    self._train(bar, log)
            except KeyboardInterrupt:
                print(f"graphrnn train: interrupted during iteration {self.step}; the last checkpoint "
                      f"(iteration {self.saved_step}) is kept in {self.out}", file=sys.stderr)
                return 130
            stopped = self._stop and self.step < self.config["iterations"]
            if not stopped and self._curve is not None:
                self._curve.send(*self._curve_args())
            self.save()
            if stopped:
                print(f"graphrnn train: interrupted; checkpoint saved at iteration {self.step} in "
                      f"{self.out}. Continue with: graphrnn train --resume {self.out}", file=sys.stderr)
                return 130
            self.finish()
            return 0
        finally:
            curve, self._curve = self._curve, None
            if curve is not None:
                curve.close()

    def _open_run_folder(self):
        """The folder, the log trimmed to the checkpoint, and a first checkpoint
        (so there is always a last good one to fall back to)."""
        files.make_folder(self.out, "run folder")
        torn = runfolder.trim_log(self._metrics_path(), self.step)
        if torn:
            print(f"graphrnn train: dropped {torn} torn line{'s' if torn > 1 else ''} from "
                  f"{self._metrics_path()} (left by a crash)", file=sys.stderr)
        if self.saved_step is None:
            self.save()

    @contextlib.contextmanager
    def _ctrl_c_finishes_the_iteration(self):
        """While training, a first Ctrl-C sets ``_stop`` (the loop saves and
        stops after the iteration under way); a second raises KeyboardInterrupt."""
        try:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ctrl-C is not ours to catch
            old = None
        try:
            yield
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    @contextlib.contextmanager
    def _progress_bar(self):
        if not self.progress:
            yield None
            return
        from tqdm import tqdm
        bar = tqdm(total=self.config["iterations"], initial=self.step, desc=self.task.name, unit="it",
                   file=sys.stderr, dynamic_ncols=True, leave=False)
        try:
            yield bar
        finally:
            bar.close()

    def _log_resume(self, log):
        """A resumed run that changed a setting says so in the log, at the
        iteration it took effect (trimmed and rewritten if that segment is redone)."""
        if self.changed:
            rec = {"iteration": self.step, "event": "resume",
                   "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()}}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            self._say(f"resumed at iteration {self.step}: " + ", ".join(
                f"{k} {a} -> {b}" for k, (a, b) in self.changed.items()))

    def _train(self, bar, log):
        """The loop: one task step per iteration, its loss checked, logged,
        checkpointed on schedule, until the total or a Ctrl-C."""
        task, cfg = self.task, self.config
        total, log_every, every = cfg["iterations"], cfg["log_every"], self.checkpoint_every
        losses, step_fn, isfinite = self.losses, task.step, math.isfinite
        # Tasks that train by epochs (ptb) evaluate and checkpoint after each one.
        epoch_length = getattr(task, "epoch_length", None) or 0
        progress_text = getattr(task, "progress", None)
        pending = 0
        self._segment_start = time.perf_counter()
        try:
            i = self.step
            while i < total and not self._stop:
                loss = step_fn(i)
                if not isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at iteration {i}; training stopped. The last good "
                        f"checkpoint (iteration {self.saved_step}) is kept in {self.out}; try a smaller "
                        f"--lr and --resume from it, or start again")
                losses.append(loss)
                if i % log_every == 0:
                    self._write_record(log, *task.log(i, loss), at=f"iteration {i}")
                i += 1
                self.step = i
                if epoch_length and i % epoch_length == 0:
                    self._end_epoch(i, epoch_length, log)
                elif every and i % every == 0 and i < total:
                    self.save()
                if bar is not None:
                    pending += 1
                    if pending >= 50:
                        bar.update(pending)
                        pending = 0
                        text = progress_text() if progress_text else None
                        if text:
                            bar.set_postfix_str(text, refresh=False)
        finally:
            self.elapsed, self._segment_start = self._elapsed_now(), None

    def _end_epoch(self, i, epoch_length, log):
        """The task's evaluation after the epoch that iteration i-1 ended, logged
        (as of that iteration, so a resume trims it with the epoch) and checkpointed."""
        t = time.perf_counter()
        rec, lines = self.task.end_epoch(i // epoch_length)
        self.eval_elapsed += time.perf_counter() - t
        self._write_record(log, {"iteration": i - 1, **rec}, lines, at=f"the end of epoch {i // epoch_length}")
        self.save()

    def _write_record(self, log, rec, lines, at):
        """One record into metrics.jsonl (strict JSON), its lines shown; a
        figure that is not finite (a perplexity that overflowed) ends the run
        as a NaN loss does, before anything more is saved."""
        log.write(runfolder.record_line(rec))
        log.flush()
        for line in lines:
            self._say(line)
        bad = runfolder.non_finite(rec)
        if bad:
            raise TrainingError(
                f"{bad[0].replace('_', ' ')} became {rec[bad[0]]} at {at}; training stopped. The last good "
                f"checkpoint (iteration {self.saved_step}) is kept in {self.out}; try a smaller "
                f"--lr and --resume from it, or start again")

    def finish(self):
        """metrics.json, the loss plot and the summary line."""
        task = self.task
        metrics = task.final_metrics()
        n = self.step
        epoch_length = getattr(task, "epoch_length", None)
        if epoch_length and n >= epoch_length:
            metrics["seconds_per_epoch"] = round((self.elapsed - self.eval_elapsed) * epoch_length / n, 2)
        result = {"task": task.name, **metrics,
                  "final_loss": self.losses[-1] if self.losses else None,
                  "iterations": n, "train_s": round(self.elapsed, 3),
                  "iterations_per_s": round(n / self.elapsed, 1) if self.elapsed > 0 else None,
                  "config": self.config, "graphrnn": _version()}
        if self.resumes:
            result["resumes"] = self.resumes
        files.atomic_write(os.path.join(self.out, runfolder.METRICS),
                           runfolder.strict_json(result, indent=1) + "\n")
        plot = self.plot()
        heads = ", ".join(f"{k} {_fmt(metrics.get(k))}" for k in task.headline)
        print(f"{task.name}: {n} iterations in {self.elapsed:.1f} s; {heads}", file=self.stream)
        print(f"run folder: {self.out} (metrics.json, metrics.jsonl, {os.path.basename(plot)}, "
              f"checkpoint)", file=self.stream)
        self.result = result
        return result

    def plot(self):
        """The run's curve: the task's own plot if it draws one, else the loss
        (drawn by the child that ``run`` started, where it did)."""
        if hasattr(self.task, "plot"):
            return self.task.plot(self.losses, os.path.join(self.out, runfolder.PLOTS[1]))
        curve = self._curve
        if curve is not None and curve.sent is not None:
            return curve.result()
        return plots.loss_curve(*self._curve_args())

    def _curve_args(self):
        return (os.path.join(self.out, runfolder.PLOTS[0]), self.losses,
                f"{self.task.name} ({self.config['cell']}, lr {self.config['lr']})")


# What the trainer itself keeps in a manifest, beyond checkpoint.MANIFEST_SCHEMA.
TRAINER_SCHEMA = {
    "config": {"task": schema.TEXT, "cell": schema.TEXT},
    "optimizer": schema.OBJECT,
    "task_state": schema.OBJECT,
    "rng": {"kind": schema.TEXT, "pos": schema.COUNT, "has_gauss": schema.INT, "gauss": schema.NUMBER},
    "elapsed_s?": schema.NUMBER,
    "eval_elapsed_s?": schema.NUMBER,
    "cell_name?": schema.Field("a string or null", lambda v: None if v is None or isinstance(v, str) else ""),
    "resumes?": [{"step": schema.COUNT, "changed": schema.OBJECT}],
    "engine?": schema.Field("numpy, native or auto", lambda v: None if v in ("numpy", "native", "auto") else ""),
}


def run_engine(engine=None):
    """The engine a training run holds every step to: the one asked for, else
    $GRAPHRNN_ENGINE, else the fastest there is: native where numba is
    installed (a plan without a native form runs on the numpy loops, the same
    on every resume), else numpy. One engine for the whole run keeps its
    rounding fixed, so a resumed run ends bit for bit where an uninterrupted
    one ends (``auto`` may switch engines part-way)."""
    from . import emit
    from .emit import numba_runtime
    return emit.engine_setting(engine, default="native" if numba_runtime.numba_available() else "numpy")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _version():
    from . import __version__
    return __version__


# ------------------------------------------------------------------------ building

def build(task_name, overrides, *, out=None, checkpoint_every=0, quiet=False, stream=None,
          progress=None, engine=None, keep=checkpoint.KEEP):
    """A fresh Trainer for ``task_name`` with ``overrides`` on its defaults."""
    tasks = _tasks()
    cls = tasks.get(task_name)
    config = cls.resolve_config(overrides)
    if out is None:
        out = os.path.join("runs", f"{task_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    files.check_output_folder(out, "run folder")
    if os.path.exists(os.path.join(out, checkpoint.MANIFEST)):
        raise CheckpointError(f"{out} already holds a run; continue it with --resume {out} "
                              "or pick another --out")
    return Trainer(cls(config), out, checkpoint_every=checkpoint_every, quiet=quiet,
                   stream=stream, progress=progress, engine=engine, keep=keep)


def is_user_cell(spec):
    """True for a cell named as ``module:function`` (code outside graphrnn)."""
    return isinstance(spec, str) and ":" in spec


def _cell_to_load(recorded, asked, trust, where):
    """The cell spec to build for a saved run, never importing a module that
    only the checkpoint names: a built-in cell by its name; a user's cell when
    the user names it again (``asked``) or trusts the checkpoint."""
    if not is_user_cell(recorded):
        if asked is not None and asked != recorded:
            raise CheckpointError(f"--cell {asked} differs from the run's cell {recorded!r}; a resumed "
                                  "run keeps its model")
        return recorded
    if asked is not None:
        if not is_user_cell(asked):
            raise CheckpointError(f"--cell {asked} is a built-in cell; the run in {where} was trained "
                                  f"with the user cell {recorded!r}")
        return asked
    if trust:
        return recorded
    module = recorded.partition(":")[0]
    raise CheckpointError(
        f"the run in {where} was trained with the user cell {recorded!r}; graphrnn does not import "
        f"code that a checkpoint names. Name the cell yourself with --cell MODULE:FUNCTION (it is "
        f"checked against the checkpoint), or pass --trust-checkpoint to import {module!r}")


def resume(folder, overrides=None, *, task_name=None, checkpoint_every=0, quiet=False,
           stream=None, progress=None, sampling=False, trust=False, engine=None, keep=None):
    """A Trainer that continues the run in ``folder`` from its newest readable
    checkpoint (with ``sampling``, only the model, built without the training data).

    ``overrides`` may change what the task lists in ``resumable`` (more
    iterations, a new learning rate, ...), and name a user cell again
    (``cell``); ``trust`` loads a user cell that only the checkpoint names."""
    manifest, arrays, where, cls = _newest_checkpoint(folder, task_name)
    config = dict(manifest["config"])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config["cell"] = _cell_to_load(config["cell"], overrides.pop("cell", None), trust, folder)
    changed = _resumed_settings(cls, config, overrides)
    config = cls.resolve_config({k: v for k, v in config.items() if k != "task"})
    task = cls.for_sampling(config, manifest["task_state"]) if sampling else cls(config)
    # the run's own engine unless one is named now ($GRAPHRNN_ENGINE does not move a run)
    recorded = manifest.get("engine", "numpy")
    trainer = Trainer(task, folder, checkpoint_every=checkpoint_every, quiet=quiet,
                      stream=stream, progress=progress, engine=engine or recorded,
                      keep=checkpoint.KEEP if keep is None else keep)
    trainer.restore(manifest, arrays, where)
    if trainer.engine != recorded:
        changed["engine"] = [recorded, trainer.engine]
    _check_cell(task, manifest, config["cell"], where)
    if not sampling and trainer.step > config["iterations"]:
        raise CheckpointError(f"{folder} is already at iteration {trainer.step}, past the "
                              f"{config['iterations']} asked for; ask for more, or leave it as it is")
    # Settings that steer training take effect now, over what the checkpoint restored.
    if "lr" in changed:
        task.set_lr(config["lr"])
    if changed:
        trainer.changed = changed
        trainer.resumes.append({"step": trainer.step, "changed": changed})
    return trainer


def _newest_checkpoint(folder, task_name):
    """(manifest, arrays, its path, the task class) of the newest checkpoint in
    ``folder`` whose manifest holds a run graphrnn can rebuild; each newer one
    skipped as damaged is named on stderr."""
    tasks = _tasks()
    found = {}

    def check(manifest, where):
        checkpoint.validate(manifest, TRAINER_SCHEMA, where)
        config = manifest["config"]
        try:
            cls = tasks.get(config["task"])
        except TaskError as exc:
            raise CheckpointError(f"{where}: field config.task: {exc}") from None
        try:  # the checkpoint's own settings, before any of the user's
            cls.resolve_config({k: v for k, v in config.items() if k != "task"})
        except TaskError as exc:
            raise CheckpointError(f"{where}: field config: {exc}") from None
        checkpoint.validate(manifest["task_state"], cls.state_schema, where, "task_state")
        found.update(cls=cls, where=where)

    manifest, arrays, skipped = checkpoint.load_newest(folder, check)
    for line in skipped:
        print(f"graphrnn: skipped a damaged checkpoint: {line}", file=sys.stderr)
    if skipped:
        print(f"graphrnn: using the checkpoint at iteration {manifest['step']} "
              f"({os.path.basename(found['where'])})", file=sys.stderr)
    name = manifest["config"]["task"]
    if task_name is not None and task_name != name:
        raise CheckpointError(f"{folder} is a {name!r} run, not {task_name!r}")
    return manifest, arrays, found["where"], found["cls"]


# The task settings that have a flag of their own on `graphrnn train`; the others are --set KEY=VALUE.
FLAGS = ("iterations", "seed", "cell", "hidden", "lr", "optimizer", "log_every", "data", "preset", "epochs")


def flag(key):
    """How a user sets ``key`` on the command line: ``--lr`` or ``--set clip=...``."""
    return f"--{key.replace('_', '-')}" if key in FLAGS else f"--set {key}=..."


def _resumed_settings(cls, config, overrides):
    """Apply ``overrides`` to a saved run's ``config``; returns what changed
    (name -> [old, new]), refusing a change to what defines the model or data."""
    changed = {}
    for k, v in overrides.items():
        if v == config.get(k):
            continue
        if k not in cls.resumable:
            allowed = ", ".join(flag(r) for r in cls.resumable)
            given = f"--{k.replace('_', '-')} {v}" if k in FLAGS else f"--set {k}={v}"
            raise CheckpointError(f"{given} differs from the run's {config.get(k)}; "
                                  f"a resumed run keeps what defines its model and data (it may "
                                  f"change {allowed})")
        changed[k] = [config.get(k), v]
        config[k] = v
    return changed


def _check_cell(task, manifest, spec, where):
    """The cell built for a saved run has the name the checkpoint recorded
    (its parameters' names and shapes were checked when they were loaded)."""
    cell = task.built_cell()
    want = manifest.get("cell_name")
    if cell is not None and want is not None and cell.name != want:
        raise CheckpointError(f"{where}: the run's cell is named {want!r}; the cell {spec!r} "
                              f"is named {cell.name!r}")


def load_task(folder, task_name=None, *, cell=None, trust=False):
    """The task of a saved run with its trained parameters (for sampling)."""
    trainer = resume(folder, {"cell": cell}, task_name=task_name, quiet=True, sampling=True, trust=trust)
    return trainer.task


# ----------------------------------------------------------------------------- CLI

def _defaults_table():
    """Each task's defaults, for ``graphrnn train --help``."""
    from . import tasks
    keys = ("iterations", "epochs", "lr", "cell", "hidden", "optimizer", "log_every", "seed")
    lines = ["defaults per task (any setting: --set KEY=VALUE):"]
    for name, cls in tasks.TASKS.items():
        d = cls.defaults
        parts = [f"{k.replace('_', '-')} {d[k]}" for k in keys if d.get(k) is not None]
        if name == "ptb":
            parts.insert(0, f"preset {d['preset']}")
        lines.append(f"  {name}: " + ", ".join(parts))
    lines.append("  (ptb's sizes, rate and epochs come from its --preset: see docs/ptb.md)")
    return "\n".join(lines)


def add_train_arguments(p):
    import argparse

    from . import tasks
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = _defaults_table()
    p.add_argument("task", nargs="?", metavar="TASK",
                   help=f"one of {', '.join(tasks.TASKS)} (may be left out with --resume)")
    p.add_argument("--preset", default=None, help="ptb: ch6 (the book's chapter 6), better "
                   "(BetterRnnlm) or cpu (about an hour on 2 cores); default ch6")
    p.add_argument("--epochs", type=int, default=None, metavar="E",
                   help="ptb: passes over the training data (default: the preset's)")
    p.add_argument("--iterations", type=int, default=None, metavar="K",
                   help="the other tasks: iterations to train (default: the task's, listed below)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--cell", default=None, help="a built-in cell name or module:function "
                   "(default: the task's, listed below); with --resume, names a run's own cell again")
    p.add_argument("--hidden", type=int, default=None, metavar="H", help="hidden units (default: the task's)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the task's); with --resume, a new rate from there on")
    p.add_argument("--optimizer", default=None, help="sgd (the originals', default) or adam")
    p.add_argument("--log-every", type=int, default=None, metavar="K",
                   help="log every K iterations (default: the task's)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dinosaurs: a names file, one per line (default: the list shipped with graphrnn); "
                        "ptb: the folder of ptb.{train,valid,test}.txt "
                        "(default: $GRAPHRNN_DATA, then a per-user cache it is downloaded into); "
                        "text: any UTF-8 text file; sequences: an .npz of xs, ys and optional lengths")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of the task, e.g. --set dropout=0.3 (repeatable)")
    p.add_argument("--backend", default=None, choices=("numpy", "cupy"),
                   help="array backend (default numpy, or $GRAPHRNN_BACKEND)")
    p.add_argument("--engine", default=None, choices=("numpy", "native", "auto"),
                   help="the cell loops for the whole run (default $GRAPHRNN_ENGINE, else native where numba is "
                        "installed, else numpy; "
                        "recorded, and kept on --resume so that it ends bit for bit; docs/engines.md)")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/TASK-DATE)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="with --resume: import the user cell (module:function) the checkpoint names")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="also checkpoint every K iterations (always: at the start, the end and on Ctrl-C; "
                        "ptb: after every epoch)")
    p.add_argument("--keep", type=int, default=None, metavar="K",
                   help=f"checkpoints kept (default {checkpoint.KEEP}): a resume falls back to an older one "
                        "when the newest is damaged")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first node whose value or gradient is NaN or inf, naming it, its step "
                        "and its rule (gr.detect_anomaly; costs a finiteness check per call)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")


def _parse_set(items):
    """``--set key=value`` pairs; values read as JSON (numbers, true, null), else as text."""
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _overrides(args):
    out = {k: getattr(args, k, None) for k in FLAGS if getattr(args, k, None) is not None}
    out.update(_parse_set(getattr(args, "set", None) or []))
    return out


def train_main(args):
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    keep = checkpoint.KEEP if getattr(args, "keep", None) is None else args.keep
    if keep < 1:
        raise UsageError(f"--keep must be at least 1 checkpoint, got {keep}")
    overrides = _overrides(args)
    if args.backend:
        backend.set_backend(args.backend)
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise UsageError("--resume continues in its own folder; leave out --out")
        trainer = resume(args.resume, overrides, task_name=args.task,
                         checkpoint_every=args.checkpoint_every, quiet=args.quiet,
                         trust=getattr(args, "trust_checkpoint", False), engine=args.engine, keep=keep)
    else:
        if not args.task:
            raise UsageError("name a task (or --resume DIR)")
        if getattr(args, "trust_checkpoint", False):
            raise UsageError("--trust-checkpoint applies to --resume only")
        takes_data = [name for name, cls in _tasks().TASKS.items() if "data" in cls.defaults]
        if "data" in overrides and args.task not in takes_data:
            raise UsageError(f"--data applies to the {', '.join(takes_data)} tasks only")
        trainer = build(args.task, overrides, out=args.out,
                        checkpoint_every=args.checkpoint_every, quiet=args.quiet, engine=args.engine,
                        keep=keep)
    from .anomaly import detect_anomaly
    with detect_anomaly(getattr(args, "detect_anomaly", False)):
        return trainer.run()


def add_sample_arguments(p):
    from . import tasks
    p.add_argument("task", metavar="TASK", help=f"the task of the run ({', '.join(tasks.samplable())})")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run folder from graphrnn train")
    p.add_argument("-n", type=int, default=None,
                   help="how many: dinosaur names (default 7) or ptb words (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default 0)")
    p.add_argument("--temperature", type=float, default=None, help="ptb, text: sharpen (<1) or flatten (>1)")
    p.add_argument("--start", default=None, metavar="TEXT", help="ptb, text: the words (or characters) to continue")
    p.add_argument("--cell", default=None, metavar="MODULE:FUNCTION",
                   help="a run trained with your own cell: name it again (checked against the checkpoint)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="import the user cell (module:function) the checkpoint names")


def sample_main(args):
    n = args.n if args.n is not None else (100 if args.task in ("ptb", "text") else 7)
    if n < 0:
        raise UsageError(f"-n must be >= 0, got {n}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    extra = {k: getattr(args, k) for k in ("temperature", "start") if getattr(args, k, None) is not None}
    if extra and args.task not in ("ptb", "text"):
        raise UsageError(f"--{next(iter(extra))} applies to the ptb and text tasks only")
    if args.task not in _tasks().samplable():
        _tasks().get(args.task)   # an unknown task is named as such
        raise UsageError(f"task {args.task!r} has nothing to sample; these tasks can be sampled: "
                         f"{', '.join(_tasks().samplable())}")
    task = load_task(args.checkpoint, args.task, cell=getattr(args, "cell", None),
                     trust=getattr(args, "trust_checkpoint", False))
    for text in task.sample(n, args.seed, **extra):
        print(text)
    return 0
