"""Diagrams of cells: the cell, its unrolled form and its backward pass.

Two stages, as in tinygrad's old ``graph.py``: first a networkx DiGraph whose
nodes carry a ``role`` (input, state_in, state, state_out, output, param,
static, const, op, rows, shared_ref, ellipsis, grad_in), a short ``label`` and
a ``cluster``; then a ``graphviz.Digraph`` emitted from it. Tests compare the
first stage and the gallery its DOT text, so everything here is ordered by the
cell's topological order and never by memory addresses or set iteration.

By default the diagram is drawn from the *compiled* plan, not the declaration:
fused matmuls appear as one wide product, and the part that depends only on
the input and the parameters (hoisted: run once for all T steps as one
batched op over N*T rows) is a shaded region.

Values are labelled with the names the reader knows: a name given in the cell
(``z = sigmoid``), a parameter view (``Wh[:, 2H:3H]``) or a short expression of
those. The backward view prints each primitive's own ``rule`` on its node and
labels every gradient edge with what it holds and the rule that made it, its
operands named by their values (``dL/dz += dL/dh' * h~``). The unrolled view
draws the steps as columns, left to right in time, with the parameters and the
hoisted part apart on the left, and every step's output going to the loss.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import graphviz
import networkx as nx
import numpy as np

from . import files
from .plan import HOISTED, STATIC, compile_cell
from .primitives import GraphError, fmt_shape

FORMATS = ("svg", "png", "pdf", "dot")
LINE_MAX = 28        # characters per label line (Theano's max_label_size idea)
EDGE_LINE_MAX = 34   # a gradient edge's label lines, broken between terms
FOLD_AFTER = 5       # unrolled views with more steps are folded
FOLD_HEAD = 2        # steps drawn before the ellipsis when folded
GALLERY_SIZES = (3, 4)   # input, hidden: D=3 and H=4 never collide, so shapes read as D, H, 3H
GALLERY_STEPS = 3
GALLERY_FOLDED_STEPS = 12

INSTALL_HINT = ("install Graphviz's `dot` program: `sudo apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (macOS), or `conda install -c conda-forge graphviz`; "
                "or write a .dot file, which needs no Graphviz")


from .errors import GraphvizNotFound  # noqa: F401  (imported from here too)


# ----------------------------------------------------------------------------- look

# One entry per role: shape and colour differ so that roles read apart even in
# greyscale print (shape) and at a glance (colour).
STYLE = {
    "input": dict(shape="parallelogram", style="filled", fillcolor="#cfe2f3", color="#3d85c6"),
    "state_in": dict(shape="ellipse", style="filled", fillcolor="#d9ead3", color="#6aa84f"),
    "state": dict(shape="ellipse", style="filled", fillcolor="#d9ead3", color="#6aa84f"),
    "state_out": dict(shape="ellipse", style="filled,bold", fillcolor="#93c47d", color="#274e13",
                      peripheries="2"),
    "output": dict(shape="invhouse", style="filled", fillcolor="#d9d2e9", color="#674ea7"),
    "param": dict(shape="box3d", style="filled", fillcolor="#fce5cd", color="#b45f06"),
    "static": dict(shape="box", style="filled,dashed", fillcolor="#fff2e6", color="#b45f06"),
    "const": dict(shape="plaintext", fontcolor="#444444"),
    "op": dict(shape="box", style="rounded,filled", fillcolor="#ffffff", color="#444444"),
    "ellipsis": dict(shape="box", style="dotted,rounded", color="#888888", fontcolor="#444444"),
    # inside a step of the unrolled view: what is drawn once outside it
    "rows": dict(shape="parallelogram", style="filled,dashed", fillcolor="#eaf1fb", color="#3d85c6"),
    "shared_ref": dict(shape="box", style="filled,dashed", fillcolor="#fff2e6", color="#b45f06",
                       fontcolor="#783f04"),
    "loss": dict(shape="box", style="filled,bold", fillcolor="#ead1dc", color="#741b47", fontcolor="#4c1130"),
    "grad_in": dict(shape="note", style="filled", fillcolor="#f4cccc", color="#cc0000",
                    fontcolor="#990000"),
}
CLUSTER_STYLE = {
    "hoisted": dict(style="filled,rounded", fillcolor="#eaf1fb", color="#3d85c6", fontcolor="#1c4587"),
    "step": dict(style="rounded", color="#999999", fontcolor="#444444"),
    "params": dict(style="filled,rounded", fillcolor="#fffaf3", color="#b45f06", fontcolor="#783f04"),
}
FORWARD_EDGE = dict(color="#444444")
FORWARD_EDGE_FAINT = dict(color="#b7b7b7", fontcolor="#999999")
STATE_EDGE = dict(color="#38761d", penwidth="2")
GRAD_EDGE = dict(color="#cc0000", fontcolor="#cc0000", style="dashed")

LEGEND = [
    ("input", "#cfe2f3", "input"),
    ("state in", "#d9ead3", "state_in"),
    ("state out", "#93c47d", "state_out"),
    ("parameter", "#fce5cd", "param"),
    ("parameter view", "#fff2e6", "static"),
    ("primitive", "#ffffff", "op"),
    ("hoisted: once for all T", "#eaf1fb", None),
]


# ------------------------------------------------------------------------- labels

class _Dims:
    """Write sizes as the reader thinks of them: H, 3H, D, D+H, or numbers."""

    def __init__(self, cell, mode):
        self.H = cell.hidden_size
        self.D = cell.input_size
        self.mode = mode  # True/"symbolic", "concrete", False
        self.names = {}   # node -> a name the cell did not give (``h'``, ``a_z``): _value_names

    def dim(self, d):
        if not isinstance(d, int) or self.mode == "concrete":
            return str(d)
        return self.sym(d)

    def sym(self, d):
        H, D = self.H, self.D
        if d == H:
            return "H"
        if d % H == 0:
            return f"{d // H}H"
        if d == D:
            return "D"
        if d > D and (d - D) % H == 0:
            k = (d - D) // H
            return "D+H" if k == 1 else f"D+{k}H"
        return str(d)

    def shape(self, shape, rows=None):
        if not self.mode:
            return ""
        dims = [self.dim(d) for d in shape]
        if rows is not None and dims and dims[0] == "N":
            dims[0] = rows
        if len(dims) == 1:
            return f"({dims[0]},)"
        return "(" + ", ".join(dims) + ")"

    def bound(self, d):
        # Slice bounds read best as multiples of H even in concrete mode ("Wh[:, H:2H]").
        return "" if d == 0 else self.sym(d)

    def slice(self, ndim, start, stop):
        lead = ":, " * (ndim - 1)
        return f"[{lead}{self.bound(start) if start else ''}:{self.bound(stop)}]"


def _cap(line, width=LINE_MAX):
    """A label line of at most ``width`` characters where it can be broken: only
    at a space outside brackets (between operands and operators), never inside a
    name or a subscript, so no expression is cut."""
    if len(line) <= width:
        return line
    words, depth, cur = [], 0, ""
    for ch in line:
        depth += ch in "([" and 1 or 0
        depth -= ch in ")]" and 1 or 0
        if ch == " " and depth == 0:
            words.append(cur)
            cur = ""
        else:
            cur += ch
    words.append(cur)
    out, row = [], ""
    for w in words:
        if row and len(row) + 1 + len(w) > width:
            out.append(row)
            row = "  " + w
        else:
            row = f"{row} {w}" if row else w
    out.append(row)
    return "\n".join(out)


def _lines(*lines):
    return "\n".join(_cap(s) for s in lines if s)


def _num(v):
    return f"{v:g}" if np.ndim(v) == 0 else f"const{fmt_shape(np.shape(v))}"


_FOLD_SYMBOLS = {"add": "+", "sub": "−", "mul": "×"}


def _folds_const(g, n):
    """True when the op's one constant operand is written into its label instead of drawn."""
    a = g.nodes[n]
    consts = [g.nodes[p]["kind"] == "const" and g.nodes[p]["shape"] == () for p in a["args"]]
    return a.get("opname") in _FOLD_SYMBOLS and len(consts) == 2 and sum(consts) == 1


