"""bench/gpu_check.py (`make gpu-check`): every GPU setting it times is a valid config, and where there is no
CUDA device it says so and writes nothing (the cuda tests themselves run where a GPU is)."""

from pathlib import Path

import pytest
import torch

from bench import gpu_check
from mnist_lab.config import check_config, compose


@pytest.mark.parametrize("name", list(gpu_check.VARIANTS))
def test_each_gpu_setting_composes_and_passes_the_checks(name: str) -> None:
    cfg = compose(*gpu_check.ON_GPU, *gpu_check.VARIANTS[name])
    check_config(cfg)
    assert cfg.trainer.device == "cuda" and cfg.trainer.epochs == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this is what happens without a GPU")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gpu_check.main(["--skip-tests", "--out-dir", str(tmp_path)])
    assert "no CUDA device here" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_the_targets_are_ratios_to_the_bare_loop_and_the_anchor_on_the_same_card() -> None:
    content = {
        "epochs": [{"setting": "fp32", "epoch_s": 0.6}, {"setting": "bare loop", "epoch_s": 2.0}],
        "speedrun": [{"seconds": 0.5, "test_acc": 0.9903}, {"seconds": 0.4, "test_acc": 0.991}],
        "anchor": [{"seconds": 1.1}, {"seconds": 1.0}],
    }
    assert list(gpu_check.targets(content).values()) == [True, True]  # 0.6 <= 0.3 x 2.0; 0.5 <= 0.5 x 1.1
    content["speedrun"][0]["test_acc"] = 0.989
    content["epochs"][0]["epoch_s"] = 0.61
    assert list(gpu_check.targets(content).values()) == [False, False]


def test_the_baselines_train_what_they_describe(tiny_mnist: Path) -> None:
    from bench.baselines import AnchorNet, anchor_run, bare_epoch
    from mnist_lab.data.sources import read_idx

    data, cpu = read_idx(tiny_mnist, verify_md5=False), torch.device("cpu")
    assert sum(p.numel() for p in AnchorNet().parameters()) == 212_146  # "about 215k"
    assert bare_epoch(data, cpu, images=256) > 0
    run = anchor_run(data, cpu, seed=0)  # 600 images: 3 steps of 256
    assert run["steps"] == 3 and 0 <= run["test_acc"] <= 1 and run["seconds"] > 0
