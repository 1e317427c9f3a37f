"""Gradients through time: how ∂L/∂s_t shrinks or grows as t moves away from the loss.

For one input sequence and a loss on the last step only, L = u · y_T (u a fixed
random unit vector, y_T the cell's output at step T), ``gradient_flow`` gives

- ``grad_norm[t]`` = ‖∂L/∂s_t‖₂ for t = 0 … T−1, where s_t is the whole state
  after step t (all states side by side; (h, c) for an LSTM; s_0 the initial
  state), and each state's part apart;
- ``jacobian_norm[t]`` = ‖∂s_{t+1}/∂s_t‖₂, the spectral norm (largest singular
  value) of step t+1's Jacobian, for t = 0 … T−2.

Each step's Jacobian comes from one BPTT step of the engine (``gr.unroll`` over
one step, batched over the S basis directions of the state); ∂L/∂s_t is then
carried back as ∂L/∂s_{t} = J_{t+1}ᵀ ∂L/∂s_{t+1}, the product that makes
gradients vanish or explode (Bengio et al. 1994; Pascanu et al. 2013).
"""
from __future__ import annotations

import json

import numpy as np

from .errors import GraphError


def _split(vec, sizes):
    out, at = {}, 0
    for name, size in sizes.items():
        out[name] = vec[..., at:at + size]
        at += size
    return out


def _joined(d, sizes):
    return np.concatenate([np.asarray(d[k]) for k in sizes], axis=-1)


def gradient_flow(cell, params, xs, state0=None, seed=0):
    """``dict`` with ``grad_norm`` (T), ``state_grad_norm`` (state -> T), ``jacobian_norm``
    (T−1) for one sequence ``xs`` (1, T, D) and the loss L = u · y_T."""
    from .unroll import unroll

    xs = np.asarray(xs, dtype=np.float64)
    if xs.ndim != 3 or xs.shape[0] != 1:
        raise GraphError(f"gradient_flow: xs must be one sequence (1, T, {cell.input_size}), got {xs.shape}")
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    T = xs.shape[1]
    sizes = cell.state_sizes()
    S = sum(sizes.values())
    u = np.random.default_rng(seed).normal(size=cell.output_size)
    u /= np.linalg.norm(u)

    # the states after every step: s[t] is the state after step t (s[0] the initial one)
    s = [{k: (np.zeros((1, n)) if not state0 or state0.get(k) is None else np.asarray(state0[k], float))
          for k, n in sizes.items()}]
    for t in range(T):
        s.append(unroll(cell, params, xs[:, t:t + 1], s[t]).state)

    # ∂L/∂s_{T-1}: the loss reads the last step's output
    last = unroll(cell, params, xs[:, T - 1:T], s[T - 1])
    dhs = np.zeros((1, 1, cell.output_size))
    dhs[0, 0] = u
    g = _joined(last.backward(dhs, need_xs=False).state0, sizes)[0]
    grads = [None] * T
    grads[T - 1] = g
    jnorm = [None] * max(T - 1, 0)
    basis = {k: v for k, v in _split(np.eye(S), sizes).items()}
    for t in range(T - 1, 0, -1):
        # J[i, :] = ∂s_t[i]/∂s_{t-1}: row i is the BPTT of direction e_i through step t
        rep = {k: np.repeat(v, S, axis=0) for k, v in s[t - 1].items()}
        run = unroll(cell, params, np.repeat(xs[:, t - 1:t], S, axis=0), rep)
        J = _joined(run.backward(None, basis, need_xs=False).state0, sizes)
        jnorm[t - 1] = float(np.linalg.norm(J, 2))
        g = J.T @ g
        grads[t - 1] = g
    grads = np.array(grads)
    return {
        "cell": cell.name, "steps": T, "state": list(sizes),
        "loss": "L = u · y_T (u a random unit vector), y_T the output at the last step",
        "grad_norm": [float(v) for v in np.linalg.norm(grads, axis=1)],
        "state_grad_norm": {k: [float(v) for v in np.linalg.norm(part, axis=1)]
                            for k, part in _split(grads, sizes).items()},
        "jacobian_norm": jnorm,
        "jacobian_norm_is": "spectral norm (largest singular value) of ∂s_{t+1}/∂s_t",
        "grad_norm_is": "Euclidean norm of ∂L/∂s_t, s_t all states after step t (t = 0: the initial state)",
    }


