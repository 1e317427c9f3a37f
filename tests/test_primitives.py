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

import graphrnn as gr
from graphrnn.primitives import BUILTIN, PRIMITIVES, GraphError
from checked import RoundST
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


@st.composite
def with_attr(draw, base, values):
    shapes, _ = draw(base)
    return shapes, (draw(st.sampled_from(values)),)


@st.composite
def ternary(draw):
    """where(m, a, b): three operands, any of them a row or a Python scalar."""
    n, w = draw(dim), draw(dim)
    return [draw(st.sampled_from([(n, w), (w,), ()])) if i else (n, w) for i in range(3)], ()


@st.composite
def square_param(draw):
    return [(draw(dim), draw(dim))], ()


def off_grid(step, lo=-2.0, hi=2.0):
    """Values at least 1% of ``step`` away from its multiples: central
    differences must not straddle a jump of floor, % or a comparison."""
    return values_in(lo, hi).filter(lambda v: abs(v / step - round(v / step)) > 0.01)


def on_half_grid(parity):
    """a on odd sixteenths, b on even ones: never a tie, so max/min and comparisons
    are differentiable at every drawn point (ties are tested by hand below)."""
    return st.integers(-16, 15).map(lambda k: (2 * k + parity) / 16)


# name -> (strategy of (shapes, attrs), element strategy, or one per input)
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
    "div": (binary(), values_in(-2, 2, away_from_zero=0.3)),
    "pow": (with_attr(unary(), [2, 3, 0.5, -1.0, 1.5]), values_in(0.3, 2)),
    "sqrt": (unary(), values_in(0.2, 2)),
    "log": (unary(), values_in(0.2, 2)),
    "abs": (unary(), values_in(away_from_zero=1e-3)),
    "sin": (unary(), values_in(-4, 4)),
    "cos": (unary(), values_in(-4, 4)),
    "maximum": (binary(), (on_half_grid(1), on_half_grid(0))),
    "minimum": (binary(), (on_half_grid(1), on_half_grid(0))),
    "gt": (binary(), (on_half_grid(1), on_half_grid(0))),
    "lt": (binary(), (on_half_grid(1), on_half_grid(0))),
    "ge": (binary(), (on_half_grid(1), on_half_grid(0))),
    "le": (binary(), (on_half_grid(1), on_half_grid(0))),
    "where": (ternary(), (st.sampled_from([-0.5, 0.5]), values_in(), values_in())),
    "floor": (unary(), off_grid(1.0, -3, 3)),
    "mod": (with_attr(unary(), [1.0, 0.5, -0.5, 2.0]), off_grid(0.25)),
    "sum": (unary(), values_in()),
    "mean": (unary(), values_in()),
    "transpose": (square_param(), values_in()),
}


def draw_inputs(data, name):
    shapes_attrs, elements = SPECS[name]
    shapes, attrs = data.draw(shapes_attrs, label="shapes, attrs")
    per_input = elements if isinstance(elements, tuple) else (elements,) * len(shapes)
    values = [data.draw(hnp.arrays(np.float64, s, elements=el)) if s
              else data.draw(el, label="scalar") for s, el in zip(shapes, per_input)]
    return shapes, attrs, values


def draw_checked_op(data, name, dtype=np.float64):
    """A primitive checked against drawn shapes, and its inputs as arrays of dtype."""
    shapes, attrs, values = draw_inputs(data, name)
    op = make_primitive(name, attrs)
    op.check("test", *shapes)
    return op, [np.array(v, dtype=dtype) for v in values]


def test_every_primitive_has_a_gradient_spec():
    missing = sorted(BUILTIN - set(SPECS))
    assert not missing, f"primitives without a gradient test spec: {missing}"
    assert not set(SPECS) - BUILTIN, "specs for primitives that no longer exist"


@pytest.mark.parametrize("name", sorted(BUILTIN))
@settings(max_examples=scaled_examples(15))
@given(data=st.data())
def test_primitive_backward_matches_full_numeric_jacobian(name, data):
    shapes, attrs, values = draw_inputs(data, name)
    report = check_primitive(name, shapes, attrs=attrs, values=values)
    assert report.ok and report.max_abs < 1e-6


@pytest.mark.parametrize("name", sorted(BUILTIN))
@settings(max_examples=scaled_examples(5))
@given(data=st.data())
def test_primitive_shape_rule_matches_forward(name, data):
    shapes, attrs, values = draw_inputs(data, name)
    op = make_primitive(name, attrs)
    out_shape = op.check("test", *shapes)
    y = op.forward(np, *[np.asarray(v) for v in values])
    assert tuple(np.shape(y)) == tuple(out_shape)


