"""Who may write a run directory: one process at a time, and never over another run's files.

A run holds an exclusive lock on `<run dir>/.lock` (flock) for as long as it runs; the kernel releases it when
the process ends, a crash or a kill included, so a directory is never left locked. A directory that already
holds a run's files (metrics.json, status.json, checkpoints) is refused unless the run continues it
(`resume=auto`, or a checkpoint inside it): nothing a finished, stopped or failed run saved is overwritten.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mnist_lab.errors import UserError
from mnist_lab.status import STATUS_FILE, read_status

LOCK_FILE = ".lock"
RUN_FILES = ("metrics.json", STATUS_FILE, "checkpoints/last.pt", "checkpoints/best.pt")

_held: dict[Path, int] = {}  # run directory -> the open lock file of this process


class DirectoryTaken(UserError):
    """The run directory is another process's, or holds another run's files: the message says which and what
    to do (exit status 2)."""


def unwritable_reason(directory: Path) -> str | None:
    """Why `directory` could not be created and written, or None if it can."""
    try:
        for parent in [directory, *directory.parents]:
            if parent.exists():
                if not parent.is_dir():
                    return f"{parent} is a file, not a directory"
                if not os.access(parent, os.W_OK | os.X_OK):
                    return f"{parent} is not writable"
                return None
    except OSError as error:  # a name too long for the file system, a loop of links
        return error.strerror or str(error)
    return None


def continues(resume: str | None, run_dir: Path) -> bool:
    """Whether `resume` continues the run in `run_dir` (auto, or a checkpoint or folder inside it)."""
    if resume is None:
        return False
    if resume == "auto":
        return True
    target, here = Path(resume).absolute().resolve(), run_dir.absolute().resolve()
    return target == here or here in target.parents


def claim(run_dir: Path, resume: str | None, key: str) -> bool:
    """Make `run_dir` this process's for the run: refuse it if another process holds it or it holds another
    run's files that `resume` does not continue (`key` is the setting that named the directory). Whether it
    was claimed now: claiming a directory this process holds already does nothing."""
    run_dir = run_dir.absolute()
    if run_dir in _held:
        return False
    if reason := unwritable_reason(run_dir):
        raise DirectoryTaken(f"{key}={run_dir} cannot be created: {reason}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise DirectoryTaken(f"{key}={run_dir}: cannot be used: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        status = read_status(run_dir) or {}
        who = f" (pid {status['pid']} on {status.get('host', '?')})" if "pid" in status else ""
        raise DirectoryTaken(
            f"{key}={run_dir} is in use by another run{who}: wait for it to end, or choose a new directory"
        ) from None
    found = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if found and not continues(resume, run_dir):
        os.close(fd)
        raise DirectoryTaken(f"{key}={run_dir} holds {describe(run_dir, found)}, which a new run would "
                             f"overwrite: continue it with resume=auto, or choose a new directory")  # fmt: skip
    _held[run_dir] = fd
    return True


def describe(run_dir: Path, found: list[str]) -> str:
    """What a run directory holds, as the refusal says it: `a completed run (metrics.json, ...)`."""
    status = (read_status(run_dir) or {}).get("status")
    said = {"running": "an interrupted", None: "another"}  # running, yet nobody holds it: it ended unsaid
    state = "a completed" if "metrics.json" in found else said.get(status, f"a {status}")
    return f"{state} run ({', '.join(found)})"


def release(run_dir: Path) -> None:
    """Give `run_dir` up (the end of a run in a process that goes on: a notebook, the tests)."""
    fd = _held.pop(run_dir.absolute(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def owned(run_dir: Path, resume: str | None, key: str) -> Iterator[None]:
    """`run_dir` claimed for the duration of the block (see `claim`), and released after unless this process
    held it before."""
    claimed = claim(run_dir, resume, key)
    try:
        yield
    finally:
        if claimed:
            release(run_dir)
