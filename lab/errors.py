"""The lab's errors: one family, each exception carrying the line the user reads and the exit status it ends a
command with. They are raised where the problem is found and reach the entry point as they are.

    2    a user's mistake: a bad value, override or file (UserError and what the lower layers raise alike)
    1    a failure that is nobody's input: a full disk, a lost DDP rank, a loss that diverged
    0    a run stopped as asked (trainer.max_steps) or pruned by a search
    130  stopped by SIGINT, 143 by SIGTERM (128 + the signal), with last.pt saved

trainer/, data/ and models/ know nothing of the lab, so their exceptions (TrainingStopped, WriteFailed,
CheckpointError, DataFormatError, ImageError, ...) carry the same `exit_code` attribute instead of deriving from
LabError; `exit_code_of` reads it from either. An exception without one is a bug in the code: it keeps its
traceback and exits 1.
"""

from typing import Any


class LabError(Exception):
    """An error the lab raises on purpose; `str()` is the one line shown, `exit_code` the command's status."""

    exit_code = 1

    def __init__(self, line: str, exit_code: int | None = None) -> None:
        super().__init__(line)
        if exit_code is not None:
            self.exit_code = exit_code

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # a SLURM job's result is pickled back to the sweep
        return type(self), (str(self), self.exit_code)


class UserError(LabError, ValueError):
    """A bad value, override or file: the line names it and says what to do. A ValueError, for the Python API."""

    exit_code = 2


class NotFound(LabError, FileNotFoundError):
    """A file or folder the user named is not there. A FileNotFoundError, for the Python API."""

    exit_code = 2

    def __init__(self, line: str) -> None:
        LabError.__init__(self, line)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[str]]:  # type: ignore[override]
        return type(self), (str(self),)


class SweepFailed(LabError):
    """A sweep ended with jobs that did not complete (the sweep's log lists them)."""


class SweepStopped(LabError):  # noqa: N818 (a stop, not an error)
    """A sweep stopped on a signal, its running jobs stopped after saving last.pt; 128 + the signal."""


class Pruned(LabError):  # noqa: N818 (an outcome, not an error)
    """A search's pruner ended this run after an epoch: its accuracy so far was not promising."""

    exit_code = 0


def exit_code_of(error: BaseException) -> int | None:
    """The exit status `error` ends a command with, or None for an exception the lab did not raise on purpose."""
    code = getattr(error, "exit_code", None)
    return code if isinstance(code, int) else None


def mark_said(error: BaseException) -> None:
    """Note that `error`'s line (or a bug's traceback) has been shown, so that the entry point ends the command
    with its exit status without showing it again."""
    error.said = True  # type: ignore[attr-defined]


def said(error: BaseException) -> bool:
    return bool(getattr(error, "said", False))


def details(error: BaseException) -> dict[str, Any]:
    """What status.json records of how a run failed: the line and the exit status, and for a bug (an exception the
    lab did not raise on purpose) its type, so that a bug in the code is never read as a bad value."""
    code = exit_code_of(error)
    if code is None:
        return {"error": f"{type(error).__name__}: {error}", "exit_code": 1, "bug": True}
    return {"error": str(error), "exit_code": code}
