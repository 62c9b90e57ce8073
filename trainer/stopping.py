"""Stopping cleanly: SIGINT/SIGTERM finish the current step, then the run saves `last.pt` and exits."""

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


class TrainingStopped(Exception):  # noqa: N818 (a stop, not an error)
    """Training stopped before its last epoch and saved `checkpoint`; `exit_code` is what the process returns."""

    def __init__(self, reason: str, checkpoint: Path, exit_code: int) -> None:
        super().__init__(f"{reason}; saved {checkpoint}")
        self.reason, self.checkpoint, self.exit_code = reason, checkpoint, exit_code


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the step that produced it was not applied."""


class StopOnSignal:
    """Within `with`, SIGINT and SIGTERM set `signum` instead of killing the run; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # asked twice: do not wait for the step
        self.signum = signum
        log.warning(
            f"{signal.Signals(signum).name} received: stopping after this step (send it again to stop now)"
        )
