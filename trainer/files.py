"""The one atomic file writer: checkpoints, metrics.json, status.json and best.json all go through it.

Torch-free, so that reading and writing a run's status costs no torch import."""

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# What a failed write says when the machine, not the user, is at fault (the process exits 1, not 2).
DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this process's file size limit",
    errno.EIO: "input/output error",
}


def _umask() -> int:
    """The process's umask (read by setting it and putting it back at once: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class WriteFailed(OSError):
    """A file could not be written; `path` is the file, and the file that was there before is unchanged."""

    def __init__(self, error: OSError, path: Path, what: str) -> None:
        reason = DISK_ERRORS.get(error.errno or 0, error.strerror or str(error))
        super().__init__(error.errno, f"could not write {what} {path}: {reason}")
        self.path, self.reason = path, reason

    @property
    def disk_full(self) -> bool:
        """The machine's fault (a full disk, a quota, a size limit, an I/O error), not a bad path."""
        return self.errno in DISK_ERRORS

    @property
    def exit_code(self) -> int:
        """1 when the machine failed; 2 for a path the user chose that cannot be written."""
        return 1 if self.disk_full else 2


def atomic_write(path: Path, content: bytes, what: str = "file") -> None:
    """Write `content` to a temporary file beside `path`, flush it to disk, then rename it to `path`.

    A reader never sees half a file, and a failed write (a full disk) leaves the previous `path` as it was;
    the file gets the mode an ordinary `open(path, "w")` would give it (mkstemp's is 0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise WriteFailed(error, path, what) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteFailed(error, path, what) from None
        raise


def write_json(content: Any, path: Path, what: str = "file") -> None:
    """`content` as indented JSON, written atomically."""
    atomic_write(path, (json.dumps(content, indent=2) + "\n").encode(), what)
