"""The trainer: exact resume, Ctrl-C, NaN stop, refused checkpoints, CLI errors."""
import json
import os
import signal
import sys

import numpy as np
import pytest

from graphrnn import checkpoint, cli, train
from graphrnn.checkpoint import CheckpointError

SMALL = {
    "binary-addition": {"iterations": 160, "log_every": 40},
    "dinosaurs": {"iterations": 160, "log_every": 40, "hidden": 12, "samples": 2},
    "primes": {"iterations": 160, "log_every": 40, "hidden": 8, "optimizer": "adam", "lr": 0.01},
    "lstm-toy": {"iterations": 160, "log_every": 40, "hidden": 10},
}


def trainer(name, out, **kw):
    return train.build(name, dict(SMALL[name]), out=str(out), quiet=True, **kw)


def interrupt_at(tr, k):
    """Deliver a real SIGINT (Ctrl-C) while iteration k runs."""
    step = tr.task.step

    def wrapped(i):
        if i == k:
            os.kill(os.getpid(), signal.SIGINT)
        return step(i)
    tr.task.step = wrapped


def log_lines(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(ln) for ln in f]


@pytest.mark.parametrize("engine", ["numpy", "default"])
@pytest.mark.parametrize("name", list(SMALL))
def test_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_ends(tmp_path, name, engine, monkeypatch):
    if engine == "default":  # no flag, no $GRAPHRNN_ENGINE: native where numba is installed
        monkeypatch.delenv("GRAPHRNN_ENGINE", raising=False)
    whole = trainer(name, tmp_path / "whole")
    if engine == "default":
        from graphrnn.emit import numba_runtime
        assert whole.engine == ("native" if numba_runtime.numba_available() else "numpy")
    assert whole.run() == 0

    part = trainer(name, tmp_path / "part", checkpoint_every=25)
    interrupt_at(part, 97)
    assert part.run() == 130          # Ctrl-C: checkpoint, message, exit status 130
    manifest = checkpoint.read_manifest(str(tmp_path / "part"))
    assert manifest["step"] == 98     # the iteration under way was finished first
    assert not os.path.exists(tmp_path / "part" / "metrics.json")

    monkeypatch.setenv("GRAPHRNN_ENGINE", "numpy" if engine == "default" else "auto")
    again = train.resume(str(tmp_path / "part"), quiet=True)  # the recorded engine, not $GRAPHRNN_ENGINE
    assert again.engine == whole.engine == manifest["engine"]
    assert again.step == 98
    assert again.run() == 0

    for k, v in whole.task.params.items():
        assert np.array_equal(v, again.task.params[k]), k
    assert whole.losses == again.losses
    assert log_lines(tmp_path / "whole") == log_lines(tmp_path / "part")
    a = json.load(open(tmp_path / "whole" / "metrics.json"))
    b = json.load(open(tmp_path / "part" / "metrics.json"))
    for d in (a, b):
        d.pop("train_s")
        d.pop("iterations_per_s")
    assert a == b
    assert os.path.getsize(tmp_path / "part" / "loss.png") > 1000


def test_a_checkpoint_saved_mid_run_carries_the_time_spent_so_far(tmp_path):
    """A run killed after a periodic checkpoint resumes with the loop time up to
    it (it once kept only earlier segments' time: 0 s, and a wrong s/epoch)."""
    import time
    tr = trainer("binary-addition", tmp_path, checkpoint_every=25)
    step, seen = tr.task.step, {}

    def slow(i):
        time.sleep(0.005)
        if i == 60:
            seen["elapsed"] = checkpoint.read_manifest(str(tmp_path))["elapsed_s"]
        return step(i)
    tr.task.step = slow
    assert tr.run() == 0
    assert seen["elapsed"] >= 50 * 0.005          # the checkpoint at 50 counts 50 sleeps
    assert json.load(open(tmp_path / "metrics.json"))["train_s"] >= 160 * 0.005


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    tr = trainer("primes", tmp_path / "r", checkpoint_every=10)
    step = tr.task.step
    tr.task.step = lambda i: float("nan") if i == 33 else step(i)
    with pytest.raises(train.TrainingError, match=r"became nan at iteration 33.*iteration 30"):
        tr.run()
    manifest, arrays = checkpoint.load(str(tmp_path / "r"))
    assert manifest["step"] == 30
    assert all(np.isfinite(a).all() for a in arrays.values())
    again = train.resume(str(tmp_path / "r"), quiet=True)
    assert again.step == 30 and again.run() == 0


