"""Whole commands as a user types them: ``graphrnn train TASK`` (default flags,
no environment variables) against the hand-written program of the same task.

Each round runs, as new processes, one after the other: the hand-written
program (``tasks_vs_handwritten.py``'s numpy version of the original, full
iteration count, Python start-up and imports included, as a user would run
it), ``graphrnn train TASK`` with the disk cache warm, and (with ``--cold``)
``graphrnn train TASK`` with an empty cache (``GRAPHRNN_CACHE_DIR`` a fresh
folder: every compile in that run). Rounds interleave the contenders; the
table gives medians. The BLAS the processes load is named (threadpoolctl).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/whole_commands.py --rounds 3 --cold
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASKS = ("binary-addition", "primes", "dinosaurs")
HAND = ("import sys; sys.path.insert(0, {here!r}); from tasks_vs_handwritten import FULL, HAND; "
        "HAND[{name!r}](FULL[{name!r}])")


def _env(cache):
    # PYTHONDONTWRITEBYTECODE is this sandbox's, not a user's: with it every command
    # compiled graphrnn's own modules from source again (imports 0.30-0.44 s against 0.23-0.26)
    drop = ("GRAPHRNN_ENGINE", "GRAPHRNN_BACKGROUND_BUILD", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["GRAPHRNN_CACHE_DIR"] = cache
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _time(cmd, env):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return took, out.stderr


def blas():
    from threadpoolctl import threadpool_info
    import numpy  # noqa: F401
    return [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--cold", action="store_true", help="also time a first run with an empty cache")
    ap.add_argument("--out", default=None, help="write whole_commands.{md,json} into this folder")
    args = ap.parse_args(argv)
    py = sys.executable
    graphrnn = [py, "-m", "graphrnn"]
    warm_cache = tempfile.mkdtemp(prefix="graphrnn-warm-")
    results = {}
    for name in args.tasks.split(","):
        # fill the warm cache (its first run is a cold one: kept as a cold sample)
        runs = tempfile.mkdtemp(prefix="graphrnn-runs-")
        first, _ = _time(graphrnn + ["train", name, "--quiet", "--out", os.path.join(runs, "w0")], _env(warm_cache))
        times = {"hand": [], "warm": [], "cold": [first]}
        notes = ""
        for r in range(args.rounds):
            times["hand"].append(_time([py, "-c", HAND.format(here=HERE, name=name)], _env(warm_cache))[0])
            times["warm"].append(_time(graphrnn + ["train", name, "--quiet", "--out",
                                                   os.path.join(runs, f"w{r + 1}")], _env(warm_cache))[0])
            if args.cold:
                cold = tempfile.mkdtemp(prefix="graphrnn-cold-")
                took, err = _time(graphrnn + ["train", name, "--quiet", "--out", os.path.join(runs, f"c{r}")],
                                  _env(cold))
                times["cold"].append(took)
                notes = " / ".join(ln.split("graphrnn: ")[-1] for ln in err.splitlines() if "compiled in" in ln)
                shutil.rmtree(cold, ignore_errors=True)
        shutil.rmtree(runs, ignore_errors=True)
        med = {k: statistics.median(v) for k, v in times.items() if v}
        results[name] = {"seconds": times, "median": med, "compile": notes}
        print(f"{name}: hand {med['hand']:.2f} s, graphrnn warm {med['warm']:.2f} s "
              f"({med['hand'] / med['warm']:.2f}x), cold {med['cold']:.2f} s ({med['hand'] / med['cold']:.2f}x) "
              f"{notes}", flush=True)
    shutil.rmtree(warm_cache, ignore_errors=True)
    kernels = blas()
    lines = ["# Whole commands: `graphrnn train TASK` (default flags) vs the hand-written program", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs (shared); "
             f"BLAS: {'; '.join(kernels)}. Medians of {args.rounds} interleaved rounds (cold: "
             "the cache-filling run plus one per round). Written by `benchmarks/whole_commands.py`.", "",
             "| task | hand-written (s) | graphrnn warm (s) | hand / warm | graphrnn cold (s) | hand / cold |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        m = r["median"]
        lines.append(f"| {name} | {m['hand']:.2f} | {m['warm']:.2f} | {m['hand'] / m['warm']:.2f}x | "
                     f"{m['cold']:.2f} | {m['hand'] / m['cold']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "whole_commands.md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.out, "whole_commands.json"), "w") as f:
            json.dump({"blas": kernels, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
