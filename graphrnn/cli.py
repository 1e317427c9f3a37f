"""The ``graphrnn`` command.

Each subcommand has a ``_add_<name>(sub)`` that declares its arguments and a
``_run_<name>(args)`` that does the work, importing what it needs lazily so
``graphrnn --help`` stays fast. Errors a user can cause (bad names, bad sizes,
missing or damaged files, paths that cannot be written) print one line and
exit 2, never a traceback: ``main`` is the one place that turns the errors of
``graphrnn.errors`` into that line.
"""
from __future__ import annotations

import argparse
import sys

from .errors import GraphrnnError, UsageError  # noqa: F401  (UsageError: imported from here too)


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


# ----------------------------------------------------------------------------- demo

def _add_demo(sub):
    p = sub.add_parser("demo", help="declare a cell, check its gradients, train it briefly, draw it")
    p.add_argument("--out", default="runs/demo", help="folder for the diagrams (default runs/demo)")


def _run_demo(args):
    from .demo import demo
    from .files import check_output_folder
    check_output_folder(args.out, "output folder")
    return demo(args.out)


# ------------------------------------------------------------------------ gradcheck

def gradcheck_options():
    """Each option of ``graphrnn gradcheck``: flags, then argparse's keywords. A
    new option is one more row (its default is shown by the help)."""
    from .testing import DIRECTIONS, FULL_LIMIT, SAMPLE
    return [
        (("--input-size",), dict(type=_positive, default=3, metavar="D", help="input width D")),
        (("--hidden-size",), dict(type=_positive, default=4, metavar="H", help="state width H")),
        (("--batch",), dict(type=_positive, default=2, metavar="N", help="sequences per batch N")),
        (("--steps",), dict(type=_positive, default=3, metavar="T",
                            help="time steps T (1 checks one cell step)")),
        (("--seed",), dict(type=int, default=0,
                           help="draws parameters, inputs, loss weights, sampled elements and directions")),
        (("--sample",), dict(type=_positive, default=SAMPLE,
                             help=f"elements checked one by one in each array over {FULL_LIMIT} elements")),
        (("--directions",), dict(type=_positive, default=DIRECTIONS,
                                 help="random directions checked in each array that is sampled")),
        (("--full",), dict(action="store_true",
                           help="check every element of every array (slow for large cells)")),
    ]


def _add_gradcheck(sub):
    from .testing import FULL_LIMIT
    p = sub.add_parser(
        "gradcheck", help="compare a cell's backward with central differences",
        description="Compare the engine's BPTT gradients of a cell with float64 central "
                    f"differences. Arrays of up to {FULL_LIMIT} elements are checked element by "
                    f"element; larger ones at --sample random elements plus --directions random "
                    "directions (seeded by --seed, reported with the results). Exit status 1 when "
                    "a gradient differs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("cell", help="a built-in cell name (rnn, gru, lstm, lstm_nico, mgu) or module:function "
                                "(looked for in the current folder first)")
    for flags, kw in gradcheck_options():
        p.add_argument(*flags, **kw)


def _run_gradcheck(args):
    from .testing import gradcheck_main
    return gradcheck_main(args)


# --------------------------------------------------------------------------- render

def _add_render(sub):
    p = sub.add_parser("render", help="draw a cell, its unrolled form or its backward pass")
    p.add_argument("cell", help="a built-in cell name or module:function (looked for in the "
                                "current folder first)")
    p.add_argument("-o", "--output", default=None,
                   help="file to write (.svg, .png, .pdf, .dot; default CELL[-unrolled][-backward].svg)")
    p.add_argument("--unroll", type=_positive, default=None, metavar="T", help="draw T time steps")
    p.add_argument("--backward", action="store_true", help="draw the gradient flow too")
    p.add_argument("--grad", action="store_true",
                   help="with --unroll: colour each value by the size of its gradient for a random input "
                        "(loss on the last step)")
    p.add_argument("--input-size", type=_positive, default=3, metavar="D", help="default 3")
    p.add_argument("--hidden-size", type=_positive, default=4, metavar="H", help="default 4")


def _run_render(args):
    from .files import check_output_file
    from .render import render_main
    if args.output is not None:
        check_output_file(args.output)
    return render_main(args)


