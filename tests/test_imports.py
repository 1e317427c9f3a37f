"""The package's import structure: one-way arrows, and a library that needs
nothing from the repository around it."""
import ast
import pathlib

import networkx as nx

import graphrnn

PACKAGE = pathlib.Path(graphrnn.__file__).parent


def _modules():
    """module name -> its file, for every module under graphrnn/."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name, path, modules):
    """The names every import in the module (at any depth: a function's late
    import is an arrow too) refers to, resolved to graphrnn's modules where it
    names one."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    # Jupyter's display methods (Cell._repr_svg_, Run._repr_svg_) reach the renderer
    # when a notebook shows the object, the one late arrow upward the design allows:
    # the library below works without them, and render never imports them back.
    display = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name.startswith("_repr_")
               for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in display:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:  # `from . import x`: the submodule x, where it is one
                sub = f"{target}.{a.name}"
                yield sub if sub in modules else target


def _graph():
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for target in _imports(name, path, modules):
            g.add_edge(name, target)
    return g, modules


def test_nothing_in_the_package_imports_the_repository_around_it():
    g, modules = _graph()
    for name in modules:
        outside = [t for t in g.successors(name) if t.split(".")[0] in ("benchmarks", "tests", "tasks")]
        assert not outside, f"{name} imports {outside}"
    for path in modules.values():  # nor reaches it through a path (sys.path, a file it loads)
        folders = [n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and n.value in ("benchmarks", "tests")]
        assert not folders, f"{path.name} names the repository's {folders[0]}/ folder"


KNOWN_CIRCLES = set()  # none: a new circle is a design change to be argued, not allowed here


def test_no_import_circle_in_the_package():
    g, modules = _graph()
    inside = nx.DiGraph(g.subgraph(modules))
    # `python -m graphrnn.cli` imports the package's own copy of itself: not a circle between rooms
    inside.remove_edges_from(nx.selfloop_edges(inside))
    cycles = [c for c in nx.simple_cycles(inside) if frozenset(c) not in KNOWN_CIRCLES]
    assert not cycles, f"import circle: {' -> '.join(cycles[0] + cycles[0][:1])}"


def test_the_circle_check_sees_a_circle():
    g, modules = _graph()
    assert g.has_edge("graphrnn.unroll", "graphrnn.plan")  # relative imports resolve
    assert g.has_edge("graphrnn.emit", "graphrnn.emit.numpy_loops")  # `from . import x` is the module x
    g.add_edge("graphrnn.plan", "graphrnn.unroll")
    assert any({"graphrnn.plan", "graphrnn.unroll"} <= set(c) for c in nx.simple_cycles(g.subgraph(modules)))


def test_every_public_submodule_is_an_attribute_of_the_package_loaded_on_first_use():
    import subprocess
    import sys
    code = ("import sys, graphrnn as gr\n"
            "assert 'numpy' not in sys.modules and 'graphrnn.models' not in sys.modules\n"
            "gr.models.RNNLM; gr.testing.check_gradients; gr.layers; gr.data; gr.cells.gru; gr.emit.loops_for\n"
            "print(sorted(n for n in gr._SUBMODULES if not hasattr(gr, n)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    modules = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    private = {n for n in modules if n.startswith("_")} | {"cli", "render", "unroll", "explain"}  # the last three: functions
    assert modules - private == set(graphrnn._SUBMODULES)
