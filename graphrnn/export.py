"""A cell as a standalone numpy module: a textbook layer and its time layer.

``export(cell)`` returns the source of a Python module that imports numpy and
nothing else, in the shape of the book's ``common/time_layers.py``: a class
for one step (``params``, ``grads``, ``forward(x, h_prev)`` keeping a cache,
``backward(dh_next)``) and a ``Time...`` class over T steps, stateful like the
book's ``TimeGRU``. The code is printed from the same ``Derivation`` that
``explain`` prints, so its lines are the derivation's lines in the same order,
as numpy; every value is computed per step, the way the book writes it (the
engine's hoisting is what ``explain`` shows apart).
"""
from __future__ import annotations

import keyword
import re

from .errors import GraphError
from .explain import Derivation, TextPrinter, _unknown, rule_for

_RESERVED = {"np", "self", "sigmoid", "sum_to", "layer", "layers", "params", "grads", "cache", "xs", "hs",
             "dxs", "dhs", "N", "T", "t", "dy", "y"}


def _ident(text):
    s = (text.replace("~", "_tilde").replace("'", "_next").replace(" - ", "_minus_").replace(" + ", "_plus_")
         .replace(" * ", "_times_").replace(" @ ", "_at_"))
    s = re.sub(r"\W+", "_", s).strip("_") or "v"
    s = re.sub(r"^1_minus_", "one_minus_", s)   # d(1 - z) reads d_one_minus_z
    return s if not s[0].isdigit() else "v" + s


class PythonPrinter(TextPrinter):
    """The derivation's trees as numpy expressions over the layer's variables."""

    times, matmul_fwd = " * ", " @ "

    def __init__(self, d):
        super().__init__(d)
        self.uses_sum_to = False
        self.py, self.gpy = {}, {}
        taken = set(_RESERVED)

        def claim(base):
            name = base
            while name in taken or keyword.iskeyword(name):
                name += "_"
            taken.add(name)
            return name
        g = d.g
        for n in d.const_arrays:   # module-level arrays, named before any local can take the name
            self.py[n] = claim(_ident(d.names[n]))
        for n in d.order:
            a = g.nodes[n]
            if a["kind"] == "state":
                self.py[n] = claim(f"{a['name']}_prev")
            elif a["kind"] in ("input", "param"):
                self.py[n] = claim(a["name"])
            elif n in d.shown:
                base = f"{d.update_of[n][0]}_next" if n in d.update_of else _ident(d.names[n])
                self.py[n] = claim(base)
        text = TextPrinter(d)   # an unnamed value's gradient is named after its expression
        for n in d.order:
            if g.nodes[n]["kind"] == "const":
                continue
            base = "d" + self.py[n] if n in self.py else "d_" + _ident(text.value(n)[0])
            self.gpy[n] = claim(base)

    def atom(self, n):
        a = self.d.g.nodes[n]
        return self.num(a["value"]) if a["kind"] == "const" and a["shape"] == () else self.py[n]

    def value(self, n):
        d = self.d
        if d.is_atom(n):
            return self.atom(n), 9
        return self.expr(d.fwd[n])

    def grad_name(self, n):
        return self.gpy[n]

    def num(self, v):
        text = f"{v:g}"
        return text if float(text) == v else repr(v)

    def dim(self, v):
        return str(v)

    def cols(self, lo, hi):
        return f"[..., {lo}:{hi}]"

    def carry(self, s):
        return f"d{s}_next"

    def dhs(self):
        return "dy"

    def product(self, a, b):
        return f"{a} @ {b}"

    def negate(self, a):
        return f"-{a}"

    def positive(self, a):
        return f"({a} > 0)"

    _FUNCTIONS = {"tanh": "np.tanh", "sigmoid": "sigmoid", "exp": "np.exp", "sqrt": "np.sqrt", "log": "np.log",
                  "abs": "np.abs", "sin": "np.sin", "cos": "np.cos", "floor": "np.floor", "sign": "np.sign",
                  "maximum": "np.maximum", "minimum": "np.minimum"}

    def function(self, name, args):
        if name == "relu":
            return f"np.maximum({args[0]}, 0)"
        if name in ("sum", "mean"):   # over the last axis, kept as a column
            return f"np.{name}({args[0]}, axis=-1, keepdims=True)"
        fn = self._FUNCTIONS.get(name)
        if fn is None:
            raise GraphError(f"export does not know primitive {name!r}")
        return f"{fn}({', '.join(args)})"

    def power(self, base, k):
        return f"{base} ** {self.num(k)}"

    def modulo(self, a, k):
        return f"{a} % {self.num(k)}"

    def compare(self, sym, a, b, mask):
        # a mask is a number in the operands' dtype; as a factor a boolean array does
        return f"({a} {sym} {b}).astype(np.result_type({a}, {b}))" if mask else f"({a} {sym} {b})"

    def select(self, m, a, b):
        return f"np.where({m} > 0, {a}, {b})"

    def repeat(self, a, n):
        return f"np.repeat({a}, {n}, axis=-1)"

    def scale(self, a, n):
        return f"{a} * (1 / {n})"   # the engine multiplies by 1/n, not divides

    def zero(self, t):
        return f"np.zeros_like({self.expr(t)[0]})"

    def concat(self, parts):
        return f"np.concatenate([{', '.join(parts)}], axis=-1)"

    def sum_to(self, a, shape, out):
        if len(shape) == len(out) - 1 and tuple(shape) == tuple(out[1:]):
            return f"{a}.sum(axis=0)"
        self.uses_sum_to = True
        return f"sum_to({a}, {tuple(d for d in shape)!r})"

    def ndim(self, t):
        return len(self.d.g.nodes[t[1]]["shape"]) if t[0] in ("v", "g") else 2

    def cols_of(self, ndim, lo, hi):
        return f"[:, {lo}:{hi}]" if ndim == 2 else f"[{lo}:{hi}]" if ndim == 1 else f"[..., {lo}:{hi}]"

    def expr(self, t):
        if t[0] == "cols":
            return self.wrap(self.expr(t[1]), 9) + self.cols_of(self.ndim(t[1]), t[2], t[3]), 9
        if t[0] == "bin" and t[1] == "+" and t[3][0] == "neg":   # a + (-b) reads a - b
            return self.expr(("bin", "-", t[2], t[3][1]))
        if t[0] == "T":
            return self.wrap(self.expr(t[1]), 9) + ".T", 9
        if t[0] == "sq":
            return self.wrap(self.expr(t[1]), 9) + " ** 2", 8
        if t[0] == "sumto":
            return self.sum_to(self.wrap(self.expr(t[1]), 9), t[2], t[3]), 9
        return super().expr(t)


