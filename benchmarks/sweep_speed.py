"""A PTB sweep on Ray against the same runs one after another, on this machine.

    .venv/bin/python benchmarks/sweep_speed.py --data DIR [--out runs/sweep-speed] [--lines 8400]
        [--cell lstm,gru,mgu] [--lr 10,20] [--seed 0] [--epochs 1] [--rounds 1]

The issue's goal: ``graphrnn sweep`` (Ray, one CPU and one BLAS thread per
run, as many runs at once as cores) no slower than the same runs one after
another with all cores' BLAS threads each (``--sequential``). Both run the
``ch6`` preset on a slice of PTB (the first ``--lines`` training lines plus one
line of the words they miss, so the vocabulary stays 10,000 and the output
layer, where the work is, keeps its size; the first 300 validation and test
lines). Each round runs both, one after the other, so the ratio of a round
is measured under the same load. Prints per-run times, Ray's start-up, and
each driver's overhead per run (its wall time beyond what its runs took).
"""
import argparse
import json
import os
import subprocess
import sys
import time


def make_slice(src, dst, lines):
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "ptb.train.txt"), encoding="utf-8") as f:
        train = f.readlines()
    head = train[:lines]
    have = {w for ln in head for w in ln.split()}
    missing = sorted({w for ln in train for w in ln.split()} - have)
    with open(os.path.join(dst, "ptb.train.txt"), "w", encoding="utf-8") as f:
        f.writelines(head + ([" ".join(missing) + "\n"] if missing else []))
    for split in ("valid", "test"):
        with open(os.path.join(src, f"ptb.{split}.txt"), encoding="utf-8") as f:
            keep = f.readlines()[:300]
        with open(os.path.join(dst, f"ptb.{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(keep)
    return dst


def runs_of(out):
    rows = []
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if not os.path.exists(os.path.join(folder, "metrics.json")):
            continue
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            m = json.load(f)
        with open(os.path.join(folder, "attempts.jsonl"), encoding="utf-8") as f:
            att = [json.loads(ln) for ln in f if ln.strip()]
        end = [a for a in att if a.get("event") == "finished"][-1]
        start = [a for a in att if a.get("event") == "start"][-1]
        rows.append({"name": name, "wall_s": end["wall_s"], "setup_s": start["setup_s"],
                     "train_s": m["train_s"], "s_per_epoch": m.get("seconds_per_epoch"),
                     "threads": start["threads"]})
    return rows


def sweep(args, data, out, extra):
    cmd = [sys.executable, "-m", "graphrnn", "sweep", "ptb", "--preset", "ch6", "--cell", args.cell,
           "--lr", args.lr, "--seed", args.seed, "--set", f"epochs={args.epochs}", "--data", data,
           "--out", out, "--no-report", *extra]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    with open(os.path.join(out, "sweep.json"), encoding="utf-8") as f:
        how = json.load(f)["last_start"]
    return wall, how, runs_of(out)


def summary(label, wall, how, rows):
    n = len(rows)
    at_once = how["runs_at_once"]
    busy = sum(r["wall_s"] for r in rows) / at_once
    ray = how.get("ray_start_s", 0.0)
    print(f"\n{label}: {n} runs in {wall:.1f} s ({at_once} at once, {rows[0]['threads']} BLAS thread(s) each)")
    print("| run | wall s | setup s | train s | s / epoch |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['wall_s']:.1f} | {r['setup_s']:.1f} | {r['train_s']:.1f} | {r['s_per_epoch']} |")
    over = (wall - busy) / n
    print(f"runs' own time / runs at once: {busy:.1f} s; beyond it: {wall - busy:.1f} s "
          f"({over:.1f} s per run; of it Ray's start-up {ray:.1f} s)")
    return {"wall_s": wall, "busy_s": busy, "overhead_per_run_s": over, "ray_start_s": ray,
            "mean_run_wall_s": sum(r["wall_s"] for r in rows) / n, "runs": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder of the full ptb.{train,valid,test}.txt")
    p.add_argument("--out", default=os.path.join("runs", "sweep-speed"))
    p.add_argument("--lines", type=int, default=8400, help="training lines in the slice (of 42,068)")
    p.add_argument("--cell", default="lstm,gru,mgu")
    p.add_argument("--lr", default="10,20")
    p.add_argument("--seed", default="0")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    data = make_slice(args.data, os.path.join(args.out, "data"), args.lines)
    cores = len(os.sched_getaffinity(0))
    results = []
    for k in range(args.rounds):
        # Odd rounds run Ray first, so a load that drifts during a round favours neither.
        order = ("seq", "ray") if k % 2 == 0 else ("ray", "seq")
        got = {}
        for mode in order:
            if mode == "seq":
                got[mode] = summary(f"round {k + 1}, one after another", *sweep(
                    args, data, os.path.join(args.out, f"seq-{k}"), ["--sequential", "--cpus-per-run", str(cores)]))
            else:
                got[mode] = summary(f"round {k + 1}, graphrnn sweep on Ray", *sweep(
                    args, data, os.path.join(args.out, f"ray-{k}"), []))
        seq, ray = got["seq"], got["ray"]
        ratio = seq["wall_s"] / ray["wall_s"]
        print(f"\nround {k + 1}: sequential {seq['wall_s']:.1f} s / Ray {ray['wall_s']:.1f} s = {ratio:.2f}x "
              f"(> 1: the Ray sweep is faster); a run alone with {cores} threads {seq['mean_run_wall_s']:.1f} s, "
              f"beside another with 1 thread {ray['mean_run_wall_s']:.1f} s")
        results.append({"sequential": seq, "ray": ray, "ratio": ratio})
    with open(os.path.join(args.out, "sweep_speed.json"), "w", encoding="utf-8") as f:
        json.dump({"cores": cores, "args": vars(args), "rounds": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
