"""Diagrams of cells: the cell, its unrolled form and its backward pass.

Two stages, as in tinygrad's old ``graph.py``: first a networkx DiGraph whose
nodes carry a ``role`` (input, state_in, state, state_out, output, param,
static, const, op, ellipsis, grad_in), a short ``label`` and a ``cluster``;
then a ``graphviz.Digraph`` emitted from it. Tests and the gallery compare the
first stage's output as DOT text, so everything here is ordered by the cell's
topological order and never by memory addresses or set iteration.

By default the diagram is drawn from the *compiled* plan, not the declaration:
fused matmuls appear as one wide product, and the part that depends only on
the input and the parameters (hoisted: run once for all T steps as one
batched op over N*T rows) is a shaded region.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import graphviz
import networkx as nx

from . import files
from .plan import HOISTED, STATIC, compile_cell
from .primitives import GraphError

FORMATS = ("svg", "png", "pdf", "dot")
LINE_MAX = 28        # characters per label line (Theano's max_label_size idea)
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
    "grad_in": dict(shape="note", style="filled", fillcolor="#f4cccc", color="#cc0000",
                    fontcolor="#990000"),
}
CLUSTER_STYLE = {
    "hoisted": dict(style="filled,rounded", fillcolor="#eaf1fb", color="#3d85c6", fontcolor="#1c4587"),
    "step": dict(style="rounded", color="#999999", fontcolor="#444444"),
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


def _cap(line):
    return line if len(line) <= LINE_MAX else line[: LINE_MAX - 1] + "…"


def _lines(*lines):
    return "\n".join(_cap(s) for s in lines if s)


def _num(v):
    return f"{v:g}"


_FOLD_SYMBOLS = {"add": "+", "sub": "−", "mul": "×"}


def _folds_const(g, n):
    """True when the op's one constant operand is written into its label instead of drawn."""
    a = g.nodes[n]
    consts = [g.nodes[p]["kind"] == "const" for p in a["args"]]
    return a.get("opname") in _FOLD_SYMBOLS and len(consts) == 2 and sum(consts) == 1


def _op_label(g, n, dims, rows=None):
    """op name (with any constant folded in) and result shape, e.g. ``sub 1 − ·``."""
    a = g.nodes[n]
    name = a["opname"]
    args = a["args"]
    consts = [g.nodes[p]["value"] if g.nodes[p]["kind"] == "const" else None for p in args]
    head = name
    if name == "slice":
        head = "slice " + dims.slice(len(g.nodes[args[0]]["shape"]), a["op"].start, a["op"].stop)
    elif _folds_const(g, n):
        sym = _FOLD_SYMBOLS[name]
        head = (f"{name} {_num(consts[0])} {sym} ·" if consts[0] is not None
                else f"{name} · {sym} {_num(consts[1])}")
    extra = "fused" if a.get("fused") and name != "slice" else ""
    return _lines(head, dims.shape(a["shape"], rows), extra)


def _static_label(g, n, dims):
    """A value computed from parameters only: ``Wh[:, 2H:3H]`` when it is a slice of one."""
    a = g.nodes[n]
    if a["opname"] == "slice":
        p = a["args"][0]
        pa = g.nodes[p]
        base = pa["name"] if pa["kind"] == "param" else _static_label(g, p, dims).split("\n")[0]
        return _lines(base + dims.slice(len(pa["shape"]), a["op"].start, a["op"].stop),
                      dims.shape(a["shape"]))
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


# ------------------------------------------------------------------ the nx stage

class _Builder:
    """Collects nodes, edges and clusters of one diagram in a deterministic order."""

    def __init__(self, title):
        self.G = nx.DiGraph(title=title, clusters={}, legend=True)

    def cluster(self, cid, label, kind):
        self.G.graph["clusters"].setdefault(cid, dict(label=label, kind=kind))

    def node(self, nid, role, label, cluster=None, tooltip=""):
        self.G.add_node(nid, role=role, label=label, cluster=cluster, tooltip=tooltip)

    def edge(self, u, v, label="", kind="forward", grad=""):
        self.G.add_edge(u, v, label=label, kind=kind, grad=grad)


