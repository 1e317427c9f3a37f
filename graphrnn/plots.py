"""Small things every graphrnn plot shares."""


def log_y(ax):
    """A log-scale y axis labelled in plain numbers (150, 200), not 1.5 × 10²:
    perplexities and losses are read as numbers."""
    from matplotlib.ticker import FuncFormatter
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


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
