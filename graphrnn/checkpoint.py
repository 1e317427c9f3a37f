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
removed. A crash at any moment leaves a manifest that names a complete file.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import backend

MANIFEST = "checkpoint.json"
FORMAT = "graphrnn-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not match the model."""


def _atomic_write(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save(folder, step, arrays, meta):
    """Write ``arrays`` (dict name -> array) and ``meta`` (JSON-able dict) as the
    checkpoint of ``folder`` at iteration ``step``; returns the manifest."""
    os.makedirs(folder, exist_ok=True)
    host = {}
    listing = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(backend.to_numpy(a))
        if a.dtype.hasobject:
            raise CheckpointError(f"checkpoint: array {name!r} has dtype object; refusing to pickle it")
        host[name] = a
        listing[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    npz_name = f"checkpoint-{step:08d}.npz"
    _atomic_write(os.path.join(folder, npz_name), lambda f: np.savez(f, **host))
    manifest = {"format": FORMAT, "version": VERSION, "step": int(step), "arrays_file": npz_name,
                "arrays": listing, **meta}
    text = json.dumps(manifest, indent=1, allow_nan=False).encode()
    _atomic_write(os.path.join(folder, MANIFEST), lambda f: f.write(text))
    for old in os.listdir(folder):
        if old.startswith("checkpoint-") and old.endswith(".npz") and old != npz_name:
            try:
                os.unlink(os.path.join(folder, old))
            except OSError:
                pass
    return manifest


def read_manifest(folder):
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise CheckpointError(f"no run folder {folder!r}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {folder!r} ({MANIFEST} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a graphrnn checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {manifest.get('version')} is not "
                              f"supported (this graphrnn reads version {VERSION})")
    for key in ("step", "arrays_file", "arrays", "config"):
        if key not in manifest:
            raise CheckpointError(f"{path}: manifest has no {key!r}")
    return manifest


def load(folder):
    """(manifest, arrays) of the checkpoint in ``folder``; the arrays are checked
    against the manifest's listing (names, shapes, dtypes)."""
    manifest = read_manifest(folder)
    path = os.path.join(folder, os.path.basename(manifest["arrays_file"]))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint arrays {path!r} are missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint arrays ({exc})") from None
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