def params_from_checkpoint(folder, layer=0, cell_spec=None):
    """(cell, params) of the recurrent layer ``layer`` of a saved run (``cell{layer}.*``
    arrays, or unprefixed ones), the cell from the run's config or ``cell_spec``."""
    from . import checkpoint
    from .cells import from_spec

    manifest, arrays = checkpoint.load(folder)
    config = manifest.get("config", {})
    spec = cell_spec or config.get("cell")
    if not spec:
        raise GraphError(f"{folder}: the run's config names no cell; pass --cell")
    found = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    prefixed = {k.split(".", 1)[1]: v for k, v in found.items() if k.startswith(f"cell{layer}.")}
    group = prefixed or {k: v for k, v in found.items() if "." not in k}
    if not group:
        raise GraphError(f"{folder}: no parameters of recurrent layer {layer} (looked for param/cell{layer}.*)")
    H = config.get("hidden") or config.get("hidden_size")
    shapes = [v.shape for v in group.values()]
    candidates = []
    for h in ([H] if H else []) + [s[-1] for s in shapes]:
        for d in {s[0] for s in shapes if len(s) == 2} | {s[0] - h for s in shapes if len(s) == 2}:
            if d > 0 and (d, h) not in candidates:
                candidates.append((d, h))
    for d, h in candidates:
        try:
            cell = from_spec(spec, int(d), int(h))
        except GraphError:
            continue
        want = cell.param_shapes()
        if set(want) == set(group) and all(tuple(group[k].shape) == want[k] for k in want):
            return cell, {k: np.asarray(group[k], dtype=np.float64) for k in want}
    raise GraphError(f"{folder}: the parameters of layer {layer} do not fit cell {spec!r} at any size "
                     f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in group.items())})")


