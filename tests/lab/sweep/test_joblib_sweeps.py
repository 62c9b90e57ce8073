"""Two real joblib sweeps on real MNIST, started at the same moment and made once for this file (a file runs on
one pytest-xdist worker), read by what reads a sweep: one directory per job with the cores shared
(lab/sweep/callbacks.py), the leaderboard (lab/tools/report.py), TensorBoard's HParams view (trainer/tensorboard.py)."""

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.overrides import defining_overrides
from mnist_lab.status import job_dirs, read_status
from mnist_lab.trainer.speed import available_cpus
from tests.conftest import run_script


@pytest.fixture(scope="module")
def joblib_sweeps(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> list[Path]:
    """Two parallel sweeps started at the same moment on real MNIST (2,000 training images, 1 epoch):
    2 models x 2 seeds, and 1 model x 1 seed. Returns their sweep directories, the larger first."""
    root = tmp_path_factory.mktemp("sweeps")
    real = [f"data.source.root={mnist_root}", "data.train_subset=2000", "data.validation_size=1000",
            "trainer.epochs=1", "trainer.device=cpu"]  # fmt: skip
    # The sweep directory keeps the project's pattern (microseconds and pid), under a temporary root.
    pattern = f"hydra.sweep.dir={root}/" + "${now:%H-%M-%S-%f}-${pid:}"
    started = [
        subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_ROOT / "train.py"),
                "-m",
                "hydra/launcher=joblib",
                *grid,
                *real,
                pattern,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
        )  # fmt: skip
        for grid in (("model=lenet,resmlp", "seed=0,1"), ("model=lenet_res", "seed=0"))
    ]
    outputs = [process.communicate(timeout=600)[0] for process in started]
    assert [p.returncode for p in started] == [0, 0], outputs
    sweeps = sorted(root.iterdir(), key=lambda d: len(list(d.glob("[0-9]*"))), reverse=True)
    assert len(sweeps) == 2, outputs  # never one shared directory
    for sweep, output in zip(sweeps, outputs, strict=False):
        (sweep / "sweep-output.txt").write_text(output)
    return sweeps


@pytest.mark.slow
def test_joblib_sweeps_started_together_get_one_directory_per_job(joblib_sweeps: list[Path]) -> None:
    big, small = joblib_sweeps
    assert [len(job_dirs(big)), len(job_dirs(small))] == [4, 1]
    cpus = available_cpus()
    seen = set()
    for sweep in joblib_sweeps:
        jobs = len(job_dirs(sweep))
        for job in job_dirs(sweep):
            metrics = json.loads((job / "metrics.json").read_text())
            status = read_status(job)
            assert status["status"] == "completed" and status["test_acc"] == metrics["test_acc"]
            seen.add((metrics["model"], metrics["seed"]))
            # the jobs running at once share the cores instead of each taking all of them
            assert metrics["threads"] * min(jobs, cpus) <= max(cpus, min(jobs, cpus))
            assert metrics["best_val_acc"] > 0.5  # learned: 1 epoch on 2,000 real digits (chance: 0.1)
        if cpus > 1 and jobs > 1:
            assert (
                f"{min(jobs, cpus)} jobs at a time on {cpus} CPUs" in (sweep / "sweep-output.txt").read_text()
            )
    assert seen == {(m, s) for m in ("LeNet", "ResBlockMLP") for s in (0, 1)} | {("LeNetRes", 0)}


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


@pytest.mark.slow
def test_hparams_one_session_per_job_in_its_own_directory(joblib_sweeps: list[Path]) -> None:
    sweep = joblib_sweeps[0]
    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(sweep))
    events.Reload()
    assert sorted(events.Runs()) == ["0", "1", "2", "3"]  # the job dirs themselves, no timestamped sub-runs
    content = events.PluginRunToTagToContent("hparams")
    for job in job_dirs(sweep):
        metrics = json.loads((job / "metrics.json").read_text())
        plugin = {tag: HParamsPluginData.FromString(data) for tag, data in content[job.name].items()}
        start = next(p.session_start_info for p in plugin.values() if p.HasField("session_start_info"))
        experiment = next(p.experiment for p in plugin.values() if p.HasField("experiment"))
        overrides = [o for o in (job / ".hydra" / "overrides.yaml").read_text().split("\n") if o]
        assert start.group_name == " ".join(defining_overrides([o.removeprefix("- ") for o in overrides]))
        assert start.hparams["seed"].number_value == metrics["seed"]
        assert start.hparams["model"].string_value in ("lenet", "resmlp")
        assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.003)
        tags = {m.name.tag for m in experiment.metric_infos}
        assert tags == {"test/acc", "test/loss", "val/acc", "val/loss", "train/loss", "time/epoch_s"}
        scalars = EventAccumulator(str(job))
        scalars.Reload()
        assert tags <= set(scalars.Tags()["scalars"])  # the HParams metrics are the run's own curves
        assert not [t for t in scalars.Tags()["scalars"] if t.startswith("hparams/")]  # no one-point curves
        assert scalars.Scalars("test/acc")[-1].value == pytest.approx(metrics["test_acc"])
        assert len(list(job.glob("**/events.out.tfevents.*"))) == 1  # one writer, one event file