@pytest.mark.parametrize("name", sorted(BUILTIN))
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
    op = make_primitive("tanh")
    op.saves = ()  # tanh's backward reads y; pretend it keeps nothing
    with pytest.raises(GradientCheckError, match="saved_for"):
        check_primitive(op, [(2, 2)])
    op = make_primitive("mul")
    op.saves = ()  # mul's saved_for still names both inputs: outside what it declares
    with pytest.raises(GradientCheckError, match=r"within saves=\(\)"):
        check_primitive(op, [(2, 2), (2, 2)])


@pytest.mark.parametrize("name,shapes", [("matmul", [(2, 3), (3, 2)]), ("mul", [(2, 3), (2, 3)]),
                                         ("div", [(2, 3), (2, 3)]), ("where", [(2, 3)] * 3)])
def test_a_wrong_saved_for_fails_the_primitive_check(name, shapes):
    # The planner hands backward only saved_for(needs); the checker must too, for
    # every combination of needs. Each input's gradient is made to read itself
    # only (MatMul then has no w for da): the all-needs run still passes.
    op = make_primitive(name)
    op.saved_for = lambda needs: {i for i, need in enumerate(needs) if need} & set(op.saves)
    values = [np.full(s, 0.75) for s in shapes]
    with pytest.raises(GradientCheckError, match="saved_for"):
        check_primitive(op, shapes, values=values)


def test_ties_and_kinks_follow_the_stated_conventions():
    def grads(name, *xs, attrs=()):
        op = make_primitive(name, attrs)
        op.check("t", *[np.shape(x) for x in xs])
        xs = [np.asarray(x, dtype=np.float64) for x in xs]
        y = op.forward(np, *xs)
        return op.backward(np, np.ones_like(y), xs, y, (True,) * len(xs))
    a, b = np.array([1.0, 2.0]), np.array([1.0, 3.0])
    assert [g.tolist() for g in grads("maximum", a, b)] == [[1, 0], [0, 1]]  # the tie goes to a
    assert [g.tolist() for g in grads("minimum", a, b)] == [[1, 1], [0, 0]]
    assert grads("abs", np.array([0.0, -2.0, 3.0]))[0].tolist() == [0, -1, 1]
    assert grads("relu", np.array([0.0, 1.0]))[0].tolist() == [0, 1]
    assert grads("floor", np.array([1.0, 1.5]))[0].tolist() == [0, 0]
    assert grads("mod", np.array([1.0, -0.25]), attrs=(0.5,))[0].tolist() == [1, 1]
    assert all(np.all(g == 0) for g in grads("gt", a, b))
    y = make_primitive("mod", (0.5,)).forward(np, np.array([-0.25, 1.25]))
    assert y.tolist() == [0.25, 0.25]  # the divisor's sign, as Python's %


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


@pytest.mark.parametrize("name", sorted(BUILTIN))
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


@pytest.mark.parametrize("name", sorted(BUILTIN))
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


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_primitive_states_its_local_rule_one_line_per_input(name):
    cls = PRIMITIVES[name]
    assert len(cls.rule) == (cls.arity or 1), "one line per input (concat: one line for all)"
    for line in cls.rule:
        lhs, _, rhs = line.partition(" = ")
        assert lhs.startswith("d") and "dy" in rhs and len(line) <= 28, line


@pytest.mark.parametrize("name", sorted(BUILTIN))
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_every_primitive_states_its_calculus_as_trees_one_per_input(name, data):
    """The one table explain, export and the diagrams print from (their outputs
    are tested there): every built-in states its forward and each input's gradient."""
    op, xs = draw_checked_op(data, name)
    assert type(op).formulas()
    args = [("v", i) for i in range(len(xs))]
    assert isinstance(op.formula(args), tuple)
    for i in range(len(xs)):
        tree = op.gradient(i, ("g", "y"), args, ("v", "y"))
        assert isinstance(tree, tuple) and tree[0] in _TREE_HEADS, tree


_TREE_HEADS = {"v", "g", "num", "bin", "mm", "neg", "T", "sq", "pos", "fn", "cols", "cat", "sumto", "pow",
               "mod", "mask", "cmp", "where", "repeat", "scale", "zero", "piece"}


# --------------------------------------------------------------------------- user primitives

class Softsign(gr.Elementwise):
    """y = x / (1 + |x|);  dx = dy / (1 + |x|)²"""
    name = "softsign_test"
    rule = ("dx = dy / (1+|x|)²",)
    saves = (0,)

    def forward(self, xp, x, out=None):
        return xp.divide(x, 1 + xp.abs(x), out=out)

    def backward(self, xp, dy, xs, y, needs):
        return (dy / (1 + xp.abs(xs[0])) ** 2,)


@pytest.fixture
def registered():
    names = []

    def register(cls):
        fn = gr.register_primitive(cls)
        names.append(cls.name)
        return fn
    yield register
    for name in names:
        PRIMITIVES.pop(name, None)


