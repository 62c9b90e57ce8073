"""One model trained by several processes with DistributedDataParallel, started by torchrun (or SLURM): who
this process is, the process group, and the few collectives the loop needs besides DDP's own. A plain
single-process run has no process group, and every function here is then the identity.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

TIMEOUT_S = 300  # a collective that waits this long for a rank that never comes fails instead of hanging
ANSWER_S = (
    30  # after a failed step, how long the ranks still running wait for each other before calling one lost
)
_health: dist.ProcessGroup | None = None  # a gloo group of the whole job, for its monitored barrier


@dataclass(frozen=True)
class Rank:
    """This process in the job: its global rank, the job's size, its rank and the ranks on its node."""

    rank: int
    world: int
    local: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run directory."""
        return self.rank == 0


def from_environment(environ: Mapping[str, str] = os.environ) -> Rank | None:
    """The rank torchrun gives this process (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); None when
    it was not started as one of several."""
    if int(environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    world = int(environ["WORLD_SIZE"])
    return Rank(int(environ["RANK"]), world, int(environ.get("LOCAL_RANK", "0")),
                int(environ.get("LOCAL_WORLD_SIZE", str(world))))  # fmt: skip


def start(rank: Rank) -> None:
    """Join the job's process group (MASTER_ADDR and MASTER_PORT from the environment): gloo for CPU tensors,
    NCCL for CUDA ones when there are GPUs."""
    if dist.is_initialized():
        return
    global _health
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(
        backend, rank=rank.rank, world_size=rank.world, timeout=timedelta(seconds=TIMEOUT_S)
    )
    _health = dist.new_group(backend="gloo")  # monitored_barrier needs a plain gloo group, also beside NCCL


def current() -> Rank | None:
    """This process's rank in the running job, or None outside one."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return from_environment() or Rank(dist.get_rank(), dist.get_world_size())


def is_main() -> bool:
    """Whether this process writes (rank 0, or the only process)."""
    rank = current()
    return rank is None or rank.main


def all_sum(*tensors: Tensor) -> None:
    """Sum each tensor over the job's ranks, in place (nothing outside a job)."""
    if current() is not None:
        for tensor in tensors:
            dist.all_reduce(tensor)


def largest(value: int, device: torch.device) -> int:
    """The largest of every rank's `value` (one small all-reduce; `value` itself outside a job)."""
    if current() is None:
        return value
    shared = torch.tensor(value, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(shared, op=dist.ReduceOp.MAX)
    return int(shared.item())


def broadcast_text(text: str) -> str:
    """Rank 0's `text` on every rank."""
    shared = [text]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def stop() -> None:
    """Leave the process group (at the end of a run)."""
    global _health
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _health = None


def lost_a_rank() -> bool:
    """Whether the running job has lost a rank, asked after an error ended this rank's step: the ranks still
    running meet at a monitored barrier (gloo's), which fails where one does not come within ANSWER_S. Where
    all come, the error was this process's own. The backends' messages are not read: gloo raises a plain
    RuntimeError for a peer that is gone, as for much else."""
    if current() is None or _health is None:
        return False
    try:
        dist.monitored_barrier(group=_health, timeout=timedelta(seconds=ANSWER_S), wait_all_ranks=True)
    except RuntimeError:  # a peer's connection closed, or it did not come in time
        return True
    return False


def lost_ranks(error: BaseException) -> str:
    """Which rank a failed collective lost, as far as this process can tell: in a job of two, the other one;
    otherwise the one torchrun's failure summary names (gloo's message names only an address)."""
    rank = current()
    if rank is not None and rank.world == 2:
        return f"rank {1 - rank.rank} is gone"
    return "torchrun's summary names the rank that failed first"
