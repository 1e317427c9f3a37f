"""Checkpoints are untrusted input: damaged ones are refused in one line naming
the file and the field; files are written atomically, honour the umask, and a
killed save's temporary files are cleaned up."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from graphrnn import checkpoint, cli, train


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    """A finished small dinosaurs run (its .npz is about 30 kB), keeping one
    checkpoint: its damage has nothing to fall back to."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    tr = train.build("dinosaurs", {"iterations": 4, "log_every": 2, "hidden": 40, "samples": 1},
                     out=str(out), quiet=True, keep=1)
    assert tr.run() == 0
    return out


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def one_line_error(argv, capsys):
    """Run the command; it must fail with exit 2 and one line on stderr. Returns the line."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def npz_of(folder):
    return folder / checkpoint.read_manifest(str(folder))["arrays_file"]


@pytest.mark.parametrize("size", [0, 100, 5000, 20000])
def test_a_truncated_npz_is_one_line_naming_the_file(dino_run, tmp_path, capsys, size):
    run = copy_run(dino_run, tmp_path / "r")
    npz = npz_of(run)
    assert npz.stat().st_size > 20000
    with open(npz, "r+b") as f:
        f.truncate(size)
    for argv in (["sample", "dinosaurs", "--checkpoint", str(run)],
                 ["train", "--resume", str(run), "--iterations", "8", "--quiet"]):
        line = one_line_error(argv, capsys)
        assert str(npz) in line and "damaged" in line


def test_flipped_bytes_anywhere_in_the_npz_never_give_a_traceback(dino_run, tmp_path, capsys):
    run = copy_run(dino_run, tmp_path / "r")
    npz = npz_of(run)
    good = npz.read_bytes()
    refused = 0
    positions = sorted(set(np.linspace(0, len(good) - 1, 40).astype(int)) | {0, 10, 30, 60, len(good) - 10})
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        npz.write_bytes(bytes(bad))
        rc = cli.main(["sample", "dinosaurs", "--checkpoint", str(run), "-n", "1"])
        err = capsys.readouterr().err
        assert "Traceback" not in err and rc in (0, 2), (pos, err)
        if rc == 2:
            refused += 1
            assert len(err.strip().splitlines()) == 1 and str(npz) in err, (pos, err)
    assert refused >= len(positions) * 3 // 4  # CRCs and headers catch nearly every flip


def _edit_manifest(run, edit):
    path = run / checkpoint.MANIFEST
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    return path


def _first_param(m):
    return next(k for k in m["arrays"] if k.startswith("param/"))


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["arrays"][_first_param(m)].pop("dtype"), "arrays['param/Wx'].dtype"),
    (lambda m: m["arrays"][_first_param(m)].update(dtype="bogus"), "arrays['param/Wx'].dtype"),
    (lambda m: m["arrays"][_first_param(m)].update(dtype="|O"), "arrays['param/Wx'].dtype"),
    (lambda m: m["arrays"][_first_param(m)].update(shape=[27, -1]), "arrays['param/Wx'].shape[1]"),
    (lambda m: m.update(arrays=[]), "field arrays"),
    (lambda m: m["config"].update(hidden="abc"), "hidden"),
    (lambda m: m["config"].update(hidden=2.5), "hidden"),
    (lambda m: m["config"].update(lr="fast"), "lr"),
    (lambda m: m["config"].update(task="nope"), "config.task"),
    (lambda m: m["config"].update(cell=7), "config.cell"),
    (lambda m: m.pop("config"), "field config"),
    (lambda m: m.update(step="2000"), "field step"),
    (lambda m: m.update(step=-1), "field step"),
    (lambda m: m.update(arrays_file="../../../etc/passwd"), "field arrays_file"),
    (lambda m: m.pop("rng"), "field rng"),
    (lambda m: m["rng"].update(pos="x"), "field rng.pos"),
    (lambda m: m["rng"].update(kind="bogus"), "field rng"),
    (lambda m: m["optimizer"].update(lr="abc"), "field optimizer"),
    (lambda m: m["optimizer"].pop("lr"), "field optimizer"),
    (lambda m: m["task_state"].pop("smoothed_loss"), "field task_state"),
    (lambda m: m.update(task_state=[]), "field task_state"),
    (lambda m: m.update(elapsed_s="long"), "field elapsed_s"),
])
def test_a_damaged_manifest_is_one_line_naming_the_file_and_the_field(dino_run, tmp_path, capsys, edit, field):
    run = copy_run(dino_run, tmp_path / "r")
    path = _edit_manifest(run, edit)
    for argv in (["sample", "dinosaurs", "--checkpoint", str(run)],
                 ["train", "--resume", str(run), "--iterations", "8", "--quiet"]):
        line = one_line_error(argv, capsys)
        assert str(path) in line and field in line, line


@pytest.mark.parametrize("text", ["", "{", "[]", '"x"', "{\"format\": \"graphrnn-checkpoint\", \"version\": 1}",
                                  "\xff\xfe"])
def test_a_manifest_that_is_not_one_is_refused_in_one_line(dino_run, tmp_path, capsys, text):
    run = copy_run(dino_run, tmp_path / "r")
    (run / checkpoint.MANIFEST).write_bytes(text.encode("latin-1"))
    line = one_line_error(["sample", "dinosaurs", "--checkpoint", str(run)], capsys)
    assert checkpoint.MANIFEST in line


def test_a_run_folder_without_a_manifest_says_so_in_one_line(dino_run, tmp_path, capsys):
    run = copy_run(dino_run, tmp_path / "r")
    (run / checkpoint.MANIFEST).unlink()
    line = one_line_error(["sample", "dinosaurs", "--checkpoint", str(run)], capsys)
    assert f"no checkpoint in {str(run)!r} ({checkpoint.MANIFEST} is missing)" in line


def test_checkpoint_and_log_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "r"
        assert train.build("primes", {"iterations": 3, "hidden": 4}, out=str(out), quiet=True).run() == 0
    finally:
        os.umask(old)
    for name in os.listdir(out):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_temporaries_of_a_killed_save_are_removed_by_the_next_save_and_load(tmp_path):
    # A save killed between creating its temporary file and renaming it leaves
    # that file behind; a child process that exits plays the killed writer.
    folder = tmp_path / "r"
    checkpoint.save(str(folder), 1, {"a": np.arange(3.0)}, {"config": {}})
    code = ("import os, sys; from graphrnn import files; "
            "files.atomic_write(sys.argv[1], lambda f: os._exit(9))")
    target = folder / "checkpoint-00000002.npz"
    assert subprocess.run([sys.executable, "-c", code, str(target)]).returncode == 9
    left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".checkpoint-00000002.npz.")
    # one from an older graphrnn (tempfile.mkstemp names), and a user's file that must stay
    (folder / ".checkpoint.json.k2j4h5g6.tmp").write_text("{")
    (folder / "notes.tmp").write_text("mine")
    checkpoint.load(str(folder))
    assert sorted(n for n in os.listdir(folder)) == ["checkpoint-00000001.npz", "checkpoint.json", "notes.tmp"]
    assert subprocess.run([sys.executable, "-c", code, str(target)]).returncode == 9
    checkpoint.save(str(folder), 3, {"a": np.arange(4.0)}, {"config": {}}, keep=1)
    assert sorted(os.listdir(folder)) == ["checkpoint-00000003.npz", "checkpoint.json", "notes.tmp"]


def test_a_running_writers_temporary_file_is_left_alone(tmp_path):
    # `graphrnn sample` may read a run folder while the run is saving into it.
    folder = tmp_path / "r"
    checkpoint.save(str(folder), 1, {"a": np.arange(3.0)}, {"config": {}})
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = folder / f".checkpoint.json.{writer.pid}.0123abcd.tmp"
        busy.write_text("{")
        checkpoint.load(str(folder))
        assert busy.exists()
    finally:
        writer.kill()
        writer.wait()
    checkpoint.load(str(folder))
    assert not busy.exists()


@pytest.fixture(scope="module")
def ptb_run(ptb_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptb-ckpt") / "run"
    tr = train.build("ptb", {"data": str(ptb_slice), "epochs": 1, "hidden": 8, "wordvec": 8},
                     out=str(out), quiet=True, keep=1)
    assert tr.run() == 0
    return out


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.update(vocab=5), "task_state.vocab"),
    (lambda t: t.update(vocab=[1, 2]), "task_state.vocab[0]"),
    (lambda t: t.update(history="x"), "task_state.history"),
    (lambda t: t["history"][0].update(lr="fast"), "task_state.history[0].lr"),
    (lambda t: t.update(clipped=None), "task_state.clipped"),
    (lambda t: t["dropout_rng"].pop("inc"), "task_state.dropout_rng.inc"),
    (lambda t: t.update(best_ppl="x"), "task_state.best_ppl"),
])
def test_a_damaged_ptb_task_state_is_named_when_sampling_and_resuming(ptb_run, ptb_slice, tmp_path, capsys,
                                                                       edit, field):
    run = copy_run(ptb_run, tmp_path / "r")
    path = _edit_manifest(run, lambda m: edit(m["task_state"]))
    for argv in (["sample", "ptb", "--checkpoint", str(run), "-n", "3"],
                 ["train", "--resume", str(run), "--epochs", "2", "--data", str(ptb_slice), "--quiet"]):
        line = one_line_error(argv, capsys)
        assert str(path) in line and f"field {field}" in line, line


# ----------------------------------------------------------------------------- keeping K

def test_the_last_k_checkpoints_are_kept_and_a_later_one_redone_is_dropped(tmp_path):
    folder = str(tmp_path / "r")
    for step in range(1, 6):
        checkpoint.save(folder, step, {"a": np.full(2, float(step))}, {"config": {}}, keep=3)
    names = sorted(n for n in os.listdir(folder) if n.startswith("checkpoint"))
    assert names == ["checkpoint-00000003.json", "checkpoint-00000003.npz", "checkpoint-00000004.json",
                     "checkpoint-00000004.npz", "checkpoint-00000005.npz", "checkpoint.json"]
    assert checkpoint.load(folder, "checkpoint-00000003.json")[1]["a"][0] == 3.0
    # a run resumed from iteration 3 that saves at 4 again: 5 is from a future it redid
    checkpoint.save(folder, 4, {"a": np.full(2, 40.0)}, {"config": {}}, keep=3)
    names = sorted(n for n in os.listdir(folder) if n.startswith("checkpoint"))
    assert "checkpoint-00000005.npz" not in names and checkpoint.read_manifest(folder)["step"] == 4


def test_a_value_json_cannot_hold_leaves_no_orphan_arrays(tmp_path):
    folder = tmp_path / "r"
    with pytest.raises(checkpoint.CheckpointError, match="cannot be written as JSON"):
        checkpoint.save(str(folder), 7, {"a": np.arange(3.0)}, {"config": {}, "best": float("inf")})
    assert not [n for n in os.listdir(folder) if n.endswith(".npz")]


@pytest.mark.parametrize("damage", ["arrays", "manifest"])
def test_resume_falls_back_to_the_newest_readable_checkpoint_and_names_the_one_skipped(
        tmp_path, capsys, damage):
    """Saved at 0, 3, 6 (and 8 at the end: 3, 6 and 8 kept); the newest damaged,
    the run resumes from 6 and still ends bit for bit where an undamaged one ends."""
    settings = {"iterations": 8, "log_every": 1, "hidden": 6, "samples": 1}
    whole = train.build("dinosaurs", settings, out=str(tmp_path / "whole"), quiet=True)
    assert whole.run() == 0
    out = tmp_path / "run"
    assert train.build("dinosaurs", {**settings, "iterations": 7}, out=str(out), quiet=True,
                       checkpoint_every=3).run() == 0
    kept = sorted(n for n in os.listdir(out) if n.startswith("checkpoint-") and n.endswith(".json"))
    assert kept == ["checkpoint-00000003.json", "checkpoint-00000006.json"]
    newest = out / ("checkpoint-00000007.npz" if damage == "arrays" else checkpoint.MANIFEST)
    newest.write_bytes(newest.read_bytes()[:100])
    assert cli.main(["train", "--resume", str(out), "--iterations", "8", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped a damaged checkpoint" in err and str(newest) in err
    assert "iteration 6" in err and "Traceback" not in err
    assert json.loads((out / "metrics.json").read_text())["final_loss"] == whole.losses[-1]
