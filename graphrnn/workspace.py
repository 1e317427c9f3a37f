"""The scheduler's memory: arrays reused across the calls of one plan.

The pool belongs to the scheduler (``graphrnn.unroll``), one per plan, kept
here beside the plan rather than on it: the plan decides, and holds nothing a
run allocates. ``workspace_for(plan)`` finds it (``plan.workspace`` is the same
pool, under the name the README gives it).
"""
from __future__ import annotations

import math
import sys
import weakref

_pools = weakref.WeakKeyDictionary()  # plan -> Workspace; goes when the plan goes


def workspace_for(plan) -> "Workspace":
    """The workspace of runs of ``plan``, made on first use."""
    ws = _pools.get(plan)
    if ws is None:
        ws = _pools[plan] = Workspace()
    return ws


class Workspace:
    """Arrays reused across calls of one plan, so that a training loop stops paying
    for fresh memory at every batch (a GRU call at H=650 touched about 10,000 fresh
    pages, 40 MB; without them one side-by-side measurement ran 279 -> 242 ms).

    ``empty`` hands out an array again only when nothing outside the workspace
    refers to it: CPython's reference count sees every view and every result a
    caller kept (``run.hs`` is a view of a state buffer, ``Grads`` holds its
    arrays), so what a caller holds is never overwritten. Every ``keep_calls``
    calls, free arrays not asked for since the last such check are let go. Arrays under ``min_bytes``
    come from the allocator as usual: the heap serves those without faults and
    faster than a look-up here.
    """

    def __init__(self, keep_calls=4, min_bytes=1 << 16):
        self.keep_calls, self.min_bytes = keep_calls, min_bytes
        self.calls = 0
        self._entries = {}  # (backend, shape, dtype) -> [[array, last call], ...]

    def next_call(self):
        self.calls += 1
        if self.calls % self.keep_calls:
            return
        for key, entries in list(self._entries.items()):
            kept = [e for e in entries if self.calls - e[1] <= self.keep_calls or not _is_free(e)]
            if kept:
                self._entries[key] = kept
            else:
                del self._entries[key]

    def empty(self, xp, shape, dtype):
        """An array of this shape and dtype (a dtype object) with arbitrary
        contents that nobody else holds."""
        if math.prod(shape) * dtype.itemsize < self.min_bytes:
            return xp.empty(shape, dtype=dtype)
        key = (xp.__name__, shape, dtype)
        entries = self._entries.get(key)
        if entries is None:
            entries = self._entries[key] = []
        for e in entries:
            if _is_free(e):
                e[1] = self.calls
                return e[0]
        a = xp.empty(shape, dtype=dtype)
        entries.append([a, self.calls])
        return a

    def zeros(self, xp, shape, dtype):
        a = self.empty(xp, shape, dtype)
        a.fill(0)
        return a

    def clear(self):
        """Let go of every array (those a caller still holds stay valid)."""
        self._entries.clear()

    @property
    def nbytes(self):
        return sum(e[0].nbytes for entries in self._entries.values() for e in entries)


def _refs(entry):
    return sys.getrefcount(entry[0])


_FREE_REFS = _refs([object(), 0])  # held by its entry alone (and getrefcount's argument)


def _is_free(entry):
    return _refs(entry) <= _FREE_REFS
