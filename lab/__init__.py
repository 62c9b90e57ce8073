"""mnist_lab: the config-aware layer (this folder, lab/) and, under it, mnist_lab.trainer, mnist_lab.data and
mnist_lab.models. It turns a Hydra config into plain objects for those, and a run directory (status, metrics,
checkpoints) around them; it is the Python API. Entry points call it; it never calls them, and it never exits
the process.

    from mnist_lab import train, load      # lab/api.py: train(*overrides) -> Run; load(run_dir) -> Run
"""

from typing import Any

API = ("train", "load", "Run", "Predictions")


def __getattr__(name: str) -> Any:
    """`from mnist_lab import train` imports mnist_lab.api (and torch) only when asked: mnist_lab.status and
    mnist_lab.tools.report stay light."""
    if name in API:
        from mnist_lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnist_lab' has no attribute {name!r}")
