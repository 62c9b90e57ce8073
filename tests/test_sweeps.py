"""Sweeps for real: Hydra multiruns in subprocesses (joblib, submitit_local, the basic launcher), failures
contained, resumed sweeps, the Optuna search with pruning, report.py and the HParams sessions."""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

import report
import train
from tests.conftest import PROJECT_ROOT
from trainer import choose_device
from trainer.hydra_callbacks import count_jobs, jobs_at_once
from trainer.runs import identity, job_dirs, read_status
from trainer.speed import available_cpus
from trainer.tuning import storage_url

TRAIN = str(PROJECT_ROOT / "train.py")


def tiny(root: Path) -> list[str]:
    """Overrides that train on the tiny synthetic set in a second or two."""
    return [f"data.source.root={root}", "data.source.verify_md5=false", "data.validation_size=100",
            "trainer.epochs=2", "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.device=cpu"]  # fmt: skip


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, **kwargs)


def statuses(sweep: Path) -> dict[str, str]:
    return {job.name: read_status(job)["status"] for job in job_dirs(sweep)}


@pytest.fixture(scope="module")
def joblib_sweeps(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> list[Path]:
    """Two parallel sweeps started at the same moment on real MNIST (2,000 training images, 2 epochs):
    2 models x 2 seeds, and 1 model x 2 seeds. Returns their sweep directories."""
    root = tmp_path_factory.mktemp("sweeps")
    real = [f"data.source.root={mnist_root}", "data.train_subset=2000", "data.validation_size=1000",
            "trainer.epochs=2", "trainer.device=cpu"]  # fmt: skip
    # The sweep directory keeps the project's pattern (microseconds and pid), under a temporary root.
    pattern = f"hydra.sweep.dir={root}/" + "${now:%H-%M-%S-%f}-${pid:}"
    started = [
        subprocess.Popen(
            [sys.executable, TRAIN, "-m", "hydra/launcher=joblib", grid, "seed=0,1", *real, pattern],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
        )  # fmt: skip
        for grid in ("model=lenet,resmlp", "model=lenet_res")
    ]
    outputs = [process.communicate(timeout=600)[0] for process in started]
    assert [p.returncode for p in started] == [0, 0], outputs
    sweeps = sorted(root.iterdir(), key=lambda d: len(job_dirs(d)), reverse=True)
    assert len(sweeps) == 2, outputs  # never one shared directory
    return sweeps


def test_joblib_sweeps_started_together_get_one_directory_per_job(joblib_sweeps: list[Path]) -> None:
    big, small = joblib_sweeps
    assert [len(job_dirs(big)), len(job_dirs(small))] == [4, 2]
    seen = set()
    for job in job_dirs(big) + job_dirs(small):
        metrics = json.loads((job / "metrics.json").read_text())
        status = read_status(job)
        assert status["status"] == "completed" and status["test_acc"] == metrics["test_acc"]
        seen.add((metrics["model"], metrics["seed"]))
        # jobs running at once share the cores instead of each taking all of them
        expected = max(available_cpus() // min(available_cpus(), len(job_dirs(job.parent))), 1)
        assert metrics["threads"] == expected
        assert metrics["best_val_acc"] > 0.5  # learned: 2 epochs on 2,000 real digits (chance: 0.1)
    assert seen == {(m, s) for m in ("LeNet", "ResBlockMLP", "LeNetRes") for s in (0, 1)}


def test_report_groups_seeds_and_matches_the_jobs_metrics(joblib_sweeps: list[Path]) -> None:
    sweep = joblib_sweeps[0]
    done = run([sys.executable, str(PROJECT_ROOT / "report.py"), str(sweep)])
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
        assert start.group_name == " ".join(identity([o.removeprefix("- ") for o in overrides]))
        assert start.hparams["seed"].number_value == metrics["seed"]
        assert start.hparams["model"].string_value in ("lenet", "resmlp")
        assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.003)
        tags = {m.name.tag for m in experiment.metric_infos}
        assert tags == {
            "hparams/best_val_acc",
            "hparams/test_acc",
            "hparams/test_loss",
            "hparams/train_seconds",
        }
        scalars = EventAccumulator(str(job))
        scalars.Reload()
        for tag, key in (("hparams/test_acc", "test_acc"), ("hparams/best_val_acc", "best_val_acc")):
            assert scalars.Scalars(tag)[-1].value == pytest.approx(metrics[key])


def test_failed_jobs_are_recorded_and_the_others_complete(tmp_path: Path, tiny_mnist: Path) -> None:
    # seed=1 raises NaN, seed=2 an out-of-memory error from inside training; lr=-1 is a bad value.
    boom = (
        "import runpy, sys, torch, trainer\n"
        "from trainer.interrupt import NonFiniteLoss\n"
        "real = trainer.fit\n"
        "def fit(*args, config, **kwargs):\n"
        "    if config['seed'] == 1: raise NonFiniteLoss('loss is nan')\n"
        "    if config['seed'] == 2: raise torch.OutOfMemoryError('CUDA out of memory (simulated)')\n"
        "    return real(*args, config=config, **kwargs)\n"
        "trainer.fit = fit  # train.py takes fit from the package when it runs below\n"
        f"sys.argv[0] = {TRAIN!r}\n"
        f"runpy.run_path({TRAIN!r}, run_name='__main__')\n"
    )
    done = run(
        [sys.executable, "-c", boom, "-m", "seed=0,1,2", *tiny(tiny_mnist), f"hydra.sweep.dir={tmp_path}"]
    )
    assert done.returncode == 1, done.stdout + done.stderr
    bad = run(
        [
            sys.executable,
            TRAIN,
            "-m",
            "optimizer.lr=0.01,-1",
            *tiny(tiny_mnist),
            f"hydra.sweep.dir={tmp_path / 'b'}",
        ]
    )
    assert bad.returncode == 1
    assert statuses(tmp_path) == {"0": "completed", "1": "failed", "2": "failed"}
    assert statuses(tmp_path / "b") == {"0": "completed", "1": "failed"}
    assert read_status(tmp_path / "1")["error"] == "loss is nan"
    assert read_status(tmp_path / "2")["error"] == "OutOfMemoryError: CUDA out of memory (simulated)"
    assert "Traceback" in (tmp_path / "2" / "train.log").read_text()  # the traceback is in the job's log
    assert read_status(tmp_path / "b" / "1")["error"] == "optimizer.lr must be a number > 0, got -1"
    assert (tmp_path / "0" / "metrics.json").is_file() and (tmp_path / "b" / "0" / "metrics.json").is_file()
    # The end of the sweep names every failed job with its error and log.
    printed = done.stdout + done.stderr
    assert "1 completed, 2 failed" in printed
    assert "job 2 [" in printed and "seed=2" in printed
    assert "OutOfMemoryError: CUDA out of memory (simulated)" in printed
    assert str(tmp_path / "2" / "train.log") in printed


def test_resumed_sweep_skips_completed_jobs_and_continues_stopped_ones(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    sweep = [sys.executable, TRAIN, "-m", "seed=0,1,2", *tiny(tiny_mnist), f"hydra.sweep.dir={tmp_path}"]
    assert run([*sweep, "trainer.max_steps=20"]).returncode == 1  # every job stopped at step 20 of 32
    assert statuses(tmp_path) == {"0": "stopped", "1": "stopped", "2": "stopped"}
    first = run([*sweep, "resume_sweep=true"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert statuses(tmp_path) == {"0": "completed", "1": "completed", "2": "completed"}
    for job in job_dirs(tmp_path):
        assert "resuming after 20 steps" in (job / "train.log").read_text()

    (tmp_path / "1" / "status.json").unlink()  # as if job 1 had been interrupted before it recorded its end
    before = {
        j.name: ((j / "metrics.json").stat().st_mtime_ns, (j / "metrics.json").read_text())
        for j in job_dirs(tmp_path)
    }
    again = run([*sweep, f"resume_sweep={tmp_path}"])
    assert again.returncode == 0, again.stdout + again.stderr
    after = {
        j.name: ((j / "metrics.json").stat().st_mtime_ns, (j / "metrics.json").read_text())
        for j in job_dirs(tmp_path)
    }
    assert after["0"] == before["0"] and after["2"] == before["2"]  # not run again
    assert after["1"][0] != before["1"][0]  # run again (from its last.pt) ...
    assert json.loads(after["1"][1])["test_acc"] == json.loads(before["1"][1])["test_acc"]  # ... same result
    assert again.stdout.count("completed before: skipped") == 2

    other = run(
        [
            sys.executable,
            TRAIN,
            "-m",
            "seed=0,1",
            *tiny(tiny_mnist),
            f"hydra.sweep.dir={tmp_path}",
            "resume_sweep=last",
        ]
    )
    assert other.returncode == 2 and "this command asks for" in other.stderr  # not the same sweep: refused


def test_submitit_local_runs_a_sweep(tmp_path: Path, tiny_mnist: Path) -> None:
    done = run([sys.executable, TRAIN, "-m", "hydra/launcher=submitit_local", "seed=0,1", *tiny(tiny_mnist),
                f"hydra.sweep.dir={tmp_path}"])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(tmp_path) == {"0": "completed", "1": "completed"}
    assert (tmp_path / ".submitit").is_dir()  # it went through submitit
    seeds = [json.loads((j / "metrics.json").read_text())["seed"] for j in job_dirs(tmp_path)]
    assert seeds == [0, 1]


def test_optuna_search_prunes_a_hopeless_trial_and_continues_its_study(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    search = [sys.executable, str(PROJECT_ROOT / "tune.py"), "hparams_search=lenet", f"tune.dir={tmp_path}",
              "tune.pruner.startup_trials=2", "tune.pruner.warmup_epochs=1", *tiny(tiny_mnist)]  # fmt: skip
    first = run([*search, "tune.trials=2"])
    assert first.returncode == 0, first.stdout + first.stderr
    study = optuna.load_study(study_name="lenet", storage=storage_url(tmp_path))
    kept = [(t.number, t.state, t.value, t.params) for t in study.trials]
    assert [state for _, state, _, _ in kept] == [optuna.trial.TrialState.COMPLETE] * 2

    # The next trial is made hopeless on purpose: a learning rate far too small to learn anything.
    study.enqueue_trial({"optimizer.lr": 1e-9, "optimizer.weight_decay": 1e-5, "trainer.batch_size": 64,
                         "scheduler": "none", "data.max_shift": 0})  # fmt: skip
    second = run([*search, "tune.trials=3"])
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="lenet", storage=storage_url(tmp_path))
    assert [(t.number, t.state, t.value, t.params) for t in study.trials[:2]] == kept  # earlier trials kept
    hopeless = study.trials[2]
    assert hopeless.state == optuna.trial.TrialState.PRUNED and hopeless.params["optimizer.lr"] == 1e-9
    assert list(hopeless.intermediate_values) == [1]  # stopped after its first epoch
    assert read_status(tmp_path / "trial-2")["status"] == "pruned"
    assert json.loads((tmp_path / "trial-0" / "metrics.json").read_text())["epochs"] == 2
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_val_acc"] == max(t.value for t in study.trials[:2])
    assert "python train.py hparams_search=lenet" in second.stdout + second.stderr


def test_tune_refuses_a_bad_setting_by_name(tmp_path: Path) -> None:
    done = run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tune.py"),
            "hparams_search=lenet",
            f"tune.dir={tmp_path}",
            "tune.jobs=0",
        ]
    )
    assert done.returncode == 2 and "tune.jobs must be an integer > 0, got 0" in done.stderr
    done = run([sys.executable, str(PROJECT_ROOT / "tune.py"), "model=lenet"])
    assert done.returncode == 2 and "choose a search space" in done.stderr


def test_report_refuses_a_directory_without_runs(tmp_path: Path) -> None:
    assert report.main([str(tmp_path)]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2


def test_omp_num_threads_set_by_the_user_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.speed import default_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == available_cpus()
    assert os.environ.get("OMP_NUM_THREADS") is None


def test_jobs_at_once_and_threads_follow_the_launcher() -> None:
    cpus = available_cpus()
    assert count_jobs(["model=lenet,resmlp", "seed=0,1,2", "trainer.epochs=1"]) == 6
    assert count_jobs(["seed=range(0,4)"]) == 4
    assert count_jobs(["optimizer.lr=interval(0.1,1)"]) is None  # not a grid: left to the launcher
    joblib = OmegaConf.create(
        {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    )
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


def test_parallel_jobs_spread_over_gpus_by_job_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [choose_device("auto", job) for job in (0, 1, 5, 7)] == [
        torch.device("cuda", k) for k in (0, 1, 1, 3)
    ]
    assert choose_device("auto") == torch.device("cuda")  # a single run: the default GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_device("auto", 3) == torch.device("cuda")


def test_resume_sweep_last_is_the_newest_sweep(tmp_path: Path) -> None:
    new = str(tmp_path / "multirun" / "2026-11-22" / "12-00-00-000001-99")
    assert train.sweep_dir(None, new) == new and train.sweep_dir(False, new) == new
    assert train.sweep_dir("last", new) == new  # nothing to resume: the callback then says so
    for name in (
        "2026-11-21/23-59-59-000000-1",
        "2026-11-22/09-00-00-000000-5",
        "2026-11-22/08-59-59-999999-7",
    ):
        (tmp_path / "multirun" / name).mkdir(parents=True)
        (tmp_path / "multirun" / name / "multirun.yaml").write_text("{}")
    assert train.sweep_dir(True, new) == str(tmp_path / "multirun" / "2026-11-22" / "09-00-00-000000-5")
    assert train.sweep_dir("some/dir", new) == str(Path("some/dir").absolute())


def test_identity_ignores_how_a_job_is_run() -> None:
    assert identity(["seed=1", "resume=auto", "trainer.max_steps=5", "resume_sweep=last", "model=lenet",
                     "trainer.threads=1", "+experiment@_global_=x"]) == ["+experiment@_global_=x", "model=lenet", "seed=1"]  # fmt: skip


def test_slurm_launcher_preset_composes_with_its_settings() -> None:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 60)
