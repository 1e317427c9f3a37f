"""Files graphrnn writes appear whole or not at all, with the umask's mode,
and a path that cannot be written is named as the user gave it."""
import os
import stat

import pytest

from graphrnn import cli, files
from graphrnn.errors import OutputError


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    files.atomic_write(path, "old\n")

    def half(f):
        f.write(b"new, and then")
        raise RuntimeError("disk gone")
    with pytest.raises(RuntimeError):
        files.atomic_write(path, half)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_the_rename_is_made_durable_by_flushing_the_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", None)), real_replace(a, b)))
    files.atomic_write(tmp_path / "x.txt", "data")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        files.atomic_write(tmp_path / "a.txt", "x")
        assert cli.main(["render", "gru", "-o", str(tmp_path / "gru.dot")]) == 0
    finally:
        os.umask(old)
    for name in ("a.txt", "gru.dot"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_paths_that_cannot_be_written_are_named_as_given(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    cases = [(tmp_path, "it is a folder"), (blocker / "x.txt", f"{blocker} is a file"),
             (blocker / "deeper" / "x.txt", f"{blocker} is a file")]
    for path, why in cases:
        with pytest.raises(OutputError) as e:
            files.atomic_write(path, "x")
        assert str(e.value).startswith(f"cannot write {path}: ") and why in str(e.value)
        with pytest.raises(OutputError) as e:
            files.check_output_file(path)
        assert str(path) in str(e.value) and why in str(e.value)
    with pytest.raises(OutputError, match=f"cannot use {blocker} as the run folder: it is a file"):
        files.make_folder(blocker, "run folder")
    with pytest.raises(OutputError, match=f"{blocker} is a file"):
        files.check_output_folder(blocker / "sub", "run folder")
    assert os.listdir(tmp_path) == ["afile"]
