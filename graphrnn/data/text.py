"""Any UTF-8 text as a language-modelling corpus (``graphrnn train text``).

``level="char"``: every character is a token (newlines included).
``level="word"``: whitespace-separated words, each line ended by ``<eos>``
(as the Penn Treebank's files are read). The vocabulary is every token of the
whole file, in order of first appearance; the last ``valid_fraction`` of the
tokens is held out for validation (cut at a line break where there is one
near, so a word-level split does not cut a sentence).

A file that is missing, a folder, empty, not UTF-8, or too short to split is
a ``DataError`` naming the file (and, for bad bytes, the line and column).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import DataError

EOS = "<eos>"
LEVELS = ("char", "word")


class TextCorpus:
    """``words`` (the vocabulary), ``train`` and ``valid`` (int32 ids) of one file."""

    def __init__(self, path, level, valid_fraction):
        raw = _read(path)
        self.path, self.level, self.folder = path, level, path
        self.sha256 = hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
                            f"column {col}); convert it, e.g. iconv -t utf-8") from None
        tokens = tokenize(text, level)
        if not tokens:
            raise DataError(f"{path}: no {'characters' if level == 'char' else 'words'}; the file is empty")
        self.words, ids = [], {}
        for w in tokens:
            if w not in ids:
                ids[w] = len(self.words)
                self.words.append(w)
        seq = np.fromiter((ids[w] for w in tokens), dtype=np.int32, count=len(tokens))
        cut = len(seq) - int(len(seq) * valid_fraction)
        nl = ids.get("\n" if level == "char" else EOS)
        if nl is not None:   # move the cut to the line break just before it, if one is near
            breaks = np.flatnonzero(seq[max(1, cut - 200):cut] == nl)
            if len(breaks):
                cut = max(1, cut - 200) + int(breaks[-1]) + 1
        if cut < 2 or len(seq) - cut < 2:
            raise DataError(f"{path}: {len(seq)} {level} tokens are too few to hold out "
                            f"{valid_fraction:g} of them for validation")
        self.train, self.valid = seq[:cut], seq[cut:]
        self.test = None

    def decode(self, ids):
        return decode(self.words, ids, self.level)


def _read(path):
    if path is None:
        raise DataError("the text task needs its data: --data FILE (any UTF-8 text)")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: a folder; --data names one text file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def tokenize(text, level):
    if level == "char":
        return list(text)
    out = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def decode(words, ids, level):
    """Text of ids: characters joined, or words joined by spaces with ``<eos>`` as a line break."""
    if level == "char":
        return "".join(words[int(i)] for i in ids)
    out = []
    for i in ids:
        w = words[int(i)]
        out.append("\n" if w == EOS else w + " ")
    return "".join(out).replace(" \n", "\n")


def unigram_perplexity(train, valid, vocab_size):
    """Perplexity on ``valid`` of the unigram model of ``train`` (add-one smoothed):
    the baseline a language model must beat to have learned anything of order."""
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    p = counts / counts.sum()
    return float(np.exp(-np.mean(np.log(p[valid]))))
