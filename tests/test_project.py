"""What the project says about itself holds: its packaging metadata and the
commands its documents tell a reader to type."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_string_which_setuptools_reads_without_a_deprecation_warning():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    # SPDX strings need setuptools 77; older ones refuse them
    req = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", req)[1]) >= 77


def test_scripts_in_the_repository_are_run_with_the_venvs_python():
    # A bare `python tasks/x.py` is the system Python, which has no graphrnn.
    docs = [ROOT / "docs" / "tasks.md", ROOT / "benchmarks" / "README.md",
            *sorted((ROOT / "tasks").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for path in docs:
        for m in re.finditer(r"(\S*)python3? (tasks|benchmarks)/\w+\.py", path.read_text()):
            assert m[1].endswith(".venv/bin/"), f"{path.relative_to(ROOT)}: {m[0]!r}"
    text = (ROOT / "docs" / "tasks.md").read_text()
    assert "source .venv/bin/activate" in text


def test_every_task_has_its_script_and_its_section_in_docs_tasks():
    from graphrnn import tasks
    text = (ROOT / "docs" / "tasks.md").read_text()
    for name in tasks.TASKS:
        if name == "ptb":  # docs/ptb.md
            continue
        assert (ROOT / "tasks" / f"{name.replace('-', '_')}.py").exists(), name
        assert f"graphrnn train {name}" in text and re.search(rf"^## \d+\. {name}$", text, re.M), name
