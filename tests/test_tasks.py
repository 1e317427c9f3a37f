"""Short runs of each classic task that must show learning."""
import math

import numpy as np
import pytest

from graphrnn import data, tasks
from graphrnn.layers import Affine, SigmoidMSE, SoftmaxCrossEntropy, SquaredError
from graphrnn.testing import _numeric_grad


def make(name, **overrides):
    cls = tasks.get(name)
    return cls(cls.resolve_config(overrides))


def train(task, n):
    return [task.step(i) for i in range(n)]


def test_binary_addition_is_right_on_pairs_it_never_saw():
    # a higher rate than the original's 0.1 so that the test is short
    task = make("binary-addition", lr=0.5)
    train(task, 3000)
    m = task.final_metrics()
    assert m["pairs_unseen"] > 5000
    assert m["accuracy_unseen"] >= 0.99
    assert m["accuracy"] >= 0.99


def test_binary_addition_reproduces_the_original_programs_first_errors():
    # iamtrask's program with np.random.seed(0) prints "Error:[3.45638663]" at
    # iteration 0 and "[3.63389116]" at 1000: same draws, same arithmetic.
    task = make("binary-addition")
    task.step(0)
    assert task.error == pytest.approx(3.45638663, abs=1e-8)
    for i in range(1, 1001):
        task.step(i)
    assert task.error == pytest.approx(3.63389116, abs=1e-7)


def test_primes_loss_falls_by_more_than_100x():
    task = make("primes")
    losses = train(task, 200)
    assert losses[-1] < losses[0] / 100


def test_lstm_toy_loss_falls_by_five_orders_of_magnitude_to_the_originals():
    # Nico Jimenez's example_0 ends at a loss of about 2.6e-06 after 100 iterations.
    task = make("lstm-toy")
    losses = train(task, 100)
    assert losses[-1] < losses[0] * 1e-5
    assert losses[-1] == pytest.approx(2.6e-06, rel=0.02)
    m = task.final_metrics()
    assert m["targets"] == [-0.5, 0.2, 0.1, -0.5] and m["max_abs_error"] < 0.002
    # the original's initialisation: the four gates start equal
    assert np.array_equal(make("lstm-toy").params["Wg"], make("lstm-toy").params["Wo"])
    other = make("lstm-toy", init="independent")
    assert not np.array_equal(other.params["Wg"], other.params["Wo"])
    losses = train(other, 100)
    assert losses[-1] < losses[0] * 1e-4


def test_dinosaur_loss_per_character_falls_below_its_start():
    task = make("dinosaurs")
    n = 1000
    losses = np.array(train(task, n))
    lengths = np.array([task.examples[task.order[i % len(task.order)]][1].shape[1] for i in range(n)])
    start = math.log(27)  # a uniform guess
    late = losses[-500:].sum() / lengths[-500:].sum()
    assert late < 0.75 * start
    names = task.sample(7, 0)
    assert len(names) == 7
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz") and len(s) <= 50 for s in names)
    assert sum(len(s) for s in names) > 0


def test_dinosaurs_learns_with_a_gru_too():
    task = make("dinosaurs", cell="gru", hidden=32, lr=0.05)
    n = 800
    losses = np.array(train(task, n))
    lengths = np.array([task.examples[task.order[i % len(task.order)]][1].shape[1] for i in range(n)])
    assert losses[-300:].sum() / lengths[-300:].sum() < 0.85 * math.log(27)


def test_unknown_setting_cell_and_bad_sizes_are_named():
    with pytest.raises(tasks.TaskError, match="unknown task 'nope'"):
        tasks.get("nope")
    with pytest.raises(tasks.TaskError, match="unknown cell 'nope'"):
        make("primes", cell="nope")
    with pytest.raises(tasks.TaskError, match="hidden must be a positive integer, got -3"):
        make("primes", hidden=-3)
    with pytest.raises(tasks.TaskError, match="lr must be a positive"):
        make("primes", lr=-1.0)


def test_dino_loader_names_the_bad_line(tmp_path):
    p = tmp_path / "names.txt"
    p.write_text("Abc\n\nde2f\n")
    with pytest.raises(data.DataError, match="line 3"):
        data.load_dinos(p)
    with pytest.raises(data.DataError, match="not found"):
        data.load_dinos(tmp_path / "missing.txt")
    with pytest.raises(tasks.TaskError, match="line 3"):
        make("dinosaurs", data=str(p))


def test_primes_data_follows_the_definition():
    xs, ys = data.primes_sequence()
    p = data.primes_below(100)
    assert len(p) == 25
    assert xs.shape == (10, 50)
    np.testing.assert_allclose(xs[3, :3], p[3:6] / 100)
    np.testing.assert_allclose(xs[3, 22], p[0] / 100)  # index 25 wraps to 0
    np.testing.assert_allclose(ys[3], p[(3 + 50) % 25] / 100)


def test_bit_table_is_least_significant_first():
    t = data.bit_table(8)
    assert t[6].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    xs, ys = data.addition_batch(t, np.array([3]), np.array([5]))
    assert ys[0, :, 0].tolist() == t[8].tolist()


def numeric_grad(f, x):
    return _numeric_grad(f, x, 1e-6, "full", 0, None)[1]  # the gradient checker's central differences


def test_output_layers_backward_matches_central_differences():
    rng = np.random.default_rng(0)
    hs = rng.normal(size=(2, 3, 4))
    params = {"out.W": rng.normal(size=(4, 5)), "out.b": rng.normal(size=(5,))}
    targets = rng.integers(0, 5, size=(2, 3))
    aff, ce = Affine(4, 5), SoftmaxCrossEntropy()

    def loss():
        return ce.forward(aff.forward(params, hs), targets)
    loss()
    grads = {}
    dhs = aff.backward(params, ce.backward(), grads)
    np.testing.assert_allclose(dhs, numeric_grad(loss, hs), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["out.W"], numeric_grad(loss, params["out.W"]), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["out.b"], numeric_grad(loss, params["out.b"]), rtol=1e-6, atol=1e-8)

    z = rng.normal(size=(2, 3, 1))
    y = rng.integers(0, 2, size=(2, 3, 1)).astype(float)
    for fn in (SigmoidMSE(), SquaredError()):
        def lossz():
            return fn.forward(z, y)
        lossz()
        np.testing.assert_allclose(fn.backward(), numeric_grad(lossz, z), rtol=1e-6, atol=1e-8)
