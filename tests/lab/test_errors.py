"""mnist_lab.errors: each error carries its line and exit status, through a pickle too (a SLURM job's result
comes back to the sweep as one), and an exception the lab did not raise on purpose is told apart as a bug."""

import pickle
from pathlib import Path

import pytest

from mnist_lab.errors import NotFound, SweepStopped, UserError, details, exit_code_of
from mnist_lab.trainer.checkpoint import CheckpointError
from mnist_lab.trainer.files import WriteFailed
from mnist_lab.trainer.stopping import NonFiniteLoss, TrainingStopped


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UserError("optimizer.lr must be a number > 0, got -1"), 2),
        (NotFound("ckpt=x.pt: no checkpoint at x.pt"), 2),
        (SweepStopped("sweep stopped: resume it with ...", 130), 130),
        (
            TrainingStopped(
                "stopped by SIGUSR2 in epoch 3 after step 40", Path("run/checkpoints/last.pt"), 140
            ),
            140,
        ),
        (TrainingStopped("stopped at trainer.max_steps=3, in epoch 1", None, 0), 0),
        (NonFiniteLoss(19, float("nan")), 1),
        (CheckpointError("x.pt: not a checkpoint"), 2),
    ],
)
def test_an_error_comes_back_from_a_pickle_with_its_line_and_exit_code(error: Exception, code: int) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert exit_code_of(again) == exit_code_of(error) == code


def test_a_user_error_is_a_value_error_and_a_missing_file_a_file_not_found_error_for_the_api() -> None:
    assert isinstance(UserError("x"), ValueError)
    assert isinstance(NotFound("x"), FileNotFoundError) and str(NotFound("x: gone")) == "x: gone"


def test_a_full_disk_is_the_machines_failure_and_a_bad_path_the_users() -> None:
    full = WriteFailed(OSError(28, "No space left on device"), Path("m.json"), "file")
    denied = WriteFailed(OSError(13, "Permission denied"), Path("/m.json"), "file")
    assert (full.exit_code, denied.exit_code) == (1, 2)


def test_a_bug_is_recorded_as_one_with_its_type_not_as_a_bad_value() -> None:
    assert exit_code_of(KeyError("model")) is None
    assert details(KeyError("model")) == {"error": "KeyError: 'model'", "exit_code": 1, "bug": True}
    assert details(UserError("seed=x: must be an integer")) == {
        "error": "seed=x: must be an integer",
        "exit_code": 2,
    }
