"""data/fetch.py: md5 checks of the raw files; the real files pass them."""

from pathlib import Path

import torch

from data.fetch import unverified_files
from data.sources import read_idx


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
