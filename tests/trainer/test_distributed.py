"""trainer/distributed.py: who a process is from torchrun's variables, the identity outside a job, and the
collectives inside a real (one-process, gloo) process group."""

import socket

import pytest
import torch
import torch.distributed as dist

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
    assert not distributed.lost_contact(RuntimeError("Connection reset by peer"))  # no job: not a lost rank


@pytest.fixture
def one_process_group(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A real gloo process group of one rank on a free local port, left at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    distributed.stop()
    assert not dist.is_initialized()


def test_inside_a_job_the_collectives_run_and_a_lost_peer_is_recognised(one_process_group: None) -> None:
    assert distributed.current() == Rank(0, 1) and distributed.is_main()
    tensor = torch.tensor([1.0, 2.0])
    distributed.all_sum(tensor)  # one rank: the sum is itself, through gloo
    assert tensor.tolist() == [1.0, 2.0]
    assert distributed.largest(5, torch.device("cpu")) == 5
    assert distributed.broadcast_text("outputs/run") == "outputs/run"
    assert distributed.lost_contact(RuntimeError("[../gloo/transport] Connection reset by peer"))
    assert not distributed.lost_contact(RuntimeError("CUDA out of memory"))
    assert distributed.lost_ranks(RuntimeError("x")) == "torchrun's summary names the rank that failed first"