def plot(results, path, title=None):
    """One line per cell: ‖∂L/∂s_t‖ over t on a log axis, the Jacobians' norms below."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .files import save_figure

    fig, (a, b) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for r in results:
        T = r["steps"]
        a.plot(range(T), r["grad_norm"], label=r.get("label", r["cell"]), lw=1.6)
        b.plot(range(1, T), r["jacobian_norm"], lw=1.2)
    a.set_yscale("log")
    a.set_ylabel("‖∂L/∂s_t‖  (loss on the last step)")
    a.set_title(title or "Gradients through time")
    a.legend()
    a.grid(True, which="major", alpha=0.3)
    b.set_yscale("log")
    b.axhline(1.0, color="#888888", lw=0.8, ls="--")
    b.set_ylabel("‖∂s_t / ∂s_t−1‖₂ (spectral norm)")
    b.set_xlabel("t (step; the loss reads the output of the last step)")
    b.grid(True, which="major", alpha=0.3)
    return save_figure(fig, path)


def gradflow_main(args):
    """``graphrnn gradflow --cell rnn,gru,lstm --steps 100 [-o FILE.png] [--checkpoint RUN]``."""
    from .cells import from_spec
    from .files import atomic_write

    rng = np.random.default_rng(args.seed)
    results = []
    if args.checkpoint:
        specs = [None] if not args.cell else args.cell.split(",")
        for spec in specs:
            cell, params = params_from_checkpoint(args.checkpoint, args.layer, spec)
            xs = rng.normal(size=(1, args.steps, cell.input_size))
            r = gradient_flow(cell, params, xs, seed=args.seed)
            r["label"] = f"{cell.name} (trained: {args.checkpoint}, layer {args.layer})"
            results.append(r)
    else:
        for spec in [s for s in (args.cell or "rnn,gru,lstm").split(",") if s]:
            cell = from_spec(spec, args.input_size, args.hidden_size)
            params = cell.init_params(seed=args.seed, dtype=np.float64)
            xs = rng.normal(size=(1, args.steps, cell.input_size))
            r = gradient_flow(cell, params, xs, seed=args.seed)
            r["label"] = f"{cell.name} (init, H={cell.hidden_size})"
            results.append(r)
    out = args.output or "gradflow.png"
    plot(results, out)
    stem = out.rsplit(".", 1)[0]
    atomic_write(stem + ".json", json.dumps({"results": results, "seed": args.seed}, indent=1))
    for r in results:
        g = r["grad_norm"]
        print(f"{r['label']}: ‖∂L/∂s_0‖ / ‖∂L/∂s_T-1‖ = {g[0] / g[-1]:.3g} over {r['steps']} steps")
    print(f"wrote {out} and {stem}.json")
    return 0


def node_gradients(cell, params, xs, dhs, fuse=True):
    """‖∂L/∂v‖ of every value v of the compiled graph at every step, for the loss
    whose gradient with respect to the outputs is ``dhs`` (N, T, out).

    Returns ``(per_step, total)``: ``per_step[(node, t)]`` for t = 1 … T (the
    step reading or making the value) and ``total[node]``, the norm of the
    value's gradient summed over the steps for parameters and what is computed
    from them only, and over all T·N rows for the rest. A step-by-step
    interpreter of the plan's graph (as ``gr.unroll_naive`` is of the declared
    one), so that every intermediate gradient can be seen."""
    import networkx as nx

    from .plan import STATIC, compile_cell

    plan = compile_cell(cell, fuse)
    g = plan.graph
    order = list(nx.lexicographical_topological_sort(g))
    xs = np.asarray(xs, dtype=np.float64)
    N, T = xs.shape[:2]
    state = {s: np.zeros((N, cell.state_sizes()[s])) for s in cell.states}
    steps = []
    for t in range(T):
        v = {}
        for n in order:
            a = g.nodes[n]
            k = a["kind"]
            v[n] = (xs[:, t] if k == "input" else state[a["name"]] if k == "state" else
                    np.asarray(params[a["name"]], float) if k == "param" else np.asarray(a["value"]) if k == "const"
                    else a["op"].forward(np, *[v[p] for p in a["args"]]))
        steps.append(v)
        state = {s: v[u] for s, _, u in plan.states}
    per_step, sq, summed = {}, {}, {}
    carry = {}
    for t in range(T - 1, -1, -1):
        v, grads = steps[t], {}

        def add(n, d):
            grads[n] = d if n not in grads else grads[n] + d
        for s, _, u in plan.states:
            if carry.get(s) is not None:
                add(u, carry[s])
        add(plan.output_node, np.asarray(dhs[:, t], float))
        for n in reversed(order):
            a = g.nodes[n]
            if n in grads and a["kind"] == "op":
                res = a["op"].backward(np, grads[n], [v[p] for p in a["args"]], v[n], (True,) * len(a["args"]))
                for p, r in zip(a["args"], res):
                    if g.nodes[p]["kind"] != "const":
                        add(p, r)
        for n, d in grads.items():
            per_step[(n, t + 1)] = float(np.linalg.norm(d))
            if g.nodes[n]["kind"] == "param" or plan.kind[n] == STATIC:
                summed[n] = d if n not in summed else summed[n] + d
            else:
                sq[n] = sq.get(n, 0.0) + float(np.sum(d * d))
        carry = {s: grads.get(snode) for s, snode, _ in plan.states}
    total = {n: float(np.sqrt(x)) for n, x in sq.items()}
    total.update({n: float(np.linalg.norm(d)) for n, d in summed.items()})
    return per_step, total
