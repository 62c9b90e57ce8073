"""Trainer: device choice, schedules, checkpoints, and whole seeded runs on tiny synthetic data."""

import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from data.loader import DeviceBatches
from models import LeNet
from tests.conftest import PROJECT_ROOT, synthetic_digits, tiny_config
from trainer import choose_device, evaluate, train_one_epoch
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.schedules import constant, cosine, one_cycle, step

EPOCH_TAGS = ["train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s", "throughput/img_per_s"]
TIMING_KEYS = {"train_seconds", "images_per_second", "time/epoch_s", "throughput/img_per_s"}


def test_choose_device() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="trainer.device='tpu7' is not a device name"):
        choose_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.device='cuda:0' is not available"):
            choose_device("cuda:0")


def lrs_over(scheduler_factory, steps: int = 100, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = scheduler_factory(optimizer, total_steps=steps, steps_per_epoch=10, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_follow_their_shapes() -> None:
    assert set(lrs_over(constant)) == {0.1}
    one = lrs_over(one_cycle, warmup_fraction=0.25)
    assert max(one) == pytest.approx(0.1) and one.index(max(one)) in (24, 25)
    assert one[0] == pytest.approx(0.1 / 25) and one[-1] < 1e-4
    cos = lrs_over(cosine, min_lr=0.001)
    assert (
        cos[0] == pytest.approx(0.1)
        and all(a >= b for a, b in zip(cos, cos[1:], strict=False))
        and cos[-1] < 0.0015
    )
    stepped = lrs_over(step, every_epochs=3, gamma=0.5)  # 10 steps an epoch: halves every 30 steps
    assert (
        stepped[29] == pytest.approx(0.1)
        and stepped[30] == pytest.approx(0.05)
        and stepped[60] == pytest.approx(0.025)
    )


def test_train_one_epoch_lowers_the_loss_on_learnable_data() -> None:
    torch.manual_seed(0)
    images, labels = synthetic_digits(512, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), shuffle=True
    )
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = evaluate(model, batches)
    stats = [train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0)) for _ in range(3)]
    after = evaluate(model, batches)
    assert stats[2].loss < stats[0].loss
    assert after.loss < before.loss / 4 and after.accuracy > 0.95
    assert stats[0].images == 512


def test_checkpoint_is_atomic_and_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"model": LeNet().state_dict(), "epoch": 1}, path)
    original = path.read_bytes()
    with (
        mock.patch("torch.save", side_effect=OSError(28, "No space left on device")),
        pytest.raises(OSError, match=f"could not write checkpoint {path}: No space left"),
    ):
        save_checkpoint({"model": LeNet().state_dict(), "epoch": 2}, path)
    assert path.read_bytes() == original
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["epoch"] == 1


def run_tiny(tmp_path: Path, tiny_mnist: Path, name: str, *overrides: str) -> tuple[dict, Path]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    metrics = train.train(tiny_config(tiny_mnist, *overrides), run_dir)
    return metrics, run_dir


def without_timings(metrics: dict) -> dict:
    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in TIMING_KEYS}

    return {**strip(metrics), "history": [strip(h) for h in metrics["history"]]}


def test_seeded_runs_repeat_exactly_and_seeds_differ(tmp_path: Path, tiny_mnist: Path) -> None:
    first, first_dir = run_tiny(tmp_path, tiny_mnist, "a", "seed=7")
    second, second_dir = run_tiny(tmp_path, tiny_mnist, "b", "seed=7")
    other, other_dir = run_tiny(tmp_path, tiny_mnist, "c", "seed=8")
    assert without_timings(first) == without_timings(second)
    assert json.loads((first_dir / "metrics.json").read_text())["test_acc"] == first["test_acc"]
    weights = [
        load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (first_dir, second_dir, other_dir)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert first["history"][-1]["train/loss"] < first["history"][0]["train/loss"]


def test_run_writes_metrics_checkpoints_and_tensorboard_curves(tmp_path: Path, tiny_mnist: Path) -> None:
    metrics, run_dir = run_tiny(tmp_path, tiny_mnist, "run", "trainer.epochs=3", "model=lenet_res")
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "model",
        "parameters",
        "epochs",
        "best_val_acc",
        "test_loss",
        "test_acc",
        "train_seconds",
        "images_per_second",
        "device",
        "seed",
        "git_commit",
    ):
        assert key in saved, key
    assert saved["model"] == "LeNetRes" and saved["epochs"] == 3 and saved["device"] == "cpu"
    assert saved["test_acc"] > 0.9  # the synthetic classes are easy

    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and best["epoch"] == saved["best_epoch"]
    assert best["best_val_acc"] == saved["best_val_acc"]
    assert last["config"]["model"]["_target_"] == "models.LeNetRes"

    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in EPOCH_TAGS:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx(
        [h["val/acc"] for h in saved["history"]]
    )
    assert len(events.Scalars("test/acc")) == 1 and events.Scalars("test/acc")[0].value == pytest.approx(
        saved["test_acc"]
    )
    assert {"test/loss", "test/acc"} <= set(scalars)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one writer per run directory