# ------------------------------------------------------------------------- names

def _fused_parts(g, n):
    """The names of the columns of a fused op, left to right (``["z", "r"]``), when
    every consumer is a named slice of it; else None."""
    if not g.nodes[n].get("fused"):
        return None
    succ = list(g.successors(n))
    if not succ or not all(g.nodes[m].get("opname") == "slice" and g.nodes[m].get("vname") for m in succ):
        return None
    return [g.nodes[m]["vname"] for m in sorted(succ, key=lambda m: g.nodes[m]["op"].start)]


def _display(g, n, dims, depth=0):
    """What node n holds, as the reader knows it: a name (``z``, ``Wh``, ``z|r`` for
    a fused op), a parameter view (``Wh[:, 2H:3H]``), or a short expression of
    those (``r * h``). Gradients are labelled with it: ``dL/dz``."""
    a = g.nodes[n]
    if a.get("vname"):
        return a["vname"]
    if n in dims.names:
        return dims.names[n]
    if a["kind"] in ("input", "state", "param"):
        return a["name"]
    if a["kind"] == "const":
        return a["label"]
    parts = _fused_parts(g, n)
    if parts:
        return "|".join(parts)
    return _expression(g, n, dims, depth)


def _value_names(cell, g):
    """Names for values the cell left unnamed, as ``graphrnn explain`` names them:
    a state's next value ``h'``, a named gate's argument ``a_z``; so that a
    gradient reads ``dL/da_h~``, not the whole expression it flows into."""
    names = {}
    for s, u in cell.updates.items():
        if u in g and g.nodes[u]["kind"] == "op" and not g.nodes[u].get("vname"):
            names.setdefault(u, f"{s}'")
    for n in g.nodes:
        a = g.nodes[n]
        gate = a.get("vname") or "|".join(_fused_parts(g, n) or ())
        if a["kind"] == "op" and gate and len(a["args"]) == 1 and a["op"].elementwise:
            p = a["args"][0]
            pa = g.nodes[p]
            if (pa["kind"] == "op" and not pa.get("vname") and p not in names and g.out_degree(p) == 1
                    and pa["opname"] != "slice"):
                names[p] = f"a_{gate}"
    return names


def _expression(g, n, dims, depth):
    """The op over its operands' display names, written by the primitive's own printer."""
    a = g.nodes[n]
    args = a["args"]
    names = [_display(g, p, dims, depth + 1) for p in args]
    precs = [g.nodes[p]["op"].precedence if g.nodes[p]["kind"] == "op"
             and not g.nodes[p].get("vname") and p not in dims.names and not _fused_parts(g, p) else 9
             for p in args]
    ndim = len(g.nodes[args[0]]["shape"]) if args else 0
    return a["op"].expression(names, precs, lambda lo, hi: dims.slice(ndim, lo, hi))


def _grad_of(name):
    """``dL/dz``; ``dL/d(r * h)`` for an expression."""
    return f"dL/d({name})" if " " in name else f"dL/d{name}"


def _named_head(g, n, head):
    """``z = sigmoid`` when the value (or the fused op's columns) has a name."""
    a = g.nodes[n]
    name = a.get("vname") or "|".join(_fused_parts(g, n) or ())
    return f"{name} = {head}" if name else head


