"""lab/report.py (report.py): the leaderboard of a sweep, seeds grouped, against the jobs' own metrics."""

import csv
import json
import statistics
from pathlib import Path

import pytest

from lab.report import report
from lab.status import job_dirs
from tests.conftest import run_script


@pytest.mark.slow
def test_report_groups_seeds_and_matches_the_jobs_metrics(joblib_sweeps: list[Path]) -> None:
    sweep = joblib_sweeps[0]
    done = run_script("report.py", str(sweep))
    assert done.returncode == 0, done.stderr
    for name in ("leaderboard.md", "leaderboard.csv", "val_acc_per_epoch.png", "test_acc_vs_params.png"):
        assert (sweep / name).stat().st_size > 0
    assert (sweep / "val_acc_per_epoch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
        mean = f"{statistics.fmean(m['test_acc'] for m in runs):.2%}"
        assert f"| {name} | {model} |" in done.stdout and mean in done.stdout  # the printed Markdown table
    assert "All runs:" in done.stdout and "data.train_subset=2000" in done.stdout


def test_report_refuses_a_directory_without_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no runs below {tmp_path}"):
        report(tmp_path)
    with pytest.raises(NotADirectoryError, match="missing is not a directory"):
        report(tmp_path / "missing")
