"""Shared fixtures: tiny synthetic MNIST-shaped files in torchvision's IDX layout, and config composition."""

import struct
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import train  # noqa: F401  (registers the ${project_root:} resolver the configs use)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
MNIST_RAW = PROJECT_ROOT / "data" / "MNIST" / "raw"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of the MNIST files (big-endian header, then the bytes)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable MNIST-shaped data: class k is a bright 6x6 square at its own place, over faint noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        top, left = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
        images[i, top : top + 6, left : left + 6] = 250
    return images, labels


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with MNIST/raw holding 600 training and 200 test synthetic images; returns the root."""
    root = tmp_path_factory.mktemp("tiny_mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def compose_config(*overrides: str) -> DictConfig:
    """The real config of configs/config.yaml with `overrides`, as `python train.py <overrides>` sees it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def tiny_config(tiny_mnist: Path, *overrides: str) -> DictConfig:
    """The default config shrunk to the tiny synthetic set: small batches, a few epochs, on the CPU."""
    return compose_config(
        f"data.source.root={tiny_mnist}",
        "data.source.verify_md5=false",
        "data.validation_size=100",
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.eval_batch_size=64",
        "trainer.device=cpu",
        *overrides,
    )


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST data root (`make data` fetches it); a test that needs it fails, never skips, without it."""
    if not (MNIST_RAW / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"real MNIST not found in {MNIST_RAW}: run `make data` (make test does it first)")
    return MNIST_RAW.parent.parent
