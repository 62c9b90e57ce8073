"""lab/tools/report.py (report.py): the leaderboard of a sweep, seeds grouped, against the jobs' own metrics."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_lab.config import compose
from mnist_lab.pipeline import train
from mnist_lab.tools.report import report
from tests.conftest import tiny_overrides


def test_report_refuses_a_directory_without_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no runs below {tmp_path}"):
        report(tmp_path)
    with pytest.raises(NotADirectoryError, match="missing is not a directory"):
        report(tmp_path / "missing")


def test_runs_without_validation_are_reported_with_a_dash(tmp_path: Path, tiny_mnist: Path) -> None:
    for number, extra in enumerate(([], ["data.validation_size=0"])):
        overrides = [*tiny_overrides(tiny_mnist), "trainer.epochs=1", *extra]
        run_dir = tmp_path / str(number)
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
        train(compose(*overrides), run_dir)
    report(tmp_path)
    rows = {row["configuration"]: row for row in csv.DictReader((tmp_path / "leaderboard.csv").open())}
    assert rows["data.validation_size=0"]["best_val_acc_mean"] == ""  # no value, not a zero
    assert float(rows["defaults"]["best_val_acc_mean"]) > 0
    assert "| data.validation_size=0 | LeNet | 61,706 | 1 |" in (tmp_path / "leaderboard.md").read_text()


def test_runs_from_before_per_class_metrics_get_a_dash(tmp_path: Path, tiny_mnist: Path) -> None:
    run_dir = tmp_path / "0"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["seed=0"]), run_dir / ".hydra" / "overrides.yaml")
    metrics = {"model": "LeNet", "parameters": 61706, "epochs": 1, "best_val_acc": 0.9, "test_acc": 0.9,
               "train_seconds": 1.0, "history": []}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    report(tmp_path)
    assert "| 90.00% | - | 90.00% | - | 1.0 | 0 |" in (tmp_path / "leaderboard.md").read_text()
