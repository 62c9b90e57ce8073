"""The in-memory batch loader: a whole split lives as one uint8 tensor on the device; batches are slices.

Shuffling is a seeded `randperm` per epoch and augmentation (random shifts) works on the whole batch
tensor, so the training loop does no per-image Python work (the cifar10-airbench way).
"""

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def split_validation(
    images: Tensor, labels: Tensor, validation_size: int, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split a training set into (train, validation) by a permutation seeded with `seed`."""
    n = len(labels)
    if not 0 <= validation_size < n:
        raise ValueError(
            f"data.validation_size must be in [0, {n}) for {n} training images, got {validation_size}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, val = order[validation_size:], order[:validation_size]
    return (images[train], labels[train]), (images[val], labels[val])


def normalize(images: Tensor) -> Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) with MNIST's mean and std: the models' input (DESIGN.md)."""
    return images.unsqueeze(1).float().sub_(255.0 * MNIST_MEAN).div_(255.0 * MNIST_STD)


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image of a uint8 (B, H, W) batch by up to `max_shift` pixels each way, filling with 0."""
    b, h, w = images.shape
    device = images.device
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))  # (B, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1, 1), generator=generator, device=device)
    rows = dy + torch.arange(h, device=device).view(1, h, 1)  # (B, H, 1)
    cols = dx + torch.arange(w, device=device).view(1, 1, w)  # (B, 1, W)
    return padded[torch.arange(b, device=device).view(b, 1, 1), rows, cols]  # (B, H, W)


class DeviceBatches:
    """Iterate normalised (images (B, 1, 28, 28), labels (B,)) batches of a split held on `device`."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool = False,
        max_shift: int = 0,
        seed: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be a positive integer, got {batch_size}")
        if max_shift < 0:
            raise ValueError(f"data.max_shift must be >= 0, got {max_shift}")
        self.images = images.to(device)  # uint8 (N, 28, 28): a quarter of float32's memory
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.max_shift = max_shift
        self.generator = torch.Generator(device=device).manual_seed(seed)  # shuffling and shifts only

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_images(self) -> int:
        """Number of images in one pass."""
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, size = len(self.labels), self.batch_size
        order = (
            torch.randperm(n, generator=self.generator, device=self.labels.device) if self.shuffle else None
        )
        for start in range(0, n, size):
            if order is None:
                images, labels = self.images[start : start + size], self.labels[start : start + size]
            else:
                index = order[start : start + size]
                images, labels = self.images[index], self.labels[index]
            if self.max_shift:
                images = random_shift(images, self.max_shift, self.generator)
            yield normalize(images), labels