def test_a_user_primitive_runs_in_a_cell_is_checked_and_drawn(registered):
    round_st, softsign = registered(RoundST), registered(Softsign)
    report = check_primitive(Softsign, [(2, 3)])
    assert report.ok and not report.skipped
    report = check_primitive(RoundST, [(2, 3)])
    assert report.entries == [] and "surrogate" in report.skipped[0] and "surrogate" in str(report)
    c = gr.CellBuilder("skip")
    x, h = c.input("x", 2), c.state("h", 3)
    a = x @ c.param("W", (2, 3)) + h @ c.param("U", (3, 3))
    c.update(h=softsign(a) + 0.1 * round_st(gr.tanh(a)))
    cell = c.build()
    params, xs, state0 = gr.testing.random_inputs(cell, np.random.default_rng(0))
    run = gr.unroll(cell, params, xs, state0)
    naive = gr.unroll_naive(cell, params, xs, state0)
    np.testing.assert_allclose(run.hs, naive.hs, rtol=1e-12)
    dot = gr.render(cell).source
    assert "softsign_test" in dot and "round_st_test" in dot


def test_a_user_backward_into_that_ignores_its_destination_is_named_not_read_as_garbage(registered):
    """The after-loop is recorded on backward_into's contract (a gradient given a
    destination is that destination); one that writes elsewhere is refused by name."""
    from graphrnn.primitives import MatMul

    class Elsewhere(MatMul):
        name = "matmul_elsewhere_test"

        def backward_into(self, xp, dy, xs, y, needs, out):
            return self.backward(xp, dy, xs, y, needs)   # fresh arrays: out left as it was

    mm = registered(Elsewhere)
    c = gr.CellBuilder("elsewhere")
    x, h = c.input("x", 2), c.state("h", 3)
    c.update(h=gr.tanh(mm(x, c.param("W", (2, 3))) + h @ c.param("U", (3, 3))))
    cell = c.build()
    params, xs, state0 = gr.testing.random_inputs(cell, np.random.default_rng(0))
    run = gr.unroll(cell, params, xs, state0, engine="numpy")
    with pytest.raises(GraphError, match="matmul_elsewhere_test.*input 0.*out\\[0\\]"):
        run.backward(np.ones_like(run.hs))


def test_a_wrong_user_rule_is_named_by_the_checker(registered):
    class Bad(Softsign):
        name = "softsign_bad_test"

        def backward(self, xp, dy, xs, y, needs):
            return (dy / (1 + xp.abs(xs[0])),)  # forgot the square
    with pytest.raises(GradientCheckError) as info:
        check_primitive(Bad, [(2, 3)])
    assert info.value.entry == "dy/d(input 0)"


def test_user_primitive_mistakes_are_one_line_graph_errors(registered):
    registered(Softsign)
    with pytest.raises(GraphError, match="already registered"):
        gr.register_primitive(Softsign)
    with pytest.raises(GraphError, match="already registered"):
        gr.register_primitive(type("T", (Softsign,), {"name": "tanh"}))

    class TwoInputs(gr.Primitive):
        name, arity = "two_test", 1

        def shape(self, where, a, b):
            return a

        def forward(self, xp, a, b, out=None):
            return a + b

        def backward(self, xp, dy, xs, y, needs):
            return dy, dy
    with pytest.raises(GraphError, match="arity 1 but forward takes 2 inputs"):
        gr.register_primitive(TwoInputs)

    class Shape(Softsign):
        name = "shape_test"

        def backward(self, xp, dy, xs, y, needs):
            return (dy.sum(axis=0),)
    with pytest.raises(GraphError, match=r"gradient of shape \(3,\) for input 0 of shape \(2, 3\)"):
        gr.register_primitive(Shape)
    with pytest.raises(GraphError) as info:
        gr.register_primitive(Shape)
    assert "\n" not in str(info.value)
    softsign = registered(type("S2", (Softsign,), {"name": "softsign2_test"}))
    x = gr.CellBuilder("arity").input("x", 2)
    with pytest.raises(GraphError, match="softsign2_test takes 1 value, got 2"):
        softsign(x, x)


def test_unsupported_operations_on_values_name_the_spelling():
    c = gr.CellBuilder("errors")
    x = c.input("x", 3)
    with pytest.raises(GraphError, match=r"numpy's maximum.*use gr.maximum"):
        np.maximum.reduce(x)
    assert np.maximum(x, 0.0).label == "maximum(x, 0)"  # a ufunc with a primitive runs it
    with pytest.raises(GraphError, match="use gr.where"):
        np.where(x, x, x)
    with pytest.raises(GraphError, match=r"has no 'std'; use gr.sqrt"):
        x.std()
    with pytest.raises(GraphError, match="numpy's round"):
        np.round(x)
    with pytest.raises(GraphError, match="exponent must be a Python number"):
        x ** x
    with pytest.raises(GraphError, match="keepdims=True"):
        x.mean(axis=-1, keepdims=False)
    with pytest.raises(GraphError, match=r"\.T is for a 2-D value of parameters"):
        x.T
    assert not hasattr(x, "no_such_thing")  # still an AttributeError for hasattr
