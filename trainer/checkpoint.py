"""Checkpoints: dicts of tensors and plain values, written atomically, read with `weights_only=True`."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, flushed, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)  # the previous checkpoint at `path` stays as it was
        if isinstance(error, OSError):
            raise OSError(
                error.errno, f"could not write checkpoint {path}: {error.strerror or error}"
            ) from error
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it (`weights_only=True`)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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
