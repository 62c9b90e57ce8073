"""What a run directory says about its run: `status.json`, written when a run starts and when it ends.

status: running | completed | failed | stopped (a signal or max_steps; last.pt saved) | pruned (by a search)
Sweeps read it to report failures and to skip completed jobs when resumed; report.py reads it too.
"""

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"

# Overrides that say how to run a job, not what it trains: two jobs that differ only in these are the same job.
HOW_TO_RUN = (
    "resume=",
    "resume_sweep=",
    "trainer.max_steps=",
    "trainer.threads=",
    "trainer.device=",
    "hydra.",
)


def identity(overrides: list[str]) -> list[str]:
    """The overrides that define what a job trains (sorted), without those that only say how to run it."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(HOW_TO_RUN))


def write_status(run_dir: Path, status: str, overrides: list[str], **fields: Any) -> None:
    """Write `run_dir/status.json` atomically (a reader never sees half a file)."""
    record = {
        "status": status,
        "overrides": overrides,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **fields,
    }
    path = run_dir / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status record, or None if it has none (or an unreadable one)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a Hydra sweep (its numbered sub-directories), in job order."""
    return sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
