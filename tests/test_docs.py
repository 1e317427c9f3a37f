"""README.md and docs/ptb.md quote numbers from the committed results, never by hand."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_and_ptb_numbers_are_generated_from_the_committed_results():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    names = []
    for path in readme.DOCUMENTS:
        text = pathlib.Path(path).read_text(encoding="utf-8")
        names += [m.group(2) for m in readme.MARK.finditer(text)]
        assert readme.render(text) == text, f"{path} is stale: run .venv/bin/python benchmarks/readme.py"
    assert set(names) == set(readme.SECTIONS), "a document lost a generated section"
