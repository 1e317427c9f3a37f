"""A user's own data: ``graphrnn train sequences`` learns a masked
variable-length task, ``graphrnn train text`` beats a unigram model on a text
it never saw, and every malformed file is one line naming the file and what
is wrong, with nothing written."""
import json
import os

import numpy as np
import pytest

from graphrnn import cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def masked_task(path, n=300, t=12, seed=0):
    """Class = sign of the sum of feature 0 over a sequence's real steps; the
    padding after them is loud noise, which a model must not read."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, t + 1, n)
    xs = rng.normal(size=(n, t, 2))
    mask = np.arange(t)[None, :] < lengths[:, None]
    xs[~mask] *= 5
    ys = ((xs[:, :, 0] * mask).sum(1) > 0).astype(np.int64)
    np.savez(path, xs=xs, ys=ys, lengths=lengths)
    return path


def test_sequences_learns_a_masked_variable_length_task_and_resumes_bit_for_bit(tmp_path):
    data = masked_task(tmp_path / "seq.npz")
    settings = {"data": str(data), "epochs": 12, "hidden": 16}
    whole = train.build("sequences", settings, out=str(tmp_path / "whole"), quiet=True)
    assert whole.run() == 0
    m = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m["valid_accuracy"] > 0.85 and m["targets"] == "classes per sequence"   # chance: about 0.5
    part = train.build("sequences", {**settings, "epochs": 5}, out=str(tmp_path / "part"), quiet=True)
    assert part.run() == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "12", "--quiet"]) == 0
    again = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert again["final_loss"] == m["final_loss"] and again["valid_loss"] == m["valid_loss"]


def test_sequences_regression_per_step_with_a_user_cell(tmp_path, monkeypatch):
    """Per-step values: y_t = the running mean of x (a user's cell from the current folder)."""
    (tmp_path / "regressioncells.py").write_text(
        "import graphrnn as gr\n"
        "def leaky(d, h):\n"
        "    c = gr.CellBuilder('leaky')\n"
        "    x = c.input('x', d)\n"
        "    s = c.state('h', h)\n"
        "    W = c.param('W', (d, h))\n"
        "    U = c.param('U', (h, h))\n"
        "    c.update(h=gr.tanh(x @ W + s @ U))\n"
        "    return c.build()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    rng = np.random.default_rng(1)
    xs = rng.uniform(-1, 1, (200, 8, 1))
    ys = np.cumsum(xs, axis=1) / np.arange(1, 9)[None, :, None]
    np.savez(tmp_path / "reg.npz", xs=xs, ys=ys)
    assert cli.main(["train", "sequences", "--data", "reg.npz", "--cell", "regressioncells:leaky", "--epochs", "15",
                     "--hidden", "8", "--lr", "0.02", "--out", "r", "--quiet"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["targets"] == "values per step" and m["valid_accuracy"] is None
    assert m["valid_loss"] < 0.25 * float(np.var(ys))   # far better than predicting the mean


BAD = {
    "not-npz": (lambda p: p.write_text("hello"), "not an .npz file"),
    "empty-file": (lambda p: p.write_bytes(b""), "not an .npz file"),
    "npy": (lambda p: p.write_bytes(open(np.save(str(p) + ".npy", np.zeros(3)) or str(p) + ".npy", "rb").read()),
            "a .npy file holds one array"),
    "truncated-zip": (lambda p: (np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros(2)),
                                 p.write_bytes(p.read_bytes()[:60])), "not a readable .npz"),
    "complex": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1), complex), ys=np.zeros(2)), "real numbers"),
    "no-ys": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1))), "no 'ys'"),
    "wrong-key": (lambda p: np.savez(p, x=np.zeros((2, 3, 1)), y=np.zeros(2)), "no 'xs' and no 'ys'"),
    "extra-key": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros(2), w=np.ones(2)), "unexpected"),
    "xs-2d": (lambda p: np.savez(p, xs=np.zeros((2, 3)), ys=np.zeros(2)), "expected (N, T, D)"),
    "empty": (lambda p: np.savez(p, xs=np.zeros((0, 3, 1)), ys=np.zeros(0)), "no sequences"),
    "nan": (lambda p: np.savez(p, xs=np.full((2, 3, 1), np.nan), ys=np.zeros(2)), "must be finite"),
    "inf-ys": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.array([1.0, np.inf])), "targets must be finite"),
    "ys-n": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros(5)), "first axis"),
    "ys-steps": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros((2, 4), int)), "a class per step"),
    "negative-class": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.array([0, -1])), "classes are 0"),
    "lengths-range": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros(2), lengths=np.array([3, 4])),
                      "'lengths'[1] is 4"),
    "lengths-shape": (lambda p: np.savez(p, xs=np.zeros((2, 3, 1)), ys=np.zeros(2), lengths=np.ones(3, int)),
                      "'lengths' has shape"),
    "ragged": (lambda p: np.savez(p, xs=np.array([np.zeros((3, 1)), np.zeros((2, 1))], dtype=object),
                                  ys=np.zeros(2)), "object array"),
    "one-sequence": (lambda p: np.savez(p, xs=np.zeros((1, 3, 1)), ys=np.zeros(1)), "at least 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_malformed_sequences_file_is_one_line_and_leaves_nothing(case, tmp_path, capsys):
    write, says = BAD[case]
    path = tmp_path / "d.npz"
    write(path)
    out = tmp_path / "r"
    assert cli.main(["train", "sequences", "--data", str(path), "--out", str(out), "--quiet"]) == 2
    line = one_line(capsys)
    assert says in line and str(path) in line, line
    assert not out.exists()


def test_sequences_needs_its_data_and_trains_by_epochs(tmp_path, capsys):
    assert cli.main(["train", "sequences", "--out", str(tmp_path / "r")]) == 2
    assert "--data FILE.npz" in one_line(capsys)
    assert cli.main(["train", "sequences", "--data", "x.npz", "--iterations", "5"]) == 2
    assert "use --epochs" in one_line(capsys)
    assert cli.main(["train", "sequences", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in one_line(capsys)


# ----------------------------------------------------------------------------- text

SMALL_TEXT = ["--epochs", "3", "--hidden", "32", "--lr", "0.02", "--set", "wordvec=16", "--set", "steps=16"]


def test_text_beats_a_unigram_model_on_a_text_it_never_saw_and_samples(tmp_path, capsys):
    """docs/gradcheck.md: English prose the settings were not tuned on."""
    data = os.path.join(ROOT, "docs", "gradcheck.md")
    out = tmp_path / "r"
    assert cli.main(["train", "text", "--data", data, *SMALL_TEXT, "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["valid_perplexity"] < 0.8 * m["unigram_perplexity"], m
    capsys.readouterr()
    assert cli.main(["sample", "text", "--checkpoint", str(out), "-n", "40", "--start", "The "]) == 0
    text = capsys.readouterr().out
    assert text.startswith("The ") and len(text.rstrip("\n")) >= 40


def test_word_level_text_with_a_user_cell_sweeps_and_reports(tmp_path, monkeypatch, capsys):
    from test_sweep import INDRNN
    (tmp_path / "wordcells.py").write_text(INDRNN)   # a name no other test imports (sys.modules)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    (tmp_path / "t.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 60)
    assert cli.main(["sweep", "text", "--data", "t.txt", "--cell", "wordcells:indrnn,gru", "--lr", "0.02",
                     "--set", "level=word", "--set", "epochs=2", "--set", "hidden=8", "--set", "wordvec=8",
                     "--set", "steps=8", "--set", "batch=4", "--sequential", "--out", "s"]) == 0
    assert "text comparison" in (tmp_path / "s" / "report.md").read_text()
    assert "wordcells:indrnn" in (tmp_path / "s" / "report.md").read_text()
    capsys.readouterr()
    assert cli.main(["sample", "text", "--checkpoint", "s/gru-lr0.02-s0", "-n", "5", "--start", "the"]) == 0
    words = capsys.readouterr().out.split()
    assert words[0] == "the" and len(words) == 6


@pytest.mark.parametrize("content, says", [
    (b"", "the file is empty"),
    (b"caf\xe9 au lait\n", "not UTF-8 text (byte 0xe9 at line 1, column 4)"),
    (b"abc", "too few"),
    (b"hello world " * 20, "too few for 16 streams"),
])
def test_every_malformed_text_file_is_one_line_and_leaves_nothing(content, says, tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    out = tmp_path / "r"
    assert cli.main(["train", "text", "--data", str(path), "--out", str(out), "--quiet"]) == 2
    line = one_line(capsys)
    assert says in line and str(path) in line, line
    assert not out.exists()
    assert cli.main(["train", "text", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "a folder" in one_line(capsys)
    assert cli.main(["train", "text", "--out", str(out), "--set", "level=byte"]) == 2
    assert "level must be one of char, word" in one_line(capsys)
