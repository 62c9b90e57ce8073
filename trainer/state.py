"""TrainState: everything a run needs to continue exactly where it stopped, and its checkpoint dict.

A checkpoint holds tensors and plain Python values only (model, optimizer, scheduler, scaler, the loader's
position, RNG states, progress, the run's config), so `torch.load(weights_only=True)` reads it.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mnist_lab.data.loader import DeviceBatches
from mnist_lab.trainer.evaluation import EpochStats


@dataclass
class Precision:
    """Mixed precision: the autocast dtype (None: float32) and, for float16, the gradient scaler."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None


def rng_states() -> dict[str, Any]:
    """torch's CPU and CUDA random states, as tensors (the loader keeps its own generator's state)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what `rng_states` saved."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Progress:
    """How far a run has come: whole epochs, optimiser steps, the best validation epoch, training time."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_val_acc: float = -1.0
    train_seconds: float = 0.0
    train_images: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def end_epoch(
        self, epoch: int, train: EpochStats, val: EpochStats | None, scalars: dict[str, float]
    ) -> bool:
        """Count a finished epoch; True if its validation accuracy is the best so far (always, with no
        validation: the last epoch is the best one there is)."""
        improved = val is None or val.accuracy > self.best_val_acc
        if improved:
            self.best_epoch = epoch
            self.best_val_acc = val.accuracy if val else self.best_val_acc
        self.epoch = epoch
        self.train_seconds += train.seconds
        self.train_images += train.images
        self.history.append({"epoch": epoch, **scalars})
        return improved


def averaged_every_step(model: nn.Module, optimizer: Optimizer, decay: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights and buffers (`decay` per step), updated after every
    step `optimizer` takes (torch's step hook: a step the gradient scaler skips leaves it as it is)."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    optimizer.register_step_post_hook(lambda *_: ema.update_parameters(model))
    return ema


@dataclass
class TrainState:
    """The model, its optimizer, schedule, loss and precision, the training batches' position, the progress.

    `config` is the run's config as plain values, stored in every checkpoint; `tally` is the unfinished
    epoch's running sums when a checkpoint is taken (or restored) in the middle of an epoch.
    """

    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    train_batches: DeviceBatches
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)  # the training loss (stateless)
    precision: Precision = field(default_factory=Precision)
    config: dict[str, Any] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    tally: dict[str, Any] | None = None
    replica: nn.Module | None = None  # under DDP: the DistributedDataParallel wrapper the steps go through
    ema: AveragedModel | None = (
        None  # trainer.ema: an exponential moving average of the weights, updated each step
    )

    @property
    def evaluation_module(self) -> nn.Module:
        """What validation and the test pass run: the weights' moving average (trainer.ema), or the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def training_module(self) -> nn.Module:
        """What a training step calls: the DDP wrapper (which averages the gradients) or the model."""
        return self.replica or self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: tensors and plain values only."""
        scaler = self.precision.scaler
        # With trainer.ema, "model" holds the averaged weights (those validated and tested, which evaluate, predict
        # and export read) and "trained_model" the weights training continues from.
        averaged = {} if self.ema is None else {
            "model": self.ema.module.state_dict(), "trained_model": self.model.state_dict(),
            "ema_updates": int(self.ema.n_averaged),
        }  # fmt: skip
        return {
            "model": self.model.state_dict(),
            **averaged,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loader": self.train_batches.state_dict(),
            "rng": rng_states(),
            "tally": self.tally,
            "config": self.config,
            **vars(self.progress),  # epoch (completed), step, best epoch and accuracy, time, history
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from `checkpoint`, mid-epoch included: weights, schedule, data order and RNG come back."""
        self.model.load_state_dict(checkpoint.get("trained_model", checkpoint["model"]))
        if self.ema is not None:  # a checkpoint without an average (trainer.ema added on resume) starts one
            self.ema.module.load_state_dict(checkpoint["model"])
            self.ema.n_averaged.fill_(checkpoint.get("ema_updates", 0))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.precision.scaler is not None and checkpoint["scaler"] is not None:
            self.precision.scaler.load_state_dict(checkpoint["scaler"])
        self.train_batches.load_state_dict(checkpoint["loader"])
        restore_rng_states(checkpoint["rng"])
        self.progress = Progress(**{key: checkpoint[key] for key in vars(Progress())})
        self.tally = checkpoint["tally"]  # None: the checkpoint closed an epoch
