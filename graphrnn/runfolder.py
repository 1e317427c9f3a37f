"""The run folder: what ``graphrnn train`` and ``graphrnn sweep`` write into
it, and reading it back, in one place.

A run folder::

    checkpoint.json              the newest checkpoint's manifest (graphrnn.checkpoint)
    checkpoint-00001000.json     the manifest of each checkpoint kept (--keep, default 3)
    checkpoint-00001000.npz      its arrays
    metrics.jsonl                one JSON record per logged iteration or epoch
    metrics.json                 the finished run's figures (its presence: the run finished)
    loss.png | perplexity.png    the curve
    attempts.jsonl               (sweep) one line when an attempt starts, one when it ends
    diverged.json                (sweep) the run diverged twice at the same iteration

and a sweep's folder holds ``sweep.json`` (its settings), ``report.md`` and one
run folder per grid point. ``train``, ``sweep`` and ``report`` import the
names and readers from here; this module imports none of them.

Every record is written as strict JSON (``record_line``): a number that is
not finite (a perplexity that overflowed) is written as ``null`` and named
under ``"non_finite"``, never as ``Infinity``, which no JSON reader accepts.
"""
from __future__ import annotations

import json
import math
import os

from . import files, schema
from .errors import DataError

MANIFEST = "checkpoint.json"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
PLOTS = ("loss.png", "perplexity.png")
ATTEMPTS = "attempts.jsonl"
DIVERGED = "diverged.json"
SWEEP = "sweep.json"
STOP = ".stop"          # created by a sweep's driver on Ctrl-C; each run checkpoints and returns
REPORT = "report.md"

# The states of a run, from its files alone.
FINISHED, DIVERGED_STATE, PARTIAL, NEW = "finished", "diverged", "partial", "new"


def state_of(folder):
    """'finished', 'diverged', 'partial' (a checkpoint to resume from) or 'new'."""
    if os.path.exists(os.path.join(folder, METRICS)):
        return FINISHED
    if os.path.exists(os.path.join(folder, DIVERGED)):
        return DIVERGED_STATE
    if os.path.exists(os.path.join(folder, MANIFEST)) or _has_kept_checkpoint(folder):
        return PARTIAL
    return NEW


def _has_kept_checkpoint(folder):
    try:
        return any(n.startswith("checkpoint-") and n.endswith(".json") for n in os.listdir(folder))
    except OSError:
        return False


# ----------------------------------------------------------------------------- records

def non_finite(rec):
    """The keys of ``rec`` whose value is a float that is not finite."""
    return [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]


def record_line(rec):
    """``rec`` as one line of strict JSON: non-finite numbers become null and
    are named, with what they were, under ``non_finite``."""
    bad = non_finite(rec)
    if bad:
        rec = {**{k: (None if k in bad else v) for k, v in rec.items()},
               "non_finite": {k: repr(rec[k]) for k in bad}}
    return json.dumps(rec, allow_nan=False) + "\n"


def strict_json(value, **kw):
    """``value`` as strict JSON text, any non-finite float in it (however deep) as null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False, **kw)


def read_jsonl(path):
    """The records (JSON objects) of a JSON-lines file; a torn last line, or
    any line that is not an object, left out; a missing file has none."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    except (OSError, UnicodeDecodeError):
        pass
    return out


def trim_log(path, step):
    """Keep in the log ``path`` only the records of iterations before ``step``
    (those a resumed run will not redo). A crash can leave the last line torn
    (half written): a line that is not a whole JSON record is dropped, and
    their number returned."""
    if not os.path.exists(path):
        return 0
    keep, torn = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for ln in f:
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:
                torn += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("iteration"), int) and rec["iteration"] < step:
                keep.append(record_line(rec))
    files.atomic_write(path, "".join(keep))
    return torn


def append_jsonl(path, rec):
    """One record appended and flushed to disk (a killed process loses no whole line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(record_line(rec))
        f.flush()
        os.fsync(f.fileno())


def read_record(path, spec=None, error=DataError, missing=None):
    """The JSON object in ``path``, checked against the schema ``spec``; any
    problem (missing, unreadable, not an object, a field) raises ``error``
    with one line naming the file and the field (``missing``: the line for
    a file that is not there, where the caller can say more)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise error(missing or f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: field the top level: expected an object")
    if spec is not None:
        schema.validate(value, spec, path, error)
    return value


# ----------------------------------------------------------------------------- loading runs

DIVERGED_SCHEMA = {"cell": schema.TEXT, "lr": schema.NUMBER, "seed": schema.INT, "iteration": schema.INT}


def run_settings(m):
    """task, cell, lr and seed of a run's record, from its top level or its config."""
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    return {k: m.get(k, cfg.get(k)) for k in ("task", "cell", "lr", "seed")}


def curve(folder, key):
    """[(iteration, value)] of ``key`` in a run's metrics.jsonl."""
    return [(r["iteration"], r[key]) for r in read_jsonl(os.path.join(folder, METRICS_LOG))
            if isinstance(r.get("iteration"), int) and isinstance(r.get(key), (int, float))]


def load_runs(root, run_schema, curve_key):
    """(finished, diverged, unfinished) run folders under ``root``: finished
    runs as dicts of their metrics (checked against ``run_schema(task)``) plus
    ``folder``, ``curve`` (``curve_key(task)`` against iterations) and ``attempts``; diverged runs as the records of their
    ``diverged.json``; unfinished ones as their folders, or for a record that
    cannot be used, the line saying why (file and field)."""
    done, diverged, unfinished = [], [], []
    for dirpath, dirs, names in sorted(os.walk(root)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))   # not Ray's own .tune folder
        attempts = read_jsonl(os.path.join(dirpath, ATTEMPTS))
        if DIVERGED in names and METRICS not in names:
            try:
                d = _diverged(os.path.join(dirpath, DIVERGED))
            except DataError as exc:
                unfinished.append(str(exc))
            else:
                diverged.append({**d, "folder": dirpath, "attempts": attempts})
            continue
        if METRICS not in names:
            if state_of(dirpath) == PARTIAL:
                unfinished.append(dirpath)
            continue
        try:
            m = _finished(os.path.join(dirpath, METRICS), run_schema)
        except DataError as exc:
            unfinished.append(str(exc))
            continue
        if m is None:
            continue   # stopped before its first epoch ended: nothing to compare
        m.update(folder=dirpath, curve=curve(dirpath, curve_key(m["task"])), attempts=attempts)
        done.append(m)
    return done, diverged, unfinished


def _diverged(path):
    d = read_record(path)
    d = {**d, **run_settings(d)}
    schema.validate(d, DIVERGED_SCHEMA, path, DataError)
    return d


def _finished(path, run_schema):
    m = read_record(path)
    m.update({k: v for k, v in run_settings(m).items() if v is not None})
    task = m.setdefault("task", "ptb")
    if task == "ptb" and m.get("valid_perplexity") is None:
        return None
    schema.validate(m, run_schema(task), path, DataError)
    return m