def test_nan_stop_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    from graphrnn.tasks import primes
    real = primes.Primes.step
    monkeypatch.setattr(primes.Primes, "step", lambda self, i: float("inf") if i == 5 else real(self, i))
    rc = cli.main(["train", "primes", "--hidden", "4", "--iterations", "20", "--out",
                   str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "became inf at iteration 5" in err and "Traceback" not in err


def test_checkpoint_for_another_model_is_refused_naming_the_difference(tmp_path):
    out = tmp_path / "r"
    assert trainer("dinosaurs", out).run() == 0
    path = out / "checkpoint.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["hidden"] = 13
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"'Wx' has shape \(27, 12\), expected \(27, 13\)"):
        train.resume(str(out))
    manifest["config"]["hidden"] = 12
    manifest["config"]["cell"] = "gru"
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"'Wh' has shape \(12, 12\), expected \(12, 36\)"):
        train.resume(str(out))


def test_arrays_that_differ_from_the_manifest_are_refused(tmp_path):
    out = tmp_path / "r"
    assert trainer("dinosaurs", out, keep=1).run() == 0
    manifest = checkpoint.read_manifest(str(out))
    npz = out / manifest["arrays_file"]
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/Wh"] = arrays["param/Wh"].astype(np.float32)
    del arrays["param/out.b"]
    np.savez(npz, **arrays)
    with pytest.raises(CheckpointError, match=r"missing 'param/out.b'.*'param/Wh' has dtype float32, "
                                              r"expected float64"):
        train.resume(str(out))
    rc = cli.main(["sample", "dinosaurs", "--checkpoint", str(out)])
    assert rc == 2


def test_checkpoint_files_are_complete_and_never_pickled(tmp_path):
    checkpoint.save(str(tmp_path), 1, {"a": np.arange(3.0)}, {"config": {}}, keep=1)
    checkpoint.save(str(tmp_path), 2, {"a": np.arange(4.0)}, {"config": {}}, keep=1)
    files = sorted(os.listdir(tmp_path))
    assert files == ["checkpoint-00000002.npz", "checkpoint.json"]  # no temporaries, old one gone
    manifest, arrays = checkpoint.load(str(tmp_path))
    assert manifest["step"] == 2 and arrays["a"].tolist() == [0, 1, 2, 3]
    with pytest.raises(CheckpointError, match="object"):
        checkpoint.save(str(tmp_path), 3, {"b": np.array([{}, 1], dtype=object)}, {"config": {}})
    assert checkpoint.load(str(tmp_path))[0]["step"] == 2


