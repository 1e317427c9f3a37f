"""`make docs` builds the API reference from the docstrings (pdoc): every
public module imports and renders, and the pages hold the public names."""
import pathlib
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_api_reference_builds_and_documents_the_public_names(tmp_path):
    pytest.importorskip("pdoc", reason="the API reference needs pdoc: pip install -e '.[dev]'")
    build = runpy.run_path(str(ROOT / "docs" / "make_api.py"))["build"]
    out = build(tmp_path / "api")
    assert (out / "index.html").exists()
    page = (out / "graphrnn" / "unroll.html").read_text()
    assert "unroll_naive" in page and "def" in page
    assert "detect_anomaly" in (out / "graphrnn" / "anomaly.html").read_text()
    assert "load_runs" in (out / "graphrnn" / "runfolder.html").read_text()
    assert "docs/make_api.py" in (ROOT / "Makefile").read_text()
