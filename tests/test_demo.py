import os

from graphrnn.cli import main


def test_demo_checks_gradients_learns_and_draws(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out  # the demo returns non-zero when its training did not learn
    assert "loss fell from" in out
    drawn = sorted(os.listdir(tmp_path))
    assert len(drawn) == 3 and all(name.startswith("gated_leaky-") for name in drawn)
