"""What a whole ``graphrnn train`` command pays around its iterations: the
parser loads only the command run, the loss curve may be drawn by a child that
ends with the run, and the process leaves without Python's slow teardown but
after its exit handlers."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, *args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(kw.pop("env", {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, **kw)


def test_the_train_parser_does_not_import_what_other_commands_need():
    code = ("import sys, graphrnn.cli as cli; p = cli.build_parser(['train']); "
            "a = p.parse_args(['train', 'primes', '--lr', '0.5']); "
            "print(a.command, a.lr, sorted(m for m in ('hypothesis', 'matplotlib') if m in sys.modules)); "
            "full = cli.build_parser(); print(sorted(full._subparsers._group_actions[0].choices) == sorted(cli.COMMANDS))")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["train 0.5 []", "True"]


def test_the_loss_curve_drawn_by_a_child_is_the_file_and_no_child_is_left(tmp_path):
    code = ("import sys, os, numpy as np; from graphrnn import plots; plots._idle_core = lambda: True\n"
            "c = plots.CurveInChild(); assert c.proc is not None; pid = c.proc.pid\n"
            "c.send(sys.argv[1], np.linspace(3, 1, 500), 'a title'); print(c.result() == sys.argv[1])\n"
            "print('matplotlib' in sys.modules, os.path.exists(f'/proc/{pid}'))\n"
            "d = plots.CurveInChild(); pid = d.proc.pid; d.close()\n"   # a run stopped before its curve
            "print(os.path.exists(f'/proc/{pid}'))\n")
    path = str(tmp_path / "loss.png")
    r = _python(code, path)
    assert r.returncode == 0, r.stderr
    # drawn by the child (this process never loaded matplotlib), and both children gone
    assert r.stdout.splitlines() == ["True", "False False", "False"]
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_child_that_cannot_draw_leaves_the_drawing_and_its_error_to_the_run(tmp_path):
    code = ("import sys, numpy as np; from graphrnn import plots; plots._idle_core = lambda: True\n"
            "c = plots.CurveInChild(); c.send(sys.argv[1], np.ones(10), 't')\n"
            "try:\n    c.result()\nexcept Exception as exc:\n    print(type(exc).__name__)\n")
    r = _python(code, str(tmp_path))   # a folder, not a file: the child fails, then this process says why
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OutputError"


def test_the_command_runs_its_exit_handlers_flushes_and_keeps_its_status(tmp_path):
    out = tmp_path / "run"
    code = ("import atexit, sys; atexit.register(lambda: print('handler ran', file=sys.stderr)); "
            "from graphrnn.cli import command; sys.argv = ['graphrnn'] + sys.argv[1:]; command()")
    r = _python(code, "train", "binary-addition", "--iterations", "3", "--out", str(out),
                env={"GRAPHRNN_ENGINE": "numpy"})
    assert r.returncode == 0, r.stderr
    assert "binary-addition: 3 iterations" in r.stdout and "handler ran" in r.stderr
    assert (out / "metrics.json").exists() and (out / "loss.png").exists()
    again = _python(code, "train", "binary-addition", "--out", str(out))   # the folder holds a run
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_a_log_axis_over_many_decades_labels_its_decades_only():
    """Minor labels (2e-05, 3e-05, ...) over seven decades piled onto each other;
    over one decade they are what the reader reads (200, 300 on a perplexity)."""
    import matplotlib
    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from graphrnn import plots
    labels = {}
    for name, (lo, hi) in {"seven decades": (1e-7, 0.3), "one decade": (80, 600)}.items():
        fig, ax = plt.subplots()
        ax.plot(np.geomspace(hi, lo, 50))
        plots.log_y(ax)
        fig.canvas.draw()
        labels[name] = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()
                        and lo <= t.get_position()[1] <= hi]
        plt.close(fig)
    assert labels["seven decades"] == []
    assert {"200", "300", "500"} <= set(labels["one decade"]), labels


def test_a_core_counts_as_free_when_nothing_else_runs_now_not_over_the_last_minute(monkeypatch):
    from graphrnn import plots
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        assert not plots._idle_core()
        return
    monkeypatch.setattr(plots, "_runnable", lambda: 1)      # this process alone, whatever the load was
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 3.0,) * 3)
    assert plots._idle_core()
    monkeypatch.undo()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        import time
        time.sleep(0.3)
        assert not plots._idle_core()   # every core held: the curve is drawn in-process
    finally:
        for p in busy:
            p.kill()
            p.wait()
