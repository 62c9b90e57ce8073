"""Hydra callbacks (configs/config.yaml): checks before Hydra makes directories, and what a sweep needs
around its jobs: cores shared between parallel jobs, a resumed sweep checked, failures summed up."""

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_lab.cli import ending_the_command
from mnist_lab.errors import SweepFailed, UserError, mark_said
from mnist_lab.overrides import defining_overrides
from mnist_lab.ownership import DirectoryTaken, claim, release, unwritable_reason
from mnist_lab.resume import check_resumable
from mnist_lab.status import job_dirs, read_status
from mnist_lab.sweep import slurm
from mnist_lab.trainer import distributed
from mnist_lab.trainer.speed import available_cpus

log = logging.getLogger("sweep")


class CheckOutputDir(Callback):
    """Stop with one line naming the path, and exit status 2, when the run or sweep directory cannot be made,
    or holds what a new run or sweep would overwrite. A single run's directory is claimed here (lab/ownership.py),
    before Hydra writes its .hydra/ there, and given up when the run ends."""

    @ending_the_command
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")
        if distributed.is_main():  # under DDP rank 0 writes the run directory
            try:
                claim(Path(config.hydra.run.dir), config.get("resume"), "hydra.run.dir")
            except DirectoryTaken as taken:
                raise UserError(str(taken)) from None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(Path(config.hydra.run.dir))

    @ending_the_command
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")
        sweep = Path(config.hydra.sweep.dir)
        ran = [job for job in job_dirs(sweep) if read_status(job)] if sweep.is_dir() else []
        if ran and not config.get("resume_sweep"):
            raise UserError(f"hydra.sweep.dir={sweep} holds a sweep's runs ({len(ran)} with a status.json), which a "
                          f"new sweep would overwrite: continue it with resume_sweep={sweep}, or choose a new "
                          "directory")  # fmt: skip

    @staticmethod
    def _check(directory: str, key: str) -> None:
        reason = unwritable_reason(Path(directory).absolute())
        if reason:
            raise UserError(f"{key}={directory} cannot be created: {reason}")


def count_jobs(overrides: list[str]) -> int | None:
    """How many jobs Hydra's basic sweeper makes of `overrides` (None if it cannot be told)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed)
    except Exception:  # intervals, globs: whatever the sweeper makes of them
        return None


def uses_ray(launcher: DictConfig) -> bool:
    return str(launcher.get("_target_", "")).endswith("RayLauncher")


def uses_slurm(launcher: DictConfig) -> bool:
    return str(launcher.get("_target_", "")).endswith("submitit_launcher.SlurmLauncher")


def jobs_at_once(launcher: DictConfig, jobs: int | None) -> int | None:
    """How many jobs `launcher` runs at the same time on this machine; None for a cluster (or unknown)."""
    target = str(launcher.get("_target_", ""))
    cpus = available_cpus()
    if target.endswith("JoblibLauncher"):
        n_jobs = launcher.n_jobs or 1
        capacity = n_jobs if n_jobs > 0 else max(cpus + 1 + n_jobs, 1)  # joblib: -1 = all CPUs
    elif target.endswith("submitit_launcher.LocalLauncher"):
        capacity = launcher.array_parallelism if "array_parallelism" in launcher else cpus
    else:  # the basic launcher runs one job at a time in this process; SLURM grants each job its own CPUs
        return None
    return min(capacity, jobs) if jobs else capacity


class Sweep(Callback):
    """Around a multirun: parallel jobs share the cores; `resume_sweep` must match; failures are summed up; Ray
    (hydra/launcher=ray) is stopped.

    Threads: each of K jobs running at once on C cores gets C // K threads (OMP_NUM_THREADS, which the jobs
    inherit; a value the user set is kept). Two 2-thread torch processes on 2 cores run ~35x slower than one.
    """

    @ending_the_command
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        if config.get("resume_sweep"):
            check_resumable(sweep_dir, overrides, config.resume_sweep)
        if uses_ray(config.hydra.launcher) and importlib.util.find_spec("ray") is None:
            raise UserError(
                "hydra/launcher=ray needs Ray and hydra-ray-launcher: pip install -e '.[ray]' (make install does)"
            )
        if uses_slurm(config.hydra.launcher):
            if reason := slurm.refusal(config.hydra.launcher):
                raise UserError(reason)
            if not slurm.keeps_accounting():
                slurm.watch_with_squeue()
        parallel = jobs_at_once(config.hydra.launcher, count_jobs(overrides))
        if parallel and parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = max(available_cpus() // parallel, 1)
            os.environ["OMP_NUM_THREADS"] = str(threads)
            log.info(f"{parallel} jobs at a time on {available_cpus()} CPUs: {threads} threads each")

    @ending_the_command
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if uses_ray(config.hydra.launcher):
            from mnist_lab.sweep.ray_jobs import stop  # Ray imports only for Ray sweeps

            stop()  # hydra-ray-launcher never does: a local instance's processes would outlive the sweep
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = {job: read_status(job) or {"status": "no status.json"} for job in job_dirs(sweep_dir)}
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status["status"]] = counts.get(status["status"], 0) + 1
        log.info(f"sweep {sweep_dir}: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        failed = {job: s for job, s in statuses.items() if s["status"] not in ("completed", "pruned")}
        for job, status in failed.items():
            log.error(
                f"  job {job.name} [{' '.join(defining_overrides(status.get('overrides', [])))}]: {status['status']}"
                f"{': ' + status['error'] if status.get('error') else ''} (log: {job / 'train.log'})"
            )
        log.info(f"leaderboard: python report.py {sweep_dir}")
        if failed:
            ended = SweepFailed(f"{len(failed)} of {len(statuses)} jobs did not complete")
            mark_said(ended)  # the lines above list them
            raise ended
