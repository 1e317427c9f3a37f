"""A comparison report over many training runs: ``report.md`` and a plot.

Reads every run folder under a directory (``metrics.json`` and
``metrics.jsonl`` as ``graphrnn train`` writes them), groups the runs by cell
and learning rate, and answers the fair question: which cell wins at its own
best learning rate, and by how much compared with the spread over seeds.

What is compared comes from the task. PTB chooses each cell's rate on
validation perplexity and reports test perplexity (``perplexity.png``: the
validation and training curves). The classic tasks have no held-out split:
the rate is chosen on the task's first headline figure (``headline``; higher
is better for accuracies, lower for losses and errors) and the same figure is
reported (``curves.png``: the logged figure against iterations).

Runs without ``metrics.json`` are listed as unfinished, runs that diverged
(``diverged.json``, written by ``graphrnn sweep``) as diverged: a rate at
which any seed diverged is never chosen as a cell's best. Retries of runs in
a sweep (``attempts.jsonl``) are listed with where each resumed.
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import files, plots, runfolder, schema

# Figures where more is better; every other headline figure (losses, errors,
# perplexities) is better lower.
HIGHER_IS_BETTER = {"accuracy", "accuracy_unseen"}
# What the curves plot for each task: the key of its metrics.jsonl records.
# Short column names in the best-rate table.
SHORT = {"valid_perplexity": "valid", "test_perplexity": "test"}
CURVE = {"ptb": "train_perplexity", "text": "train_perplexity", "sequences": "loss", "binary-addition": "error", "primes": "loss",
         "dinosaurs": "smoothed_loss"}


class Judge:
    """How a task's runs are compared: ``select`` picks a cell's best rate,
    ``judge`` is the figure reported and weighed against the seeds' spread."""

    def __init__(self, task):
        self.task = task
        if task == "ptb":
            self.select, self.judge = "valid_perplexity", "test_perplexity"
            self.shown = ("valid_perplexity", "test_perplexity")
        else:
            from . import tasks
            headline = tuple(tasks.get(task).headline)
            self.select = self.judge = headline[0]
            self.shown = headline
        self.higher = self.judge in HIGHER_IS_BETTER

    def better(self, key):
        return 1.0 if key in HIGHER_IS_BETTER else -1.0

    def rank(self, row):
        """Sort key for a cell's rates: best first on ``select``, ties broken by the other figures."""
        keys = (self.select,) + tuple(k for k in self.shown if k != self.select)
        return tuple(-self.better(k) * row["mean"][k] for k in keys)

    def standing(self, row):
        """Sort key for the cells, each at its best rate: best first on ``judge``
        (test perplexity: the rate was chosen on validation, the cells are
        compared on what was held out from both), ties broken by ``select``."""
        keys = (self.judge,) + tuple(k for k in self.shown if k != self.judge)
        return tuple(-self.better(k) * row["mean"][k] for k in keys)


# ----------------------------------------------------------------------------- reading

# What the report reads from a finished PTB run's metrics.json (see graphrnn/schema.py);
# the other tasks' runs need cell, lr, seed and their headline figures.
RUN_SCHEMA = {
    "cell": schema.TEXT, "lr": schema.NUMBER, "seed": schema.INT, "epochs": schema.COUNT,
    "valid_perplexity": schema.NUMBER, "test_perplexity": schema.NUMBER,
    "valid_history?": [schema.NUMBER], "seconds_per_epoch?": schema.NULLABLE_NUMBER,
    "clip_fraction?": schema.NULLABLE_NUMBER,
}


def run_schema(task):
    if task == "ptb":
        return RUN_SCHEMA
    from . import tasks
    from .tasks import TaskError
    try:
        headline = tasks.get(task).headline
    except TaskError:
        headline = ()
    return {"cell": schema.TEXT, "lr": schema.NUMBER, "seed": schema.INT, "train_s?": schema.NULLABLE_NUMBER,
            **{f"{k}?": schema.NULLABLE_NUMBER for k in headline}}


def load_runs(root):
    """(finished, diverged, unfinished) runs under ``root`` (``runfolder.load_runs``),
    each finished run with the curve its task's report plots."""
    return runfolder.load_runs(root, run_schema, lambda task: CURVE.get(task, "loss"))


# ----------------------------------------------------------------------------- summary

