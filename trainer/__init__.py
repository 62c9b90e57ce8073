"""Plain PyTorch training: the loop (trainer.loop: fit / train_one_epoch), evaluation, state and checkpoints,
stops, TensorBoard, device choice, schedules and speed settings. Knows nothing of Hydra, OmegaConf or Optuna.

Nothing is imported here, so that a torch-free module (trainer.files) costs no torch import."""