def _op_head(g, n, dims):
    """The op, with a constant operand written in (``sub 1 − ·``) and slices' columns."""
    a = g.nodes[n]
    name, args = a["opname"], a["args"]
    if name == "slice":
        return "slice " + dims.slice(len(g.nodes[args[0]]["shape"]), a["op"].start, a["op"].stop)
    if _folds_const(g, n):
        consts = [g.nodes[p]["value"] if g.nodes[p]["kind"] == "const" else None for p in args]
        sym = _FOLD_SYMBOLS[name]
        return (f"{name} {_num(consts[0])} {sym} ·" if consts[0] is not None
                else f"{name} · {sym} {_num(consts[1])}")
    return name


def _rule_lines(g, n, wants):
    """The primitive's local rule, for the inputs a gradient is wanted for."""
    a = g.nodes[n]
    rule = a["op"].rule
    if len(rule) == 1:
        return [rule[0]] if any(wants(p) for p in a["args"]) else []
    return [r for r, p in zip(rule, a["args"]) if wants(p)]


def _op_label(g, n, dims, rows=None, rules=()):
    """``z = sigmoid``, the local rule in a backward view, the result shape."""
    a = g.nodes[n]
    head = _named_head(g, n, _op_head(g, n, dims))
    extra = "fused" if a.get("fused") and a["opname"] != "slice" else ""
    return "\n".join([_cap(head), *rules, *(s for s in (dims.shape(a["shape"], rows), extra) if s)])


def _static_label(g, n, dims):
    """A value computed from parameters only: ``Wh[:, 2H:3H]`` when it is a slice of one."""
    a = g.nodes[n]
    if a["opname"] == "slice":
        return _lines(_display(g, n, dims), dims.shape(a["shape"]))
    return _op_label(g, n, dims)


def _edge_label(g, src, dst, dims):
    """Argument order where it matters: the columns each part of a concat fills, ± for sub."""
    a = g.nodes[dst]
    if a.get("opname") == "concat":
        off, parts = 0, []
        for p in a["args"]:
            w = g.nodes[p]["shape"][-1]
            if p == src:
                parts.append(dims.slice(2, off, off + w))
            off += w
        return " ".join(parts)
    if a.get("opname") == "sub" and not any(g.nodes[p]["kind"] == "const" for p in a["args"]):
        if a["args"][0] == a["args"][1]:
            return ""
        return "+" if src == a["args"][0] else "−"
    return ""


def _part(g, src, dst, dims):
    """What dst's rule gives src, with the operands named by their values:
    ``dL/dh' * h~`` (not ``da``), ``dL/dz|r Wh[:, :2H]ᵀ``; a sum where src is read
    twice (x * x). The primitive's own gradient tree (``Primitive.gradient``);
    its rule text (``da``) where it declares none."""
    a = g.nodes[dst]
    op, args = a["op"], a["args"]
    uses = [i for i, p in enumerate(args) if p == src]
    if not type(op).formulas():
        texts = op.rule or (op.name,)
        lhs = [(texts[i] if len(texts) > 1 else texts[0]).split(" = ")[0] for i in uses]
        return " + ".join(dict.fromkeys(lhs))
    printer = _ValuePrinter(g, dims)
    parts = []
    for i in uses:
        tree = op.gradient(i, ("g", dst), [("v", p) for p in args], ("v", dst))
        if tree[0] == "piece":
            tree = tree[3]
        parts.append(printer.expr(tree)[0])
    return " + ".join(parts)


def _value_printer_base():
    from .explain import TextPrinter
    return TextPrinter


class _ValuePrinter:
    """explain's plain-text printer over the diagram's names (``_display``)."""

    def __new__(cls, g, dims):
        base = _value_printer_base()

        class Printer(base):
            def __init__(self):
                self.H = dims.H

            def value(self, n):
                text = _display(g, n, dims)
                return text, (9 if " " not in text else 0)

            def grad_name(self, n):
                return _grad_of(_display(g, n, dims))

            def dim(self, v):
                return dims.bound(v)
        return Printer()


# ------------------------------------------------------------------ the nx stage

class _Builder:
    """Collects nodes, edges and clusters of one diagram in a deterministic order."""

    def __init__(self, title):
        self.G = nx.DiGraph(title=title, clusters={}, legend=True)

    def cluster(self, cid, label, kind):
        self.G.graph["clusters"].setdefault(cid, dict(label=label, kind=kind))

    def node(self, nid, role, label, cluster=None, tooltip=""):
        self.G.add_node(nid, role=role, label=label, cluster=cluster, tooltip=tooltip)

    def edge(self, u, v, label="", kind="forward", grad="", part="", constraint=True):
        """``grad`` names what flows along the edge (its gradient is dL/d<grad>);
        ``part`` is the rule of v that makes that gradient (``da``, ``dW``);
        ``constraint=False`` lets the layout ignore the edge when ranking nodes."""
        self.G.add_edge(u, v, label=label, kind=kind, grad=grad, part=part, constraint=constraint)


def _source(cell, compiled):
    plan = compile_cell(cell, fuse=bool(compiled))  # fuse=False: the graph as declared, with its kinds
    return plan.graph, plan.timing, plan


def diagram_graph(cell, *, unroll=None, backward=False, shapes=True, compiled=True, grad=None) -> nx.DiGraph:
    """The diagram as a networkx DiGraph (nodes: role, label, cluster; edges: kind,
    label, grad, part, constraint; graph: title, clusters, backward, and for the
    unrolled view same_rank, the groups of step nodes that share a row)."""
    if unroll is not None and (not isinstance(unroll, int) or isinstance(unroll, bool) or unroll < 1):
        raise GraphError(f"render: unroll must be a positive number of steps, got {unroll!r}")
    if shapes not in (True, False, "symbolic", "concrete"):
        raise GraphError(f"render: shapes must be True, False, 'symbolic' or 'concrete', got {shapes!r}")
    dims = _Dims(cell, shapes)
    g, kind, plan = _source(cell, compiled)
    dims.names = _value_names(cell, g)
    order = list(nx.lexicographical_topological_sort(g))
    view = _View(cell, g, kind, plan, order, dims, compiled, backward)
    G = view.one_step() if unroll is None else view.unrolled(unroll)
    if backward:
        _add_backward(G, unroll)
    sizes = f"D={cell.input_size}, H={cell.hidden_size}, N=batch"
    what = "cell" if unroll is None else f"unrolled over T={unroll} steps"
    if backward:
        what += ", backward"
    G.graph["title"] = f"{cell.name}: {what}  ({sizes})"
    G.graph["backward"] = backward
    if grad:
        if unroll is None:
            raise GraphError("render: grad colours the unrolled view; give unroll=T too")
        _colour_by_gradient(G, cell, plan, unroll, grad, compiled)
    return G


