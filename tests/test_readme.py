"""Every command the README shows runs as written, in a fresh folder, one
after another (a later command reads what an earlier one wrote), with small
settings appended so the suite stays fast; the few too big for a test are
listed with the test that covers them instead."""
import pathlib
import re
import shlex

import pytest

from graphrnn import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Appended to a command that starts so: argparse keeps the last value given.
SMALL = {
    "train binary-addition": ["--iterations", "30", "--quiet"],
    "train dinosaurs": ["--iterations", "30", "--set", "hidden=8", "--quiet"],
    "train ptb": ["--epochs", "1", "--set", "hidden=8", "--set", "wordvec=8", "--quiet"],
    "sample ptb": ["-n", "5"],
    "train text": ["--epochs", "1", "--hidden", "16", "--set", "wordvec=8", "--set", "steps=16", "--quiet"],
    "sample text": ["-n", "20"],
    "train sequences": ["--epochs", "2", "--hidden", "8", "--quiet"],
    "gradcheck": ["--sample", "4", "--directions", "1"],
    "bench": ["--quick", "--cells", "rnn", "--sizes", "tiny", "--rounds", "1", "--no-torch",
              "--out", "runs/bench"],
    "sweep ptb": ["--cell", "gru", "--lr", "5", "--seed", "0", "--sequential", "--set", "epochs=1",
                  "--set", "hidden=8", "--set", "wordvec=8"],
}
# Too big for the suite, and where each is tested instead.
ELSEWHERE = {
    "make demo": "tests/test_demo.py", "make test": "the suite itself",
    "make bench-results": "tests/test_bench.py", "bench --lm": "tests/test_bench.py (a tiny LM size)",
}


def readme_commands():
    """The lines of the README's ``sh`` blocks, without their comments."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


def _needs_ptb(argv):
    return any("ptb" in w for w in argv[:2])


def _small(argv):
    key = " ".join(argv[:2])
    extra = SMALL.get(key, SMALL.get(argv[0], []))
    return argv + extra


def _users_files(folder):
    """What the README's commands take as the user's own: the clone (its
    README.md, from whose folder the commands run) and an array file."""
    import numpy as np
    (folder / "README.md").write_text((ROOT / "README.md").read_text())
    (folder / "runs").mkdir()
    rng = np.random.default_rng(0)
    np.savez(folder / "runs" / "mine.npz", xs=rng.normal(size=(20, 5, 2)), ys=rng.integers(0, 2, 20),
             lengths=rng.integers(1, 6, 20))


def _run_all(tmp_path, monkeypatch, capsys, ptb):
    _users_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    if ptb:
        monkeypatch.setenv("GRAPHRNN_DATA", str(ptb))
    ran = []
    for line in readme_commands():
        words = shlex.split(line)
        if " ".join(words[:2]) in ELSEWHERE or " ".join(words[1:3]) in ELSEWHERE:
            continue
        assert words[0] == ".venv/bin/graphrnn", f"the README shows {line!r}: add it to this test"
        argv = words[1:]
        if _needs_ptb(argv) != bool(ptb):
            continue
        rc = cli.main(_small(argv))
        err = capsys.readouterr().err
        assert rc == 0, f"{line}: exit {rc}: {err}"
        ran.append(argv[0])
    return ran


def test_the_readmes_commands_run_as_written(tmp_path, monkeypatch, capsys):
    ran = _run_all(tmp_path, monkeypatch, capsys, ptb=None)
    assert {"train", "sample", "gradcheck", "render", "bench"} <= set(ran)
    assert (tmp_path / "gru.svg").exists() or (tmp_path / "gru.dot").exists()


def test_the_readmes_ptb_commands_run_as_written_and_report_finds_its_runs(ptb_slice, tmp_path,
                                                                            monkeypatch, capsys):
    ran = _run_all(tmp_path, monkeypatch, capsys, ptb=ptb_slice)
    assert ran.count("train") == 2 and "report" in ran and "sweep" in ran
    assert "gru" in (tmp_path / "runs" / "ptb-ch6" / "report.md").read_text()


def test_every_command_left_out_is_tested_elsewhere():
    for line in readme_commands():
        words = shlex.split(line)
        if words[0] == "make":
            assert " ".join(words[:2]) in ELSEWHERE, line


def test_the_readmes_train_your_cell_on_your_data_example_learns(capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Train your cell on your data"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    assert len(code.strip().splitlines()) <= 26
    exec(compile(code, "README.md (train your cell on your data)", "exec"), {})
    accuracy = float(capsys.readouterr().out.split()[-1])
    assert accuracy > 0.85   # chance: about 0.5
