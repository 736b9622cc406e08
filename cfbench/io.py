"""Atomic file writes (a crash or a full disk never leaves a half-written file behind), with the
permissions any other new file gets, and a folder lock for processes that share a folder."""

from __future__ import annotations

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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def exclusive(directory: str | Path):
    """Hold ``directory``'s lock file (created if needed) until the block ends: processes that
    would write the same folder take turns instead of interleaving their files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield directory
