"""Small things every graphrnn plot shares."""
import json
import os
import sys


def log_y(ax):
    """A log-scale y axis labelled in plain numbers (150, 200), not 1.5 × 10²:
    perplexities and losses are read as numbers. Call it once the data is
    plotted: the minor ticks (200, 300, ...) are labelled only where the axis
    spans at most two decades; over more, their labels pile onto each other
    (a primes loss over seven decades: 64 labels) and cost a third of a second
    to draw."""
    import math

    from matplotlib.ticker import FuncFormatter, NullFormatter
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    few = lo > 0 and math.log10(hi / lo) <= 2
    ax.yaxis.set_minor_formatter(plain if few else NullFormatter())


def loss_curve(path, losses, title):
    """The loss of every iteration, faint, with its running mean over 1% of the
    run on top; a log axis when the loss spans more than a factor of 100.
    Written atomically to ``path``; returns it."""
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from .files import save_figure

    y = np.asarray(losses)
    x = np.arange(len(y))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, lw=0.5, alpha=0.35, label="loss per iteration")
    w = max(1, len(y) // 100)
    if w > 1:
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1:], smooth, lw=1.5, label=f"mean of {w}")
    if len(y) and y.min() > 0 and y.max() / y.min() > 100:
        log_y(ax)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


class CurveInChild:
    """``loss_curve`` drawn by a child process that starts with the run, so that
    importing matplotlib (about a second) and drawing overlap the training on
    another core instead of adding to the command's time.

    The child imports matplotlib, then waits on its stdin for the path, the
    title and the losses; ``send`` hands them over, ``result`` waits for the
    file. Nothing outlives the run: ``close`` ends a child that has not drawn
    (a run stopped early), and the child ends by itself when its stdin closes
    (the parent died). A child that cannot start or fails leaves the drawing
    to this process (``loss_curve``, with its errors). Where matplotlib is
    already loaded (a second run in one process) or no core is idle (one core,
    or a machine kept busy: the child's imports would then take the run's own
    share of the CPU, measured slower by ~15% on a loaded 2-core machine),
    there is nothing to overlap, and the curve is drawn here."""

    def __init__(self):
        self.proc = self.sent = None
        if "matplotlib.pyplot" in sys.modules or not _idle_core():
            return
        import subprocess
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, MPLBACKEND="Agg",
                   PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "graphrnn.plots"], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        except OSError:
            self.proc = None

    def send(self, path, losses, title):
        """Start drawing ``losses`` into ``path``."""
        import numpy as np
        self.sent = (path, losses, title)
        if self.proc is None:
            return
        head = json.dumps({"path": os.path.abspath(path), "title": title}).encode() + b"\n"
        try:
            self.proc.stdin.write(head + np.asarray(losses, dtype="<f8").tobytes())
            self.proc.stdin.close()
        except OSError:  # the child is gone: draw here
            self.close()

    def result(self):
        """The path of the drawn curve (drawn here if the child did not)."""
        path, losses, title = self.sent
        if self.proc is not None and self.proc.wait() == 0 and os.path.exists(path):
            self.proc = None
            return path
        self.close()
        return loss_curve(path, losses, title)

    def close(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass


def _idle_core():
    """Is a core free beside this process now?

    On Linux: the threads runnable at this moment (``/proc/loadavg``'s fourth
    field, this process included), the fewest of three looks a millisecond
    apart, fewer than the cores this process may run on. The load over the
    last minute, used before, still counted the user's previous command for a
    minute after it ended, so back-to-back runs drew their curve in-process
    (binary addition 1.45-1.55 s against 1.15-1.33 with the child). Elsewhere,
    that load, below the cores less one."""
    import time
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    try:
        looks = []
        for look in range(3):
            if look:
                time.sleep(0.001)
            looks.append(_runnable())
        return min(looks) < cores
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return load < cores - 1


def _runnable():
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def _child():
    """The child of ``CurveInChild``: import matplotlib while the run trains
    (its stdin read on a thread meanwhile, so the parent never blocks on a
    full pipe), then draw what arrives."""
    import signal
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    got = []
    reader = threading.Thread(target=lambda: got.append(sys.stdin.buffer.read()), daemon=True)
    reader.start()
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot  # noqa: F401  (the import is the part worth overlapping)
    reader.join()
    head, nl, data = got[0].partition(b"\n")
    if not nl or len(data) % 8:
        return 1  # the parent ended before sending: nothing to draw
    req = json.loads(head)
    loss_curve(req["path"], np.frombuffer(data, dtype="<f8"), req["title"])
    return 0


if __name__ == "__main__":
    sys.exit(_child())
