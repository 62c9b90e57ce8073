"""The one atomic file writer (checkpoints, metrics.json, status.json, best.json all go through it), and
checkpoints: dicts of tensors and plain values, read back with `weights_only=True`."""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

LAST, BEST = "last.pt", "best.pt"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], what: str = "file") -> None:
    """Call `write(file)` on a temporary file beside `path`, flush it to disk, then rename it to `path`.

    A reader never sees half a file, and a failed write (a full disk) leaves the previous `path` as it was;
    an OSError is raised again naming `what` and the path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OSError(error.errno, f"could not write {what} {path}: {error.strerror or error}") from error
        raise


def write_json(content: Any, path: Path) -> None:
    """`content` as indented JSON, written atomically."""
    atomic_write(path, lambda file: file.write((json.dumps(content, indent=2) + "\n").encode()), "file")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically."""
    atomic_write(path, lambda file: torch.save(state, file), "checkpoint")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it (`weights_only=True`)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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
