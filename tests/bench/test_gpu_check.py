"""bench/gpu_check.py (`make gpu-check`): every GPU setting it times is a valid config, and where there is no
CUDA device it says so and writes nothing (the cuda tests themselves run where a GPU is)."""

from pathlib import Path

import pytest
import torch

from bench import gpu_check
from lab.config import check_config, compose


@pytest.mark.parametrize("name", list(gpu_check.VARIANTS))
def test_each_gpu_setting_composes_and_passes_the_checks(name: str) -> None:
    cfg = compose(*gpu_check.ON_GPU, *gpu_check.VARIANTS[name])
    check_config(cfg)
    assert cfg.trainer.device == "cuda" and cfg.trainer.epochs == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this is what happens without a GPU")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gpu_check.main(["--skip-tests", "--out-dir", str(tmp_path)])
    assert "no CUDA device here" in capsys.readouterr().out and not list(tmp_path.iterdir())
