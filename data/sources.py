"""Read MNIST into validated uint8 tensors (N, 28, 28) and int64 labels, from IDX files or a pickle."""

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mnist_lab.data.safe_pickle import UnsafePickleError, load_arrays

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

RAW_FILES = {  # the official files and their md5 sums
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_RAW_FILES = {  # Fashion-MNIST's official files, the same names and format
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DATASETS = {"MNIST": RAW_FILES, "FashionMNIST": FASHION_RAW_FILES}  # torchvision's folder names -> files


class DataFormatError(ValueError):
    """A data file holds something other than MNIST-shaped images and labels."""

    exit_code = 2  # a bad file of the user's (mnist_lab.errors)


class DataMissing(FileNotFoundError):
    """The data files a config names are not there: the message says how to fetch them."""

    exit_code = 2


@dataclass(frozen=True)
class MNISTData:
    """The official split: training images/labels and test images/labels, uint8 (N, 28, 28) and int64 (N,)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def read_idx(root: str | Path, verify_md5: bool = True, dataset: str = "MNIST") -> MNISTData:
    """Read `dataset` (MNIST or FashionMNIST) from torchvision's layout, `<root>/<dataset>/raw/*-ubyte` (what
    `MNIST(root)` and `FashionMNIST(root)` read).

    Each file's IDX header is checked against its size first, and, with `verify_md5`, its md5 against the
    official file's (turn it off for IDX files of your own). The bytes are read here rather than by
    torchvision's MNIST reader: importing torchvision costs 1.5 s per run (its package imports its models,
    ops and torch._dynamo), several times what reading the four files takes; the result is the same tensors.
    """
    if dataset not in DATASETS:
        raise DataFormatError(f"data.source.dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    root = Path(root)
    raw = root / dataset / "raw"
    missing = [name for name in DATASETS[dataset] if not (raw / name).is_file()]
    if missing:
        raise DataMissing(
            f"{dataset} files missing in {raw} (data.source.root={root}): {', '.join(missing)}. "
            "Run `make data` (or `python -m mnist_lab.data.fetch --root <root>`) to fetch them."
        )
    arrays = {}
    for name, md5 in DATASETS[dataset].items():
        ndim = 3 if "images" in name else 1
        check_idx_header(raw / name, ndim)
        content = (raw / name).read_bytes()
        if verify_md5 and hashlib.md5(content).hexdigest() != md5:
            raise DataFormatError(
                f"{raw / name}: md5 differs from the official file's ({md5}); `make data` fetches it again "
                "(data.source.verify_md5=false reads IDX files of your own)"
            )
        dims = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
        arrays[name] = np.frombuffer(bytearray(content), dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return MNISTData(
        *checked_split(
            arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"], f"{raw} (training files)"
        ),
        *checked_split(
            arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"], f"{raw} (t10k files)"
        ),
    )


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes, as hex."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_idx_header(path: Path, ndim: int) -> None:
    """Refuse an IDX file whose magic number is not uint8 with `ndim` dimensions, or whose size is not its header's."""
    header_size = 4 + 4 * ndim
    with open(path, "rb") as file:
        header = file.read(header_size)
    expected_magic = 0x0800 + ndim  # 0x08: unsigned bytes
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != expected_magic:
        found = f"{magic:#010x}" if magic is not None else "none (file too short)"
        raise DataFormatError(
            f"{path}: IDX magic number {found}, expected {expected_magic:#010x} (uint8, {ndim}-D)"
        )
    dims = struct.unpack(f">{ndim}I", header[4:]) if len(header) == header_size else ()
    expected_size = header_size + math.prod(dims)
    size = path.stat().st_size
    if not dims or size != expected_size:
        raise DataFormatError(
            f"{path}: {size:,} bytes, but its header ({' x '.join(map(str, dims)) or 'cut short'}) "
            f"needs {expected_size:,}: the file is truncated or padded"
        )


def read_pickle(path: str | Path) -> MNISTData:
    """Read a `((X_train, y_train), (X_test, y_test))` pickle, or the classic (train, valid, test).

    X is (N, 28, 28) or (N, 784), uint8 0-255 or float 0-1; the classic layout's validation part is
    joined back to its training part (our own validation split is taken later). `.gz` is decompressed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataMissing(
            f"pickle not found: {path} (data.source.path). `make data` writes data/mnist.pkl and data/fashion_mnist.pkl."
        )
    content = load_arrays(path)
    parts = _pairs(content, path)
    if len(parts) == 3:  # classic mnist.pkl.gz: train 50k, valid 10k, test 10k
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = parts
        train = _join(
            *checked_split(x_train, y_train, f"{path} [train]"),
            *checked_split(x_valid, y_valid, f"{path} [valid]"),
        )
    else:
        (x_train, y_train), (x_test, y_test) = parts
        train = checked_split(x_train, y_train, f"{path} [train]")
    return MNISTData(*train, *checked_split(x_test, y_test, f"{path} [test]"))


def _pairs(content: object, path: Path) -> list[tuple[object, object]]:
    layout = "((X_train, y_train), (X_test, y_test)) or ((X, y), (X, y), (X, y))"
    if not isinstance(content, tuple | list) or len(content) not in (2, 3):
        raise DataFormatError(f"{path}: expected {layout}, got a {type(content).__name__}")
    if not all(isinstance(part, tuple | list) and len(part) == 2 for part in content):
        raise DataFormatError(f"{path}: expected {layout}; each part must be an (images, labels) pair")
    return [tuple(part) for part in content]


def _join(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> tuple[Tensor, Tensor]:
    return torch.cat([x1, x2]), torch.cat([y1, y2])


def checked_split(images: object, labels: object, where: str) -> tuple[Tensor, Tensor]:
    """Validate one (images, labels) pair and return uint8 (N, 28, 28) images and int64 (N,) labels.

    Accepts numpy arrays or tensors; images (N, 28, 28) or (N, 784), uint8 0-255 or float 0-1.
    """
    images, labels = _as_numpy(images, "images", where), _as_numpy(labels, "labels", where)
    n = images.shape[0] if images.ndim else 0
    if images.ndim == 2 and images.shape[1] == np.prod(IMAGE_SHAPE):
        images = images.reshape(n, *IMAGE_SHAPE)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(f"{where}: images have shape {images.shape}, expected (N, 28, 28) or (N, 784)")
    if n == 0:
        raise DataFormatError(f"{where}: no images")
    if labels.shape != (n,):
        raise DataFormatError(
            f"{where}: labels have shape {labels.shape}, expected ({n},) to match the images"
        )
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataFormatError(
            f"{where}: labels must be integers 0-{NUM_CLASSES - 1}, got dtype {labels.dtype} "
            f"with range [{labels.min()}, {labels.max()}]"
        )
    return torch.from_numpy(_as_uint8(images, where)), torch.from_numpy(labels.astype(np.int64))


def _as_numpy(value: object, what: str, where: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise DataFormatError(f"{where}: {what} are a {type(value).__name__}, expected a numpy array")


def _as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            raise DataFormatError(f"{where}: float images contain NaN or infinity")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise DataFormatError(f"{where}: float images must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
        return np.rint(images * 255.0).astype(np.uint8)
    if images.dtype.kind in "iu":
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DataFormatError(f"{where}: integer images must lie in 0-255, got {low}-{high}")
        return images.astype(np.uint8)
    raise DataFormatError(f"{where}: images have dtype {images.dtype}, expected uint8 or float")


__all__ = ["MNISTData", "DataFormatError", "UnsafePickleError", "read_idx", "read_pickle", "checked_split"]
