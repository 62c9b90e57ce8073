"""data/sources.py: both sources read the same tensors; pickles run no code; bad files are refused by name."""

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_lab.data.safe_pickle import UnsafePickleError
from mnist_lab.data.sources import DataFormatError, read_idx, read_pickle
from tests.conftest import synthetic_digits


def tiny_arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return synthetic_digits(600, 0), synthetic_digits(200, 1)


def assert_same_as_idx(data, root: Path) -> None:
    expected = read_idx(root, verify_md5=False)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(data, name), getattr(expected, name)), name


def test_idx_source_reads_torchvision_layout(tiny_mnist: Path) -> None:
    data = read_idx(tiny_mnist, verify_md5=False)
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (600, 28, 28)
    assert data.train_labels.dtype == torch.int64 and data.test_labels.shape == (200,)
    assert torch.equal(data.train_images, torch.from_numpy(x_train))
    assert torch.equal(data.test_labels, torch.from_numpy(y_test).long())


def test_missing_idx_files_say_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MNIST files missing in .*make data"):
        read_idx(tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_seed_pickle_reads_the_same_tensors_as_idx(tmp_path: Path, tiny_mnist: Path, protocol: int) -> None:
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    path = tmp_path / "mnist.pkl"
    with open(path, "wb") as file:
        pickle.dump(
            ((x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))), file, protocol=protocol
        )
    assert_same_as_idx(read_pickle(path), tiny_mnist)


def test_flat_float_pickle_gz_reads_the_same_tensors(tmp_path: Path, tiny_mnist: Path) -> None:
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    flat = lambda x: (x.reshape(len(x), 784) / 255.0).astype(np.float32)  # noqa: E731
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as file:
        pickle.dump(((flat(x_train), y_train), (flat(x_test), y_test)), file)
    assert_same_as_idx(read_pickle(path), tiny_mnist)


def test_classic_train_valid_test_layout_joins_train_and_valid(tmp_path: Path, tiny_mnist: Path) -> None:
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    path = tmp_path / "classic.pkl"
    with open(path, "wb") as file:
        pickle.dump(
            ((x_train[:500], y_train[:500]), (x_train[500:], y_train[500:]), (x_test, y_test)),
            file,
            protocol=2,
        )
    assert_same_as_idx(read_pickle(path), tiny_mnist)


class RunsShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (x_train, y_train), test = tiny_arrays()
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as file:  # the payload hides inside an otherwise valid structure
        pickle.dump(((x_train, RunsShellCommand(marker)), test), file)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused to load: .*system"):
        read_pickle(path)
    assert not marker.exists()


def test_pickle_with_wrong_layout_or_labels_names_the_problem(tmp_path: Path) -> None:
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps(((x_train, y_train + 5), (x_test, y_test))))
    with pytest.raises(DataFormatError, match=r"labels\.pkl \[train\]: labels must be integers 0-9"):
        read_pickle(path)
    path.write_bytes(pickle.dumps((x_train, y_train)))
    with pytest.raises(DataFormatError, match="each part must be an"):
        read_pickle(path)
    path.write_bytes(pickle.dumps(((x_train[:, :20], y_train), (x_test, y_test))))
    with pytest.raises(DataFormatError, match=r"images have shape \(600, 20, 28\)"):
        read_pickle(path)


def copy_of(root: Path, tmp_path: Path) -> Path:

    shutil.copytree(root / "MNIST", tmp_path / "MNIST")
    return tmp_path / "MNIST" / "raw"


def test_idx_with_a_bad_magic_number_is_refused_naming_the_file(tiny_mnist: Path, tmp_path: Path) -> None:
    raw = copy_of(tiny_mnist, tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x09\x03" + path.read_bytes()[4:])  # int8 instead of uint8
    with pytest.raises(
        DataFormatError, match=r"t10k-images-idx3-ubyte: IDX magic number 0x00000903, expected 0x00000803"
    ):
        read_idx(tmp_path, verify_md5=False)


def test_truncated_idx_is_refused_naming_the_file(tiny_mnist: Path, tmp_path: Path) -> None:
    raw = copy_of(tiny_mnist, tmp_path)
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(
        DataFormatError, match=r"train-labels-idx1-ubyte: 601 bytes, but its header \(600\) needs 608"
    ):
        read_idx(tmp_path, verify_md5=False)


def test_raw_file_that_is_not_the_official_one_is_refused_by_md5(tiny_mnist: Path) -> None:
    with pytest.raises(
        DataFormatError, match=r"train-images-idx3-ubyte: md5 differs from the official file's"
    ):
        read_idx(tiny_mnist)  # the tiny synthetic files are valid IDX, but not MNIST


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y: (x, y.astype(np.float32)), r"labels must be integers 0-9, got dtype float32"),
        (
            lambda x, y: (np.where(np.arange(784).reshape(28, 28) == 5, np.nan, x / 255.0), y),
            "NaN or infinity",
        ),
        (lambda x, y: (x, y[:-1]), r"labels have shape \(599,\), expected \(600,\)"),
        (lambda x, y: (x[:0], y[:0]), "no images"),
    ],
)
def test_bad_training_arrays_are_refused_naming_the_split(tmp_path: Path, change, message: str) -> None:
    (x_train, y_train), test = tiny_arrays()
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps((change(x_train, y_train), test)))
    with pytest.raises(DataFormatError, match=rf"bad\.pkl \[train\]: .*{message}"):
        read_pickle(path)


@pytest.mark.parametrize(
    ("dataset", "pickle_name"), [("MNIST", "mnist.pkl"), ("FashionMNIST", "fashion_mnist.pkl")]
)
def test_made_pickles_hold_exactly_the_official_files(
    mnist_root: Path, dataset: str, pickle_name: str
) -> None:
    from_idx, from_pickle = read_idx(mnist_root, dataset=dataset), read_pickle(mnist_root / pickle_name)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(from_idx, name), getattr(from_pickle, name)), name


def test_idx_files_read_into_the_same_tensors_as_torchvisions_mnist(mnist_root: Path) -> None:
    from torchvision.datasets import MNIST

    ours = read_idx(mnist_root)
    for train, images, labels in (
        (True, ours.train_images, ours.train_labels),
        (False, ours.test_images, ours.test_labels),
    ):
        theirs = MNIST(str(mnist_root), train=train)
        assert torch.equal(images, theirs.data) and torch.equal(labels, theirs.targets)
