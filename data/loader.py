"""The in-memory batch loader: a whole split lives as one uint8 tensor on the device; batches are slices.

Shuffling is a seeded `randperm` per epoch; random shifts gather whole batches of shifted views, and other
distortions (data/augment.py) resample whole batches, so the training loop does no per-image Python work
(the cifar10-airbench way). All draws come from the loader's generator, whose state a checkpoint keeps.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mnist_lab.data.augment import Augment

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def split_validation(
    images: Tensor, labels: Tensor, validation_size: int | float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split a training set into (train, validation) by a permutation seeded with `seed`.

    `validation_size` is a number of images, or a fraction of the training set when it is a float.
    """
    n = len(labels)
    if isinstance(validation_size, float):  # a fraction in (0, 1), as the caller checked
        validation_size = max(1, round(validation_size * n))
    if not 0 <= validation_size < n:
        raise ValueError(
            f"data.validation_size must be in [0, {n}) for {n} training images, got {validation_size}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, val = order[validation_size:], order[:validation_size]
    return (images[train], labels[train]), (images[val], labels[val])


def normalize(images: Tensor, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Tensor:
    """uint8 (or float in [0, 255]) (B, 28, 28) -> float (B, 1, 28, 28) with the dataset's mean and std (of its
    training images in [0, 1]; MNIST's by default): the models' input."""
    return images.unsqueeze(1).float().sub_(255.0 * mean).div_(255.0 * std)


def shifted_views(images: Tensor, max_shift: int) -> Tensor:
    """All shifts of each image as a view: (N, 2s+1, 2s+1, H, W); [i, s + dy, s + dx] is image i moved by (dy, dx).

    The images are zero-padded by s once; indexing the view with (index, rows, cols) then gathers a batch
    and shifts it in one operation (3-4x faster than shifting a gathered batch by advanced indexing).
    """
    _, h, w = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))  # (N, H + 2s, W + 2s)
    return padded.unfold(1, h, 1).unfold(2, w, 1)  # (N, 2s+1, 2s+1, H, W), no copy


class DeviceBatches:
    """Iterate normalised (images (B, 1, 28, 28), labels (B,)) batches of a split held on `device`."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        device: torch.device,
        *,
        seed: int | None = None,
        augment: Augment | None = None,
        mean_std: tuple[float, float] = (MNIST_MEAN, MNIST_STD),
    ) -> None:
        """`seed`: shuffle every pass (and draw the augmentation) with a generator seeded so; None: in order.
        `mean_std`: the dataset's normalisation constants."""
        augment = augment or Augment()
        shuffle = seed is not None
        if (augment.max_shift or augment.distorts or augment.masks) and not shuffle:
            raise ValueError("random shifts and distortions are a training augmentation: they need a seed")
        self.images = images.to(device)  # uint8 (N, 28, 28): a quarter of float32's memory
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.max_shift = augment.max_shift
        self.distortion = augment if augment.distorts else None
        self.mean_std = mean_std
        self.rank, self.ranks = 0, 1  # see shard()
        self.generator = torch.Generator(device=device).manual_seed(seed or 0)  # shuffling, augmentation
        self.shifted = shifted_views(self.images, self.max_shift) if self.max_shift else None
        self.order: Tensor | None = None  # this epoch's permutation (None: in order)
        self.next_batch = 0
        self._resume: tuple[Tensor, int] | None = None

    def shard(self, rank: int, ranks: int) -> "DeviceBatches":
        """Under DDP: of each shuffled batch of `batch_size` (the global batch), yield only rank `rank`'s part
        (of `ranks`). Every rank draws the same order and augmentation, so that the ranks' parts together are
        the batch one process would train on. In-order (evaluation) batches are not sharded."""
        if self.shuffle:
            self.rank, self.ranks = rank, ranks
        return self

    def __len__(self) -> int:
        n, size = len(self.labels), self.batch_size
        last = n % size
        return math.ceil(n / size) - (0 < last < self.ranks)  # a last batch too small to share is left out

    def batch_sizes(self) -> set[int]:
        """The batch sizes one pass yields: the full size and, if the split does not divide, the last one."""
        n, size = len(self.labels), self.batch_size
        return {min(size, n)} | ({n % size} if n % size else set())

    @property
    def num_images(self) -> int:
        """Number of images in one pass."""
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, size, device = len(self.labels), self.batch_size, self.labels.device
        if self._resume is not None:  # finish the epoch a checkpoint was taken in
            self.order, first = self._resume
            self._resume = None
        else:
            self.order = torch.randperm(n, generator=self.generator, device=device) if self.shuffle else None
            first = 0
        for batch in range(first, len(self)):
            start = batch * size
            if self.order is None:
                images, labels = self.images[start : start + size], self.labels[start : start + size]
            else:
                index = self.order[start : start + size]
                part = slice(self.rank * len(index) // self.ranks, (self.rank + 1) * len(index) // self.ranks)
                labels = self.labels.index_select(0, index[part])  # ~10x faster than labels[index]
                images = self._augmented(index, self.generator, part)
            self.next_batch = batch + 1  # what a checkpoint taken after this batch resumes from
            yield normalize(images, *self.mean_std), labels

    def _augmented(self, index: Tensor, generator: torch.Generator, part: slice = slice(None)) -> Tensor:
        """The images at `index[part]`, shifted and distorted with draws from `generator` made for all of
        `index` (so every rank's generator stays in step): (len(index[part]), 28, 28)."""
        kept = index[part]
        if self.max_shift:
            rows, cols = torch.randint(
                0, 2 * self.max_shift + 1, (2, len(index)), generator=generator, device=index.device
            )
            images = self.shifted[kept, rows[part], cols[part]]  # gathered and shifted at once
        else:
            images = self.images.index_select(0, kept)
        if self.distortion is not None:
            images = self.distortion(images.unsqueeze(1).float(), generator, len(index), part).squeeze(1)
        if self.augment.masks:
            images = self.augment.flip_and_erase(images, generator, len(index), part)
        return images

    def preview(self, count: int = 64, seed: int = 0) -> Tensor:
        """The first `count` images as training sees them, (count, 1, 28, 28) in [0, 1], drawn with a generator
        of their own: the training draws are untouched."""
        generator = torch.Generator(device=self.labels.device).manual_seed(seed)
        index = torch.arange(min(count, len(self.labels)), device=self.labels.device)
        return self._augmented(index, generator).unsqueeze(1).float().clamp(0, 255) / 255

    def state_dict(self) -> dict[str, Any]:
        """Where the pass stands: the generator, this epoch's order and the next batch (tensors and ints)."""
        return {"generator": self.generator.get_state(), "order": self.order, "next_batch": self.next_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`: the next pass resumes the saved epoch at its next batch, if it was unfinished."""
        self.generator.set_state(state["generator"])
        unfinished = state["order"] is not None and state["next_batch"] < len(self)
        self._resume = (state["order"].to(self.labels.device), state["next_batch"]) if unfinished else None
