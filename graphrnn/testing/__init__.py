"""Public gradient checking for cells and primitives, and Hypothesis strategies.

Three modules, re-exported here: ``checker`` (the checks and their reports),
``strategies`` (Hypothesis profiles and strategies) and ``command``
(``graphrnn gradcheck``).

Three entry points for users and for the test suite:

- ``check_gradients(cell, ...)``: the engine's BPTT (``gr.unroll(...).backward``)
  against float64 central differences, for every parameter, the inputs and
  the initial states. The loss weighs both the outputs and the final states
  with random weights, so both gradient paths (dhs and dstate) are exercised.
  Small arrays are checked entry by entry; large ones (a GRU at H=1000) at a
  random sample of entries plus along random directions, so the cost grows
  with the number of arrays, not their size.
- ``check_primitive(name, shapes, ...)``: one primitive's hand-written backward
  against its full numeric Jacobian.
- ``check_against_naive(cell, ...)``: the compiled plan against the naive
  step-by-step interpreter (differential testing of compiler passes).

A failure raises ``GradientCheckError`` (an ``AssertionError``, so pytest shows
it as a test failure) naming the check, the node, the element index, both
values and a relative error that is defined at zero.

Tolerances come from a per-dtype table and are *not* scaled by the size of the
array (a gradient does not get less exact because the matrix is larger).
Numeric differences are always taken in float64, whatever dtype is under test.

The Hypothesis strategies (``cell_sizes``, ``unroll_args``, ``random_cells``)
and profiles (``ci``, ``dev``, ``deep``) are importable from a user's own
pytest suite; importing this module needs Hypothesis only for those.
"""
from .checker import (  # noqa: F401
    CHECK_KINDS,
    DIRECTIONS,
    ENGINE_RTOL,
    EPS,
    EntryResult,
    FULL_LIMIT,
    GradCheckReport,
    GradientCheckError,
    MODES,
    PROGRESS_AFTER,
    SAMPLE,
    TOLERANCES,
    _Progress,
    _all_needs,
    _check_array,
    _check_gradients,
    _draw,
    _fmt_shape,
    _loss,
    _loss_weights,
    _mode_of,
    _numeric_grad,
    _one_blas_thread,
    _saved,
    central_differences,
    check_against_naive,
    check_engines,
    check_function,
    check_gradients,
    check_primitive,
    compare,
    directional_differences,
    make_primitive,
    primitive_jacobians,
    random_inputs,
    rel_error,
    sample_indices,
    tolerance,
)
from .command import gradcheck_main  # noqa: F401
try:  # the strategies need Hypothesis; the checks do not
    from .strategies import (  # noqa: F401
        EXP_MAX,
        PROFILES,
        UnrollArgs,
        VALUE_MAX,
        _elements,
        cell_sizes,
        random_cells,
        register_profiles,
        scaled_examples,
        unroll_args,
    )
except ImportError:  # pragma: no cover
    pass