def test_test_set_is_evaluated_with_the_best_checkpoint(tmp_path: Path, tiny_mnist: Path) -> None:
    metrics, run_dir = run_tiny(tmp_path, tiny_mnist, "best", "trainer.epochs=2")
    model = LeNet()
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    from data.sources import read_idx

    data = read_idx(tiny_mnist, verify_md5=False)
    stats = evaluate(model, DeviceBatches(data.test_images, data.test_labels, 64, torch.device("cpu")))
    assert stats.accuracy == metrics["test_acc"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be an integer > 0, got 0"),
        ("trainer.epochs=-1", "trainer.epochs must be an integer >= 0, got -1"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a number > 0, got -0.1"),
        (
            "data.validation_size=0",
            "data.validation_size must be an integer > 0 (images) or a fraction in (0, 1), got 0",
        ),
        (
            "data.validation_size=1.5",
            "data.validation_size must be an integer > 0 (images) or a fraction in (0, 1), got 1.5",
        ),
        ("trainer.device=cuda:7", "trainer.device='cuda:7' is not available"),
    ],
)
def test_bad_values_are_refused_by_name(
    tmp_path: Path, tiny_mnist: Path, override: str, message: str
) -> None:
    if override.startswith("trainer.device") and torch.cuda.device_count() > 7:
        pytest.fail("this test assumes fewer than 8 CUDA devices")
    with pytest.raises(ValueError, match=re.escape(message)):
        run_tiny(tmp_path, tiny_mnist, "bad", override)
    assert not list((tmp_path / "bad").iterdir())  # nothing written for a run that could not start


@pytest.mark.parametrize("factory", [constant, step, cosine, one_cycle])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7])
def test_schedules_survive_very_short_runs(factory, steps: int) -> None:
    lrs = lrs_over(factory, steps=steps)
    assert len(lrs) == steps and all(0 < lr <= 0.1 + 1e-12 for lr in lrs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "error: optimizer.lr must be a number > 0, got -1"),
        (
            "model.activation=swish",
            "error: model.activation must be one of ['gelu', 'relu', 'tanh'], got 'swish'",
        ),
        ("data.source.path=/no/such.pkl", "error: pickle not found: /no/such.pkl (data.source.path)"),
    ],
)
def test_command_line_refuses_bad_values_in_one_line_with_exit_status_2(
    tmp_path: Path, override: str, message: str
) -> None:
    args = ["data=mnist_pickle", override] if override.startswith("data.") else [override]
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    # no checkpoints, no events; status.json says why
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "status.json", "train.log"]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith(message.removeprefix("error: "))


def test_output_directory_that_cannot_be_made_is_named_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for args in (
        ["hydra.run.dir=" + str(blocker / "run")],
        ["-m", "model=lenet", f"hydra.sweep.dir={blocker / 'sweep'}"],
    ):
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "train.py"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2
        assert f"cannot be created: {blocker} is a file, not a directory" in done.stderr
        assert "Traceback" not in done.stderr
    assert blocker.read_text() == "keep me"


def test_unknown_model_name_lists_the_choices(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "train.py"), "model=lenet7", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Could not find 'model/lenet7'" in done.stderr and "lenet_res" in done.stderr
    assert not (tmp_path / "run").exists()
