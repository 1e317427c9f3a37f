"""The tutorial notebook runs, and cells, runs and explanations display richly."""
import os
import pathlib
import shutil

import numpy as np
import pytest

import graphrnn as gr

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_tutorial_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            os.environ.pop("PYTHONPATH", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert "text/markdown" in kinds           # the explanation
    if shutil.which("dot"):
        assert "image/svg+xml" in kinds       # the cell's and the run's diagrams
    text = "".join(o.get("text", "") for o in outputs)
    assert "True" in text                      # the gradient check passed
    exported = [c for c in nb.cells if "export(cell)" in c.source][0]
    assert float(exported.outputs[0]["text"]) < 1e-12   # numpy module's gradients are graphrnn's
    rnn = [ln for ln in text.splitlines() if ln.startswith("rnn ")][0]
    first, last = [float(w) for w in rnn.replace(",", "").split() if "e" in w and w[0].isdigit()][:2]
    assert first < 1e-8 * last                 # the picture the notebook promises


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_cell_and_run_display_as_svg_and_explain_as_markdown():
    cell = gr.cells.gru(3, 4)
    assert cell._repr_svg_().lstrip().startswith("<?xml") and "h~" in cell._repr_svg_()
    run = gr.unroll(cell, cell.init_params(), np.zeros((1, 3, 3)))
    svg = run._repr_svg_()
    assert "step 3" in svg and "step 4" not in svg
    assert gr.explain(cell)._repr_markdown_().startswith("### Cell `gru`")
