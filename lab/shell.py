"""What owns a run's process around the pipeline (mnist_lab.pipeline): its run directory (claimed for the run),
status.json, the line a run ends with and what to do next, rank-0 gating under DDP, and the sweep's and search's
hooks. train.py's Hydra main is `main` here; the Python API runs `run_job` as train.py does.

Every run leaves status.json in its run directory: running, completed, failed, stopped or pruned. A single run
that does not complete raises the exception that ended it (mnist_lab.errors: its exit status is on it), its line
already logged; in a multirun a job's failure is recorded and the sweep goes on (mnist_lab.sweep.callbacks.Sweep
sums it up), and a signal stops the sweep.
"""

import logging
import os
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_lab import pipeline
from mnist_lab.ddp import join_slurm_job, label_logs, node_name
from mnist_lab.errors import Pruned, UserError, details, exit_code_of, mark_said
from mnist_lab.overrides import defining_overrides, override_key
from mnist_lab.ownership import DirectoryTaken, owned
from mnist_lab.resume import CHECKPOINTS, earlier_job
from mnist_lab.status import write_status
from mnist_lab.trainer import distributed
from mnist_lab.trainer.checkpoint import LAST
from mnist_lab.trainer.evaluation import EpochStats
from mnist_lab.trainer.files import WriteFailed
from mnist_lab.trainer.loop import EpochEnd
from mnist_lab.trainer.stopping import TrainingStopped

log = logging.getLogger("train")

# Always in a run's HParams row (with any overridden key), so that a sweep's runs share one table.
HPARAM_KEYS = ("optimizer.lr", "optimizer.weight_decay", "trainer.batch_size", "trainer.epochs",
               "augment.max_shift", "seed")  # fmt: skip
HPARAM_GROUPS = ("model", "data", "augment", "optimizer", "scheduler")


