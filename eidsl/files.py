"""Files eidsl writes: whole or not at all.

Every file a command produces (checkpoints, metrics, build folders, results) goes through
`atomic_write`: the bytes go to a temporary file in the same folder, are fsync'd, then renamed over
the target, so a process killed mid-write leaves the previous version intact.
"""
from __future__ import annotations

import os
from pathlib import Path

from eidsl.errors import EidslError
from eidsl.limits import MAX_SETTINGS_BYTES


class SaveError(EidslError, OSError):
    """A file could not be written (disk full, no permission); its previous version is intact.
    Still an OSError, with the original errno, for callers that handle those."""


def write_error(path: Path, exc: OSError) -> SaveError:
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    error = SaveError(f"cannot write {path}: {exc.strerror or exc}; {kept}")
    error.errno = exc.errno
    return error


def _write_bytes(f, data: bytes) -> None:
    f.write(data)


def atomic_write(path: str | Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` to `path` whole or not at all; `mode`: the new file's permissions (default: as
    `open` would create it)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            _write_bytes(f, data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int = MAX_SETTINGS_BYTES) -> str:
    """A small text file, refused (EidslError naming the limit) before reading when it is larger."""
    path = Path(path)
    size = path.stat().st_size     # OSError (missing, unreadable) is the caller's to report
    if size > limit:
        raise EidslError(f"{path}: {size:,} bytes, more than the {limit:,}-byte limit for this file")
    return path.read_text(encoding="utf-8")
