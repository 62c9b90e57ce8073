"""A DDP job's side of Hydra: before Hydra starts, join the process group torchrun set up and give every rank
rank 0's run directory (one directory for the whole job); the ranks but 0 write nothing there (no .hydra/,
no train.log: their log lines go to the console only, each prefixed with its rank)."""

import logging
import os
import re
import socket

from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from mnist_lab.config import CONFIG_DIR
from mnist_lab.errors import UserError
from mnist_lab.sweep import slurm
from mnist_lab.trainer import distributed
from mnist_lab.trainer.distributed import Rank

RUN_DIR = "hydra.run.dir="


def rank_argv(argv: list[str]) -> list[str]:
    """`argv` (train.py's arguments) for this rank of a DDP job: unchanged outside one."""
    rank = distributed.from_environment()
    if rank is None:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise UserError(
            "a DDP job (torchrun) trains one run: -m/--multirun sweeps are not started by torchrun"
        )
    distributed.start(rank)
    given = next((a.removeprefix(RUN_DIR) for a in argv if a.startswith(RUN_DIR)), None)
    run_dir = distributed.broadcast_text(resolved_run_dir(given) if rank.main else "")
    kept = [a for a in argv if not a.startswith(RUN_DIR)]
    quiet = (
        []
        if rank.main
        else ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console,problems]"]
    )
    return [*kept, f"{RUN_DIR}{run_dir}", *quiet]


def resolved_run_dir(pattern: str | None) -> str:
    """The run directory `pattern` (default: configs/config.yaml's) names, resolved here: rank 0's time and
    process id, which the other ranks' own would differ from."""
    setup_globals()  # Hydra's `now` resolver (Hydra registers it again when it starts)
    config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml"), resolve=False)
    return str(OmegaConf.create({"dir": pattern or config["hydra"]["run"]["dir"]}).dir)


def label_logs(rank: Rank) -> None:
    """Prefix every log line of this process with `[rank r/n]`, so a job's lines can be told apart."""
    for handler in logging.getLogger().handlers:
        format_ = handler.formatter._fmt if handler.formatter else "%(message)s"  # noqa: SLF001
        handler.setFormatter(logging.Formatter(f"[rank {rank.rank}/{rank.world}] {format_}"))


def join_slurm_job(tasks: int) -> Rank | None:
    """In a task of a SLURM job that hydra/launcher=slurm_ddp asked `tasks` > 1 tasks of (nodes x
    tasks_per_node): join the job's process group from SLURM's variables, read through submitit's
    JobEnvironment (rank, world size, the first node of the job as the master, a port from the job id); None
    otherwise."""
    in_submitit_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"  # set by submitit's sbatch script
    if tasks <= 1 or not in_submitit_job or distributed.current() is not None:
        return None
    from submitit import JobEnvironment

    job = JobEnvironment()
    os.environ.update({
        "MASTER_ADDR": node_address(job.hostnames[0]), "MASTER_PORT": str(20000 + int(job.raw_job_id) % 20000),
        "RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks),
        "LOCAL_RANK": str(job.local_rank), "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes),
    })  # fmt: skip
    rank = distributed.from_environment()
    if rank is not None:
        distributed.start(rank)
        if not rank.main:  # Hydra gave every task the job's directory and its train.log: rank 0's alone
            root = logging.getLogger()
            for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
                root.removeHandler(handler)
    return rank


def node_address(node: str) -> str:
    """The address SLURM reaches `node` at (its NodeAddr): the node's name where the two are the same, as on most
    clusters, or where scontrol does not say; an address of its own where a node's name is not a host name
    (several slurmd on one host, each a node)."""
    shown = slurm.ask("scontrol", "show", "node", "--oneliner", node) or ""
    address = re.search(r"\bNodeAddr=(\S+)", shown)
    return address[1] if address else node


def node_name() -> str:
    """The node this process runs on: SLURM's name for it in a SLURM job (several may share a host), else the
    host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
