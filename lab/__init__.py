"""The config-aware layer and the Python API: turns a Hydra config into plain objects for trainer/, data/ and
models/, and a run directory (status, metrics, checkpoints) around them. Entry points call it; it never calls
them, and it never exits the process.

    from lab import train, load      # lab/api.py: train(*overrides) -> Run; load(run_dir) -> Run
"""

from typing import Any

API = ("train", "load", "Run", "Predictions")


def __getattr__(name: str) -> Any:
    """`from lab import train` imports lab.api (and torch) only when asked: lab.status and lab.tools.report stay light."""
    if name in API:
        from lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
