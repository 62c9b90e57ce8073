"""How a run or a sweep ended when it did not complete, as exceptions: library code raises them, and the entry
points (lab/cli.py) turn them into exit statuses. Each carries the one line already shown to the user."""


class _Outcome(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # a SLURM job's result is pickled back to the sweep
        return type(self), (str(self), self.exit_code)


class RunFailed(_Outcome):
    """A run failed: its status.json says `failed`; `exit_code` is 2 for a bad value or file, 1 otherwise."""


class RunStopped(_Outcome):  # noqa: N818 (a stop, not an error)
    """A run (or a sweep's jobs) stopped on a signal after saving last.pt; the process exits 128 + signal."""


# Raised from Hydra callbacks, which turn an Exception into a warning and go on (hydra/_internal/callbacks.py):
# these derive from BaseException, as SystemExit does, so that they end the command.


class SweepFailed(BaseException):
    """A sweep ended with jobs that did not complete (listed in the log); the process exits 1."""


class Refused(BaseException):  # noqa: N818 (a refusal, not an error of the code)
    """A check before anything started refused the command (its message is the one line shown); exit 2."""
