"""The benchmark's baselines compute what graphrnn computes, and the runner
produces its table. No timing is asserted: speed is reported, not tested."""
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import graphrnn as gr
from graphrnn import bench
from graphrnn.contenders import cells as contenders


def _case(cell_name, N=3, T=5, D=4, H=6):
    cell = gr.cells.get(cell_name)(D, H)
    params = cell.init_params(seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)
    # nonzero biases and larger weights so every gate term matters
    params = {k: v + rng.uniform(-0.5, 0.5, v.shape) for k, v in params.items()}
    xs = rng.uniform(-1, 1, (N, T, D))
    dhs = rng.uniform(-1, 1, (N, T, H))
    return cell, params, xs, dhs


@pytest.mark.parametrize("layer_cls", [contenders.TimeLayer, contenders.HoistedLayer])
@pytest.mark.parametrize("cell_name", ["rnn", "gru", "lstm", "mgu"])
def test_textbook_and_hand_hoisted_layers_match_graphrnn_forward_and_backward_in_float64(cell_name, layer_cls):
    cell, params, xs, dhs = _case(cell_name)
    run = gr.unroll(cell, params, xs)
    g = run.backward(dhs, need_xs=True)
    layer = layer_cls(cell_name, params)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    np.testing.assert_allclose(hs, run.hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs, g.xs, rtol=1e-10, atol=1e-12)
    for name, d in layer.grad_dict().items():
        np.testing.assert_allclose(d, g.params[name], rtol=1e-10, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(layer.dh0, g.state0["h"], rtol=1e-10, atol=1e-12)


def test_textbook_backward_twice_gives_the_same_gradients():
    # gradients accumulate over steps; a second backward must start from zero
    _, params, xs, dhs = _case("gru")
    layer = contenders.TimeLayer("gru", params)
    layer.forward(xs)
    layer.backward(dhs)
    first = {k: v.copy() for k, v in layer.grad_dict().items()}
    layer.backward(dhs)
    for k, v in layer.grad_dict().items():
        np.testing.assert_array_equal(v, first[k])


def test_torch_loop_mgu_matches_graphrnn_in_float64():
    torch = pytest.importorskip("torch")
    cell, params, xs, dhs = _case("mgu")
    run = gr.unroll(cell, params, xs)
    g = run.backward(dhs, need_xs=True)
    model = contenders.TorchLoopMGU(params)
    hs, dxs = model(torch.from_numpy(xs), torch.from_numpy(dhs))
    np.testing.assert_allclose(hs.detach().numpy(), run.hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs.numpy(), g.xs, rtol=1e-10, atol=1e-12)
    for name, p in model.p.items():
        np.testing.assert_allclose(p.grad.numpy(), g.params[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_torch_loop_ln_lstm_matches_graphrnn_in_float64():
    torch = pytest.importorskip("torch")
    cell, params, xs, dhs = _case("ln_lstm")
    run = gr.unroll(cell, params, xs)
    g = run.backward(dhs, need_xs=True)
    model = contenders.TorchLoopLNLSTM(params)
    hs, dxs = model(torch.from_numpy(xs), torch.from_numpy(dhs))
    np.testing.assert_allclose(hs.detach().numpy(), run.hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs.numpy(), g.xs, rtol=1e-10, atol=1e-12)
    for name, p in model.p.items():
        np.testing.assert_allclose(p.grad.numpy(), g.params[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_a_default_bench_times_the_layer_normalised_lstm_at_the_medium_size_only():
    ran = []
    fake = {"tiny": (1, 2, 2, 2), "medium": (1, 2, 2, 3)}
    res = bench.run_benchmarks(fake, ["mgu", "ln_lstm"], {"tiny": 1, "medium": 1}, impls=("graphrnn",),
                               memory=False, log=ran.append, only_at=bench.DEFAULT_ONLY_AT)
    assert {(r["size"], r["cell"]) for r in res["rows"]} == {("tiny", "mgu"), ("medium", "mgu"),
                                                               ("medium", "ln_lstm")}


def test_gemm_flop_count_of_a_gru():
    N, T, D, H = 2, 3, 4, 5
    fwd = 2 * N * T * (D * 3 * H + H * 3 * H)
    assert bench.gemm_flops("gru", (N, T, D, H)) == 3 * fwd
    assert bench.gemm_flops("gru", (N, T, D, H), need_xs=False) == 3 * fwd - 2 * N * T * D * 3 * H


def test_bench_writes_json_and_markdown_table(tmp_path):
    args = types.SimpleNamespace(quick=True, out=str(tmp_path), cells=["gru", "mgu"], sizes=["tiny"],
                                 rounds=2, no_torch=False)
    assert bench.bench_main(args) == 0
    md = (tmp_path / "bench_quick.md").read_text()
    import json
    res = json.loads((tmp_path / "bench_quick.json").read_text())
    impls = {r["impl"] for r in res["rows"]}
    assert {"graphrnn", "textbook"} <= impls
    assert {(r["cell"], r["size"]) for r in res["rows"]} == {("gru", "tiny"), ("mgu", "tiny")}
    for r in res["rows"]:
        assert r["median_s"] > 0 and r["share_of_sgemm_peak"] > 0
        if r["impl"] not in ("torch", "jax"):  # tracemalloc sees numpy's buffers only
            assert r["traced_peak_mib"] > 0
    assert md.count("| tiny (1,8,2,16) |") == len(res["rows"])
    assert "gru vs textbook, tiny no slower" in md
    if "jax" in impls:
        assert "mgu vs JAX, tiny >= 1x" in md


def test_bench_command_runs_from_a_package_with_no_repository_around_it(tmp_path):
    """The package copied alone (as a wheel installs it: no benchmarks/, tests/
    or tasks/ beside it) and the command run from an empty folder."""
    site, work = tmp_path / "site", tmp_path / "work"
    shutil.copytree(os.path.dirname(gr.__file__), site / "graphrnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import graphrnn; print(graphrnn.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    p = subprocess.run([sys.executable, "-m", "graphrnn.cli", "bench", "--quick", "--sizes", "tiny",
                        "--cells", "rnn", "--rounds", "1", "--no-torch", "--out", str(work / "out")],
                       cwd=work, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    md = (work / "out" / "bench_quick.md").read_text()
    assert "| tiny (1,8,2,16) | rnn | graphrnn |" in md and "| tiny (1,8,2,16) | rnn | textbook |" in md


def test_bench_rejects_unknown_cell(tmp_path):
    from graphrnn.errors import UsageError
    args = types.SimpleNamespace(quick=True, out=str(tmp_path), cells=["nope"], sizes=None, rounds=None,
                                 no_torch=True)
    with pytest.raises(UsageError, match="nope"):
        bench.bench_main(args)


def test_lm_benchmark_runner_times_graphrnn_and_writes_its_table(monkeypatch):
    monkeypatch.setitem(bench.LM_SIZES, "tiny", (50, 6, 6, 2, 3, 4, 0.5, True))
    result = bench.run_lm_benchmarks(["tiny"], ["lstm", "gru"], rounds=2, use_torch=False,
                                     log=lambda *a: None, memory=False)
    assert [(r["cell"], r["impl"]) for r in result["rows"]] == [("lstm", "graphrnn"), ("gru", "graphrnn")]
    assert all(r["median_s"] > 0 and r["speedup_of_graphrnn"] == 1.0 for r in result["rows"])
    md = bench.lm_markdown(result)
    assert "| tiny | gru | graphrnn |" in md


def test_held_memory_is_seen_even_after_another_contender_freed_as_much():
    def make():
        held = [np.ones(2 ** 19) for _ in range(16)]   # 16 x 4 MiB, every page touched
        return lambda: float(held[-1][-1])
    big = np.ones(2 ** 21)
    del big                      # a freed 16 MiB buffer: glibc now keeps 4 MiB blocks on its heap
    scratch = [np.ones(2 ** 19) for _ in range(20)]
    keep = np.ones(1000)         # allocated above them, so the heap cannot shrink by itself
    del scratch                  # an earlier contender's memory: free, yet still resident
    held = bench.measure_held(make)
    if held is None:
        pytest.skip("no /proc/self/status here")
    assert held >= 60 and keep[0] == 1


def test_torch_lm_contender_computes_the_same_loss_as_graphrnn():
    # (LSTM only: torch's GRU applies r after W_hn h, graphrnn's gru is the book's form)
    cell = "lstm"
    torch = pytest.importorskip("torch")
    from graphrnn.models import RNNLM
    from graphrnn.contenders import lm
    V, H, layers = 13, 5, 2
    ours = RNNLM(V, H, H, cell=cell, layers=layers, tie_weights=True, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    for v in ours.params.values():
        v += rng.normal(size=v.shape) * 0.3
    theirs = lm.TorchLM(V, H, H, layers, cell, 0.0, True)
    # graphrnn's blocks f|g|i|o in torch's order i|f|g|o
    order = [2, 0, 1, 3]
    with torch.no_grad():
        theirs.embed.weight.copy_(torch.from_numpy(ours.params["embed.W"]).float())
        theirs.out.bias.copy_(torch.from_numpy(ours.params["out.b"]).float())
        for l in range(layers):
            def blocks(w):
                return np.concatenate([w[:, k * H:(k + 1) * H] for k in order], axis=1)
            getattr(theirs.rnn, f"weight_ih_l{l}").copy_(torch.from_numpy(blocks(ours.params[f"cell{l}.Wx"]).T))
            getattr(theirs.rnn, f"weight_hh_l{l}").copy_(torch.from_numpy(blocks(ours.params[f"cell{l}.Wh"]).T))
            getattr(theirs.rnn, f"bias_ih_l{l}").copy_(torch.from_numpy(blocks(ours.params[f"cell{l}.b"][None])[0]))
            getattr(theirs.rnn, f"bias_hh_l{l}").zero_()
    xs, ts = rng.integers(0, V, (3, 4)), rng.integers(0, V, (3, 4))
    want = ours.forward(xs, ts)
    got = theirs(torch.from_numpy(xs), torch.from_numpy(ts))
    assert got == pytest.approx(want, rel=1e-5)