_SUM_TO = '''

def sum_to(g, shape):
    """Undo numpy's broadcasting: g summed down to ``shape``."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g
'''


def _class_name(name):
    parts = [p for p in re.split(r"\W|_", name) if p]
    if len(parts) == 1 and len(parts[0]) <= 4:
        return parts[0].upper()
    return "".join(p[:1].upper() + p[1:] for p in parts) or "Cell"


class _Module:
    def __init__(self, cell):
        self.d = d = Derivation(cell)
        if d.unknown:
            # every built-in primitive states its formula trees: what is left is a user's primitive
            # without them (or a built-in with forward/backward replaced), whose code only its class holds
            raise GraphError(f"cell {cell.name!r}: export does not know primitive {sorted(set(d.unknown))[0]!r} "
                             "(a user primitive: a self-contained numpy module cannot hold its class's code)")
        self.p = PythonPrinter(d)
        self.cell = cell
        self.states = list(cell.states)
        self.out_separate = d.out not in cell.updates.values()

    # ------------------------------------------------------------------ pieces
    def _backward_lines(self):
        d, p, g = self.d, self.p, self.d.g
        has_pieces = {ln.target for ln in d.step_lines + d.seq_lines if ln.piece is not None}
        seen, body = set(), []
        for ln in d.step_lines + d.seq_lines:
            if ln.stack:
                continue
            if ln.target is None:
                raise GraphError(p.expr(ln.tree)[0])
            tree = ln.tree
            if ln.note:  # a gradient entering the step: the layer's arguments
                tree = _entry_tree(tree, self.out_separate)
            var = p.grad_name(ln.target)
            rhs = p.expr(tree)[0]
            if ln.target not in seen:
                seen.add(ln.target)
                if ln.target in has_pieces:
                    body.append(f"{var} = np.zeros_like({p.value(ln.target)[0]})")
                elif ln.piece is None:
                    if rhs != var:
                        body.append(f"{var} = {rhs}")
                    continue
            if ln.piece is not None:
                ndim = len(g.nodes[ln.target]["shape"])
                body.append(f"{var}{p.cols_of(ndim, *ln.piece)} += {rhs}")
            elif tree[0] == "neg":
                body.append(f"{var} = {var} - {p.wrap(p.expr(tree[1]), 3)}")
            else:
                body.append(f"{var} = {var} + {rhs}")
        self.seen = seen
        return body

    def _grad_of(self, n):
        if n in self.seen:
            return self.p.grad_name(n)
        if n in self.d.alias:
            return self.p.expr(self.d.alias[n])[0]
        return f"np.zeros_like({self.p.value(n)[0]})"

    def source(self):
        d, p, cell = self.d, self.p, self.cell
        g = d.g
        cname = _class_name(cell.name)
        params = [p.py[n] for n in cell.params.values()]
        x = p.py[cell.input_node]
        sprev = [p.py[cell.states[s]] for s in self.states]
        shown = [n for n, _ in d.forward]
        fwd = [f"{p.py[n]} = {p.expr(tree)[0]}" for n, tree in d.forward]
        nexts = [p.value(cell.updates[s])[0] for s in self.states]
        returns = ([p.value(d.out)[0]] if self.out_separate else []) + nexts
        cache = [x] + sprev + [p.py[n] for n in shown]
        bwd = self._backward_lines()
        dargs = (["dy"] if self.out_separate else []) + [f"d{s}_next" for s in self.states]
        dreturn = [self._grad_of(cell.input_node)] + [self._grad_of(cell.states[s]) for s in self.states]
        grads = [f"self.grads[{i}][...] = {self._grad_of(n)}" for i, n in enumerate(cell.params.values())]
        explained = TextPrinter(d)
        eqs = [explained.equation(n, tree) for n, tree in d.forward]
        eqs += [f"{s}(t+1) = {explained.value(u)[0]}" for s, u in cell.updates.items()]

        ind = " " * 8
        out = [f'"""The {cell.name!r} cell, exported by graphrnn: numpy only.', "",
               f"Input {cell.input_name} ({cell.input_size}), states "
               + ", ".join(f"{s} ({n})" for s, n in cell.state_sizes().items())
               + f", parameters {', '.join(f'{k} {v}' for k, v in cell.param_shapes().items()) or 'none'}.",
               "Per step:", ""]
        out += [f"    {e}" for e in eqs]
        out += ["", "`graphrnn explain` prints the same derivation the backward below runs.", '"""',
                "import numpy as np", "", "",
                "def sigmoid(x):", "    return 1 / (1 + np.exp(-x))"]
        if p.uses_sum_to:
            out.append(_SUM_TO.rstrip("\n"))
        for n in d.const_arrays:
            out += ["", "", f"# the cell's constant array {d.names[n]} {tuple(g.nodes[n]['shape'])} (not trained)",
                    f"{p.py[n]} = np.array({g.nodes[n]['value'].tolist()!r})",
                    f"{p.py[n]}.setflags(write=False)"]
        out += ["", "", f"class {cname}:",
                f'    """One step of the cell; the book\'s layer form."""', "",
                f"    def __init__(self, {', '.join(params)}):" if params else "    def __init__(self):",
                f"        self.params = [{', '.join(params)}]",
                "        self.grads = [np.zeros_like(p) for p in self.params]",
                "        self.cache = None", "",
                f"    def forward(self, {', '.join([x] + sprev)}):"]
        if params:
            out.append(f"{ind}{', '.join(params)}{',' if len(params) == 1 else ''} = self.params")
        out += [ind + line for line in fwd]
        out.append(f"{ind}self.cache = ({', '.join(cache)},)")
        out.append(f"{ind}return {', '.join(returns)}")
        out += ["", f"    def backward(self, {', '.join(dargs)}):"]
        if params:
            out.append(f"{ind}{', '.join(params)}{',' if len(params) == 1 else ''} = self.params")
        out.append(f"{ind}{', '.join(cache)}{',' if len(cache) == 1 else ''} = self.cache")
        out += [ind + line for line in bwd]
        out += [ind + line for line in grads]
        out.append(f"{ind}return {', '.join(dreturn)}")
        out += self._time_layer(cname, params)
        return "\n".join(out) + "\n"

    def _time_layer(self, cname, params):
        cell = self.cell
        H = cell.state_sizes()
        st = {s: (s if s not in _RESERVED and s != "stateful" else f"state_{s}") for s in self.states}
        out_state = None if self.out_separate else next(s for s in self.states if cell.updates[s] == self.d.out)
        ind = " " * 8
        lines = ["", "", f"class Time{cname}:",
                 f'    """{cname} over T steps, like the book\'s time layers. With stateful=True each',
                 "    forward starts from the states the last one ended in (truncated BPTT across",
                 '    calls) until reset_state(); after backward, self.d<state> holds dL/d(initial state)."""', "",
                 f"    def __init__(self, {', '.join(params + ['stateful=False'])}):",
                 f"        self.params = [{', '.join(params)}]",
                 "        self.grads = [np.zeros_like(p) for p in self.params]",
                 "        self.layers = None",
                 *(f"        self.{st[s]} = None" for s in self.states),
                 *(f"        self.d{st[s]} = None" for s in self.states),
                 "        self.stateful = stateful", "",
                 f"    def set_state(self, {', '.join(st[s] for s in self.states)}):",
                 *(f"        self.{st[s]} = {st[s]}" for s in self.states), "",
                 "    def reset_state(self):",
                 *(f"        self.{st[s]} = None" for s in self.states), "",
                 "    def forward(self, xs):",
                 "        N, T, _ = xs.shape",
                 f"        hs = np.empty((N, T, {cell.output_size}), dtype=xs.dtype)"]
        for s in self.states:
            lines += [f"        if not self.stateful or self.{st[s]} is None:",
                      f"            self.{st[s]} = np.zeros((N, {H[s]}), dtype=xs.dtype)"]
        names = ", ".join(f"self.{st[s]}" for s in self.states)
        lines += ["        self.layers = []", "        for t in range(T):",
                  f"            layer = {cname}(*self.params)"]
        if self.out_separate:
            lines += [f"            y, {names} = layer.forward(xs[:, t, :], {names})",
                      "            hs[:, t, :] = y"]
        else:
            lines += [f"            {names} = layer.forward(xs[:, t, :], {names})",
                      f"            hs[:, t, :] = self.{st[out_state]}"]
        lines += ["            self.layers.append(layer)", "        return hs", "",
                  "    def backward(self, dhs):",
                  "        N, T, _ = dhs.shape",
                  f"        dxs = np.empty((N, T, {cell.input_size}), dtype=dhs.dtype)"]
        lines += [f"        d{st[s]} = np.zeros((N, {H[s]}), dtype=dhs.dtype)" for s in self.states]
        lines += ["        grads = [np.zeros_like(p) for p in self.params]",
                  "        for t in reversed(range(T)):",
                  "            layer = self.layers[t]"]
        args = (["dhs[:, t, :]"] if self.out_separate else []) + [
            f"dhs[:, t, :] + d{st[s]}" if s == out_state else f"d{st[s]}" for s in self.states]
        dnames = ", ".join(f"d{st[s]}" for s in self.states)
        lines += [f"            dx, {dnames} = layer.backward({', '.join(args)})",
                  "            dxs[:, t, :] = dx",
                  "            for i, grad in enumerate(layer.grads):",
                  "                grads[i] += grad",
                  "        for i, grad in enumerate(grads):",
                  "            self.grads[i][...] = grad"]
        lines += [f"        self.d{st[s]} = d{st[s]}" for s in self.states]
        lines.append("        return dxs")
        del ind
        return lines


