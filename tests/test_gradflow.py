"""gradflow: ‖∂L/∂s_t‖ and the per-step Jacobians, checked against the engine directly."""
import json

import numpy as np
import pytest

import graphrnn as gr
from graphrnn import checkpoint, cli
from graphrnn.gradflow import gradient_flow, params_from_checkpoint


def direct(cell, params, xs, t, u):
    """∂L/∂s_t by one BPTT over steps t+1 … T from the forward's state after step t."""
    state = gr.unroll(cell, params, xs[:, :t]).state if t else None
    run = gr.unroll(cell, params, xs[:, t:], state)
    dhs = np.zeros_like(run.hs)
    dhs[0, -1] = u
    g = run.backward(dhs).state0
    return np.concatenate([g[k] for k in cell.states], axis=-1)[0]


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm", "mgu", "lstm_nico"])
def test_gradient_norms_agree_with_one_bptt_per_step(name):
    cell = gr.cells.CELLS[name](3, 4)
    params = cell.init_params(seed=1)
    xs = np.random.default_rng(1).normal(size=(1, 7, 3))
    r = gradient_flow(cell, params, xs, seed=3)
    u = np.random.default_rng(3).normal(size=cell.output_size)
    u /= np.linalg.norm(u)
    for t in range(7):
        want = np.linalg.norm(direct(cell, params, xs, t, u))
        assert r["grad_norm"][t] == pytest.approx(want, rel=1e-10, abs=1e-300), t


def test_jacobian_norm_agrees_with_central_differences():
    cell = gr.cells.lstm(2, 3)
    params = cell.init_params(seed=2)
    xs = np.random.default_rng(2).normal(size=(1, 4, 2))
    r = gradient_flow(cell, params, xs)
    s1 = gr.unroll(cell, params, xs[:, :1]).state
    v = np.concatenate([s1["h"], s1["c"]], axis=-1)[0]

    def step(vec):
        st = {"h": vec[None, :3], "c": vec[None, 3:]}
        out = gr.unroll(cell, params, xs[:, 1:2], st).state
        return np.concatenate([out["h"], out["c"]], axis=-1)[0]
    eps = 1e-6
    J = np.stack([(step(v + eps * e) - step(v - eps * e)) / (2 * eps) for e in np.eye(6)], axis=1)
    assert r["jacobian_norm"][1] == pytest.approx(np.linalg.norm(J, 2), rel=1e-7)


def test_tanh_rnn_gradient_vanishes_over_100_steps_at_default_init():
    cell = gr.cells.rnn(8, 32)
    r = gradient_flow(cell, cell.init_params(seed=0), np.random.default_rng(0).normal(size=(1, 100, 8)))
    g = r["grad_norm"]
    assert g[0] / g[-1] < 1e-10          # more than ten orders of magnitude
    assert max(r["jacobian_norm"]) < 1   # every step contracts


def test_cli_writes_png_and_json_from_init_and_from_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "flow.png"
    assert cli.main(["gradflow", "--cell", "rnn,gru", "--steps", "12", "--hidden-size", "5", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "flow.json").read_text())
    assert [r["cell"] for r in data["results"]] == ["rnn", "gru"]
    assert len(data["results"][0]["grad_norm"]) == 12 and len(data["results"][0]["jacobian_norm"]) == 11

    cell = gr.cells.gru(3, 5)
    params = cell.init_params(seed=4)
    run = tmp_path / "run"
    checkpoint.save(str(run), 10, {f"param/cell0.{k}": v for k, v in params.items()},
                    {"config": {"cell": "gru", "hidden": 5}})
    got_cell, got = params_from_checkpoint(str(run))
    assert got_cell.param_shapes() == cell.param_shapes()
    assert all(np.array_equal(got[k], params[k]) for k in params)
    assert cli.main(["gradflow", "--checkpoint", str(run), "--steps", "5", "-o", str(tmp_path / "t.png")]) == 0
    assert "trained" in json.loads((tmp_path / "t.json").read_text())["results"][0]["label"]
    assert cli.main(["gradflow", "--checkpoint", str(tmp_path / "nothing"), "-o", str(tmp_path / "u.png")]) == 2


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_node_gradients_agree_with_the_engine(name):
    """The per-value norms behind `render --grad`: the states' and the parameters'
    agree with gr.unroll(...).backward(...) on the same input and loss."""
    from graphrnn.gradflow import node_gradients

    cell = gr.cells.CELLS[name](3, 4)
    params = cell.init_params(seed=5)
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(1, 5, 3))
    dhs = rng.normal(size=(1, 5, cell.output_size))
    per_step, total = node_gradients(cell, params, xs, dhs)
    g = gr.unroll(cell, params, xs).backward(dhs)
    for k, node in cell.params.items():
        assert total[node] == pytest.approx(np.linalg.norm(g.params[k]), rel=1e-10)
    for s, node in cell.states.items():
        assert per_step[(node, 1)] == pytest.approx(np.linalg.norm(g.state0[s]), rel=1e-10)
    assert total[cell.input_node] == pytest.approx(np.linalg.norm(g.xs), rel=1e-10)


def test_render_grad_colours_the_unrolled_view_by_gradient_size(capsys):
    from graphrnn.render import diagram_graph

    cell = gr.cells.rnn(3, 4)
    G = diagram_graph(cell, unroll=4, grad=True)
    coloured = {n: d for n, d in G.nodes(data=True) if d.get("fill")}
    assert {"s_h_0", "s_h_4", "t1_y", "t4_y"} <= set(coloured)
    assert all("‖g‖" in d["label"] for d in coloured.values())
    # the loss is on the last step: the earlier outputs get no gradient, the last one all of it
    assert coloured["t1_y"]["fill"] == "#eeeeee" and coloured["t4_y"]["fill"] != "#eeeeee"
    with pytest.raises(gr.GraphError, match="unroll"):
        diagram_graph(cell, grad=True)
    assert cli.main(["render", "rnn", "--grad", "-o", "x.dot"]) == 2
    assert "add --unroll T" in capsys.readouterr().err
