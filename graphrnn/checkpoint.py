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

from . import backend, files
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

class Field:
    """A schema leaf: ``check(value)`` returns None, or what was expected."""

    def __init__(self, expected, check):
        self.expected, self.check = expected, check


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _dtype_problem(v):
    if not isinstance(v, str):
        return "a dtype string such as '<f8'"
    try:
        dt = np.dtype(v)
    except (TypeError, ValueError):
        return "a numpy dtype such as '<f8'"
    if dt.kind not in "biuf":
        return "a numeric dtype (bool, int, uint or float)"
    return None


COUNT = Field("a non-negative integer", lambda v: None if _is_int(v) and v >= 0 else "")
INT = Field("an integer", lambda v: None if _is_int(v) else "")
NUMBER = Field("a number", lambda v: None if _is_number(v) else "")
TEXT = Field("a string", lambda v: None if isinstance(v, str) else "")
OBJECT = Field("an object", lambda v: None if isinstance(v, dict) else "")
DTYPE = Field("a numeric dtype", _dtype_problem)
ARRAYS_FILE = Field("a file name checkpoint-NNNNNNNN.npz",
                    lambda v: None if isinstance(v, str) and _ARRAYS_FILE.match(v) else "")

# A dict schema lists required keys (a key ending in "?" is optional); {"*": s}
# checks every value of an object against s; [s] every item of a list.
MANIFEST_SCHEMA = {
    "format": TEXT,
    "version": INT,
    "step": COUNT,
    "arrays_file": ARRAYS_FILE,
    "arrays": {"*": {"shape": [COUNT], "dtype": DTYPE}},
    "config": OBJECT,
}


def _describe(v):
    text = json.dumps(v) if not isinstance(v, (dict, list)) else type(v).__name__.replace(
        "dict", "an object").replace("list", "a list")
    return text if len(text) <= 40 else text[:37] + "..."


def _key_path(where, key):
    if isinstance(key, int):
        return f"{where}[{key}]"
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"


def validate(value, schema, path, where=""):
    """Check ``value`` against ``schema``; a ``CheckpointError`` names ``path`` and the field."""
    def fail(expected, got="present"):
        field = where or "the top level"
        raise CheckpointError(f"{path}: field {field}: expected {expected}, "
                              f"{'it is missing' if got is None else 'got ' + _describe(got)}")

    if isinstance(schema, Field):
        if schema.check(value) is not None:
            fail(schema.check(value) or schema.expected, value)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            fail("a list", value)
        for i, item in enumerate(value):
            validate(item, schema[0], path, _key_path(where, i))
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            fail("an object", value)
        if "*" in schema:
            for k, v in value.items():
                validate(v, schema["*"], path, _key_path(where, k))
            return
        for key, sub in schema.items():
            optional = key.endswith("?")
            key = key.rstrip("?")
            if key not in value:
                if optional:
                    continue
                raise CheckpointError(f"{path}: field {_key_path(where, key)}: it is missing")
            validate(value[key], sub, path, _key_path(where, key))
    else:
        raise TypeError(f"not a schema: {schema!r}")


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
