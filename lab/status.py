"""What a run directory says about its run (`status.json`), the sweep directories that hold runs, and the
identity of a job (its overrides, less those that only say how to run it).

status: running | completed | failed | stopped (a signal or max_steps; last.pt saved) | pruned (by a search)
Sweeps read it to report failures and to skip completed jobs when resumed; report.py reads it too.
"""

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from lab.config import override_key
from trainer.files import write_json

STATUS_FILE = "status.json"

# Keys that say how to run a job, not what it trains: two jobs that differ only in these (or in hydra.*)
# are the same job.
HOW_TO_RUN = {"resume", "resume_sweep", "trainer.max_steps", "trainer.threads", "trainer.device"}


class Pruned(Exception):  # noqa: N818 (an outcome, not an error)
    """A search's pruner ended this run after an epoch: its accuracy so far was not promising."""


def identity(overrides: list[str]) -> list[str]:
    """The overrides that define what a job trains (sorted), without those that only say how to run it."""
    keys = {o: override_key(o) for o in overrides}
    return sorted(o for o, key in keys.items() if key not in HOW_TO_RUN and not key.startswith("hydra."))


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
    write_json(record, run_dir / STATUS_FILE)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status record, or None if it has none (or an unreadable one)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a Hydra sweep (its numbered sub-directories), in job order."""
    return sorted((d for d in sweep.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))


def sweep_dir(resume: Any, new: str) -> str:
    """hydra.sweep.dir: `new`, or the sweep `resume_sweep` names (`last`/true: the newest in new's root)."""
    if resume in (None, False):
        return new
    if resume in (True, "last"):
        root = Path(new).parent.parent  # multirun/<date>/<time>: the newest sorts last
        earlier = sorted(p.parent for p in root.glob("*/*/multirun.yaml"))
        return str(earlier[-1]) if earlier else new
    return str(Path(str(resume)).absolute())
