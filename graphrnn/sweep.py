"""``graphrnn sweep``: a grid of training runs on Ray Tune, then their report.

    graphrnn sweep ptb --cell lstm,gru,mgu --lr 5,10,20 --seed 0,1 --preset ch6

Every grid point (cell × learning rate × seed) is an ordinary ``graphrnn
train`` run in its own folder under ``--out`` (``lstm-lr20-s0``), with its
``metrics.jsonl``, ``metrics.json`` and checkpoints, so ``graphrnn train
--resume``, ``graphrnn sample`` and ``graphrnn report`` work on it as on any
run. A Ray Tune trial is one such run: ``run_point`` builds or resumes the
run with ``graphrnn.train`` and trains it to the end.

Why the folders, not Ray's checkpoints, are the record: a run already writes
an exact, atomic checkpoint (every epoch, or every ``--checkpoint-every``
iterations), so a trial that dies (killed worker, out of memory, a node
lost) is simply started again by Tune and resumes from the folder; a sweep
started again with the same ``--out`` skips the runs that finished and
resumes the others. Neither Ray's experiment state nor its checkpoint copies
are needed for that, and nothing a run computed before its last checkpoint
is ever recomputed.

A loss that becomes NaN is retried once from the last checkpoint too (a
fault of the machine would not repeat); since a resumed run is bit-exact,
the same NaN at the same iteration means the settings diverge, and the run
is recorded as diverged (``diverged.json``) instead of being retried again.

Ray is optional (``pip install 'graphrnn[sweep]'``); ``--sequential`` runs
the same grid one run after another in this process, without it.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import sys
import threading
import time

from . import files, runfolder
from .errors import (AnomalyError, CheckpointError, DataError, GraphError, OptimError, SweepError,  # noqa: F401
                     TaskError, UsageError)  # (SweepError: imported from here too)

INSTALL = ("graphrnn sweep runs on Ray, which is not installed: pip install 'graphrnn[sweep]' "
           "(or add --sequential to run the grid one run after another without it)")

# The run folder's files (graphrnn/runfolder.py): attempts.jsonl gets one line when an
# attempt starts and one when it ends (a killed one never does); sweep.json holds the
# sweep's settings, so a restart into the same --out cannot mix two sweeps.
ATTEMPTS, DIVERGED, SWEEP, STOP = runfolder.ATTEMPTS, runfolder.DIVERGED, runfolder.SWEEP, runfolder.STOP
state_of, read_jsonl, _append_jsonl = runfolder.state_of, runfolder.read_jsonl, runfolder.append_jsonl
# Settings a sweep passes on its own; recorded per run, so not part of the sweep's identity.
GRID = ("cell", "lr", "seed")
# What the progress line shows for a task without epochs, first one present in its log record.
FIGURES = ("valid_perplexity", "train_perplexity", "error", "smoothed_loss", "loss")




# ----------------------------------------------------------------------------- the grid

def parse_list(text, kind, flag):
    """``"5,10,20"`` -> [5.0, 10.0, 20.0], order kept; an empty item
    (``0.1,,0.5``) or a value given twice is refused: either is a typo, and
    silently running a smaller grid than the one typed hides it."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            raise SweepError(f"{flag} {text}: an empty item (two commas, or one at an end)")
        try:
            v = kind(item)
        except ValueError:
            raise SweepError(f"{flag} expects a comma-separated list of {kind.__name__}s, got {item!r}") from None
        if v in out:
            raise SweepError(f"{flag} {text}: {item} is given twice")
        out.append(v)
    return out


def run_name(cell, lr, seed):
    """The run's folder name: ``gru-lr10-s0`` (a user cell ``pkg.mod:f`` becomes ``pkg.mod.f``)."""
    return f"{cell.replace(':', '.').replace(os.sep, '.')}-lr{lr:g}-s{seed}"


def make_grid(task_name, cells, lrs, seeds, base):
    """[(name, overrides)] for every cell × lr × seed, each checked by the task
    (a bad setting is reported before anything starts)."""
    from . import tasks
    cls = tasks.get(task_name)
    points = []
    for cell in cells:
        for lr in lrs:
            for seed in seeds:
                overrides = {**base, "cell": cell, "lr": lr, "seed": seed}
                cls.resolve_config(overrides)   # a TaskError here names the bad setting before any run
                points.append((run_name(cell, lr, seed), overrides))
    return points


