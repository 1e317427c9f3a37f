"""export: the standalone numpy module's gradients are graphrnn's."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn import cli
from graphrnn.cells import CELLS
from graphrnn.export import _class_name, export
from graphrnn.testing import random_cells, random_inputs


def load(source):
    """The module in a namespace of its own: it may import numpy and nothing else."""
    tree = ast.parse(source)
    imports = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
               for a in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imports - {None} <= {"numpy"}, imports
    ns = {"__name__": "exported_cell"}
    exec(compile(source, "<exported>", "exec"), ns)
    return ns


def compare(cell, seed=0, batch=2, steps=4):
    rng = np.random.default_rng(seed)
    params, xs, state0 = random_inputs(cell, rng, batch=batch, steps=steps)
    dhs = rng.uniform(-1, 1, (batch, steps, cell.output_size))
    run = gr.unroll(cell, params, xs, state0)
    g = run.backward(dhs)

    ns = load(export(cell))
    layer = ns[f"Time{_class_name(cell.name)}"](*[params[k].copy() for k in cell.params], stateful=True)
    layer.set_state(*[state0[s] for s in cell.states])
    hs = layer.forward(xs)
    np.testing.assert_allclose(hs, run.hs, rtol=0, atol=1e-12)
    dxs = layer.backward(dhs)
    np.testing.assert_allclose(dxs, g.xs, rtol=0, atol=1e-12)
    for i, k in enumerate(cell.params):
        np.testing.assert_allclose(layer.grads[i], g.params[k], rtol=0, atol=1e-12, err_msg=k)
    for s in cell.states:
        attr = s if hasattr(layer, "d" + s) else f"state_{s}"
        np.testing.assert_allclose(getattr(layer, "d" + attr), g.state0[s], rtol=0, atol=1e-12, err_msg=s)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_exported_builtin_cell_has_graphrnns_gradients(name):
    compare(CELLS[name](3, 4))


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_cells(max_ops=6), st.integers(0, 2**16))
def test_exported_random_cell_has_graphrnns_gradients(cell, seed):
    compare(cell, seed=seed, steps=3)


def test_exported_module_runs_with_numpy_alone(tmp_path):
    """A fresh interpreter that cannot see graphrnn imports the file and trains a step."""
    out = tmp_path / "mycell.py"
    assert cli.main(["export", "lstm", "-o", str(out)]) == 0
    script = ("import sys, numpy as np; sys.modules['graphrnn'] = None\n"
              "import mycell\n"
              "rng = np.random.default_rng(0)\n"
              "p = [rng.normal(size=s) * 0.3 for s in [(3, 16), (4, 16), (16,)]]\n"
              "layer = mycell.TimeLSTM(*p)\n"
              "hs = layer.forward(rng.normal(size=(2, 5, 3)))\n"
              "dxs = layer.backward(np.ones_like(hs))\n"
              "print(hs.shape, dxs.shape, [g.shape for g in layer.grads])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env)
    # -I leaves the script's folder off sys.path: put it back explicitly
    if r.returncode != 0 and "No module named 'mycell'" in r.stderr:
        r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
                            + script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 5, 4) (2, 5, 3) [(3, 16), (4, 16), (16,)]"


def test_export_names_variables_from_the_graph():
    src = export(gr.cells.gru(3, 4))
    for text in ["def forward(self, x, h_prev):", "def backward(self, dh_next):", "class TimeGRU:",
                 "h_tilde = np.tanh(a_h_tilde)", "dh_tilde = dh_next * z", "dh_prev = dh_next * (1 - z)",
                 "return dx, dh_prev"]:
        assert text in src, text


def test_every_built_in_primitive_and_constant_arrays_export_with_graphrnns_gradients():
    from test_explain import literature_cell

    cell = literature_cell()
    src = export(cell)
    # the constant arrays are the module's own (named P, and C1 for the unnamed one)
    assert "\nP = np.array([[0.0, 0.0, 0.0, 1.0]," in src and "\nC1 = np.array([[1.0, 0.0," in src
    for seed in range(3):
        compare(cell, seed=seed)
