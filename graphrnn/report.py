"""A comparison report over many training runs: ``report.md`` and ``perplexity.png``.

Reads every run folder under a directory (``metrics.json`` and
``metrics.jsonl`` as ``graphrnn train`` writes them), groups the runs by cell
and learning rate, and answers the fair question: which cell wins at its own
best learning rate, chosen on validation perplexity, and by how much compared
with the spread over seeds. Runs without ``metrics.json`` (unfinished) are
listed, not used.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from . import files, schema
from .errors import DataError


# What the report reads from a finished run's metrics.json (see graphrnn/schema.py).
RUN_SCHEMA = {
    "cell": schema.TEXT, "lr": schema.NUMBER, "seed": schema.INT, "epochs": schema.COUNT,
    "valid_perplexity": schema.NUMBER, "test_perplexity": schema.NUMBER,
    "valid_history?": [schema.NUMBER], "seconds_per_epoch?": schema.NULLABLE_NUMBER,
    "clip_fraction?": schema.NULLABLE_NUMBER,
}


def load_runs(root):
    """(finished, unfinished): finished runs as dicts of their metrics plus
    ``folder`` and ``curve`` (validation perplexity per epoch); unfinished
    ones as their folders, or for a metrics.json that cannot be used, the
    line saying why (file and field)."""
    done, open_ = [], []
    for dirpath, _dirs, names in sorted(os.walk(root)):
        if "metrics.json" not in names:
            if "checkpoint.json" in names:
                open_.append(dirpath)
            continue
        path = os.path.join(dirpath, "metrics.json")
        try:
            with open(path, encoding="utf-8") as f:
                m = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            open_.append(f"{path}: not readable JSON ({exc})")
            continue
        if not isinstance(m, dict) or m.get("valid_perplexity") is None:
            continue
        try:
            schema.validate(m, RUN_SCHEMA, path, DataError)
        except DataError as exc:
            open_.append(str(exc))
            continue
        m["folder"] = dirpath
        m["train_curve"] = _train_curve(os.path.join(dirpath, "metrics.jsonl"))
        done.append(m)
    return done, open_


def _train_curve(path):
    pts = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line
                if isinstance(r, dict) and isinstance(r.get("iteration"), int) \
                        and isinstance(r.get("train_perplexity"), (int, float)):
                    pts.append((r["iteration"], r["train_perplexity"]))
    except OSError:
        pass
    return pts


def summarize(runs):
    """Per (cell, lr): seeds, valid and test perplexities, seconds per epoch."""
    groups = {}
    for r in runs:
        groups.setdefault((r["cell"], float(r["lr"])), []).append(r)
    rows = []
    for (cell, lr), rs in sorted(groups.items()):
        v = np.array([r["valid_perplexity"] for r in rs])
        t = np.array([r["test_perplexity"] for r in rs])
        rows.append({"cell": cell, "lr": lr, "seeds": sorted(r["seed"] for r in rs),
                     "valid": v, "test": t, "valid_mean": float(v.mean()), "test_mean": float(t.mean()),
                     "s_per_epoch": float(np.mean([r.get("seconds_per_epoch") or math.nan for r in rs])),
                     "clip_fraction": float(np.mean([r.get("clip_fraction", math.nan) for r in rs])),
                     "runs": rs})
    best = {}
    for row in rows:
        if row["cell"] not in best or row["valid_mean"] < best[row["cell"]]["valid_mean"]:
            best[row["cell"]] = row
    return rows, best


def _pm(a):
    if len(a) == 1:
        return f"{a[0]:.1f}"
    return f"{a.mean():.1f} ({a.min():.1f}–{a.max():.1f})"


def markdown(root, rows, best, unfinished, plot_name="perplexity.png"):
    lines = [f"# PTB comparison ({root})", "",
             "Each cell at each learning rate over the seeds run; mean (min–max) over seeds. "
             "The best rate of a cell is chosen on validation perplexity; test perplexity is "
             "reported, never used to choose.", "",
             "| cell | lr | seeds | valid perplexity | test perplexity | s / epoch | clipped steps |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        mark = " **best**" if best.get(r["cell"]) is r else ""
        clip = "" if math.isnan(r["clip_fraction"]) else f"{100 * r['clip_fraction']:.0f}%"
        lines.append(f"| {r['cell']}{mark} | {r['lr']:g} | {','.join(map(str, r['seeds']))} | "
                     f"{_pm(r['valid'])} | {_pm(r['test'])} | {r['s_per_epoch']:.0f} | {clip} |")
    if best:
        order = sorted(best.values(), key=lambda r: r["test_mean"])
        win = order[0]
        lines += ["", "## Each cell at its own best learning rate", "",
                  "| cell | best lr | valid | test | test vs the winner | spread of test over seeds |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in order:
            spread = float(r["test"].max() - r["test"].min())
            lines.append(f"| {r['cell']} | {r['lr']:g} | {_pm(r['valid'])} | {_pm(r['test'])} | "
                         f"{r['test_mean'] - win['test_mean']:+.1f} | {spread:.1f} |")
        lines += ["", verdict(order), ""]
    folders = [u for u in unfinished if os.path.isdir(u)]
    if folders:
        lines += ["Unfinished runs (not counted): " + ", ".join(os.path.relpath(u, root) for u in folders), ""]
    for why in (u for u in unfinished if not os.path.isdir(u)):
        lines += [f"Not counted: {why}", ""]
    lines += [f"![perplexity curves]({plot_name})", ""]
    return "\n".join(lines)


def verdict(order):
    """One sentence: the winner, its margin, and whether the margin exceeds the seeds' spread."""
    win = order[0]
    if len(order) == 1:
        return f"Only {win['cell']} was run."
    second = order[1]
    gap = second["test_mean"] - win["test_mean"]
    spread = max(float(r["test"].max() - r["test"].min()) for r in (win, second))
    clear = "larger" if gap > spread else "not larger"
    n = min(len(win["test"]), len(second["test"]))
    return (f"**{win['cell']}** wins at its own best rate (lr {win['lr']:g}): test perplexity "
            f"{win['test_mean']:.1f} against {second['cell']}'s {second['test_mean']:.1f} (lr {second['lr']:g}), "
            f"a margin of {gap:.1f}, {clear} than the spread over seeds ({spread:.1f}, {n} seeds each).")


