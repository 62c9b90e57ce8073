"""Optuna glue shared by tune.py (which asks for trials) and train.py (which runs one and reports to it).

A trial is an ordinary `python train.py` run. After each epoch it reports its validation accuracy to the
study (an SQLite file in the study's directory) and asks the pruner whether to go on, so pruning works
whichever process runs the trial. optuna is imported only when a search is on.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

STUDY_FILE = "study.db"
PRUNERS = ("median", "halving", "none")


class Pruned(Exception):  # noqa: N818 (an outcome, not an error)
    """The study's pruner ended this trial after an epoch: its accuracy so far was not promising."""


def storage_url(study_dir: str | Path) -> str:
    """The SQLAlchemy URL of the study stored in `study_dir`."""
    return f"sqlite:///{Path(study_dir).absolute() / STUDY_FILE}"


def make_pruner(name: str, startup_trials: int, warmup_epochs: int) -> Any:
    """The pruner `tune.pruner` names: `median` (below the median of earlier trials at the same epoch),
    `halving` (successive halving: keep the best third at each rung) or `none`."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(warmup_epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner.name must be one of {', '.join(PRUNERS)}, got {name!r}")


def trial_reporter(
    study_dir: str | Path, study_name: str, number: int, pruner: Any
) -> Callable[[int, float], None]:
    """`after_epoch` for trial `number`: report the epoch's validation accuracy; raise Pruned when told to."""
    import optuna

    storage = optuna.storages.RDBStorage(storage_url(study_dir))
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), number
        )
    except KeyError as error:
        raise ValueError(
            f"tune.trial={number}: no such trial in study {study_name!r} at {study_dir}"
        ) from error
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, val_acc: float) -> None:
        trial.report(val_acc, epoch)
        if trial.should_prune():
            raise Pruned(f"pruned by the study after epoch {epoch} (validation accuracy {val_acc:.2%})")

    return report
