"""Language-model layers and RNNLM: every hand-written backward against float64
central differences (Hypothesis draws the sizes), the fused output layer's
stability, tying, dropout, the carried state and generation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphrnn import GraphError
from graphrnn.layers import Affine, Dropout, Embedding, SoftmaxCrossEntropy, SoftmaxOutput
from graphrnn.models import RNNLM
from graphrnn.testing import GradientCheckError, check_function

sizes = st.integers(1, 5)


def reference_nll(z, t):
    """Mean −log softmax(z)[t], by the textbook formula in float64 with a max shift."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(axis=1)) + m[:, 0]
    return float(np.mean(lse - z[np.arange(len(t)), t]))


@given(rows=sizes, vocab=sizes, dim=sizes, seed=st.integers(0, 2**16))
def test_embedding_backward_is_a_scatter_add_matching_central_differences(rows, vocab, dim, seed):
    rng = np.random.default_rng(seed)
    params = {"embed.W": rng.uniform(-1, 1, (vocab, dim))}
    ids = rng.integers(0, vocab, (rows, 2))          # repeated ids: their rows must add up
    w = rng.uniform(-1, 1, (rows, 2, dim))
    emb = Embedding(vocab, dim)

    def f():
        return float(np.sum(w * emb.forward(params, ids)))
    f()
    grads = {}
    emb.backward(w, grads)
    check_function(f, params, grads, subject="Embedding")


@given(rows=sizes, vocab=sizes, dim=sizes, seed=st.integers(0, 2**16))
def test_embedding_gradient_of_a_second_batch_is_that_batchs_alone(rows, vocab, dim, seed):
    """Two steps into one gradient dict, as a training loop uses it: a backward
    that added to the first batch's gradient instead of replacing it fails."""
    rng = np.random.default_rng(seed)
    params = {"embed.W": rng.uniform(-1, 1, (vocab, dim))}
    emb = Embedding(vocab, dim)
    grads = {}
    emb.forward(params, rng.integers(0, vocab, (rows, 2)))
    emb.backward(rng.uniform(0.5, 1, (rows, 2, dim)), grads)
    ids = rng.integers(0, vocab, (rows, 2))
    w = rng.uniform(-1, 1, (rows, 2, dim))

    def f():
        return float(np.sum(w * emb.forward(params, ids)))
    f()
    emb.backward(w, grads)
    check_function(f, params, grads, subject="Embedding, second batch")