def plot(path, best):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for cell, row in sorted(best.items()):
        curves = [[v for v in r.get("valid_history", [])] for r in row["runs"]]
        k = min(len(c) for c in curves)
        if k:
            mean = np.mean([c[:k] for c in curves], axis=0)
            line, = ax1.plot(np.arange(1, k + 1), mean, "o-", label=f"{cell}, lr {row['lr']:g}")
            for c in curves:
                ax1.plot(np.arange(1, len(c) + 1), c, "-", color=line.get_color(), alpha=0.3, lw=0.8)
        for j, r in enumerate(row["runs"]):
            if r["train_curve"]:
                it, ppl = zip(*r["train_curve"])
                ax2.plot(np.asarray(it) / max(it[-1], 1) * r["epochs"], ppl, lw=0.8,
                         color=line.get_color(), alpha=0.8 if j == 0 else 0.35,
                         label=f"{cell}, lr {row['lr']:g}" if j == 0 else None)
    ax1.set_title("validation perplexity (each cell at its best lr)")
    ax1.set_xlabel("epoch")
    ax2.set_title("training perplexity (running)")
    ax2.set_xlabel("epoch")
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax2.set_ylim(top=1000)
    fig.tight_layout()
    try:
        files.save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


def write(root, name="report.md", plot_name="perplexity.png"):
    """Write ``report.md`` and the plot into ``root``; returns the markdown."""
    runs, unfinished = load_runs(root)
    if not runs:
        raise FileNotFoundError(f"no finished runs (metrics.json with a validation perplexity) under {root}")
    rows, best = summarize(runs)
    plot(os.path.join(root, plot_name), best)
    md = markdown(root, rows, best, unfinished, plot_name)
    files.atomic_write(os.path.join(root, name), md)
    return md
