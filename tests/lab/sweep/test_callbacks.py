"""lab/sweep/callbacks.py with lab/run.py, through real Hydra multiruns in subprocesses: parallel jobs share the
cores, failures are contained and summed up, resumed sweeps skip completed jobs, submitit runs a sweep."""

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_lab.config import compose
from mnist_lab.status import job_dirs, read_status
from mnist_lab.sweep.callbacks import CheckOutputDir, Sweep, count_jobs, jobs_at_once
from mnist_lab.trainer.speed import available_cpus
from tests.conftest import run_script, tiny_overrides

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def statuses(sweep: Path) -> dict[str, str]:
    return {job.name: read_status(job)["status"] for job in job_dirs(sweep)}


@pytest.mark.slow
def test_failed_jobs_are_recorded_and_the_others_complete(tmp_path: Path, tiny_mnist: Path) -> None:
    # lr=1e10 makes the loss NaN within an epoch; lr=-1 is a bad value; 0.05 trains.
    done = run_script("train.py", "-m", "optimizer=sgd", "optimizer.lr=0.05,1e10,-1", *tiny_overrides(tiny_mnist),
                      f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert statuses(tmp_path) == {"0": "completed", "1": "failed", "2": "failed"}
    nan, bad = read_status(tmp_path / "1"), read_status(tmp_path / "2")
    assert nan["error"].startswith("loss is nan at step") and "the update was not applied" in nan["error"]
    assert nan["exit_code"] == 1
    assert bad["error"] == "optimizer.lr must be a number > 0, got -1" and bad["exit_code"] == 2
    assert (tmp_path / "0" / "metrics.json").is_file() and not (tmp_path / "2" / "checkpoints").exists()
    # The end of the sweep names every failed job with its error and log.
    printed = done.stdout + done.stderr
    assert "1 completed, 2 failed" in printed
    assert "job 2 [" in printed and "optimizer.lr=-1" in printed
    assert str(tmp_path / "1" / "train.log") in printed and "loss is nan" in printed


@pytest.mark.slow
def test_resumed_sweep_skips_completed_jobs_and_continues_stopped_ones(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    # 16 steps an epoch: the 1-epoch job completes, the 2-epoch one stops at step 20 of 32 (trainer.max_steps).
    tiny = [o for o in tiny_overrides(tiny_mnist) if not o.startswith("trainer.epochs=")]
    sweep = ["-m", "trainer.epochs=1,2", *tiny, f"hydra.sweep.dir={tmp_path}"]
    assert run_script("train.py", *sweep, "trainer.max_steps=20").returncode == 1  # not every job completed
    assert statuses(tmp_path) == {"0": "completed", "1": "stopped"}
    before = (tmp_path / "0" / "metrics.json").stat().st_mtime_ns
    again = run_script("train.py", *sweep, f"resume_sweep={tmp_path}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(tmp_path) == {"0": "completed", "1": "completed"}
    assert (tmp_path / "0" / "metrics.json").stat().st_mtime_ns == before  # not run again
    assert again.stdout.count("completed before: skipped") == 1
    assert "after 20 steps" in (tmp_path / "1" / "train.log").read_text()  # continued from last.pt
    # A job resumed from its last.pt ends as one that ran through (tests/lab/test_run.py: exactly).
    assert json.loads((tmp_path / "1" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_submitit_local_runs_a_sweep(tmp_path: Path, tiny_mnist: Path) -> None:
    done = run_script("train.py", "-m", "hydra/launcher=submitit_local", "seed=0,1", *tiny_overrides(tiny_mnist),
                      f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(tmp_path) == {"0": "completed", "1": "completed"}
    assert (tmp_path / ".submitit").is_dir()  # it went through submitit
    seeds = [json.loads((j / "metrics.json").read_text())["seed"] for j in job_dirs(tmp_path)]
    assert seeds == [0, 1]


def test_jobs_at_once_follow_the_launcher() -> None:
    cpus = available_cpus()
    assert count_jobs(["model=lenet,resmlp", "seed=0,1,2", "trainer.epochs=1"]) == 6
    assert count_jobs(["seed=range(0,4)"]) == 4
    assert count_jobs(["optimizer.lr=interval(0.1,1)"]) is None  # not a grid: left to the launcher
    joblib = OmegaConf.create({"_target_": JOBLIB})
    assert jobs_at_once(OmegaConf.merge(joblib, {"n_jobs": -1}), 100) == cpus
    assert jobs_at_once(OmegaConf.merge(joblib, {"n_jobs": 3}), 2) == 2  # never more than the jobs
    local = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                              "array_parallelism": 256})  # fmt: skip
    assert jobs_at_once(local, 6) == 6
    basic = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    slurm = OmegaConf.create(
        {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    )
    assert jobs_at_once(basic, 6) is None and jobs_at_once(slurm, 6) is None  # one at a time / own CPUs


def sweep_config(tmp_path: Path, *overrides: str):  # noqa: ANN201
    """The config a multirun's callbacks get for `python train.py -m <overrides>` (sweeps: the grid's overrides)."""
    fixed = [o for o in overrides if "," not in o]
    cfg = compose(*fixed, f"hydra.sweep.dir={tmp_path}", return_hydra_config=True)
    cfg.hydra.overrides.task = [o for o in overrides if not o.startswith("hydra/")]
    return cfg


def test_sweep_callback_shares_the_cores_between_parallel_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mnist_lab.sweep.callbacks.available_cpus", lambda: 8)
    # The callback writes os.environ itself: give it a copy, so that nothing it sets outlives the test.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    Sweep().on_multirun_start(sweep_config(tmp_path, "hydra/launcher=joblib", "seed=0,1,2,3"))
    assert os.environ["OMP_NUM_THREADS"] == "2"  # 4 jobs at once on 8 CPUs

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice is kept
    Sweep().on_multirun_start(sweep_config(tmp_path, "hydra/launcher=joblib", "seed=0,1,2,3"))
    assert os.environ["OMP_NUM_THREADS"] == "3"

    monkeypatch.delenv("OMP_NUM_THREADS")
    Sweep().on_multirun_start(sweep_config(tmp_path, "seed=0,1,2,3"))  # the basic launcher: one at a time
    assert "OMP_NUM_THREADS" not in os.environ


def test_sweep_callback_refuses_to_resume_another_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as ended:
        Sweep().on_multirun_start(sweep_config(tmp_path, "seed=0,1", "resume_sweep=last"))
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        f"error: resume_sweep=last: no sweep to resume at {tmp_path} (no multirun.yaml)\n"
    )


@pytest.mark.parametrize("content", ["hydra: [unclosed", "just text", "hydra: {overrides: 3}"])
def test_a_damaged_multirun_yaml_is_refused_naming_it(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "multirun.yaml").write_text(content)
    with pytest.raises(SystemExit) as ended:
        Sweep().on_multirun_start(sweep_config(tmp_path, "seed=0,1", f"resume_sweep={tmp_path}"))
    assert ended.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"error: resume_sweep={tmp_path}: {tmp_path / 'multirun.yaml'} is unreadable"
    )


def test_a_sweep_directory_that_cannot_be_made_is_named_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    cfg = sweep_config(blocker / "sweep", "seed=0,1")
    with pytest.raises(SystemExit) as ended:  # the callback ends the command: Hydra would only warn
        CheckOutputDir().on_multirun_start(cfg)
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        f"error: hydra.sweep.dir={blocker / 'sweep'} cannot be created: {blocker} is a file, not a directory\n"
    )
    assert blocker.read_text() == "keep me"


def test_resuming_a_sweep_with_other_overrides_is_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    OmegaConf.save(
        {"hydra": {"overrides": {"task": ["seed=0,1", "trainer.max_steps=20"]}}}, tmp_path / "multirun.yaml"
    )
    Sweep().on_multirun_start(
        sweep_config(tmp_path, "seed=0,1", "resume_sweep=last")
    )  # max_steps: how to run
    with pytest.raises(SystemExit) as ended:
        Sweep().on_multirun_start(sweep_config(tmp_path, "seed=0,1,2", "resume_sweep=last"))
    assert ended.value.code == 2
    assert (
        f"{tmp_path} was swept with [seed=0,1], this command asks for [seed=0,1,2]" in capsys.readouterr().err
    )