GRAD_COLOURS = ("#fff5f0", "#fcbba1", "#fb6a4a", "#cb181d", "#67000d")  # small to large, log scale


def _colour_by_gradient(G, cell, plan, T, grad, compiled):
    """Fill each value's node by log10 ‖∂L/∂v‖ (the same scale for the whole
    diagram) and add the norm to its label: the vanishing gradient, seen."""
    import numpy as np

    from .gradflow import node_gradients

    if grad is True:
        rng = np.random.default_rng(0)
        params = cell.init_params(seed=0, dtype=np.float64)
        xs = rng.normal(size=(1, T, cell.input_size))
        dhs = np.zeros((1, T, cell.output_size))
        u = rng.normal(size=cell.output_size)
        dhs[0, -1] = u / np.linalg.norm(u)
        loss = "L = u · y_T (the last step)"
    else:
        params, xs, dhs = grad["params"], grad["xs"], grad["dhs"]
        loss = grad.get("loss", "the given loss")
    per_step, total = node_gradients(cell, params, xs, dhs, fuse=bool(compiled))
    norms = {}
    for nid, d in G.nodes(data=True):
        m = re.fullmatch(r"t(\d+)_(?:n|ref)(\d+)", nid)
        if m:
            norms[nid] = per_step.get((int(m.group(2)), int(m.group(1))), 0.0)
        elif re.fullmatch(r"n\d+", nid):
            norms[nid] = total.get(int(nid[1:]), 0.0)
        elif re.fullmatch(r"t\d+_y", nid):
            norms[nid] = float(np.linalg.norm(dhs[:, int(nid[1:-2]) - 1]))
        elif nid.startswith("s_"):
            name, t = nid[2:].rsplit("_", 1)
            t = int(t)
            snode, unode = cell.states[name], cell.updates[name]
            norms[nid] = per_step.get((snode, 1), 0.0) if t == 0 else per_step.get((unode, t), 0.0)
    logs = [np.log10(v) for v in norms.values() if v > 0]
    lo, hi = (min(logs), max(logs)) if logs else (0.0, 1.0)
    for nid, v in norms.items():
        d = G.nodes[nid]
        if v > 0:
            k = 0 if hi == lo else (np.log10(v) - lo) / (hi - lo)
            d["fill"] = GRAD_COLOURS[min(int(k * len(GRAD_COLOURS)), len(GRAD_COLOURS) - 1)]
            d["light_text"] = k > 0.6
        else:
            d["fill"] = "#eeeeee"
        d["label"] += f"\n‖g‖ {v:.1e}"
    G.graph["title"] += f"; colour: ‖∂L/∂v‖, {loss}, from 10^{lo:.0f} (light) to 10^{hi:.0f} (dark)"


