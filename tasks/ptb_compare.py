"""GRU vs LSTM vs the minimal gated unit on PTB, each at its own best learning rate.

    .venv/bin/python tasks/ptb_compare.py --data DIR [--out runs/ptb-ch6] [--cells lstm,gru,mgu]
        [--lr 5,10,20] [--seed 0,1] [--preset ch6]

Runs the grid one run after another (each a normal ``graphrnn train ptb`` run
in its own folder under --out), skips runs that finished, resumes runs that
were interrupted, and writes ``report.md`` and ``perplexity.png`` into --out
(``graphrnn.report``). docs/ptb.md's comparison table comes from this script.
"""
import argparse
import os
import sys
import time

from graphrnn import report, train
from graphrnn.checkpoint import MANIFEST


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="folder of ptb.{train,valid,test}.txt")
    p.add_argument("--out", default=os.path.join("runs", "ptb-ch6"))
    p.add_argument("--preset", default="ch6")
    p.add_argument("--cells", default="lstm,gru,mgu")
    p.add_argument("--lr", default="5,10,20")
    p.add_argument("--seed", default="0,1")
    args = p.parse_args(argv)
    grid = [(c, float(lr), int(s)) for c in args.cells.split(",") for lr in args.lr.split(",")
            for s in args.seed.split(",")]
    for k, (cell, lr, seed) in enumerate(grid, 1):
        folder = os.path.join(args.out, f"{cell}-lr{lr:g}-s{seed}")
        if os.path.exists(os.path.join(folder, "metrics.json")):
            print(f"[{k}/{len(grid)}] {folder}: done before", flush=True)
            continue
        t0 = time.perf_counter()
        if os.path.exists(os.path.join(folder, MANIFEST)):
            tr = train.resume(folder, quiet=True)
        else:
            tr = train.build("ptb", {"preset": args.preset, "cell": cell, "lr": lr, "seed": seed,
                                     "data": args.data}, out=folder, quiet=True)
        rc = tr.run()
        if rc != 0:
            return rc
        r = tr.result
        print(f"[{k}/{len(grid)}] {folder}: valid {r['valid_perplexity']:.1f} test {r['test_perplexity']:.1f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    md = report.write(args.out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