def _name_of(g, n, dims):
    a = g.nodes[n]
    if a["kind"] in ("input", "state", "param"):
        return a["name"]
    if a["kind"] == "op" and a["opname"] == "slice" and g.nodes[a["args"][0]]["kind"] == "param":
        return _static_label(g, n, dims).split("\n")[0]
    return f"({a['opname']})" if a.get("opname") else a["label"]


def _source(cell, compiled):
    if compiled:
        plan = compile_cell(cell)
        return plan.graph, plan.kind, plan
    plan = compile_cell(cell, fuse=False)  # same graph as declared, with its kinds
    return plan.graph, plan.kind, plan


def diagram_graph(cell, *, unroll=None, backward=False, shapes=True, compiled=True) -> nx.DiGraph:
    """The diagram as a networkx DiGraph (nodes: role, label, cluster; edges: kind, label)."""
    if unroll is not None and (not isinstance(unroll, int) or isinstance(unroll, bool) or unroll < 1):
        raise GraphError(f"render: unroll must be a positive number of steps, got {unroll!r}")
    if shapes not in (True, False, "symbolic", "concrete"):
        raise GraphError(f"render: shapes must be True, False, 'symbolic' or 'concrete', got {shapes!r}")
    dims = _Dims(cell, shapes)
    g, kind, plan = _source(cell, compiled)
    order = list(nx.lexicographical_topological_sort(g))
    if unroll is None:
        G = _cell_view(cell, g, kind, plan, order, dims, compiled)
    else:
        G = _unrolled_view(cell, g, kind, plan, order, dims, compiled, unroll)
    if backward:
        _add_backward(G, plan, unroll)
    sizes = f"D={cell.input_size}, H={cell.hidden_size}, N=batch"
    what = "cell" if unroll is None else f"unrolled over T={unroll} steps"
    if backward:
        what += ", backward"
    G.graph["title"] = f"{cell.name}: {what}  ({sizes})"
    G.graph["backward"] = backward
    return G


def _cell_view(cell, g, kind, plan, order, dims, compiled):
    b = _Builder(cell.name)
    hoisted_ops = [n for n in order if kind[n] == HOISTED and g.nodes[n]["kind"] == "op"]
    hoist = compiled and bool(hoisted_ops)
    if hoist:
        b.cluster("cluster_hoisted", "hoisted: run once for all T steps\n(one batched op over N·T rows)",
                  "hoisted")
    for n in order:
        a = g.nodes[n]
        nid = f"n{n}"
        k = a["kind"]
        if k == "input":
            b.node(nid, "input", _lines(a["name"], dims.shape(a["shape"])),
                   "cluster_hoisted" if hoist else None, "input, one step of xs")
        elif k == "state":
            b.node(nid, "state_in", _lines(a["name"], dims.shape(a["shape"])),
                   tooltip=f"state {a['name']} from the previous step")
        elif k == "param":
            b.node(nid, "param", _lines(a["name"], dims.shape(a["shape"])), tooltip="parameter")
        elif k == "const":
            b.node(nid, "const", _num(a["value"]))
        elif kind[n] == STATIC:
            b.node(nid, "static", _static_label(g, n, dims),
                   tooltip="computed from parameters only, once per call")
        else:
            cl = "cluster_hoisted" if hoist and kind[n] == HOISTED else None
            b.node(nid, "op", _op_label(g, n, dims), cl, a["label"])
    for n in order:
        a = g.nodes[n]
        if a["kind"] != "op":
            continue
        for p in dict.fromkeys(a["args"]):
            if g.nodes[p]["kind"] == "const" and _folds_const(g, n):
                continue  # the constant is written into the op's label
            b.edge(f"n{p}", f"n{n}", _edge_label(g, p, n, dims), grad=_name_of(g, p, dims))
    # Constants folded into labels are not drawn.
    for n in order:
        if g.nodes[n]["kind"] == "const" and b.G.degree(f"n{n}") == 0:
            b.G.remove_node(f"n{n}")
    out_is_state = False
    for name, snode, unode in plan.states:
        sid = f"out_{name}"
        is_out = unode == cell.output_node
        out_is_state |= is_out
        label = _lines(f"{name}'" + (" = output" if is_out else ""), dims.shape(g.nodes[snode]["shape"]))
        b.node(sid, "state_out", label, tooltip=f"next value of state {name}")
        b.edge(f"n{unode}", sid, kind="state", grad=f"{name}'")
    if not out_is_state:
        b.node("output", "output", _lines("output", dims.shape(g.nodes[cell.output_node]["shape"])))
        b.edge(f"n{cell.output_node}", "output", kind="state", grad="y")
    return b.G