class _View:
    """Turns a compiled cell graph into diagram nodes and edges: the cell for one
    step, or the unrolled steps as columns."""

    def __init__(self, cell, g, kind, plan, order, dims, compiled, backward):
        self.cell, self.g, self.kind, self.plan, self.order = cell, g, kind, plan, order
        self.dims, self.backward = dims, backward
        self.hoist = compiled and any(kind[n] == HOISTED and g.nodes[n]["kind"] == "op" for n in order)
        self.wants = plan.requires[True]  # which nodes a gradient is computed for
        self.b = _Builder(cell.name)

    def op_label(self, n, dims=None, rows=None):
        rules = _rule_lines(self.g, n, lambda p: self.wants[p]) if self.backward else ()
        return _op_label(self.g, n, dims or self.dims, rows, rules)

    def forward_edge(self, src_id, dst_id, p, n, label=None, grad=None):
        g = self.g
        self.b.edge(src_id, dst_id, _edge_label(g, p, n, self.dims) if label is None else label,
                    grad=grad or _display(g, p, self.dims), part=_part(g, p, n, self.dims))

    def args_of(self, n):
        """n's operands, each once, without the constants written into its label."""
        g = self.g
        return [p for p in dict.fromkeys(g.nodes[n]["args"])
                if not (g.nodes[p]["kind"] == "const" and _folds_const(g, n))]

    # ---------------------------------------------------------------- one step

    def one_step(self):
        b, g, kind, dims = self.b, self.g, self.kind, self.dims
        if self.hoist:
            b.cluster("cluster_hoisted", "hoisted: run once for all T steps\n(one batched op over N·T rows)",
                      "hoisted")
        for n in self.order:
            a = g.nodes[n]
            nid, k = f"n{n}", a["kind"]
            if k == "input":
                b.node(nid, "input", _lines(a["name"], dims.shape(a["shape"])),
                       "cluster_hoisted" if self.hoist else None, "input, one step of xs")
            elif k == "state":
                b.node(nid, "state_in", _lines(a["name"], dims.shape(a["shape"])),
                       tooltip=f"state {a['name']} from the previous step")
            elif k == "param":
                b.node(nid, "param", _lines(a["name"], dims.shape(a["shape"])), tooltip="parameter")
            elif k == "const":
                if not all(_folds_const(g, m) for m in g.successors(n)):
                    b.node(nid, "const", a["label"])
            elif kind[n] == STATIC:
                b.node(nid, "static", _static_label(g, n, dims),
                       tooltip="computed from parameters only, once per call")
            else:
                cl = "cluster_hoisted" if self.hoist and kind[n] == HOISTED else None
                b.node(nid, "op", self.op_label(n), cl, a.get("expr", a["label"]))
        for n in self.order:
            if g.nodes[n]["kind"] == "op":
                for p in self.args_of(n):
                    self.forward_edge(f"n{p}", f"n{n}", p, n)
        self.cell_outputs()
        return b.G

    def cell_outputs(self):
        b, g, cell = self.b, self.g, self.cell
        out_is_state = False
        for name, snode, unode in self.plan.states:
            is_out = unode == cell.output_node
            out_is_state |= is_out
            label = _lines(f"{name}'" + (" = output" if is_out else ""), self.dims.shape(g.nodes[snode]["shape"]))
            b.node(f"out_{name}", "state_out", label, tooltip=f"next value of state {name}")
            b.edge(f"n{unode}", f"out_{name}", kind="state", grad=f"{name}'")
        if not out_is_state:
            b.node("output", "output", _lines("output", self.dims.shape(g.nodes[cell.output_node]["shape"])))
            b.edge(f"n{cell.output_node}", "output", kind="state", grad="y")

    # ---------------------------------------------------------------- unrolled

    def unrolled(self, T):
        """Steps as columns, left to right in time, each read top to bottom like the
        cell; a state leaves the bottom of its step for the top of the next. The
        parameters and the hoisted part are drawn once, apart, on the left. Inside a
        step, what comes from outside it is a reference: ``xw [t=2]`` (step 2's rows
        of the hoisted result) or ``Wh[:, :2H]`` (the shared parameter view)."""
        steps, folded = _shown_steps(T)
        shared = self.shared_part()
        self.state_chain(T, steps, folded)
        for t in steps:
            self.step(t, T, steps, shared)
        self.align_columns()
        return self.b.G

    def align_columns(self):
        """Corresponding nodes of every step on one rank, so the steps line up as
        columns. (Their left-to-right order is the order the clusters are made in:
        see ``to_digraph``.)"""
        G = self.b.G
        rows = {}
        for n, d in G.nodes(data=True):
            if (d["cluster"] or "").startswith("cluster_step_"):
                rows.setdefault(n.split("_", 1)[1], []).append(n)
        G.graph["same_rank"] = [ns for _, ns in sorted(rows.items()) if len(ns) > 1]
        if "loss" in G:  # on the outputs' row, not above the steps
            G.graph["same_rank"].append([n for n in rows.get("y", ())] + ["loss"])
        # the state each step opens with, step by step: to_digraph holds the
        # columns to this order (see there)
        first = self.plan.states[0][0]
        heads = {int(n.rsplit("_", 1)[1]): n for n, d in G.nodes(data=True) if n.startswith(f"s_{first}_")}
        G.graph["step_heads"] = [n for t, n in sorted(heads.items())
                                 if G.nodes[n]["cluster"] == f"cluster_step_{t + 1}"]

    def shared_part(self):
        """Parameters and their views in one box, the hoisted part in another: the
        nodes drawn once. Returns their ids."""
        b, g, kind, dims = self.b, self.g, self.kind, self.dims
        b.cluster("cluster_params", "parameters: shared by every step", "params")
        if self.hoist:
            b.cluster("cluster_hoisted", "hoisted: run once for all T steps\n(one batched op over T·N rows)",
                      "hoisted")
        shared = set()
        for n in self.order:
            a, k = g.nodes[n], g.nodes[n]["kind"]
            if k == "param":
                b.node(f"n{n}", "param", _lines(a["name"], dims.shape(a["shape"])), "cluster_params",
                       "parameter, shared by every step")
            elif k != "const" and kind[n] == STATIC:
                b.node(f"n{n}", "static", _static_label(g, n, dims), "cluster_params",
                       "computed from parameters once per call")
            elif self.hoist and k == "input":
                b.node(f"n{n}", "input", _lines(a["name"] + "s", dims.shape(("N", "T", a["shape"][1]))),
                       "cluster_hoisted", "the whole input sequence")
            elif self.hoist and kind[n] == HOISTED:
                b.node(f"n{n}", "op", self.op_label(n, rows="T·N"), "cluster_hoisted", a.get("expr", a["label"]))
            else:
                continue
            shared.add(n)
        for n in self.order:
            if n in shared and g.nodes[n]["kind"] == "op":
                for p in self.args_of(n):
                    if g.nodes[p]["kind"] != "const":
                        self.forward_edge(f"n{p}", f"n{n}", p, n)
        return shared

    def state_chain(self, T, steps, folded):
        """h0, h1, ... between the steps (h<t> is the value after step t), and the
        ellipsis that stands for the steps not drawn."""
        b, g = self.b, self.g
        shown = sorted({0, *steps, *((steps[-1] - 1,) if folded else ())})
        for t in shown:
            # a state opens the column of the step that reads it, when that one is drawn
            # ... and the last states close the last step's column, so that no edge
            # leaves the last step sideways (which let dot reorder its gates)
            cluster = (f"cluster_step_{t + 1}" if t + 1 in steps else
                       f"cluster_step_{t}" if t == T and t in steps else None)
            for name, snode, _ in self.plan.states:
                role = "state_in" if t == 0 else "state_out" if t == T else "state"
                b.node(_sid(name, t), role, _lines(f"{name}{t}", self.dims.shape(g.nodes[snode]["shape"])),
                       cluster, f"state {name} after step {t}" if t else f"initial state {name}")
        if folded:
            lo, hi = folded
            b.node("ellipsis", "ellipsis", f"· · ·\nsteps {lo}–{hi}\n(the same cell)")
            for name, _, _ in self.plan.states:
                b.edge(_sid(name, lo - 1), "ellipsis", kind="state", grad=f"{name}{lo - 1}", constraint=False)
                b.edge("ellipsis", _sid(name, hi), kind="state", grad=f"{name}{hi}", constraint=False)

    def step(self, t, T, steps, shared):
        b, g, kind = self.b, self.g, self.kind
        cid = f"cluster_step_{t}"
        b.cluster(cid, f"step {t}", "step")
        quiet = _Dims(self.cell, False)
        refs = {}

        def nid(n):
            a = g.nodes[n]
            if a["kind"] == "state":
                return _sid(a["name"], t - 1)
            if n not in shared:
                return f"t{t}_n{n}"
            if n not in refs:  # a reference inside the step to what is drawn once
                refs[n] = f"t{t}_ref{n}"
                if kind[n] == HOISTED:
                    b.node(refs[n], "rows", f"{_display(g, n, self.dims)}\n[t={t}]", cid,
                           f"step {t}'s rows of the hoisted {_display(g, n, self.dims)}")
                else:
                    b.node(refs[n], "shared_ref", _display(g, n, self.dims), cid,
                           "the shared parameter (view) drawn once in the parameters box")
            return refs[n]

        for n in self.order:
            a = g.nodes[n]
            if n in shared or a["kind"] in ("state", "param", "const"):
                continue
            if a["kind"] == "input":
                b.node(nid(n), "input", _lines(f"{a['name']}{t}", self.dims.shape(a["shape"])), cid)
            else:
                # Every step has the same shapes: the first step shown says them once.
                b.node(nid(n), "op", self.op_label(n, self.dims if t == steps[0] else quiet), cid,
                       a.get("expr", a["label"]))
        for n in self.order:
            a = g.nodes[n]
            if a["kind"] != "op" or n in shared:
                continue
            for p in self.args_of(n):
                pa = g.nodes[p]
                if pa["kind"] == "const":
                    b.node(f"t{t}_n{p}", "const", pa["label"], cid)
                    b.edge(f"t{t}_n{p}", nid(n))
                    continue
                grad = f"{pa['name']}{t - 1}" if pa["kind"] == "state" else None
                self.forward_edge(nid(p), nid(n), p, n, grad=grad)
        for name, snode, unode in self.plan.states:
            # up to the top of the next column: that edge must not push the next step down
            b.edge(nid(unode), _sid(name, t), kind="state", grad=f"{name}{t}", constraint=t == T)
        # every step's output goes to the loss, not only the last one
        oid = f"t{t}_y"
        b.node(oid, "output", _lines(f"y{t}", self.dims.shape(g.nodes[self.cell.output_node]["shape"])), cid,
               f"the output of step {t}, read by the loss")
        b.edge(nid(self.cell.output_node), oid, grad=f"y{t}")
        if "loss" not in b.G:
            b.node("loss", "loss", "L = Σₜ loss(yₜ)", None, "the loss reads every step's output")
        # no rank constraint: edges that converge on one node would reorder the columns
        b.edge(oid, "loss", grad=f"y{t}", constraint=False)


