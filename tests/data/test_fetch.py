"""data/fetch.py: md5 checks of the raw files; the real files pass them; Fashion-MNIST from its Debian package."""

import subprocess
from pathlib import Path

import pytest
import torch

import mnist_lab.data.fetch
from mnist_lab.data.fetch import FetchError, fetch_fashion_mnist, unverified_files
from mnist_lab.data.sources import FASHION_RAW_FILES, read_idx


def test_unverified_files_catches_missing_and_corrupt_files(tmp_path: Path) -> None:
    assert len(unverified_files(tmp_path)) == 4
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * 10008)
    assert "t10k-labels-idx1-ubyte" in unverified_files(tmp_path)


def test_real_mnist_files_pass_their_md5(mnist_root: Path) -> None:
    assert unverified_files(mnist_root / "MNIST" / "raw") == []
    data = read_idx(mnist_root)
    assert (len(data.train_labels), len(data.test_labels)) == (60_000, 10_000)
    assert torch.bincount(data.test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_the_fashion_mnist_fetch_refuses_a_bad_md5_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupted_package(raw: Path) -> None:  # the package's files, one of them not the official bytes
        raw.mkdir(parents=True)
        for name in FASHION_RAW_FILES:
            (raw / name).write_bytes(b"not Fashion-MNIST")

    monkeypatch.setattr(mnist_lab.data.fetch, "_debian_download", corrupted_package)
    with pytest.raises(
        FetchError, match=r"Fashion-MNIST from dataset-fashion-mnist: md5 mismatch for train-images"
    ):
        fetch_fashion_mnist(tmp_path)
    assert list((tmp_path / "FashionMNIST" / "raw").iterdir()) == []  # nothing that failed its check is kept


def test_a_failing_fashion_mnist_source_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_package(raw: Path) -> None:
        raise subprocess.CalledProcessError(
            100, ["apt-get", "download", "dataset-fashion-mnist"], stderr="E: Unable to locate package"
        )

    monkeypatch.setattr(mnist_lab.data.fetch, "_debian_download", no_package)
    with pytest.raises(
        FetchError,
        match=r"(?s)could not fetch Fashion-MNIST .*CalledProcessError.* E: Unable to locate package\n`apt-get download",
    ):
        fetch_fashion_mnist(tmp_path)


def test_real_fashion_mnist_passes_its_md5_and_reads_as_torchvision_reads_it(mnist_root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    assert fetch_fashion_mnist(mnist_root) == mnist_root / "FashionMNIST" / "raw"  # `make data` fetched it
    ours = read_idx(mnist_root, dataset="FashionMNIST")
    theirs = FashionMNIST(str(mnist_root), train=False)
    assert torch.equal(ours.test_images, theirs.data) and torch.equal(ours.test_labels, theirs.targets)
    assert torch.bincount(ours.train_labels).tolist() == [6000] * 10