# ---------------------------------------------------------------------------- bench

def _add_bench(sub):
    p = sub.add_parser("bench", help="time forward+backward against hand-written layers (and PyTorch)")
    p.add_argument("--quick", action="store_true", help="tiny and small sizes only, few repeats")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the JSON and markdown results (default runs/bench; "
                        "`make bench-results` refreshes the committed benchmarks/results)")
    p.add_argument("--cells", nargs="+", default=None, help="cells to time (default rnn gru lstm mgu, and ln_lstm at the medium size)")
    p.add_argument("--sizes", nargs="+", default=None, help="tiny, small, medium (default: all, or tiny small with --quick)")
    p.add_argument("--rounds", type=_positive, default=None, help="interleaved rounds per case")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    p.add_argument("--lm", action="store_true",
                   help="time the PTB language model's training step (sizes ch6, better; cells lstm, gru)")
    p.add_argument("--book", default=None, metavar="DIR",
                   help="with --lm: also time the book's own model from a checkout of "
                        "deep-learning-from-scratch-2")


def _run_bench(args):
    from .bench import DEFAULT_OUT
    from .files import check_output_folder
    check_output_folder(args.out or DEFAULT_OUT, "output folder")
    if args.lm:
        from .bench import lm_main
        return lm_main(args)
    from .bench import bench_main
    return bench_main(args)


# ---------------------------------------------------------------------------- train

def _add_train(sub):
    from .train import add_train_arguments
    p = sub.add_parser("train", help="train a cell: a classic experiment, or your own text or sequences")
    add_train_arguments(p)


def _run_train(args):
    from .train import train_main
    return train_main(args)


def _add_sample(sub):
    from .train import add_sample_arguments
    p = sub.add_parser("sample", help="generate from a trained checkpoint")
    add_sample_arguments(p)


def _run_sample(args):
    from .train import sample_main
    return sample_main(args)


def _add_report(sub):
    p = sub.add_parser("report", help="compare finished training runs: report.md and a plot of the curves")
    p.add_argument("folder", metavar="DIR", help="a folder holding run folders (e.g. runs/ptb-ch6)")
    p.add_argument("--spread", type=float, default=None, metavar="X",
                   help="the spread over seeds to weigh a margin against when the runs have one seed each "
                        "(e.g. another sweep's, such as docs/ptb/ch6/report.md's)")


def _run_report(args):
    from .report import write
    if args.spread is not None and not args.spread >= 0:
        raise UsageError(f"--spread must be a number >= 0, not {args.spread}")
    md = write(args.folder, spread=args.spread)
    print(md)
    print(f"wrote {args.folder}/report.md (and the plot it shows)")
    return 0


def _add_sweep(sub):
    from .sweep import add_sweep_arguments
    p = sub.add_parser("sweep", help="a grid of training runs (cells x rates x seeds) on Ray, then the report",
                       description="Train every cell at every learning rate and seed, each a normal run "
                                   "folder under --out, on Ray (locally, or on a cluster with --address); "
                                   "the same --out again skips finished runs and resumes the others.")
    add_sweep_arguments(p)


def _run_sweep(args):
    from .sweep import sweep_main
    return sweep_main(args)


# ---------------------------------------------------------------------- explain

def _add_explain(sub):
    p = sub.add_parser("explain", help="a cell's forward equations and BPTT derivation, line by line",
                       description="Print the forward equations of a cell and its backward pass in the "
                                   "order BPTT runs it, one line per local rule, with the cell's own names.")
    p.add_argument("cell", help="a built-in cell name or module:function (looked for in the current folder first)")
    p.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="plain text (default) or Markdown with LaTeX")
    p.add_argument("-o", "--output", default=None, help="write to this file instead of printing")
    p.add_argument("--input-size", type=_positive, default=3, metavar="D", help="default 3")
    p.add_argument("--hidden-size", type=_positive, default=4, metavar="H", help="default 4")


def _run_explain(args):
    from .explain import explain_main
    if args.output is not None:
        from .files import check_output_file
        check_output_file(args.output)
    return explain_main(args)


