"""trainer/stopping.py: SIGINT/SIGTERM are noted (a second one stops at once) and map to exit statuses 130/143;
max_steps stops after its step; handlers are put back afterwards."""

import os
import signal
from pathlib import Path

import pytest

from trainer.stopping import StopRequests


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
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
