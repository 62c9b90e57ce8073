"""Shared fixtures: tiny synthetic MNIST-shaped files in torchvision's IDX layout, the real MNIST root, the
config shrunk to them, and the real-MNIST runs several tests read (made once per session)."""

import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lab.config import PROJECT_ROOT, compose

MNIST_RAW = PROJECT_ROOT / "data" / "MNIST" / "raw"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"


DATA_FIXTURES = {"tiny_mnist", "mnist_root", "trained_run"}  # what makes a test train on data


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test's level of the pyramid, from what it declares: `e2e` (marked slow: subprocesses, services,
    real-MNIST runs), `integration` (in-process, on data: a fixture of DATA_FIXTURES), `unit` (neither: no
    data, no subprocess); `pytest -m unit` runs the base alone. Tests marked `cuda` run where a GPU is;
    elsewhere (CI) they are skipped, saying why."""
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.e2e)
        elif DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)
        if skip is not None and "cuda" in item.keywords:
            item.add_marker(skip)


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


def tiny_overrides(tiny_mnist: Path) -> list[str]:
    """Overrides that train on the tiny synthetic set in a second or two: small batches, 2 epochs, CPU."""
    return [f"data.source.root={tiny_mnist}", "data.source.verify_md5=false", "data.validation_size=100",
            "trainer.epochs=2", "trainer.batch_size=32", "trainer.eval_batch_size=64", "trainer.device=cpu"]  # fmt: skip


def tiny_config(tiny_mnist: Path, *overrides: str) -> DictConfig:
    """The default config shrunk to the tiny synthetic set."""
    return compose(*tiny_overrides(tiny_mnist), *overrides)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST data root (`make data` fetches it); a test that needs it fails, never skips, without it."""
    if not (MNIST_RAW / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"real MNIST not found in {MNIST_RAW}: run `make data` (make test does it first)")
    return MNIST_RAW.parent.parent


def run_script(script: str, *args: str, timeout: int = 600, **kwargs: object) -> subprocess.CompletedProcess:
    """`python <script> <args>` as a user runs it, output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)  # fmt: skip


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of `tag` in the run's event file, read with TensorBoard's own reader."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, mnist_root: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    """LeNet-5 trained for 2 epochs (batch 128: faster per image here) on 30,000 real training images by `python train.py data=mnist_pickle`
    from another working directory: the run directory, and the finished process (its output)."""
    run = tmp_path_factory.mktemp("trained")
    done = run_script("train.py", "trainer.epochs=2", "trainer.batch_size=128", "data=mnist_pickle", "data.train_subset=30000",
                      f"hydra.run.dir={run}", cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


def rest_of_output(process: subprocess.Popen, timeout: float) -> str:
    """What `process` prints until it ends, once some of its lines were taken from `process.stdout`: read through
    that same text stream. (Popen.communicate with a timeout reads the pipe itself, and loses what the stream had
    already read ahead of the last line taken: a line another rank printed just after, say.) The process is
    killed if it outlives `timeout`."""
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        rest = process.stdout.read()  # type: ignore[union-attr]
        process.wait()
    finally:
        watchdog.cancel()
    return rest


def slurm_answers() -> bool:
    """Whether a SLURM cluster answers here (`make slurm` starts one): the tests marked `slurm` need it."""
    if shutil.which("sinfo") is None:
        return False
    nodes = subprocess.run(["sinfo", "--noheader", "--states=idle,mixed,allocated", "--format=%N"],
                           capture_output=True, text=True, timeout=15)  # fmt: skip
    return nodes.returncode == 0 and bool(nodes.stdout.strip())


needs_slurm = pytest.mark.skipif(
    not slurm_answers(), reason="no SLURM cluster answers (sinfo): `make slurm` starts one on this machine"
)
