"""A cell's derivation: the forward equations and BPTT's backward pass, line by line.

``explain(cell)`` writes what a textbook derives by hand for one cell (the
book's GRU appendix): the forward equations, then every local rule in an order
BPTT can run it, with the cell's own names, ``+=`` where a value has several
readers, the per-step lines apart from those done once per sequence, and the
gradient carried to step t−1. Nothing is written per cell: the lines come from
the graph (names, readers), the plan (what is hoisted, static or per step) and
each primitive's own formula trees (``Primitive.formula``, ``gradient``); ``graphrnn.export`` prints
the same ``Derivation`` as numpy code.

Expressions are small trees of tuples, printed three ways (plain text, LaTeX,
Python). The order: each named value (a gate, a state's next value) is a
block together with the unnamed values only it reads; blocks run first in,
first out as soon as every reader of theirs has run, so the candidate state's
chain comes before the gates it reads (the hand derivation's order: the output
split, tanh, its weights, the sums into dh, then the gates). Within a block,
ops run in reverse order of declaration. Any such order is a valid reverse
topological order, so each gradient is complete before it is used.
"""
from __future__ import annotations

import re
from collections import deque

from .errors import GraphError
from .plan import HOISTED, RECURRENT, STATIC, compile_cell
from .primitives import N

# ----------------------------------------------------------------------------- rules
#
# Each primitive states its calculus itself, as expression trees
# (``Primitive.formula`` and ``gradient``; the tree vocabulary is in
# graphrnn/primitives.py): this module prints them, with the cell's names.


class UnknownPrimitive(GraphError):
    """A primitive that declares no formula trees (a user's, unless it gives them)."""


def rule_for(op):
    """Does ``op`` state its calculus as trees (``formula``/``gradient``)? Not a
    subclass that changed ``forward`` or ``backward`` below the class that did."""
    return type(op).formulas()


def _unknown(op):
    rule = "; ".join(op.rule) if op.rule else "no rule text"
    return f"explain does not know primitive {op.name!r} (its own rule: {rule})"


# --------------------------------------------------------------------------- names

_GATE_FNS = ("tanh", "sigmoid", "relu", "exp")


