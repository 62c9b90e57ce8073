"""Checkpoints: dicts of tensors and plain values, written atomically and read back with `weights_only=True`;
a file that is not such a checkpoint is refused with a CheckpointError that says what it is instead."""

import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.files import atomic_write

LAST, BEST = "last.pt", "best.pt"
# What every checkpoint of a run holds (TrainState.state_dict); a model alone needs "model" and "config".
RUN_KEYS = ("model", "optimizer", "scheduler", "loader", "rng", "config", "epoch", "step")


class CheckpointError(ValueError):
    """The file is not a checkpoint this code can use: the message names it and says why."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically. Serialised in memory first: torch's zip writer, when the disk is
    full, says only `[enforce fail at inline_container.cc]`; a plain write says ENOSPC."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue(), "checkpoint")


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", needs: tuple[str, ...] = ("model", "config")
) -> dict[str, Any]:
    """Read a checkpoint without running code from it (`weights_only=True`) and check it holds `needs`."""
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise OSError(error.errno, f"{path}: cannot be read: {error.strerror}") from None
    try:
        checkpoint = torch.load(io.BytesIO(content), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds; say which one of three things the file is
        raise CheckpointError(f"{path}: {_why_unreadable(content, error)}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    missing = [key for key in needs if key not in checkpoint]
    if missing:
        held = ", ".join(map(str, list(checkpoint)[:8])) or "nothing"
        raise CheckpointError(
            f"{path}: not a checkpoint of this project: no {', '.join(missing)} (it holds {held})"
        )
    return checkpoint


def _why_unreadable(content: bytes, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`. torch's own message is not shown: it ends with the
    advice to load with weights_only=False, which would run whatever the file holds."""
    said = str(error)
    refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", said)
    if refused or "Weights only load failed" in said and "nsupported" in said:
        what = f" ({refused.group(1)})" if refused else ""
        return f"refused: it holds objects a checkpoint never holds{what}; it was not loaded"
    if content[:2] == b"PK":  # a zip archive, as torch.save writes, but not a whole one
        return "truncated or damaged: torch.save's archive is incomplete; use another copy, or the run's other checkpoint"
    return "not a checkpoint: not a file torch.save wrote"


def load_weights(model: nn.Module, weights: dict[str, Any], path: Path) -> None:
    """`model.load_state_dict(weights)`, after `check_weights`."""
    check_weights(model, weights, path)
    model.load_state_dict(weights)


def check_weights(model: nn.Module, weights: dict[str, Any], path: Path) -> None:
    """Refuse weights made for another model, with one line naming the first parameter that differs and both
    shapes (load_state_dict's own message lists them all, over many lines)."""
    expected = model.state_dict()
    for key, tensor in weights.items():
        if key in expected and getattr(tensor, "shape", None) != expected[key].shape:
            raise CheckpointError(
                f"{path}: made by another model: {key} is {list(tensor.shape)} in the checkpoint, "
                f"{list(expected[key].shape)} in {type(model).__name__}"
            )
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        names = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise CheckpointError(f"{path}: made by another model: {names} for {type(model).__name__}")


class Checkpoints:
    """`last.pt` (every epoch, and where a run stops) and `best.pt` (the best validation epoch) in `folder`;
    `write=False` (the ranks of a DDP job but rank 0) reads them but never writes."""

    def __init__(self, folder: Path, write: bool = True) -> None:
        self.folder, self.write = folder, write
        self.last, self.best = folder / LAST, folder / BEST

    def save(self, state: dict[str, Any], best: bool = False) -> None:
        """Write `state` as last.pt, and as best.pt too when `best`."""
        if not self.write:
            return
        save_checkpoint(state, self.last)
        if best:
            save_checkpoint(state, self.best)

    def best_model(self) -> dict[str, Any]:
        """The model weights of best.pt."""
        return load_checkpoint(self.best)["model"]
