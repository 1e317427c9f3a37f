"""Truncated BPTT inside one sequence: TBPTT(k1, k2) of Williams and Peng (1990).

The sequence runs forward as one; every ``k1`` steps (and at the end) the
gradients of the losses of the last ``k1`` steps are carried back ``k2`` steps
only, from the state the forward had there. The backward passes' gradients are
summed. ``k1 = k2 = T`` is full BPTT; ``k1 = k2 = k`` is what a stateful layer
does over chunks of k steps (truncated at batch boundaries); ``k2 > k1`` lets
each loss see at least ``k2 - k1 + 1`` steps of history, the point of the method.

Built on the public API only (``gr.unroll`` over windows, ``Run.backward``):
the scheduler itself is unchanged.
"""
from __future__ import annotations

from .errors import GraphError
from .unroll import Grads, unroll


def windows(T, k1, k2):
    """The backward passes: (start, stop, loss_from) for each, in order. Losses of
    steps loss_from … stop−1 are carried back to step ``start`` (0-based, stop exclusive)."""
    if not (isinstance(k1, int) and isinstance(k2, int)) or k1 < 1 or k2 < k1:
        raise GraphError(f"tbptt: need integers 1 <= k1 <= k2, got k1={k1!r}, k2={k2!r}")
    out = []
    stop = 0
    while stop < T:
        prev, stop = stop, min(stop + k1, T)
        out.append((max(0, stop - k2), stop, prev))  # the losses since the last pass
    return out


def tbptt(cell, params, xs, dhs, k1, k2, state0=None):
    """Gradients of TBPTT(k1, k2) for per-step loss gradients ``dhs`` (N, T, out).

    Returns ``(grads, run)``: ``grads`` a ``Grads`` (params summed over the
    backward passes; xs the inputs' gradients; state0 the initial state's,
    which only a window reaching step 0 gives) and ``run`` the forward over the
    whole sequence (``run.hs``, ``run.state``)."""
    from . import backend

    xp = backend.xp()
    full = unroll(cell, params, xs, state0)
    T = xs.shape[1]
    if tuple(dhs.shape) != tuple(full.hs.shape):
        raise GraphError(f"tbptt: dhs has shape {tuple(dhs.shape)}, the run's outputs {tuple(full.hs.shape)}")
    # the state the forward had before each window: one forward from state0, cut at the starts
    starts = sorted({w[0] for w in windows(T, k1, k2)})
    at, state, state_at = 0, state0, {}
    for s in starts:
        if s > at:
            state = unroll(cell, params, xs[:, at:s], state).state
            at = s
        state_at[s] = state
    gp = {k: xp.zeros_like(v) for k, v in params.items()}
    gx = xp.zeros_like(xs)
    g0 = None
    for start, stop, loss_from in windows(T, k1, k2):
        run = unroll(cell, params, xs[:, start:stop], state_at[start])
        d = xp.zeros_like(run.hs)
        d[:, loss_from - start:] = dhs[:, loss_from:stop]
        g = run.backward(d)
        for k in gp:
            gp[k] += g.params[k]
        gx[:, start:stop] += g.xs
        if start == 0:
            g0 = g.state0 if g0 is None else {k: g0[k] + g.state0[k] for k in g0}
    if g0 is None:
        g0 = {k: xp.zeros((xs.shape[0], n), dtype=xs.dtype) for k, n in cell.state_sizes().items()}
    return Grads(gp, gx, g0), full


def plot_modes(path, T=12):
    """A picture of the four modes: which steps each backward pass covers."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    from .files import save_figure

    modes = [("full BPTT (one backward over T)", [(0, T, 0)]),
             ("truncated at batch boundaries / stateful, k = 4", windows(T, 4, 4)),
             ("TBPTT(k1=2, k2=5) inside the sequence", windows(T, 2, 5)),
             ("TBPTT(k1=1, k2=3): every step, 3 back", windows(T, 1, 3))]
    rows = sum(len(w) for _, w in modes) + 2 * len(modes)
    fig, ax = plt.subplots(figsize=(9, 0.32 * rows + 0.8))
    y = 0
    for title, ws in modes:
        ax.text(-0.3, y, title, fontsize=10, fontweight="bold", va="center")
        y += 1
        for start, stop, loss_from in ws:
            for t in range(T):
                face = "#f4cccc" if loss_from <= t < stop else "#d9ead3" if start <= t < stop else "#f3f3f3"
                ax.add_patch(Rectangle((t, y - 0.4), 0.9, 0.8, facecolor=face, edgecolor="#999999", lw=0.6))
            ax.add_patch(FancyArrowPatch((stop - 0.05, y), (start + 0.05, y), arrowstyle="-|>", mutation_scale=9,
                                         color="#cc0000", lw=1.2))
            y += 1
        y += 1
    ax.set_xlim(-0.4, T + 0.2)
    ax.set_ylim(y - 1, -1)
    ax.set_xticks([t + 0.45 for t in range(T)])
    ax.set_xticklabels([str(t + 1) for t in range(T)])
    ax.set_yticks([])
    ax.set_xlabel("time step t  (red: the losses this pass carries back; green: steps it goes back through)")
    for s in ("left", "right", "top"):
        ax.spines[s].set_visible(False)
    return save_figure(fig, path)