class Derivation:
    """The forward equations and the backward lines of one cell, as data.

    ``forward``: (node, tree) for every value shown with its own equation, in
    topological order. ``step_lines`` and ``seq_lines``: the backward lines per
    step and once per sequence (``Line``). ``carries``: (state, gradient tree
    or None) handed to step t−1. ``names``: node -> display name.
    """

    def __init__(self, cell):
        self.cell = cell
        self.plan = compile_cell(cell, fuse=False)  # the declared graph, with its kinds
        self.g = self.plan.graph
        self.kind = self.plan.kind
        self.req = self.plan.requires[True]
        self.order = list(cell.topo_order())
        self.unknown = []
        self._readers()
        self._name_values()
        self.forward = [(n, self.fwd[n]) for n in self.order if n in self.shown]
        self._backward()

    # -------------------------------------------------------------- structure
    def _readers(self):
        g = self.g
        self.readers = {n: [] for n in g.nodes}
        for n in self.order:
            if g.nodes[n]["kind"] == "op":
                for i, p in enumerate(g.nodes[n]["args"]):
                    self.readers[p].append((n, i))
        self.update_of = {}   # update node -> [state names]
        for s, u in self.cell.updates.items():
            self.update_of.setdefault(u, []).append(s)
        self.out = self.cell.output_node

    def _op(self, n):
        return self.g.nodes[n]["op"]

    def _name_values(self):
        """Display names; which values get an equation of their own (``shown``)."""
        g = self.g
        self.names, self.shown, self.fwd = {}, set(), {}
        self.const_arrays = []   # constant array nodes, in declaration order
        self.preact = set()   # generated names of a gate's argument: part of the gate's block
        depth = {}
        taken = {g.nodes[n]["name"] for n in self.order if g.nodes[n]["kind"] in ("input", "state", "param")}
        for n in self.order:
            a = g.nodes[n]
            if a["kind"] in ("input", "state", "param"):
                self.names[n] = a["name"]
                taken.add(a["name"])
            elif a["kind"] == "const" and a["shape"] == ():
                self.names[n] = f"{a['value']:g}"
            elif a["kind"] == "const":   # an array: its own name, else C1, C2, ...
                name = a.get("name")
                if not name:
                    self.const_count = getattr(self, "const_count", 0) + 1
                    name = f"C{self.const_count}"
                while name in taken:
                    name += "_"
                taken.add(name)
                self.names[n] = name
                self.const_arrays.append(n)
        counter = 0
        for n in self.order:
            a = g.nodes[n]
            if a["kind"] != "op":
                depth[n] = 0
                continue
            op = a["op"]
            args = [("v", p) for p in a["args"]]
            if not rule_for(op):
                self.fwd[n] = ("fn", op.name, *args) if args else ("fn", op.name)
                self.unknown.append(op.name)
            else:
                self.fwd[n] = op.formula(args)
            d = max((depth[p] for p in a["args"]), default=0) + (0 if op.name == "slice" else 1)
            name = a.get("vname")
            if name is None and n in self.update_of:
                name = f"{self.update_of[n][0]}'"
            if name is None and n == self.out:
                name = "y"
            readers = self.readers[n]
            if name is None and d >= 2:
                only = readers[0][0] if len(readers) == 1 else None
                if (only is not None and g.nodes[only]["kind"] == "op" and g.nodes[only].get("vname")
                        and g.nodes[only]["op"].name in _GATE_FNS):
                    name = f"a_{g.nodes[only]['vname']}"   # the gate's pre-activation
                    self.preact.add(n)
                elif len(readers) > 1 or d >= 4:
                    counter += 1
                    name = f"t{counter}"
            if name is not None:
                while name in taken:
                    name += "_"
                taken.add(name)
                self.names[n] = name
                self.shown.add(n)
                depth[n] = 0
            else:
                depth[n] = d

    def is_atom(self, n):
        return self.g.nodes[n]["kind"] != "op" or n in self.shown

    # -------------------------------------------------------------- backward
    def _blocks(self):
        """Per-step ops grouped by the named value they feed, in the order they run."""
        g = self.g
        rec = [n for n in self.order if g.nodes[n]["kind"] == "op" and self.kind[n] == RECURRENT]
        head = {}
        for n in reversed(rec):
            rd = self.readers[n]
            single = (len(rd) == 1 and (n not in self.shown or n in self.preact) and n not in self.update_of
                      and n != self.out and self.kind[rd[0][0]] == RECURRENT)
            head[n] = head[rd[0][0]] if single else n
        members = {}
        for n in reversed(rec):
            members.setdefault(head[n], []).append(n)
        waits = {b: {head[m] for n in ms for m, _ in self.readers[n]} - {b} for b, ms in members.items()}
        done, out = set(), []
        queue = deque(sorted((b for b, w in waits.items() if not w), reverse=True))
        queued = set(queue)
        while queue:
            b = queue.popleft()
            out.append(b)
            done.add(b)
            for c in sorted((c for c, w in waits.items() if c not in queued and w <= done), reverse=True):
                queue.append(c)
                queued.add(c)
        return [n for b in out for n in members[b]]

    def _backward(self):
        g, kind = self.g, self.kind
        self.alias = {}
        self.count = {}      # node -> contributions so far (this section)
        self.pieces = {}     # node -> [(lo, hi)] columns written
        self.step_lines, self.seq_lines = [], []
        lines = self.step_lines
        self._section = "step"

        # where gradients enter a step: the loss at t, and step t+1's carry
        for n in self.order:
            srcs = [("carry", s) for s in self.update_of.get(n, ())]
            if n == self.out:
                srcs.insert(0, ("dhs",))
            if srcs:
                tree = srcs[0]
                for s in srcs[1:]:
                    tree = ("bin", "+", tree, s)
                self._contribute(lines, n, tree, note="from the loss at t and from step t+1"
                                 if n == self.out and n in self.update_of else
                                 "from the loss at t" if n == self.out else "from step t+1")
        for n in self._blocks():
            self._run(lines, n)
        self.carries = []
        for s, snode in self.cell.states.items():
            self.carries.append((s, ("g", snode) if self.count.get(snode) else None))

        # once per sequence: the hoisted part over all T·N rows, then the static part
        self._section = "seq"
        lines = self.seq_lines
        for n in reversed(self.order):
            if g.nodes[n]["kind"] == "op" and kind[n] == HOISTED:
                self._run(lines, n)
        for n in reversed(self.order):
            if g.nodes[n]["kind"] == "op" and kind[n] == STATIC:
                self._run(lines, n)
        for n in self.order:
            if g.nodes[n]["kind"] in ("param", "input") and n in self.pieces:
                self._stack(lines, n)

    def _grad(self, n):
        return self.alias.get(n, ("g", n))

    def _run(self, lines, n):
        """Node n's local rule: one line per input that wants a gradient."""
        if n in self.pieces:
            self._stack(lines, n)
        if not self.count.get(n) and n not in self.alias:
            return  # no gradient reaches n
        g = self.g
        op = self._op(n)
        args = g.nodes[n]["args"]
        wants = [self.req[p] and g.nodes[p]["kind"] != "const" for p in args]
        if not any(wants):
            return
        if not rule_for(op):
            lines.append(Line(None, "", ("text", _unknown(op)), self._section))
            return
        dy = self._grad(n)
        passes = op.passes_gradient()
        vals = [("v", p) for p in args]
        # the weights' gradients first, as hand derivations write them (dW, then dh)
        for i in sorted(range(len(args)), key=lambda i: self.kind[args[i]] != STATIC):
            p = args[i]
            if not wants[i]:
                continue
            tree = op.gradient(i, dy, vals, ("v", n))
            if tree[0] == "piece":
                self._contribute(lines, p, tree[3], piece=(tree[1], tree[2]))
                continue
            if (passes[i] and tree == dy and len(self.readers[p]) == 1 and p not in self.shown
                    and g.nodes[p]["kind"] == "op" and p not in self.update_of and p != self.out):
                self.alias[p] = dy   # the same gradient under the reader's name: no line
                continue
            self._contribute(lines, p, tree)

    def _contribute(self, lines, p, tree, piece=None, note=""):
        first = not self.count.get(p)
        self.count[p] = self.count.get(p, 0) + 1
        summed = self._section == "step" and self.kind[p] == STATIC
        if piece is not None:
            cols = self.pieces.setdefault(p, [])
            overlap = any(not (b <= piece[0] or a >= piece[1]) for a, b in cols)
            first = first or not overlap
            cols.append(piece)
        lines.append(Line(p, "=" if first and not summed else "+=", tree, self._section,
                          piece=piece, note=note, summed=summed,
                          kept=self._section == "step" and self.kind[p] == HOISTED
                          and self.g.nodes[p]["kind"] == "op"))

    def _stack(self, lines, n):
        """dP = [dP[:, :H] | dP[:, H:2H] | ...]: the columns gathered into one gradient."""
        cols = sorted(set(self.pieces.pop(n)))
        width = self.g.nodes[n]["shape"][-1]
        parts, at = [], 0
        for lo, hi in cols:
            if lo < at:
                return  # overlapping pieces: already summed in place
            if lo > at:
                parts.append(("num", 0.0))
            parts.append(("cols", ("g", n), lo, hi))
            at = hi
        if at < width:
            parts.append(("num", 0.0))
        if len(parts) > 1:
            lines.append(Line(n, "=", ("cat", parts), self._section, stack=True))


