"""SLURM through hydra-submitit-launcher (configs/hydra/launcher/slurm.yaml, slurm_ddp.yaml): the GPUs a job
asks for on the cluster at hand, and job states read from squeue where the cluster keeps no accounting."""

import logging
import subprocess
from typing import Any

log = logging.getLogger("sweep")


def ask(*command: str) -> str | None:
    """What a SLURM command prints, or None where it cannot be run or fails."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _nodes(partition: str | None, fields: str) -> list[list[str]]:
    """sinfo's `fields` (a --format string of %-fields split by spaces) for each node of `partition` (None: the
    default one); [] where sinfo does not answer (no cluster here: the config is only being read)."""
    where = ["--partition", partition] if partition else []
    return [line.split() for line in (ask("sinfo", "--noheader", "--Node", f"--format={fields}", *where) or
                                      "").splitlines() if line.strip()]  # fmt: skip


def gpus(per_node: int, partition: str | None = None) -> int:
    """The `slurm_gpus` resolver: `per_node` where the nodes of `partition` have GPUs (a `gpu` GRES), 0 where
    they have none, so that one config serves GPU and CPU-only clusters; `per_node` where sinfo does not answer."""
    nodes = _nodes(partition, "%G")
    return per_node if not nodes or any("gpu" in node[0] for node in nodes) else 0


def largest_node(partition: str | None = None) -> tuple[int, int] | None:
    """The most CPUs and memory (MB) one node of `partition` has; None where sinfo does not answer."""
    nodes = _nodes(partition, "%c %m")
    if not nodes:
        return None
    return max(int(node[0]) for node in nodes), max(int(node[1].rstrip("+")) for node in nodes)


def cpus(wanted: int, tasks: int, partition: str | None = None) -> int:
    """The `slurm_cpus` resolver: `wanted` CPUs per task, or fewer where `tasks` tasks of that many would not fit
    on the partition's largest node (a job that no node can hold waits for ever)."""
    largest = largest_node(partition)
    return wanted if largest is None else max(min(wanted, largest[0] // tasks), 1)


def mem_gb(wanted: int, partition: str | None = None) -> int:
    """The `slurm_mem_gb` resolver: `wanted` GB per node, or the partition's largest node's memory if smaller."""
    largest = largest_node(partition)
    return wanted if largest is None else max(min(wanted, largest[1] // 1024), 1)


def refusal(launcher: Any) -> str | None:
    """Why no node of the cluster could ever start a job that `launcher` (hydra.launcher) asks for: SLURM would
    leave it pending for ever (reason PartitionConfig). None where it fits, or no cluster answers."""
    largest = largest_node(launcher.partition)
    if largest is None:
        return None
    most_cpus, most_mb = largest
    asked_cpus = launcher.cpus_per_task * launcher.tasks_per_node
    if asked_cpus > most_cpus:
        return (f"hydra.launcher.cpus_per_task={launcher.cpus_per_task} x tasks_per_node={launcher.tasks_per_node}"
                f" asks for {asked_cpus} CPUs on one node, and the largest node of the partition has {most_cpus}: "
                f"ask for at most {most_cpus // launcher.tasks_per_node} CPUs per task")  # fmt: skip
    if launcher.mem_gb and launcher.mem_gb * 1024 > most_mb:
        return (f"hydra.launcher.mem_gb={launcher.mem_gb} is more than the largest node of the partition has "
                f"({most_mb} MB): ask for at most {most_mb // 1024}")  # fmt: skip
    return None


def keeps_accounting() -> bool:
    """Whether the cluster keeps job accounting, which submitit's sacct calls need (True where unknown)."""
    config = ask("scontrol", "show", "config")
    return config is None or "accounting_storage/none" not in config


def watch_with_squeue() -> None:
    """On a cluster without accounting, sacct fails on every poll (a warning each time, and a job that SLURM ends
    without a result file, cancelled or timed out, is never seen to end): make submitit ask squeue, which reports
    every job's state until MinJobAge (300 s by default) after its end."""
    from submitit.slurm import slurm

    class QueueWatcher(slurm.SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            sacct = super()._make_command()
            if sacct is None:
                return None
            ids = [job for flag, job in zip(sacct, sacct[1:], strict=False) if flag == "-j"]
            return ["squeue", "--states=all", "--noheader", "--format=%i|%T|%N", f"--jobs={','.join(ids)}"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            return super().read_info(
                "JobID|State|NodeList\n" + text
            )  # sacct's header, which squeue leaves out

    if type(slurm.SlurmJob.watcher).__name__ != "QueueWatcher":  # once per process
        slurm.SlurmJob.watcher = QueueWatcher(delay_s=600)
        log.info("this SLURM cluster keeps no accounting (AccountingStorageType=accounting_storage/none): "
                 "job states are read with squeue instead of sacct")  # fmt: skip
