"""The classic experiments' headline numbers, as the README quotes them.

    .venv/bin/python benchmarks/classic.py [--ptb-runs runs/ptb-ch6] [--out benchmarks/results]

Runs binary-addition, primes, lstm-toy and dinosaurs with their default (the original
programs') settings in fresh folders, reads the PTB chapter 6 runs of a sweep
folder when one is given (``tasks/ptb_compare.py`` or ``graphrnn sweep``), and
writes ``classic.json``: the figures ``benchmarks/readme.py`` puts into the
README, so the README's numbers are the ones a run produced.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from graphrnn import train

TASKS = ("binary-addition", "primes", "lstm-toy", "dinosaurs")


def run_task(name, folder):
    tr = train.build(name, {}, out=folder, quiet=True)
    if tr.run() != 0:
        raise SystemExit(f"{name} did not finish")
    r = tr.result
    keep = {k: v for k, v in r.items() if k not in ("config", "predictions", "targets")}
    keep["wall_s"] = round(tr.elapsed, 2)
    return keep


def ptb_runs(root):
    """Per cell and rate ("lstm@20"): each seed's validation history and test perplexity."""
    out = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "metrics.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            m = json.load(f)
        if m.get("preset") != "ch6" or m.get("test_perplexity") is None:
            continue
        key = f"{m['cell']}@{m['lr']:g}"
        out.setdefault(key, []).append({"seed": m["seed"], "valid_epoch1": m["valid_history"][0],
                                        "valid_history": m["valid_history"],
                                        "valid": m["valid_perplexity"], "test": m["test_perplexity"],
                                        "seconds_per_epoch": m.get("seconds_per_epoch"),
                                        "clip_fraction": m.get("clip_fraction")})
    return out


def ptb_run(folder):
    """The headline figures of one PTB run (e.g. the cpu preset's)."""
    with open(os.path.join(folder, "metrics.json")) as f:
        m = json.load(f)
    keep = ("cell", "preset", "lr", "final_lr", "seed", "epochs", "valid_history", "valid_perplexity",
            "test_perplexity", "seconds_per_epoch", "clip_fraction")
    return {k: m.get(k) for k in keep} | {"config": {k: m["config"][k] for k in
                                                     ("wordvec", "hidden", "layers", "dropout", "tie")}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ptb-runs", default=None, help="a folder of PTB ch6 runs (one per cell, lr, seed)")
    p.add_argument("--ptb-cpu", default=None, help="the run folder of a finished --preset cpu run")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--skip-tasks", action="store_true", help="keep the classic tasks' numbers already in --out")
    args = p.parse_args(argv)
    path = os.path.join(args.out, "classic.json")
    result = {}
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    if not args.skip_tasks:
        with tempfile.TemporaryDirectory() as tmp:
            for name in TASKS:
                result[name] = run_task(name, os.path.join(tmp, name))
                print(name, {k: result[name][k] for k in train._tasks().get(name).headline})
        result["date_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        result["numpy"] = np.__version__
    if args.ptb_runs:
        result["ptb_ch6"] = ptb_runs(args.ptb_runs)
    if args.ptb_cpu:
        result["ptb_cpu"] = ptb_run(args.ptb_cpu)
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