class Line:
    """One backward line: ``target`` (node; with ``piece`` its columns) ``op`` tree.

    ``summed``: a static value's gradient in the per-step part (summed over t,
    one product after the loop); ``kept``: a hoisted value's per-step gradient
    (its backward runs once over all T·N rows); ``stack``: a summary of columns
    gathered, with no arithmetic of its own."""

    def __init__(self, target, op, tree, section, piece=None, note="", summed=False, kept=False, stack=False):
        self.target, self.op, self.tree, self.section = target, op, tree, section
        self.piece, self.note, self.summed, self.kept, self.stack = piece, note, summed, kept, stack


# ---------------------------------------------------------------------------- printers

_PREC = {"+": 2, "-": 2, "*": 3, "/": 3, "@": 3, "mm": 3}


class TextPrinter:
    """Plain text: ``dh~ = dh' * z``, ``dWh[:, 2H:3H] += (r * h)ᵀ da_h~``."""

    times, matmul_fwd, transpose, square = " * ", " @ ", "ᵀ", "²"

    def __init__(self, d):
        self.d = d
        self.H = d.cell.hidden_size

    # names
    def name(self, n):
        return self.d.names[n]

    def dim(self, v):
        """Column bounds as the reader thinks of them: H, 2H, D, D+H."""
        H, D = self.H, self.d.cell.input_size
        if v == 0:
            return ""
        if v % H == 0:
            return "H" if v == H else f"{v // H}H"
        if v == D:
            return "D"
        if v > D and (v - D) % H == 0:
            k = (v - D) // H
            return "D+H" if k == 1 else f"D+{k}H"
        return str(v)

    def cols(self, lo, hi):
        return f"[:, {self.dim(lo)}:{self.dim(hi) or '0'}]"

    def sliced(self, base, lo, hi):
        return base + self.cols(lo, hi)

    def grad_name(self, n):
        text, prec = self.value(n)
        if prec >= 9 and re.fullmatch(r"[^\s()]+(\[:, [^\]]*\])?", text):
            return "d" + text
        return f"d({text})"

    def value(self, n):
        """(text, precedence) of node n's value: its name, or its expression inlined."""
        d = self.d
        if d.is_atom(n):
            return self.atom(n), 9
        return self.expr(d.fwd[n])

    def atom(self, n):
        return self.name(n)

    def carry(self, s):
        return f"d{s}(t+1)"

    def dhs(self):
        return "dhs[t]"

    def num(self, v):
        return f"{v:g}"

    def wrap(self, t, need):
        text, prec = t
        return f"({text})" if prec < need else text

    def expr(self, t):
        k = t[0]
        if k == "v":
            return self.value(t[1])
        if k == "g":
            return self.grad_name(t[1]), 9
        if k == "num":
            return self.num(t[1]), 9
        if k == "carry":
            return self.carry(t[1]), 9
        if k == "dhs":
            return self.dhs(), 9
        if k == "text":
            return t[1], 0
        if k == "bin":
            sym, mine = t[1], _PREC[t[1]]
            left = t[2]
            # x @ W * z and r * h @ W are read either way: brackets unless the same op
            same = left[0] == "bin" and left[1] == sym
            a = self.wrap(self.expr(left), mine + (sym in "@*" and not same))
            b = self.wrap(self.expr(t[3]), mine + (sym in "-@*/"))
            return self.binary(sym, a, b), mine
        if k == "mm":
            return self.product(self.wrap(self.expr(t[1]), 3), self.wrap(self.expr(t[2]), 4)), 3
        if k == "neg":
            return self.negate(self.wrap(self.expr(t[1]), 4)), 4
        if k == "T":
            return self.transposed(self.wrap(self.expr(t[1]), 9)), 9
        if k == "sq":
            return self.wrap(self.expr(t[1]), 9) + self.square, 9
        if k == "pos":
            return self.positive(self.expr(t[1])[0]), 9
        if k == "fn":
            return self.function(t[1], [self.expr(a)[0] for a in t[2:]]), 9
        if k == "cols":
            return self.sliced(self.wrap(self.expr(t[1]), 9), t[2], t[3]), 9
        if k == "cat":
            return self.concat([self.expr(a)[0] for a in t[1]]), 9
        if k == "sumto":
            return self.sum_to(self.wrap(self.expr(t[1]), 3), t[2], t[3]), 3
        if k == "pow":
            return self.power(self.wrap(self.expr(t[1]), 9), t[2]), 8
        if k == "mod":
            return self.modulo(self.wrap(self.expr(t[1]), 4), t[2]), 3
        if k in ("mask", "cmp"):
            return self.compare(t[1], self.wrap(self.expr(t[2]), 3), self.wrap(self.expr(t[3]), 3), k == "mask"), 9
        if k == "where":
            return self.select(*[self.expr(a)[0] for a in t[1:]]), 9
        if k == "repeat":
            return self.repeat(self.expr(t[1])[0], t[2]), 9
        if k == "scale":
            return self.scale(self.wrap(self.expr(t[1]), 3), t[2]), 3
        if k == "zero":
            return self.zero(t[1]), 9
        raise ValueError(f"unknown tree {t!r}")

    _CMP = {">=": "≥", "<=": "≤"}

    def transposed(self, a):
        return f"({a}){self.transpose}" if a.endswith(self.transpose) else a + self.transpose   # (dWᵀ)ᵀ

    def power(self, base, k):
        return f"{base}^{self.num(k)}"

    def modulo(self, a, k):
        return f"{a} mod {self.num(k)}"

    def compare(self, sym, a, b, mask):
        """An Iverson bracket: 1 where the comparison holds, else 0."""
        return f"[{a} {self._CMP.get(sym, sym)} {b}]"

    def select(self, m, a, b):
        return f"where({m} > 0, {a}, {b})"

    def repeat(self, a, n):
        return f"repeat({a}, {n} columns)"

    def scale(self, a, n):
        return f"{a} / {n}"

    def zero(self, t):
        return "0"

    def binary(self, sym, a, b):
        return f"{a}{self.matmul_fwd if sym == '@' else self.times if sym == '*' else f' {sym} '}{b}"

    def product(self, a, b):
        return f"{a} {b}"

    def negate(self, a):
        return f"−{a}"

    def positive(self, a):
        return f"[{a} > 0]"

    def function(self, name, args):
        return f"{name}({', '.join(args)})"

    def concat(self, parts):
        return "[" + " | ".join(parts) + "]"

    def sum_to(self, a, shape, out):
        return f"Σₙ {a}" if len(shape) < len(out) else f"Σ {a}"

    # lines
    def lhs(self, line):
        if line.piece is not None:
            return self.sliced(self.grad_name(line.target), *line.piece)
        return self.grad_name(line.target)

    def line(self, line):
        if line.target is None:
            return self.expr(line.tree)[0]
        rhs = self.expr(line.tree)[0]
        lhs = self.lhs(line)
        if lhs == rhs:
            return None
        text = f"{lhs} {line.op} {rhs}"
        tags = []
        if line.summed:
            tags.append("summed over t: once, after the loop")
        if line.kept:
            tags.append("kept per step for the hoisted backward")
        if line.note:
            tags.append(line.note)
        if line.stack:
            tags.append("the blocks stacked")
        return text + (f"    ({'; '.join(tags)})" if tags else "")

    def equation(self, n, tree):
        return f"{self.atom(n)} = {self.expr(tree)[0]}"


