"""A trained model loaded back from its checkpoint, on its run's config (evaluate, predict, export, the API)."""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from mnist_lab.build import build_model
from mnist_lab.config import check_config, compose
from mnist_lab.errors import UserError
from mnist_lab.overrides import override_key
from mnist_lab.resume import checkpoint_path, saved_config
from mnist_lab.trainer.checkpoint import BEST, CheckpointError, load_checkpoint, load_weights
from mnist_lab.trainer.device import choose_device


@dataclass
class Trained:
    """A trained model loaded back from a checkpoint, with the config of its run."""

    model: nn.Module
    cfg: DictConfig
    checkpoint: Path
    device: torch.device


def load_trained(ckpt: str, overrides: list[str]) -> Trained:
    """The model of checkpoint `ckpt` (a .pt file, or a run directory: its best.pt) on its run's config, read
    with `weights_only=True`. `overrides` replace whole config groups they name (e.g. data=mnist_pickle
    data.source.path=x.pkl replaces `data`), composed from configs/ as train.py would."""
    path = checkpoint_path(ckpt, BEST, "ckpt")
    checkpoint = load_checkpoint(path)
    cfg = saved_config(checkpoint, path)
    if overrides:
        composed = compose(*overrides)
        for group in {override_key(o).split(".", 1)[0] for o in overrides}:
            cfg[group] = composed[group]
        trained_on = saved_config(checkpoint, path).data.name
        if cfg.data.name != trained_on:
            raise UserError(
                f"{path} was trained on {trained_on}; these overrides ask for {cfg.data.name} "
                f"(data.name): a model is evaluated on the dataset it learned"
            )
    try:
        check_config(cfg)  # the values too, as a run's own are checked before it starts
    except ValueError as error:
        raise CheckpointError(f"{path}: refused: its config: {error}") from None
    device = choose_device(cfg.trainer.device)
    model, _ = build_model(cfg, device)  # in the memory format it was tested in: the same numbers
    load_weights(model, checkpoint["model"], path)
    return Trained(model.eval(), cfg, path, device)
