"""Checkpoints: one ``.npz`` of arrays plus a JSON manifest, both written atomically.

No pickle anywhere: arrays are saved and read with ``allow_pickle=False`` and
object arrays are refused. The manifest lists every array's name, shape and
dtype (checked against the file on load), and carries everything else that
is needed to continue a run exactly: the config, the iteration, the random
generator's state and the optimizer's settings.

Files in a run folder::

    checkpoint.json              the newest manifest (written last: the commit point)
    checkpoint-00001000.npz      the arrays it names
    checkpoint-00000500.json     the manifest of an older checkpoint kept (``keep``)
    checkpoint-00000500.npz      and its arrays

A new checkpoint writes its ``.npz`` under a temporary name and renames it
into place; keeps the manifest it replaces as ``checkpoint-NNNNNNNN.json``;
then writes the new manifest the same way; only then are the checkpoints
beyond the newest ``keep`` removed. A crash at any moment leaves a manifest
that names a complete file; the temporary files a killed save leaves are
removed by the next save or load.

Loading tries the newest checkpoint first and falls back to the older ones
kept, newest first (``load_newest`` says which it skipped and why), so one
damaged file costs a few iterations, not the run.

A checkpoint is read as untrusted input: the manifest is checked against a
schema (``MANIFEST_SCHEMA``) and the arrays against the manifest, so a
truncated, bit-flipped or hand-edited checkpoint is refused with a
``CheckpointError`` naming the file and the field, never a traceback.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib

import numpy as np

from . import backend, files, runfolder, schema
from .errors import CheckpointError

MANIFEST = runfolder.MANIFEST
FORMAT = "graphrnn-checkpoint"
VERSION = 1
KEEP = 3   # checkpoints kept by default: the newest and two to fall back to
_ARRAYS_FILE = re.compile(r"^checkpoint-\d{8,}\.npz$")
_KEPT = re.compile(r"^checkpoint-(?P<step>\d{8,})\.(?P<ext>npz|json)$")


def _ours(name):
    """The files a run folder's checkpoints (and the trainer's logs beside them) consist of."""
    return name == MANIFEST or _KEPT.match(name) is not None or name in (
        runfolder.METRICS, runfolder.METRICS_LOG, *runfolder.PLOTS)


def kept_manifest(step):
    return f"checkpoint-{step:08d}.json"


# ------------------------------------------------------------------------- schema

ARRAYS_FILE = schema.Field("a file name checkpoint-NNNNNNNN.npz",
                           lambda v: None if isinstance(v, str) and _ARRAYS_FILE.match(v) else "")
# See graphrnn/schema.py for the notation.
MANIFEST_SCHEMA = {
    "format": schema.TEXT,
    "version": schema.INT,
    "step": schema.COUNT,
    "arrays_file": ARRAYS_FILE,
    "arrays": {"*": {"shape": [schema.COUNT], "dtype": schema.DTYPE}},
    "config": schema.OBJECT,
}


def validate(value, spec, path, where=""):
    """``schema.validate`` raising ``CheckpointError``."""
    schema.validate(value, spec, path, CheckpointError, where)


# --------------------------------------------------------------------------- save

def save(folder, step, arrays, meta, keep=KEEP):
    """Write ``arrays`` (dict name -> array) and ``meta`` (JSON-able dict) as the
    checkpoint of ``folder`` at iteration ``step``, keeping the newest ``keep``
    checkpoints (older ones, and any later than ``step``, which a resumed run
    has redone, are removed); returns the manifest."""
    if int(keep) < 1:
        raise CheckpointError(f"keep must be at least 1 checkpoint, got {keep}")
    files.make_folder(folder, "run folder")
    files.clean_temporaries(folder, _ours)
    host = {}
    listing = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(backend.to_numpy(a))
        if a.dtype.hasobject:
            raise CheckpointError(f"checkpoint: array {name!r} has dtype object; refusing to pickle it")
        host[name] = a
        listing[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    npz_name = f"checkpoint-{step:08d}.npz"
    manifest = {"format": FORMAT, "version": VERSION, "step": int(step), "arrays_file": npz_name,
                "arrays": listing, **meta}
    try:  # before any file is written: a value JSON cannot hold must not leave an orphan .npz
        text = json.dumps(manifest, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint at iteration {step}: the manifest cannot be written as "
                              f"JSON ({exc})") from None
    files.atomic_write(os.path.join(folder, npz_name), lambda f: np.savez(f, **host))
    _keep_previous(folder, step)
    files.atomic_write(os.path.join(folder, MANIFEST), text)
    _prune(folder, step, int(keep))
    return manifest


def _keep_previous(folder, step):
    """The manifest about to be replaced, kept under its step's name when it is
    an earlier checkpoint (a damaged or later one is not worth keeping)."""
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as f:
            text = f.read()
        old = json.loads(text)
        old_step = old["step"]
    except (OSError, ValueError, TypeError, KeyError):
        return
    if isinstance(old_step, int) and 0 <= old_step < step \
            and os.path.exists(os.path.join(folder, f"checkpoint-{old_step:08d}.npz")):
        files.atomic_write(os.path.join(folder, kept_manifest(old_step)), text)


def _prune(folder, step, keep):
    older = sorted({int(m["step"]) for m in map(_KEPT.match, os.listdir(folder))
                    if m and m["ext"] == "json" and int(m["step"]) < step}, reverse=True)
    wanted = {step, *older[:keep - 1]}
    for name in os.listdir(folder):
        m = _KEPT.match(name)
        if m and int(m["step"]) not in wanted:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


# --------------------------------------------------------------------------- load

def read_manifest(folder, name=MANIFEST):
    """The manifest of the checkpoint in ``folder`` (the newest, or the kept
    one ``name``), checked against ``MANIFEST_SCHEMA``."""
    path = os.path.join(folder, name)
    if not os.path.isdir(folder):
        raise CheckpointError(f"no run folder {folder!r}")
    manifest = runfolder.read_record(path, error=CheckpointError,
                                     missing=f"no checkpoint in {folder!r} ({name} is missing)")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a graphrnn checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {manifest.get('version')} is not "
                              f"supported (this graphrnn reads version {VERSION})")
    validate(manifest, MANIFEST_SCHEMA, path)
    return manifest


# What reading a damaged .npz raises, by layer: the zip directory (BadZipFile,
# EOFError), a member's compression or checksum (zlib.error, BadZipFile "Bad
# CRC-32"), numpy's array header (ValueError), the OS (OSError).
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def load(folder, name=MANIFEST):
    """(manifest, arrays) of the checkpoint in ``folder`` (the newest, or the
    kept one ``name``); the arrays are checked against the manifest's listing
    (names, shapes, dtypes)."""
    manifest = read_manifest(folder, name)
    files.clean_temporaries(folder, _ours)
    path = os.path.join(folder, manifest["arrays_file"])
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint arrays {path!r} are missing") from None
    except _DAMAGED as exc:
        raise CheckpointError(f"{path}: damaged checkpoint arrays, cannot read them "
                              f"({type(exc).__name__}: {exc})") from None
    expected = {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in manifest["arrays"].items()}
    check_arrays(expected, arrays, f"{path} against its manifest")
    return manifest, arrays


def load_newest(folder, check=None):
    """(manifest, arrays, skipped) of the newest readable checkpoint in
    ``folder``: the newest first, then the older ones kept, newest first.
    ``check(manifest, path)`` may refuse one more (raising ``CheckpointError``);
    ``skipped`` is the line of each one refused. When none can be read, the
    newest's error is raised."""
    older = sorted((n for n in _listing(folder) if (m := _KEPT.match(n)) and m["ext"] == "json"), reverse=True)
    skipped = []
    for name in (MANIFEST, *older):
        try:
            manifest, arrays = load(folder, name)
            if check is not None:
                check(manifest, os.path.join(folder, name))
        except CheckpointError as exc:
            if not older:
                raise
            skipped.append(exc)
            continue
        return manifest, arrays, [str(e) for e in skipped]
    raise skipped[0]


def _listing(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def check_arrays(expected, arrays, what):
    """Refuse ``arrays`` unless its names, shapes and dtypes are ``expected``
    (dict name -> (shape, dtype)); the message names every difference."""
    problems = []
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k not in expected]
    if missing:
        problems.append("missing " + ", ".join(repr(k) for k in missing))
    if extra:
        problems.append("unexpected " + ", ".join(repr(k) for k in extra))
    for k, (shape, dtype) in expected.items():
        if k not in arrays:
            continue
        a = arrays[k]
        if tuple(a.shape) != tuple(shape):
            problems.append(f"{k!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        if np.dtype(a.dtype) != np.dtype(dtype):
            problems.append(f"{k!r} has dtype {np.dtype(a.dtype)}, expected {np.dtype(dtype)}")
    if problems:
        raise CheckpointError(f"checkpoint does not match ({what}): " + "; ".join(problems))
