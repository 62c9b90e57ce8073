"""What a run directory says about its run (`status.json`, written by mnist_lab.shell alone), and the job
directories of a sweep.

status: running | completed | failed | stopped (a signal or max_steps; last.pt saved) | pruned (by a search)
Sweeps read it to report failures and to skip completed jobs when resumed; report.py reads it too.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mnist_lab.trainer.files import write_json

STATUS_FILE = "status.json"


def write_status(run_dir: Path, status: str, overrides: list[str], **fields: Any) -> None:
    """Write `run_dir/status.json` atomically (a reader never sees half a file)."""
    record = {
        "status": status,
        "overrides": overrides,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **ray_node(),
        **fields,
    }
    write_json(record, run_dir / STATUS_FILE)


def ray_node() -> dict[str, str]:
    """{"ray_node": <id>} in a job Ray runs (hydra/launcher=ray): which node of the cluster it ran on, where
    several share a host name; nothing elsewhere (Ray is not imported for it)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    return {"ray_node": ray.get_runtime_context().get_node_id()}


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status record, or None if it has none, or one this lab did not write (unreadable, not a
    mapping with a `status` and the run's `overrides`)."""
    try:
        record = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        return None
    overrides = record.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None
    return record


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a Hydra sweep (its numbered sub-directories), in job order."""
    return sorted((d for d in sweep.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
