"""Built-in cells, each a short declaration that reads like its equations.

Parameter layouts (tests, checkpoints and users rely on them):

- ``rnn``:  Wx (D, H), Wh (H, H), b (H);  h' = act(x Wx + b + h Wh)
- ``gru``:  Wx (D, 3H), Wh (H, 3H), b (3H), column blocks z | r | h~
  (the book's GRU: r multiplies h *before* Wh; PyTorch applies r after W_hn h)
- ``lstm``: Wx (D, 4H), Wh (H, 4H), b (4H), column blocks f | g | i | o
  (the book's order; PyTorch's is i | f | g | o)
- ``lstm_nico``: one weight (D+H, H) and bias (H) per gate g, i, f, o over
  concat([x, h]); states h and s; h' = s' * o (no tanh on the cell state)
- ``peephole_lstm``: lstm's layout plus p (3H), diagonal peepholes f | i | o
- ``cifg_lstm``: Wx (D, 3H), Wh (H, 3H), b (3H), blocks g | i | o; f = 1 - i
- ``ln_lstm``: lstm's layout plus gains gx, gh (4H), gc (H) and bias bc (H)
- ``indrnn``: W (D, H), u (H), b (H);  h' = relu(x W + b + u * h)
- ``sru``: W (D, 3H) blocks x~ | f | r, v (2H), b (2H), P (D, H) when D != H;
  state c, output h

Gates are declared one by one; the compiler fuses the matmuls that share a left
operand, so the declaration stays readable and the run stays packed. Gates and
other values the equations name carry those names (``name=`` or ``c.named``), so
diagrams and error messages say ``z``, ``h~``, ``c'`` rather than an expression.
"""
from __future__ import annotations

from .graph import CellBuilder, GraphError, concat, relu, sigmoid, sqrt, tanh

ACTIVATIONS = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}