# ----------------------------------------------------------------------------- one run

def run_point(spec, report):
    """Train the run ``spec`` describes to its end, resuming from its folder's
    checkpoint when there is one; ``report(dict)`` receives its progress.

    Runs inside a Ray worker (``report`` is ``ray.tune.report``) or in this
    process (``--sequential``). Raises to ask for a retry; returns the last
    record otherwise (finished, diverged or stopped).
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    for p in spec.get("path", ()):
        if p not in sys.path:  # the folder of a user's cell module, for workers started elsewhere
            sys.path.insert(0, p)
    if spec.get("backend"):
        from . import backend
        backend.set_backend(spec["backend"])
    folder = spec["folder"]
    os.makedirs(folder, exist_ok=True)
    # Each run gets the threads its CPUs pay for: BLAS pools sized to the whole
    # machine would make concurrent runs fight over the same cores.
    from .anomaly import detect_anomaly
    with threadpool_limits(limits=spec["threads"]), detect_anomaly(spec.get("detect_anomaly", False)):
        threads = max((p["num_threads"] for p in threadpool_info()), default=1)
        return _attempt(spec, folder, threads, report)


def _attempt(spec, folder, threads, report):
    from . import train
    from .train import TrainingError

    log = os.path.join(folder, ATTEMPTS)
    attempt = 1 + sum(1 for r in read_jsonl(log) if r.get("event") == "start")
    t0 = time.time()
    state = state_of(folder)
    if state in ("finished", "diverged"):   # a retry of a trial that ended just before its worker died
        return {"event": state, "attempt": attempt}
    overrides = {k: v for k, v in spec["overrides"].items() if k != "data"}
    kw = dict(quiet=True, checkpoint_every=spec.get("checkpoint_every", 0), stream=_Null())
    try:
        if state == "partial":
            trainer = train.resume(folder, overrides, **kw)
        else:
            trainer = train.build(spec["task"], spec["overrides"], out=folder, **kw)
    except (GraphError, CheckpointError, DataError, TaskError, OptimError, UsageError) as exc:
        # the run's settings, data or checkpoint: a retry would meet the same
        rec = {"event": "failed", "attempt": attempt, "message": str(exc)}
        _append_jsonl(log, {**rec, "time": t0})
        report(rec)
        return rec
    start = trainer.step
    total = trainer.config["iterations"]
    epoch_length = getattr(trainer.task, "epoch_length", None) or 0
    info = {"attempt": attempt, "pid": os.getpid(), "host": socket.gethostname(), "threads": threads,
            "start_step": start, "total": total, "epoch_length": epoch_length,
            "setup_s": round(time.time() - t0, 3)}
    _append_jsonl(log, {"event": "start", "time": t0, **info})
    report({"event": "start", **info})
    _observe(trainer, report, attempt, total, t0)
    watcher = _StopWatcher(spec.get("stop_file"), trainer)
    end = {"attempt": attempt, "pid": os.getpid()}
    try:
        rc = trainer.run()
    except TrainingError as exc:
        return _diverged_or_retry(trainer, exc, log, end, t0, report)
    except AnomalyError as exc:   # --detect-anomaly named a node: a retry would name it again
        rec = {"event": "failed", "attempt": attempt, "message": str(exc)}
        _append_jsonl(log, {**rec, "time": t0})
        report(rec)
        return rec
    finally:
        watcher.close()
    wall = round(time.time() - t0, 3)
    if rc != 0:
        rec = {"event": "stopped", "step": trainer.step, "checkpoint_step": trainer.saved_step, **end}
        _append_jsonl(log, {**rec, "wall_s": wall})
        report(rec)
        return rec
    result = trainer.result
    heads = {k: result.get(k) for k in trainer.task.headline}
    rec = {"event": "finished", "step": trainer.step, "train_s": result["train_s"],
           "seconds_per_epoch": result.get("seconds_per_epoch"), "headline": heads, **end}
    _append_jsonl(log, {**rec, "wall_s": wall, "end_time": time.time()})
    report(rec)
    return rec


def _diverged_or_retry(trainer, exc, log, end, t0, report):
    """A loss or figure that stopped being finite: raised again (Tune or the
    sequential driver retries once, from the last checkpoint: a fault would not
    come back), or, the second time at the same iteration, recorded as diverged
    (a resumed run is bit-exact, so the same NaN there is the settings' doing)."""
    at = trainer.step
    before = [r for r in read_jsonl(log) if r.get("event") == "nan"]
    rec = {"event": "nan", "step": at, "checkpoint_step": trainer.saved_step, "message": str(exc), **end}
    _append_jsonl(log, {**rec, "wall_s": round(time.time() - t0, 3)})
    if not any(r["step"] == at for r in before):
        raise exc
    files.atomic_write(os.path.join(trainer.out, DIVERGED), runfolder.strict_json(
        {"task": trainer.task.name, "iteration": at, "checkpoint_step": trainer.saved_step,
         "message": str(exc), "config": trainer.config}, indent=1))
    rec = {**rec, "event": "diverged"}
    report(rec)
    return rec


def _observe(trainer, report, attempt, total, t0):
    """Report each epoch's evaluation (tasks with epochs) or each log record
    (the others), with the seconds since the attempt began at ``t0``, by
    wrapping the task's own ``end_epoch`` and ``log``."""
    task = trainer.task
    epoch_length = getattr(task, "epoch_length", None)
    if epoch_length:
        end_epoch = task.end_epoch

        def reported_end_epoch(epoch):
            rec, lines = end_epoch(epoch)
            report({"event": "epoch", "attempt": attempt, "t": time.time() - t0, "step": epoch * epoch_length,
                    "total": total,
                    "epoch": epoch, "epochs": total // epoch_length, **_figure(rec)})
            return rec, lines
        task.end_epoch = reported_end_epoch
    else:
        log = task.log

        def reported_log(i, loss):
            rec, lines = log(i, loss)
            report({"event": "progress", "attempt": attempt, "t": time.time() - t0, "step": i + 1, "total": total,
                    **_figure(rec)})
            return rec, lines
        task.log = reported_log


def _figure(rec):
    for k in FIGURES:
        v = rec.get(k)
        if isinstance(v, (int, float)):
            return {"figure": k, "value": float(v)}
    return {}


class _StopWatcher:
    """Asks the trainer to checkpoint and stop when the driver creates the stop
    file (its Ctrl-C), so an interrupted sweep loses no computed iteration."""

    def __init__(self, path, trainer):
        self._done = threading.Event()
        self._thread = None
        if path:
            self._thread = threading.Thread(target=self._watch, args=(path, trainer), daemon=True)
            self._thread.start()

    def _watch(self, path, trainer):
        while not self._done.wait(0.5):
            if os.path.exists(path):
                trainer.stop()
                return

    def close(self):
        self._done.set()


class _Null:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def _ray_trial(config):
    """The Tune trainable: one grid point, reported through ``ray.tune.report``."""
    from ray import tune
    run_point(config["spec"], tune.report)


# ----------------------------------------------------------------------------- progress

class Progress:
    """One line per event of a run: ``[ 3/18] gru-lr10-s0  epoch 2/4  valid_perplexity 171.23``."""

    def __init__(self, names, stream=None):
        self.index = {n: i for i, n in enumerate(names, 1)}
        self.width = max(len(n) for n in names)
        self.stream = sys.stdout if stream is None else stream
        self.last_step = {}     # name -> the furthest iteration reported (to tell what a retry lost)
        self.retries = {}

    # Tune pickles its callbacks (with this) to restore an experiment; the sweep
    # never restores one (the run folders are its record), so the stream stays here.
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state):
        self.__dict__.update(state, stream=sys.stdout)

    def say(self, name, text):
        k = self.index[name]
        n = len(self.index)
        print(f"[{k:>{len(str(n))}}/{n}] {name:<{self.width}}  {text}", file=self.stream, flush=True)

    def record(self, name, rec):
        ev = rec.get("event")
        if "step" in rec and ev in ("progress", "epoch"):
            self.last_step[name] = max(self.last_step.get(name, 0), rec["step"])
        fig = f"{rec['figure']} {rec['value']:.4g}" if "figure" in rec else ""
        if ev == "start":
            if rec["start_step"] == 0 and rec["attempt"] == 1:
                self.say(name, f"started   {rec['total']} iterations, {rec['threads']} BLAS thread(s), "
                               f"pid {rec['pid']} on {rec['host']}")
            else:
                seen = self.last_step.get(name)
                lost = "" if seen is None else f"; last reported iteration {seen}"
                self.say(name, f"resumed   from its checkpoint at iteration {rec['start_step']}/{rec['total']} "
                               f"(attempt {rec['attempt']}{lost})")
        elif ev == "epoch":
            self.say(name, f"running   epoch {rec['epoch']}/{rec['epochs']}  {fig}  ({rec['t']:.0f} s)")
        elif ev == "progress":
            self.say(name, f"running   iteration {rec['step']}/{rec['total']}  {fig}  ({rec['t']:.0f} s)")
        elif ev == "finished":
            heads = "  ".join(f"{k} {_fmt(v)}" for k, v in rec["headline"].items())
            spe = rec.get("seconds_per_epoch")
            self.say(name, f"finished  {heads}  ({rec['train_s']:.0f} s training"
                           f"{'' if spe is None else f', {spe:.1f} s/epoch'})")
        elif ev == "diverged":
            self.say(name, f"diverged  the loss or a figure became NaN or inf at iteration {rec['step']} twice, "
                           f"the second time "
                           f"resumed from iteration {rec['checkpoint_step']}; not retried again")
        elif ev == "stopped":
            self.say(name, f"stopped   checkpoint at iteration {rec['checkpoint_step']}")
        elif ev == "failed":
            self.say(name, f"failed    {rec['message']}; not retried (its settings, data or checkpoint)")

    def retry(self, name, why, k, limit):
        self.retries[name] = k
        self.say(name, f"retrying  {why}; retry {k} of {limit}, from its last checkpoint")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _error_line(trial):
    """What a Tune trial's error file says, in one line: the last exception raised."""
    try:
        with open(trial.error_file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, TypeError):
        return "the run failed"
    if "ActorDiedError" in text or "worker process has died" in text:
        return "its worker process died (killed, out of memory, or crashed)"
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b:?.*)$", text, re.M)
    return found[-1][:200] if found else "the run failed"


def _callback(progress, retries):
    from ray import tune

    class Lines(tune.Callback):
        """Turns Tune's trial events into the sweep's one-line-per-run progress."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.record(trial.config["spec"]["name"], result)

        def on_trial_recover(self, iteration, trials, trial, **info):
            name = trial.config["spec"]["name"]
            progress.retry(name, _error_line(trial), progress.retries.get(name, 0) + 1, retries)

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["spec"]["name"]
            progress.say(name, f"failed    after {retries} retries: {_error_line(trial)}; its last "
                               f"checkpoint is kept (run the sweep again to resume it)")

    return Lines()


# ----------------------------------------------------------------------------- drivers

def local_cpus():
    """The cores this process may use (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sequential(specs, progress, retries):
    """The grid one run after another in this process (no Ray). Returns 0, or
    130 when Ctrl-C stopped a run (it saved a checkpoint first)."""
    for spec in specs:
        name = spec["name"]
        for k in range(retries + 1):
            try:
                rec = run_point(spec, lambda r, n=name: progress.record(n, r))
                break
            except KeyboardInterrupt:
                return 130
            except Exception as exc:  # noqa: BLE001  (any failure of a run is retried, as under Ray)
                if k == retries:
                    progress.say(name, f"failed    after {retries} retries: {type(exc).__name__}: {exc}")
                    rec = None
                else:
                    progress.retry(name, f"{type(exc).__name__}: {str(exc)[:160]}", k + 1, retries)
        if rec and rec.get("event") == "stopped":
            return 130
    return 0


def _quiet_ray_environment():
    """Environment for Ray before it starts: no usage-stats prompt, Tune's old
    quiet reporter (verbose=0 silences it), our own Ctrl-C handling."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def start_ray(address, cpus, dashboard):
    """Join the cluster at ``address``, or start Ray here with ``cpus`` CPUs.
    Returns (started_here, a description of the cluster)."""
    import logging

    import ray
    _quiet_ray_environment()
    if ray.is_initialized():   # a caller (a test, a notebook) already holds a Ray
        started = False
    elif address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                 include_dashboard=dashboard or None)
        started = True
    else:
        ray.init(num_cpus=cpus, include_dashboard=dashboard, logging_level=logging.ERROR,
                 log_to_driver=False)
        started = True
    res = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    where = f"Ray cluster at {address}" if address else "Ray on this machine"
    desc = f"{where}: {nodes} node(s), {res.get('CPU', 0):g} CPUs" + (f", {res['GPU']:g} GPUs" if res.get("GPU") else "")
    return started, desc, res


def run_ray(specs, progress, *, out, cpus_per_run, gpus_per_run, retries):
    """The grid as Ray Tune trials, as many at once as the cluster's CPUs (and
    GPUs) allow. Returns 0, 130 after Ctrl-C."""
    import signal

    from ray import tune

    stop_file = os.path.join(out, STOP)
    terminal = sys.stderr   # saved before Ray's output is diverted to a file
    for s in specs:
        s["stop_file"] = stop_file
    stopping = []

    def on_sigint(signum, frame):
        if stopping:
            raise KeyboardInterrupt
        stopping.append(True)
        open(stop_file, "w").close()
        print("graphrnn sweep: stopping; each running run saves a checkpoint at its next iteration "
              "(Ctrl-C again to stop at once; run the same command again to continue)",
              file=terminal, flush=True)

    resources = {"cpu": cpus_per_run, **({"gpu": gpus_per_run} if gpus_per_run else {})}
    name = f"tune-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    tuner = tune.Tuner(
        tune.with_resources(_ray_trial, resources),
        param_space={"spec": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(
            # One worker process serves run after run: no start-up per run.
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["spec"]["name"],
            trial_dirname_creator=lambda t: t.config["spec"]["name"]),
        run_config=tune.RunConfig(
            name=name, storage_path=os.path.join(os.path.abspath(out), ".tune"), verbose=0,
            callbacks=[_callback(progress, retries)],
            failure_config=tune.FailureConfig(max_failures=retries)))
    try:
        old = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:   # not the main thread (a sweep started from a thread): Ctrl-C is not ours
        old = None
    try:
        with _ray_output_to(os.path.join(out, ".tune", "ray.log")):
            tuner.fit()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return 130 if stopping else 0


@contextlib.contextmanager
def _ray_output_to(path):
    """Send what Ray and Tune print (worker-death notices, tracebacks, warnings)
    to ``path`` while the sweep runs: the terminal shows the progress lines,
    which say the same in one line each."""
    import logging
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a", encoding="utf-8")
    handler = logging.StreamHandler(f)
    logger = logging.getLogger("ray")
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            yield
    finally:
        logger.handlers[:], logger.propagate = saved
        f.close()


# ----------------------------------------------------------------------------- the command

def add_sweep_arguments(p):
    from . import tasks
    p.add_argument("task", metavar="TASK", help=f"one of {', '.join(tasks.TASKS)}")
    p.add_argument("--cell", default=None, metavar="CELLS",
                   help="comma-separated cells: built-in names or module:function (default: the task's)")
    p.add_argument("--lr", default=None, metavar="RATES", help="comma-separated learning rates "
                   "(default: the task's or preset's)")
    p.add_argument("--seed", default="0", metavar="SEEDS", help="comma-separated seeds (default 0)")
    p.add_argument("--preset", default=None, help="ptb: ch6, better or cpu (default ch6)")
    p.add_argument("--data", default=None, metavar="PATH", help="as for graphrnn train (ptb, dinosaurs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of every run, e.g. --set epochs=1 (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the sweep's folder, one run folder per grid point (default runs/sweep-TASK[-PRESET]); "
                        "the same --out again skips finished runs and resumes the others")
    p.add_argument("--address", default=None, help="join the Ray cluster at ADDRESS (e.g. auto or "
                   "HOST:6379) instead of starting Ray here; --out must then be a folder every node shares")
    p.add_argument("--cpus-per-run", type=int, default=None, metavar="K",
                   help="CPUs, and BLAS threads, per run (default 1; with --sequential, all of this machine's)")
    p.add_argument("--gpus-per-run", type=float, default=0, metavar="G",
                   help="GPUs per run (a fraction shares a GPU); G > 0 trains on cupy")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="checkpoint every K iterations, the most a lost worker costs (default: every epoch "
                        "for ptb, every log interval for the other tasks)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="times a failed run is started again from its checkpoint (default 3)")
    p.add_argument("--backend", default=None, choices=("numpy", "cupy"), help="array backend of the runs")
    p.add_argument("--sequential", action="store_true",
                   help="run the grid one run after another in this process, without Ray")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (off by default)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="each run stops at the first node whose value or gradient is NaN or inf, naming it")


def _base_settings(args):
    from .train import _parse_set
    base = _parse_set(args.set)
    for k in GRID:
        if k in base:
            raise SweepError(f"--set {k}=... is the grid's: use --{k} with a comma-separated list")
    if args.preset is not None:
        base["preset"] = args.preset
    if args.data is not None:
        base["data"] = args.data
    return base


def _resolve_data(task_name, base):
    """Find (for ptb: download once, here) the data every run will read, as an
    absolute path, so workers neither race to download nor depend on a cwd."""
    if task_name == "ptb":
        from .data import ptb as ptbdata
        base["data"] = os.path.abspath(ptbdata.find(base.get("data"), progress=True))
    elif base.get("data") is not None:
        base["data"] = os.path.abspath(base["data"])


def _user_cell_paths(cells):
    """Check every cell of the grid before any run starts, and return the
    folders that hold the modules of user cells (``module:function``), for
    workers whose working directory is not ours.

    A user's module is looked for as ``graphrnn train`` looks for it (the
    current folder first) and imported here, so a typo in its name or its
    function is one line now, not one failure per run on Ray."""
    import importlib

    from . import cells as builtin
    here = os.getcwd()
    paths = [here]
    for cell in cells:
        if ":" not in cell:
            try:
                builtin.get(cell)
            except GraphError as exc:
                raise SweepError(f"--cell: {exc}") from None
            continue
        module, _, function = cell.partition(":")
        if not module or not function:
            raise SweepError(f"--cell {cell!r}: expected MODULE:FUNCTION, e.g. mycells:peephole")
        if here not in sys.path:
            sys.path.insert(0, here)
        try:
            found = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001  (the user's module: any error it raises is theirs)
            raise SweepError(f"cannot import module {module!r} for cell {cell!r}: "
                             f"{type(exc).__name__}: {exc}") from None
        if not callable(getattr(found, function, None)):
            raise SweepError(f"module {module!r} has no function {function!r} (cell {cell!r})")
        top = os.path.dirname(os.path.abspath(found.__file__ or here))
        depth = module.count(".") + (os.path.basename(found.__file__ or "") == "__init__.py")
        for _ in range(depth):   # a package's module, or a package: the folder above the top package
            top = os.path.dirname(top)
        if top not in paths:
            paths.append(top)
    return paths


def _check_same_sweep(out, identity):
    path = os.path.join(out, SWEEP)
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepError(f"{path}: not readable as a sweep's settings ({exc}); use another --out, "
                         "or delete the file to continue the runs in this folder") from None
    if not isinstance(old, dict):
        raise SweepError(f"{path}: not a sweep's settings file (expected a JSON object); use another "
                         "--out, or delete the file to continue the runs in this folder")
    if old.get("identity") != identity:
        raise SweepError(f"{out} holds a sweep with other settings ({json.dumps(old.get('identity'))}, "
                         f"now {json.dumps(identity)}); use another --out, or the same settings to continue it")


def _write_sweep_json(out, identity, extra):
    files.atomic_write(os.path.join(out, SWEEP), json.dumps({"identity": identity, **extra}, indent=1) + "\n")


def sweep_main(args, stream=None):
    """``graphrnn sweep``; its errors (``GraphrnnError``) become one line in ``cli.main``."""
    return _sweep(sys.stdout if stream is None else stream, args)


class _Grid:
    """What a sweep decided before running anything: its points (name,
    overrides), their lists, the folder and what identifies the sweep in it."""

    def __init__(self, cls, base, defaults, cells, lrs, seeds, points, paths):
        self.cls, self.base, self.defaults = cls, base, defaults
        self.cells, self.lrs, self.seeds, self.points, self.paths = cells, lrs, seeds, points, paths
        self.names = [n for n, _ in points]
        self.out = self.identity = None

    def describe(self):
        return (f"cell {','.join(self.cells)} × lr {','.join(f'{x:g}' for x in self.lrs)} × "
                f"seed {','.join(map(str, self.seeds))}")


def _sweep(stream, args):
    """The phases of a sweep: check the options and the whole grid (nothing
    started yet), guard the folder, say what is left to run, run it (here or
    on Ray), record how, and report."""
    cls = _check_options(args)
    grid = _plan_grid(cls, args)
    _open_sweep_folder(grid, args)
    per_run, every, backend = _run_resources(cls, grid, args)
    specs = [{"name": name, "task": args.task, "overrides": ov, "folder": os.path.join(grid.out, name),
              "threads": per_run, "checkpoint_every": every, "backend": backend, "path": grid.paths,
              "detect_anomaly": bool(getattr(args, "detect_anomaly", False))}
             for name, ov in grid.points]
    progress = Progress(grid.names, stream=stream)
    pending = _announce(grid, specs, progress, stream, args)
    t0 = time.time()
    rc, how = _drive(pending, progress, per_run, grid, stream, args)
    wall = time.time() - t0
    _write_sweep_json(grid.out, grid.identity, {
        "runs": grid.names, "cpus_per_run": per_run, "checkpoint_every": every,
        "last_start": {**how, "wall_s": round(wall, 1), "runs_started": len(pending)}})
    return _finish(grid.out, grid.points, rc, wall, pending, stream, args)


def _check_options(args):
    """The task and the options that need no grid; Ray importable unless --sequential."""
    from . import tasks

    if not args.sequential:
        try:
            import ray  # noqa: F401
            from ray import tune  # noqa: F401
        except ImportError:
            raise UsageError(INSTALL) from None
    cls = tasks.get(args.task)
    if args.retries < 0:
        raise SweepError(f"--retries must be >= 0, got {args.retries}")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise SweepError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.gpus_per_run < 0:
        raise SweepError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run}")
    if args.sequential and args.address:
        raise SweepError("--sequential runs here, without Ray: leave out --address")
    return cls


def _plan_grid(cls, args):
    """Every grid point checked (its cell importable, its settings the task's)
    and the data every run reads found, before any run or Ray starts."""
    base = _base_settings(args)
    defaults = cls.resolve_config({k: v for k, v in base.items() if k != "data"})
    cells = parse_list(args.cell if args.cell is not None else defaults["cell"], str, "--cell")
    lrs = parse_list(args.lr if args.lr is not None else defaults["lr"], float, "--lr")
    seeds = parse_list(args.seed, int, "--seed")
    paths = _user_cell_paths(cells)
    points = make_grid(args.task, cells, lrs, seeds, base)
    _resolve_data(args.task, base)
    for _, ov in points:
        if "data" in base:
            ov["data"] = base["data"]
    return _Grid(cls, base, defaults, cells, lrs, seeds, points, paths)


def _open_sweep_folder(grid, args):
    """The sweep's folder, refused when it holds another sweep; its settings
    written before any run starts, so a sweep killed part-way still guards it."""
    out = args.out or os.path.join("runs", f"sweep-{args.task}" + (f"-{args.preset}" if args.preset else ""))
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SweepError(f"cannot use {out} as the sweep's folder: it is a file")
    identity = {"task": args.task, **{k: v for k, v in grid.base.items() if k != "data"}}
    _check_same_sweep(out, identity)
    files.make_folder(out, "sweep's folder")
    if not os.path.exists(os.path.join(out, SWEEP)):
        _write_sweep_json(out, identity, {"runs": grid.names})
    try:
        os.unlink(os.path.join(out, STOP))   # a stop request of an earlier, interrupted start
    except FileNotFoundError:
        pass
    grid.out, grid.identity = out, identity


def _run_resources(cls, grid, args):
    """(CPUs and BLAS threads per run, checkpoint interval, backend) of every run."""
    cpus = local_cpus()
    per_run = args.cpus_per_run if args.cpus_per_run is not None else (cpus if args.sequential else 1)
    if per_run < 1:
        raise SweepError(f"--cpus-per-run must be >= 1, got {per_run}")
    if not args.address and not args.sequential and per_run > cpus:
        raise SweepError(f"--cpus-per-run {per_run} is more than this machine's {cpus} CPUs")
    every = args.checkpoint_every
    if every is None:   # tasks with epochs checkpoint after each
        every = 0 if "epochs" in cls.defaults else grid.defaults["log_every"]
    return per_run, every, args.backend or ("cupy" if args.gpus_per_run > 0 else None)


def _announce(grid, specs, progress, stream, args):
    """Say what the grid holds and what is left of it; returns the specs to run."""
    todo = {"finished": [], "diverged": [], "partial": [], "new": []}
    for spec in specs:
        todo[state_of(spec["folder"])].append(spec["name"])
    print(f"graphrnn sweep {args.task}: {len(grid.points)} runs ({grid.describe()}) in {grid.out}", file=stream)
    print(f"  {len(todo['finished']) + len(todo['diverged'])} ended before, {len(todo['partial'])} to resume "
          f"from their checkpoints, {len(todo['new'])} new", file=stream, flush=True)
    for name in todo["finished"] + todo["diverged"]:
        progress.say(name, f"skipped   {state_of(os.path.join(grid.out, name))} before")
    left = set(todo["partial"] + todo["new"])
    return [s for s in specs if s["name"] in left]


def _drive(pending, progress, per_run, grid, stream, args):
    """Run what is left, here or on Ray; returns (exit status, how it ran)."""
    if not pending:
        return 0, {"driver": "none: nothing left to run", "runs_at_once": 0}
    if args.sequential:
        print(f"  one run after another in this process, {per_run} BLAS thread(s) each", file=stream, flush=True)
        return run_sequential(pending, progress, args.retries), {"driver": "sequential", "runs_at_once": 1}
    t_ray = time.time()
    started, desc, res = start_ray(args.address, local_cpus(), args.dashboard)
    t_ray = time.time() - t_ray
    try:
        at_once = int(res.get("CPU", 0) // per_run)
        if args.gpus_per_run:
            at_once = min(at_once, int(res.get("GPU", 0) // args.gpus_per_run))
        if at_once < 1:
            raise SweepError(f"{desc}: not enough for one run of {per_run} CPU(s)"
                             + (f" and {args.gpus_per_run:g} GPU(s)" if args.gpus_per_run else ""))
        print(f"  {desc}; {at_once} run(s) at once, {per_run} CPU(s) and BLAS thread(s) each", file=stream,
              flush=True)
        how = {"driver": "ray", "cluster": desc, "runs_at_once": at_once, "ray_start_s": round(t_ray, 2)}
        rc = run_ray(pending, progress, out=grid.out, cpus_per_run=per_run,
                     gpus_per_run=args.gpus_per_run, retries=args.retries)
        return rc, how
    finally:
        if started:
            import ray
            ray.shutdown()


def _last_failure(folder):
    """The message of a run whose last attempt failed on its settings, data or checkpoint."""
    recs = [r for r in read_jsonl(os.path.join(folder, ATTEMPTS)) if r.get("event") in ("start", "failed")]
    return recs[-1].get("message") if recs and recs[-1]["event"] == "failed" else None


def _finish(out, points, rc, wall, pending, stream, args):
    states = {n: state_of(os.path.join(out, n)) for n, _ in points}
    ended = [n for n, s in states.items() if s in ("finished", "diverged")]
    left = [n for n, s in states.items() if s not in ("finished", "diverged")]
    print(f"graphrnn sweep: {len(ended)} of {len(points)} runs ended ({wall:.0f} s for {len(pending)} started)"
          + (f"; unfinished: {', '.join(left)}" if left else ""), file=stream, flush=True)
    if ended and not args.no_report:
        from . import report
        try:
            report.write(out)
            print(f"report: {os.path.join(out, 'report.md')}", file=stream, flush=True)
        except FileNotFoundError as exc:
            print(f"no report: {exc}", file=stream)
    if rc:
        print(f"graphrnn sweep: interrupted; run the same command again to continue", file=sys.stderr)
        return rc
    failed = {n: _last_failure(os.path.join(out, n)) for n in left}
    for n, message in failed.items():
        if message:
            print(f"graphrnn sweep: {n} cannot run: {message}", file=sys.stderr)
    if any(not m for m in failed.values()):
        print(f"graphrnn sweep: {sum(not m for m in failed.values())} run(s) did not finish; run the same "
              "command again to resume them from their checkpoints", file=sys.stderr)
    if left:
        return 1
    return 0
