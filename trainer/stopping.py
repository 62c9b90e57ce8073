"""Why a run stops early: SIGINT/SIGTERM/SIGUSR2 or `max_steps` (after the current step, with last.pt saved), or a
loss that is no longer finite (before its update is applied)."""

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# Under DDP the ranks agree on a stop every this many steps: an all-reduce and a read of its result synchronise
# every process, which the loop avoids elsewhere; a stop then comes at most this many steps after the signal.
AGREE_EVERY = 10


class TrainingStopped(Exception):  # noqa: N818 (a stop, not an error)
    """A run stopped before it ended, with `checkpoint` saved (None: nothing saved yet); `exit_code` is what
    the process returns."""

    def __init__(self, reason: str, checkpoint: Path | None, exit_code: int) -> None:
        super().__init__(f"{reason}; {f'saved {checkpoint}' if checkpoint else 'nothing was saved yet'}")
        self.reason, self.checkpoint, self.exit_code = reason, checkpoint, exit_code

    def __reduce__(self) -> tuple[type, tuple[str, Path | None, int]]:  # a SLURM job's result is pickled
        return type(self), (self.reason, self.checkpoint, self.exit_code)


@contextlib.contextmanager
def stopping_at_once(doing: str, checkpoint: Path | None = None) -> Iterator[None]:
    """Within the block (what a run does outside its training loop: `doing`, e.g. "during the final test"),
    SIGINT, SIGTERM and SIGUSR2 stop the run at once with TrainingStopped, `checkpoint` being what is saved by
    then. There is no step to finish first; the handlers before are put back after."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise TrainingStopped(f"stopped by {signal.Signals(signum).name} {doing}", checkpoint, 128 + signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in StopRequests.SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite at `step` of a pass; `value` is None when the check came after the
    update (on an accelerator the check is deferred to avoid a synchronisation per step)."""

    def __init__(self, step: int, value: float | None, message: str | None = None) -> None:
        value_text = "not finite" if value is None else value
        super().__init__(message or f"loss is {value_text} at step {step} of this pass")
        self.step, self.value = step, value

    def __reduce__(self) -> tuple[type, tuple[int, float | None, str]]:  # a SLURM job's result is pickled
        return type(self), (self.step, self.value, str(self))

    exit_code = 1  # nobody's input was wrong: the training diverged


class StopRequests:
    """Within `with`, SIGINT and SIGTERM are noted instead of killing the run (a second one stops at once),
    and `reached(step)` says whether to stop after global step `step`: a signal came, or `max_steps`."""

    # SIGUSR2: what SLURM sends before a job's time limit (submitit asks for it, hydra.launcher.signal_delay_s).
    SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else []))

    def __init__(self, max_steps: int | None = None, agree: Callable[[int], int] | None = None) -> None:
        """`agree`: under DDP, the largest signal number any rank received (0: none), asked every AGREE_EVERY
        steps so that all ranks stop after the same step (a rank never stops on its own signal alone)."""
        self.max_steps = max_steps
        self.agree = agree
        self.received: int | None = None  # the signal this process got
        self.signum: int | None = None  # the signal the run stops on (under DDP: once the ranks agreed)
        self.signalled_at = 0.0
        self._announced = False  # the stop has been logged
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
            log.info("training: Ctrl-C or SIGTERM stops after the current step and saves last.pt")
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            if self.agree is not None and time.monotonic() - self.signalled_at < 2:
                return  # torchrun sends its SIGTERM twice in a few milliseconds: one request
            raise KeyboardInterrupt  # asked twice: do not wait for the step
        # Noted only: logging here could re-enter a log write the signal interrupted (a "Logging error"
        # traceback); reached() says it, after the step.
        self.received, self.signalled_at = signum, time.monotonic()

    def reached(self, step: int) -> bool:
        """True when the run should stop after global step `step`."""
        if self.agree is None:
            self.signum = self.received
        elif step % AGREE_EVERY == 0 and (agreed := self.agree(self.received or 0)):
            self.signum = self.received or agreed  # another rank's signal stops this one too
        if self.signum is not None and not self._announced:
            self._announced = True
            log.warning(f"{signal.Signals(self.signum).name} received: stopping after this step "
                        "(send it again to stop now)")  # fmt: skip
        return self.signum is not None or (self.max_steps is not None and step >= self.max_steps)

    def stopped(self, epoch: int, step: int, checkpoint: Path) -> TrainingStopped:
        """The TrainingStopped to raise, `checkpoint` already written."""
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            return TrainingStopped(
                f"stopped by {name} in epoch {epoch} after step {step}", checkpoint, 128 + self.signum
            )
        return TrainingStopped(
            f"stopped at trainer.max_steps={self.max_steps}, in epoch {epoch}", checkpoint, 0
        )
