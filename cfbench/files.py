"""Atomic file writes (a crash or a full disk never leaves a half-written file behind), with the
permissions any other new file gets, and a folder lock for processes that share a folder."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _file_mode() -> int:
    """0666 less the process's umask (0644 under the usual 022): mkstemp's own 0600 would hide
    results and demos from the other users of a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


class CheckpointError(ValueError):
    """A training checkpoint that is missing, corrupt or not the one recorded: the message names
    the file and how to train it again."""


#: what to do about the errors a write meets, by errno
WAY_OUT = {errno.ENOSPC: "free some space on that disk and run again (nothing half-written was left)",
           errno.EDQUOT: "free some of your quota and run again (nothing half-written was left)",
           errno.EROFS: "the disk is read-only: point the command at a writable folder",
           errno.EACCES: "you may not write there: point the command at a folder you own",
           errno.EPERM: "you may not write there: point the command at a folder you own"}


class WriteError(OSError):
    """A write that failed, named with its path and the way out (a user's to fix, one line)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in WAY_OUT:
            failed = WriteError(f"cannot write {path}: {error.strerror}; {WAY_OUT[error.errno]}")
            failed.errno = error.errno
            raise failed from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_if_changed(path: str | Path, data: bytes) -> None:
    """``atomic_write_bytes`` unless the file already holds ``data``: regenerating derived files
    from unchanged sources touches none of them."""
    path = Path(path)
    if not (path.exists() and path.read_bytes() == data):
        atomic_write_bytes(path, data)


@contextmanager
def exclusive(directory: str | Path):
    """Hold ``directory``'s lock file (created if needed) until the block ends: processes that
    would write the same folder take turns instead of interleaving their files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield directory
