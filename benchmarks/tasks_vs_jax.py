"""graphrnn's three classic tasks against the same networks written in JAX.

For binary addition, primes (the "lstm_nico" LSTM) and dinosaurs, this script
writes the network and its training step in JAX the way a competent JAX user
would: parameters in a pytree, the loss over the sequence with ``lax.scan``
(the input products hoisted out of it), and one ``jax.jit`` update step
(``value_and_grad`` plus the SGD update, for dinosaurs with the clipping to
[-5, 5] the original does). float64 throughout, as the hand-written numpy
versions in ``tasks_vs_handwritten.py`` are. The weights and the data are
drawn on the host from the same ``RandomState(seed)`` in the same order as
the hand-written versions (and graphrnn's tasks), so all three compute the
same run; the script checks that the JAX parameters agree with the numpy ones
after a short run before it times anything.

Only training iterations are timed, in the same process, rotating graphrnn
(``graphrnn_run``: its engine from ``$GRAPHRNN_ENGINE``), the hand-written
numpy version and JAX (twice: the plain scan and ``lax.scan(..., unroll=True)``)
``--repeats`` times and keeping the fastest of each.
JAX's compile time (the first calls, one per sequence length for dinosaurs,
whose names have 19 lengths: jit specialises on shapes) is reported apart and
not counted in its iterations. JAX runs asynchronously: its losses stay on
the device until the run ends, and the clock stops after
``block_until_ready`` on the final parameters.

    .venv/bin/python benchmarks/tasks_vs_jax.py --quick                   # a tenth of the iterations
    GRAPHRNN_ENGINE=native .venv/bin/python benchmarks/tasks_vs_jax.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import jax

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import graphrnn  # noqa: E402
from graphrnn import data  # noqa: E402
from tasks_vs_handwritten import FULL, graphrnn_run, hand_run, max_rel_diff  # noqa: E402

AGREE = 200  # iterations after which the JAX and numpy parameters are compared


def _to_numpy(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


# ------------------------------------------------------------------ binary addition
class JaxBinaryAddition:
    """Sigmoid RNN, 16 units, over 8 bits least significant first; one sum per step, SGD 0.1."""

    def __init__(self, seed=0, lr=0.1, hidden=16, bits=8, unroll=1):
        self.seed, self.lr, self.hidden, self.bits = seed, lr, hidden, bits
        self.half = 2 ** (bits - 1)
        self.table = jnp.asarray(data.bit_table(bits))
        table = self.table

        def loss(p, ab):
            xs = jnp.stack([table[ab[0]], table[ab[1]]], axis=-1)  # (T, 2)
            ys = table[ab[0] + ab[1]]                              # (T,)
            xw = xs @ p["W0"]                                      # hoisted: (T, H)

            def step(h, xw_t):
                h = jax.nn.sigmoid(xw_t + h @ p["Wh"])
                return h, h
            _, hs = lax.scan(step, jnp.zeros(hidden, xs.dtype), xw, unroll=unroll)
            out = jax.nn.sigmoid(hs @ p["W1"])[:, 0]
            return 0.5 * jnp.sum((out - ys) ** 2)

        @jax.jit
        def update(p, ab):
            value, g = jax.value_and_grad(loss)(p, ab)
            return jax.tree_util.tree_map(lambda w, d: w - lr * d, p, g), value
        self.update = update

    def start(self):
        rng = np.random.RandomState(self.seed)
        H = self.hidden
        W0 = 2 * rng.random_sample((2, H)) - 1
        W1 = 2 * rng.random_sample((H, 1)) - 1
        Wh = 2 * rng.random_sample((H, H)) - 1
        return rng, {"W0": jnp.asarray(W0), "W1": jnp.asarray(W1), "Wh": jnp.asarray(Wh)}

    def warm(self, iterations):
        _, p = self.start()
        t0 = time.perf_counter()
        jax.block_until_ready(self.update(p, np.array([1, 2])))
        return time.perf_counter() - t0

    def run(self, iterations):
        rng, p = self.start()
        update, half = self.update, self.half
        losses = []
        t0 = time.perf_counter()
        for _ in range(iterations):
            a = rng.randint(half)
            b = rng.randint(half)
            p, value = update(p, np.array([a, b]))
            losses.append(value)
        jax.block_until_ready(p)
        elapsed = time.perf_counter() - t0
        p = _to_numpy(p)
        return elapsed, {"Wx": p["W0"], "Wh": p["Wh"], "out.W": p["W1"]}, [float(v) for v in losses]


# --------------------------------------------------------------------------- primes
class JaxPrimes:
    """lstm_nico: LSTM, 100 units, over the 10 prime windows; loss on h[0]; SGD 0.01.

    The four gates' weights are stacked into one (D, 4H) input and one (H, 4H)
    recurrent matrix, and the input product is taken for all steps before the scan.
    """

    def __init__(self, seed=0, lr=0.01, hidden=100, unroll=1):
        self.seed, self.lr, self.hidden = seed, lr, hidden
        xs, ys = data.primes_sequence()
        self.xs, self.ys = jnp.asarray(xs), jnp.asarray(ys)
        self.D = xs.shape[1]
        H = hidden

        def loss(p, xs, ys):
            xw = xs @ p["Wx"] + p["b"]  # (T, 4H), hoisted

            def step(carry, xw_t):
                h, s = carry
                z = xw_t + h @ p["Wh"]
                g = jnp.tanh(z[:H])
                i = jax.nn.sigmoid(z[H:2 * H])
                f = jax.nn.sigmoid(z[2 * H:3 * H])
                o = jax.nn.sigmoid(z[3 * H:])
                s = g * i + s * f
                h = s * o
                return (h, s), h[0]
            zero = jnp.zeros(H, xs.dtype)
            _, out = lax.scan(step, (zero, zero), xw, unroll=unroll)
            return jnp.sum((out - ys) ** 2)

        @jax.jit
        def update(p, xs, ys):
            value, g = jax.value_and_grad(loss)(p, xs, ys)
            return jax.tree_util.tree_map(lambda w, d: w - lr * d, p, g), value
        self.update = update

    def start(self):
        rng = np.random.RandomState(self.seed)
        D, H = self.D, self.hidden
        W, b = {}, {}
        for g in "gifo":  # the hand-written version's draw order
            W[g] = rng.random_sample((H, D + H)) * 0.2 - 0.1
            b[g] = rng.random_sample(H) * 0.2 - 0.1
        p = {"Wx": np.concatenate([W[g][:, :D].T for g in "gifo"], axis=1),
             "Wh": np.concatenate([W[g][:, D:].T for g in "gifo"], axis=1),
             "b": np.concatenate([b[g] for g in "gifo"])}
        return {k: jnp.asarray(v) for k, v in p.items()}

    def warm(self, iterations):
        p = self.start()
        t0 = time.perf_counter()
        jax.block_until_ready(self.update(p, self.xs, self.ys))
        return time.perf_counter() - t0

    def run(self, iterations):
        p = self.start()
        update, xs, ys = self.update, self.xs, self.ys
        losses = []
        t0 = time.perf_counter()
        for _ in range(iterations):
            p, value = update(p, xs, ys)
            losses.append(value)
        jax.block_until_ready(p)
        elapsed = time.perf_counter() - t0
        p = _to_numpy(p)
        H = self.hidden
        out = {}
        for j, g in enumerate("gifo"):
            cols = slice(j * H, (j + 1) * H)
            out[f"W{g}"] = np.vstack([p["Wx"][:, cols], p["Wh"][:, cols]])
            out[f"b{g}"] = p["b"][cols]
        # The loss the numpy version logs is the forward pass before the update.
        return elapsed, out, [float(v) for v in losses]


# ------------------------------------------------------------------------ dinosaurs
class JaxDinosaurs:
    """Character RNN, 50 tanh units, softmax over 27 symbols, SGD 0.01 with every
    gradient clipped to [-5, 5]; the hidden state carried from name to name."""

    def __init__(self, seed=0, lr=0.01, hidden=50, clip=5.0, unroll=1):
        self.seed, self.lr, self.hidden, self.clip = seed, lr, hidden, clip
        self.V = V = len(data.DINO_CHARS)
        self.names = data.load_dinos()
        # Each name's input and target indices, on the device once (graphrnn's
        # task builds its one-hot examples in its constructor too). Input -1 is
        # the leading zero vector: one_hot(-1) is all zeros.
        self.examples = []
        for name in self.names:
            X, Y = data.dino_indices(name)
            X = [-1 if x is None else x for x in X]
            self.examples.append((jnp.asarray(np.array(X)), jnp.asarray(np.array(Y))))

        def loss(p, a0, X, Y):
            xs = jax.nn.one_hot(X, V, dtype=a0.dtype)       # (T, V)
            xw = xs @ p["Wax"].T + p["b"]                    # hoisted: (T, H)

            def step(a, xw_t):
                a = jnp.tanh(xw_t + p["Waa"] @ a)
                return a, a
            a_last, As = lax.scan(step, a0, xw, unroll=unroll)
            z = As @ p["Wya"].T + p["by"]                   # (T, V)
            logp = jax.nn.log_softmax(z, axis=-1)
            return -jnp.sum(jnp.take_along_axis(logp, Y[:, None], axis=1)), a_last

        @jax.jit
        def update(p, a0, X, Y):
            (value, a_last), g = jax.value_and_grad(loss, has_aux=True)(p, a0, X, Y)
            p = jax.tree_util.tree_map(lambda w, d: w - lr * jnp.clip(d, -clip, clip), p, g)
            return p, a_last, value
        self.update = update

    def start(self):
        rng = np.random.RandomState(self.seed)
        H, V = self.hidden, self.V
        p = {"Wax": rng.randn(H, V) * 0.01, "Waa": rng.randn(H, H) * 0.01,
             "Wya": rng.randn(V, H) * 0.01, "b": np.zeros(H), "by": np.zeros(V)}
        order = np.arange(len(self.names))
        rng.shuffle(order)
        return order, {k: jnp.asarray(v) for k, v in p.items()}

    def warm(self, iterations):
        """Compile once per name length the run will meet; the total seconds."""
        order, p = self.start()
        a0 = jnp.zeros(self.hidden)
        seen = set()
        t0 = time.perf_counter()
        for j in range(min(iterations, len(order))):
            X, Y = self.examples[order[j]]
            if X.shape[0] not in seen:
                seen.add(X.shape[0])
                jax.block_until_ready(self.update(p, a0, X, Y))
        return time.perf_counter() - t0

    def run(self, iterations):
        order, p = self.start()
        update, examples, n = self.update, self.examples, len(order)
        a = jnp.zeros(self.hidden)
        losses = []
        t0 = time.perf_counter()
        for j in range(iterations):
            X, Y = examples[order[j % n]]
            p, a, value = update(p, a, X, Y)
            losses.append(value)
        jax.block_until_ready(p)
        elapsed = time.perf_counter() - t0
        p = _to_numpy(p)
        return elapsed, {"Wx": p["Wax"].T, "Wh": p["Waa"].T, "b": p["b"], "out.W": p["Wya"].T,
                         "out.b": p["by"]}, [float(v) for v in losses]


JAX = {"binary-addition": JaxBinaryAddition, "primes": JaxPrimes, "dinosaurs": JaxDinosaurs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tasks", default=",".join(FULL))
    ap.add_argument("--out", default=None, help="write tasks_jax.{md,json} into this folder")
    args = ap.parse_args(argv)
    engine = os.environ.get("GRAPHRNN_ENGINE", "").strip() or "unset (auto)"
    rows = []
    for name in args.tasks.split(","):
        n = FULL[name] // (10 if args.quick else 1)
        k = min(n, AGREE)
        # Two JAX versions: the plain scan and the scan fully unrolled (a
        # common tuning for short sequences: more to compile, less loop overhead).
        jaxes = {"jax": JAX[name](), "jax_unrolled": JAX[name](unroll=True)}
        compile_s, diff, loss_diff = {}, {}, {}
        _, ph, lh = hand_run(name, k)
        for who, c in jaxes.items():
            compile_s[who] = c.warm(n)
            # Same computation: after a short run the JAX parameters must agree
            # with the hand-written numpy ones to rounding.
            _, pj, lj = c.run(k)
            diff[who] = max_rel_diff(pj, ph)
            loss_diff[who] = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(lj, lh))
            if diff[who] > 1e-10:
                print(f"warning: {name}: after {k} iterations {who} and numpy are {diff[who]:.1e} apart",
                      file=sys.stderr)
        graphrnn_run(name, 10)  # warm-up: the native engine compiles its kernels on first use
        runners = [("graphrnn", graphrnn_run), ("hand", hand_run)]
        runners += [(who, lambda _name, iters, c=c: c.run(iters)) for who, c in jaxes.items()]
        best = {who: float("inf") for who, _ in runners}
        last = {}
        for r in range(args.repeats):
            m = r % len(runners)
            for who, fn in runners[m:] + runners[:m]:  # rotate the order per repeat
                t, _, losses = fn(name, n)
                best[who] = min(best[who], t)
                last[who] = losses
        tail = max(1, n // 10)
        us = {who: 1e6 * t / n for who, t in best.items()}
        row = {"task": name, "iterations": n, "agreement_iterations": k}
        for who in best:
            row[f"{who}_us_per_iteration"] = round(us[who], 1)
        for who in jaxes:
            row[f"{who}_compile_s"] = round(compile_s[who], 3)
            row[f"{who}_over_graphrnn"] = round(best[who] / best["graphrnn"], 3)
            row[f"{who}_max_relative_param_difference_vs_numpy"] = diff[who]
            row[f"{who}_max_relative_loss_difference_vs_numpy"] = loss_diff[who]
        row["hand_over_graphrnn"] = round(best["hand"] / best["graphrnn"], 3)
        for who, v in last.items():
            row[f"final_loss_{who}"] = float(np.mean(v[-tail:]))
        rows.append(row)
        print(f"{name:16s} {n:6d} it  µs/it graphrnn {us['graphrnn']:7.1f}  hand {us['hand']:7.1f}  "
              f"jax {us['jax']:7.1f} (compile {compile_s['jax']:.2f} s)  unrolled "
              f"{us['jax_unrolled']:7.1f} (compile {compile_s['jax_unrolled']:.2f} s)  jax/graphrnn "
              f"{row['jax_over_graphrnn']:.2f} / {row['jax_unrolled_over_graphrnn']:.2f}  "
              f"(vs numpy after {k} it: params {diff['jax']:.1e} / {diff['jax_unrolled']:.1e}, losses "
              f"{loss_diff['jax']:.1e} / {loss_diff['jax_unrolled']:.1e}; final loss g/h/j/ju "
              + " / ".join(f"{row['final_loss_' + w]:.4g}" for w in best) + ")", flush=True)
    meta = {"graphrnn": graphrnn.__version__, "numpy": np.__version__, "jax": jax.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "engine": engine, "quick": args.quick, "repeats": args.repeats,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.out is None:
        return 0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tasks_jax.json"), "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
        f.write("\n")
    lines = ["# graphrnn tasks vs the same tasks in JAX", "",
             f"{meta['machine']}, {meta['cpus']} CPUs (shared), numpy {meta['numpy']}, "
             f"jax {meta['jax']} (CPU, float64), Python {meta['python']}, graphrnn {meta['graphrnn']}, "
             f"GRAPHRNN_ENGINE={meta['engine']}, "
             f"{'--quick (a tenth of the iterations), ' if args.quick else 'full iteration counts, '}"
             f"fastest of {args.repeats}, {meta['date']}. Written by `benchmarks/tasks_vs_jax.py`.", "",
             "Training iterations only, one process, the contenders rotated. JAX: `jit` of the whole "
             "update step (`value_and_grad` of a `lax.scan` loss, SGD, clipping for dinosaurs), "
             "float64, data drawn on the host as the hand-written numpy version draws it; "
             "'unrolled' is the same with `lax.scan(..., unroll=True)`. Compile time (the first "
             "calls: one per name length for dinosaurs) is not in µs/it. 'X/graphrnn' is X's time "
             "over graphrnn's: above 1, graphrnn faster. 'JAX vs numpy' is the max relative "
             "difference of the JAX (scan / unrolled) and hand-written numpy parameters after a "
             "short run from the same weights on the same data.", "",
             "| task | iterations | µs/it graphrnn | µs/it hand numpy | µs/it JAX | µs/it JAX unrolled | "
             "JAX compile (s) | jax/graphrnn | unrolled/graphrnn | hand/graphrnn | JAX vs numpy params | "
             "final loss graphrnn / hand / JAX |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['iterations']} | {r['graphrnn_us_per_iteration']:.0f} | "
            f"{r['hand_us_per_iteration']:.0f} | {r['jax_us_per_iteration']:.0f} | "
            f"{r['jax_unrolled_us_per_iteration']:.0f} | "
            f"{r['jax_compile_s']:.2f} / {r['jax_unrolled_compile_s']:.2f} | "
            f"{r['jax_over_graphrnn']:.2f} | {r['jax_unrolled_over_graphrnn']:.2f} | "
            f"{r['hand_over_graphrnn']:.2f} | "
            f"{r['jax_max_relative_param_difference_vs_numpy']:.1e} / "
            f"{r['jax_unrolled_max_relative_param_difference_vs_numpy']:.1e} ({r['agreement_iterations']} it) | "
            f"{r['final_loss_graphrnn']:.4g} / {r['final_loss_hand']:.4g} / {r['final_loss_jax']:.4g} |")
    with open(os.path.join(args.out, "tasks_jax.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
