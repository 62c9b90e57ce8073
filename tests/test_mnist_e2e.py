"""End to end on the real MNIST files (`make data`): a real run, a real subprocess, a real Hydra multirun."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from data.sources import read_idx, read_pickle
from tests.conftest import PROJECT_ROOT, compose_config

pytestmark = pytest.mark.mnist


def test_one_epoch_of_lenet_reaches_97_percent_on_the_official_test_set(
    mnist_root: Path, tmp_path: Path
) -> None:
    cfg = compose_config(f"data.source.root={mnist_root}", "trainer.epochs=1", "trainer.device=cpu")
    metrics = train.train(cfg, tmp_path)
    assert metrics["model"] == "LeNet" and metrics["parameters"] == 61_706
    assert metrics["test_acc"] >= 0.97, metrics["test_acc"]


def test_made_pickle_holds_exactly_the_official_files(mnist_root: Path) -> None:
    from_idx, from_pickle = read_idx(mnist_root), read_pickle(mnist_root / "mnist.pkl")
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(from_idx, name), getattr(from_pickle, name)), name


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",  # any working directory will do
    )


def test_command_line_run_prints_one_line_per_epoch_and_a_summary(mnist_root: Path, tmp_path: Path) -> None:
    done = run_train(
        "trainer.epochs=2", "data.train_subset=3000", "data=mnist_pickle", f"hydra.run.dir={tmp_path}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert "\r" not in out + done.stderr  # not a terminal: log lines, no progress bar
    assert "test accuracy" in out and f"--logdir {tmp_path}" in out
    assert (tmp_path / "train.log").read_text().count("epoch ") >= 2
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


def test_multirun_over_the_three_models_gives_one_run_directory_each(
    mnist_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        "-m",
        "model=lenet,lenet_res,resmlp",
        "trainer.epochs=1",
        "data.train_subset=5000",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1", "2"]
    models = []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        models.append(metrics["model"])
        assert metrics["test_acc"] > 0.5, (run, metrics["test_acc"])  # learned: chance is 0.1
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "train.log").is_file()
        events = EventAccumulator(str(run))
        events.Reload()
        assert {"train/loss", "val/acc", "test/acc"} <= set(events.Tags()["scalars"])
    assert models == ["LeNet", "LeNetRes", "ResBlockMLP"]
