"""Diagrams: what they must show, and that the committed gallery matches the code."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import graphrnn as gr
from graphrnn import cli
from graphrnn.plan import STATIC, compile_cell
from graphrnn.render import (GALLERY_SIZES, GraphvizNotFound, gallery_items,
                             gallery_sources, render)

GALLERY = Path(__file__).resolve().parent.parent / "docs" / "gallery"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")


def svg_texts(path):
    root = ET.parse(path).getroot()
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text]


def svg_titles(path):
    root = ET.parse(path).getroot()
    return {t.text for t in root.iter("{http://www.w3.org/2000/svg}title")}


@needs_dot
@pytest.mark.parametrize("name", ["gru", "lstm", "lstm_nico", "rnn", "mgu"])
def test_cell_svg_names_every_primitive_parameter_and_state(name, tmp_path):
    cell = gr.cells.CELLS[name](3, 4)
    render(cell, tmp_path / "c.svg")
    texts = svg_texts(tmp_path / "c.svg")
    plan = compile_cell(cell)
    g = plan.graph
    # Every op is labelled by its name, except a slice of a parameter, which reads Wh[:, H:2H].
    ops = [n for n in g.nodes if g.nodes[n]["kind"] == "op"
           and not (plan.kind[n] == STATIC and g.nodes[n]["opname"] == "slice")]
    for opname in sorted({g.nodes[n]["opname"] for n in ops}):
        want = sum(g.nodes[n]["opname"] == opname for n in ops)
        got = sum(t.split(" ")[0] == opname for t in texts)
        assert got == want, (opname, got, want, texts)
    for p in cell.params:
        assert p in texts, (p, texts)
    for s in cell.states:
        assert s in texts
        assert any(t.startswith(f"{s}'") for t in texts), (s, texts)
    assert "x" in texts


def test_gru_diagram_shows_what_the_compiler_runs():
    src = render(gr.cells.gru(3, 4)).source
    hoisted = src[src.index("subgraph cluster_hoisted"):]
    hoisted = hoisted[: hoisted.index("}")]
    # x @ Wx + b is one batched product for all steps: inside the shaded region.
    assert re.search(r'label="matmul\n\(N, 3H\)"', hoisted)
    assert 'label="x\n(N, D)"' in hoisted
    # h @ Wh[:, :2H] for z and r is fused; the h~ block keeps its own slice.
    assert 'label="Wh[:, :2H]\n(H, 2H)"' in src
    assert 'label="Wh[:, 2H:3H]\n(H, H)"' in src
    assert "fused" in src
    assert "sub 1 − ·" in src  # the constant is written into the op, not drawn apart


def test_declared_graph_is_drawn_unfused_without_a_hoisted_region():
    src = render(gr.cells.gru(3, 4), compiled=False).source
    assert "fused" not in src and "cluster_hoisted" not in src
    for lo, hi in [("", "H"), ("H", "2H"), ("2H", "3H")]:
        assert f'label="Wh[:, {lo}:{hi}]\n(H, H)"' in src


def test_shapes_can_be_concrete_or_left_out():
    cell = gr.cells.gru(3, 4)
    assert 'label="matmul\n(N, 12)"' in render(cell, shapes="concrete").source
    assert 'label=matmul ' in render(cell, shapes=False).source.replace('"', "") + " "
    assert "(N, 3H)" not in render(cell, shapes=False).source


def test_lstm_nico_concat_edges_say_which_columns_each_part_fills():
    src = render(gr.cells.lstm_nico(3, 4)).source
    assert 'label="concat(' not in src  # labels are op + shape, not the long expression
    assert 'label="[:, :D]"' in src and 'label="[:, D:D+H]"' in src
    assert 'label="concat\n(N, D+H)"' in src
    assert 'label="concat\n(D+H, 4H)' in src  # the four gate weights joined by the compiler


def _clusters(src):
    return re.findall(r"subgraph (cluster_\w+)", src)


def _node_decls(src, label_start):
    return re.findall(r'^\s*\S+ \[label="' + re.escape(label_start), src, flags=re.M)


@pytest.mark.parametrize("T", [1, 4, 5])
def test_unrolled_has_one_cluster_per_step_and_parameters_once(T):
    cell = gr.cells.gru(3, 4)
    src = render(cell, unroll=T).source
    steps = [c for c in _clusters(src) if c.startswith("cluster_step_")]
    assert steps == [f"cluster_step_{t}" for t in range(1, T + 1)]
    for p in cell.params:
        assert len(_node_decls(src, f"{p}\n")) == 1, p
    # Every step takes its rows of the one hoisted product.
    assert all(f'label="[t={t}]"' in src for t in range(1, T + 1))
    # States flow h0 -> step 1 -> h1 -> ... -> hT.
    for t in range(T + 1):
        assert len(_node_decls(src, f"h{t}\n")) == 1


def test_long_unroll_is_folded_to_first_steps_an_ellipsis_and_the_last():
    src = render(gr.cells.lstm(3, 4), unroll=40).source
    assert [c for c in _clusters(src) if c.startswith("cluster_step_")] == [
        "cluster_step_1", "cluster_step_2", "cluster_step_40"]
    assert "steps 3–39" in src
    for name in ("h", "c"):
        assert f"s_{name}_2 -> ellipsis" in src and f"ellipsis -> s_{name}_39" in src
    assert len(src) < 3 * len(render(gr.cells.lstm(3, 4), unroll=3).source)


def test_backward_reverses_edges_and_labels_what_flows():
    cell = gr.cells.gru(3, 4)
    fwd = render(cell).source
    bwd = render(cell, backward=True).source
    assert "dL/d" not in fwd and "dir=back" not in fwd
    for label in ("dL/dWx", "dL/dWh", "dL/db", "dL/dh", "dL/dx", "dL/dh'"):
        assert f'label="{label}' in bwd, label
    grads = [line for line in bwd.splitlines() if "dir=back" in line]
    assert grads and all("dashed" in line and "#cc0000" in line for line in grads)
    # The weight gradients are summed over all steps after the loop (deferred / hoisted).
    assert re.search(r'label="dL/dWx\n\(Σ over t, after the loop\)"', bwd)
    # Every forward edge into the update carries a gradient back: as many as in the forward.
    n_fwd = len(re.findall(r" -> ", fwd))
    assert len(grads) >= n_fwd - 1


def test_unrolled_backward_labels_states_by_step():
    src = render(gr.cells.rnn(3, 4), unroll=3, backward=True).source
    for t in range(4):
        assert f'label="dL/dh{t}' in src
    assert "grads.state0" in src


def test_dot_output_needs_no_graphviz_and_other_formats_say_how_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cell = gr.cells.rnn(3, 4)
    dg = render(cell, tmp_path / "rnn.dot")
    assert (tmp_path / "rnn.dot").read_text() == dg.source
    for suffix in (".svg", ".png", ".pdf"):
        with pytest.raises(GraphvizNotFound) as exc:
            render(cell, tmp_path / f"rnn{suffix}")
        msg = str(exc.value)
        assert "apt-get install graphviz" in msg and "brew install graphviz" in msg and "conda" in msg
        assert not (tmp_path / f"rnn{suffix}").exists()
    # The command line turns it into one line and exit status 2.
    rc = cli.main(["render", "rnn", "-o", str(tmp_path / "c.svg")])
    assert rc == 2


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(gr.GraphError, match=r"\.svg, \.png, \.pdf, \.dot"):
        render(gr.cells.rnn(3, 4), tmp_path / "c.jpeg")


def test_bad_options_are_refused():
    with pytest.raises(gr.GraphError, match="unroll"):
        render(gr.cells.rnn(3, 4), unroll=0)
    with pytest.raises(gr.GraphError, match="shapes"):
        render(gr.cells.rnn(3, 4), shapes="big")


def test_output_is_deterministic():
    a = render(gr.cells.lstm(3, 4), unroll=3, backward=True).source
    b = render(gr.cells.lstm(3, 4), unroll=3, backward=True).source
    assert a == b and "0x" not in a


USER_CELL = '''
import graphrnn as gr

def peephole(input_size, hidden_size):
    c = gr.CellBuilder("peephole")
    x = c.input("x", input_size)
    h = c.state("h_prev", hidden_size)
    W = c.param("W", (input_size, hidden_size))
    U = c.param("U", (hidden_size, hidden_size))
    c.update(h_prev=gr.tanh(x @ W + h @ U) * 0.5)
    return c.build()
'''


def test_cli_renders_builtin_and_user_cells(tmp_path, monkeypatch, capsys):
    (tmp_path / "mycells.py").write_text(USER_CELL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "user.dot"
    assert cli.main(["render", "mycells:peephole", "-o", str(out), "--input-size", "5",
                     "--hidden-size", "2", "--unroll", "2", "--backward"]) == 0
    src = out.read_text()
    assert "h_prev0" in src and "h_prev2" in src and "dL/dU" in src and "mul · × 0.5" in src
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["render", "nosuchcell", "-o", str(tmp_path / "x.dot")]) == 2
    assert "unknown cell" in capsys.readouterr().err


def test_committed_gallery_matches_the_code():
    """Fails when a change to the renderer or a cell leaves docs/gallery stale:
    regenerate with `make gallery` (python -m graphrnn.render --gallery docs/gallery)."""
    fresh = gallery_sources()
    committed = {p.stem: p.read_text(encoding="utf-8") for p in GALLERY.glob("*.dot")}
    assert sorted(committed) == sorted(fresh), "gallery files differ: run `make gallery`"
    stale = [stem for stem in fresh if committed[stem] != fresh[stem]]
    assert not stale, f"stale diagrams {stale}: run `make gallery`"
    # Each SVG was drawn from its DOT: same nodes (graphviz names each node's <title>).
    for stem, src in fresh.items():
        svg = GALLERY / f"{stem}.svg"
        assert svg.exists(), f"{svg.name} missing: run `make gallery`"
        nodes = set(re.findall(r"^\t+(\w+) \[label=", src, flags=re.M))
        assert nodes <= svg_titles(svg), f"{svg.name} is stale: run `make gallery`"


def test_gallery_covers_every_builtin_cell_three_ways():
    stems = {stem for stem, _, _ in gallery_items()}
    for name in gr.cells.CELLS:
        assert {name, f"{name}-unrolled", f"{name}-backward"} <= stems
    assert GALLERY_SIZES[0] != GALLERY_SIZES[1]


@needs_dot
def test_cli_without_output_writes_an_svg_named_after_the_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", "mgu", "--unroll", "2", "--backward"]) == 0
    texts = svg_texts(tmp_path / "mgu-unrolled-backward.svg")
    assert "step 1" in texts and "step 2" in texts and any(t.startswith("dL/dWh") for t in texts)
