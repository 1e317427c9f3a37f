"""graphrnn's three classic tasks against hand-written numpy versions of the same networks.

The hand-written versions are written the way such programs usually are (the
originals' style): a Python loop over the steps with one small matrix product
per gate, then a monolithic backward loop. They draw their weights and data
from the same ``RandomState(seed)`` in the same order as the graphrnn tasks,
so both sides compute the same run; the script checks that their final
parameters agree before it reports any timing.

Only training iterations are timed (no logging, sampling or evaluation), in
the same process, alternating the two sides ``--repeats`` times and keeping
the fastest of each.

    .venv/bin/python benchmarks/tasks_vs_handwritten.py            # full iteration counts
    .venv/bin/python benchmarks/tasks_vs_handwritten.py --quick    # a tenth of them
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import graphrnn
from graphrnn import data, tasks


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------ binary addition
def hand_binary_addition(iterations, seed=0, lr=0.1, hidden=16, bits=8):
    """iamtrask's program: row vectors, one step at a time, deltas kept in lists."""
    rng = np.random.RandomState(seed)
    W0 = 2 * rng.random_sample((2, hidden)) - 1
    W1 = 2 * rng.random_sample((hidden, 1)) - 1
    Wh = 2 * rng.random_sample((hidden, hidden)) - 1
    table = data.bit_table(bits)
    half = 2 ** (bits - 1)
    losses = []
    for _ in range(iterations):
        a = rng.randint(half)
        b = rng.randint(half)
        c = a + b
        hs = [np.zeros((1, hidden))]
        deltas = []
        loss = 0.0
        for t in range(bits):
            X = np.array([[table[a, t], table[b, t]]])
            h = sigmoid(X @ W0 + hs[-1] @ Wh)
            p = sigmoid(h @ W1)
            deltas.append((p - table[c, t]) * p * (1 - p))
            loss += 0.5 * float((p[0, 0] - table[c, t]) ** 2)
            hs.append(h)
        dW0 = np.zeros_like(W0)
        dW1 = np.zeros_like(W1)
        dWh = np.zeros_like(Wh)
        dnext = np.zeros((1, hidden))
        for t in reversed(range(bits)):
            X = np.array([[table[a, t], table[b, t]]])
            h = hs[t + 1]
            dh = (dnext @ Wh.T + deltas[t] @ W1.T) * h * (1 - h)
            dW1 += h.T @ deltas[t]
            dWh += hs[t].T @ dh
            dW0 += X.T @ dh
            dnext = dh
        W0 -= lr * dW0
        W1 -= lr * dW1
        Wh -= lr * dWh
        losses.append(loss)
    return {"Wx": W0, "Wh": Wh, "out.W": W1}, losses


# --------------------------------------------------------------------------- primes
def hand_primes(iterations, seed=0, lr=0.01, hidden=100):
    """Nico Jimenez's lstm.py: column vectors, one node object's worth of work per step."""
    xs, ys = data.primes_sequence()
    D, H = xs.shape[1], hidden
    rng = np.random.RandomState(seed)
    W, b = {}, {}
    for g in "gifo":  # the graphrnn task's draw order: W then b per gate
        W[g] = rng.random_sample((H, D + H)) * 0.2 - 0.1
        b[g] = rng.random_sample(H) * 0.2 - 0.1
    T = len(ys)
    losses = []
    for _ in range(iterations):
        h = np.zeros(H)
        s = np.zeros(H)
        cache = []
        for t in range(T):
            xc = np.hstack((xs[t], h))
            g = np.tanh(W["g"] @ xc + b["g"])
            i = sigmoid(W["i"] @ xc + b["i"])
            f = sigmoid(W["f"] @ xc + b["f"])
            o = sigmoid(W["o"] @ xc + b["o"])
            s_prev = s
            s = g * i + s_prev * f
            h = s * o
            cache.append((xc, g, i, f, o, s_prev, s, h))
        dW = {k: np.zeros_like(v) for k, v in W.items()}
        db = {k: np.zeros_like(v) for k, v in b.items()}
        dh_next = np.zeros(H)
        ds_next = np.zeros(H)
        for t in reversed(range(T)):
            xc, g, i, f, o, s_prev, s, h = cache[t]
            dh = dh_next.copy()
            dh[0] += 2 * (h[0] - ys[t])
            ds = o * dh + ds_next
            do = s * dh
            di = g * ds
            dg = i * ds
            df = s_prev * ds
            raw = {"i": di * i * (1 - i), "f": df * f * (1 - f), "o": do * o * (1 - o),
                   "g": dg * (1 - g * g)}
            dxc = np.zeros(D + H)
            for k, r in raw.items():
                dW[k] += np.outer(r, xc)
                db[k] += r
                dxc += W[k].T @ r
            ds_next = ds * f
            dh_next = dxc[D:]
        for k in W:
            W[k] -= lr * dW[k]
            b[k] -= lr * db[k]
        losses.append(float(sum((c[7][0] - y) ** 2 for c, y in zip(cache, ys))))
    out = {}
    for k in "gifo":
        out[f"W{k}"] = W[k].T
        out[f"b{k}"] = b[k]
    return out, losses


