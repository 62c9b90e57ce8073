"""Checkpoints: dicts of tensors and plain values, written atomically and read back with `weights_only=True`;
a file that is not such a checkpoint is refused with a CheckpointError that says what it is instead."""

import io
import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_lab.trainer.files import atomic_write

LAST, BEST = "last.pt", "best.pt"
# What every checkpoint of a run holds (TrainState.state_dict); a model alone needs "model" and "config".
RUN_KEYS = ("model", "optimizer", "scheduler", "loader", "rng", "config", "epoch", "step")


class CheckpointError(ValueError):
    """The file is not a checkpoint this code can use: the message names it and says why."""

    exit_code = 2  # a bad file of the user's (mnist_lab.errors)


class CheckpointUnreadable(OSError):
    """The checkpoint file cannot be read (missing, a directory, no permission): the message names it."""

    exit_code = 2


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
        raise CheckpointUnreadable(error.errno, f"{path}: cannot be read: {error.strerror}") from None
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols before it refuses the file
            warnings.simplefilter("ignore")
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


# The first bytes of files people mistake for checkpoints, and what to call them.
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip file",
}


def _why_unreadable(content: bytes, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file's `content`: what the file is instead. torch's own
    message is not shown: it ends with the advice to load with weights_only=False, which would run whatever
    the file holds."""
    refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(error))
    if refused:
        return f"refused: it holds objects a checkpoint never holds ({refused.group(1)}); it was not loaded"
    kind = next((name for magic, name in SIGNATURES.items() if content.startswith(magic)), None)
    if not content:
        kind = "an empty file"
    elif content[:2] == b"PK":  # a zip archive, as torch.save writes
        try:
            names = zipfile.ZipFile(io.BytesIO(content)).namelist()
        except zipfile.BadZipFile:
            return "truncated or damaged: torch.save's archive is incomplete; use another copy, or the run's other checkpoint"
        if any(name.endswith("/data.pkl") for name in names):
            return (
                "damaged: torch.save's archive is not whole; use another copy, or the run's other checkpoint"
            )
        kind = f"a zip archive that torch.save did not write (it holds {', '.join(names[:3]) or 'nothing'})"
    elif content[:1] == b"\x80":  # a pickle's protocol mark: a pickle, but not torch.save's archive
        if not content.endswith(b"."):
            return "truncated: a pickle that ends before its end mark (not loaded: a pickle can run code)"
        kind = "a plain pickle, not torch.save's archive (not loaded: a pickle can run code)"
    elif kind is None:
        kind = _text_kind(content)
    return f"not a checkpoint: it is {kind}" if kind else "not a checkpoint: not a file torch.save wrote"


def _text_kind(content: bytes) -> str | None:
    """`a JSON file` or `a text file` when `content` is one, else None."""
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return None
    if "\0" in text:
        return None
    try:
        json.loads(text)
    except ValueError:
        return "a text file"
    return "a JSON file"


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