def _add_export(sub):
    p = sub.add_parser("export", help="write a cell as a standalone numpy module (a textbook layer)",
                       description="Write a Python module that imports only numpy: the cell as a layer "
                                   "(params, grads, forward, backward) and a Time layer over T steps.")
    p.add_argument("cell", help="a built-in cell name or module:function (looked for in the current folder first)")
    p.add_argument("-o", "--output", default=None, help="the .py file to write (default CELL_cell.py)")
    p.add_argument("--input-size", type=_positive, default=3, metavar="D", help="default 3")
    p.add_argument("--hidden-size", type=_positive, default=4, metavar="H", help="default 4")


def _run_export(args):
    from .export import export_main
    if args.output is not None:
        from .files import check_output_file
        check_output_file(args.output)
    return export_main(args)


def _add_gradflow(sub):
    p = sub.add_parser("gradflow", help="plot how gradients vanish or explode through time (PNG + JSON)",
                       description="For a loss on the last step, plot ‖∂L/∂s_t‖ for every step t and the "
                                   "spectral norm of each step's Jacobian ∂s_{t+1}/∂s_t, one line per cell, "
                                   "on a log axis; the numbers go to a JSON file beside the picture.")
    p.add_argument("--cell", default=None,
                   help="cells, comma-separated: built-in names or module:function (default rnn,gru,lstm; "
                        "with --checkpoint, the run's own cell)")
    p.add_argument("--steps", type=_positive, default=100, metavar="T", help="sequence length (default 100)")
    p.add_argument("--checkpoint", default=None, metavar="RUN",
                   help="a run folder: use its trained parameters instead of the initial ones")
    p.add_argument("--layer", type=int, default=0, help="with --checkpoint: which recurrent layer (default 0)")
    p.add_argument("-o", "--output", default=None, help="the picture (default gradflow.png; JSON beside it)")
    p.add_argument("--seed", type=int, default=0, help="draws the parameters, the input and the loss direction")
    p.add_argument("--input-size", type=_positive, default=8, metavar="D", help="default 8")
    p.add_argument("--hidden-size", type=_positive, default=32, metavar="H", help="default 32")


def _run_gradflow(args):
    from .gradflow import gradflow_main
    if args.output is not None:
        from .files import check_output_file
        check_output_file(args.output)
    return gradflow_main(args)


COMMANDS = ["demo", "gradcheck", "render", "bench", "train", "sample", "report", "sweep", "explain", "export", "gradflow"]


def build_parser(argv=None):
    """The parser of every command, or, when ``argv`` names one first, of that
    one alone: declaring a command's arguments may import what it runs
    (``gradcheck``'s imports Hypothesis), which ``graphrnn train`` should not wait for."""
    parser = argparse.ArgumentParser(
        prog="graphrnn",
        description="Recurrent cells as graphs of primitives: declare, check, draw, train.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    g = globals()
    named = argv[0] if argv and argv[0] in COMMANDS else None
    for name in [named] if named else COMMANDS:
        try:
            g[f"_add_{name}"](sub)
        except ImportError:  # a room not built yet must not break the others
            pass
    return parser


def main(argv=None):
    command = "graphrnn"
    try:
        # Building the parser imports parts of graphrnn: a Ctrl-C there is caught too.
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
        command = f"graphrnn {args.command}"
        rc = globals()[f"_run_{args.command}"](args)
    except GraphrnnError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (a file, a permission, a full disk), not a bug
        print(f"{command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def command():
    """The ``graphrnn`` command (``python -m graphrnn``, the installed script):
    ``main``, then the process ends at once. Python's own teardown after a run
    that loaded numba's compiled code frees LLVM's objects one by one, about a
    second the user waits for and nothing is gained from; so after the exit
    handlers (``atexit``: a build ended, a history written) and a flush of the
    output, the process leaves. A thread still running (one that is not a
    daemon) is waited for the ordinary way."""
    import atexit
    import os
    import threading
    rc = main()
    waiting = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
    if waiting or not isinstance(rc, int):  # sys.exit's own rules for None and messages
        sys.exit(rc)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (graphrnn ... | head): nothing more to say
            pass
    os._exit(rc)


def _os_error_line(exc):
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc)
    return f"{where}: {reason.lower()}" if where else reason


if __name__ == "__main__":
    # run as `python -m graphrnn.cli`: use the package's module so exception classes match
    from graphrnn.cli import main as _main
    sys.exit(_main())
