"""trainer/device.py: auto picks CUDA, then MPS, then the CPU; sweep jobs spread over GPUs."""

import pytest
import torch

from mnist_lab.trainer.device import choose_device


def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")


def test_named_devices_must_exist() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="trainer.device='tpu7' is not a device name"):
        choose_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.device='cuda:0' is not available"):
            choose_device("cuda:0")


def test_parallel_jobs_spread_over_gpus_by_job_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [choose_device("auto", job) for job in (0, 1, 5, 7)] == [
        torch.device("cuda", k) for k in (0, 1, 1, 3)
    ]
    assert choose_device("auto") == torch.device("cuda")  # a single run: the default GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_device("auto", 3) == torch.device("cuda")
