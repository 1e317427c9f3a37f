"""Checkpoints: one ``.npz`` of arrays plus a JSON manifest, both written atomically.

No pickle anywhere: arrays are saved and read with ``allow_pickle=False`` and
object arrays are refused. The manifest lists every array's name, shape and
dtype (checked against the file on load), and carries everything else that
is needed to continue a run exactly: the config, the iteration, the random
generator's state and the optimizer's settings.

Files in a run folder::

    checkpoint.json              the manifest (written last: the commit point)
    checkpoint-00001000.npz      the arrays it names

A new checkpoint writes its ``.npz`` under a temporary name, renames it into
place, then does the same for the manifest; only then is the previous ``.npz``
removed. A crash at any moment leaves a manifest that names a complete file;
the temporary files a killed save leaves are removed by the next save or load.

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

from . import backend, files, schema
from .errors import CheckpointError

MANIFEST = "checkpoint.json"
FORMAT = "graphrnn-checkpoint"
VERSION = 1
_ARRAYS_FILE = re.compile(r"^checkpoint-\d{8,}\.npz$")


def _ours(name):
    """The files a run folder's checkpoints (and the trainer's logs beside them) consist of."""
    return name == MANIFEST or _ARRAYS_FILE.match(name) is not None or name in (
        "metrics.json", "metrics.jsonl", "loss.png", "perplexity.png")


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

def save(folder, step, arrays, meta):
    """Write ``arrays`` (dict name -> array) and ``meta`` (JSON-able dict) as the
    checkpoint of ``folder`` at iteration ``step``; returns the manifest."""
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
    files.atomic_write(os.path.join(folder, npz_name), lambda f: np.savez(f, **host))
    manifest = {"format": FORMAT, "version": VERSION, "step": int(step), "arrays_file": npz_name,
                "arrays": listing, **meta}
    text = json.dumps(manifest, indent=1, allow_nan=False).encode()
    files.atomic_write(os.path.join(folder, MANIFEST), text)
    for old in os.listdir(folder):
        if _ARRAYS_FILE.match(old) and old != npz_name:
            try:
                os.unlink(os.path.join(folder, old))
            except OSError:
                pass
    return manifest


# --------------------------------------------------------------------------- load

def read_manifest(folder):
    """The manifest of the checkpoint in ``folder``, checked against ``MANIFEST_SCHEMA``."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise CheckpointError(f"no run folder {folder!r}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {folder!r} ({MANIFEST} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
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


def load(folder):
    """(manifest, arrays) of the checkpoint in ``folder``; the arrays are checked
    against the manifest's listing (names, shapes, dtypes)."""
    manifest = read_manifest(folder)
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
