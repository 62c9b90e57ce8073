"""trainer/stopping.py: SIGINT/SIGTERM/SIGUSR2 (SLURM's time limit) are noted (a second one stops at once) and map
to exit statuses 130/143/140;
max_steps stops after its step; handlers are put back afterwards."""

import os
import signal
from pathlib import Path

import pytest

from mnist_lab.trainer.stopping import StopRequests


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR2, 140)]
)
def test_a_signal_is_noted_and_stops_after_the_step(tmp_path: Path, signum: int, status: int) -> None:
    before = signal.getsignal(signum)
    with StopRequests(max_steps=None) as stop:
        assert not stop.reached(1)
        os.kill(os.getpid(), signum)  # a real signal to this process: the handler notes it, nothing dies
        assert stop.reached(1)
        stopped = stop.stopped(epoch=2, step=17, checkpoint=tmp_path / "last.pt")
    name = signal.Signals(signum).name
    assert stopped.exit_code == status and stopped.reason == f"stopped by {name} in epoch 2 after step 17"
    assert str(stopped) == f"stopped by {name} in epoch 2 after step 17; saved {tmp_path / 'last.pt'}"
    assert signal.getsignal(signum) is before  # put back


def twice(signum: int) -> None:
    os.kill(os.getpid(), signum)
    os.kill(os.getpid(), signum)


def test_a_second_signal_stops_at_once() -> None:
    with StopRequests(), pytest.raises(KeyboardInterrupt):
        twice(signal.SIGTERM)


def test_max_steps_stops_after_that_step_with_exit_status_0(tmp_path: Path) -> None:
    with StopRequests(max_steps=20) as stop:
        assert not stop.reached(19) and stop.reached(20)
    stopped = stop.stopped(epoch=1, step=20, checkpoint=tmp_path / "last.pt")
    assert stopped.exit_code == 0 and stopped.reason == "stopped at trainer.max_steps=20, in epoch 1"


def test_under_ddp_the_ranks_agree_every_few_steps_and_never_stop_alone() -> None:
    from mnist_lab.trainer.stopping import AGREE_EVERY

    asked: list[int] = []

    def agree(received: int) -> int:  # what distributed.largest does: here, another rank got SIGTERM too
        asked.append(received)
        return max(received, signal.SIGTERM if len(asked) >= 2 else 0)

    with StopRequests(agree=agree) as stop:
        os.kill(os.getpid(), signal.SIGINT)  # this rank's own signal
        stopped_at = next(step for step in range(1, 5 * AGREE_EVERY) if stop.reached(step))
    assert stopped_at == AGREE_EVERY  # not at step 1: the other ranks would wait in their next collective
    assert asked == [signal.SIGINT]  # one agreement, at step AGREE_EVERY, not one a step
    assert stop.signum == signal.SIGINT

    asked.clear()
    with StopRequests(agree=agree) as other:  # no signal here; another rank's stops this one at the same step
        stopped_at = next(step for step in range(1, 5 * AGREE_EVERY) if other.reached(step))
    assert (stopped_at, other.signum, asked) == (2 * AGREE_EVERY, signal.SIGTERM, [0, 0])
