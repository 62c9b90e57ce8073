"""Data: both sources read the same tensors, pickles run no code, splits and batches are seeded and complete."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from data.fetch import unverified_files
from data.loader import MNIST_MEAN, MNIST_STD, DeviceBatches, normalize, shifted_views, split_validation
from data.safe_pickle import UnsafePickleError, load_arrays
from data.sources import DataFormatError, read_idx, read_pickle
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.array([1, "a"], dtype=object), "dtype object"),
        (np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")]), "not a plain"),
        (np.zeros(2, dtype=np.complex64), "not a plain"),
    ],
)
def test_pickle_of_non_numeric_arrays_is_refused(tmp_path: Path, content: np.ndarray, message: str) -> None:
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(UnsafePickleError, match=message):
        load_arrays(path)


@pytest.mark.parametrize(("raw", "message"), [(b"", "empty"), (b"not a pickle at all", "not a valid pickle")])
def test_garbage_files_are_refused_with_one_error_type(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError, match=message):
        load_arrays(path)


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


def test_validation_split_is_seeded_disjoint_and_complete() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28)
    labels = torch.arange(100)
    (x_train, y_train), (x_val, y_val) = split_validation(images, labels, 20, seed=0)
    assert len(y_val) == 20 and len(y_train) == 80
    assert sorted(torch.cat([y_train, y_val]).tolist()) == list(range(100))
    assert torch.equal(x_val[:, 0, 0].long(), y_val)
    assert torch.equal(split_validation(images, labels, 20, seed=0)[1][1], y_val)
    assert not torch.equal(split_validation(images, labels, 20, seed=1)[1][1], y_val)
    with pytest.raises(ValueError, match="data.validation_size must be in"):
        split_validation(images, labels, 100, seed=0)


def test_batches_cover_every_image_once_per_epoch_in_a_new_seeded_order() -> None:
    images = torch.zeros(103, 28, 28, dtype=torch.uint8)
    labels = torch.arange(103)
    batches = DeviceBatches(images, labels, 10, torch.device("cpu"), shuffle=True, seed=3)
    epochs = [torch.cat([y for _, y in batches]) for _ in range(2)]
    assert len(batches) == 11
    assert all(sorted(order.tolist()) == list(range(103)) for order in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    again = DeviceBatches(images, labels, 10, torch.device("cpu"), shuffle=True, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), epochs[0])
    x, _ = next(iter(batches))
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32


def test_normalize_uses_mnist_mean_and_std() -> None:
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1).expand(2, 28, 28)
    out = normalize(images)
    assert out.shape == (2, 1, 28, 28)
    assert torch.allclose(
        out[:, 0, 0, 0], torch.tensor([-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD])
    )


def test_random_shifts_move_whole_images_by_at_most_max_shift() -> None:
    images = torch.zeros(500, 28, 28, dtype=torch.uint8)
    patch = torch.arange(1, 33, dtype=torch.uint8).view(8, 4)
    images[:, 10:18, 12:16] = patch  # a patch well inside: no shift pushes it out
    batches = DeviceBatches(
        images, torch.arange(500), 100, torch.device("cpu"), shuffle=True, max_shift=2, seed=0
    )
    offsets = set()
    for normalized, _ in batches:
        shifted = (normalized[:, 0] * 255 * MNIST_STD + 255 * MNIST_MEAN).round().to(torch.uint8)
        assert torch.equal(
            shifted.sum(dim=(1, 2), dtype=torch.int64), images[:100].sum(dim=(1, 2), dtype=torch.int64)
        )
        for image in shifted:
            top, left = (int(i) for i in (image == 1).nonzero()[0])
            assert torch.equal(image[top : top + 8, left : left + 4], patch)
            offsets.add((top - 10, left - 12))
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_shifted_views_are_the_padded_image_moved() -> None:
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).view(2, 28, 28)
    views = shifted_views(images, 2)
    assert views.shape == (2, 5, 5, 28, 28)
    assert torch.equal(views[:, 2, 2], images)  # the middle view is the image itself
    assert torch.equal(views[1, 0, 4][2:, :26], images[1, :26, 2:])  # rows moved down 2, columns left 2
    assert torch.equal(views[1, 0, 4][:2], torch.zeros(2, 28, dtype=torch.int64))


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


def copy_of(root: Path, tmp_path: Path) -> Path:
    import shutil

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


def test_validation_size_can_be_a_fraction_in_0_1() -> None:
    images, labels = torch.zeros(200, 28, 28, dtype=torch.uint8), torch.arange(200)
    (_, y_train), (_, y_val) = split_validation(images, labels, 0.1, seed=0)
    assert (len(y_train), len(y_val)) == (180, 20)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(
            ValueError, match=f"data.validation_size as a fraction must be in \\(0, 1\\), got {bad}"
        ):
            split_validation(images, labels, bad, seed=0)


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