class LatexPrinter(TextPrinter):
    """LaTeX for notes and slides: ``\\mathrm{d}\\tilde{h} = \\mathrm{d}h' \\odot z``."""

    times, matmul_fwd, transpose, square = r" \odot ", r" ", r"^\top", "^2"

    def atom(self, n):
        a = self.d.g.nodes[n]
        return self.num(a["value"]) if a["kind"] == "const" and a["shape"] == () else _latex_name(self.name(n))

    def transposed(self, a):
        return f"{{{a}}}^\\top" if "^" in a else a + self.transpose   # never a double superscript

    def grad_name(self, n):
        text, prec = self.value(n)
        return rf"\mathrm{{d}}{text}" if prec >= 9 else rf"\mathrm{{d}}\left({text}\right)"

    def cols(self, lo, hi):
        return rf"_{{[:,\,{self.dim(lo)}:{self.dim(hi) or '0'}]}}"

    def sliced(self, base, lo, hi):
        return "{" + base + "}" + self.cols(lo, hi)

    def carry(self, s):
        return rf"\mathrm{{d}}{_latex_name(s)}^{{(t+1)}}"

    def dhs(self):
        return r"\mathrm{d}y^{(t)}"

    def wrap(self, t, need):
        text, prec = t
        return rf"\left({text}\right)" if prec < need else text

    def negate(self, a):
        return f"-{a}"

    def positive(self, a):
        return rf"[{a} > 0]"

    def function(self, name, args):
        if name == "sqrt":
            return rf"\sqrt{{{args[0]}}}"
        if name == "abs":
            return rf"\left|{args[0]}\right|"
        if name == "floor":
            return rf"\left\lfloor {args[0]} \right\rfloor"
        fn = {"tanh": r"\tanh", "sigmoid": r"\sigma", "exp": r"\exp", "log": r"\log", "sin": r"\sin",
              "cos": r"\cos", "maximum": r"\max", "minimum": r"\min", "sign": r"\operatorname{sign}",
              "sum": r"\textstyle\sum_j", "mean": r"\operatorname{mean}_j"}.get(name, rf"\mathrm{{{name}}}")
        return rf"{fn}\left({', '.join(args)}\right)"

    _CMP = {">=": r"\geq", "<=": r"\leq"}

    def power(self, base, k):
        return f"{{{base}}}^{{{self.num(k)}}}"

    def modulo(self, a, k):
        return rf"{a} \bmod {self.num(k)}"

    def select(self, m, a, b):
        return rf"\begin{{cases}} {a} & {m} > 0 \\ {b} & \text{{else}} \end{{cases}}"

    def repeat(self, a, n):
        return rf"{a}\,\mathbf{{1}}_{{{n}}}^\top"

    def scale(self, a, n):
        return rf"\tfrac{{1}}{{{n}}}\,{a}"

    def concat(self, parts):
        return r"\left[" + r" \;\middle|\; ".join(parts) + r"\right]"

    def sum_to(self, a, shape, out):
        return rf"\sum_n {a}" if len(shape) < len(out) else rf"\sum {a}"

    def line(self, line):
        if line.target is None:
            return r"\text{" + self.expr(line.tree)[0].replace("_", r"\_") + "}"
        rhs = self.expr(line.tree)[0]
        lhs = self.lhs(line)
        if lhs == rhs:
            return None
        op = r"\mathrel{+}=" if line.op == "+=" else "="
        tag = r" \quad \text{(summed over } t\text{)}" if line.summed else ""
        return f"{lhs} {op} {rhs}{tag}"


