"""``graphrnn gradcheck``: the command around the checker."""
from __future__ import annotations

import numpy as np

from .. import backend
from .checker import DIRECTIONS, FULL_LIMIT, SAMPLE, check_gradients

def gradcheck_main(args) -> int:
    """``graphrnn gradcheck CELL``: a per-parameter table; exit status 1 on failure.

    Options beyond the cell and its sizes are read with defaults, so that a
    parser without ``--sample``, ``--directions`` or ``--full`` still works.
    """
    from ..cells import from_spec

    sample = getattr(args, "sample", SAMPLE)
    directions = getattr(args, "directions", DIRECTIONS)
    mode = "full" if getattr(args, "full", False) else "auto"
    cell = from_spec(args.cell, args.input_size, args.hidden_size)
    rng = np.random.default_rng(args.seed)
    params = {k: v * 1.0 for k, v in cell.init_params(seed=args.seed, dtype=np.float64).items()}
    # Non-zero biases: a zero-initialised bias would leave part of the rule untested.
    for k, v in params.items():
        if not np.any(backend.to_numpy(v)):
            params[k] = backend.asarray(rng.uniform(-0.5, 0.5, v.shape))
    report = check_gradients(cell, params, batch=args.batch, steps=args.steps, seed=args.seed,
                             mode=mode, sample=sample, directions=directions, raise_on_failure=False)
    print(report)
    if report.sampled:
        full = ", --full checks every element" if hasattr(args, "full") else ""
        print(f"sampled: arrays over {FULL_LIMIT:,} elements were checked at {sample} random elements "
              f"(spread over the last axis) and along {directions} random directions, drawn with "
              f"seed {args.seed}; another --seed draws others{full}")
    w = report.worst()
    if report.ok:
        print(f"ok: all {len(report.entries)} gradients of cell {cell.name!r} match central differences "
              f"(worst rel err {report.max_rel:.2e}; {report.evaluations:,} forward passes)")
        return 0
    where = (f"along random direction {w.direction}" if w.direction is not None
             else f"at index {w.worst_index}")
    print(f"FAILED: {w.name} {where}: engine {w.got:.10g} vs central difference {w.expected:.10g}")
    return 1
