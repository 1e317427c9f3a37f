"""GRU vs LSTM vs the minimal gated unit on PTB, each at its own best learning rate.

    .venv/bin/python tasks/ptb_compare.py [--data DIR] [--out runs/ptb-ch6] [--cells lstm,gru,mgu]
        [--lr 5,10,20] [--seed 0,1] [--preset ch6] [graphrnn sweep options]

The same as ``graphrnn sweep ptb --cell CELLS --lr RATES --seed SEEDS --preset
ch6 --out runs/ptb-ch6``: on Ray when it is installed, else one run after
another (``--sequential``). Each run is a normal ``graphrnn train ptb`` run in
its own folder under --out; finished runs are skipped, interrupted ones
resumed; ``report.md`` and ``perplexity.png`` are written into --out at the
end (docs/sweep.md).
"""
import argparse
import importlib.util
import os
import sys

from graphrnn.cli import main as graphrnn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("runs", "ptb-ch6"))
    p.add_argument("--preset", default="ch6")
    p.add_argument("--cells", default="lstm,gru,mgu")
    p.add_argument("--lr", default="5,10,20")
    p.add_argument("--seed", default="0,1")
    args, rest = p.parse_known_args(argv)
    if importlib.util.find_spec("ray") is None and "--sequential" not in rest:
        rest.append("--sequential")
    return graphrnn(["sweep", "ptb", "--cell", args.cells, "--lr", args.lr, "--seed", args.seed,
                     "--preset", args.preset, "--out", args.out, *rest])


if __name__ == "__main__":
    sys.exit(main())
