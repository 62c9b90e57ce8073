"""data/loader.py: seeded validation splits, in-memory batches that cover every image once per epoch,
normalisation and random shifts, and resumable positions."""

import pytest
import torch
from torch import Tensor

from mnist_lab.data.augment import Augment
from mnist_lab.data.loader import (
    MNIST_MEAN,
    MNIST_STD,
    DeviceBatches,
    normalize,
    shifted_views,
    split_validation,
)
from tests.conftest import synthetic_digits


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
    batches = DeviceBatches(images, labels, 10, torch.device("cpu"), seed=3)
    epochs = [torch.cat([y for _, y in batches]) for _ in range(2)]
    assert len(batches) == 11
    assert all(sorted(order.tolist()) == list(range(103)) for order in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    again = DeviceBatches(images, labels, 10, torch.device("cpu"), seed=3)
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
        images,
        torch.arange(500),
        100,
        torch.device("cpu"),
        augment=Augment(max_shift=2),
        seed=0,
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


def test_validation_size_can_be_a_fraction_in_0_1() -> None:
    images, labels = torch.zeros(200, 28, 28, dtype=torch.uint8), torch.arange(200)
    (_, y_train), (_, y_val) = split_validation(images, labels, 0.1, seed=0)
    assert (len(y_train), len(y_val)) == (180, 20)
    with pytest.raises(
        ValueError, match=r"data.validation_size must be in \[0, 200\) for 200 training images"
    ):
        split_validation(images, labels, 200, seed=0)


def test_device_batches_give_the_classic_normalised_images() -> None:
    images = torch.from_numpy(synthetic_digits(300, 0)[0])
    classic = (images.float() / 255 - MNIST_MEAN) / MNIST_STD  # what ToTensor + Normalize give
    positions = torch.arange(300)  # as labels: each batch says which images it holds
    batches = DeviceBatches(images, positions, 64, torch.device("cpu"), seed=1)
    seen = []
    for x, index in batches:
        assert x.shape[1:] == (1, 28, 28)
        assert torch.allclose(x[:, 0], classic[index], atol=1e-5)
        seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(300))


def test_the_shards_of_a_batch_are_the_batch_one_process_trains_on() -> None:
    images = torch.randint(0, 256, (100, 28, 28), dtype=torch.uint8)
    labels = torch.arange(100) % 10
    augment = Augment(max_shift=2, degrees=10.0, alpha=8.0, sigma=3.0)

    def passes(shard: tuple[int, int]) -> list[tuple[Tensor, Tensor]]:
        batches = DeviceBatches(images, labels, 32, torch.device("cpu"), seed=3, augment=augment).shard(
            *shard
        )
        return [batch for _ in range(2) for batch in batches]  # two epochs: the generators stay in step

    whole, first, second = passes((0, 1)), passes((0, 2)), passes((1, 2))
    assert len(whole) == len(first) == len(second) == 2 * 4  # 32, 32, 32, 4 (the last batch shared too)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, first, second, strict=True):
        assert len(y0) == len(y1) == len(y) // 2
        assert torch.equal(torch.cat([y0, y1]), y)
        assert torch.allclose(torch.cat([x0, x1]), x, atol=1e-5)
    three = DeviceBatches(images, labels, 33, torch.device("cpu"), seed=0).shard(2, 3)
    assert len(three) == 3  # 33, 33, 33: the last single image cannot be shared by 3 ranks, so it is left out
