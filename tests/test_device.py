"""The backend seam without a GPU: graphrnn run on a fake device whose arrays,
like CuPy's, refuse to mix with numpy's (tests/fakedevice.py). Every cell,
random cells, the layer, the trainer on the classic tasks and the PTB model
must run there and give what they give on numpy; any place that hands a host
array to a device op, or reads a device array as a host one, fails here."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn import backend, train
from graphrnn.testing import random_cells, random_inputs, scaled_examples

import fakedevice

CELLS = ("rnn", "gru", "lstm", "lstm_nico", "mgu")


def test_the_fake_device_refuses_every_kind_of_mixing():
    xp = fakedevice.make_module()
    d, h = xp.ones((2, 3)), np.ones((2, 3))
    for mix in (lambda: d + h, lambda: h * d, lambda: np.asarray(d), lambda: xp.matmul(d, h.T),
                lambda: np.concatenate([d, d]), lambda: np.tanh(d), lambda: d.__setitem__(0, h[0]),
                lambda: xp.add(d, d, out=h), lambda: xp.multiply(d, np.asarray(2.0))):
        with pytest.raises(TypeError):
            mix()
    np.testing.assert_array_equal((d * 2 + 1.0).get(), h * 2 + 1.0)  # scalars are fine
    np.testing.assert_array_equal(xp.asarray(h).get(), h)             # explicit moves are fine


def _on_device(xp, tree):
    return {k: xp.asarray(v) for k, v in tree.items()} if isinstance(tree, dict) else xp.asarray(tree)


def _run_both(cell, params, xs, state0, dhs, dstate, engine):
    host = gr.unroll(cell, params, xs, state0, engine=engine)
    gh = host.backward(dhs, dstate)
    with fakedevice.install() as xp:
        dev = gr.unroll(cell, _on_device(xp, params), _on_device(xp, xs),
                        None if state0 is None else _on_device(xp, state0), engine=engine)
        gd = dev.backward(_on_device(xp, dhs), None if dstate is None else _on_device(xp, dstate))
        # (a random cell may have no parameter: then its input's gradient says it)
        assert type(dev.hs) is xp.ndarray and type(next(iter(gd.params.values()), gd.xs)) is xp.ndarray
        # numba's loops are host-only and the CUDA ones need CuPy itself: any engine
        # asked for on another device falls back to the numpy loops over its xp
        assert dev.engine == "numpy"
        got = (dev.hs.get(), {k: v.get() for k, v in dev.state.items()},
               {k: v.get() for k, v in gd.params.items()}, gd.xs.get(),
               {k: v.get() for k, v in gd.state0.items()})
    want = (host.hs, host.state, gh.params, gh.xs, gh.state0)
    for g, w in zip(got, want):
        if isinstance(w, dict):
            for k in w:
                np.testing.assert_allclose(g[k], w[k], rtol=1e-12, atol=1e-14)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("engine", ("numpy", "auto", "native"))
@pytest.mark.parametrize("name", CELLS)
def test_every_cell_runs_on_the_device_as_on_the_host(name, engine):
    cell = gr.cells.get(name)(3, 4)
    rng = np.random.default_rng(4)
    params, xs, s0 = random_inputs(cell, rng, batch=2, steps=5)
    dstate = {k: rng.uniform(-1, 1, (2, s)) for k, s in cell.state_sizes().items()}
    _run_both(cell, params, xs, s0, rng.uniform(-1, 1, (2, 5, cell.output_size)), dstate, engine)


@settings(max_examples=scaled_examples(20), deadline=None)
@given(cell=random_cells(), seed=st.integers(0, 2 ** 16))
def test_random_cells_run_on_the_device_as_on_the_host(cell, seed):
    rng = np.random.default_rng(seed)
    params, xs, _ = random_inputs(cell, rng, batch=2, steps=3)
    _run_both(cell, params, xs, None, rng.uniform(-1, 1, (2, 3, cell.output_size)), None, "numpy")


def test_the_naive_interpreter_and_the_stateful_layer_run_on_the_device():
    cell = gr.cells.gru(3, 4)
    with fakedevice.install() as xp:
        params = {k: xp.asarray(v) for k, v in cell.init_params(seed=1).items()}
        xs = xp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 4, 3)))
        naive = gr.unroll_naive(cell, params, xs)
        naive.backward(xp.ones(naive.hs.shape))
        layer = gr.Recurrent(cell, params, stateful=True)
        for _ in range(2):
            hs = layer.forward(xs)
            dxs = layer.backward(xp.ones(hs.shape))
        assert type(dxs) is xp.ndarray and type(layer.state["h"]) is xp.ndarray


@pytest.mark.parametrize("task", ("binary-addition", "primes", "dinosaurs"))
def test_the_trainer_runs_each_classic_task_on_the_device_as_on_the_host(task, tmp_path):
    results = {}
    for where in ("host", "device"):
        out = tmp_path / where
        if where == "device":
            with fakedevice.install() as xp:
                tr = train.build(task, {"iterations": 40}, out=str(out), quiet=True)
                assert all(type(v) is xp.ndarray for v in tr.task.params.values())
                assert tr.run() == 0
        else:
            tr = train.build(task, {"iterations": 40}, out=str(out), quiet=True)
            assert tr.run() == 0
        results[where] = json.load(open(out / "metrics.json"))
    host, dev = results["host"], results["device"]
    for k, v in host.items():
        if isinstance(v, float) and not k.endswith("_s") and "second" not in k:
            assert dev[k] == pytest.approx(v, rel=1e-9), k


TINY_LM = {"preset": "ch6", "wordvec": 16, "hidden": 16, "epochs": 1, "dtype": "float64", "log_every": 5}


def test_the_ptb_model_trains_evaluates_and_samples_on_the_device(ptb_slice, tmp_path):
    results, texts = {}, {}
    for where in ("host", "device"):
        overrides = {**TINY_LM, "data": str(ptb_slice)}
        ctx = fakedevice.install() if where == "device" else _nothing()
        with ctx as xp:
            tr = train.build("ptb", overrides, out=str(tmp_path / where), quiet=True)
            assert tr.run() == 0
            model = tr.task.model
            if xp is not None:
                assert all(type(v) is xp.ndarray for v in model.params.values())
            texts[where] = list(model.generate([1, 2], 6, seed=0))
        results[where] = ([json.loads(ln)["loss"] for ln in open(tmp_path / where / "metrics.jsonl")
                           if "loss" in json.loads(ln)], json.load(open(tmp_path / where / "metrics.json")))
    (host_losses, _), (dev_losses, dev) = results["host"], results["device"]
    # The same steps: equal losses while rounding has not yet grown (scatter-adds
    # sum in another order on the device; SGD at lr 20 amplifies that within a
    # few hundred steps, so later values are compared only for sense).
    np.testing.assert_allclose(dev_losses[:4], host_losses[:4], rtol=1e-9)
    assert dev["valid_perplexity"] < dev["vocab_size"] / 4 and np.isfinite(dev["test_perplexity"])
    assert len(texts["device"]) == len(texts["host"])


def test_the_rnnlm_with_tied_weights_and_two_layers_steps_on_the_device():
    from graphrnn.models import RNNLM
    from graphrnn import optim
    rng = np.random.default_rng(3)
    xs, ts = rng.integers(0, 30, (3, 4)), rng.integers(0, 30, (3, 4))
    losses = {}
    for where in ("host", "device"):
        ctx = fakedevice.install() if where == "device" else _nothing()
        with ctx as xp:
            move = (lambda a: a) if xp is None else xp.asarray
            model = RNNLM(30, 6, 6, cell="gru", layers=2, dropout=0.2, tie_weights=True, seed=0)
            opt = optim.SGD(model.params, lr=0.5)
            out = []
            for _ in range(3):
                out.append(float(model.forward(move(xs), move(ts))))
                model.backward()
                optim.clip_global_norm(model.grads, 0.25)
                opt.step(model.grads)
            losses[where] = out
    np.testing.assert_allclose(losses["device"], losses["host"], rtol=1e-10)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_backend_is_numpy_again_after_the_fake_device():
    with fakedevice.install():
        assert backend.get_backend() == "fakedevice"
    assert backend.xp() is np


def test_ptb_steps_copy_nothing_to_the_device_but_dropout_masks_of_a_byte_an_entry(ptb_slice, tmp_path):
    with fakedevice.install() as xp:
        tr = train.build("ptb", {**TINY_LM, "data": str(ptb_slice), "dropout": 0.3, "layers": 2},
                         out=str(tmp_path / "r"), quiet=True)
        task = tr.task
        task.step(0)                       # the corpus crosses once, here
        copies = []
        real = xp.asarray

        def counting(a, dtype=None, order=None):
            if not isinstance(a, xp.ndarray):
                copies.append(np.asarray(a).dtype)
            return real(a, dtype, order)
        xp.asarray = counting
        for i in range(1, 4):
            task.step(i)
        # three dropout masks a step (after the embedding, between the layers, before the output)
        assert copies and all(d == np.bool_ for d in copies) and len(copies) == 3 * 3