# ------------------------------------------------------------------------ dinosaurs
def hand_dinosaurs(iterations, seed=0, lr=0.01, hidden=50, clip=5.0):
    """Andrew Ng's "Dinosaurus Island": dicts of column vectors per step, clip, update."""
    V = len(data.DINO_CHARS)
    names = data.load_dinos()
    rng = np.random.RandomState(seed)
    Wax = rng.randn(hidden, V) * 0.01
    Waa = rng.randn(hidden, hidden) * 0.01
    Wya = rng.randn(V, hidden) * 0.01
    b = np.zeros((hidden, 1))
    by = np.zeros((V, 1))
    order = np.arange(len(names))
    rng.shuffle(order)
    a_prev = np.zeros((hidden, 1))
    losses = []
    for j in range(iterations):
        X, Y = data.dino_indices(names[order[j % len(names)]])
        x, a, y_hat = {}, {-1: a_prev}, {}
        loss = 0.0
        for t in range(len(X)):
            x[t] = np.zeros((V, 1))
            if X[t] is not None:
                x[t][X[t]] = 1
            a[t] = np.tanh(Wax @ x[t] + Waa @ a[t - 1] + b)
            z = Wya @ a[t] + by
            e = np.exp(z - z.max())
            y_hat[t] = e / e.sum()
            loss -= np.log(y_hat[t][Y[t], 0])
        dWax, dWaa, dWya = np.zeros_like(Wax), np.zeros_like(Waa), np.zeros_like(Wya)
        db, dby = np.zeros_like(b), np.zeros_like(by)
        da_next = np.zeros_like(a_prev)
        for t in reversed(range(len(X))):
            dy = y_hat[t].copy()
            dy[Y[t]] -= 1
            dWya += dy @ a[t].T
            dby += dy
            da = Wya.T @ dy + da_next
            draw = (1 - a[t] * a[t]) * da
            db += draw
            dWax += draw @ x[t].T
            dWaa += draw @ a[t - 1].T
            da_next = Waa.T @ draw
        for g in (dWax, dWaa, dWya, db, dby):
            np.clip(g, -clip, clip, out=g)
        Wax -= lr * dWax
        Waa -= lr * dWaa
        Wya -= lr * dWya
        b -= lr * db
        by -= lr * dby
        a_prev = a[len(X) - 1]
        losses.append(float(loss))
    return {"Wx": Wax.T, "Wh": Waa.T, "b": b[:, 0], "out.W": Wya.T, "out.b": by[:, 0]}, losses


HAND = {"binary-addition": hand_binary_addition, "primes": hand_primes, "dinosaurs": hand_dinosaurs}
FULL = {"binary-addition": 10_000, "primes": 10_000, "dinosaurs": 35_000}
AGREE = 2000


def graphrnn_run(name, iterations):
    cls = tasks.get(name)
    task = cls(cls.resolve_config({"iterations": iterations}))
    step = task.step
    losses = []
    t0 = time.perf_counter()
    for i in range(iterations):
        losses.append(step(i))
    return time.perf_counter() - t0, task.params, losses