def _sid(name, t):
    return f"s_{name}_{t}"


def _shown_steps(T):
    if T <= FOLD_AFTER:
        return list(range(1, T + 1)), None
    return list(range(1, FOLD_HEAD + 1)) + [T], (FOLD_HEAD + 1, T - 1)


def _add_backward(G, unroll):
    """Reverse every forward edge that carries a gradient, labelled with what it
    holds and the rule that made it (``dL/dh~ = dL/d(z * h~) * z``; ``+=`` where
    several consumers add up), then mark where gradients enter and leave."""
    fwd = [(u, v, d) for u, v, d in G.edges(data=True) if d["kind"] in ("forward", "state")]
    consumers = {}
    for u, v, d in fwd:
        consumers[u] = consumers.get(u, 0) + 1
    for u, v, d in fwd:
        if G.nodes[u]["role"] == "const":
            continue
        label = _grad_of(d["grad"])
        if d["part"]:
            label += (" += " if consumers[u] > 1 else " = ") + d["part"]
        G.add_edge(v, u, label=_cap(label, EDGE_LINE_MAX), kind="grad", grad="", part="",
                   constraint=d["constraint"])
    if unroll is None:
        _gradients_of_one_step(G)
    else:
        _gradients_of_the_unrolled(G)
    # Where a gradient leaves: the incoming states' (to the step before, or, in
    # the unrolled view, only the first step's: the result grads.state0).
    for n, d in list(G.nodes(data=True)):
        if d["role"] == "state_in":
            name = d["label"].split("\n")[0]
            text = (f"dL/d{name}\nto step t−1" if unroll is None else f"dL/d{name}\n(grads.state0)")
            G.add_node(f"gradout_{n}", role="grad_in", label=text, cluster=d["cluster"], tooltip="outgoing gradient")
            G.add_edge(n, f"gradout_{n}", label="", kind="grad_in", grad="", part="", constraint=True)


def _note(G, target, text, tooltip="incoming gradient"):
    # in its target's box: an edge into another box would pull the boxes out of order
    G.add_node(f"grad_{target}", role="grad_in", label=text, cluster=G.nodes[target]["cluster"],
               tooltip=tooltip)
    G.add_edge(f"grad_{target}", target, label="", kind="grad_in", grad="", part="", constraint=True)


_SUMMED = "the engine sums this gradient over all steps in one batched call after the reverse loop"


def _param_notes(G):
    for n, d in list(G.nodes(data=True)):
        if d["role"] == "param" and G.in_degree(n):
            name = d["label"].split("\n")[0]
            _note(G, n, f"dL/d{name}: summed\nover the T steps\nafter the loop", _SUMMED)


def _gradients_of_one_step(G):
    """Into the states' next values, from the loss and the step after; into the
    parameters, summed over the steps after the loop."""
    for n, d in list(G.nodes(data=True)):
        name = d["label"].split("\n")[0].split(" ")[0]
        if d["role"] == "output" or (d["role"] == "state_out" and "= output" in d["label"]):
            _note(G, n, f"dL/d{name}\nfrom the loss" + ("\nand step t+1" if d["role"] == "state_out" else ""))
        elif d["role"] == "state_out":
            _note(G, n, f"dL/d{name}\nfrom step t+1")
    _param_notes(G)


