"""Interruption and resume: same weights and per-step losses as never stopping; signals; NaN; mismatches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from data.loader import DeviceBatches
from tests.conftest import PROJECT_ROOT, tiny_config
from trainer.checkpoint import load_checkpoint
from trainer.interrupt import NonFiniteLoss, TrainingStopped

STEPS_PER_EPOCH = 16  # 500 tiny training images in batches of 32


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_resume_mid_epoch_matches_never_stopping(tmp_path: Path, tiny_mnist: Path) -> None:
    straight = tmp_path / "straight"
    train.train(tiny_config(tiny_mnist, "model=resmlp"), straight)  # dropout: the RNG state matters too

    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingStopped) as stop:
        train.train(tiny_config(tiny_mnist, "model=resmlp", "trainer.max_steps=21"), stopped)
    assert stop.value.exit_code == 0 and "in epoch 2" in stop.value.reason
    midway = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (midway["epoch"], midway["step"], midway["loader"]["next_batch"]) == (1, 21, 5)
    resumed = train.train(tiny_config(tiny_mnist, "model=resmlp", "resume=auto"), stopped)

    final = [load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (straight, stopped)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    losses = [scalars(d, "train/loss_per_step") for d in (straight, stopped)]
    assert [step for step, _ in losses[1]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # no gap, no duplicate
    assert losses[0] == losses[1]
    assert [step for step, _ in scalars(stopped, "val/acc")] == [1, 2]
    expected = json.loads((straight / "metrics.json").read_text())
    assert resumed["test_acc"] == expected["test_acc"] and resumed["best_val_acc"] == expected["best_val_acc"]
    timing = ("time/epoch_s", "throughput/img_per_s")
    untimed = [
        [{k: v for k, v in h.items() if k not in timing} for h in run["history"]]
        for run in (resumed, expected)
    ]
    assert untimed[0] == untimed[1]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path, tiny_mnist: Path) -> None:
    run = tmp_path / "run"
    train.train(tiny_config(tiny_mnist, "trainer.epochs=1"), run)
    for override, named in (
        ("model=lenet_res", "model: checkpoint"),
        ("trainer.batch_size=64", "trainer.batch_size"),
    ):
        with pytest.raises(ValueError, match=f"resume=.*last.pt does not match this config: .*{named}"):
            train.train(
                tiny_config(tiny_mnist, "trainer.epochs=1", override, f"resume={run}"), tmp_path / "other"
            )
    with pytest.raises(FileNotFoundError, match="resume=/nowhere: no checkpoint at /nowhere"):
        train.train(tiny_config(tiny_mnist, "resume=/nowhere"), tmp_path / "other")


class PoisonedBatches(DeviceBatches):
    """Yields NaN images at one batch of one epoch."""

    epoch, poison_epoch, poison_batch = 0, 2, 3

    def __iter__(self):
        self.epoch += 1
        for number, (images, labels) in enumerate(super().__iter__(), start=1):
            if (self.epoch, number) == (self.poison_epoch, self.poison_batch):
                images = torch.full_like(images, float("nan"))
            yield images, labels


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    cfg = tiny_config(tiny_mnist)
    setup = train.build(cfg)
    good = setup.train_batches
    setup.train_batches = PoisonedBatches(good.images, good.labels, good.batch_size, setup.device,
                                          shuffle=True, max_shift=good.max_shift, seed=cfg.seed)  # fmt: skip
    with pytest.raises(
        NonFiniteLoss,
        match=r"loss is nan .*epoch 2, global step 19; the update was not applied; last good checkpoint: .*last\.pt",
    ):
        train.train_with(setup, cfg, tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(p).all() for p in setup.model.parameters())  # the bad update was not applied
    assert all(torch.isfinite(v).all() for v in last["model"].values())


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_last_pt_and_exits_then_resume_finishes(
    mnist_root: Path, tmp_path: Path, signum: int, status: int
) -> None:
    args = [sys.executable, str(PROJECT_ROOT / "train.py"), "trainer.epochs=3", "data.train_subset=20000",
            f"hydra.run.dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = []
    for line in process.stdout:  # wait until training has begun
        output.append(line)
        if line.startswith("LeNet ("):
            break
    time.sleep(1.0)  # inside the first epoch (about 1.7 s here), after the handlers are installed
    process.send_signal(signum)
    output += process.stdout.readlines()
    assert process.wait(timeout=120) == status, "".join(output)
    text = "".join(output)
    name = signal.Signals(signum).name
    assert f"stopped by {name} in epoch" in text and "resume with: python train.py" in text
    assert f"resume={tmp_path}/checkpoints/last.pt" in text
    assert "Traceback" not in text
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] > 0

    done = subprocess.run([*args, "resume=auto"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    steps = [step for step, _ in scalars(tmp_path, "train/loss_per_step")]
    assert steps == list(range(1, 3 * 157 + 1))  # 20,000 images in batches of 128: 157 steps an epoch
    assert [step for step, _ in scalars(tmp_path, "val/acc")] == [1, 2, 3]
