"""Resuming a sweep (`python train.py -m <the same overrides> resume_sweep=last`), all of it in one place:
which directory `resume_sweep` names, the check that the sweep there was made by the same command, and what
each job does with what it finds in its directory (a completed job is skipped, a stopped one continues from
its last.pt, a directory holding another job is refused)."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnist_lab.outcomes import Refused
from mnist_lab.overrides import identity
from mnist_lab.status import read_status

log = logging.getLogger("sweep")
LAST_PT = Path("checkpoints") / "last.pt"


def sweep_dir(resume: Any, new: str) -> str:
    """hydra.sweep.dir (the `${sweep_dir:...}` resolver): `new`, or the sweep `resume_sweep` names
    (`last`/true: the newest in new's root)."""
    if resume in (None, False):
        return new
    if resume in (True, "last"):
        root = Path(new).parent.parent  # multirun/<date>/<time>: the newest sorts last
        earlier = sorted(p.parent for p in root.glob("*/*/multirun.yaml"))
        return str(earlier[-1]) if earlier else new
    return str(Path(str(resume)).absolute())


def check_resumable(sweep: Path, overrides: list[str], resume: Any) -> None:
    """Refuse to resume `sweep` unless it was swept with the same overrides (those that say how to run aside)."""
    saved = sweep / "multirun.yaml"
    if not saved.is_file():
        raise Refused(f"resume_sweep={resume}: no sweep to resume at {sweep} (no multirun.yaml)")
    before = identity(list(OmegaConf.load(saved).hydra.overrides.task))
    if before != identity(overrides):
        raise Refused(
            f"resume_sweep={resume}: {sweep} was swept with [{' '.join(before)}], "
            f"this command asks for [{' '.join(identity(overrides))}]; "
            "repeat the sweep's own overrides, or start a new sweep"
        )
    log.info(f"resuming sweep {sweep}: completed jobs are skipped, stopped ones continue")


@dataclass
class Earlier:
    """What a resumed sweep's job found in its directory."""

    completed: dict[str, Any] | None = None  # its status.json, when it completed before: skip it
    checkpoint: Path | None = None  # its last.pt, when it stopped before: continue from it
    refusal: str | None = None  # the directory holds another job


def earlier_job(run_dir: Path, overrides: list[str]) -> Earlier:
    """What a job of a resumed sweep does with what an earlier sweep left in `run_dir`."""
    before = read_status(run_dir)
    if before is not None and identity(before["overrides"]) != identity(overrides):
        return Earlier(refusal=f"resume_sweep: {run_dir} holds a job with overrides "
                               f"[{' '.join(identity(before['overrides']))}], not [{' '.join(identity(overrides))}]")  # fmt: skip
    if before is not None and before["status"] == "completed":
        return Earlier(completed=before)
    last = run_dir / LAST_PT
    return Earlier(checkpoint=last if last.is_file() else None)
