"""trainer/state.py: a TrainState's checkpoint holds tensors and plain values only, and loading it back gives
the same model, optimizer, schedule, loader position, RNG state and progress."""

import io

import torch
from torch import nn

from mnist_lab.data.loader import DeviceBatches
from mnist_lab.trainer.evaluation import EpochStats
from mnist_lab.trainer.loop import train_one_epoch
from mnist_lab.trainer.state import Progress, TrainState
from tests.conftest import synthetic_digits


def make_state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    images, labels = synthetic_digits(96, seed=1)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), seed=0
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return TrainState(model, optimizer, scheduler, batches, config={"seed": seed})


def test_a_checkpoint_reads_back_with_weights_only_and_restores_everything() -> None:
    state = make_state()
    train_one_epoch(state.model, state.train_batches, state.optimizer, state.scheduler)
    state.progress.end_epoch(
        1, EpochStats(0.5, 0.8, 96, 1.0), EpochStats(0.4, 0.85, 32, 0.1), {"val/acc": 0.85}
    )
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    expected_next = torch.rand(3)  # what the RNG draws next, after the checkpoint was taken

    other = make_state(seed=1)  # other weights, other RNG
    other.load_state_dict(checkpoint)
    assert all(
        torch.equal(a, b)
        for a, b in zip(state.model.state_dict().values(), other.model.state_dict().values(), strict=True)
    )
    assert other.scheduler.state_dict() == state.scheduler.state_dict()
    assert (
        other.optimizer.state_dict()["state"][0]["step"] == state.optimizer.state_dict()["state"][0]["step"]
    )
    loaders = [s.train_batches.state_dict() for s in (state, other)]
    assert torch.equal(loaders[0]["generator"], loaders[1]["generator"])  # the next epoch's order comes back
    assert other.progress == state.progress and other.tally is None  # (the config is the resuming run's own)
    assert torch.equal(torch.rand(3), expected_next)  # the RNG continues where the checkpoint was taken


def test_progress_counts_epochs_and_keeps_the_best() -> None:
    progress = Progress()
    stats = EpochStats(loss=1.0, accuracy=0.5, images=100, seconds=2.0)
    assert progress.end_epoch(1, stats, EpochStats(1.0, 0.90, 10, 0.1), {})
    assert not progress.end_epoch(2, stats, EpochStats(1.0, 0.85, 10, 0.1), {})
    assert progress.end_epoch(3, stats, EpochStats(1.0, 0.95, 10, 0.1), {})
    assert (progress.epoch, progress.best_epoch, progress.best_val_acc) == (3, 3, 0.95)
    assert (progress.train_seconds, progress.train_images, len(progress.history)) == (6.0, 300, 3)
    assert progress.end_epoch(4, stats, None, {})  # without validation the last epoch is the best there is
    assert progress.best_epoch == 4
