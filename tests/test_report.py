"""`graphrnn report` over run folders some of which hold damaged metrics:
those are named (file and field) and left out, the others still compared."""
import json

import pytest

from graphrnn import cli


def run_folder(root, name, **changes):
    d = root / name
    d.mkdir(parents=True)
    m = {"task": "ptb", "cell": "lstm", "lr": 20.0, "seed": 0, "valid_perplexity": 150.0,
         "test_perplexity": 140.0, "valid_history": [200.0, 150.0], "epochs": 2, "seconds_per_epoch": 10.0}
    m.update(changes)
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "metrics.jsonl").write_text('{"iteration": 0, "train_perplexity": 900.0}\n[1, 2]\n'
                                     '{"iteration": "x", "train_perplexity": "y"}\n')
    return d


@pytest.mark.parametrize("changes, field", [
    ({"valid_perplexity": "abc"}, "field valid_perplexity"),
    ({"lr": None}, "field lr"),
    ({"valid_history": "x"}, "field valid_history"),
    ({"cell": [1]}, "field cell"),
    ({"seed": "s"}, "field seed"),
    ({"seconds_per_epoch": "x"}, "field seconds_per_epoch"),
    ({"test_perplexity": None}, "field test_perplexity"),
    ({"epochs": -2}, "field epochs"),
])
def test_a_run_with_damaged_metrics_is_named_and_left_out(tmp_path, capsys, changes, field):
    run_folder(tmp_path, "good")
    bad = run_folder(tmp_path, "bad", **{"cell": "gru", **changes})
    assert cli.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert f"Not counted: {bad / 'metrics.json'}: {field}" in md
    assert "| lstm **best** | 20 | 0 | 150.0 | 140.0 |" in md
    assert "Only lstm was run." in md


@pytest.mark.parametrize("record, field", [
    ({"task": "ptb"}, "field cell"),
    ({"task": "ptb", "config": {"cell": "gru", "lr": 20.0, "seed": 1}}, "field iteration"),
    ([1, 2], "field the top level"),
])
def test_a_damaged_diverged_record_is_named_and_left_out(tmp_path, capsys, record, field):
    run_folder(tmp_path, "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "diverged.json").write_text(json.dumps(record))
    assert cli.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert f"Not counted: {bad / 'diverged.json'}: {field}" in md
    assert "| lstm **best** | 20 | 0 | 150.0 | 140.0 |" in md


def test_one_seed_per_cell_is_weighed_against_a_spread_given_from_elsewhere(tmp_path, capsys):
    run_folder(tmp_path, "lstm-lr20", test_perplexity=86.7, valid_perplexity=89.9)
    run_folder(tmp_path, "gru-lr10", cell="gru", lr=10.0, test_perplexity=99.8, valid_perplexity=103.0)
    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "with one seed per cell there is no spread over seeds to weigh it against" in out
    assert "| +13.1 | — (one seed) |" in out   # no spread of 0.0 where there is nothing to spread
    assert cli.main(["report", str(tmp_path), "--spread", "1.5"]) == 0
    assert ("a margin of 13.1, larger than the spread over seeds given as the yardstick (1.5, measured "
            "elsewhere: these runs have one seed each)") in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path), "--spread", "20"]) == 0
    assert "13.1, within the spread over seeds given as the yardstick (20.0," in (tmp_path / "report.md").read_text()
    assert cli.main(["report", str(tmp_path), "--spread", "-1"]) == 2
    assert "--spread must be a number >= 0" in capsys.readouterr().err
