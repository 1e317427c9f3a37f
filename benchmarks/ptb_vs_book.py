"""Chapter 6's PTB training, graphrnn against the book's own code, side by side.

    .venv/bin/python benchmarks/ptb_vs_book.py BOOK_DIR --data PTB_DIR [--iterations 30] [--rounds 15]
        [--out runs/bench]

BOOK_DIR is a checkout of oreilly-japan/deep-learning-from-scratch-2 (fetch it
yourself; nothing of it is copied here). Both run the ch6 configuration (LSTM,
V = 10,000, D = H = 100, N = 20, T = 35, SGD lr 20, clip 0.25, float32):

- the book: its ``RnnlmTrainer.fit`` over a slice of the corpus that makes
  ``--iterations`` iterations (its batching, ``remove_duplicate``,
  ``clip_grads``, SGD and progress printing, stdout discarded);
- graphrnn: the ``ptb`` task's ``step`` (batching, forward, backward, clip,
  SGD) for the same number of iterations.

Rounds alternate between the two in one process; the medians and their ratio
are reported, and seconds per epoch = seconds per iteration x 1327. The book's
loader is pointed at a temporary folder holding the PTB files, so it never
downloads anything.
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from graphrnn.bench import numpy_blas


def book_trainer(book_dir, data_dir, workdir):
    ch06 = os.path.join(os.path.abspath(book_dir), "ch06")
    if not os.path.isfile(os.path.join(ch06, "rnnlm.py")):
        sys.exit(f"{book_dir}: not a checkout of deep-learning-from-scratch-2 (no ch06/rnnlm.py)")
    sys.path[:0] = [ch06, os.path.dirname(ch06)]
    from common.optimizer import SGD
    from common.trainer import RnnlmTrainer
    from dataset import ptb as book_ptb
    from rnnlm import Rnnlm
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        shutil.copy(os.path.join(data_dir, name), workdir)
    book_ptb.dataset_dir = workdir          # its cache files go there too, not into the checkout
    corpus, word_to_id, _ = book_ptb.load_data("train")
    np.random.seed(0)
    model = Rnnlm(len(word_to_id), 100, 100)
    return RnnlmTrainer(model, SGD(20.0)), corpus


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("book", help="checkout of deep-learning-from-scratch-2")
    p.add_argument("--data", required=True, help="folder of ptb.{train,valid,test}.txt")
    p.add_argument("--iterations", type=int, default=30, help="iterations per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--cell", default="lstm", help="graphrnn's cell (the book's model is an LSTM)")
    p.add_argument("--out", default=os.path.join("runs", "bench"))
    args = p.parse_args(argv)

    from graphrnn import train
    work = tempfile.mkdtemp(prefix="book-ptb-")
    try:
        trainer, corpus = book_trainer(args.book, args.data, work)
        k = args.iterations
        piece = corpus[:k * 20 * 35 + 1]
        ours = train.build("ptb", {"preset": "ch6", "cell": args.cell, "data": args.data},
                           out=os.path.join(work, "run"), quiet=True).task
        times = {"book": [], "graphrnn": []}
        i = 0
        for r in range(args.rounds + 1):          # round 0 warms both up and is not counted
            for name in (("book", "graphrnn") if r % 2 else ("graphrnn", "book")):
                t0 = time.perf_counter()
                if name == "book":
                    with contextlib.redirect_stdout(io.StringIO()):
                        trainer.fit(piece[:-1], piece[1:], max_epoch=1, batch_size=20, time_size=35,
                                    max_grad=0.25, eval_interval=20)
                else:
                    for _ in range(k):
                        ours.step(i)
                        i += 1
                if r:
                    times[name].append((time.perf_counter() - t0) / k)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {n: float(np.median(t)) for n, t in times.items()}
    ratio = med["book"] / med["graphrnn"]
    result = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "iterations": k,
              "rounds": args.rounds, "cell": args.cell, "s_per_iteration": med, "samples": times,
              "s_per_epoch": {n: v * 1327 for n, v in med.items()}, "speedup_of_graphrnn": ratio,
              "numpy_blas": numpy_blas()}
    md = (f"PTB chapter 6 training, {k} iterations x {args.rounds} interleaved rounds, "
          f"{result['date_utc']} UTC, {os.cpu_count()} CPUs, {result['numpy_blas'] or 'BLAS unknown'}.\n\n"
          "| implementation | s / iteration | s / epoch (1327 iterations) |\n|---|---:|---:|\n"
          + "".join(f"| {n} | {med[n]:.4f} | {med[n] * 1327:.1f} |\n" for n in ("book", "graphrnn"))
          + f"\ngraphrnn ({args.cell}) is {ratio:.2f}x as fast as the book's code (goal: at least 2x).\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ptb_vs_book.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "ptb_vs_book.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
