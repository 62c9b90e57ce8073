"""Ray around a sweep with hydra/launcher=ray (configs/hydra/launcher/ray.yaml), for the launcher in
hydra_plugins/mnist_lab/ray_launcher.py: hydra-ray-launcher's, with what that plugin leaves to its users:
- Ray is started (or the cluster at `init.address` joined) without the plugin's object_store_memory, which
  ray.init refuses with an address; a job asking for more CPUs or GPUs than any node has (Ray would wait for
  ever) is refused before anything runs; `num_gpus: null` asks for one GPU where the cluster has GPUs.
- A job whose Ray worker dies (killed, out of memory) is recorded as failed in its status.json and the sweep
  goes on, as with a job that fails in Python; the plugin's sweep would end with a traceback.
- Ctrl-C or SIGTERM stops every running job the way it stops a run (after its current step, with last.pt
  saved and status.json `stopped`), then the sweep exits 130/143; `resume_sweep` continues it.
lab.sweep.callbacks.Sweep stops Ray at the end of the sweep (the plugin never does). Ray itself is imported only
inside these functions: every Hydra start imports the launcher's module.
"""

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_lab.errors import SweepStopped, UserError, mark_said
from mnist_lab.overrides import defining_overrides
from mnist_lab.shell import Job
from mnist_lab.status import read_status

log = logging.getLogger("sweep")

SMALL_OBJECT_STORE = 75 * 2**20  # bytes: jobs pass configs and results only (the plugin's own setting)
RESOURCES = {"num_cpus": "CPU", "num_gpus": "GPU"}  # ray.remote's argument -> Ray's resource name
STOP_WAIT_SECONDS = 60  # how long a stopped sweep waits for its jobs to save last.pt


@dataclass
class RayJob:
    """A job of the sweep as submitted: its run directory, overrides, and status.json before it started."""

    run_dir: Path
    overrides: list[str]
    before: dict | None


class Interrupted(Exception):  # noqa: N818 (a signal, not an error)
    def __init__(self, signum: int) -> None:
        self.signum = signum


def start(ray_cfg: DictConfig) -> None:
    """Start a local Ray instance (or join the cluster at `init.address`); settle `num_gpus: null`; refuse a job
    that no node of the cluster could hold."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each job's epoch lines, not "[repeated 2x across cluster]"
    import ray

    if ray.is_initialized():  # a sweeper's second batch
        return

    init = dict(OmegaConf.to_container(ray_cfg.init, resolve=True))  # type: ignore[arg-type]
    address = init.get("address")
    if address is None:
        init.setdefault("object_store_memory", SMALL_OBJECT_STORE)
    try:
        ray.init(**init)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UserError(f"hydra.launcher.ray.init={init}: Ray did not start: {error}") from None
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    with open_dict(ray_cfg):
        if ray_cfg.remote.get("num_gpus") is None:
            ray_cfg.remote.num_gpus = 1 if any(node.get("GPU", 0) for node in nodes) else 0
    asked = dict(OmegaConf.to_container(ray_cfg.remote, resolve=True))  # type: ignore[arg-type]
    where = f"the Ray cluster at {address}" if address else "the local Ray instance"
    reason = refusal(asked, nodes, where)
    if reason:
        stop()
        raise UserError(reason)
    log.info(f"Ray: {where}, {len(nodes)} node(s); each job asks for {asked}")


def refusal(asked: dict[str, Any], nodes: list[dict[str, float]], where: str) -> str | None:
    """Why no node of the cluster (`nodes`: each node's resources) could run a job asking for `asked`
    (ray.remote's arguments), or None if one can."""
    for key, resource in RESOURCES.items():
        largest = max((node.get(resource, 0) for node in nodes), default=0)
        if (asked.get(key) or 0) > largest:
            return (f"hydra.launcher.ray.remote.{key}={asked[key]}: no node of {where} has that many {resource}s "
                    f"(the largest has {largest:g}), so the jobs would wait for ever; ask for at most {largest:g}")  # fmt: skip
    return None


def stop() -> None:
    """Leave Ray; a local instance started for the sweep stops with all its processes."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def collect(jobs: dict[Any, RayJob]) -> list[JobReturn]:
    """Wait for every job's result; on Ctrl-C or SIGTERM, stop the sweep (stop_sweep)."""
    try:
        with signals_raise():
            return [result(ref, job) for ref, job in jobs.items()]
    except (KeyboardInterrupt, Interrupted) as stop:
        raise stop_sweep(jobs, stop.signum if isinstance(stop, Interrupted) else signal.SIGINT) from None


def result(ref: Any, job: RayJob) -> JobReturn:
    """The job's JobReturn; a job whose Ray worker died is recorded as failed (unless it recorded its own end),
    and the sweep goes on."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        now = read_status(job.run_dir)
        if now is None or now == job.before or now["status"] == "running":
            said = str(error).strip().splitlines()[0][:300]
            message = f"the Ray worker of job {job.run_dir.name} died: {type(error).__name__}: {said}"
            log.error(
                f"error: job {job.run_dir.name} [{' '.join(defining_overrides(job.overrides))}]: {message}"
            )
            Job(job.run_dir, job.overrides).status("failed", error=message, exit_code=1)
        return JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED, _return_value=None)


def stop_sweep(jobs: dict[Any, RayJob], signum: int) -> SweepStopped:
    """Pass the stop on to every job (ray.cancel: the job's SIGINT handler), wait until the running ones have saved
    last.pt and recorded `stopped` (at most STOP_WAIT_SECONDS); the SweepStopped (128 + `signum`) that ends it, its line said."""
    import ray

    log.warning(f"{signal.Signals(signum).name} received: stopping the sweep's jobs after their current step")
    for ref in jobs:
        ray.cancel(ref)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    for job in jobs.values():
        while still_running(job) and time.monotonic() < deadline:
            time.sleep(0.2)
    sweep = next(iter(jobs.values())).run_dir.parent if jobs else "<sweep dir>"
    message = f"sweep stopped: resume it with the same command and resume_sweep={sweep}"
    log.warning(message)
    stopped = SweepStopped(message, 128 + signum)
    mark_said(stopped)
    return stopped


def still_running(job: RayJob) -> bool:
    """Whether the job started in this sweep (its status.json changed) and has not recorded its end; a job on this
    machine whose process is gone has ended."""
    now = read_status(job.run_dir)
    if now is None or now == job.before or now["status"] != "running":
        return False
    if now.get("host") == socket.gethostname():
        try:
            os.kill(now["pid"], 0)
        except ProcessLookupError:
            return False
    return True


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM ends the wait for the jobs as Ctrl-C does (Ctrl-C raises KeyboardInterrupt by itself)."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
