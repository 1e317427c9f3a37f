"""Checking JSON read from disk (checkpoint manifests, run metrics) against a
small declarative schema, so that a damaged or hand-edited file is refused
with one line naming the file and the field instead of failing later, deep
inside the code that trusted it.

A schema is a ``Field`` (a leaf with its own check), a dict (required keys; a
key ending in ``?`` is optional; ``{"*": s}`` checks every value of an object
against ``s``) or a one-item list (every item checked against it)::

    validate(manifest, {"step": COUNT, "arrays": {"*": {"shape": [COUNT], "dtype": DTYPE}}},
             "runs/r/checkpoint.json", CheckpointError)
"""
from __future__ import annotations

import json
import re

import numpy as np


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
NULLABLE_NUMBER = Field("a number or null", lambda v: None if v is None or _is_number(v) else "")


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


def validate(value, spec, path, error, where=""):
    """Check ``value`` against the schema ``spec``; ``error`` (an exception class) names ``path`` and the field."""
    def fail(expected, got):
        raise error(f"{path}: field {where or 'the top level'}: expected {expected}, got {_describe(got)}")

    if isinstance(spec, Field):
        if spec.check(value) is not None:
            fail(spec.check(value) or spec.expected, value)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            fail("a list", value)
        for i, item in enumerate(value):
            validate(item, spec[0], path, error, _key_path(where, i))
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            fail("an object", value)
        if "*" in spec:
            for k, v in value.items():
                validate(v, spec["*"], path, error, _key_path(where, k))
            return
        for key, sub in spec.items():
            optional = key.endswith("?")
            key = key.rstrip("?")
            if key not in value:
                if optional:
                    continue
                raise error(f"{path}: field {_key_path(where, key)}: it is missing")
            validate(value[key], sub, path, error, _key_path(where, key))
    else:
        raise TypeError(f"not a spec: {spec!r}")
