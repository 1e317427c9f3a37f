"""Hypothesis profiles for the whole suite: HYPOTHESIS_PROFILE=ci|dev|deep (default dev).

The profiles are registered by graphrnn.testing (so users' suites get them too);
.ci/run selects ``ci``: derandomized, no example database, reproducible.
"""
import os

from hypothesis import settings

import graphrnn.testing  # noqa: F401  (registers the profiles)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Native kernels compiled by one test run serve the next (numba's disk cache),
# kept apart from the user's cache. The suite runs the numpy loops unless a test
# asks for another engine: auto switches engines when a background build is
# done, and a test comparing two runs bit for bit must not see that happen.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("GRAPHRNN_CACHE_DIR", os.path.join(_ROOT, ".pytest_cache", "graphrnn"))
os.environ.setdefault("GRAPHRNN_ENGINE", "numpy")

import pathlib

import pytest

# The data folder CI uses: ../shared/data beside the repository.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def find_ptb(shared=None):
    """The Penn Treebank's folder where a user has it, as graphrnn looks for it
    ($GRAPHRNN_DATA, then the per-user cache; never downloading), else the
    shared folder beside the repository; None when it is nowhere."""
    from graphrnn.data import ptb
    from graphrnn.errors import DataError
    try:
        return pathlib.Path(ptb.find(download=False))
    except (DataError, ImportError):
        pass
    d = pathlib.Path(shared or SHARED_DATA) / "ptb"
    return d if (d / "ptb.train.txt").is_file() else None


@pytest.fixture(scope="session")
def ptb_dir():
    d = find_ptb()
    if d is None:
        pytest.skip(f"the Penn Treebank is not in $GRAPHRNN_DATA, the per-user cache or {SHARED_DATA / 'ptb'}")
    return d


@pytest.fixture(scope="session")
def ptb_slice(ptb_dir, tmp_path_factory):
    """A small PTB: the first 1,200 training lines, and the validation and test
    lines (150 each) whose words all occur in them."""
    out = tmp_path_factory.mktemp("ptb-slice")
    train = (ptb_dir / "ptb.train.txt").read_text().splitlines(keepends=True)[:1200]
    (out / "ptb.train.txt").write_text("".join(train))
    vocab = set(w for line in train for w in line.split())
    for split in ("valid", "test"):
        lines = (ptb_dir / f"ptb.{split}.txt").read_text().splitlines(keepends=True)
        keep = [ln for ln in lines if set(ln.split()) <= vocab][:150]
        (out / f"ptb.{split}.txt").write_text("".join(keep))
    return out
