"""One writer per run folder: an advisory lock on RUN/.lock, held by the training process (rank 0).

The kernel drops the lock when its holder exits, kill -9 included, so a crashed run never leaves
a stale lock behind. Where `fcntl` is missing (Windows) runs are not locked.
"""
from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

NAME = ".lock"


def acquire(run: Path):
    """(open lock file or None, None) on success; (None, why) when another process holds the folder."""
    if fcntl is None:
        return None, None
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        return None, (f"{run} is in use by another training process (pid {holder}); two writers would "
                      "interleave its checkpoints and metrics: wait for that one to end or stop it first")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd, None


def release(fd) -> None:
    if fd is not None:
        os.close(fd)    # closing the descriptor drops the flock
