"""A user's sequences in one ``.npz`` file, checked before training starts.

The file holds::

    xs       (N, T, D) float   the inputs, padded to T steps
    ys       the targets, one of
             (N, T) int        a class per step            (classification)
             (N, T, K) float   K numbers per step          (regression)
             (N,) int          a class per sequence        (classification)
             (N, K) float      K numbers per sequence      (regression)
    lengths  (N,) int, optional: sequence n is xs[n, :lengths[n]]; the steps
             after it are padding, never read by the loss (per-sequence
             targets are compared with the output at step lengths[n] - 1)

Every way a file can be wrong (not an npz, a key missing, ragged or object
arrays, shapes that disagree, NaN or inf, no sequences, a length out of range)
is a ``DataError`` naming the file and the key.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
import zlib

import numpy as np

from ..errors import DataError

KEYS = ("xs", "ys", "lengths")


class Sequences:
    """The checked arrays: ``xs`` float64 (N, T, D), ``ys`` (int64 classes or
    float64 values), ``lengths`` int64 (N,), and what they mean."""

    def __init__(self, xs, ys, lengths, path, sha256):
        self.xs, self.ys, self.lengths, self.path, self.sha256 = xs, ys, lengths, path, sha256
        self.n, self.t, self.d = xs.shape
        self.classification = ys.dtype.kind in "iu"
        # classes: (N,) or (N, T); values: (N, K) or (N, T, K)
        self.per_step = ys.ndim == (2 if self.classification else 3)
        self.classes = int(ys.max()) + 1 if self.classification else None
        self.outputs = self.classes if self.classification else ys.shape[-1]

    def mask(self):
        """(N, T) bool: True at the steps each sequence really has."""
        return np.arange(self.t)[None, :] < self.lengths[:, None]


def _read(path):
    if os.path.isdir(path):
        raise DataError(f"{path}: a folder; --data names one .npz file holding xs and ys")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: a .npy file holds one array; save xs and ys together with "
                        "np.savez(path, xs=xs, ys=ys)")
    if not raw.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz file (an .npz is a zip archive; this one does not start as "
                        "one); save the arrays with np.savez(path, xs=xs, ys=ys)")
    try:
        import io
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            names = list(z.files)
            arrays = {}
            for k in names:
                try:
                    arrays[k] = z[k]
                except ValueError as exc:
                    if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                        raise DataError(f"{path}: {k!r} is an object array (ragged sequences?); pad them "
                                        f"to one length T and give their lengths as 'lengths'") from None
                    raise
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return arrays, hashlib.sha256(raw).hexdigest()


def load(path):
    """The sequences in the ``.npz`` file ``path``, checked (see the module's docstring)."""
    if path is None:
        raise DataError("the sequences task needs its data: --data FILE.npz holding xs (N, T, D) and ys")
    path = os.fspath(path)
    arrays, digest = _read(path)
    missing = [k for k in ("xs", "ys") if k not in arrays]
    if missing:
        raise DataError(f"{path}: no {' and no '.join(repr(k) for k in missing)} array; it holds "
                        f"{', '.join(repr(k) for k in arrays) or 'nothing'} (expected xs, ys and "
                        "optionally lengths)")
    extra = [k for k in arrays if k not in KEYS]
    if extra:
        raise DataError(f"{path}: unexpected array {extra[0]!r} (expected xs, ys and optionally lengths)")
    xs, ys = arrays["xs"], arrays["ys"]
    for k in arrays:
        if arrays[k].dtype.kind not in "biuf":
            raise DataError(f"{path}: {k!r} has dtype {arrays[k].dtype}; expected real numbers "
                            "(bool, int or float)")
    if xs.ndim != 3:
        raise DataError(f"{path}: 'xs' has shape {xs.shape}; expected (N, T, D): sequences, steps, features")
    n, t, d = xs.shape
    if n == 0 or t == 0 or d == 0:
        raise DataError(f"{path}: 'xs' has shape {xs.shape}: no sequences, steps or features")
    if not np.isfinite(xs).all():
        bad = np.argwhere(~np.isfinite(xs))[0]
        raise DataError(f"{path}: 'xs' holds {xs[tuple(bad)]} at {tuple(int(i) for i in bad)}; "
                        "inputs must be finite")
    ys = _targets(path, ys, n, t)
    lengths = _lengths(path, arrays.get("lengths"), n, t)
    return Sequences(xs.astype(np.float64), ys, lengths, path, digest)


def _targets(path, ys, n, t):
    if ys.ndim == 0 or ys.shape[0] != n:
        raise DataError(f"{path}: 'ys' has shape {ys.shape}; its first axis must be the {n} sequences of xs")
    if ys.dtype.kind == "b":
        ys = ys.astype(np.int64)
    if ys.dtype.kind in "iu":
        if ys.ndim not in (1, 2) or (ys.ndim == 2 and ys.shape[1] != t):
            raise DataError(f"{path}: integer 'ys' (classes) has shape {ys.shape}; expected ({n},) a class "
                            f"per sequence or ({n}, {t}) a class per step")
        if ys.min() < 0:
            raise DataError(f"{path}: 'ys' holds the class {int(ys.min())}; classes are 0, 1, 2, ...")
        return ys.astype(np.int64)
    if ys.ndim not in (1, 2, 3) or (ys.ndim == 3 and ys.shape[1] != t):
        raise DataError(f"{path}: float 'ys' (values) has shape {ys.shape}; expected ({n},) or ({n}, K) per "
                        f"sequence, or ({n}, {t}, K) per step")
    if not np.isfinite(ys).all():
        bad = np.argwhere(~np.isfinite(ys))[0]
        raise DataError(f"{path}: 'ys' holds {ys[tuple(bad)]} at {tuple(int(i) for i in bad)}; "
                        "targets must be finite")
    ys = ys.astype(np.float64)
    return ys[:, None] if ys.ndim == 1 else ys


def _lengths(path, lengths, n, t):
    if lengths is None:
        return np.full(n, t, dtype=np.int64)
    if lengths.shape != (n,):
        raise DataError(f"{path}: 'lengths' has shape {lengths.shape}; expected ({n},), one per sequence")
    if lengths.dtype.kind not in "iu":
        if not np.isfinite(lengths).all() or not np.all(lengths == np.round(lengths)):
            raise DataError(f"{path}: 'lengths' must be whole numbers of steps")
    lengths = lengths.astype(np.int64)
    bad = np.flatnonzero((lengths < 1) | (lengths > t))
    if len(bad):
        raise DataError(f"{path}: 'lengths'[{bad[0]}] is {lengths[bad[0]]}; each must be 1 to T = {t}")
    return lengths
