"""The trial's side of a search, inside its `python train.py` run: after each epoch, report the validation
accuracy to the study and ask its pruner whether to go on (Pruned ends the run)."""

from collections.abc import Callable

import optuna
from omegaconf import DictConfig

from mnist_lab.errors import Pruned, UserError
from mnist_lab.search.study import make_pruner, open_storage
from mnist_lab.trainer.evaluation import EpochStats


def trial_reporter(tune: DictConfig) -> Callable[[int, EpochStats], None]:
    """An epoch-end callable for trial `tune.trial`: report the epoch's validation accuracy to the study;
    raise Pruned when the pruner says so."""
    storage = open_storage(tune)
    try:
        study = optuna.load_study(study_name=tune.study, storage=storage, pruner=make_pruner(tune))
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(tune.study), tune.trial
        )
    except KeyError as error:
        raise UserError(
            f"tune.trial={tune.trial}: no such trial in study {tune.study!r} at {tune.dir}"
        ) from error
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, val: EpochStats) -> None:
        trial.report(val.accuracy, epoch)
        if trial.should_prune():
            raise Pruned(f"pruned by the study after epoch {epoch} (validation accuracy {val.accuracy:.2%})")

    return report