def _entry_tree(tree, out_separate):
    """In the layer, the loss's gradient at t reaches ``backward`` added into the
    state's ``d<s>_next`` when the output is that state (the time layer adds it),
    or as ``dy`` when the output is a value of its own."""
    if out_separate:
        return tree
    terms, todo = [], [tree]
    while todo:
        t = todo.pop(0)
        if t[0] == "bin" and t[1] == "+":
            todo[:0] = [t[2], t[3]]
        elif t != ("dhs",):
            terms.append(t)
    out = terms[0]
    for t in terms[1:]:
        out = ("bin", "+", out, t)
    return out


def export(cell) -> str:
    """The source of a numpy-only module holding ``cell`` as a textbook layer
    (class named after the cell, e.g. ``GRU``) and its time layer (``TimeGRU``).

    >>> src = export(gr.cells.gru(3, 4))
    >>> "class TimeGRU:" in src and "import numpy as np" in src
    True
    """
    from .graph import Cell

    if not isinstance(cell, Cell):
        raise GraphError(f"export: expected a gr.Cell, got {type(cell).__name__}")
    return _Module(cell).source()


def export_main(args):
    """``graphrnn export CELL -o FILE.py``."""
    from .cells import from_spec
    from .files import atomic_write

    cell = from_spec(args.cell, args.input_size, args.hidden_size)
    src = export(cell)
    out = args.output or f"{cell.name}_cell.py"
    atomic_write(out, src)
    print(f"wrote {out}: classes {_class_name(cell.name)} and Time{_class_name(cell.name)} (numpy only)")
    return 0


__all__ = ["export", "export_main", "rule_for", "_unknown"]