def _gradients_of_the_unrolled(G):
    """From the loss into every step's output; the steps' gradients of a shared
    parameter, and of their rows of a hoisted value, meet after the loop."""
    outputs = [n for n, d in G.nodes(data=True) if d["role"] == "output"]
    # With no separate output, the output is a state: every value of it meets the loss.
    out_state = None if outputs else next(
        (n.rsplit("_", 1)[0] for n, d in G.nodes(data=True) if d["role"] == "state_out"), None)
    for n, d in list(G.nodes(data=True)):
        first = d["label"].split("\n")[0]
        if d["role"] == "state" and n.rsplit("_", 1)[0] == out_state:
            # Said on the gradient edge rather than by a note: a note's edge into a
            # step's box would pull the steps out of their order in dot's layout.
            for m in G.successors(n):
                if G.edges[n, m]["kind"] == "grad":
                    t = int(n.rsplit("_", 1)[1])
                    G.edges[n, m]["label"] += f"\nfrom the loss\nand step {t + 1}"
        elif d["role"] == "output" and "loss" not in G:
            _note(G, n, f"dL/d{first}\nfrom the loss")
        elif d["role"] == "state_out" and n.rsplit("_", 1)[0] == out_state:
            _note(G, n, f"dL/d{first}\nfrom the loss")
        elif d["cluster"] == "cluster_hoisted" and _read_in_steps(G, n, "rows"):
            first = first.split(" = ")[0]  # the value's name, not its op
            _note(G, n, f"dL/d{first}: the rows of\nall T steps, one backward\nafter the loop",
                  "the hoisted backward runs once over all T·N rows")
    _param_notes(G)


def _read_in_steps(G, n, role):
    """Does some step hold a reference (``role``) to node n (``n7``)?"""
    tail = f"_ref{n[1:]}"
    return any(d["role"] == role and m.endswith(tail) for m, d in G.nodes(data=True))


# ------------------------------------------------------------------ graphviz stage

def _esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _title_html(title, backward, hoisted):
    """The title and, under it, a one-row legend of the colours (an HTML label, no extra nodes)."""
    entries = [e for e in LEGEND if hoisted or e[2] is not None]
    cells = "".join(f'<td bgcolor="{c}" border="1"><font point-size="9">{t}</font></td>'
                    for t, c, _ in entries)
    if backward:
        cells += ('<td border="1"><font point-size="9" color="#cc0000">- - &gt; gradient</font></td>')
    n = len(entries) + bool(backward)
    return (f'<<table border="0" cellspacing="3" cellpadding="2">'
            f'<tr><td colspan="{n}"><font point-size="13">{_esc(title)}</font></td></tr>'
            f'<tr>{cells}</tr></table>>')


def to_digraph(G) -> graphviz.Digraph:
    """Emit the graphviz source of a diagram built by ``diagram_graph``."""
    backward = G.graph.get("backward", False)
    dg = graphviz.Digraph(name=G.graph["title"].split(":")[0])
    # ordering=in: a node's operands keep the order of their edges in the source,
    # so the gates of every step come out in one left-to-right order
    dg.attr(rankdir=G.graph.get("rankdir", "TB"), fontname="Helvetica", fontsize="12", labelloc="t", newrank="true",
            nodesep="0.25", ranksep="0.35", ordering="in")
    dg.attr(label=_title_html(G.graph["title"], backward, "cluster_hoisted" in G.graph["clusters"]))
    dg.attr("node", fontname="Helvetica", fontsize="11", margin="0.08,0.04")
    dg.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.7")

    def emit_node(target, n, d):
        attrs = dict(STYLE[d["role"]])
        if d.get("tooltip"):
            attrs["tooltip"] = d["tooltip"]
        if d["role"] == "op" and "\nfused" in d["label"]:
            attrs["penwidth"] = "2"
        if d.get("fill"):  # coloured by the size of its gradient
            attrs.update(fillcolor=d["fill"], style=(attrs.get("style") or "filled").replace("dotted", "filled")
                         if "filled" in (attrs.get("style") or "") else "filled")
            if d.get("light_text"):
                attrs["fontcolor"] = "#ffffff"
        target.node(n, d["label"], **attrs)

    by_cluster = {}
    for n, d in G.nodes(data=True):
        by_cluster.setdefault(d.get("cluster"), []).append((n, d))
    # Clusters first, in the order they were made: dot's first left-to-right order
    # follows the order it meets nodes in, so the unrolled view's boxes come out as
    # parameters, hoisted part, step 1, 2, ... (invisible edges between clusters
    # do not order them under newrank; tests/test_render.py checks the positions).
    for cid, c in G.graph["clusters"].items():
        with dg.subgraph(name=cid) as sg:
            sg.attr(label=c["label"], fontsize="11", **CLUSTER_STYLE[c["kind"]])
            for n, d in by_cluster.get(cid, []):
                emit_node(sg, n, d)
    for n, d in by_cluster.get(None, []):
        emit_node(dg, n, d)
    for u, v, d in G.edges(data=True):
        k = d["kind"]
        if k == "grad":
            continue  # drawn in its forward edge's place, below
        if G.has_edge(v, u) and G.edges[v, u]["kind"] == "grad":
            # The gradient is drawn along its forward edge with the arrow at the
            # tail, in the forward edge's place in the source: the layout stays the
            # forward one (dot's first ordering follows the order of the source).
            d = G.edges[v, u]
            attrs = dict(GRAD_EDGE, dir="back")
        elif k == "grad_in":
            attrs = dict(GRAD_EDGE)
        elif k == "state":
            attrs = dict(STATE_EDGE)
        else:
            attrs = dict(FORWARD_EDGE_FAINT if backward else FORWARD_EDGE)
        if backward and k == "state":
            # the gradient through time (BPTT's carry) drawn heavier than the local ones
            attrs["penwidth"] = "2"
        if d.get("label"):
            attrs["label"] = d["label"]
        if not d.get("constraint", True):
            attrs["constraint"] = "false"
        dg.edge(u, v, **attrs)
    for nodes in G.graph.get("same_rank", ()):
        with dg.subgraph() as sg:
            sg.attr(rank="same")
            for n in nodes:
                sg.node(n)
    heads = G.graph.get("step_heads", ())
    if heads:
        # The order clusters are made in sets dot's first left-to-right order,
        # and mincross usually keeps it, but not always (sru: no matmul in the
        # recurrence came out right to left, and an edge between steps is no
        # help). An invisible node whose out-edges, ordering=out, reach every
        # step's first state in time order holds the columns to that order
        # (emitted last: dot reads it after the steps, and only then is it obeyed).
        dg.node("steps_in_order", "", style="invis", width="0", height="0", ordering="out")
        for n in heads:
            dg.edge("steps_in_order", n, style="invis")
    return dg