def _latex_name(name):
    m = re.fullmatch(r"(.*?)(~?)('*)", name)
    base, tilde, primes = m.groups()
    if base.startswith("a_") and len(base) > 2:
        return rf"a_{{{_latex_name(base[2:] + tilde)}}}" + primes
    mm = re.fullmatch(r"([A-Za-z])([A-Za-z0-9]*)", base)
    if mm and mm.group(2) and (mm.group(1).isupper() or mm.group(2).isdigit()):
        base = f"{mm.group(1)}_{{{mm.group(2)}}}"
    elif len(base) > 1:
        base = rf"\mathit{{{base.replace('_', chr(92) + '_')}}}"
    if tilde:
        base = rf"\tilde{{{base}}}"
    return base + primes


# ------------------------------------------------------------------------------ output

def _section_lines(d, printer, lines):
    out = []
    for ln in lines:
        text = printer.line(ln)
        if text is not None:
            out.append(text)
    return out


def _kind_note(d, n):
    k = d.kind[n]
    return ("once per call: parameters only" if k == STATIC else
            "hoisted: once for all T·N rows" if k == HOISTED else "")


class Explanation:
    """What ``explain`` returns: ``str()`` is plain text, ``markdown()`` Markdown
    with LaTeX; Jupyter shows the Markdown (``_repr_markdown_``)."""

    def __init__(self, derivation):
        self.derivation = derivation

    def text(self):
        d = self.derivation
        p = TextPrinter(d)
        cell = d.cell
        states = ", ".join(cell.states)
        out = [f"cell {cell.name!r}: input {cell.input_name}, states {states}, "
               f"params {', '.join(cell.params) or 'none'}", "", "forward, per step t:"]
        for n, tree in d.forward:
            note = _kind_note(d, n)
            out.append(f"  {p.equation(n, tree)}" + (f"    ({note})" if note else ""))
        for s, u in cell.updates.items():
            out.append(f"  {s}(t+1) = {p.value(u)[0]}")
        if d.out not in cell.updates.values():
            out.append(f"  output y[t] = {p.value(d.out)[0]}")
        out += ["", "backward, per step t = T−1 … 0 (reverse order; d<s>(t+1) is zero at t = T−1 "
                "unless a gradient of the final state is given):"]
        out += [f"  {t}" for t in _section_lines(d, p, d.step_lines)]
        carried = ", ".join(f"d{s}(t) = {p.expr(tree)[0] if tree else '0'}" for s, tree in d.carries)
        out.append(f"  carried to step t−1: {carried}")
        seq = _section_lines(d, p, d.seq_lines)
        out += ["", "once per sequence, after the loop (hoisted values over all T·N rows; "
                "the engine runs each 'summed over t' line above once, over all T·N rows):"]
        out += [f"  {t}" for t in seq] or ["  (nothing: every gradient is formed per step)"]
        if d.unknown:
            out += ["", "note: " + "; ".join(sorted({f"explain does not know primitive {u!r}" for u in d.unknown}))]
        return "\n".join(out) + "\n"

    def markdown(self):
        d = self.derivation
        p = LatexPrinter(d)
        cell = d.cell
        out = [f"### Cell `{cell.name}`", "", "**Forward**, per step $t$:", "", "$$", r"\begin{aligned}"]
        eqs = [p.equation(n, tree).replace(" = ", " &= ", 1) for n, tree in d.forward]
        eqs += [rf"{_latex_name(s)}^{{(t+1)}} &= {p.value(u)[0]}" for s, u in cell.updates.items()]
        out += [e + r" \\" for e in eqs] + [r"\end{aligned}", "$$", "",
                                             "**Backward**, per step $t = T-1, \\dots, 0$:", "", "$$",
                                             r"\begin{aligned}"]
        for t in _section_lines(d, p, d.step_lines):
            out.append(_align(t) + r" \\")
        for s, tree in d.carries:
            out.append(rf"\text{{to }} t-1:\ \mathrm{{d}}{_latex_name(s)}^{{(t)}} &= "
                       rf"{p.expr(tree)[0] if tree else '0'} \\")
        out += [r"\end{aligned}", "$$", "", "**Once per sequence**, after the loop (over all $T N$ rows):", ""]
        seq = _section_lines(d, p, d.seq_lines)
        if seq:
            out += ["$$", r"\begin{aligned}"] + [_align(t) + r" \\" for t in seq] + [r"\end{aligned}", "$$"]
        else:
            out.append("(nothing)")
        return "\n".join(out) + "\n"

    def __str__(self):
        return self.text()

    def __repr__(self):
        return self.text()

    def _repr_markdown_(self):
        return self.markdown()


def _align(t):
    for op in (r" \mathrel{+}= ", " = "):
        if op in t:
            a, b = t.split(op, 1)
            return f"{a} &{op.strip()} {b}" if op == " = " else f"{a} &{op.strip()} {b}"
    return "& " + t


def explain(cell) -> Explanation:
    """The derivation of ``cell``'s forward and BPTT backward, from its graph.

    >>> print(gr.explain(gr.cells.rnn(3, 4)))   # doctest: +ELLIPSIS
    cell 'rnn': ...
    """
    from .graph import Cell

    if not isinstance(cell, Cell):
        raise GraphError(f"explain: expected a gr.Cell, got {type(cell).__name__}")
    return Explanation(Derivation(cell))


def explain_main(args):
    """``graphrnn explain CELL [--format text|markdown] [-o FILE]``."""
    from .cells import from_spec

    cell = from_spec(args.cell, args.input_size, args.hidden_size)
    e = explain(cell)
    text = e.markdown() if args.format == "markdown" else e.text()
    if args.output:
        from .files import atomic_write

        atomic_write(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
