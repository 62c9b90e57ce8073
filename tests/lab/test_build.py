"""lab/build.py: the refusals of a DDP job its settings cannot run (and lab/ddp.py's of a sweep under torchrun),
each naming the key or variable."""

from pathlib import Path

import pytest
import torch

from mnist_lab.build import build_batches, check_ddp
from mnist_lab.config import compose
from mnist_lab.ddp import rank_argv
from mnist_lab.trainer.distributed import Rank
from tests.conftest import tiny_config


def test_a_global_batch_that_does_not_divide_over_the_ranks_is_refused() -> None:
    check_ddp(compose("trainer.batch_size=64"), Rank(0, 4))  # 16 each: fine
    with pytest.raises(ValueError, match=r"trainer.batch_size=64 does not divide over the job's 3 processes"):
        check_ddp(compose("trainer.batch_size=64"), Rank(0, 3))


def test_fewer_gpus_than_processes_on_a_node_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"2 processes on this node \(LOCAL_WORLD_SIZE\) but 1 GPU\(s\)"):
        check_ddp(compose("trainer.device=cuda"), Rank(0, 2, 0, 2))
    check_ddp(compose("trainer.device=cpu"), Rank(0, 2, 0, 2))  # on the CPU, any number


def test_a_sweep_under_torchrun_is_refused_before_joining(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="a DDP job \\(torchrun\\) trains one run: -m/--multirun sweeps"):
        rank_argv(["-m", "seed=0,1"])
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_argv(["seed=1"]) == ["seed=1"]  # not in a job: unchanged


def test_mirroring_digits_is_warned_about_and_clothing_is_not(
    tiny_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = torch.device("cpu")
    build_batches(tiny_config(tiny_mnist, "augment=clothing"), cpu)
    assert "mirrors digits" in caplog.text
    caplog.clear()
    clothing = "data.classes=[T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot]"
    build_batches(tiny_config(tiny_mnist, "augment=clothing", clothing), cpu)
    assert "mirrors digits" not in caplog.text