def render(cell, path=None, *, unroll=None, backward=False, shapes=True, compiled=True, grad=None):
    """Draw ``cell`` and return the ``graphviz.Digraph``; with ``path``, also write it.

    ``unroll=T`` draws T steps (folded to the first steps, an ellipsis and the
    last step when T > 5); ``backward=True`` adds the gradient flow; ``shapes``
    is True (symbolic: (N, 3H)), "concrete" ((N, 12)) or False; ``compiled=False``
    draws the declared graph instead of what the compiler runs. ``grad`` (with
    ``unroll``) colours every value by the size of its gradient for one input:
    True (parameters from seed 0, a random input, the loss u · y_T on the last
    step) or a dict with ``params``, ``xs`` (1, T, D) and ``dhs`` (1, T, out).
    The format comes from the path's suffix: .svg, .png, .pdf or .dot (which
    needs no Graphviz).
    """
    dg = to_digraph(diagram_graph(cell, unroll=unroll, backward=backward, shapes=shapes,
                                  compiled=compiled, grad=grad))
    if path is not None:
        write(dg, path)
    return dg


def svg_or_none(cell, **options):
    """The diagram as SVG text for a notebook's rich display, or None (Jupyter
    then shows the plain repr) when Graphviz's ``dot`` is not installed."""
    if shutil.which("dot") is None:
        return None
    return render(cell, **options).pipe(format="svg").decode("utf-8")


def write(dg, path):
    """Write a Digraph to ``path`` atomically, the format taken from the suffix."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise GraphError(f"render: cannot tell the format of {str(path)!r}; "
                         f"use a suffix among {', '.join('.' + f for f in FORMATS)}")
    if fmt == "dot":
        data = dg.source.encode("utf-8")
    else:
        if shutil.which("dot") is None:
            raise GraphvizNotFound(f"writing {path.name} needs Graphviz, which is not installed: "
                                   + INSTALL_HINT)
        data = dg.pipe(format=fmt)
    files.atomic_write(path, data)
    return path


# ---------------------------------------------------------------------- gallery

def gallery_items():
    """(file stem, cell factory name, render options) for every built-in cell."""
    from .cells import CELLS

    items = []
    for name in CELLS:
        items.append((name, name, {}))
        items.append((f"{name}-unrolled", name, {"unroll": GALLERY_STEPS}))
        items.append((f"{name}-backward", name, {"backward": True}))
    items.append((f"gru-unrolled-{GALLERY_FOLDED_STEPS}", "gru", {"unroll": GALLERY_FOLDED_STEPS}))
    return items


def gallery_sources():
    """file stem -> DOT source of every gallery diagram, made fresh from the code."""
    from .cells import CELLS

    out = {}
    for stem, name, opts in gallery_items():
        cell = CELLS[name](*GALLERY_SIZES)
        out[stem] = render(cell, **opts).source
    return out


def write_gallery(folder, formats=("dot", "svg")):
    folder = Path(folder)
    written = []
    for stem, source in gallery_sources().items():
        dg = graphviz.Source(source)
        for fmt in formats:
            p = folder / f"{stem}.{fmt}"
            if fmt == "dot":
                write_text(p, source)
            else:
                write(dg, p)
            written.append(p)
    return written


def write_text(path, text):
    files.atomic_write(path, text)


# -------------------------------------------------------------------------- CLI

def default_output(cell, unroll=None, backward=False):
    stem = cell.name + ("-unrolled" if unroll else "") + ("-backward" if backward else "")
    return f"{stem}.svg"


def render_main(args):
    """``graphrnn render CELL [-o FILE] [--unroll T] [--backward]``."""
    from .cells import from_spec

    cell = from_spec(args.cell, args.input_size, args.hidden_size)
    out = args.output or default_output(cell, args.unroll, args.backward)
    grad = getattr(args, "grad", False)
    if grad and not args.unroll:
        from .errors import UsageError

        raise UsageError("render: --grad colours the unrolled view; add --unroll T")
    try:
        render(cell, out, unroll=args.unroll, backward=args.backward, grad=grad or None)
    except GraphvizNotFound as exc:
        from .errors import UsageError

        raise UsageError(str(exc)) from None
    print(f"wrote {out}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m graphrnn.render",
                                description="Regenerate the diagram gallery of the built-in cells.")
    p.add_argument("--gallery", required=True, metavar="DIR", help="folder to write (e.g. docs/gallery)")
    p.add_argument("--png", action="store_true", help="also write PNGs (for looking, not committed)")
    args = p.parse_args(argv)
    Path(args.gallery).mkdir(parents=True, exist_ok=True)
    formats = ("dot", "svg", "png") if args.png else ("dot", "svg")
    try:
        written = write_gallery(args.gallery, formats)
    except GraphvizNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
