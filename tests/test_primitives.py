"""Every primitive's hand-written backward against its full numeric Jacobian.

One table (SPECS) says how to draw inputs for each primitive in
``graphrnn.primitives.PRIMITIVES``; one Hypothesis test runs them all
(JAX's grad_test_spec pattern). A primitive added without a spec fails
``test_every_primitive_has_a_gradient_spec``.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphrnn.primitives import PRIMITIVES, GraphError
from graphrnn.testing import GradientCheckError, check_primitive, make_primitive, scaled_examples

dim = st.integers(1, 4)  # batch 1 and width 1 included


def values_in(lo=-1.0, hi=1.0, away_from_zero=0.0):
    el = st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    if away_from_zero:
        el = el.filter(lambda v: abs(v) > away_from_zero)
    return el


@st.composite
def matrix_or_row(draw):
    """A per-example value (n, w), or a 1-D parameter-like (w,) for static ops."""
    w = draw(dim)
    return (draw(dim), w) if draw(st.booleans()) else (w,)


@st.composite
def unary(draw):
    return [draw(matrix_or_row())], ()


@st.composite
def binary(draw):
    """Same shapes, a bias row on either side, or a Python scalar on either side."""
    n, w = draw(dim), draw(dim)
    form = draw(st.sampled_from(["same", "row-right", "row-left", "scalar-right", "scalar-left", "rows"]))
    return {
        "same": [(n, w), (n, w)],
        "row-right": [(n, w), (w,)],
        "row-left": [(w,), (n, w)],
        "scalar-right": [(n, w), ()],
        "scalar-left": [(), (n, w)],
        "rows": [(w,), (w,)],  # two parameters (a static op)
    }[form], ()


@st.composite
def matmul(draw):
    n, k, m = draw(dim), draw(dim), draw(dim)
    return [(n, k), (k, m)], ()


@st.composite
def slice_(draw):
    shape = draw(matrix_or_row())  # values, and 1-D / 2-D parameters alike
    w = shape[-1]
    lo = draw(st.integers(0, w - 1))
    hi = draw(st.integers(lo + 1, w))
    return [shape], (lo, hi)


@st.composite
def concat(draw):
    lead = draw(st.sampled_from([(), (draw(dim),)]))
    k = draw(st.integers(1, 3))
    return [lead + (draw(dim),) for _ in range(k)], ()


# name -> (strategy of (shapes, attrs), element strategy)
SPECS = {
    "matmul": (matmul(), values_in()),
    "add": (binary(), values_in()),
    "sub": (binary(), values_in()),
    "mul": (binary(), values_in()),
    "neg": (unary(), values_in()),
    "slice": (slice_(), values_in()),
    "concat": (concat(), values_in()),
    "tanh": (unary(), values_in(-3, 3)),
    "sigmoid": (unary(), values_in(-10, 10)),  # saturated gates included
    # the derivative jumps at 0: keep central differences off the kink
    "relu": (unary(), values_in(away_from_zero=1e-3)),
    "exp": (unary(), values_in(-2, 2)),
}


def draw_inputs(data, name):
    shapes_attrs, elements = SPECS[name]
    shapes, attrs = data.draw(shapes_attrs, label="shapes, attrs")
    values = [data.draw(hnp.arrays(np.float64, s, elements=elements)) if s
              else data.draw(elements, label="scalar") for s in shapes]
    return shapes, attrs, values


def draw_checked_op(data, name, dtype=np.float64):
    """A primitive checked against drawn shapes, and its inputs as arrays of dtype."""
    shapes, attrs, values = draw_inputs(data, name)
    op = make_primitive(name, attrs)
    op.check("test", *shapes)
    return op, [np.array(v, dtype=dtype) for v in values]


def test_every_primitive_has_a_gradient_spec():
    missing = sorted(set(PRIMITIVES) - set(SPECS))
    assert not missing, f"primitives without a gradient test spec: {missing}"
    assert not set(SPECS) - set(PRIMITIVES), "specs for primitives that no longer exist"


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@settings(max_examples=scaled_examples(15))
@given(data=st.data())
def test_primitive_backward_matches_full_numeric_jacobian(name, data):
    shapes, attrs, values = draw_inputs(data, name)
    report = check_primitive(name, shapes, attrs=attrs, values=values)
    assert report.ok and report.max_abs < 1e-6


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@settings(max_examples=scaled_examples(5))
@given(data=st.data())
def test_primitive_shape_rule_matches_forward(name, data):
    shapes, attrs, values = draw_inputs(data, name)
    op = make_primitive(name, attrs)
    out_shape = op.check("test", *shapes)
    y = op.forward(np, *[np.asarray(v) for v in values])
    assert tuple(np.shape(y)) == tuple(out_shape)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@settings(max_examples=scaled_examples(5))
@given(data=st.data())
def test_primitive_backward_twice_is_bit_identical_and_leaves_its_arguments_alone(name, data):
    op, xs = draw_checked_op(data, name)
    y = op.forward(np, *xs)
    dy = np.linspace(-1, 1, np.size(y)).reshape(np.shape(y))
    before = [x.copy() for x in xs], dy.copy(), np.array(y, copy=True)
    needs = (True,) * len(xs)
    g1 = op.backward(np, dy, xs, y, needs)
    g1 = [np.array(g, copy=True) for g in g1]
    g2 = op.backward(np, dy, xs, y, needs)
    for a, b in zip(g1, g2):
        assert np.array_equal(a, b) and a.tobytes() == np.asarray(b).tobytes()
    for x, x0 in zip(xs, before[0]):
        assert np.array_equal(x, x0), "backward wrote into an input"
    assert np.array_equal(dy, before[1]), "backward wrote into dy"
    assert np.array_equal(y, before[2]), "backward wrote into y"


def test_a_wrong_backward_is_caught_and_named():
    bad = make_primitive("tanh")
    bad.backward = lambda xp, dy, xs, y, needs: (dy * (1 - y),)  # forgot the square
    with pytest.raises(GradientCheckError) as info:
        check_primitive(bad, [(2, 3)], seed=1)
    err = info.value
    assert err.kind == "primitive" and "tanh" in str(err)
    assert err.entry == "dy/d(input 0)" and len(err.index) == 4  # (out i, out j, in i, in j)
    assert err.abs_err > 1e-3 and 0 < err.rel_err <= 2


def test_a_backward_that_reads_an_undeclared_saved_value_is_caught():
    op = make_primitive("mul")
    op.saves = ()  # mul's backward needs both inputs; pretend it keeps none
    with pytest.raises(TypeError):
        check_primitive(op, [(2, 2), (2, 2)])


def test_primitive_shape_errors_name_the_shapes():
    with pytest.raises(GraphError, match=r"inner sizes differ: \(2, 3\) @ \(4, 5\)"):
        make_primitive("matmul").check("node m", (2, 3), (4, 5))
    with pytest.raises(GraphError, match=r"\(2, 3\) and \(4,\) do not broadcast"):
        make_primitive("add").check("node a", (2, 3), (4,))
    with pytest.raises(GraphError, match=r"slice \[2:5\]"):
        make_primitive("slice", (2, 5)).check("node s", (2, 3))


@pytest.mark.parametrize("rows", [1, 20, 32, 33])
def test_matmul_backward_forms_agree(rows):
    # Per-step products with few rows take the transposed BLAS form; both forms
    # and backward_into must give the textbook dy @ wᵀ and aᵀ dy.
    rng = np.random.default_rng(rows)
    a, w = rng.standard_normal((rows, 128)), rng.standard_normal((128, 256))
    dy = rng.standard_normal((rows, 256))
    op = PRIMITIVES["matmul"]()
    op.check("mm", ("N", 128), (128, 256))
    da, dw = op.backward(np, dy, (a, w), None, (True, True))
    assert da.flags.c_contiguous
    np.testing.assert_allclose(da, dy @ w.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, a.T @ dy, rtol=1e-12, atol=1e-12)
    out = (np.empty_like(a), np.empty((128, 512))[:, 100:356])  # a column slice, as for dWh[:, H:2H]
    da2, dw2 = op.backward_into(np, dy, (a, w), None, (True, True), out)
    assert da2 is out[0] and dw2 is out[1]
    np.testing.assert_allclose(da2, da, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw2, dw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1.5e-7), (np.float64, 3e-16)])
@pytest.mark.parametrize("size", [7, 5000])  # below and above the switch between the two forms
def test_sigmoid_forms_are_accurate_and_never_overflow(dtype, tol, size):
    x = np.linspace(-1000, 1000, size).astype(dtype)
    x[:5] = [-1e4, -100, 0, 100, 1e4][:min(5, size)]
    x = np.concatenate([x, np.random.default_rng(0).uniform(-8, 8, size).astype(dtype)])
    op = PRIMITIVES["sigmoid"]()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = op.forward(np, x)
    ref = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    assert y.dtype == dtype
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y, ref.astype(np.float64), rtol=0, atol=tol)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=scaled_examples(3))
@given(data=st.data())
def test_primitives_keep_the_dtype_forward_and_backward(name, dtype, data):
    # Constants inside primitives are 0-d arrays of the operands' dtype; none may
    # promote float32 work to float64 (a silent 2x in time and memory).
    op, xs = draw_checked_op(data, name, dtype)
    y = op.forward(np, *xs)
    assert y.dtype == dtype
    grads = op.backward(np, np.ones_like(y), xs, y, (True,) * len(xs))
    assert all(g.dtype == dtype for g in grads if g is not None)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@settings(max_examples=scaled_examples(5))
@given(data=st.data())
def test_a_gradient_a_primitive_says_it_passes_through_is_dy_itself(name, data):
    # The generated BPTT loop trusts passes_gradient() and skips backward for those inputs.
    op, xs = draw_checked_op(data, name)
    y = op.forward(np, *xs)
    dy = np.linspace(-1, 1, np.size(y)).reshape(np.shape(y))
    grads = op.backward(np, dy, xs, y, (True,) * len(xs))
    for passed, g in zip(op.passes_gradient(), grads):
        if passed:
            np.testing.assert_array_equal(g, dy)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_every_primitive_states_its_local_rule_one_line_per_input(name):
    cls = PRIMITIVES[name]
    assert len(cls.rule) == (cls.arity or 1), "one line per input (concat: one line for all)"
    for line in cls.rule:
        lhs, _, rhs = line.partition(" = ")
        assert lhs.startswith("d") and "dy" in rhs and len(line) <= 28, line
