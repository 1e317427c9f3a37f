"""explain: a cell's derivation as a textbook writes it, generated from the graph."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import graphrnn as gr
from graphrnn import cli
from graphrnn.cells import CELLS
from graphrnn.explain import explain
from graphrnn.export import export
from graphrnn.testing import random_cells

# The seed derivation of the book's GRU, in its order, written with the
# GRU's own names: h_prev is the state h, h_next its next value h', h_hat is
# h~, dt the gradient of tanh's argument (a_h~), dhr that of r * h.
GRU_SEED = [
    "dh~ = dh' * z",                              # dh_hat = dh_next * z
    "dh = dh' * (1 - z)",                         # dh_prev = dh_next * (1 - z)
    "da_h~ = dh~ * (1 - h~²)",                    # dt = dh_hat * (1 - h_hat²)
    "dWh[:, 2H:3H] += (r * h)ᵀ da_h~",            # dWhh = (r * h_prev)ᵀ dt
    "d(r * h) = da_h~ Wh[:, 2H:3H]ᵀ",             # dhr = dt Whhᵀ
    "dh += d(r * h) * r",                         # dh_prev += r * dhr
    "da_z = dz * z * (1 - z)",                    # then the update gate
    "da_r = dr * r * (1 - r)",                    # then the reset gate
    "dxw = [dxw[:, :H] | dxw[:, H:2H] | dxw[:, 2H:3H]]",   # finally the blocks stacked
    "db = Σₙ dxw",
    "dWx = xᵀ dxw",
    "dWh = [dWh[:, :H] | dWh[:, H:2H] | dWh[:, 2H:3H]]",
]


def positions(text, wanted):
    lines = [ln.strip() for ln in text.splitlines()]
    out = []
    for w in wanted:
        hits = [i for i, ln in enumerate(lines) if ln == w or ln.startswith(w + "  ")]
        assert hits, f"missing line {w!r} in:\n{text}"
        out.append(hits[0])
    return out


def test_explain_gru_has_the_seed_derivation_in_its_order():
    text = str(explain(gr.cells.gru(3, 4)))
    pos = positions(text, GRU_SEED)
    assert pos == sorted(pos), list(zip(GRU_SEED, pos))


def test_per_step_lines_are_apart_from_once_per_sequence_ones():
    text = str(explain(gr.cells.gru(3, 4)))
    step = text.index("backward, per step")
    seq = text.index("once per sequence")
    # weight gradients inside the loop are marked as summed over t; the hoisted product after it
    assert "dWh[:, :H] += hᵀ da_z    (summed over t: once, after the loop)" in text[step:seq]
    assert "dWx = xᵀ dxw" in text[seq:] and "dWx" not in text[step:seq]
    assert "carried to step t−1: dh(t) = dh" in text[step:seq]
    # the state's readers sum into dh: one '=' then '+='
    assert text[step:seq].count("\n  dh = ") == 1 and text[step:seq].count("\n  dh += ") == 3  # four readers of h


def test_forward_equations_name_the_gates():
    text = str(explain(gr.cells.gru(3, 4)))
    for eq in ["xw = x @ Wx + b", "z = sigmoid(a_z)", "a_h~ = xw[:, 2H:3H] + (r * h) @ Wh[:, 2H:3H]",
               "h' = (1 - z) * h + z * h~"]:
        assert eq in text


def test_lstm_carries_both_states_and_sums_into_dc_next():
    text = str(explain(gr.cells.lstm(3, 4)))
    assert "dc' = dc(t+1)" in text
    assert "dc' += d(tanh(c')) * (1 - tanh(c')²)" in text
    assert "carried to step t−1: dh(t) = dh, dc(t) = dc" in text


@pytest.mark.parametrize("name", sorted(CELLS))
def test_markdown_is_latex_of_every_builtin_cell(name):
    md = explain(CELLS[name](3, 4)).markdown()
    assert md.count("$$") % 2 == 0 and r"\begin{aligned}" in md
    assert "~" not in md.replace(r"\tilde", "")  # names in LaTeX form
    assert explain(CELLS[name](3, 4))._repr_markdown_() == md


def test_a_primitive_explain_does_not_know_gets_a_clear_line():
    from graphrnn.primitives import Tanh

    class MyTanh(Tanh):
        name = "tanh"
        rule = ("dx = my rule",)

        def backward(self, xp, dy, xs, y, needs):
            return (dy * (1 - y * y),)

    c = gr.CellBuilder("odd")
    x, h = c.input("x", 2), c.state("h", 2)
    v = gr.tanh(x + h)
    c.graph.nodes[v.node]["op"] = MyTanh()
    c.graph.nodes[v.node]["op"].check("t", ("N", 2))
    c.update(h=v)
    text = str(explain(c.build()))
    assert "explain does not know primitive 'tanh' (its own rule: dx = my rule)" in text


def test_cli_explain_prints_text_and_writes_markdown(tmp_path, capsys):
    assert cli.main(["explain", "mgu"]) == 0
    assert "dh~ = dh' * f" in capsys.readouterr().out
    out = tmp_path / "mgu.md"
    assert cli.main(["explain", "mgu", "--format", "markdown", "-o", str(out)]) == 0
    assert r"\sigma" in out.read_text()
    assert cli.main(["explain", "nosuch"]) == 2
    assert "unknown cell 'nosuch'" in capsys.readouterr().err


def test_concat_columns_read_as_d_and_h():
    text = str(explain(gr.cells.lstm_nico(3, 4)))
    assert "dx = dxh[:, :D]" in text and "dh = dxh[:, D:D+H]" in text


def test_explain_and_export_take_a_users_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "explain_user_cells.py").write_text(
        "import graphrnn as gr\n"
        "def elman(d, h):\n"
        "    c = gr.CellBuilder('elman')\n"
        "    x, s = c.input('x', d), c.state('s', h)\n"
        "    W, U = c.param('W', (d, h)), c.param('U', (h, h))\n"
        "    c.update(s=gr.tanh(x @ W + s @ U, name='s_new'))\n"
        "    return c.build()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["explain", "explain_user_cells:elman"]) == 0
    out = capsys.readouterr().out
    assert "ds_new = dhs[t] + ds(t+1)" in out and "dU += sᵀ da_s_new" in out
    assert cli.main(["export", "explain_user_cells:elman", "-o", "elman_cell.py"]) == 0
    assert "class TimeElman:" in (tmp_path / "elman_cell.py").read_text()


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_cells(max_ops=6))
def test_every_random_cell_is_explained_with_a_line_per_gradient(cell):
    e = explain(cell)
    text, md = e.text(), e.markdown()
    assert "carried to step t−1:" in text and "explain does not know" not in text
    assert md.count("$$") % 2 == 0
    # every parameter that gets a gradient has a line naming it
    d = e.derivation
    for name, node in cell.params.items():
        if d.req[node]:
            assert f"d{name} " in text or f"d{name}[" in text, (name, text)


def literature_cell():
    """One cell reading every primitive "cells" added, a named and an unnamed constant array."""
    c = gr.CellBuilder("lit")
    x, h = c.input("x", 3), c.state("h", 4)
    W, V = c.param("W", (4, 4)), c.param("V", (3, 4))
    P = c.const(np.eye(4)[::-1], name="P")
    u = c.named(x @ V, "u")
    m = c.named(gr.where(u > 0.0, gr.sqrt(abs(u) + 1.0), gr.log(gr.maximum(u, 0.5))), "m")
    k = c.named(gr.minimum(gr.sin(h), gr.cos(h)) / (h * h + 1.0), "k")
    c.update(h=gr.tanh(h @ (W - W.T - 0.1 * c.const(np.eye(4))) + m @ P + (h ** 3) % 2.0 + k
                       + gr.floor(h * 3.1).mean() + h.sum()))
    return c.build()


def test_every_built_in_primitive_has_its_rule_and_constant_arrays_are_named():
    text = str(explain(literature_cell()))
    assert "explain does not know" not in text
    for line in ["t1 = h @ (W - Wᵀ - 0.1 * C1)",           # the unnamed constant array: C1
                 "+ m @ P +",                                # the named one by its name
                 "m = where([u > 0] > 0, sqrt(abs(u) + 1), log(maximum(u, 0.5)))",
                 "d(minimum(sin(h), cos(h))) = dk / (h * h + 1)",                  # div: da = dy / b
                 "d(h * h + 1) = −(dk * k / (h * h + 1))",                           # db = −dy·y / b
                 "d(sin(h)) = d(minimum(sin(h), cos(h))) * [sin(h) ≤ cos(h)]",     # the tie goes to a
                 "d(cos(h)) = d(minimum(sin(h), cos(h))) * [sin(h) > cos(h)]",
                 "du = d(maximum(u, 0.5)) * [u ≥ 0.5]",
                 "dh += d(sin(h)) * cos(h)", "dh += −(d(cos(h)) * sin(h))",
                 "d(maximum(u, 0.5)) = d(log(maximum(u, 0.5))) / maximum(u, 0.5)",  # log
                 "d(abs(u) + 1) = d(sqrt(abs(u) + 1)) / (2 * sqrt(abs(u) + 1))",    # sqrt: dy / (2y)
                 "du += d(abs(u) + 1) * sign(u)",                                     # abs
                 "d(sqrt(abs(u) + 1)) = dm * [[u > 0] > 0]",                          # where
                 "d(log(maximum(u, 0.5))) = dm * [[u > 0] ≤ 0]",
                 "d([u > 0]) = 0",                                                    # a mask: none
                 "d(floor(h * 3.1)) = repeat(d(mean(floor(h * 3.1))) / 4, 4 columns)",  # mean
                 "d(h * 3.1) = 0",                                                    # floor
                 "dh += dt2 * 3 * h^2",                                               # pow, k = 3
                 "dh = repeat(d(sum(h)), 4 columns)",                                 # sum
                 "dW += (dWᵀ)ᵀ"]:                                                     # transpose
        assert line in text, (line, text)
    assert "% 2" not in text and "h^3 mod 2" in text and "dt2 = dt3" in text   # mod: dx = dy
    md = explain(literature_cell()).markdown()
    assert r"^\top^" not in md and r"\sqrt{" in md and r"\lfloor" in md


def test_a_registered_user_primitive_is_said_to_be_unknown():
    from graphrnn.primitives import PRIMITIVES

    class Softsign(gr.Elementwise):
        """y = x / (1 + |x|);  dx = dy / (1 + |x|)²"""
        name = "softsign_explain"
        rule = ("dx = dy / (1 + |x|)²",)
        saves = (0,)

        def forward(self, xp, x, out=None):
            return xp.divide(x, 1 + xp.abs(x), out=out)

        def backward(self, xp, dy, xs, y, needs):
            return (dy / (1 + xp.abs(xs[0])) ** 2,)

    softsign = gr.register_primitive(Softsign)
    try:
        c = gr.CellBuilder("soft")
        x, h = c.input("x", 2), c.state("h", 2)
        c.update(h=softsign(x + h))
        cell = c.build()
        text = str(explain(cell))
        assert "explain does not know primitive 'softsign_explain' (its own rule: dx = dy / (1 + |x|)²)" in text
        with pytest.raises(gr.GraphError, match="export does not know primitive 'softsign_explain'"):
            export(cell)
    finally:
        PRIMITIVES.pop("softsign_explain", None)


def test_a_user_primitive_that_states_its_trees_is_explained_drawn_and_exported():
    """One table: the trees a primitive declares are what explain, the backward
    diagram and export print, for a user's as for a built-in."""
    from graphrnn.primitives import PRIMITIVES
    from test_export import compare

    class Softsign(gr.Elementwise):
        """y = x / (1 + |x|);  dx = dy / (1 + |x|)²"""
        name = "softsign_trees"
        rule = ("dx = dy / (1 + |x|)²",)
        saves = (0,)

        def forward(self, xp, x, out=None):
            return xp.divide(x, 1 + xp.abs(x), out=out)

        def backward(self, xp, dy, xs, y, needs):
            return (dy / (1 + xp.abs(xs[0])) ** 2,)

        def formula(self, a):
            return ("bin", "/", a[0], ("bin", "+", ("num", 1.0), ("fn", "abs", a[0])))

        def gradient(self, i, dy, a, y):
            return ("bin", "/", dy, ("pow", ("bin", "+", ("num", 1.0), ("fn", "abs", a[0])), 2))

    class Changed(Softsign):  # a new backward below the trees: they no longer describe it
        name = "softsign_trees_changed"

        def backward(self, xp, dy, xs, y, needs):
            return (dy,)

    softsign = gr.register_primitive(Softsign)
    changed = gr.register_primitive(Changed)
    try:
        c = gr.CellBuilder("soft")
        x, h = c.input("x", 2), c.state("h", 2)
        c.update(h=softsign(x @ c.param("W", (2, 2)) + h))
        cell = c.build()
        text = str(explain(cell))
        assert "does not know" not in text and "abs(" in text, text
        assert "(1 + abs(x @ W + h))^2" in gr.render(cell, unroll=2, backward=True).source  # an edge label
        compare(cell)  # the exported module's gradients are graphrnn's, to 1e-12
        c = gr.CellBuilder("changed")
        x, h = c.input("x", 2), c.state("h", 2)
        c.update(h=changed(x + h))
        assert "explain does not know primitive 'softsign_trees_changed'" in str(explain(c.build()))
    finally:
        PRIMITIVES.pop(Softsign.name, None), PRIMITIVES.pop(Changed.name, None)
