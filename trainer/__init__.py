"""The training loop (fit / train_one_epoch / evaluate), device choice, schedules and checkpoints."""

from trainer.device import choose_device
from trainer.loop import EpochStats, FitResult, evaluate, fit, train_one_epoch

__all__ = ["EpochStats", "FitResult", "choose_device", "evaluate", "fit", "train_one_epoch"]