def rnn(input_size, hidden_size, activation="tanh", bias=True):
    """Elman RNN: h' = act(x Wx + b + h Wh)."""
    if activation not in ACTIVATIONS:
        raise GraphError(f"rnn: unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
    c = CellBuilder("rnn")
    x = c.input("x", input_size)
    h = c.state("h", hidden_size)
    Wx = c.param("Wx", (input_size, hidden_size))
    Wh = c.param("Wh", (hidden_size, hidden_size))
    a = x @ Wx
    if bias:
        a = a + c.param("b", (hidden_size,), init="zeros")
    c.update(h=ACTIVATIONS[activation](c.named(a + h @ Wh, "a")))
    return c.build()


def gru(input_size, hidden_size):
    """GRU, blocks z | r | h~ (book form: r gates h before Wh)."""
    H = hidden_size
    c = CellBuilder("gru")
    x = c.input("x", input_size)
    h = c.state("h", H)
    Wx = c.param("Wx", (input_size, 3 * H))
    Wh = c.param("Wh", (H, 3 * H))
    b = c.param("b", (3 * H,), init="zeros")
    xw = c.named(x @ Wx + b, "xw")
    z = sigmoid(xw[:, :H] + h @ Wh[:, :H], name="z")
    r = sigmoid(xw[:, H:2 * H] + h @ Wh[:, H:2 * H], name="r")
    h_hat = tanh(xw[:, 2 * H:] + (r * h) @ Wh[:, 2 * H:], name="h~")
    c.update(h=(1 - z) * h + z * h_hat)
    return c.build()


def lstm(input_size, hidden_size):
    """LSTM, blocks f | g | i | o; c' = f*c + g*i, h' = o*tanh(c')."""
    H = hidden_size
    cb = CellBuilder("lstm")
    x = cb.input("x", input_size)
    h = cb.state("h", H)
    c = cb.state("c", H)
    Wx = cb.param("Wx", (input_size, 4 * H))
    Wh = cb.param("Wh", (H, 4 * H))
    b = cb.param("b", (4 * H,), init="zeros")
    xw = cb.named(x @ Wx + b, "xw")
    f = sigmoid(xw[:, :H] + h @ Wh[:, :H], name="f")
    g = tanh(xw[:, H:2 * H] + h @ Wh[:, H:2 * H], name="g")
    i = sigmoid(xw[:, 2 * H:3 * H] + h @ Wh[:, 2 * H:3 * H], name="i")
    o = sigmoid(xw[:, 3 * H:] + h @ Wh[:, 3 * H:], name="o")
    c_next = cb.named(f * c + g * i, "c'")
    cb.update(h=o * tanh(c_next), c=c_next)
    return cb.build()


def lstm_nico(input_size, hidden_size):
    """The LSTM of Nico Jimenez's lstm.py: gates over concat([x, h]), h' = s' * o."""
    H = hidden_size
    cb = CellBuilder("lstm_nico")
    x = cb.input("x", input_size)
    h = cb.state("h", H)
    s = cb.state("s", H)
    xc = concat([x, h], name="xh")
    gate = {}
    for name in ("g", "i", "f", "o"):
        W = cb.param(f"W{name}", (input_size + H, H), init="uniform(-0.1, 0.1)")
        bias = cb.param(f"b{name}", (H,), init="uniform(-0.1, 0.1)")
        gate[name] = xc @ W + bias
    g = tanh(gate["g"], name="g")
    i, f, o = (sigmoid(gate[k], name=k) for k in "ifo")
    s_next = cb.named(g * i + s * f, "s'")
    cb.update(h=s_next * o, s=s_next)
    return cb.build()


def mgu(input_size, hidden_size):
    """Minimal gated unit (Zhou et al. 2016), as declared in DESIGN.md."""
    H = hidden_size
    c = CellBuilder("mgu")
    x = c.input("x", input_size)
    h = c.state("h", H)
    Wx = c.param("Wx", (input_size, 2 * H))
    Wh = c.param("Wh", (H, 2 * H))
    b = c.param("b", (2 * H,), init="zeros")
    xw = c.named(x @ Wx + b, "xw")
    f = sigmoid(xw[:, :H] + h @ Wh[:, :H], name="f")
    h_hat = tanh(xw[:, H:] + (f * h) @ Wh[:, H:], name="h~")
    c.update(h=(1 - f) * h + f * h_hat)
    return c.build()


def peephole_lstm(input_size, hidden_size):
    """LSTM with peephole connections (Gers & Schmidhuber 2000), blocks f | g | i | o:
    f = σ(x Wx_f + h Wh_f + b_f + p_f * c), i likewise with p_i * c,
    c' = f*c + i*g, o = σ(x Wx_o + h Wh_o + b_o + p_o * c'), h' = o * tanh(c');
    the peepholes p (3H) are diagonal: blocks f | i | o."""
    H = hidden_size
    cb = CellBuilder("peephole_lstm")
    x = cb.input("x", input_size)
    h = cb.state("h", H)
    c = cb.state("c", H)
    Wx = cb.param("Wx", (input_size, 4 * H))
    Wh = cb.param("Wh", (H, 4 * H))
    b = cb.param("b", (4 * H,), init="zeros")
    p = cb.param("p", (3 * H,))
    xw = cb.named(x @ Wx + b, "xw")
    f = sigmoid(xw[:, :H] + h @ Wh[:, :H] + p[:H] * c, name="f")
    g = tanh(xw[:, H:2 * H] + h @ Wh[:, H:2 * H], name="g")
    i = sigmoid(xw[:, 2 * H:3 * H] + h @ Wh[:, 2 * H:3 * H] + p[H:2 * H] * c, name="i")
    c_next = cb.named(f * c + i * g, "c'")
    o = sigmoid(xw[:, 3 * H:] + h @ Wh[:, 3 * H:] + p[2 * H:] * c_next, name="o")
    cb.update(h=o * tanh(c_next), c=c_next)
    return cb.build()


def cifg_lstm(input_size, hidden_size):
    """Coupled input-forget gate LSTM (Greff et al. 2017, "CIFG"): the forget gate
    is 1 - i. Blocks g | i | o: c' = (1 - i)*c + i*g, h' = o * tanh(c')."""
    H = hidden_size
    cb = CellBuilder("cifg_lstm")
    x = cb.input("x", input_size)
    h = cb.state("h", H)
    c = cb.state("c", H)
    Wx = cb.param("Wx", (input_size, 3 * H))
    Wh = cb.param("Wh", (H, 3 * H))
    b = cb.param("b", (3 * H,), init="zeros")
    xw = cb.named(x @ Wx + b, "xw")
    g = tanh(xw[:, :H] + h @ Wh[:, :H], name="g")
    i = sigmoid(xw[:, H:2 * H] + h @ Wh[:, H:2 * H], name="i")
    o = sigmoid(xw[:, 2 * H:] + h @ Wh[:, 2 * H:], name="o")
    c_next = cb.named((1 - i) * c + i * g, "c'")
    cb.update(h=o * tanh(c_next), c=c_next)
    return cb.build()


def layer_norm(v, gain, eps=1e-5):
    """(v - mean) / sqrt(var + eps) * gain over the last axis (Ba et al. 2016);
    a bias, where the equations have one, is added by the caller."""
    m = v.mean(axis=-1, keepdims=True)
    d = v - m
    return d / sqrt((d * d).mean(axis=-1, keepdims=True) + eps) * gain


def ln_lstm(input_size, hidden_size):
    """Layer-normalised LSTM (Ba, Kiros & Hinton 2016, eq. 20-22), blocks f | g | i | o:
    a = LN(x Wx; gx) + LN(h Wh; gh) + b over all 4H gate columns,
    c' = σ(a_f)*c + σ(a_i)*tanh(a_g), h' = σ(a_o) * tanh(LN(c'; gc) + bc).
    The normalisation of x Wx runs once over all N·T rows (it depends on x only)."""
    H = hidden_size
    cb = CellBuilder("ln_lstm")
    x = cb.input("x", input_size)
    h = cb.state("h", H)
    c = cb.state("c", H)
    Wx = cb.param("Wx", (input_size, 4 * H))
    Wh = cb.param("Wh", (H, 4 * H))
    b = cb.param("b", (4 * H,), init="zeros")
    gx = cb.param("gx", (4 * H,), init="ones")
    gh = cb.param("gh", (4 * H,), init="ones")
    gc = cb.param("gc", (H,), init="ones")
    bc = cb.param("bc", (H,), init="zeros")
    xw = cb.named(layer_norm(x @ Wx, gx), "LN(xW)")
    a = cb.named(xw + layer_norm(h @ Wh, gh) + b, "a")
    f = sigmoid(a[:, :H], name="f")
    g = tanh(a[:, H:2 * H], name="g")
    i = sigmoid(a[:, 2 * H:3 * H], name="i")
    o = sigmoid(a[:, 3 * H:], name="o")
    c_next = cb.named(f * c + i * g, "c'")
    cb.update(h=o * tanh(layer_norm(c_next, gc) + bc), c=c_next)
    return cb.build()


def indrnn(input_size, hidden_size):
    """Independently recurrent network (Li et al. 2018): h' = relu(x W + u * h + b),
    a diagonal recurrence u (H) drawn from [0, 1] as the paper does."""
    H = hidden_size
    c = CellBuilder("indrnn")
    x = c.input("x", input_size)
    h = c.state("h", H)
    W = c.param("W", (input_size, H))
    u = c.param("u", (H,), init="uniform(0, 1)")
    b = c.param("b", (H,), init="zeros")
    c.update(h=relu(x @ W + b + u * h))
    return c.build()


def sru(input_size, hidden_size):
    """Simple recurrent unit (Lei et al. 2018), blocks x~ | f | r of W:
    f = σ(x W_f + v_f * c + b_f), r = σ(x W_r + v_r * c + b_r),
    c' = f*c + (1 - f) * x~, h = r * c' + (1 - r) * x P (the highway; P is a
    projection only when the input size differs from H, else x itself).
    The state is c; the output is h. Every product depends on x only: hoisted."""
    H = hidden_size
    cb = CellBuilder("sru")
    x = cb.input("x", input_size)
    c = cb.state("c", H)
    W = cb.param("W", (input_size, 3 * H))
    v = cb.param("v", (2 * H,))
    b = cb.param("b", (2 * H,), init="zeros")
    xw = cb.named(x @ W, "xW")
    f = sigmoid(xw[:, H:2 * H] + v[:H] * c + b[:H], name="f")
    r = sigmoid(xw[:, 2 * H:] + v[H:] * c + b[H:], name="r")
    c_next = cb.named(f * c + (1 - f) * xw[:, :H], "c'")
    skip = x if input_size == H else x @ cb.param("P", (input_size, H))
    cb.update(c=c_next)
    cb.output(r * c_next + (1 - r) * skip)
    return cb.build()


CELLS = {"rnn": rnn, "gru": gru, "lstm": lstm, "lstm_nico": lstm_nico, "mgu": mgu,
         "peephole_lstm": peephole_lstm, "cifg_lstm": cifg_lstm, "ln_lstm": ln_lstm,
         "indrnn": indrnn, "sru": sru}


def get(name):
    """The factory of a built-in cell by name, with an error listing the known ones."""
    try:
        return CELLS[name]
    except KeyError:
        raise GraphError(f"unknown cell {name!r}; built-in cells: {', '.join(CELLS)}") from None


def from_spec(spec: str, input_size: int, hidden_size: int):
    """A cell from a command line: a built-in name, or ``module:function`` for a
    user's factory called as ``function(input_size, hidden_size)``. The module is
    looked for in the current folder first, as ``python -m`` does."""
    if ":" not in spec:
        return get(spec)(input_size, hidden_size)
    import importlib
    import os
    import sys

    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise GraphError(f"cell {spec!r}: expected MODULE:FUNCTION, e.g. mycells:peephole")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError) as exc:  # the last two: a relative name such as ".x"
        raise GraphError(f"cannot import module {module_name!r} for cell {spec!r}: {exc}") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise GraphError(f"module {module_name!r} has no function {func_name!r} (cell {spec!r})")
    try:
        cell = factory(input_size, hidden_size)
    except GraphError:
        raise
    except Exception as exc:  # the user's code: one line says where, the chain keeps the rest
        raise GraphError(f"cell {spec}({input_size}, {hidden_size}) raised {type(exc).__name__}: {exc}") from exc
    from .graph import Cell

    if not isinstance(cell, Cell):
        raise GraphError(f"{spec} returned {type(cell).__name__}, not a gr.Cell (did you call c.build()?)")
    return cell
