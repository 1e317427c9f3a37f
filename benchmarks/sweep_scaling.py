"""Runs per hour against cores for a sweep, simulated from measured run times.

    .venv/bin/python benchmarks/sweep_scaling.py DIR [--runs 18] [--cores 1,2,4,8,16,18,32,64]
        [--scale X] [--start-s S] [--overhead-s O] [--reports-per-run K] [--driver-ms P]
    .venv/bin/python benchmarks/sweep_scaling.py --measure-driver 300    # Tune's cost per report, here

DIR is a finished sweep (``graphrnn sweep``'s ``--out``, or the benchmark's
``ray-0``): each run's wall time (``attempts.jsonl``: from the worker's first
line to ``metrics.json``, evaluation and plots included) is what one run
costs on one core beside others. The simulation replays the grid as Ray Tune
schedules it with one CPU a run: runs start in grid order whenever a core is
free (list scheduling), each paying ``--overhead-s`` (Ray's per-run overhead,
measured by ``sweep_speed.py``), after ``--start-s`` of Ray's start-up.
``--runs`` repeats the measured durations cyclically to the grid size asked
for (the ch6 grid: 18).

Beside the schedule it prints what bounds the speed-up, so a reader sees
which limit is reached first:

- the grid: with one CPU a run, cores beyond the number of runs stay idle;
- the straggler: the makespan is never below the longest run;
- Tune's driver: each report is a synchronous round trip through the driver
  (``--driver-ms`` per report, ``--reports-per-run`` per run), so the driver
  saturates when the cores together report faster than it can answer.
"""
import argparse
import heapq
import json
import os
import sys
import time


def run_walls(folder):
    """Wall seconds of each finished run under ``folder`` (its last attempt)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "attempts.jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            recs = [json.loads(ln) for ln in f if ln.strip()]
        ends = [r for r in recs if r.get("event") == "finished"]
        if ends:
            out[name] = ends[-1]["wall_s"]
    return out


def makespan(durations, cores, overhead, start):
    """Seconds until the last run ends when runs start in order on the first free core."""
    free = [start] * min(cores, len(durations))
    heapq.heapify(free)
    end = start
    for d in durations:
        t = heapq.heappop(free)
        t += overhead + d
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def measure_driver(reports):
    """Milliseconds per ``tune.report`` round trip: 1 and 2 trials that only report."""
    import logging

    import ray
    from ray import tune

    from graphrnn import sweep
    sweep._quiet_ray_environment()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)

    def only_reports(config):
        t = time.perf_counter()
        for i in range(reports):
            tune.report({"i": i})
        tune.report({"i": reports, "loop_s": time.perf_counter() - t})

    import tempfile
    for trials in (1, 2):
        res = tune.Tuner(tune.with_resources(only_reports, {"cpu": 1}),
                         param_space={"x": tune.grid_search(list(range(trials)))},
                         tune_config=tune.TuneConfig(reuse_actors=True),
                         run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
        loop = max(r.metrics["loop_s"] for r in res)
        print(f"{trials} trial(s) reporting {reports} times each: {1000 * loop / reports:.1f} ms a report per "
              f"trial, {1000 * loop / (reports * trials):.1f} ms a report on the driver")
    ray.shutdown()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?")
    p.add_argument("--measure-driver", type=int, default=None, metavar="N",
                   help="instead: time N reports of trials that do nothing else")
    p.add_argument("--runs", type=int, default=None, help="grid size (default: the runs measured)")
    p.add_argument("--cores", default="1,2,4,8,16,18,32,64")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply each measured run's time (e.g. 19.8: 1-epoch runs on a 268-iteration slice "
                        "to the ch6 preset's 4 epochs of 1327)")
    p.add_argument("--start-s", type=float, default=5.0, help="Ray's start-up (measured: sweep.json)")
    p.add_argument("--overhead-s", type=float, default=1.0, help="Ray's overhead per run")
    p.add_argument("--reports-per-run", type=float, default=None,
                   help="reports a run sends (default: the epochs of the measured runs, plus 2)")
    p.add_argument("--driver-ms", type=float, default=5.0, help="driver time per report")
    args = p.parse_args(argv)
    if args.measure_driver:
        return measure_driver(args.measure_driver)
    if not args.folder:
        p.error("name a sweep folder, or --measure-driver N")
    walls = run_walls(args.folder)
    if not walls:
        print(f"no finished runs with attempts.jsonl under {args.folder}", file=sys.stderr)
        return 2
    measured = [w * args.scale for w in walls.values()]
    n = args.runs or len(measured)
    durations = [measured[i % len(measured)] for i in range(n)]
    reports = args.reports_per_run
    if reports is None:
        with open(os.path.join(args.folder, next(iter(walls)), "metrics.json"), encoding="utf-8") as f:
            reports = json.load(f).get("epochs", 10) + 2
    longest = max(durations)
    one = makespan(durations, 1, args.overhead_s, args.start_s)
    print(f"{n} runs, each {min(measured):.0f}-{longest:.0f} s (measured: {len(measured)} runs in {args.folder}); "
          f"Ray start-up {args.start_s:.1f} s, {args.overhead_s:.1f} s per run\n")
    print("| cores | makespan s | runs per hour | speed-up over 1 core | efficiency | driver busy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in (int(x) for x in args.cores.split(",")):
        t = makespan(durations, c, args.overhead_s, args.start_s)
        rate = min(c, n) * reports / (sum(durations) / n)   # reports per second at full speed
        busy = rate * args.driver_ms / 1000
        print(f"| {c} | {t:.0f} | {3600 * n / t:.1f} | {one / t:.2f} | {one / t / c:.0%} | {busy:.1%} |")
    print(f"\nbounds: no more than {n} cores are used (one CPU a run; --cpus-per-run > 1 spends the rest on BLAS "
          f"threads); the makespan is at least the longest run, {longest:.0f} s, plus start-up; the "
          f"driver answers every report, {args.driver_ms:g} ms each: it would be saturated at about "
          f"{1000 / args.driver_ms / (reports / (sum(durations) / n)):.0f} runs at once.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
