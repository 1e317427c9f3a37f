"""Small data sets for the classic experiments.

- ``dinos``: the dinosaur-name list shipped with the package (``dinos.txt``).
- ``binary_addition``: bit tables for adding two integers, least significant bit first.
- ``primes``: the primes below 100 scaled to [0, 1], cut into overlapping windows.

Loaders raise ``DataError`` (a ``ValueError``) with a message naming the file
and line when a data file is missing or malformed.
"""
from __future__ import annotations

import hashlib
import os
import string

import numpy as np

from ..errors import DataError

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
DINOS_PATH = os.path.join(DATA_DIR, "dinos.txt")

# The dinosaur vocabulary: newline (index 0, the end-of-name token) then a-z.
DINO_CHARS = "\n" + string.ascii_lowercase


def load_dinos(path=None, *, with_sha256=False):
    """The names in ``path`` (default: the shipped list), lower-cased, one per line;
    with ``with_sha256``, (names, the SHA256 of the file's bytes).

    Blank lines are skipped; any character outside a-z is refused with its line number.
    """
    path = DINOS_PATH if path is None else os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        lines = raw.decode("utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"dinosaur name file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"dinosaur name file {path} is a folder; name a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read dinosaur name file {path}: {exc}") from None
    allowed = set(DINO_CHARS[1:])
    names = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip().lower()
        if not name:
            continue
        bad = sorted(set(name) - allowed)
        if bad:
            raise DataError(f"{path}, line {lineno}: {name!r} has characters outside a-z: "
                            f"{''.join(bad)!r}")
        names.append(name)
    if not names:
        raise DataError(f"{path}: no names found (expected one name per line)")
    if with_sha256:
        return names, hashlib.sha256(raw).hexdigest()
    return names


def dino_indices(name):
    """(inputs, targets) as index lists: inputs start with None (a zero vector),
    targets are the inputs shifted by one and end with the newline index."""
    idx = [DINO_CHARS.index(ch) for ch in name]
    return [None] + idx, idx + [0]


# ----------------------------------------------------------------- binary addition

def bit_table(bits=8):
    """(2**bits, bits) float array: row k holds k's bits, least significant first."""
    if bits < 1 or bits > 16:
        raise DataError(f"binary addition: bits must be in 1..16, got {bits}")
    k = np.arange(2 ** bits)
    return ((k[:, None] >> np.arange(bits)) & 1).astype(np.float64)


def addition_batch(table, a, b):
    """Inputs (N, T, 2) and targets (N, T, 1) for adding the integer arrays a and b."""
    a = np.asarray(a)
    b = np.asarray(b)
    xs = np.stack([table[a], table[b]], axis=-1)
    ys = table[a + b][..., None]
    return xs, ys


# -------------------------------------------------------------------------- primes

def primes_below(limit):
    """The primes p < limit, by a sieve."""
    if limit < 0:
        raise DataError(f"primes: limit must be non-negative, got {limit}")
    sieve = np.ones(max(limit, 2), dtype=bool)
    sieve[:2] = False
    for p in range(2, int(limit ** 0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = False
    return np.flatnonzero(sieve[:limit])


def primes_sequence(samples=10, width=50, limit=100):
    """The primes task: xs (samples, width) and ys (samples,), scaled by 1/limit.

    Sample i is the ``width`` consecutive primes starting at index i, the index
    wrapping around the list; its target is the prime that follows them.
    """
    for name, v in (("samples", samples), ("width", width)):
        if v < 1:
            raise DataError(f"primes: {name} must be positive, got {v}")
    p = primes_below(limit)
    if len(p) == 0:
        raise DataError(f"primes: there are no primes below {limit}")
    scaled = p / float(limit)
    n = len(p)
    i = np.arange(samples)[:, None]
    xs = scaled[(i + np.arange(width)) % n]
    ys = scaled[(np.arange(samples) + width) % n]
    return xs, ys
