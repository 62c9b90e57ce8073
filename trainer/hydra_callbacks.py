"""Hydra callbacks: checks that must run before Hydra creates the run directory (configs/config.yaml)."""

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def unwritable_reason(directory: Path) -> str | None:
    """Why `directory` could not be created and written, or None if it can."""
    for parent in [directory, *directory.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{parent} is not writable"
            return None
    return None


class CheckOutputDir(Callback):
    """Stop with one line naming the path, and exit status 2, when the run or sweep directory cannot be made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(directory: str, key: str) -> None:
        reason = unwritable_reason(Path(directory).absolute())
        if reason:
            print(f"error: {key}={directory} cannot be created: {reason}", file=sys.stderr)
            sys.exit(2)
