import os
import re

from graphrnn.cli import main


def test_demo_checks_gradients_learns_and_draws(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out  # the demo returns non-zero when its training did not learn
    drawn = sorted(os.listdir(tmp_path))
    assert len(drawn) == 3 and all(name.startswith("gated_leaky-") for name in drawn)


def test_demo_reports_one_quantity_so_its_numbers_compare(tmp_path, capsys):
    # The loss it says fell is the first figure of its table, not another average.
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = re.findall(r"steps +(\d+)-(\d+) +mean mse ([0-9.]+)", out)
    fell = re.search(r"mean mse fell from ([0-9.]+) \(steps 1-10\) to ([0-9.]+) \(steps (\d+)-(\d+)\)", out)
    assert table and fell, out
    assert table[0][:2] == ("1", "10") and table[0][2] == fell[1]
    assert table[-1][2] == fell[2] and table[-1][:2] == (fell[3], fell[4])
