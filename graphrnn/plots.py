"""Small things every graphrnn plot shares."""


def log_y(ax):
    """A log-scale y axis labelled in plain numbers (150, 200), not 1.5 × 10²:
    perplexities and losses are read as numbers."""
    from matplotlib.ticker import FuncFormatter
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
