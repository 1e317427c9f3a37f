"""The README quotes numbers from the committed results, never by hand."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_numbers_are_generated_from_the_committed_results():
    spec = importlib.util.spec_from_file_location("readme", ROOT / "benchmarks" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = [m.group(2) for m in readme.MARK.finditer(text)]
    assert sorted(names) == sorted(readme.SECTIONS), "README lost a generated section"
    assert readme.render(text) == text, "README.md is stale: run python benchmarks/readme.py"
