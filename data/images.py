"""Ordinary image files made into the models' input the way the dataset's own images were made, then
normalised with the dataset's constants (`prepare(grey, dataset)`).

MNIST (`mnist_like`): greyscale; inverted when the background is light (MNIST is white ink on black);
cropped to the ink; scaled to fit 20x20 keeping its aspect ratio; placed in 28x28 with its centre of mass at
the centre. Fashion-MNIST (`fashion_like`), as Xiao et al. (2017) made it from product photos: the edges
that match the background trimmed; the longest side scaled to 28; the shorter side padded to 28 with the
item in the middle; light on dark (negated when the background is light)."""

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from mnist_lab.data.loader import MNIST_MEAN, MNIST_STD

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 image
SIDE = 28


MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes to 150 MB; past it, a file is refused from its header


class ImageError(ValueError):
    """This file cannot be made into a digit (unreadable, not an image, nothing drawn)."""

    exit_code = 2  # a bad file of the user's (mnist_lab.errors)


def load_greyscale(path: Path) -> np.ndarray:
    """The image file as float greyscale in [0, 1] (transparent parts count as white paper); an image over
    MAX_PIXELS is refused from its header, before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            image = Image.open(path)
        with image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{width}x{height} pixels, over the limit of {MAX_PIXELS // 1_000_000} megapixels: "
                    "not decoded; scale it down first"
                )
            return greyscale(image)
    except UnidentifiedImageError:
        raise ImageError("not an image PIL can read") from None
    except Image.DecompressionBombError as error:  # PIL refuses the largest ones itself, on opening
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageError(
            f"{size}, over the limit of {MAX_PIXELS // 1_000_000} megapixels: not decoded; scale it down first"
        ) from None
    except OSError as error:
        raise ImageError(f"cannot be read: {error}") from None


def greyscale(image: Image.Image) -> np.ndarray:
    """A PIL image as float greyscale in [0, 1] (transparent parts count as white paper)."""
    image.load()
    if image.mode.startswith(("I", "F")):  # 16- or 32-bit greyscale: scaled to [0, 1], not clipped at 255
        return wide_greyscale(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image)
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if grey.size == 0:
        raise ImageError("the image is empty (0 pixels)")
    return grey


def wide_greyscale(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float greyscale image in [0, 1]: divided by the largest value its depth can hold
    (65535 for 16 bits; 255 or 1 where its values fit those)."""
    grey = np.asarray(image, dtype=np.float64)
    if grey.size == 0:
        raise ImageError("the image is empty (0 pixels)")
    if not np.isfinite(grey).all() or grey.min() < 0:
        raise ImageError("a greyscale image with negative, NaN or infinite values")
    high = float(grey.max())
    full = (
        1.0
        if image.mode == "F" and high <= 1.0
        else 255.0
        if high <= 255
        else 65535.0
        if high <= 65535
        else high
    )
    return (grey / full).astype(np.float32)


def mnist_like(grey: np.ndarray) -> np.ndarray:
    """A (28, 28) float image in [0, 1], white ink on black, prepared as MNIST's digits were."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    ink = grey - paper if paper < 0.5 else paper - grey  # light paper: dark ink, so invert
    ink = np.clip(ink, 0.0, None)
    if ink.max() < 0.1:
        raise ImageError("no digit found: the image is blank (no ink differs from the background)")
    ink /= ink.max()
    rows, cols = np.nonzero(ink > 0.1)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # crop to the ink
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    patch = np.asarray(
        Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS), dtype=np.float32
    )
    patch = np.clip(patch, 0.0, 1.0)
    # Centre of mass to the image centre, as MNIST was made (a patch within the 28x28 frame).
    total = patch.sum()
    com_y = (patch.sum(axis=1) * np.arange(patch.shape[0])).sum() / total
    com_x = (patch.sum(axis=0) * np.arange(patch.shape[1])).sum() / total
    top = int(np.clip(round(SIDE / 2 - 0.5 - com_y), 0, SIDE - patch.shape[0]))
    left = int(np.clip(round(SIDE / 2 - 0.5 - com_x), 0, SIDE - patch.shape[1]))
    digit = np.zeros((SIDE, SIDE), dtype=np.float32)
    digit[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return digit


def fashion_like(grey: np.ndarray) -> np.ndarray:
    """A (28, 28) float image in [0, 1], the whole item light on dark, prepared as Fashion-MNIST's were."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    paper = float(np.median(border))
    item = 1.0 - grey if paper >= 0.5 else grey.copy()  # light background: negate, as the set was made
    background = min(paper, 1.0 - paper)
    item = np.clip(item - background, 0.0, None) / (1.0 - background)  # the background to black
    rows, cols = np.nonzero(np.abs(grey - paper) > 0.05)  # the set's trimming threshold: 5% of full scale
    if rows.size == 0:
        raise ImageError("no item found: the image is blank (nothing differs from the background)")
    item = item[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = item.shape
    scale = SIDE / max(height, width)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    patch = np.asarray(Image.fromarray(item, mode="F").resize(size, Image.Resampling.LANCZOS), np.float32)
    image = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - patch.shape[0]) // 2, (SIDE - patch.shape[1]) // 2
    image[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return np.clip(image, 0.0, 1.0)


PREPARATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mnist": mnist_like,
    "fashion_mnist": fashion_like,
}


def prepare(grey: np.ndarray, dataset: str) -> np.ndarray:
    """`grey` made as the images of `dataset` (data.name) were made."""
    if dataset not in PREPARATIONS:
        raise ValueError(
            f"data.name={dataset}: no image preparation for it (known: {', '.join(PREPARATIONS)})"
        )
    return PREPARATIONS[dataset](grey)


def to_input(image: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """(28, 28) values in [0, 1] -> the models' input (1, 1, 28, 28), normalised as in training."""
    return ((torch.from_numpy(image) - mean) / std).reshape(1, 1, SIDE, SIDE)


def image_paths(spec: str) -> list[Path]:
    """`images=`: a folder (its image files, sorted), one file, or a list `[a.png,b.png]`."""
    paths = [Path(p.strip().strip("'\"")) for p in spec.strip("[]").split(",") if p.strip()]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found
