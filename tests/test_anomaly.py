"""Anomaly mode names the first node whose value or gradient is not finite:
a cell with a deliberately wrong primitive, NaN in the inputs, and the
command's --detect-anomaly; off, nothing changes."""
import numpy as np
import pytest

import graphrnn as gr
from graphrnn import cli
from graphrnn.primitives import Tanh


class LogTanh(Tanh):
    """y = log(x)  (a wrong forward: NaN for negative x); dx = dy·(1−y²)"""

    def forward(self, xp, x, out=None):
        return xp.log(x, out=out)


class ZeroOverZeroTanh(Tanh):
    """y = tanh(x);  dx = dy·(1−y²)/(y−y)  (a wrong backward: 0/0)"""

    def backward(self, xp, dy, xs, y, needs):
        with np.errstate(all="ignore"):
            return (dy * (1 - y * y) / (y - y),)


def cell_with(op_cls):
    """An Elman cell whose tanh is replaced by ``op_cls`` (as a user's own primitive would be)."""
    c = gr.CellBuilder("elman")
    x = c.input("x", 3)
    h = c.state("h", 4)
    W, U = c.param("W", (3, 4)), c.param("U", (4, 4))
    c.update(h=gr.tanh(x @ W + h @ U, name="hnew"))
    cell = c.build()
    node = next(n for n in cell.graph.nodes if cell.graph.nodes[n].get("label") == "hnew")
    wrong = op_cls()
    wrong.__dict__.update(cell.graph.nodes[node]["op"].__dict__)   # the shapes it was declared with
    cell.graph.nodes[node]["op"] = wrong
    return cell


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2, 5, 3))


def test_a_wrong_forward_is_named_node_step_cell_and_rule():
    cell = cell_with(LogTanh)
    params = cell.init_params(seed=0)
    with np.errstate(all="ignore"):
        run = gr.unroll(cell, params, data())          # off: the NaN passes silently
        assert np.isnan(run.hs).any()
        with gr.detect_anomaly(), pytest.raises(gr.AnomalyError) as e:
            gr.unroll(cell, params, data())
    msg = str(e.value)
    assert "forward value of node 'hnew' (tanh) at step t=0 of cell 'elman' is nan" in msg
    assert "y = log(x)" in msg and "dx = dy·(1−y²)" in msg


def test_a_wrong_backward_is_named_with_the_rule_of_its_input():
    cell = cell_with(ZeroOverZeroTanh)
    params = cell.init_params(seed=0)
    with gr.detect_anomaly():
        run = gr.unroll(cell, params, data())           # the forward is right
        with pytest.raises(gr.AnomalyError) as e, np.errstate(all="ignore"):
            run.backward(np.ones_like(run.hs))
    msg = str(e.value)
    assert "gradient that node 'hnew' (tanh) at step t=4 of cell 'elman' passes to" in msg
    assert "passes to 'x @ W + h @ U' is inf" in msg and "its rule: dx = dy·(1−y²)" in msg


def test_nan_in_the_inputs_is_named_and_a_healthy_cell_runs_as_without():
    cell = gr.cells.gru(3, 4)
    params = cell.init_params(seed=0)
    xs = data()
    with gr.detect_anomaly():
        run = gr.unroll(cell, params, xs)
        g = run.backward(np.ones_like(run.hs))
    plain = gr.unroll(cell, params, xs)
    np.testing.assert_array_equal(run.hs, plain.hs)
    np.testing.assert_array_equal(g.params["Wx"], plain.backward(np.ones_like(plain.hs)).params["Wx"])
    xs[1, 3, 2] = np.nan
    with gr.detect_anomaly(), pytest.raises(gr.AnomalyError, match="input xs holds nan at sequence 1, step t=3"):
        gr.unroll(cell, params, xs)
    from graphrnn import anomaly
    assert not anomaly.active()


USER_CELL = '''
import graphrnn as gr
from graphrnn.primitives import Tanh

class Wrong(Tanh):
    """y = tanh(x);  dx = dy·(1−y²)/(y−y)"""
    def backward(self, xp, dy, xs, y, needs):
        return (dy * (1 - y * y) / (y - y),)

def wrong(d, h):
    c = gr.CellBuilder("wrongcell")
    x = c.input("x", d)
    s = c.state("h", h)
    W, U = c.param("W", (d, h)), c.param("U", (h, h))
    c.update(h=gr.tanh(x @ W + s @ U, name="hnew"))
    cell = c.build()
    node = next(n for n in cell.graph.nodes if cell.graph.nodes[n].get("label") == "hnew")
    wrong = Wrong()
    wrong.__dict__.update(cell.graph.nodes[node]["op"].__dict__)
    cell.graph.nodes[node]["op"] = wrong
    return cell
'''


def test_train_detect_anomaly_names_the_node_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "wrongcells.py").write_text(USER_CELL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    argv = ["train", "dinosaurs", "--cell", "wrongcells:wrong", "--hidden", "4", "--iterations", "3",
            "--quiet", "--out"]
    with np.errstate(all="ignore"):
        assert cli.main([*argv, "off", "--set", "samples=0"]) == 2       # off: only the loss says NaN
        err = capsys.readouterr().err
        assert "loss became nan" in err and "hnew" not in err
        assert cli.main([*argv, "on", "--set", "samples=0", "--detect-anomaly"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "node 'hnew' (tanh)" in err and "cell 'wrongcell'" in err and "step t=" in err
