"""Diagrams: what they must show, and that the committed gallery matches the code."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

import graphrnn as gr
from graphrnn import cli
from graphrnn.plan import STATIC, compile_cell
from graphrnn.primitives import PRIMITIVES
from graphrnn.render import (GALLERY_SIZES, GraphvizNotFound, diagram_graph, gallery_items,
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
           and not (plan.timing[n] == STATIC and g.nodes[n]["opname"] == "slice")]
    for opname in sorted({g.nodes[n]["opname"] for n in ops}):
        want = sum(g.nodes[n]["opname"] == opname for n in ops)
        got = sum(t.split(" = ")[-1].split(" ")[0] == opname for t in texts)
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
    assert 'label="xh = concat\n(N, D+H)"' in src
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
    # Every step takes its rows of the one hoisted product, xw = x @ Wx + b.
    assert all(f'label="xw\n[t={t}]"' in src for t in range(1, T + 1))
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
    for p in ("Wx", "Wh", "b"):
        assert f'label="dL/d{p}: summed\nover the T steps\nafter the loop"' in bwd
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
        # (less any invisible one: graphviz writes nothing for it)
        nodes = set(re.findall(r"^\t+(\w+) \[label=(?!.*style=invis)", src, flags=re.M))
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


# --------------------------------------------------------------------------- names the reader knows

def _labels(G, role=None):
    return [d["label"] for _, d in G.nodes(data=True) if role is None or d["role"] == role]


def _grad_labels(G):
    """Gradient edge labels, with the lines a long one is broken into joined again."""
    return [d["label"].replace("\n  ", " ") for _, _, d in G.edges(data=True) if d["kind"] == "grad"]


def named_cell():
    c = gr.CellBuilder("named")
    x, h = c.input("x", 3), c.state("h", 4)
    W, U = c.param("W", (3, 4)), c.param("U", (4, 4))
    gate = c.name(gr.sigmoid(x @ W + h @ U), "gate")
    cand = gr.tanh(h @ U, name="cand")
    c.update(h=gate * cand + (1 - gate) * h)
    return c.build()


@pytest.mark.parametrize("compiled", [True, False])
def test_a_users_names_label_the_values_and_their_gradients(compiled):
    G = diagram_graph(named_cell(), compiled=compiled)
    heads = [label.split("\n")[0] for label in _labels(G, "op")]
    assert "gate = sigmoid" in heads and "cand = tanh" in heads
    grads = _grad_labels(diagram_graph(named_cell(), backward=True, compiled=compiled))
    # operands named by their values, not the rule's da/db; gate feeds two products
    assert "dL/dgate += dL/d(gate * cand) * cand" in grads, grads
    assert "dL/dcand = dL/d(gate * cand) * gate" in grads
    assert "dL/d(1 - gate) = dL/d((1 - gate) * h) * h" in grads


@pytest.mark.parametrize("name,gates", [("gru", ["xw", "z", "r", "h~"]), ("mgu", ["xw", "f", "h~"]),
                                        ("lstm", ["xw", "f", "g", "i", "o", "c'"]),
                                        ("lstm_nico", ["xh", "g", "i", "f", "o", "s'"]), ("rnn", ["a"])])
def test_builtin_cells_name_their_gates_in_every_view(name, gates):
    cell = gr.cells.CELLS[name](3, 4)
    for opts in ({}, {"compiled": False}, {"unroll": 2}, {"backward": True}):
        G = diagram_graph(cell, **opts)
        named = {label.split(" = ")[0] for label in _labels(G) if " = " in label.split("\n")[0]}
        assert set(gates) <= {n for part in named for n in part.split("|")}, (opts, named)
        if opts.get("backward"):
            grads = " ".join(_grad_labels(G))
            assert all(f"dL/d{gate}" in grads for gate in gates if gate != "xw" or name != "rnn")


def test_the_compiled_gru_names_the_fused_gate_by_its_columns():
    heads = [label.split("\n")[0] for label in _labels(diagram_graph(gr.cells.gru(3, 4)), "op")]
    assert "z|r = sigmoid" in heads and "z = slice [:, :H]" in heads and "r = slice [:, H:2H]" in heads


OPNAMES = "|".join(PRIMITIVES)


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
@pytest.mark.parametrize("unroll", [None, 3])
def test_every_gradient_edge_names_what_it_holds_and_the_rule_that_made_it(name, unroll):
    G = diagram_graph(gr.cells.CELLS[name](3, 4), backward=True, unroll=unroll)
    grads = _grad_labels(G)
    assert grads
    for label in grads:
        assert label.startswith("dL/d") and not re.search(rf"dL/d\(({OPNAMES})\)", label), label
    # what flows is named by values (dL/dh' * h~), never by the rule's own letters (da, db)
    parts = {re.split(r" \+?= ", label.split("\n")[0], maxsplit=1)[-1] for label in grads if "=" in label}
    assert parts and all("dL/d" in p for p in parts), parts
    assert not any(re.fullmatch(r"d[a-zW]|d[a-z] \+ d[a-z]|dx\[:, i:j\]|dxₖ", p) for p in parts), parts


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
def test_the_backward_view_shows_each_primitives_own_rule_on_its_node(name, monkeypatch):
    cell = gr.cells.CELLS[name](3, 4)
    G = diagram_graph(cell, backward=True)
    plan = compile_cell(cell)
    for n, a in plan.graph.nodes(data=True):
        if f"n{n}" in G and G.nodes[f"n{n}"]["role"] == "op":
            label = G.nodes[f"n{n}"]["label"]
            wanted = [r for r, p in zip(a["op"].rule * len(a["args"]), a["args"])
                      if plan.requires[True][p]]
            assert wanted and all(r in label for r in wanted), (label, wanted)
    # The text is the primitive's own: change it there and the diagram follows.
    present = {a.get("opname") for _, a in plan.graph.nodes(data=True)}
    unary = next(u for u in ("tanh", "relu", "sigmoid") if u in present)
    right = PRIMITIVES[unary].rule[0]
    monkeypatch.setattr(PRIMITIVES[unary], "rule", ("dx = TEST",))
    labels = " ".join(_labels(diagram_graph(gr.cells.CELLS[name](3, 4), backward=True), "op"))
    assert "dx = TEST" in labels and right not in labels


def test_forward_views_show_no_rules():
    labels = " ".join(_labels(diagram_graph(gr.cells.gru(3, 4)), "op"))
    assert "dy" not in labels


def test_a_gradient_can_be_followed_by_hand_from_the_loss_to_a_parameter():
    """From the incoming dL/dh' note, along gradient edges only, to Wh: every edge on
    the way says what it holds, and every node on the way says its rule."""
    cell = gr.cells.gru(3, 4)
    G = diagram_graph(cell, backward=True)
    grad = nx_grad_graph(G)
    wh = f"n{cell.params['Wh']}"
    path = nx.shortest_path(grad, "grad_out_h", wh)
    assert len(path) > 4
    for u, v in zip(path[1:], path[2:]):
        assert G.edges[u, v]["label"].startswith("dL/d")
        if G.nodes[u]["role"] == "op":
            assert "dy" in G.nodes[u]["label"]


def nx_grad_graph(G):
    return nx.DiGraph([(u, v) for u, v, d in G.edges(data=True) if d["kind"] in ("grad", "grad_in")])


# --------------------------------------------------------------------------- the unrolled view

def _step_of(node_data):
    c = node_data["cluster"] or ""
    return int(c.rsplit("_", 1)[1]) if c.startswith("cluster_step_") else None


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
@pytest.mark.parametrize("T", [3, 12])
def test_unrolled_steps_are_columns_in_time_order_with_the_state_passed_to_the_next(name, T):
    cell = gr.cells.CELLS[name](3, 4)
    G = diagram_graph(cell, unroll=T)
    steps = [1, 2, T] if T > 5 else [1, 2, 3]
    # The boxes are made in the order dot draws them left to right: shared ones, then steps.
    clusters = list(G.graph["clusters"])
    assert clusters[:2] == ["cluster_params", "cluster_hoisted"] or clusters[:1] == ["cluster_params"]
    assert [c for c in clusters if c.startswith("cluster_step_")] == [f"cluster_step_{t}" for t in steps]
    for t in steps:
        for s in cell.states:
            # each step's column opens with the state it reads, which the step before made
            assert G.nodes[f"s_{s}_{t - 1}"]["cluster"] == f"cluster_step_{t}"
            made_by = [u for u, _, d in G.in_edges(f"s_{s}_{t}", data=True) if d["kind"] == "state"]
            assert [_step_of(G.nodes[u]) for u in made_by] == [t]
    # Corresponding nodes of the steps share a rank: the steps line up as columns.
    rows = G.graph["same_rank"]
    assert rows and all(sorted(_step_of(G.nodes[n]) for n in row if n != "loss") == steps for row in rows)
    # every step's output goes to the loss, not only the last one
    assert sorted(_step_of(G.nodes[u]) for u, _ in G.in_edges("loss")) == steps


@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
def test_unrolled_parameters_and_hoisted_part_are_drawn_once_apart_and_referenced_in_steps(name):
    cell = gr.cells.CELLS[name](3, 4)
    G = diagram_graph(cell, unroll=3)
    for p, node in cell.params.items():
        assert G.nodes[f"n{node}"]["cluster"] == "cluster_params"
    # No forward edge enters a step from outside it except the state: steps hold references.
    for u, v, d in G.edges(data=True):
        if d["kind"] == "forward" and _step_of(G.nodes[v]) is not None:
            assert _step_of(G.nodes[u]) == _step_of(G.nodes[v]), (u, v)
    refs = [d for _, d in G.nodes(data=True) if d["role"] in ("rows", "shared_ref")]
    assert refs and all(_step_of(d) for d in refs)
    if name == "gru":
        assert sorted(d["label"] for d in refs if _step_of(d) == 2) == [
            "Wh[:, 2H:3H]", "Wh[:, :2H]", "xw\n[t=2]"]
        notes = _labels(diagram_graph(cell, unroll=3, backward=True), "grad_in")
        assert "dL/dxw: the rows of\nall T steps, one backward\nafter the loop" in notes
        assert "dL/dWh: summed\nover the T steps\nafter the loop" in notes


@needs_dot
@pytest.mark.parametrize("name", sorted(gr.cells.CELLS))
def test_dot_draws_the_steps_left_to_right_in_time(name):
    """The layout itself (positions from Graphviz, not pixels): step t's column
    lies left of step t+1's, in the forward and the backward view (sru, whose
    recurrence has no matmul, came out right to left before the steps were
    held to their order)."""
    import json
    import subprocess

    first = next(iter(gr.cells.CELLS[name](3, 4).states))
    for backward in (False, True):
        src = render(gr.cells.CELLS[name](3, 4), unroll=4, backward=backward).source
        out = json.loads(subprocess.run(["dot", "-Tjson"], input=src.encode(), capture_output=True,
                                        check=True).stdout)
        x = {o["name"]: float(o["pos"].split(",")[0]) for o in out["objects"] if "pos" in o}
        xs = [x[f"s_{first}_{t}"] for t in range(4)]
        assert xs == sorted(xs), (backward, xs)


@needs_dot
@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_nico"])
def test_gates_keep_one_left_to_right_order_in_every_step(name):
    """In Graphviz's own layout, the named values of each step (f, g, i, o, ...)
    come in the same left-to-right order in every step, the last one included."""
    import json
    import subprocess

    cell = gr.cells.CELLS[name](3, 4)
    G = diagram_graph(cell, unroll=4)
    src = render(cell, unroll=4).source
    out = json.loads(subprocess.run(["dot", "-Tjson"], input=src.encode(), capture_output=True,
                                    check=True).stdout)
    pos = {o["name"]: tuple(map(float, o["pos"].split(","))) for o in out["objects"] if "pos" in o}
    orders = []
    for t in range(1, 5):
        rows = {}   # the step's nodes by row (y), each row read left to right
        for n, d in G.nodes(data=True):
            if _step_of(d) == t and n.startswith(f"t{t}_n"):
                rows.setdefault(pos[n][1], []).append((pos[n][0], n.split("_", 1)[1]))
        orders.append([[k for _, k in sorted(r)] for _, r in sorted(rows.items())])
    assert all(o == orders[0] for o in orders), orders


def test_labels_are_broken_between_terms_never_cut():
    G = diagram_graph(gr.cells.gru(3, 4), backward=True)
    labels = [d["label"] for _, _, d in G.edges(data=True)] + [d["label"] for _, d in G.nodes(data=True)]
    assert not any("…" in lab for lab in labels)
    long = [lab for lab in labels if "\n  " in lab]
    assert long and all(line.count("(") == line.count(")") and line.count("[") == line.count("]")
                        for lab in long for line in lab.split("\n"))
