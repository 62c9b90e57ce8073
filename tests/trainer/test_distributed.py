"""trainer/distributed.py: who a process is from torchrun's variables, the identity outside a job, the
collectives between two real processes in a gloo process group (where a sum is not the identity), and a rank
that died told from an error of the process's own."""

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch

from mnist_lab.trainer import distributed
from mnist_lab.trainer.distributed import Rank, from_environment


def test_the_rank_comes_from_torchruns_variables() -> None:
    assert from_environment({}) is None and from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert from_environment(env) == Rank(3, 4, 1, 2) and not from_environment(env).main
    assert from_environment({"WORLD_SIZE": "2", "RANK": "0"}) == Rank(0, 2, 0, 2)  # one node by default


def test_outside_a_job_every_function_is_the_identity() -> None:
    assert distributed.current() is None and distributed.is_main()
    tensor = torch.tensor([1.0, 2.0])
    distributed.all_sum(tensor)
    assert tensor.tolist() == [1.0, 2.0]
    assert distributed.largest(7, torch.device("cpu")) == 7
    assert not distributed.lost_a_rank()  # no job: no rank to lose


def collectives_of_one_rank(rank: int, port: int, out: str) -> None:
    """One of two processes of a job (as torchrun starts them): the collectives run, what each saw written to
    `out`/<rank>.json."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": "2",
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"})  # fmt: skip
    me = distributed.from_environment()
    distributed.start(me)
    summed, counts = torch.tensor([rank + 1.0, 10.0 * (rank + 1)]), torch.tensor([rank])
    distributed.all_sum(summed, counts)
    seen = {
        "current": list(vars(distributed.current()).values()),
        "main": distributed.is_main(),
        "summed": summed.tolist(),
        "counts": counts.tolist(),
        "largest": distributed.largest(3 if rank == 0 else 8, torch.device("cpu")),
        "text": distributed.broadcast_text(f"outputs/run-of-rank-{rank}"),
        "lost while both run": distributed.lost_a_rank(),  # an error of this process's own: nobody lost
    }
    if rank == 1:  # rank 1 dies without leaving the group, as a killed process does
        Path(out, "1.json").write_text(json.dumps(seen))
        os._exit(0)
    seen["lost after rank 1 died"] = distributed.lost_a_rank()
    seen["lost_ranks"] = distributed.lost_ranks(RuntimeError("Connection reset by peer"))
    distributed.stop()
    Path(out, "0.json").write_text(json.dumps(seen))


@pytest.mark.slow  # two Python processes importing torch
def test_two_ranks_sum_take_the_largest_share_rank_0s_text_and_tell_a_lost_rank(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    ranks = [spawn.Process(target=collectives_of_one_rank, args=(r, port, str(tmp_path))) for r in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [process.exitcode for process in ranks] == [0, 0]
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["current"] for s in seen] == [[0, 2, 0, 2], [1, 2, 1, 2]] and [s["main"] for s in seen] == [
        True,
        False,
    ]
    assert all(s["summed"] == [3.0, 30.0] and s["counts"] == [1] for s in seen)  # each tensor, on both ranks
    assert [s["largest"] for s in seen] == [8, 8]
    assert [s["text"] for s in seen] == ["outputs/run-of-rank-0"] * 2  # rank 0's, on every rank
    assert [s["lost while both run"] for s in seen] == [False, False]
    assert seen[0]["lost after rank 1 died"] and seen[0]["lost_ranks"] == "rank 1 is gone"
