"""The API reference, generated from the docstrings with pdoc: `make docs`
(`.venv/bin/python docs/make_api.py [OUT]`, default docs/api, not committed).

The public modules only: what a user imports. pdoc imports each one, so a
module that fails to import, or a docstring pdoc cannot read, fails the build
(tests/test_docs_api.py builds it on every run of the suite).
"""
import pathlib
import sys
import warnings

# The package (pdoc adds the submodules its __all__ names) and every public module.
MODULES = ["graphrnn", "graphrnn.graph", "graphrnn.cells", "graphrnn.primitives", "graphrnn.unroll",
           "graphrnn.plan", "graphrnn.layers", "graphrnn.models", "graphrnn.optim", "graphrnn.testing",
           "graphrnn.anomaly", "graphrnn.errors", "graphrnn.backend", "graphrnn.render", "graphrnn.train",
           "graphrnn.checkpoint", "graphrnn.runfolder", "graphrnn.sweep", "graphrnn.report", "graphrnn.tasks",
           "graphrnn.data"]


def build(out):
    import pdoc
    import pdoc.render
    out = pathlib.Path(out)
    pdoc.render.configure(docformat="restructuredtext", show_source=False,
                          footer_text="graphrnn: generated from the docstrings by docs/make_api.py")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=out)
    # A module pdoc cannot import (or read) is a failed build; one that the package's
    # own page already added is not.
    problems = [str(w.message).splitlines()[0] for w in said if "has already been added" not in str(w.message)]
    if problems:
        raise RuntimeError("pdoc: " + "; ".join(problems))
    return out


if __name__ == "__main__":
    where = build(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "api")
    print(f"API reference: {where / 'index.html'}")
