"""Plain PyTorch training: the loop (fit / train_one_epoch), evaluation, state and checkpoints, stops,
TensorBoard, device choice, schedules and speed settings. Knows nothing of Hydra, OmegaConf or Optuna."""

from trainer.device import choose_device
from trainer.evaluation import EpochStats, evaluate, predict
from trainer.loop import final_evaluation, fit, train_one_epoch

__all__ = ["EpochStats", "choose_device", "evaluate", "final_evaluation", "fit", "predict", "train_one_epoch"]