@given(rows=sizes, n_in=sizes, n_out=sizes, seed=st.integers(0, 2**16))
def test_affine_over_all_rows_matches_central_differences(rows, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    inputs = {"out.W": rng.uniform(-1, 1, (n_in, n_out)), "out.b": rng.uniform(-1, 1, (n_out,)),
              "x": rng.uniform(-1, 1, (rows, 3, n_in))}
    aff = Affine(n_in, n_out)
    w = rng.uniform(-1, 1, (rows, 3, n_out))

    def f():
        return float(np.sum(w * aff.forward(inputs, inputs["x"])))
    f()
    grads = {}
    grads["x"] = aff.backward(inputs, w, grads)
    check_function(f, inputs, grads, subject="Affine")


@given(rows=sizes, vocab=sizes, seed=st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_central_differences(rows, vocab, seed):
    rng = np.random.default_rng(seed)
    inputs = {"z": rng.uniform(-3, 3, (rows, 2, vocab))}
    t = rng.integers(0, vocab, (rows, 2))
    ce = SoftmaxCrossEntropy()

    def f():
        return ce.forward(inputs["z"], t)
    loss = f()
    assert loss == pytest.approx(reference_nll(inputs["z"].reshape(-1, vocab), t.reshape(-1)) * rows * 2,
                                 rel=1e-12)
    check_function(f, inputs, {"z": ce.backward()}, subject="SoftmaxCrossEntropy")


def output_case(rng, rows, n_in, vocab, layout, scale=1.0):
    """Inputs of a SoftmaxOutput in one of its three layouts: joint [W; b], separate, tied (V, in)."""
    x = rng.uniform(-1, 1, (rows, n_in))
    if layout == "joint":
        joint = rng.uniform(-scale, scale, (n_in + 1, vocab))
        return {"x": x, "joint": joint}, lambda a: (a["joint"][:n_in], a["joint"][n_in], a["joint"])
    if layout == "tied":
        return ({"x": x, "E": rng.uniform(-scale, scale, (vocab, n_in)), "b": rng.uniform(-1, 1, vocab)},
                lambda a: (a["E"], a["b"], None))
    return ({"x": x, "W": rng.uniform(-scale, scale, (n_in, vocab)), "b": rng.uniform(-1, 1, vocab)},
            lambda a: (a["W"], a["b"], None))


@given(rows=sizes, n_in=sizes, vocab=st.integers(1, 7), layout=st.sampled_from(["joint", "separate", "tied"]),
       seed=st.integers(0, 2**16))
def test_fused_softmax_output_matches_central_differences(rows, n_in, vocab, layout, seed):
    rng = np.random.default_rng(seed)
    inputs, parts = output_case(rng, rows, n_in, vocab, layout)
    t = rng.integers(0, vocab, rows)
    layer = SoftmaxOutput(n_in, vocab, transposed=layout == "tied")

    def f():
        W, b, joint = parts(inputs)
        return layer.forward(inputs["x"], t, W, b, joint)
    loss = f()
    W, b, joint = parts(inputs)
    assert loss == pytest.approx(reference_nll(inputs["x"] @ (W.T if layout == "tied" else W) + b, t), rel=1e-12)
    grads = {k: np.zeros_like(v) for k, v in inputs.items()}
    dW, db, djoint = parts(grads)
    grads["x"] = layer.backward(W, dW, db, djoint)
    check_function(f, inputs, grads, subject=f"SoftmaxOutput({layout})")


@pytest.mark.parametrize("dtype, scale", [(np.float64, 400.0), (np.float32, 60.0)])
def test_fused_softmax_output_recomputes_rows_that_overflow_or_underflow(dtype, scale):
    rng = np.random.default_rng(1)
    rows, n_in, vocab = 6, 3, 5
    x = rng.uniform(-1, 1, (rows, n_in)).astype(dtype)
    x[0] = [3, 3, 3]       # scores near +3·scale: exp overflows without the shift
    x[1] = [-3, -3, -3]
    W = rng.uniform(0.9, 1.0, (n_in, vocab)).astype(dtype) * dtype(scale)
    W[:, 1] *= dtype(-1)   # row 1's best score is then about +3·scale, the rest far below
    b = np.zeros(vocab, dtype)
    t = rng.integers(0, vocab, rows)
    layer = SoftmaxOutput(n_in, vocab)
    loss = layer.forward(x, t, W, b)
    assert np.isfinite(loss)
    assert loss == pytest.approx(reference_nll(x.astype(np.float64) @ W.astype(np.float64), t),
                                 rel=1e-5 if dtype == np.float32 else 1e-12)
    dW, db = np.zeros_like(W), np.zeros_like(b)
    dx = layer.backward(W, dW, db)
    assert np.isfinite(dx).all() and np.isfinite(dW).all()
    # the rows' probabilities still sum to one: db sums to zero up to rounding
    assert abs(float(db.sum())) < (1e-5 if dtype == np.float32 else 1e-12)


def test_dropout_scales_kept_units_and_passes_the_same_mask_back():
    rng = np.random.default_rng(0)
    d = Dropout(0.25)
    x = np.ones((400, 50), dtype=np.float32)
    y = d.forward(x, np.random.default_rng(3))
    kept = y != 0
    assert 0.70 < kept.mean() < 0.80
    assert np.allclose(y[kept], 1 / 0.75)
    dy = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(d.backward(dy), np.where(kept, dy / np.float32(0.75), 0), rtol=1e-6)
    assert d.forward(x, np.random.default_rng(3), train=False) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


# ------------------------------------------------------------------ the whole model

def model_case(cell, layers, tie, dropout, seed=0, vocab=7, size=4):
    m = RNNLM(vocab, size, size, cell=cell, layers=layers, dropout=dropout, tie_weights=tie,
              seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 1)
    for v in m.params.values():           # away from the zero biases and tiny embeddings
        v += rng.normal(size=v.shape) * 0.3
    xs, ts = rng.integers(0, vocab, (2, 3)), rng.integers(0, vocab, (2, 3))
    m.forward(xs, ts)                     # a carried state to start from
    return m, xs, ts, m.get_state()


@given(cell=st.sampled_from(["lstm", "gru", "mgu", "rnn"]), layers=st.integers(1, 2), tie=st.booleans(),
       dropout=st.sampled_from([0.0, 0.4]), seed=st.integers(0, 100))
def test_rnnlm_gradient_matches_central_differences(cell, layers, tie, dropout, seed):
    m, xs, ts, state = model_case(cell, layers, tie, dropout, seed)

    def f():
        m.set_state(state)                  # the same carried state every time
        m.rng = np.random.default_rng(5)   # the same dropout masks every time
        return m.forward(xs, ts)
    f()
    m.backward()
    grads = {k: v.copy() for k, v in m.grads.items()}
    check_function(f, m.params, grads, subject=f"RNNLM({cell}, layers={layers}, tie={tie})", kind="model")


@pytest.mark.parametrize("tie", [False, True])
def test_rnnlm_gradient_of_a_second_step_is_that_steps_alone(tie):
    """Two training steps on one model (its gradient buffers reused): the
    second batch's gradients match central differences of the second loss."""
    m, xs, ts, _ = model_case("gru", 1, tie, 0.0)
    m.backward()                                   # the first step's gradients, left in m.grads
    rng = np.random.default_rng(9)
    xs2, ts2 = rng.integers(0, 7, (2, 3)), rng.integers(0, 7, (2, 3))
    state = m.get_state()

    def f():
        m.set_state(state)
        return m.forward(xs2, ts2)
    f()
    m.backward()
    grads = {k: v.copy() for k, v in m.grads.items()}
    check_function(f, m.params, grads, subject=f"RNNLM second step (tie={tie})", kind="model")


def test_tied_embedding_gradient_is_the_sum_of_both_uses():
    tied, xs, ts, state = model_case("lstm", 1, True, 0.0)
    tied.set_state(state)
    tied.forward(xs, ts)
    tied.backward()
    both = tied.grads["embed.W"].copy()
    # Rows never fed as input get only the output layer's part; rows fed get both parts.
    unused = sorted(set(range(7)) - set(xs.reshape(-1).tolist()))
    assert unused and np.abs(both[unused]).max() > 0
    # The output layer's part alone: the same model with the embedding's gradient switched off.
    tied.set_state(state)
    tied.forward(xs, ts)
    tied.embed.backward = lambda dy, grads, accumulate=False: grads["embed.W"]
    tied.backward()
    out_part = tied.grads["embed.W"].copy()
    assert not np.allclose(out_part[xs.reshape(-1)], both[xs.reshape(-1)])
    np.testing.assert_array_equal(out_part[unused], both[unused])


def test_rnnlm_checker_catches_a_wrong_tied_gradient():
    m, xs, ts, state = model_case("gru", 1, True, 0.0)

    def f():
        m.set_state(state)
        return m.forward(xs, ts)
    f()
    m.backward()
    grads = {k: v.copy() for k, v in m.grads.items()}
    grads["embed.W"] *= 1.001
    with pytest.raises(GradientCheckError, match="embed.W"):
        check_function(f, m.params, grads, subject="wrong")


def test_state_is_carried_across_batches_until_reset():
    m = RNNLM(11, 6, 6, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 11, (3, 4))
    b = rng.integers(0, 11, (3, 4))
    m.forward(a, b)
    carried = m.forward(b, a)
    m.reset_state()
    fresh = m.forward(b, a)
    assert carried != fresh
    # one window of 8 equals two of 4 with the state carried
    m.reset_state()
    whole = m.logits(np.concatenate([a, b], axis=1))
    m.reset_state()
    halves = np.concatenate([m.logits(a), m.logits(b)], axis=1)
    np.testing.assert_allclose(whole, halves, rtol=1e-12, atol=1e-12)


def test_generate_is_seeded_respects_exclusions_and_leaves_the_model_as_it_was():
    m = RNNLM(9, 5, 5, cell="gru", dropout=0.3, seed=0)
    m.forward(np.ones((2, 3), dtype=np.int64), np.ones((2, 3), dtype=np.int64))
    state = {k: v.copy() for k, v in m.get_state().items()}
    a = m.generate([1, 2], 40, seed=7, exclude=[0, 3])
    assert a == m.generate([1, 2], 40, seed=7, exclude=[0, 3])
    assert len(a) == 40 and not {0, 3} & set(a)
    assert m.training
    for k, v in m.get_state().items():
        np.testing.assert_array_equal(v, state[k])
    # temperature: near 0 nearly always the likeliest next word, large nearly uniform
    def top_share(words):
        return np.bincount(words).max() / len(words)
    assert top_share(m.generate(1, 300, temperature=1e-3, seed=1)) > 2 * top_share(
        m.generate(1, 300, temperature=100.0, seed=1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(tie_weights=True, wordvec_size=4, hidden_size=5), "tied weights need wordvec_size == hidden_size"),
    (dict(cell="nosuch"), "unknown cell 'nosuch'"),
    (dict(layers=0), "layers must be a positive integer"),
])
def test_rnnlm_refuses_bad_settings_naming_them(kwargs, match):
    args = dict(vocab_size=5, wordvec_size=4, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(GraphError, match=match):
        RNNLM(**args)


def test_rnnlm_refuses_ids_outside_the_vocabulary_and_float_inputs():
    m = RNNLM(5, 3, 3)
    ok = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(GraphError, match=r"ids outside \[0, 5\)"):
        m.forward(ok + 5, ok)
    with pytest.raises(GraphError, match="integer word ids"):
        m.forward(ok.astype(np.float32), ok)
    with pytest.raises(GraphError, match="ts has shape"):
        m.forward(ok, ok[:, :2])
