"""A DDP job's side of Hydra: before Hydra starts, join the process group torchrun set up and give every rank
rank 0's run directory (one directory for the whole job); the ranks but 0 write nothing there (no .hydra/,
no train.log: their log lines go to the console only, each prefixed with its rank)."""

import logging

from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from lab.config import CONFIG_DIR
from trainer import distributed
from trainer.distributed import Rank

RUN_DIR = "hydra.run.dir="


def rank_argv(argv: list[str]) -> list[str]:
    """`argv` (train.py's arguments) for this rank of a DDP job: unchanged outside one."""
    rank = distributed.from_environment()
    if rank is None:
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise ValueError(
            "a DDP job (torchrun) trains one run: -m/--multirun sweeps are not started by torchrun"
        )
    distributed.start(rank)
    given = next((a.removeprefix(RUN_DIR) for a in argv if a.startswith(RUN_DIR)), None)
    run_dir = distributed.broadcast_text(resolved_run_dir(given) if rank.main else "")
    kept = [a for a in argv if not a.startswith(RUN_DIR)]
    quiet = [] if rank.main else ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]"]
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