@dataclass
class Job:
    """Where a run stands in Hydra's terms, as plain values: its directory, overrides, sweep and choices."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    number: int | None = None  # the job's number in a sweep; None for a single run
    choices: dict[str, Any] = field(default_factory=dict)  # config group -> option (model: lenet)
    on_slurm: bool = False  # a job of a SLURM sweep: a signal comes to it alone, not to the whole sweep

    @property
    def in_sweep(self) -> bool:
        return self.number is not None

    def status(self, state: str, **fields: Any) -> None:
        """Write status.json (rank 0 alone under DDP)."""
        if distributed.is_main():
            write_status(self.run_dir, state, self.overrides, **fields)


def main(cfg: DictConfig) -> float | None:
    """Hydra's main: one run, or one job of a sweep; returns the best validation accuracy (None if the run
    did not complete)."""
    hydra = HydraConfig.get()
    in_sweep = hydra.mode == RunMode.MULTIRUN
    on_slurm = str(hydra.launcher.get("_target_", "")).endswith("submitit_launcher.SlurmLauncher")
    job = Job(Path(hydra.runtime.output_dir), list(hydra.overrides.task), hydra.job.num if in_sweep else None,
              dict(hydra.runtime.choices), on_slurm)  # fmt: skip
    tasks = hydra.launcher.get("tasks_per_node", 1) * hydra.launcher.get("nodes", 1)
    rank = distributed.current() or join_slurm_job(tasks)
    if rank is None:
        return run_job(cfg, job)
    label_logs(rank)
    log.info(f"joined the DDP job on {node_name()} (local rank {rank.local} of {rank.local_world})")
    try:
        return run_job(cfg, job)
    finally:
        distributed.stop()


def run_job(cfg: DictConfig, job: Job) -> float | None:
    """Run `job` in its run directory, which this process owns for the run (mnist_lab.ownership; rank 0 alone
    under DDP), with status.json kept up to date. How it ended, when it did not complete, is settled by `ended`."""
    continuing = "auto" if job.in_sweep and cfg.resume_sweep else cfg.resume
    key = "hydra.sweep.dir" if job.in_sweep else "hydra.run.dir"
    try:
        if not distributed.is_main():
            return run_owned_job(cfg, job)
        with owned(job.run_dir, continuing, key):
            return run_owned_job(cfg, job)
    except Exception as error:
        return ended(job, error)


def run_owned_job(cfg: DictConfig, job: Job) -> float | None:
    """`run_job` once the run directory is this process's: the pipeline, between status.json's `running` and
    `completed`; what ends it early raises."""
    resume_from = None
    if job.in_sweep and cfg.resume_sweep:
        earlier = earlier_job(job.run_dir, job.overrides)
        if earlier.refusal:
            raise UserError(earlier.refusal)
        if earlier.completed:
            log.info(
                f"job {job.number} [{' '.join(defining_overrides(job.overrides))}] completed before: skipped"
            )
            return earlier.completed.get("best_val_acc")
        resume_from = earlier.checkpoint  # a stopped job continues from its last.pt
    job.status("running")
    metrics = pipeline.train(cfg, job.run_dir, job=job.number, resume_from=resume_from,
                             hparams=run_hparams(cfg, job), on_epoch_end=epoch_end_callables(cfg, job))  # fmt: skip
    if not metrics:  # a DDP rank but 0: rank 0 tested and wrote the results
        return None
    job.status("completed", best_val_acc=metrics["best_val_acc"], test_acc=metrics["test_acc"],
               metrics=str(job.run_dir / "metrics.json"))  # fmt: skip
    return metrics["best_val_acc"]


def ended(job: Job, error: Exception) -> None:
    """Record how `job` ended short of completing (status.json, its line in the log) and say how to go on. A
    single run raises `error` again, its line said; a sweep's job returns, and the sweep goes on, except after
    a signal, which stops the whole sweep (but a SLURM job's, which came to that job alone)."""
    if isinstance(error, DirectoryTaken) and job.in_sweep:  # its status.json, if any, is the other run's
        log.error(f"error: job {job.number}: {error}")
        return None
    if isinstance(error, Pruned):
        job.status("pruned", reason=str(error))
        log.info(str(error))
        return None
    if isinstance(error, TrainingStopped):
        stopped(job, error)
        goes_on = error.exit_code == 0 or job.on_slurm  # trainer.max_steps, or SLURM stopping this one job
    else:
        failed(job, error)
        goes_on = True
    mark_said(error)
    if job.in_sweep and goes_on:
        return None
    raise error


def failed(job: Job, error: Exception) -> None:
    """Log the line a failed run ends with (and a bug's traceback, into train.log too), and record it."""
    record = details(error)
    if isinstance(error, WriteFailed):
        record["error"] = f"{error.strerror}; {kept_after_write_failed(job)}"
    elif isinstance(error, MemoryError | torch.OutOfMemoryError):  # the machine's limit, not the code's fault
        said = " ".join(str(error).split())[:200]
        record = {"error": f"out of memory: {said}; a smaller trainer.batch_size needs less",
                  "exit_code": 1}  # fmt: skip
    elif exit_code_of(error) is None and distributed.lost_a_rank():  # another rank died or went silent
        record = {"error": lost_rank(error, job), "exit_code": 1}
    log.error(f"error: {record['error']}")
    if record.get("bug"):
        log.error(traceback.format_exc())
    try:
        job.status("failed", **record)
    except WriteFailed as again:  # the same full disk: the line above is what the user reads
        log.warning(f"status.json not updated: {again.reason}")


def stopped(job: Job, stop: TrainingStopped) -> None:
    """Record a stopped run and say how to go on."""
    job.status("stopped", reason=stop.reason, checkpoint=str(stop.checkpoint) if stop.checkpoint else None)
    log.warning(str(stop))
    if job.in_sweep:
        log.warning("resume the sweep with the same command and resume_sweep=last (or its directory)")
    elif stop.checkpoint is not None:
        log.warning(f"resume with: {resume_command(job, stop.checkpoint)}")
    else:
        log.warning(f"start it again with: {resume_command(job, None)}")


def kept_after_write_failed(job: Job) -> str:
    """What is still saved when a file of the run could not be written, and how to go on."""
    last = job.run_dir / CHECKPOINTS / LAST
    if not last.is_file():
        return "no checkpoint was saved yet"
    return f"{last} is intact; when there is room again, resume with: {resume_command(job, last)}"


def lost_rank(error: Exception, job: Job) -> str:
    """The line a DDP rank ends with when the job lost another rank: which rank this is, what the backend said,
    and what was saved."""
    rank = distributed.current()
    said = re.sub(r"^\[[^\]]*\] ", "", str(error).strip()).split(". This is typically")[0][:200]  # gloo's
    last = job.run_dir / CHECKPOINTS / LAST
    kept = f"resume from {last} with: {resume_command(job, last)}" if last.exists() else "nothing saved yet"
    assert rank is not None  # lost_a_rank() said so
    return f"rank {rank.rank} of {rank.world}: the job lost another rank ({distributed.lost_ranks(error)}: {said}); {kept}"


def resume_command(job: Job, checkpoint: Path | None) -> str:
    """The command that continues `job` from `checkpoint` (None, nothing saved: in its directory with
    resume=auto; a DDP job: through torchrun again), without trainer.max_steps, which would stop it again at
    once."""
    again = [o for o in job.overrides if override_key(o) not in ("resume", "trainer.max_steps")]
    resume = [f"resume={checkpoint}"] if checkpoint else ["resume=auto", f"hydra.run.dir={job.run_dir}"]
    return f"{launch_command(distributed.current())} train.py {' '.join([*again, *resume])}"


def launch_command(rank: distributed.Rank | None) -> str:
    """What starts train.py as this job did: python, torchrun on one node, or torchrun on each of several nodes
    (each with its own --node_rank; the rendezvous address as this job had it)."""
    if rank is None:
        return "python"
    if rank.world == rank.local_world:
        return f"torchrun --nproc_per_node={rank.local_world}"
    nodes, node = rank.world // rank.local_world, rank.rank // rank.local_world
    address = f"--master_addr={os.environ.get('MASTER_ADDR', '<node 0>')} --master_port={os.environ.get('MASTER_PORT', 29500)}"
    return (
        f"(on each of the {nodes} nodes, with its own --node_rank; this is node {node}) "
        f"torchrun --nnodes={nodes} --node_rank={node} --nproc_per_node={rank.local_world} {address}"
    )


def run_hparams(cfg: DictConfig, job: Job) -> tuple[str, dict[str, Any]]:
    """The run's row in TensorBoard's HParams view: named by the overrides that define it, with the config
    groups chosen, HPARAM_KEYS and every overridden value."""
    overrides = defining_overrides(job.overrides)
    values: dict[str, Any] = {group: job.choices.get(group) for group in HPARAM_GROUPS}
    for key in [*HPARAM_KEYS, *(override_key(o) for o in overrides)]:
        values.setdefault(key, OmegaConf.select(cfg, key, default=None))
    plain = {key: v if isinstance(v, bool | int | float | str) else str(v) for key, v in values.items()}
    return " ".join(overrides) or "defaults", plain


def epoch_end_callables(cfg: DictConfig, job: Job) -> list[EpochEnd]:
    """What this run does after each epoch besides logging: keep status.json current; in a trial of
    `python tune.py`, report to the study (which may prune the run)."""

    def record(epoch: int, val: EpochStats | None) -> None:
        job.status("running", epoch=epoch, val_acc=val.accuracy if val else None)

    callables: list[EpochEnd] = [record]
    tune = cfg.get("tune")
    if tune is not None and tune.get("trial") is not None:
        from mnist_lab.search.trial import trial_reporter  # optuna loads only in a search's trials

        callables.append(trial_reporter(tune))
    return callables