def summarize(runs, judge, diverged=()):
    """Rows per (cell, lr) with each shown figure per seed, and each cell's best row."""
    groups = {}
    for r in runs:
        groups.setdefault((r["cell"], float(r["lr"])), []).append(r)
    lost = {}
    for d in diverged:
        lost.setdefault((d["cell"], float(d["lr"])), []).append(d)
        groups.setdefault((d["cell"], float(d["lr"])), [])
    rows = []
    for (cell, lr), rs in sorted(groups.items()):
        vals = {k: np.array([r[k] if r.get(k) is not None else math.nan for r in rs], dtype=float)
                for k in judge.shown}
        rows.append({"cell": cell, "lr": lr, "seeds": sorted(r["seed"] for r in rs), "values": vals,
                     "mean": {k: float(v.mean()) if len(v) else math.nan for k, v in vals.items()},
                     "s_per_epoch": _mean(r.get("seconds_per_epoch") for r in rs),
                     "s_per_run": _mean(r.get("train_s") for r in rs),
                     "clip_fraction": _mean(r.get("clip_fraction") for r in rs),
                     "diverged": sorted(d["seed"] for d in lost.get((cell, lr), [])), "runs": rs})
    best = {}
    for row in rows:
        if row["diverged"] or not row["runs"] or math.isnan(row["mean"][judge.select]):
            continue   # a rate that lost a seed to divergence is not a cell's best
        if row["cell"] not in best or judge.rank(row) < judge.rank(best[row["cell"]]):
            best[row["cell"]] = row
    return rows, best


def _mean(values):
    xs = [float(v) for v in values if v is not None]
    return float(np.mean(xs)) if xs else math.nan


def _pm(a):
    a = a[~np.isnan(a)]
    if len(a) == 0:
        return "—"
    if len(a) == 1:
        return _num(a[0])
    return f"{_num(a.mean())} ({_num(a.min())}–{_num(a.max())})"


def _num(x):
    """Perplexities to one decimal; small figures (accuracies, losses) to 3 significant digits."""
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _spread(row, key):
    v = row["values"][key]
    v = v[~np.isnan(v)]
    return float(v.max() - v.min()) if len(v) else math.nan


# ----------------------------------------------------------------------------- markdown

