"""lab/outcomes.py: a run's outcome survives pickling, as a SLURM job's result does on its way back to the sweep."""

import pickle

import pytest

from mnist_lab.outcomes import RunFailed, RunStopped


@pytest.mark.parametrize("outcome", [RunFailed("optimizer.lr must be a number > 0, got -1", 2),
                                     RunStopped("stopped by SIGUSR2 in epoch 3 after step 40", 140)])  # fmt: skip
def test_an_outcome_comes_back_from_a_pickle_with_its_line_and_exit_code(outcome: Exception) -> None:
    again = pickle.loads(pickle.dumps(outcome))
    assert type(again) is type(outcome) and str(again) == str(outcome)
    assert again.exit_code == outcome.exit_code  # type: ignore[attr-defined]