def _shown_steps(T):
    if T <= FOLD_AFTER:
        return list(range(1, T + 1)), None
    return list(range(1, FOLD_HEAD + 1)) + [T], (FOLD_HEAD + 1, T - 1)


def _unrolled_view(cell, g, kind, plan, order, dims, compiled, T):
    b = _Builder(cell.name)
    steps, folded = _shown_steps(T)
    hoisted_ops = [n for n in order if kind[n] == HOISTED and g.nodes[n]["kind"] == "op"]
    hoist = compiled and bool(hoisted_ops)
    shared = set()  # nodes drawn once, outside the steps
    rows = "T·N"
    if hoist:
        b.cluster("cluster_hoisted", "hoisted: run once for all T steps\n(one batched op over T·N rows)",
                  "hoisted")
    for n in order:
        a = g.nodes[n]
        k = a["kind"]
        if k == "param":
            b.node(f"n{n}", "param", _lines(a["name"], dims.shape(a["shape"])), tooltip="parameter, shared")
            shared.add(n)
        elif k != "const" and kind[n] == STATIC:
            b.node(f"n{n}", "static", _static_label(g, n, dims), tooltip="computed once per call")
            shared.add(n)
        elif hoist and k == "input":
            b.node(f"n{n}", "input", _lines(a["name"] + "s", dims.shape(("N", "T", a["shape"][1]))),
                   "cluster_hoisted", "the whole input sequence")
            shared.add(n)
        elif hoist and kind[n] == HOISTED:
            b.node(f"n{n}", "op", _op_label(g, n, dims, rows), "cluster_hoisted", a["label"])
            shared.add(n)

    # Edges among the nodes drawn once (the hoisted part, parameter views).
    for n in order:
        a = g.nodes[n]
        if a["kind"] != "op" or n not in shared:
            continue
        for p in dict.fromkeys(a["args"]):
            if g.nodes[p]["kind"] == "const":
                continue
            b.edge(f"n{p}", f"n{n}", _edge_label(g, p, n, dims), grad=_name_of(g, p, dims))

    # States between the steps: h0, h1, ... (the value after step t is h<t>).
    state_names = [name for name, _, _ in plan.states]
    shown_states = sorted({0, *steps, *((steps[-1] - 1,) if folded else ())})

    def sid(name, t):
        return f"s_{name}_{t}"

    for t in shown_states:
        for name, snode, _ in plan.states:
            role = "state_in" if t == 0 else "state_out" if t == T else "state"
            b.node(sid(name, t), role, _lines(f"{name}{t}", dims.shape(g.nodes[snode]["shape"])),
                   tooltip=f"state {name} after step {t}" if t else f"initial state {name}")
    if folded:
        lo, hi = folded
        b.node("ellipsis", "ellipsis", f"· · ·\nsteps {lo}–{hi}\n(the same cell)")
        for name in state_names:
            b.edge(sid(name, lo - 1), "ellipsis", kind="state", grad=f"{name}{lo - 1}")
            b.edge("ellipsis", sid(name, hi), kind="state", grad=f"{name}{hi}")

    out_is_state = any(u == cell.output_node for _, _, u in plan.states)
    quiet = _Dims(cell, False)
    for t in steps:
        cid = f"cluster_step_{t}"
        b.cluster(cid, f"step {t}", "step")

        def nid(n):
            if n in shared:
                return f"n{n}"
            a = g.nodes[n]
            if a["kind"] == "state":
                return sid(a["name"], t - 1)
            return f"t{t}_n{n}"

        for n in order:
            a = g.nodes[n]
            if n in shared or a["kind"] in ("state", "param", "const"):
                continue
            if a["kind"] == "input":
                b.node(nid(n), "input", _lines(f"{a['name']}{t}", dims.shape(a["shape"])), cid)
            else:
                # Every step has the same shapes: the first step shown says them once.
                b.node(nid(n), "op", _op_label(g, n, dims if t == steps[0] else quiet), cid, a["label"])
        for n in order:
            a = g.nodes[n]
            if a["kind"] != "op" or n in shared:
                continue
            for p in dict.fromkeys(a["args"]):
                pa = g.nodes[p]
                if pa["kind"] == "const":
                    if _folds_const(g, n):
                        continue
                    b.node(f"t{t}_n{p}", "const", _num(pa["value"]), cid)
                    b.edge(f"t{t}_n{p}", nid(n))
                    continue
                label = _edge_label(g, p, n, dims)
                if hoist and p in shared and kind[p] == HOISTED:
                    label = f"[t={t}]"  # this step's rows of the batched result
                grad = f"{pa['name']}{t - 1}" if pa["kind"] == "state" else _name_of(g, p, dims)
                b.edge(nid(p), nid(n), label, grad=grad)
        for name, snode, unode in plan.states:
            b.edge(nid(unode), sid(name, t), kind="state", grad=f"{name}{t}")
        if not out_is_state:
            oid = f"y_{t}"
            b.node(oid, "output", _lines(f"y{t}", dims.shape(g.nodes[cell.output_node]["shape"])))
            b.edge(nid(cell.output_node), oid, kind="state", grad=f"y{t}")
    return b.G


