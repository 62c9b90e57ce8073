"""lab/report.py (report.py): the leaderboard of a sweep, seeds grouped, against the jobs' own metrics."""

import csv
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lab.config import compose
from lab.report import report
from lab.run import train
from lab.status import job_dirs
from tests.conftest import run_script, tiny_overrides


@pytest.mark.slow
def test_report_groups_seeds_and_matches_the_jobs_metrics(joblib_sweeps: list[Path]) -> None:
    sweep = joblib_sweeps[0]
    done = run_script("report.py", str(sweep))
    assert done.returncode == 0, done.stderr
    figures = ("val_acc_per_epoch.png", "test_acc_vs_params.png", "test_error.png")
    for name in ("leaderboard.md", "leaderboard.csv", *figures):
        assert (sweep / name).stat().st_size > 0
    assert all((sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in figures)
    rows = {row["configuration"]: row for row in csv.DictReader((sweep / "leaderboard.csv").open())}
    assert set(rows) == {"model=lenet", "model=resmlp"}
    for name, model in (("model=lenet", "LeNet"), ("model=resmlp", "ResBlockMLP")):
        runs = [json.loads((j / "metrics.json").read_text()) for j in job_dirs(sweep)]
        runs = [m for m in runs if m["model"] == model]
        row = rows[name]
        assert int(row["seeds"]) == 2 and int(row["failed"]) == 0
        assert float(row["test_acc_mean"]) == pytest.approx(statistics.fmean(m["test_acc"] for m in runs))
        assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(m["test_acc"] for m in runs))
        assert float(row["best_val_acc_mean"]) == pytest.approx(
            statistics.fmean(m["best_val_acc"] for m in runs)
        )
        assert int(row["parameters"]) == runs[0]["parameters"]
        per_class = {
            k: statistics.fmean(m["test_class_acc"][k] for m in runs) for k in runs[0]["test_class_acc"]
        }
        weakest = min(per_class, key=per_class.__getitem__)  # by the dataset's class names
        assert (row["weakest_class"], float(row["weakest_class_acc"])) == (
            weakest,
            pytest.approx(per_class[weakest]),
        )
        mean = f"{statistics.fmean(m['test_acc'] for m in runs):.2%}"
        assert f"| {name} | {model} |" in done.stdout and mean in done.stdout  # the printed Markdown table
    assert "All runs:" in done.stdout and "data.train_subset=2000" in done.stdout


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
