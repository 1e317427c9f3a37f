"""graphrnn sweep: every grid point a run folder, trained on Ray (one local Ray
for the whole module); a killed worker resumes from its checkpoint and costs
at most one checkpoint interval; an interrupted sweep started again skips the
finished runs and resumes the others; a NaN is retried once, then recorded as
diverged; the report for the classic tasks; without Ray, one line saying how
to install it. The Ray tests skip when Ray is not installed (the 'sweep' extra)."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from graphrnn import checkpoint, cli, sweep, train

NEEDS_RAY = "graphrnn sweep's Ray tests need the sweep extra: pip install -e '.[dev,sweep]'"
# A binary-addition run fast enough for tests (about a millisecond an iteration).
ADDITION = ["binary-addition", "--set", "hidden=8"]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray (2 CPUs, as on the machine this was written for) for every
    test of the module: Ray's start-up takes seconds."""
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    pytest.importorskip("ray.tune", reason=NEEDS_RAY)
    sweep._quiet_ray_environment()
    ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


def attempts(folder):
    return sweep.read_jsonl(os.path.join(folder, sweep.ATTEMPTS))


def starts(folder):
    return [a for a in attempts(folder) if a["event"] == "start"]


def metrics(folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def wait_for(predicate, what, poll=0.02):
    """Poll until ``predicate()`` is true. No time limit: a hung sweep hangs the
    test where pytest's own timeout (if any) reports it."""
    while True:
        got = predicate()
        if got:
            return got
        time.sleep(poll)


def checkpoint_step(folder):
    try:
        return checkpoint.read_manifest(str(folder))["step"]
    except Exception:  # noqa: BLE001  (not written yet, or being replaced)
        return -1


# ----------------------------------------------------------------------------- no Ray

def test_without_ray_the_sweep_says_how_to_install_it_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now raises ImportError
    assert cli.main(["sweep", *ADDITION, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'graphrnn[sweep]'" in err and "--sequential" in err
    assert not (tmp_path / "s").exists()


def test_sequential_sweep_needs_no_ray_and_gives_each_run_the_threads_asked_for(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "s"
    assert cli.main(["sweep", *ADDITION, "--cell", "rnn,gru", "--lr", "0.5", "--set", "iterations=200",
                     "--sequential", "--cpus-per-run", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("rnn-lr0.5-s0", "gru-lr0.5-s0"):
        assert metrics(out / name)["iterations"] == 200
        (start,) = starts(out / name)
        assert start["threads"] == 1 and start["pid"] == os.getpid()
        assert f"{name}  finished" in text
    assert "binary-addition comparison" in (out / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.5,fast"], "--lr expects a comma-separated list of floats, got 'fast'"),
    (["--set", "seed=1"], "--set seed=... is the grid's: use --seed"),
    (["--preset", "ch6"], "task 'binary-addition' has no setting 'preset'"),
    (["--cell", "nosuchmodule:cell"], "cannot import module 'nosuchmodule'"),
    (["--cell", "rnn,nosuchcell"], "unknown cell 'nosuchcell'"),
    (["--lr", "0.1,,0.5"], "--lr 0.1,,0.5: an empty item"),
    (["--lr", "0.1,"], "an empty item"),
    (["--seed", "0,1,0"], "--seed 0,1,0: 0 is given twice"),
    (["--cell", "gru,gru"], "gru is given twice"),
    (["--retries", "-1"], "--retries must be >= 0"),
])
def test_bad_grids_are_one_line_before_anything_runs(argv, message, tmp_path, capsys):
    assert cli.main(["sweep", *ADDITION, "--sequential", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv, message", [
    (["--cell", "rnn,nosuchcell"], "unknown cell 'nosuchcell'"),
    (["--lr", "0.1,,0.5"], "an empty item"),
])
def test_a_bad_grid_is_refused_before_ray_starts(argv, message, tmp_path, capsys, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a grid that cannot run")
    monkeypatch.setattr(sweep, "start_ray", no_ray)
    assert cli.main(["sweep", *ADDITION, "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


INDRNN = """
import graphrnn as gr

def indrnn(input_size, hidden_size):
    c = gr.CellBuilder("indrnn")
    x = c.input("x", input_size)
    h = c.state("h", hidden_size)
    W = c.param("W", (input_size, hidden_size))
    u = c.param("u", (hidden_size,))
    c.update(h=gr.tanh(x @ W + h * u))
    return c.build()
"""


def test_a_sweep_imports_user_cells_from_the_current_folder_as_train_does(tmp_path):
    """The installed command (a script, whose own folder is on sys.path, not the
    current one) run from the folder holding mycells.py; nothing adds it to
    sys.path but graphrnn itself."""
    launcher = tmp_path / "bin" / "graphrnn_command.py"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom graphrnn.cli import main\nsys.exit(main())\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "mycells.py").write_text(INDRNN)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, str(launcher), "sweep", *ADDITION, "--cell", "mycells:indrnn,rnn",
                        "--lr", "0.5", "--set", "iterations=20", "--sequential", "--out", "s"],
                       capture_output=True, text=True, env=env, cwd=work)
    assert r.returncode == 0, r.stderr
    assert metrics(work / "s" / "mycells.indrnn-lr0.5-s0")["config"]["cell"] == "mycells:indrnn"


def test_a_folder_holding_another_sweep_or_a_file_is_refused(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main(["sweep", *ADDITION, "--set", "iterations=20", "--sequential", "--out", out]) == 0
    assert cli.main(["sweep", *ADDITION, "--set", "iterations=30", "--sequential", "--out", out]) == 2
    assert "holds a sweep with other settings" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert cli.main(["sweep", *ADDITION, "--sequential", "--out", str(tmp_path / "f")]) == 2
    assert "it is a file" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"[1]", b"\xff\xfe not text", b"{torn"])
def test_a_damaged_sweep_settings_file_is_one_line(tmp_path, capsys, content):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_bytes(content)
    assert cli.main(["sweep", *ADDITION, "--sequential", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "sweep.json" in err and "delete the file" in err


def test_the_sweep_settings_are_on_disk_before_any_run_starts(tmp_path, monkeypatch, capsys):
    """A sweep killed during its first run must still refuse other settings in its folder."""
    from graphrnn import sweep
    out = tmp_path / "s"

    def killed(*a, **k):
        assert json.loads((out / "sweep.json").read_text())["identity"]["iterations"] == 20
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "run_sequential", killed)
    with pytest.raises(KeyboardInterrupt):
        sweep.sweep_main(cli.build_parser().parse_args(
            ["sweep", *ADDITION, "--set", "iterations=20", "--sequential", "--out", str(out)]))
    assert cli.main(["sweep", *ADDITION, "--set", "iterations=30", "--sequential", "--out", str(out)]) == 2
    assert "holds a sweep with other settings" in capsys.readouterr().err


def test_a_run_whose_checkpoint_is_damaged_is_not_retried_and_says_why(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", *ADDITION, "--set", "iterations=20", "--sequential", "--retries", "3", "--out", str(out)]
    assert cli.main(args) == 0
    (name,) = [d.name for d in out.iterdir() if d.is_dir()]
    (out / name / "metrics.json").unlink()                     # unfinished again,
    for manifest in (out / name).glob("checkpoint*.json"):      # with checkpoints that cannot load
        manifest.write_text("{damaged")
    capsys.readouterr()
    assert cli.main(args) == 1
    captured = capsys.readouterr()
    assert "retrying" not in captured.out and f"{name}  failed" in captured.out
    assert f"{name} cannot run:" in captured.err and "checkpoint.json" in captured.err
    assert "run the same command again" not in captured.err


# ----------------------------------------------------------------------------- Ray

def test_every_grid_point_is_a_run_folder_trained_in_a_ray_worker_with_one_blas_thread(
        ray_address, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", *ADDITION, "--cell", "rnn,gru", "--lr", "0.1,0.5", "--set", "iterations=300",
                     "--set", "log_every=100", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    names = ["rnn-lr0.1-s0", "rnn-lr0.5-s0", "gru-lr0.1-s0", "gru-lr0.5-s0"]
    for name in names:
        folder = out / name
        m = metrics(folder)
        assert (m["config"]["cell"], m["config"]["lr"], m["iterations"]) == (name[:3], float(name[6:9]), 300)
        assert checkpoint_step(folder) == 300
        (start,) = starts(folder)
        assert start["threads"] == 1 and start["pid"] != os.getpid()
        # one line per event of the run: started, three log records, finished
        lines = [ln for ln in text.splitlines() if f"] {name} " in ln]
        assert [ln.split(name)[1].split()[0] for ln in lines] == ["started", "running", "running",
                                                                  "running", "finished"], lines
    assert "Traceback" not in text and "raylet" not in text
    md = (out / "report.md").read_text()
    assert md.count("**best**") == 2
    assert "wins at its own best rate" in md or " tie on " in md or "is ahead at its own best rate" in md
    assert (out / "curves.png").stat().st_size > 1000


def test_a_killed_worker_resumes_from_its_checkpoint_and_costs_at_most_one_interval(
        ray_address, tmp_path, capsys):
    every, total = 500, 6000
    out = tmp_path / "s"
    folder = out / "gru-lr0.5-s0"
    seen = {}

    def logged():
        return max((r["iteration"] + 1 for r in sweep.read_jsonl(folder / "metrics.jsonl")), default=0)

    def kill_halfway_between_checkpoints():
        wait_for(lambda: logged() >= 2.5 * every or os.path.exists(folder / "metrics.json"),
                 "two and a half intervals")
        seen["checkpoint"] = checkpoint_step(folder)
        os.kill(starts(folder)[0]["pid"], signal.SIGKILL)
        seen["reached"] = logged()   # how far the killed worker got, read before the retry trims its log

    killer = threading.Thread(target=kill_halfway_between_checkpoints)
    killer.start()
    assert cli.main(["sweep", *ADDITION, "--cell", "gru", "--lr", "0.5", "--set", f"iterations={total}",
                     "--set", "log_every=50", "--checkpoint-every", str(every), "--out", str(out)]) == 0
    killer.join()
    first, second = starts(folder)
    assert first["start_step"] == 0
    resumed = second["start_step"]
    assert resumed >= seen["checkpoint"] >= 2 * every         # from its checkpoint, not from zero
    assert seen["reached"] - resumed <= every                # at most one interval redone
    assert "its worker process died" in capsys.readouterr().out
    # the measured figure (pytest -rP -k killed shows it)
    print(f"killed with checkpoint {seen['checkpoint']} on disk and iteration {seen['reached']} logged; "
          f"resumed at {resumed}: {max(seen['reached'] - resumed, 0)} iterations redone, interval {every}")
    # nothing lost or changed: the result is the uninterrupted run's, bit for bit
    ref = train.build("binary-addition", {"hidden": 8, "cell": "gru", "lr": 0.5, "iterations": total,
                                          "log_every": 50}, out=str(tmp_path / "ref"), quiet=True)
    assert ref.run() == 0
    got = metrics(folder)
    for k in ("final_loss", "accuracy", "error", "iterations"):
        assert got[k] == ref.result[k]


def test_an_interrupted_sweep_started_again_skips_finished_runs_and_resumes_the_others(
        ray_address, tmp_path, capsys):
    """The sweep runs in another process that joins this module's Ray (--address)
    and gets Ctrl-C once two runs finished and a third is under way; started
    again here, it trains only what was left, from the checkpoints."""
    every = 300
    out = tmp_path / "s"
    args = [*ADDITION, "--cell", "rnn,gru", "--lr", "0.1,0.5", "--set", "iterations=4000", "--set",
            "log_every=100", "--checkpoint-every", str(every), "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "graphrnn", "sweep", *args, "--address", ray_address],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    names = ["rnn-lr0.1-s0", "rnn-lr0.5-s0", "gru-lr0.1-s0", "gru-lr0.5-s0"]

    def two_finished_one_under_way():
        if driver.poll() is not None:   # it ended (or failed) before it could be interrupted
            pytest.fail(f"the sweep ended first, status {driver.returncode}:\n{driver.stdout.read()}")
        states = {n: sweep.state_of(out / n) for n in names}
        done = [n for n in names if states[n] == "finished"]
        going = [n for n in names if states[n] == "partial" and checkpoint_step(out / n) >= every]
        return len(done) >= 2 and going and (done, going)

    done, going = wait_for(two_finished_one_under_way, "two finished runs and a third under way")
    driver.send_signal(signal.SIGINT)
    text, _ = driver.communicate()
    assert driver.returncode == 130, text
    assert "stopping; each running run saves a checkpoint" in text
    finished_before = {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in done}
    stopped = {n: attempts(out / n)[-1] for n in names if sweep.state_of(out / n) == "partial"}
    assert set(going) <= set(stopped)
    for n, rec in stopped.items():   # Ctrl-C saved each running run where it was
        assert rec["event"] == "stopped" and rec["checkpoint_step"] == checkpoint_step(out / n) > 0

    assert cli.main(["sweep", *args]) == 0
    text = capsys.readouterr().out
    for n in done:
        assert f"{n}  skipped   finished before" in text
        assert os.stat(out / n / "metrics.json").st_mtime_ns == finished_before[n]
        assert len(starts(out / n)) == 1
    for n, rec in stopped.items():
        assert starts(out / n)[-1]["start_step"] == rec["checkpoint_step"]
        assert f"{n}  resumed   from its checkpoint at iteration {rec['checkpoint_step']}/4000" in text
        assert metrics(out / n)["iterations"] == 4000


def test_a_nan_is_retried_once_from_the_checkpoint_then_the_run_is_recorded_as_diverged(
        ray_address, tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep_expcell.py").write_text(textwrap.dedent("""
        import graphrnn as gr

        def expcell(input_size, hidden_size):   # h' = exp(x Wx + h Wh): overflows at a high rate
            c = gr.CellBuilder("expcell")
            x = c.input("x", input_size)
            h = c.state("h", hidden_size)
            c.update(h=gr.exp(x @ c.param("Wx", (input_size, hidden_size)) + h @ c.param("Wh", (hidden_size, hidden_size))))
            return c.build()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")     # the workers find the module by its folder, not by our cwd
    out = tmp_path / "s"
    assert cli.main(["sweep", "primes", "--cell", "sweep_expcell:expcell,lstm_nico", "--lr", "0.05",
                     "--set", "hidden=8", "--set", "iterations=40", "--set", "log_every=10",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    bad = out / "sweep_expcell.expcell-lr0.05-s0"
    d = json.loads((bad / sweep.DIVERGED).read_text())
    nans = [a for a in attempts(bad) if a["event"] == "nan"]
    assert len(starts(bad)) == 2 and len(nans) == 2           # retried once, not again
    assert [a["step"] for a in nans] == [d["iteration"]] * 2
    assert starts(bad)[1]["start_step"] == nans[0]["checkpoint_step"]
    assert "diverged  the loss or a figure became NaN or inf" in text
    md = (out / "report.md").read_text()
    assert "| sweep_expcell:expcell | 0.05 | — (diverged: 0) |" in md
    assert "**lstm_nico**" in md or "Only lstm_nico was run." in md
    assert "Diverged (the loss or a figure became NaN or inf" in md


def test_ptb_sweep_checkpoints_every_epoch_and_reports_perplexity(ray_address, ptb_slice, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", "ptb", "--cell", "lstm,gru", "--lr", "20", "--data", str(ptb_slice),
                     "--set", "hidden=16", "--set", "wordvec=16", "--set", "epochs=2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("lstm-lr20-s0", "gru-lr20-s0"):
        m = metrics(out / name)
        assert m["epochs"] == 2 and m["test_perplexity"] < m["config"]["vocab_size"]
        for epoch in (1, 2):
            assert re.search(rf"\] {name} +running   epoch {epoch}/2  valid_perplexity \d", text), text
    md = (out / "report.md").read_text()
    assert "| cell | best lr | valid | test | test vs the winner | spread of test over seeds |" in md
    assert "with one seed per cell there is no spread over seeds" in md
    assert (out / "perplexity.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- report

def fake_run(root, task, cell, lr, seed, **figures):
    d = root / f"{cell}-lr{lr}-s{seed}"
    d.mkdir(parents=True)
    m = {"task": task, **figures, "train_s": 2.0, "iterations": 100,
         "config": {"task": task, "cell": cell, "lr": lr, "seed": seed}}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "error": 4.0 / (i + 1)}) + "\n"
                                             for i in (0, 50, 99)))
    return d


def test_report_of_a_classic_task_chooses_on_its_headline_figure_higher_accuracy_wins(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, "binary-addition", "gru", 0.5, seed, accuracy=0.98 + 0.01 * seed,
                 accuracy_unseen=0.9, error=0.1)
        fake_run(tmp_path, "binary-addition", "gru", 0.1, seed, accuracy=0.5, accuracy_unseen=0.5, error=0.01)
        fake_run(tmp_path, "binary-addition", "rnn", 0.5, seed, accuracy=0.60 + 0.02 * seed,
                 accuracy_unseen=0.6, error=2.0)
    bad = tmp_path / "rnn-lr1.0-s0"                  # the best figures, but it diverged at seed 1
    fake_run(tmp_path, "binary-addition", "rnn", 1.0, 0, accuracy=1.0, accuracy_unseen=1.0, error=0.0)
    (tmp_path / "rnn-lr1.0-s1").mkdir()
    (tmp_path / "rnn-lr1.0-s1" / sweep.DIVERGED).write_text(json.dumps(
        {"task": "binary-addition", "iteration": 7, "config": {"cell": "rnn", "lr": 1.0, "seed": 1}}))
    md = sweep_report(tmp_path)
    assert "| gru **best** | 0.5 | 0,1 | 0.985 (0.98–0.99) |" in md
    assert "| rnn **best** | 0.5 | 0,1 | 0.61 (0.6–0.62) |" in md
    assert "| rnn | 1 | 0 (diverged: 1) |" in md and bad.exists()
    assert ("**gru** wins at its own best rate (lr 0.5): accuracy 0.985 against rnn's 0.61 (lr 0.5), "
            "a margin of 0.375, larger than the spread over seeds (0.02, 2 seeds each).") in md
    assert "rnn-lr1.0-s1 at iteration 7" in md
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_report_weighs_a_margin_smaller_than_the_seeds_spread_as_not_larger(tmp_path):
    for seed, (a, b) in enumerate([(0.010, 0.012), (0.030, 0.016)]):
        fake_run(tmp_path, "primes", "lstm_nico", 0.01, seed, loss=a, max_abs_error=0.1)
        fake_run(tmp_path, "primes", "gru", 0.01, seed, loss=b, max_abs_error=0.1)
    md = sweep_report(tmp_path)
    assert ("No clear winner: **gru** at its best rate (lr 0.01) is ahead by 0.006 (loss 0.014 against "
            "lstm_nico's 0.02 (lr 0.01)), within the spread over seeds (0.02, 2 seeds each).") in md


def sweep_report(root):
    from graphrnn import report
    return report.write(str(root))


def test_report_refuses_a_folder_mixing_tasks(tmp_path):
    fake_run(tmp_path, "primes", "gru", 0.01, 0, loss=0.1, max_abs_error=0.1)
    fake_run(tmp_path, "binary-addition", "gru", 0.5, 0, accuracy=1.0, accuracy_unseen=1.0, error=0.1)
    with pytest.raises(FileNotFoundError, match="several tasks"):
        sweep_report(tmp_path)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_set_per_run_and_restored_after(threads, tmp_path):
    import threadpoolctl
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    spec = {"name": "r", "task": "binary-addition", "folder": str(tmp_path / "r"), "threads": threads,
            "overrides": {"cell": "rnn", "lr": 0.5, "seed": 0, "iterations": 10, "hidden": 4}}
    got = []
    sweep.run_point(spec, got.append)
    assert got[0]["event"] == "start" and got[0]["threads"] == threads and got[-1]["event"] == "finished"
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == before
    assert np.isfinite(metrics(tmp_path / "r")["final_loss"])