def _add_backward(G, plan, unroll):
    """Reverse every forward edge whose source wants a gradient, labelled dL/d<what flows>."""
    fwd = [(u, v, d) for u, v, d in G.edges(data=True) if d["kind"] in ("forward", "state")]
    deferred = {f"n{n}" for n in plan.deferred}
    hoisted_ops = {f"n{n}" for n in plan.hoisted_ops}
    for u, v, d in fwd:
        role = G.nodes[u]["role"]
        if role == "const":
            continue
        label = f"dL/d{d['grad']}"
        # The gradient of a parameter that the engine sums over all steps in one
        # batched product after the reverse loop (deferred or hoisted).
        tail = v.split("_n")[-1] if v.startswith("t") else v[1:] if v.startswith("n") else ""
        if role in ("param", "static") and (f"n{tail}" in deferred or v in hoisted_ops):
            label += "\n(Σ over t, after the loop)"
        G.add_edge(v, u, label=label, kind="grad", grad="")
    # Where the gradient enters: from the loss and from the next step.
    if unroll is None:
        for n, d in list(G.nodes(data=True)):
            if d["role"] in ("state_out", "output"):
                name = d["label"].split("\n")[0].split(" ")[0]
                src = f"grad_{n}"
                if d["role"] == "output" or "= output" in d["label"]:
                    text = f"dL/d{name}\nfrom the loss" + ("\nand step t+1" if d["role"] == "state_out" else "")
                else:
                    text = f"dL/d{name}\nfrom step t+1"
                G.add_node(src, role="grad_in", label=text,
                           cluster=None, tooltip="incoming gradient")
                G.add_edge(src, n, label="", kind="grad_in", grad="")
    else:
        out_states = {name for name, _, u in plan.states if u == plan.output_node}
        for n, d in list(G.nodes(data=True)):
            name = n[2:].rsplit("_", 1)[0] if n.startswith("s_") else None
            # Every step's output meets the loss; the last states may carry a dstate.
            if d["role"] in ("state_out", "output") or (d["role"] == "state" and name in out_states):
                G.add_node(f"grad_{n}", role="grad_in", label="dL/d" + d["label"].split("\n")[0]
                           + "\nfrom the loss", cluster=None, tooltip="incoming gradient")
                G.add_edge(f"grad_{n}", n, label="", kind="grad_in", grad="")
    # Where it leaves: the gradient of the incoming states goes to the step before
    # (in the unrolled view, only the first step's: it is the result grads.state0).
    for n, d in list(G.nodes(data=True)):
        if d["role"] == "state_in":
            name = d["label"].split("\n")[0]
            text = (f"dL/d{name}\nto step t−1" if unroll is None else f"dL/d{name}\n(grads.state0)")
            G.add_node(f"gradout_{n}", role="grad_in", label=text, cluster=None, tooltip="outgoing gradient")
            G.add_edge(n, f"gradout_{n}", label="", kind="grad_in", grad="")


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
    dg.attr(rankdir=G.graph.get("rankdir", "TB"), fontname="Helvetica", fontsize="12", labelloc="t", newrank="true",
            nodesep="0.25", ranksep="0.35")
    dg.attr(label=_title_html(G.graph["title"], backward, "cluster_hoisted" in G.graph["clusters"]))
    dg.attr("node", fontname="Helvetica", fontsize="11", margin="0.08,0.04")
    dg.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.7")

    def emit_node(target, n, d):
        attrs = dict(STYLE[d["role"]])
        if d.get("tooltip"):
            attrs["tooltip"] = d["tooltip"]
        if d["role"] == "op" and "\nfused" in d["label"]:
            attrs["penwidth"] = "2"
        target.node(n, d["label"], **attrs)

    by_cluster = {}
    for n, d in G.nodes(data=True):
        by_cluster.setdefault(d.get("cluster"), []).append((n, d))
    for n, d in by_cluster.get(None, []):
        emit_node(dg, n, d)
    for cid, c in G.graph["clusters"].items():
        with dg.subgraph(name=cid) as sg:
            sg.attr(label=c["label"], fontsize="11", **CLUSTER_STYLE[c["kind"]])
            for n, d in by_cluster.get(cid, []):
                emit_node(sg, n, d)
    reversed_fwd = {(v, u) for u, v, d in G.edges(data=True) if d["kind"] == "grad"}
    for u, v, d in G.edges(data=True):
        k = d["kind"]
        if (u, v) in reversed_fwd:
            continue  # drawn by its gradient edge, along the same path
        if k == "grad":
            # Drawn from the forward source with the arrow at the tail: the
            # gradient follows the forward edge's path, back against it, and
            # the layout stays the forward one.
            u, v = v, u
            attrs = dict(GRAD_EDGE, dir="back")
        elif k == "grad_in":
            attrs = dict(GRAD_EDGE)
        elif k == "state":
            attrs = dict(STATE_EDGE)
        else:
            attrs = dict(FORWARD_EDGE_FAINT if backward else FORWARD_EDGE)
        if backward and k == "state":
            attrs["color"] = "#a8c89a"
        if d.get("label"):
            attrs["label"] = d["label"]
        dg.edge(u, v, **attrs)
    return dg


def render(cell, path=None, *, unroll=None, backward=False, shapes=True, compiled=True):
    """Draw ``cell`` and return the ``graphviz.Digraph``; with ``path``, also write it.

    ``unroll=T`` draws T steps (folded to the first steps, an ellipsis and the
    last step when T > 5); ``backward=True`` adds the gradient flow; ``shapes``
    is True (symbolic: (N, 3H)), "concrete" ((N, 12)) or False; ``compiled=False``
    draws the declared graph instead of what the compiler runs. The format comes
    from the path's suffix: .svg, .png, .pdf or .dot (which needs no Graphviz).
    """
    dg = to_digraph(diagram_graph(cell, unroll=unroll, backward=backward, shapes=shapes,
                                  compiled=compiled))
    if path is not None:
        write(dg, path)
    return dg


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
    try:
        render(cell, out, unroll=args.unroll, backward=args.backward)
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
