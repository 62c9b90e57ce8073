"""lab/search/ (tune.py): an Optuna search whose trials are train.py runs, pruned and continued."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.search.driver import search as search_study
from mnist_lab.search.study import check_tune, storage_url
from mnist_lab.status import read_status
from tests.conftest import run_script, tiny_overrides


@pytest.mark.slow
@pytest.mark.long
def test_optuna_search_prunes_a_hopeless_trial_and_continues_its_study(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    search = ["hparams_search=lenet", f"tune.dir={tmp_path}", "tune.pruner.startup_trials=1",
              "tune.pruner.warmup_epochs=1", *tiny_overrides(tiny_mnist)]  # fmt: skip
    assert (
        search_study(compose(*search, "tune.trials=1"), [*search, "tune.trials=1"]) == 0
    )  # what tune.py calls
    study = optuna.load_study(study_name="lenet", storage=storage_url(tmp_path))
    kept = [(t.number, t.state, t.value, t.params) for t in study.trials]
    assert [state for _, state, _, _ in kept] == [optuna.trial.TrialState.COMPLETE]

    # The next trial is made hopeless on purpose: a learning rate far too small to learn anything.
    study.enqueue_trial({"optimizer.lr": 1e-9, "optimizer.weight_decay": 1e-5, "trainer.batch_size": 64,
                         "scheduler": "none", "augment.max_shift": 0})  # fmt: skip
    second = run_script("tune.py", *search, "tune.trials=2")
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="lenet", storage=storage_url(tmp_path))
    assert [
        (t.number, t.state, t.value, t.params) for t in study.trials[:1]
    ] == kept  # the earlier trial kept
    hopeless = study.trials[1]
    assert hopeless.state == optuna.trial.TrialState.PRUNED and hopeless.params["optimizer.lr"] == 1e-9
    assert list(hopeless.intermediate_values) == [1]  # stopped after its first epoch
    assert read_status(tmp_path / "trial-1")["status"] == "pruned"
    assert json.loads((tmp_path / "trial-0" / "metrics.json").read_text())["epochs"] == 2
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_val_acc"] == study.trials[0].value and best["trial"] == 0
    assert "python train.py hparams_search=lenet" in second.stdout + second.stderr


@pytest.mark.slow
def test_two_workers_fill_one_shared_study_without_running_a_trial_twice(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    journal = (
        tmp_path / "lenet.journal"
    )  # Optuna's JournalStorage: a file that workers on a shared disk share
    search = ["hparams_search=lenet", f"tune.dir={tmp_path}", f"tune.storage={journal}", "tune.trials=2",
              "tune.pruner.name=none", *tiny_overrides(tiny_mnist), "trainer.epochs=1"]  # fmt: skip
    workers = [
        subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "tune.py"), *search],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = [
        t
        for t in optuna.load_study(study_name="lenet", storage=storage).trials
        if "surplus" not in t.user_attrs
    ]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2  # tune.trials, across workers
    assert [t.number for t in trials] == [0, 1]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials of the one study
    for t in trials:  # each trial ran once, in its own run directory, by the worker that claimed it
        assert read_status(tmp_path / f"trial-{t.number}")["status"] == "completed"
        assert (tmp_path / f"trial-{t.number}" / "train.log").read_text().count("test accuracy") == 1
        ran = [out for out in outputs if f"trial {t.number}: " in out]
        assert len(ran) == 1, ran


@pytest.mark.slow
def test_tune_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    done = run_script("tune.py", "hparams_search=lenet", f"tune.dir={tmp_path}", "tune.jobs=0")
    assert done.returncode == 2 and done.stderr == "error: tune.jobs must be an integer > 0, got 0\n"
    assert not (tmp_path / "study.db").exists()


def test_search_settings_are_checked_by_name() -> None:
    cfg = compose("hparams_search=lenet", "tune.trials=0")
    with pytest.raises(ValueError, match=r"^tune.trials must be an integer > 0, got 0$"):
        check_tune(cfg.tune)
    cfg = compose("hparams_search=lenet", "tune.pruner.name=random")
    with pytest.raises(
        ValueError, match="tune.pruner.name must be one of median, halving, none, got 'random'"
    ):
        check_tune(cfg.tune)
    cfg = compose("hparams_search=lenet")
    cfg.tune.space["optimizer.lr"].low = 1.0  # above its high, 0.03
    with pytest.raises(
        ValueError, match="tune.space.optimizer.lr: low and high must be numbers with low < high"
    ):
        check_tune(cfg.tune)


def test_a_search_needs_a_search_space() -> None:
    from mnist_lab.search.driver import search

    with pytest.raises(ValueError, match="choose a search space: python tune.py hparams_search="):
        search(compose("model=lenet"), ["model=lenet"])


def test_a_search_needs_a_validation_split() -> None:
    from mnist_lab.search.driver import search

    with pytest.raises(ValueError, match="data.validation_size=0 leaves a search nothing to choose on"):
        search(compose("hparams_search=lenet", "data.validation_size=0"), [])


def test_the_study_storage_is_the_study_file_a_database_url_or_a_journal_file(tmp_path: Path) -> None:
    from mnist_lab.search.study import open_storage

    def storage(value: str | None) -> optuna.storages.BaseStorage:
        return open_storage(
            compose("hparams_search=lenet", f"tune.dir={tmp_path}", f"tune.storage={value}").tune
        )

    assert isinstance(storage("null"), optuna.storages.RDBStorage) and (tmp_path / "study.db").is_file()
    shared_db = storage(f"sqlite:///{tmp_path / 'shared.db'}")
    assert isinstance(shared_db, optuna.storages.RDBStorage) and shared_db.heartbeat_interval == 30
    assert isinstance(storage(str(tmp_path / "lenet.journal")), optuna.storages.JournalStorage)
    with pytest.raises(FileNotFoundError, match=f"tune.storage={tmp_path}/missing/x.journal: no folder"):
        storage(str(tmp_path / "missing" / "x.journal"))
    with pytest.raises(
        ValueError, match="tune.storage must be null, a database URL or a journal file path, got 3"
    ):
        check_tune(compose("hparams_search=lenet", "tune.storage=3").tune)
