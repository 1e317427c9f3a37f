import math

import numpy as np
import pytest

from graphrnn import optim


def quad_problem(seed=0):
    rng = np.random.default_rng(seed)
    target = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    params = {k: np.zeros_like(v) for k, v in target.items()}
    return params, target


def quad_grads(params, target):
    # gradient of 0.5 * ||p - target||^2
    return {k: params[k] - target[k] for k in params}


def test_sgd_step_is_p_minus_lr_g_in_place():
    p = {"w": np.array([1.0, -2.0, 3.0])}
    keep = p["w"]
    opt = optim.SGD(p, lr=0.5)
    opt.step({"w": np.array([2.0, 2.0, -4.0])})
    assert p["w"] is keep
    np.testing.assert_array_equal(p["w"], [0.0, -3.0, 5.0])


def test_sgd_converges_on_a_quadratic():
    params, target = quad_problem()
    opt = optim.SGD(params, lr=0.3)
    for _ in range(100):
        opt.step(quad_grads(params, target))
    for k in params:
        np.testing.assert_allclose(params[k], target[k], atol=1e-10)


def test_adam_first_step_moves_each_element_by_lr():
    # with bias correction the first Adam step is lr * sign(g) (up to eps)
    p = {"w": np.array([0.0, 0.0, 0.0])}
    opt = optim.Adam(p, lr=0.01)
    opt.step({"w": np.array([3.0, -0.1, 100.0])})
    np.testing.assert_allclose(p["w"], [-0.01, 0.01, -0.01], rtol=1e-4)


def test_adam_matches_a_direct_transcription_of_the_paper():
    rng = np.random.default_rng(1)
    p = {"w": rng.normal(size=5)}
    ref = p["w"].copy()
    m = np.zeros(5)
    v = np.zeros(5)
    opt = optim.Adam(p, lr=0.05, beta1=0.8, beta2=0.99, eps=1e-7)
    for t in range(1, 8):
        g = rng.normal(size=5)
        opt.step({"w": g.copy()})
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g * g
        mh = m / (1 - 0.8 ** t)
        vh = v / (1 - 0.99 ** t)
        ref = ref - 0.05 * mh / (np.sqrt(vh) + 1e-7 / math.sqrt(1 - 0.99 ** t))
    # eps enters after the folded correction; compare with that exact placement
    np.testing.assert_allclose(p["w"], ref, rtol=1e-12, atol=1e-14)


def test_adam_converges_on_a_quadratic():
    params, target = quad_problem(2)
    opt = optim.Adam(params, lr=0.05)
    for _ in range(2000):
        opt.step(quad_grads(params, target))
    for k in params:
        np.testing.assert_allclose(params[k], target[k], atol=1e-3)


def test_adam_state_round_trip_continues_identically():
    params, target = quad_problem(3)
    opt = optim.Adam(params, lr=0.1)
    for _ in range(5):
        opt.step(quad_grads(params, target))
    arrays, meta = opt.state_dict()
    arrays = {k: v.copy() for k, v in arrays.items()}
    copy = {k: v.copy() for k, v in params.items()}
    opt2 = optim.Adam(copy, lr=0.1)
    opt2.load_state_dict(arrays, meta)
    for _ in range(5):
        opt.step(quad_grads(params, target))
        opt2.step(quad_grads(copy, target))
    for k in params:
        np.testing.assert_array_equal(params[k], copy[k])


def test_optimizer_state_for_another_optimizer_is_refused():
    p = {"w": np.zeros(2)}
    arrays, meta = optim.SGD(p, lr=0.1).state_dict()
    with pytest.raises(optim.OptimError, match="sgd"):
        optim.Adam(p).load_state_dict(arrays, meta)


@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf")])
def test_bad_learning_rate_is_refused(lr):
    with pytest.raises(optim.OptimError, match="learning rate"):
        optim.SGD({"w": np.zeros(1)}, lr=lr)


def test_clip_elementwise_bounds_each_element_in_place():
    g = {"a": np.array([-10.0, -5.0, 0.5, 7.0]), "b": np.array([[6.0, -6.0]])}
    keep = g["a"]
    optim.clip_elementwise(g, 5.0)
    assert g["a"] is keep
    np.testing.assert_array_equal(g["a"], [-5.0, -5.0, 0.5, 5.0])
    np.testing.assert_array_equal(g["b"], [[5.0, -5.0]])


def test_clip_global_norm_rescales_jointly_and_keeps_direction():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}  # norm 5
    norm = optim.clip_global_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    total = math.sqrt(sum(float((v * v).sum()) for v in g.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g["a"] / g["b"][0, 1], [0.75, 0.0])


def test_clip_global_norm_leaves_small_gradients_alone():
    g = {"a": np.array([0.3, 0.4])}
    norm = optim.clip_global_norm(g, 1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(g["a"], [0.3, 0.4])


def test_make_names_unknown_optimizer():
    with pytest.raises(optim.OptimError, match="rmsprop"):
        optim.make("rmsprop", {"w": np.zeros(1)}, 0.1)
