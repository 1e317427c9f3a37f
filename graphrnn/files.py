"""Writing files so that a crash, a full disk or a bad path never leaves a half-written one.

Every file graphrnn writes for a user (checkpoints, metrics, plots, diagrams,
benchmark tables, reports) goes through ``atomic_write``: the bytes go to a
temporary file beside the target, are flushed to disk, and the temporary file
is renamed over the target; then the folder itself is flushed, so the rename
survives a power cut. A reader sees the old file or the new one, never a mix.

The temporary file is created with mode 0666 and the process's umask, as
``open`` would create the target itself (``tempfile.mkstemp`` would make it
0600 and the renamed result private). Its name carries the writer's process
id, ``.NAME.PID.RANDOM.tmp``: ``clean_temporaries`` removes the ones whose
writer is gone (killed in the middle of a save) and leaves a running writer's
alone.

A path that cannot be written raises ``OutputError`` naming the user's path,
never the temporary file's.
"""
from __future__ import annotations

import errno
import os
import re
import secrets

from .errors import OutputError

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")
# What graphrnn wrote before temporary names carried a process id (tempfile.mkstemp).
_OLD_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(\.tmp)?$")


def _reason(exc):
    return (exc.strerror or str(exc)).lower()


def make_folder(folder, what="folder"):
    """Create ``folder`` (and its parents) if needed; an ``OutputError`` names it when that fails."""
    folder = os.fspath(folder)
    if not folder:
        raise OutputError(f"the {what} is an empty path; name a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot use {folder} as the {what}: it is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputError(f"cannot use {folder} as the {what}: {_file_on_the_way(folder)} "
                          "is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot create the {what} {folder}: {_reason(exc)}") from None
    return folder


def _file_on_the_way(path):
    """The first ancestor of ``path`` that exists and is not a folder."""
    parts = []
    head = os.path.abspath(path)
    while head and head != os.path.dirname(head):
        parts.append(head)
        head = os.path.dirname(head)
    for p in reversed(parts):
        if os.path.exists(p) and not os.path.isdir(p):
            return p
    return os.path.dirname(path) or path


def _check_writable_below(folder, say):
    """``folder`` (created if missing) can hold ``path``: no file on the way, write permission."""
    blocker = _file_on_the_way(folder)
    if os.path.exists(blocker) and not os.path.isdir(blocker):
        raise OutputError(f"{say}: {blocker} is a file, not a folder")
    existing = folder
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{say}: no permission to write in {existing}")


def check_output_file(path):
    """Refuse, before any work is done, a file path that cannot be written:
    a folder, a file below a file, a folder without write permission."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a folder; name a file")
    _check_writable_below(os.path.dirname(os.path.abspath(path)), f"cannot write {path}")


def check_output_folder(folder, what="folder"):
    """Refuse, before any work is done, a folder that cannot be created or
    written into (a file, a file on its path, no write permission)."""
    folder = os.fspath(folder)
    if not folder:
        raise OutputError(f"the {what} is an empty path; name a folder")
    say = f"cannot use {folder} as the {what}"
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{say}: it is a file, not a folder")
    _check_writable_below(os.path.abspath(folder), say)


def atomic_write(path, data):
    """Write ``data`` (bytes, str as UTF-8, or a function given the open binary
    file) to ``path`` atomically; creates the folder. Returns ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a folder; name a file")
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OutputError(f"cannot write {path}: {_file_on_the_way(folder)} is a file, "
                              "not a folder") from None
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
        raise
    fsync_folder(folder)
    return path


def save_figure(fig, path, dpi=100):
    """Lay out ``fig``, save it through ``atomic_write`` (the format from the
    path's suffix) and close it, also when saving fails; returns ``path``."""
    from matplotlib import pyplot as plt
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        plt.close(fig)
    return path


def fsync_folder(folder):
    """Flush a folder's entries (a rename lives there) to disk; a no-op where
    folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid):
    if pid == os.getpid():
        return False  # this process is not writing it now: its own save failed without cleaning up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: alive, another user's
        return exc.errno == errno.EPERM
    return True


def clean_temporaries(folder, names):
    """Remove temporary files in ``folder`` that a killed save of one of
    ``names`` (a function: target file name -> bool) left behind. Returns the
    names removed; errors (a read-only folder) are ignored."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry)
        if m is not None:
            if not names(m["name"]) or _alive(int(m["pid"])):
                continue
        else:
            m = _OLD_TEMP.match(entry)
            if m is None or not names(m["name"]):
                continue
        try:
            os.unlink(os.path.join(folder, entry))
            removed.append(entry)
        except OSError:
            pass
    return removed