def hand_run(name, iterations):
    t0 = time.perf_counter()
    params, losses = HAND[name](iterations)
    return time.perf_counter() - t0, params, losses


def max_rel_diff(a, b):
    worst = 0.0
    for k in a:
        d = np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()
        worst = max(worst, float(d / (np.abs(np.asarray(b[k])).max() + 1e-12)))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tasks", default=",".join(FULL))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--engine", choices=("numpy", "native"), default="numpy",
                    help="graphrnn's per-step loops (numpy: what `graphrnn train` runs unless told "
                         "--engine native); native writes tasks_native.{md,json}")
    args = ap.parse_args(argv)
    os.environ["GRAPHRNN_ENGINE"] = args.engine
    rows = []
    for name in args.tasks.split(","):
        n = FULL[name] // (10 if args.quick else 1)
        # Same computation: over a short horizon the parameters must agree to
        # rounding. (Over tens of thousands of clipped SGD steps rounding
        # differences grow chaotically, so the long runs are compared by loss.)
        k = min(n, AGREE)
        _, pg, _ = graphrnn_run(name, k)
        _, ph, _ = hand_run(name, k)
        diff = max_rel_diff(pg, ph)
        if diff > 1e-9:
            print(f"warning: {name}: after {k} iterations the two versions are {diff:.1e} apart",
                  file=sys.stderr)
        best_g = best_h = float("inf")
        for _ in range(args.repeats):
            th, ph, lh = hand_run(name, n)
            tg, pg, lg = graphrnn_run(name, n)
            best_h, best_g = min(best_h, th), min(best_g, tg)
        tail = max(1, n // 10)
        row = {"task": name, "iterations": n, "handwritten_s": round(best_h, 3),
               "graphrnn_s": round(best_g, 3), "speedup": round(best_h / best_g, 3),
               "graphrnn_us_per_iteration": round(1e6 * best_g / n, 1),
               "handwritten_us_per_iteration": round(1e6 * best_h / n, 1),
               "agreement_iterations": k, "max_relative_param_difference": diff,
               "final_loss_graphrnn": float(np.mean(lg[-tail:])),
               "final_loss_handwritten": float(np.mean(lh[-tail:]))}
        rows.append(row)
        print(f"{name:16s} {n:6d} it  hand-written {best_h:7.2f} s  graphrnn {best_g:7.2f} s  "
              f"speed-up {best_h / best_g:5.2f}x  (params agree to {diff:.1e} after {k} it; "
              f"mean loss of the last {tail}: {row['final_loss_graphrnn']:.4g} vs "
              f"{row['final_loss_handwritten']:.4g})", flush=True)
    meta = {"graphrnn": graphrnn.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "quick": args.quick,
            "repeats": args.repeats, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "engine": args.engine}
    stem = "tasks" if args.engine == "numpy" else f"tasks_{args.engine}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
        f.write("\n")
    lines = ["# graphrnn tasks vs hand-written numpy", "",
             f"graphrnn engine: {args.engine} (native kernels compile in the agreement run, before timing). "
             f"Training iterations only, same process, fastest of {args.repeats}; "
             f"numpy {meta['numpy']}, Python {meta['python']}, {meta['cpus']} CPUs, {meta['date']}.",
             "Both sides draw the same weights and data. 'params agree' is the max relative "
             "difference of their parameters after a short run (same computation up to rounding); "
             "over the full runs rounding differences grow chaotically, so the full runs are compared "
             "by the mean loss of their last 10% of iterations.", "",
             "| task | iterations | hand-written (s) | graphrnn (s) | speed-up | µs/it graphrnn | µs/it hand | "
             "params agree | final loss graphrnn / hand |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['iterations']} | {r['handwritten_s']:.2f} | {r['graphrnn_s']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['graphrnn_us_per_iteration']:.0f} | "
                     f"{r['handwritten_us_per_iteration']:.0f} | "
                     f"{r['max_relative_param_difference']:.1e} ({r['agreement_iterations']} it) | "
                     f"{r['final_loss_graphrnn']:.4g} / {r['final_loss_handwritten']:.4g} |")
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
