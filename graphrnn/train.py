"""The trainer behind ``graphrnn train`` and ``graphrnn sample``.

A task (``graphrnn.tasks``) owns the model and knows one iteration; the
trainer owns everything around it: the progress bar, the log
(``metrics.jsonl``), the final ``metrics.json`` and loss plot, checkpoints,
resuming, Ctrl-C and divergence.

Resuming is exact: a checkpoint holds the parameters, the optimizer's state,
the task's own state (e.g. the hidden state carried between names), the
random generator's full state and every loss so far, so a resumed run ends
bit for bit where an uninterrupted one ends.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import signal
import sys
import time

import numpy as np

from . import backend, checkpoint
from .checkpoint import CheckpointError

# Settings a resumed run may change: more iterations extend it, the rest would
# make it a different run.
RESUMABLE = ("iterations", "epochs")


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged); the message says what was kept."""


def _tasks():
    from . import tasks
    return tasks


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Runs ``task`` for ``config['iterations']`` iterations, writing into ``out``."""

    def __init__(self, task, out, *, checkpoint_every=0, quiet=False, stream=None, progress=None):
        self.task = task
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
        self.saved_step = None   # iteration of the newest checkpoint on disk
        self._stop = False

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
        meta = {"config": self.config, "optimizer": ometa, "task_state": tmeta,
                "rng": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
                "elapsed_s": self.elapsed, "eval_elapsed_s": self.eval_elapsed, "graphrnn": _version()}
        return arrays, meta

    def save(self):
        arrays, meta = self.state()
        checkpoint.save(self.out, self.step, arrays, meta)
        self.saved_step = self.step

    def restore(self, manifest, arrays):
        """Load a checkpoint into the task, refusing one that does not fit the model."""
        task = self.task
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
        for k, a in params.items():
            task.params[k][...] = backend.asarray(a)
        try:
            task.opt.load_state_dict(groups.get("optim", {}), manifest["optimizer"])
            rng = manifest["rng"]
            task.rng.set_state((rng["kind"], groups["rng"]["keys"], rng["pos"], rng["has_gauss"],
                                rng["gauss"]))
            task.load_extra_state(groups.get("task", {}), manifest["task_state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint in {self.out!r} is incomplete or damaged ({exc})") from None
        losses = groups.get("trainer", {}).get("losses")
        self.step = int(manifest["step"])
        if losses is None or len(losses) != self.step:
            raise CheckpointError(f"checkpoint in {self.out!r}: loss history does not match step {self.step}")
        self.losses = [float(x) for x in losses]
        self.elapsed = float(manifest.get("elapsed_s", 0.0))
        self.eval_elapsed = float(manifest.get("eval_elapsed_s", 0.0))
        self.saved_step = self.step

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
        return os.path.join(self.out, "metrics.jsonl")

    def _trim_log(self):
        """Keep only the log lines of iterations a resumed run will not redo."""
        path = self._metrics_path()
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            keep = [ln for ln in f if ln.strip() and json.loads(ln).get("iteration", -1) < self.step]
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(keep)

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
        os.makedirs(self.out, exist_ok=True)
        self._trim_log()
        if self.saved_step is None:
            self.save()  # there is always a last good checkpoint to fall back to
        task, cfg = self.task, self.config
        total, log_every, every = cfg["iterations"], cfg["log_every"], self.checkpoint_every
        losses = self.losses
        step_fn = task.step
        isfinite = math.isfinite
        # Tasks that train by epochs (ptb) evaluate and checkpoint after each one.
        epoch_length = getattr(task, "epoch_length", None) or 0
        progress_text = getattr(task, "progress", None)
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=self.step, desc=task.name, unit="it",
                       file=sys.stderr, dynamic_ncols=True, leave=False)
        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ctrl-C is not ours to catch
            old_handler = None
        log = open(self._metrics_path(), "a", encoding="utf-8")
        t0 = time.perf_counter()
        pending = 0
        try:
            i = self.step
            while i < total:
                if self._stop:
                    break
                loss = step_fn(i)
                if not isfinite(loss):
                    self.elapsed += time.perf_counter() - t0
                    raise TrainingError(
                        f"the loss became {loss} at iteration {i}; training stopped. The last good "
                        f"checkpoint (iteration {self.saved_step}) is kept in {self.out}; try a smaller "
                        f"--lr and --resume from it, or start again")
                losses.append(loss)
                if i % log_every == 0:
                    rec, lines = task.log(i, loss)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    for line in lines:
                        self._say(line)
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
            self.elapsed += time.perf_counter() - t0
            t0 = None
        except KeyboardInterrupt:
            if t0 is not None:
                self.elapsed += time.perf_counter() - t0
            print(f"graphrnn train: interrupted during iteration {self.step}; the last checkpoint "
                  f"(iteration {self.saved_step}) is kept in {self.out}", file=sys.stderr)
            return 130
        finally:
            log.close()
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        self.save()
        if self._stop and self.step < total:
            print(f"graphrnn train: interrupted; checkpoint saved at iteration {self.step} in "
                  f"{self.out}. Continue with: graphrnn train --resume {self.out}", file=sys.stderr)
            return 130
        self.finish()
        return 0

    def _end_epoch(self, i, epoch_length, log):
        """The task's evaluation after the epoch that iteration i-1 ended, logged
        (as of that iteration, so a resume trims it with the epoch) and checkpointed."""
        t = time.perf_counter()
        rec, lines = self.task.end_epoch(i // epoch_length)
        self.eval_elapsed += time.perf_counter() - t
        log.write(json.dumps({"iteration": i - 1, **rec}) + "\n")
        log.flush()
        for line in lines:
            self._say(line)
        self.save()

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
        with open(os.path.join(self.out, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        plot = self.plot()
        heads = ", ".join(f"{k} {_fmt(metrics.get(k))}" for k in task.headline)
        print(f"{task.name}: {n} iterations in {self.elapsed:.1f} s; {heads}", file=self.stream)
        print(f"run folder: {self.out} (metrics.json, metrics.jsonl, {os.path.basename(plot)}, "
              f"checkpoint)", file=self.stream)
        self.result = result
        return result

    def plot(self):
        if hasattr(self.task, "plot"):
            return self.task.plot(self.losses, os.path.join(self.out, "perplexity.png"))
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        y = np.asarray(self.losses)
        x = np.arange(len(y))
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(x, y, lw=0.5, alpha=0.35, label="loss per iteration")
        w = max(1, len(y) // 100)
        if w > 1:
            smooth = np.convolve(y, np.ones(w) / w, mode="valid")
            ax.plot(x[w - 1:], smooth, lw=1.5, label=f"mean of {w}")
        if len(y) and y.min() > 0 and y.max() / y.min() > 100:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.task.name} ({self.config['cell']}, lr {self.config['lr']})")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(self.out, "loss.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _version():
    from . import __version__
    return __version__


# ------------------------------------------------------------------------ building

def build(task_name, overrides, *, out=None, checkpoint_every=0, quiet=False, stream=None,
          progress=None):
    """A fresh Trainer for ``task_name`` with ``overrides`` on its defaults."""
    tasks = _tasks()
    cls = tasks.get(task_name)
    config = cls.resolve_config(overrides)
    if out is None:
        out = os.path.join("runs", f"{task_name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if os.path.exists(os.path.join(out, checkpoint.MANIFEST)):
        raise CheckpointError(f"{out} already holds a run; continue it with --resume {out} "
                              "or pick another --out")
    return Trainer(cls(config), out, checkpoint_every=checkpoint_every, quiet=quiet,
                   stream=stream, progress=progress)


def resume(folder, overrides=None, *, task_name=None, checkpoint_every=0, quiet=False,
           stream=None, progress=None, sampling=False):
    """A Trainer that continues the run in ``folder`` from its checkpoint
    (with ``sampling``, only the model, built without the training data)."""
    tasks = _tasks()
    manifest, arrays = checkpoint.load(folder)
    config = dict(manifest["config"])
    name = config.get("task")
    if task_name is not None and task_name != name:
        raise CheckpointError(f"{folder} is a {name!r} run, not {task_name!r}")
    cls = tasks.get(name)
    for k, v in (overrides or {}).items():
        if v is None or v == config.get(k):
            continue
        if k not in RESUMABLE:
            raise CheckpointError(f"--{k.replace('_', '-')} {v} differs from the run's {config.get(k)}; "
                                  f"a resumed run keeps its settings (only "
                                  f"{' or '.join('--' + r for r in RESUMABLE)} may change)")
        config[k] = v
    config = cls.resolve_config({k: v for k, v in config.items() if k != "task"})
    task = cls.for_sampling(config, manifest.get("task_state") or {}) if sampling else cls(config)
    trainer = Trainer(task, folder, checkpoint_every=checkpoint_every, quiet=quiet,
                      stream=stream, progress=progress)
    trainer.restore(manifest, arrays)
    if not sampling and trainer.step > config["iterations"]:
        raise CheckpointError(f"{folder} is already at iteration {trainer.step}, past the "
                              f"{config['iterations']} asked for; ask for more, or leave it as it is")
    return trainer


def load_task(folder, task_name=None):
    """The task of a saved run with its trained parameters (for sampling)."""
    trainer = resume(folder, task_name=task_name, quiet=True, sampling=True)
    return trainer.task


# ----------------------------------------------------------------------------- CLI

def add_train_arguments(p):
    from . import tasks
    p.add_argument("task", nargs="?", metavar="TASK",
                   help=f"one of {', '.join(tasks.TASKS)} (may be left out with --resume)")
    p.add_argument("--preset", default=None, help="ptb: ch6 (the book's chapter 6), better "
                   "(BetterRnnlm) or cpu (about an hour on 2 cores); default ch6")
    p.add_argument("--epochs", type=int, default=None, metavar="E", help="ptb: passes over the training data")
    p.add_argument("--iterations", type=int, default=None, metavar="K",
                   help="the other tasks: iterations to train (default: the task's, see docs/tasks.md)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--cell", default=None, help="a built-in cell name or module:function")
    p.add_argument("--hidden", type=int, default=None, metavar="H", help="hidden units")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--optimizer", default=None, help="sgd (the originals') or adam")
    p.add_argument("--log-every", type=int, default=None, metavar="K")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dinosaurs: a names file, one per line; ptb: the folder of ptb.{train,valid,test}.txt "
                        "(default: $GRAPHRNN_DATA, then a per-user cache it is downloaded into)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of the task, e.g. --set dropout=0.3 (repeatable)")
    p.add_argument("--backend", default=None, choices=("numpy", "cupy"),
                   help="array backend (default numpy, or $GRAPHRNN_BACKEND)")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/TASK-DATE)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="also checkpoint every K iterations (always: at the start, the end and on Ctrl-C; "
                        "ptb: after every epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")


def _parse_set(items):
    """``--set key=value`` pairs; values read as JSON (numbers, true, null), else as text."""
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            from .cli import UsageError
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _overrides(args):
    keys = ("iterations", "seed", "cell", "hidden", "lr", "optimizer", "log_every", "data", "preset", "epochs")
    out = {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}
    out.update(_parse_set(getattr(args, "set", None) or []))
    return out


def _usage_errors():
    from .data import DataError
    from .optim import OptimError
    from .primitives import GraphError
    from .tasks import TaskError
    return (TaskError, CheckpointError, DataError, OptimError, GraphError, TrainingError,
            backend.BackendError)


def train_main(args):
    from .cli import UsageError
    try:
        if args.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
        overrides = _overrides(args)
        if args.backend:
            backend.set_backend(args.backend)
        if args.resume:
            if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
                raise UsageError("--resume continues in its own folder; leave out --out")
            trainer = resume(args.resume, overrides, task_name=args.task,
                             checkpoint_every=args.checkpoint_every, quiet=args.quiet)
        else:
            if not args.task:
                raise UsageError("name a task (or --resume DIR)")
            if "data" in overrides and args.task not in ("dinosaurs", "ptb"):
                raise UsageError("--data applies to the dinosaurs and ptb tasks only")
            trainer = build(args.task, overrides, out=args.out,
                            checkpoint_every=args.checkpoint_every, quiet=args.quiet)
        return trainer.run()
    except _usage_errors() as exc:
        raise UsageError(str(exc)) from None


def add_sample_arguments(p):
    p.add_argument("task", metavar="TASK", help="the task of the run (dinosaurs, ptb)")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run folder from graphrnn train")
    p.add_argument("-n", type=int, default=None,
                   help="how many: dinosaur names (default 7) or ptb words (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None, help="ptb: sharpen (<1) or flatten (>1)")
    p.add_argument("--start", default=None, metavar="WORDS", help="ptb: the words to continue")


def sample_main(args):
    from .cli import UsageError
    n = args.n if args.n is not None else (100 if args.task == "ptb" else 7)
    if n < 0:
        raise UsageError(f"-n must be >= 0, got {n}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    extra = {k: getattr(args, k) for k in ("temperature", "start") if getattr(args, k, None) is not None}
    if extra and args.task != "ptb":
        raise UsageError(f"--{next(iter(extra))} applies to the ptb task only")
    try:
        _tasks().get(args.task)
        task = load_task(args.checkpoint, args.task)
        for text in task.sample(n, args.seed, **extra):
            print(text)
    except _usage_errors() as exc:
        raise UsageError(str(exc)) from None
    return 0