def markdown(root, rows, best, unfinished, judge, plot_name, diverged=(), runs=(), spread=None):
    names = {k: k.replace("_", " ") for k in judge.shown}
    title = "PTB" if judge.task == "ptb" else judge.task
    if judge.task == "ptb":
        how = ("The best rate of a cell is chosen on validation perplexity; the cells, each at its "
               "best rate, are then compared on test perplexity, which chose nothing.")
    else:
        how = (f"The best rate of a cell is chosen on {names[judge.select]} ({'higher' if judge.higher else 'lower'} "
               "is better), the task's headline figure; this task has no held-out split, so the choice and "
               "the figure reported come from the same runs.")
    timing = "s / epoch" if judge.task == "ptb" else "s / run"
    head = ["cell", "lr", "seeds", *names.values(), timing] + (["clipped steps"] if judge.task == "ptb" else [])
    lines = [f"# {title} comparison ({root})", "",
             f"Each cell at each learning rate over the seeds run; mean (min–max) over seeds. {how}", "",
             "| " + " | ".join(head) + " |",
             "|---|---:|---|" + "---:|" * (len(head) - 3)]
    for r in rows:
        mark = " **best**" if best.get(r["cell"]) is r else ""
        t = r["s_per_epoch"] if judge.task == "ptb" else r["s_per_run"]
        cells = [f"{r['cell']}{mark}", f"{r['lr']:g}", ",".join(map(str, r["seeds"])) or "—"]
        if r["diverged"]:
            cells[2] += f" (diverged: {','.join(map(str, r['diverged']))})"
        cells += [_pm(r["values"][k]) for k in judge.shown]
        cells.append("" if math.isnan(t) else f"{t:.0f}" if t >= 10 else f"{t:.2g}")
        if judge.task == "ptb":
            cells.append("" if math.isnan(r["clip_fraction"]) else f"{100 * r['clip_fraction']:.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        order = sorted(best.values(), key=judge.standing)
        win = order[0]
        short = {k: SHORT.get(k, names[k]) for k in judge.shown}
        sel = [] if judge.select == judge.judge else [judge.select]
        j = short[judge.judge]
        lines += ["", "## Each cell at its own best learning rate", "",
                  "| " + " | ".join(["cell", "best lr", *(short[k] for k in sel), j, f"{j} vs the winner",
                                     f"spread of {j} over seeds"]) + " |",
                  "|---|---:|" + "---:|" * (len(sel) + 3)]
        for r in order:
            vals = [_pm(r["values"][k]) for k in sel + [judge.judge]]
            gap = r["mean"][judge.judge] - win["mean"][judge.judge]
            sp = _spread(r, judge.judge)
            sp = "— (one seed)" if len(r["values"][judge.judge]) < 2 else _unsigned(sp, r["mean"][judge.judge])
            lines.append(f"| {r['cell']} | {r['lr']:g} | " + " | ".join(vals) +
                         f" | {_signed(gap, r['mean'][judge.judge])} | {sp} |")
        lines += ["", verdict(order, judge, spread), ""]
    lines += _faults(root, runs, diverged)
    folders = [u for u in unfinished if os.path.isdir(u)]
    if folders:
        lines += ["Unfinished runs (not counted): " + ", ".join(os.path.relpath(u, root) for u in folders), ""]
    for why in (u for u in unfinished if not os.path.isdir(u)):
        lines += [f"Not counted: {why}", ""]
    lines += [f"![{'perplexity' if judge.task == 'ptb' else judge.task} curves]({plot_name})", ""]
    return "\n".join(lines)


def _signed(x, scale=0.0):
    return ("+" if x >= 0 else "-") + _unsigned(abs(x), scale)


def _unsigned(x, scale=0.0):
    """A difference of figures of size ``scale``: perplexities (scale >= 10) to a
    tenth, or a hundredth below one; small figures (accuracies, losses) to 3 digits."""
    if abs(x) >= 1 or x == 0:
        return f"{x:.1f}"
    return f"{x:.2f}" if scale >= 10 else f"{x:.3g}"


def _faults(root, runs, diverged):
    """Lines on retried and diverged runs: where each retry resumed."""
    out = []
    retried = []
    for r in list(runs) + list(diverged):
        starts = [a for a in r.get("attempts", []) if a.get("event") == "start"]
        if len(starts) > 1:
            at = ", ".join(str(a["start_step"]) for a in starts[1:])
            retried.append(f"{os.path.relpath(r['folder'], root)} ({len(starts) - 1}, resumed at iteration {at})")
    if retried:
        out += ["Runs started again after a failure or an interruption (times, and the checkpoint each "
                "resumed from): " + "; ".join(retried) + ".", ""]
    if diverged:
        out += ["Diverged (the loss or a figure became NaN or inf at the same iteration twice, "
                "the second time resumed from the "
                "last checkpoint): " + "; ".join(f"{os.path.relpath(d['folder'], root)} at iteration "
                                                  f"{d['iteration']}" for d in diverged) + ".", ""]
    return out


def verdict(order, judge, yardstick=None):
    """One sentence: the winner, its margin, and whether the margin exceeds the seeds' spread.

    ``yardstick`` is a spread from elsewhere (another sweep's spread over seeds)
    for runs of one seed each, where this folder has no spread of its own."""
    win = order[0]
    if len(order) == 1:
        return f"Only {win['cell']} was run."
    second = order[1]
    k = judge.judge
    name = k.replace("_", " ")
    gap = abs(second["mean"][k] - win["mean"][k])
    spread = max(_spread(r, k) for r in (win, second))
    n = min(len(win["values"][k]), len(second["values"][k]))
    seeds = f"{n} seed{'s' if n != 1 else ''} each"
    if gap == 0:
        tie = (f"**{win['cell']}** (lr {win['lr']:g}) and **{second['cell']}** (lr {second['lr']:g}) tie on "
               f"{name} at {_num(win['mean'][k])} ({seeds})")
        other = [x for x in judge.shown if x != k and win["mean"][x] != second["mean"][x]]
        if not other:
            return tie + "."
        x = other[0]
        return (tie + f"; on {x.replace('_', ' ')}, the next figure, {win['cell']} is better: "
                f"{_num(win['mean'][x])} against {_num(second['mean'][x])}.")
    figure = "test perplexity" if judge.task == "ptb" else name
    scale = abs(win["mean"][k])
    figures = (f"{figure} {_num(win['mean'][k])} against {second['cell']}'s {_num(second['mean'][k])} "
               f"(lr {second['lr']:g})")
    if n < 2 and yardstick is not None:
        larger = "larger than" if gap > yardstick else "within"
        return (f"**{win['cell']}** is ahead at its own best rate (lr {win['lr']:g}): {figures}, a margin of "
                f"{_unsigned(gap, scale)}, {larger} the spread over seeds given as the yardstick "
                f"({_unsigned(yardstick, scale)}, measured elsewhere: these runs have one seed each).")
    if n < 2:
        return (f"**{win['cell']}** is ahead at its own best rate (lr {win['lr']:g}): {figures}, a margin of "
                f"{_unsigned(gap, scale)}; with one seed per cell there is no spread over seeds to weigh it against.")
    if gap > spread:
        return (f"**{win['cell']}** wins at its own best rate (lr {win['lr']:g}): {figures}, a margin of "
                f"{_unsigned(gap, scale)}, larger than the spread over seeds ({_unsigned(spread, scale)}, {seeds}).")
    return (f"No clear winner: **{win['cell']}** at its best rate (lr {win['lr']:g}) is ahead by "
            f"{_unsigned(gap, scale)} ({figures}), within the spread over seeds ({_unsigned(spread, scale)}, {seeds}).")


# ----------------------------------------------------------------------------- plots

def _axes_style(ax, title, xlabel):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    plots.log_y(ax)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot(path, best):
    """PTB: validation perplexity per epoch and the running training perplexity,
    each cell at its best rate (mean over seeds bold, each seed faint)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for cell, row in sorted(best.items()):
        curves = [list(r.get("valid_history", [])) for r in row["runs"]]
        k = min(len(c) for c in curves)
        color = None
        if k:
            mean = np.mean([c[:k] for c in curves], axis=0)
            line, = ax1.plot(np.arange(1, k + 1), mean, "o-", label=f"{cell}, lr {row['lr']:g}")
            color = line.get_color()
            for c in curves:
                ax1.plot(np.arange(1, len(c) + 1), c, "-", color=color, alpha=0.3, lw=0.8)
        for j, r in enumerate(row["runs"]):
            if r["curve"]:
                it, ppl = zip(*r["curve"])
                ln, = ax2.plot(np.asarray(it) / max(it[-1], 1) * r["epochs"], ppl, lw=0.8,
                               color=color, alpha=0.8 if j == 0 else 0.35,
                               label=f"{cell}, lr {row['lr']:g}" if j == 0 else None)
                color = ln.get_color()
    _axes_style(ax1, "validation perplexity (each cell at its best lr)", "epoch")
    _axes_style(ax2, "training perplexity (running)", "epoch")
    ax2.set_ylim(top=1000)
    return files.save_figure(fig, path)


def plot_curves(path, best, figure):
    """The classic tasks: the logged figure against iterations, each cell at its best rate."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for cell, row in sorted(best.items()):
        color = None
        for j, r in enumerate(row["runs"]):
            if r["curve"]:
                it, y = zip(*r["curve"])
                y = np.maximum(np.asarray(y, dtype=float), 1e-12)   # a log axis has no zero
                ln, = ax.plot(it, y, lw=1.2 if j == 0 else 0.8, color=color, alpha=1.0 if j == 0 else 0.4,
                              label=f"{cell}, lr {row['lr']:g}" if j == 0 else None)
                color = ln.get_color()
    _axes_style(ax, f"{figure.replace('_', ' ')} (each cell at its best lr, every seed)", "iteration")
    return files.save_figure(fig, path)


# ----------------------------------------------------------------------------- writing

def write(root, name="report.md", plot_name=None, spread=None):
    """Write ``report.md`` and the plot into ``root``; returns the markdown.

    ``spread``: the yardstick a one-seed comparison is weighed against (see ``verdict``)."""
    runs, diverged, unfinished = load_runs(root)
    if not runs and not diverged:
        raise FileNotFoundError(f"no finished runs (metrics.json, or diverged.json) under {root}")
    kinds = sorted({r.get("task") or "?" for r in runs + diverged})
    if len(kinds) > 1:
        raise FileNotFoundError(f"{root} holds runs of several tasks ({', '.join(kinds)}); "
                                "report each task's folder on its own")
    judge = Judge(kinds[0])
    rows, best = summarize(runs, judge, diverged)
    if plot_name is None:
        plot_name = "perplexity.png" if judge.task == "ptb" else "curves.png"
    if judge.task == "ptb":
        plot(os.path.join(root, plot_name), best)
    else:
        plot_curves(os.path.join(root, plot_name), best, CURVE.get(judge.task, "loss"))
    md = markdown(root, rows, best, unfinished, judge, plot_name, diverged, runs, spread)
    files.atomic_write(os.path.join(root, name), md)
    return md
