"""The Penn Treebank task: loader, download (against a local server), batching,
a short training whose perplexity falls, exact resume, sampling without data
files, a user's own cell, and the command line's one-line errors."""
import functools
import http.server
import json
import os
import shutil
import socket
import threading

import numpy as np
import pytest

from graphrnn import checkpoint, cli, train
from graphrnn.data import DataError
from graphrnn.data import ptb

TINY = {"hidden": 16, "wordvec": 16, "log_every": 20, "epochs": 2}


def write_corpus(folder, train="a b c\nb c d\n", valid="a b\n", test="c d\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("ptb.train.txt", train), ("ptb.valid.txt", valid), ("ptb.test.txt", test)):
        (folder / name).write_text(text)
    return folder


# ------------------------------------------------------------------------ loader

def test_loader_appends_eos_numbers_words_by_first_appearance_and_maps_every_split(tmp_path):
    c = ptb.Corpus(write_corpus(tmp_path, train=" the cat \n the dog sat \n", valid=" dog \n", test=" sat the \n"))
    assert c.words == ["the", "cat", "<eos>", "dog", "sat"]
    assert c.train.tolist() == [0, 1, 2, 0, 3, 4, 2]
    assert c.valid.tolist() == [3, 2] and c.test.tolist() == [4, 0, 2]
    assert c.decode(c.train) == "the cat\nthe dog sat\n"
    assert not c.is_standard


def test_loader_names_file_line_and_word_outside_the_training_vocabulary(tmp_path):
    write_corpus(tmp_path, valid="a b\nb zebra\n")
    with pytest.raises(DataError, match=r"ptb.valid.txt, line 2: word 'zebra' is not in the vocabulary"):
        ptb.Corpus(tmp_path)


def test_the_standard_files_load_with_the_published_sizes(ptb_dir):
    c = ptb.load(ptb_dir)
    assert c.is_standard
    assert c.vocab_size == 10000
    assert (len(c.train), len(c.valid), len(c.test)) == (929589, 73760, 82430)
    assert ptb.iterations_per_epoch(c.train, 20, 35) == 1327   # the book's count per epoch


def test_batches_are_evenly_spaced_streams_that_wrap_like_the_books_trainer():
    corpus = np.arange(101, dtype=np.int32)           # inputs 0..99, targets 1..100
    xs, ts = ptb.train_batch(corpus, 4, 5, 0)
    assert xs[:, 0].tolist() == [0, 25, 50, 75]         # jump = 100 // 4
    assert xs[1].tolist() == [25, 26, 27, 28, 29]
    np.testing.assert_array_equal(ts, xs + 1)
    xs, _ = ptb.train_batch(corpus, 4, 5, 5)           # iteration 5: offset + 25, wrapping at 100
    assert xs[3].tolist() == [0, 1, 2, 3, 4]
    assert ptb.iterations_per_epoch(corpus, 4, 5) == 5


def test_evaluation_windows_follow_eval_perplexity():
    corpus = np.arange(71, dtype=np.int32)
    wins = list(ptb.eval_batches(corpus, 2, 7))
    assert len(wins) == (71 - 1) // (2 * 7)             # 5 windows, the tail left out
    xs, ts = wins[1]
    assert xs.tolist() == [list(range(7, 14)), list(range(42, 49))]   # jump = 70 // 2
    np.testing.assert_array_equal(ts, xs + 1)


# ---------------------------------------------------------------------- locating

def test_data_is_looked_for_in_the_given_folder_then_the_environment_then_the_cache(tmp_path, monkeypatch):
    a = write_corpus(tmp_path / "a" / "ptb")                # DIR/ptb is accepted too
    b = write_corpus(tmp_path / "b")
    cache = write_corpus(tmp_path / "cache")
    monkeypatch.setattr(ptb, "cache_dir", lambda: str(cache))
    monkeypatch.setenv("GRAPHRNN_DATA", str(b))
    assert ptb.find(tmp_path / "a") == str(a)
    assert ptb.find() == str(b)
    monkeypatch.delenv("GRAPHRNN_DATA")
    assert ptb.find() == str(cache)
    with pytest.raises(DataError, match=r"PTB files not found in .*empty \(given with --data"):
        ptb.find(tmp_path / "empty")


class Server:
    """A local HTTP server over a folder, for the download path (no internet)."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(ptb_dir, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(ptb_dir, site)
    server = Server(site)
    yield site, server.url
    server.close()


def test_missing_files_are_downloaded_into_the_cache_and_checked(served, tmp_path, monkeypatch):
    site, url = served
    cache = tmp_path / "cache"
    monkeypatch.delenv("GRAPHRNN_DATA", raising=False)
    monkeypatch.setattr(ptb, "cache_dir", lambda: str(cache))
    monkeypatch.setenv("GRAPHRNN_PTB_URL", url)
    assert ptb.find() == str(cache)
    assert ptb.Corpus(str(cache)).is_standard
    assert sorted(os.listdir(cache)) == sorted(ptb.FILES.values())   # no temporary files left


def test_a_corrupt_download_is_refused_and_nothing_is_kept(served, tmp_path, monkeypatch):
    site, url = served
    with open(site / "ptb.valid.txt", "a") as f:
        f.write(" tampered <unk>\n")
    cache = tmp_path / "cache"
    monkeypatch.delenv("GRAPHRNN_DATA", raising=False)
    monkeypatch.setattr(ptb, "cache_dir", lambda: str(cache))
    with pytest.raises(DataError, match=r"ptb.valid.txt does not have the expected SHA256"):
        ptb.find(url=url)
    assert "ptb.valid.txt" not in os.listdir(cache)


def test_offline_the_error_is_one_line_naming_where_it_looked(tmp_path, monkeypatch):
    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GRAPHRNN_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(ptb, "cache_dir", lambda: str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        ptb.find(url=f"http://127.0.0.1:{port}/")
    msg = str(err.value)
    assert "\n" not in msg
    assert "nowhere (from GRAPHRNN_DATA)" in msg and str(tmp_path / "cache") in msg
    assert "download" in msg and "--data DIR" in msg


# ---------------------------------------------------------------------- training

def build(ptb_slice, out, **kw):
    overrides = {**TINY, "data": str(ptb_slice), **kw}
    return train.build("ptb", overrides, out=str(out), quiet=True)


def test_a_short_training_on_a_slice_of_ptb_lowers_perplexity(ptb_slice, tmp_path):
    tr = build(ptb_slice, tmp_path / "r", epochs=3)
    assert tr.run() == 0
    m = json.load(open(tmp_path / "r" / "metrics.json"))
    history = m["valid_history"]
    vocab = m["vocab_size"]
    assert len(history) == 3 and history[2] < history[1] < history[0]
    assert history[-1] < vocab / 10                    # far below guessing uniformly
    assert m["valid_perplexity"] == min(history)
    assert m["test_perplexity"] < vocab / 10
    for key in ("epochs", "seconds_per_epoch", "cell", "preset", "lr", "seed"):
        assert key in m
    records = [json.loads(ln) for ln in open(tmp_path / "r" / "metrics.jsonl")]
    assert [r["epoch"] for r in records if "valid_perplexity" in r] == [1, 2, 3]
    assert any("train_perplexity" in r for r in records)
    assert os.path.getsize(tmp_path / "r" / "perplexity.png") > 1000


def test_the_rate_is_divided_when_validation_gets_worse_and_the_best_parameters_are_tested(ptb_slice, tmp_path):
    tr = build(ptb_slice, tmp_path / "r", epochs=3, lr=20.0, lr_decay=4.0)
    scores = iter([300.0, 250.0, 260.0])
    tr.task.evaluate = lambda split: next(scores) if split == "valid" else 123.0
    assert tr.run() == 0
    m = tr.result
    assert m["final_lr"] == 5.0 and m["valid_perplexity"] == 250.0 and m["test_perplexity"] == 123.0
    # the test pass ran with the parameters kept after epoch 2
    for k, v in tr.task.best.items():
        np.testing.assert_array_equal(tr.task.params[k], v)


@pytest.mark.parametrize("epoch_restart", [True, False])
def test_resumed_ptb_run_ends_bit_for_bit_where_an_uninterrupted_one_ends(ptb_slice, tmp_path, epoch_restart):
    kw = dict(layers=2, dropout=0.3, tie=True, cell="gru", lr_decay=4.0, epoch_restart=epoch_restart)
    whole = build(ptb_slice, tmp_path / "whole", **kw)
    assert whole.run() == 0
    part = build(ptb_slice, tmp_path / "part", **kw)
    k = part.task.epoch_length + 17                     # mid-way through epoch 2
    step = part.task.step

    def stop_at(i):
        if i == k:
            part._stop = True
        return step(i)
    part.task.step = stop_at
    assert part.run() == 130
    again = train.resume(str(tmp_path / "part"), quiet=True)
    assert again.step == k + 1
    assert again.run() == 0
    for name, v in whole.task.params.items():
        np.testing.assert_array_equal(v, again.task.params[name], err_msg=name)
    assert whole.losses == again.losses
    a, b = whole.result, again.result
    for d in (a, b):
        for key in ("train_s", "iterations_per_s", "seconds_per_epoch"):
            d.pop(key, None)
    assert a == b


def test_ch6_streams_run_on_across_epochs_and_validation_leaves_the_training_state(ptb_slice, tmp_path):
    tr = build(ptb_slice, tmp_path / "r", epochs=2)           # ch6: as train_rnnlm.py's one fit
    task = tr.task
    k = task.epoch_length
    xs, _ = task.batch(k)
    np.testing.assert_array_equal(xs, ptb.train_batch(task.corpus.train, 20, 35, k)[0])
    for i in range(k):
        task.step(i)
    before = {n: v.copy() for n, v in task.model.get_state().items()}
    task.end_epoch(1)
    after = task.model.get_state()
    assert before and sorted(before) == sorted(after)
    for n in before:
        np.testing.assert_array_equal(before[n], after[n])
    restart = build(ptb_slice, tmp_path / "b", epochs=2, epoch_restart=True).task
    np.testing.assert_array_equal(restart.batch(k)[0], ptb.train_batch(task.corpus.train, 20, 35, 0)[0])
    restart.end_epoch(1)
    assert restart.model.get_state() == {}


def test_resume_refuses_changed_data_files(ptb_slice, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ptb_slice, data)
    tr = build(data, tmp_path / "r", epochs=1)
    tr.run()
    with open(data / "ptb.test.txt", "a") as f:
        f.write(f" {tr.task.words[0]}\n")
    with pytest.raises(Exception, match="differ from the ones this run was trained on"):
        train.resume(str(tmp_path / "r"), {"epochs": 2}, quiet=True)


def test_sampling_needs_no_data_files(ptb_slice, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(ptb_slice, data)
    out = str(tmp_path / "r")
    assert cli.main(["train", "ptb", "--data", str(data), "--epochs", "1", "--hidden", "16",
                     "--set", "wordvec=16", "--out", out, "--quiet"]) == 0
    shutil.rmtree(data)
    capsys.readouterr()
    assert cli.main(["sample", "ptb", "--checkpoint", out, "-n", "25", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert len(text.split()) >= 15 and "<unk>" not in text
    assert cli.main(["sample", "ptb", "--checkpoint", out, "-n", "5", "--start", "the"]) == 0
    assert capsys.readouterr().out.startswith("the ")


MYCELL = '''
import graphrnn as gr

def janet(input_size, hidden_size):
    """A forget-gate-only LSTM (JANET), declared by a user."""
    H = hidden_size
    c = gr.CellBuilder("janet")
    x = c.input("x", input_size)
    h = c.state("h", H)
    cs = c.state("c", H)
    Wx = c.param("Wx", (input_size, 2 * H))
    Wh = c.param("Wh", (H, 2 * H))
    b = c.param("b", (2 * H,), init="zeros")
    a = x @ Wx + b + h @ Wh
    f = gr.sigmoid(a[:, :H])
    c_new = f * cs + (1 - f) * gr.tanh(a[:, H:])
    c.update(c=c_new, h=c_new)
    c.output(c_new)
    return c.build()
'''


def test_a_user_declared_cell_trains_on_ptb_with_no_other_code(ptb_slice, tmp_path, monkeypatch, capsys):
    (tmp_path / "ptb_user_cells.py").write_text(MYCELL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "r")
    assert cli.main(["train", "ptb", "--cell", "ptb_user_cells:janet", "--data", str(ptb_slice), "--epochs", "2",
                     "--hidden", "16", "--set", "wordvec=16", "--out", out, "--quiet"]) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["cell"] == "ptb_user_cells:janet"
    # learning happened: perplexity falls, far below guessing uniformly among the words
    assert m["valid_history"][1] < m["valid_history"][0] < m["vocab_size"] / 2
    assert m["valid_history"][1] < m["vocab_size"] / 3


@pytest.mark.parametrize("argv, match", [
    (["--data", "{empty}"], "PTB files not found in"),
    (["--cell", "nosuch"], "unknown cell 'nosuch'"),
    (["--cell", "nosuchmodule:f"], "cannot import module 'nosuchmodule'"),
    (["--cell", "json:nosuch"], "module 'json' has no function 'nosuch'"),
    (["--preset", "huge"], "unknown preset 'huge'; presets: ch6, better, cpu"),
    (["--iterations", "5"], "ptb trains by epochs: use --epochs"),
    (["--set", "wordvec=8", "--set", "tie=true"], "tied weights need wordvec == hidden"),
    (["--set", "nosuch=1"], "task 'ptb' has no setting 'nosuch'"),
    (["--set", "novalue"], "--set expects KEY=VALUE"),
])
def test_cli_errors_are_one_line_without_traceback(ptb_slice, tmp_path, capsys, argv, match):
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty") for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(ptb_slice)]
    rc = cli.main(["train", "ptb", "--epochs", "1", "--hidden", "16", "--out", str(tmp_path / "r")] + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_carries_vocabulary_and_data_fingerprint(ptb_slice, tmp_path):
    tr = build(ptb_slice, tmp_path / "r", epochs=1)
    tr.run()
    manifest = checkpoint.read_manifest(str(tmp_path / "r"))
    assert manifest["task_state"]["vocab"][:3] == tr.task.words[:3]
    assert len(manifest["config"]["data_sha256"]) == 64


# ------------------------------------------------------------------------ report

def fake_run(root, cell, lr, seed, valid, test):
    d = root / f"{cell}-lr{lr}-s{seed}"
    d.mkdir(parents=True)
    m = {"task": "ptb", "cell": cell, "lr": lr, "seed": seed, "valid_perplexity": min(valid),
         "test_perplexity": test, "valid_history": valid, "epochs": len(valid), "seconds_per_epoch": 40.0,
         "clip_fraction": 0.5}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "train_perplexity": 900.0}) + "\n"
                                     + json.dumps({"iteration": 10, "train_perplexity": 300.0}) + "\n{torn")
    return d


def test_report_picks_each_cells_best_rate_on_validation_and_weighs_the_margin_by_the_seeds(tmp_path, capsys):
    for seed, (a, b) in enumerate([(140.0, 150.0), (142.0, 152.0)]):
        fake_run(tmp_path, "lstm", 20.0, seed, [200.0, a], a - 4)
        fake_run(tmp_path, "lstm", 5.0, seed, [220.0, a + 30], 1.0)   # best test, worse validation
        fake_run(tmp_path, "gru", 10.0, seed, [210.0, b], b - 3)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "checkpoint.json").write_text("{}")
    assert cli.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| lstm **best** | 20 | 0,1 | 141.0 (140.0–142.0) | 137.0 (136.0–138.0) |" in md
    assert "**lstm** wins at its own best rate (lr 20)" in md
    assert "a margin of 11.0, larger than the spread over seeds (2.0, 2 seeds each)" in md
    assert "Unfinished runs (not counted): unfinished" in md
    assert os.path.getsize(tmp_path / "perplexity.png") > 1000
    assert cli.main(["report", str(tmp_path / "unfinished")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_report_compares_cells_on_test_after_choosing_rates_on_validation_and_calls_a_close_race_open(tmp_path):
    # gru is better on validation, lstm on test, by less than the seeds' spread (the ch6 sweep's case)
    for seed, (vg, tg, vl, tl) in enumerate([(137.7, 134.7, 139.4, 134.3), (139.4, 135.4, 140.2, 135.7)]):
        fake_run(tmp_path, "gru", 10.0, seed, [200.0, vg], tg)
        fake_run(tmp_path, "lstm", 20.0, seed, [200.0, vl], tl)
    assert cli.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    table = md.split("## Each cell at its own best learning rate")[1]
    assert table.index("| lstm |") < table.index("| gru |")          # ordered on test perplexity
    assert "No clear winner: **lstm** at its best rate (lr 20) is ahead by 0.05" in md
    assert "within the spread over seeds (1.4, 2 seeds each)" in md


def test_the_tests_find_the_corpus_through_graphrnn_data_too(tmp_path, monkeypatch):
    from conftest import find_ptb
    mine = tmp_path / "corpora" / "ptb"
    mine.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (mine / f"ptb.{split}.txt").write_text(" a b <unk>\n")
    monkeypatch.setenv("GRAPHRNN_DATA", str(tmp_path / "corpora"))
    assert find_ptb(shared=tmp_path / "nowhere") == mine
    monkeypatch.setenv("GRAPHRNN_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr("graphrnn.data.ptb.cache_dir", lambda: str(tmp_path / "no-cache"))
    assert find_ptb(shared=tmp_path / "nowhere") is None
