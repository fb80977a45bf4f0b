"""Files that are whole or absent after a crash: a temporary file beside the target, fsync, rename, fsync
of the folder. Temporary names are ``.<name>.tmp-<pid>-<random>`` (what a crash leaves; the index and
shard folders sweep them)."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["temp_path", "fsync_dir", "replacing", "write_bytes"]


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike, mode: str = "wb", **open_kw) -> Iterator[IO]:
    """A new file (created exclusively, ``0o666 & ~umask``) that replaces ``path`` when the block ends
    without an exception, durably; after an exception it is removed and ``path`` is as it was."""
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path, "wb") as f:
        f.write(data)
