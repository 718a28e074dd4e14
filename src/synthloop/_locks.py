"""Advisory `flock` locks on files and folders, shared by the evalset store and the replay
harness. POSIX only; elsewhere (or on a filesystem without locks) nothing is locked."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def try_lock(path: Path, *, exclusive: bool) -> int | None:
    """Open `path` (a file or a folder) and take a non-blocking `flock` on it.

    Returns the descriptor holding the lock (`release` it; the OS also releases it when the
    process dies), or None where no lock can be had: not POSIX, `path` cannot be opened, or
    its filesystem has no locks. Raises BlockingIOError when another holder has a
    conflicting lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # e.g. ENOLCK: a filesystem without locks
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether some process (in any container or host sharing the filesystem) holds a lock
    on `path`."""
    try:
        fd = try_lock(path, exclusive=True)
    except BlockingIOError:
        return True
    release(fd)
    return False