def test_cli_train_writes_the_run_folder_and_sample_reads_it(tmp_path, capsys):
    out = str(tmp_path / "dino")
    rc = cli.main(["train", "dinosaurs", "--iterations", "30", "--log-every", "10", "--hidden", "8",
                   "--out", out, "--quiet"])
    assert rc == 0
    summary = capsys.readouterr().out
    assert "smoothed_loss" in summary and out in summary
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["config"]["hidden"] == 8 and m["iterations"] == 30 and np.isfinite(m["smoothed_loss"])
    assert [r["iteration"] for r in log_lines(out)] == [0, 10, 20]
    assert os.path.exists(os.path.join(out, "loss.png"))
    assert cli.main(["sample", "dinosaurs", "--checkpoint", out, "-n", "5", "--seed", "3"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert len(names) == 5
    # more iterations on resume extend the run
    assert cli.main(["train", "--resume", out, "--iterations", "40", "--quiet"]) == 0
    assert json.load(open(os.path.join(out, "metrics.json")))["iterations"] == 40


@pytest.mark.parametrize("argv, message", [
    (["train", "nope"], "unknown task 'nope'"),
    (["train", "primes", "--cell", "nope"], "unknown cell 'nope'"),
    (["train", "primes", "--hidden", "-3"], "hidden must be a positive integer, got -3"),
    (["train", "primes", "--iterations", "0"], "iterations must be a positive integer, got 0"),
    (["train", "primes", "--lr", "-0.1"], "lr must be a positive number"),
    (["train", "primes", "--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["train", "dinosaurs", "--data", "/no/such/file.txt"], "dinosaur name file not found"),
    (["train", "--resume", "/no/such/run"], "no run folder"),
    (["train"], "name a task"),
    (["sample", "dinosaurs", "--checkpoint", "/no/such/run"], "no run folder"),
    (["sample", "nope", "--checkpoint", "x"], "unknown task 'nope'"),
    (["sample", "dinosaurs", "--checkpoint", "x", "-n", "-1"], "-n must be >= 0"),
])
def test_bad_input_gets_one_clear_line_not_a_traceback(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_malformed_data_file_and_wrong_resume_settings_are_named(tmp_path, capsys):
    bad = tmp_path / "names.txt"
    bad.write_text("abc\nx-y\n")
    assert cli.main(["train", "dinosaurs", "--data", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "line 2" in capsys.readouterr().err
    out = str(tmp_path / "b")
    assert cli.main(["train", "primes", "--hidden", "4", "--iterations", "3", "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--hidden", "5"]) == 2
    assert "a resumed run keeps what defines its model and data" in capsys.readouterr().err
    assert cli.main(["train", "dinosaurs", "--resume", out]) == 2
    assert "is a 'primes' run" in capsys.readouterr().err
    assert cli.main(["train", "primes", "--out", out]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(["sample", "primes", "--checkpoint", out]) == 2
    assert "nothing to sample" in capsys.readouterr().err


def test_ctrl_c_on_the_command_saves_and_the_run_resumes(tmp_path):
    import subprocess
    import sys
    out = str(tmp_path / "run")
    cmd = [sys.executable, "-c", "import sys; from graphrnn.cli import main; sys.exit(main(sys.argv[1:]))",
           "train", "dinosaurs", "--hidden", "8", "--iterations", "100000000", "--log-every", "50",
           "--out", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()          # training has started
    assert first.startswith("iteration 0:")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "checkpoint saved at iteration" in err and "--resume" in err and "Traceback" not in err
    step = checkpoint.read_manifest(out)["step"]
    assert step >= 1
    again = train.resume(out, {"iterations": step + 5}, quiet=True)
    assert again.run() == 0 and again.step == step + 5


# ------------------------------------------------------------------ resuming

def test_a_torn_last_log_line_is_dropped_and_the_run_goes_on(tmp_path, capsys):
    out = tmp_path / "r"
    part = trainer("primes", out, checkpoint_every=20)
    interrupt_at(part, 50)
    assert part.run() == 130
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 60, "lo')          # a crash in the middle of a write
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert "dropped 1 torn line" in capsys.readouterr().err
    recs = log_lines(out)                          # every line parses again
    assert [r["iteration"] for r in recs] == [0, 40, 80, 120]


def test_resume_takes_a_new_learning_rate_and_records_it(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["train", "primes", "--hidden", "4", "--iterations", "6", "--log-every", "2",
                     "--out", out, "--quiet"]) == 0
    assert cli.main(["train", "--resume", out, "--iterations", "10", "--lr", "0.002", "--quiet"]) == 0
    m = checkpoint.read_manifest(out)
    assert m["config"]["lr"] == 0.002 and m["optimizer"]["lr"] == 0.002
    assert m["resumes"] == [{"step": 6, "changed": {"iterations": [6, 10], "lr": [0.01, 0.002]}}]
    event = [r for r in log_lines(out) if r.get("event") == "resume"]
    assert event == [{"iteration": 6, "event": "resume",
                      "changed": {"iterations": {"from": 6, "to": 10}, "lr": {"from": 0.01, "to": 0.002}}}]
    assert json.load(open(os.path.join(out, "metrics.json")))["resumes"] == m["resumes"]
    # the new rate is the one the optimizer uses from the checkpoint on
    again = train.resume(out, {"iterations": 12, "lr": 0.5}, quiet=True)
    assert again.task.opt.lr == 0.5
    # a bad rate is the user's mistake, not the checkpoint's
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--lr", "-1", "--iterations", "12"]) == 2
    err = capsys.readouterr().err
    assert "lr must be a positive number, got -1" in err and "checkpoint.json" not in err


def test_resume_refuses_fewer_iterations_than_done(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["train", "primes", "--hidden", "4", "--iterations", "20", "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--iterations", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already at iteration 20, past the 5 asked for" in err
    assert checkpoint.read_manifest(out)["step"] == 20
    assert checkpoint.read_manifest(out)["config"]["iterations"] == 20


def test_an_explicit_lr_on_resume_sets_the_ptb_rate_over_its_decayed_one(ptb_slice, tmp_path):
    kw = dict(data=str(ptb_slice), epochs=1, hidden=8, wordvec=8, lr_decay=4.0, log_every=5)
    tr = train.build("ptb", kw, out=str(tmp_path / "r"), quiet=True)
    tr.task.opt.lr = 1.25                  # as if validation had divided it
    interrupt_at(tr, 3)
    assert tr.run() == 130
    kept = train.resume(str(tmp_path / "r"), quiet=True)
    assert kept.task.opt.lr == 1.25        # without --lr, the decayed rate goes on
    again = train.resume(str(tmp_path / "r"), {"lr": 3.0}, quiet=True)
    assert again.task.opt.lr == 3.0 and again.config["lr"] == 3.0
    assert again.run() == 0
    assert checkpoint.read_manifest(str(tmp_path / "r"))["task_state"]["history"][0]["lr"] == 3.0


def test_a_changed_names_file_is_refused_on_resume_and_a_moved_one_is_found(tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("abc\ndefg\nhij\n")
    out = str(tmp_path / "r")
    argv = ["train", "dinosaurs", "--data", str(names), "--hidden", "6", "--iterations", "6", "--out", out,
            "--quiet"]
    assert cli.main(argv) == 0
    assert len(checkpoint.read_manifest(out)["config"]["data_sha256"]) == 64
    names.write_text("abc\ndefg\nhijk\n")
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--iterations", "9", "--quiet"]) == 2
    assert "differ from the ones this run was trained on" in capsys.readouterr().err
    moved = tmp_path / "moved.txt"
    moved.write_text("abc\ndefg\nhij\n")
    names.unlink()
    # sampling needs no data file; resuming finds the same names at their new place
    assert cli.main(["sample", "dinosaurs", "--checkpoint", out, "-n", "2"]) == 0
    assert cli.main(["train", "--resume", out, "--iterations", "9", "--data", str(moved), "--quiet"]) == 0
    assert checkpoint.read_manifest(out)["config"]["data"] == str(moved)


# ------------------------------------------------------- code a checkpoint names

JANET = '''
import graphrnn as gr

def janet(input_size, hidden_size):
    H = hidden_size
    c = gr.CellBuilder("janet")
    x = c.input("x", input_size)
    h = c.state("h", H)
    Wx = c.param("Wx", (input_size, 2 * H))
    Wh = c.param("Wh", (H, 2 * H))
    b = c.param("b", (2 * H,), init="zeros")
    a = x @ Wx + b + h @ Wh
    f = gr.sigmoid(a[:, :H])
    c.update(h=f * h + (1 - f) * gr.tanh(a[:, H:]))
    return c.build()

def other(input_size, hidden_size):
    c = gr.CellBuilder("other")
    x = c.input("x", input_size)
    h = c.state("h", hidden_size)
    c.update(h=gr.tanh(x @ c.param("Wx", (input_size, hidden_size)) + h @ c.param("Wh", (hidden_size, hidden_size))))
    return c.build()
'''

EVIL = '''
open({marker!r}, "w").write("imported")
from trust_cells import janet as cell
'''


@pytest.fixture
def user_cell_run(tmp_path, monkeypatch):
    """A dinosaurs run trained with a user's cell from the current folder
    (found there without PYTHONPATH), and a module that writes a file when imported."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trust_cells.py").write_text(JANET)
    marker = tmp_path / "evil-was-imported"
    (tmp_path / "trust_evil.py").write_text(EVIL.format(marker=str(marker)))
    out = tmp_path / "r"
    assert cli.main(["train", "dinosaurs", "--cell", "trust_cells:janet", "--hidden", "6",
                     "--iterations", "4", "--out", str(out), "--quiet"]) == 0
    yield out, marker
    for name in ("trust_cells", "trust_evil"):
        sys.modules.pop(name, None)


def test_loading_a_checkpoint_never_imports_the_module_it_names(user_cell_run, capsys):
    out, marker = user_cell_run
    path = out / "checkpoint.json"
    m = json.loads(path.read_text())
    assert m["config"]["cell"] == "trust_cells:janet" and m["cell_name"] == "janet"
    m["config"]["cell"] = "trust_evil:cell"
    path.write_text(json.dumps(m))
    capsys.readouterr()
    for argv in (["sample", "dinosaurs", "--checkpoint", str(out)],
                 ["train", "--resume", str(out), "--iterations", "6", "--quiet"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "'trust_evil:cell'" in err and "--cell" in err and "--trust-checkpoint" in err
        assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert "trust_evil" not in sys.modules
    # naming the cell again loads it (checked against the checkpoint); the evil module stays unimported
    assert cli.main(["sample", "dinosaurs", "--checkpoint", str(out), "--cell", "trust_cells:janet"]) == 0
    assert cli.main(["train", "--resume", str(out), "--cell", "trust_cells:janet", "--iterations", "6",
                     "--quiet"]) == 0
    assert not marker.exists()
    assert json.loads(path.read_text())["config"]["cell"] == "trust_cells:janet"  # the name given
    # trusting the checkpoint imports what it names
    m = json.loads(path.read_text())
    m["config"]["cell"] = "trust_evil:cell"
    path.write_text(json.dumps(m))
    assert cli.main(["sample", "dinosaurs", "--checkpoint", str(out), "--trust-checkpoint", "-n", "1"]) == 0
    assert marker.exists()


def test_a_cell_named_again_must_be_the_one_the_run_was_trained_with(user_cell_run, capsys):
    out, _ = user_cell_run
    capsys.readouterr()
    assert cli.main(["sample", "dinosaurs", "--checkpoint", str(out), "--cell", "trust_cells:other"]) == 2
    err = capsys.readouterr().err
    assert "does not match" in err or "named 'janet'" in err
    assert cli.main(["sample", "dinosaurs", "--checkpoint", str(out), "--cell", "gru"]) == 2
    assert "built-in cell" in capsys.readouterr().err
    assert cli.main(["sample", "dinosaurs", "--checkpoint", str(out), "--trust-checkpoint"]) == 0


def test_a_built_in_cell_loads_by_name_and_cannot_be_swapped(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["train", "dinosaurs", "--hidden", "6", "--iterations", "4", "--out", out, "--quiet"]) == 0
    assert cli.main(["sample", "dinosaurs", "--checkpoint", out, "-n", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--cell", "gru", "--iterations", "6"]) == 2
    assert "differs from the run's cell 'rnn'" in capsys.readouterr().err


def test_run_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert trainer("primes", out).run() == 0
    before = {n: (out / n).read_bytes() for n in ("metrics.json", "loss.png")}
    again = train.resume(str(out), {"iterations": 170}, quiet=True)
    # metrics that cannot be written as JSON, a plot that fails half way
    monkeypatch.setattr(again.task, "final_metrics", lambda: {"loss": 1.0, "bad": object()})
    with pytest.raises(TypeError):
        again.run()
    assert (out / "metrics.json").read_bytes() == before["metrics.json"]
    from matplotlib.figure import Figure

    def torn_savefig(self, f, **kw):
        f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Figure, "savefig", torn_savefig)
    monkeypatch.setattr(again.task, "final_metrics", lambda: {"loss": 1.0})
    with pytest.raises(OSError):
        again.finish()
    assert (out / "loss.png").read_bytes() == before["loss.png"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_run_holds_one_engine_recorded_in_its_checkpoint_and_kept_on_resume(tmp_path, monkeypatch):
    from graphrnn import emit
    seen = []
    real = emit.engine_setting

    def spy(engine=None, default="auto"):
        seen.append(real(engine, default))
        return seen[-1]
    monkeypatch.setattr(emit, "engine_setting", spy)
    monkeypatch.setenv("GRAPHRNN_ENGINE", "auto")
    tr = train.build("primes", {"iterations": 3, "hidden": 4}, out=str(tmp_path / "r"), quiet=True,
                     engine="numpy")
    assert tr.run() == 0
    assert set(seen[1:]) == {"numpy"}          # every unroll of the run, despite $GRAPHRNN_ENGINE=auto
    assert checkpoint.read_manifest(str(tmp_path / "r"))["engine"] == "numpy"
    again = train.resume(str(tmp_path / "r"), {"iterations": 5}, quiet=True)
    assert again.engine == "numpy"
    moved = train.resume(str(tmp_path / "r"), {"iterations": 5}, quiet=True, engine="auto")
    assert moved.engine == "auto" and moved.resumes[-1]["changed"]["engine"] == ["numpy", "auto"]
    assert train.build("primes", {"iterations": 3}, out=str(tmp_path / "s"), quiet=True).engine == "auto"
    monkeypatch.setenv("GRAPHRNN_ENGINE", "bogus")  # the recorded engine decides, not the environment
    assert train.resume(str(tmp_path / "r"), {"iterations": 5}, quiet=True).engine == "numpy"
    monkeypatch.delenv("GRAPHRNN_ENGINE")  # the default: the fastest engine there is
    from graphrnn.emit import numba_runtime
    fastest = "native" if numba_runtime.numba_available() else "numpy"
    assert train.build("primes", {"iterations": 3}, out=str(tmp_path / "t"), quiet=True).engine == fastest
    monkeypatch.setattr(numba_runtime, "_numba_ok", False)
    assert train.build("primes", {"iterations": 3}, out=str(tmp_path / "u"), quiet=True).engine == "numpy"


# ----------------------------------------------------------------------------- non-finite figures

def _strict_records(path):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_an_infinite_figure_is_valid_json_and_ends_the_run_as_a_nan_loss_does(tmp_path, capsys, monkeypatch):
    from graphrnn.tasks import Primes
    log = Primes.log

    def overflowing(self, i, loss):
        rec, lines = log(self, i, loss)
        return ({**rec, "perplexity": float("inf")} if i >= 4 else rec), lines
    monkeypatch.setattr(Primes, "log", overflowing)
    out = tmp_path / "r"
    rc = cli.main(["train", "primes", "--hidden", "4", "--iterations", "10", "--log-every", "2",
                   "--checkpoint-every", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "perplexity became inf at iteration 4" in err and "iteration 4" in err
    recs = _strict_records(out / "metrics.jsonl")
    assert recs[-1]["perplexity"] is None and recs[-1]["non_finite"] == {"perplexity": "inf"}
    named = {checkpoint.read_manifest(str(out), n)["arrays_file"]
             for n in os.listdir(out) if n.startswith("checkpoint") and n.endswith(".json")}
    assert named == {n for n in os.listdir(out) if n.endswith(".npz")}   # no orphan arrays
    assert not (out / "metrics.json").exists()


def test_ptb_whose_perplexity_overflows_ends_in_one_line_with_strict_json(ptb_slice, tmp_path, capsys):
    out = tmp_path / "r"
    rc = cli.main(["train", "ptb", "--data", str(ptb_slice), "--epochs", "2", "--lr", "1e6",
                   "--set", "hidden=8", "--set", "wordvec=8", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "became" in err and "last good checkpoint" in err
    _strict_records(out / "metrics.jsonl")
    named = {checkpoint.read_manifest(str(out), n)["arrays_file"]
             for n in os.listdir(out) if n.startswith("checkpoint") and n.endswith(".json")}
    assert named == {n for n in os.listdir(out) if n.endswith(".npz")}


def test_hints_name_flags_that_exist(tmp_path, capsys):
    out = str(tmp_path / "d")
    assert cli.main(["train", "dinosaurs", "--hidden", "6", "--iterations", "2", "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--hidden", "5"]) == 2
    err = capsys.readouterr().err
    assert "--set clip=..." in err and "--clip" not in err and "--lr" in err
    assert cli.main(["sample", "binary-addition", "--checkpoint", out]) == 2
    err = capsys.readouterr().err
    assert "these tasks can be sampled: dinosaurs, ptb" in err
