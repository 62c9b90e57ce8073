"""data/augment.py and the loader's augmentation: each option changes images the way it says, per image,
seeded."""

import math

import pytest
import torch

from mnist_lab.data.augment import Augment, gaussian_blur
from mnist_lab.data.loader import DeviceBatches

CPU = torch.device("cpu")


def blob_images(count: int) -> torch.Tensor:
    """uint8 (count, 28, 28): a bright 6x6 square in the middle, away from every edge."""
    images = torch.zeros(count, 28, 28, dtype=torch.uint8)
    images[:, 11:17, 11:17] = 255
    return images


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(N, 2): the (row, column) centre of mass of each image (N, 28, 28) or (N, 1, 28, 28)."""
    images = images.reshape(len(images), 28, 28).float()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = images.sum(dim=(1, 2))
    return torch.stack([(images * rows).sum(dim=(1, 2)) / mass, (images * cols).sum(dim=(1, 2)) / mass], 1)


def test_a_shift_moves_the_centre_of_mass_by_the_shift() -> None:
    images = blob_images(64)
    batches = DeviceBatches(images, torch.zeros(64, dtype=torch.long), 64, CPU, seed=0, augment=Augment(2))
    shifted = batches.preview(64, seed=3) * 255
    draws = torch.randint(0, 5, (2, 64), generator=torch.Generator().manual_seed(3))  # what preview drew
    moved = centre_of_mass(shifted) - centre_of_mass(images)
    assert torch.equal(moved, (2 - draws).T.float())  # whole pixels, exactly the drawn shift
    assert len({tuple(m.tolist()) for m in moved}) > 5  # each image its own


def orientation(images: torch.Tensor) -> torch.Tensor:
    """The angle (degrees, counter-clockwise as seen) of each image's principal axis, from second moments."""
    images = images.reshape(len(images), 28, 28).float()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = images.sum(dim=(1, 2))
    com = centre_of_mass(images)
    x = cols - com[:, 1, None, None]
    y = -(rows - com[:, 0, None, None])  # up is positive
    mxx, myy, mxy = ((images * v).sum(dim=(1, 2)) / mass for v in (x * x, y * y, x * y))
    return torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy))


def test_affine_with_rotation_only_rotates_a_known_image_by_its_angle() -> None:
    bar = torch.zeros(16, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 255.0  # horizontal: orientation 0
    rotate = Augment(degrees=40.0)
    rotated = rotate(bar, torch.Generator().manual_seed(0))
    u = torch.rand(16, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    angles = 40.0 * u[:, 0]  # the draws `rotate` made, one per image
    assert torch.allclose(orientation(rotated), angles, atol=1.5)
    assert torch.allclose(centre_of_mass(rotated), centre_of_mass(bar), atol=0.1)  # about the centre
    assert rotated.sum() == pytest.approx(bar.sum().item(), rel=0.03)  # nothing lost at the edges


def test_elastic_with_alpha_0_is_the_identity_and_otherwise_moves_each_image_its_own_way() -> None:
    digits = blob_images(8).unsqueeze(1).float()
    assert torch.equal(Augment(alpha=0.0)(digits, torch.Generator().manual_seed(0)), digits)
    warped = Augment(alpha=34.0, sigma=4.0)(digits, torch.Generator().manual_seed(0))
    assert (warped - digits).abs().amax(dim=(1, 2, 3)).min() > 10  # every image moved
    assert all(not torch.allclose(warped[0], warped[k]) for k in range(1, 8))  # differently each


def test_the_same_seed_gives_the_same_batch_and_another_seed_another() -> None:
    images, labels = blob_images(256), torch.arange(256)
    distort = Augment(max_shift=1, degrees=10, scale=0.1, shear=10, translate=2, alpha=34, sigma=4)

    def first_batch(seed: int) -> torch.Tensor:
        batches = DeviceBatches(images, labels, 64, CPU, seed=seed, augment=distort)
        return next(iter(batches))[0]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


def test_gaussian_blur_keeps_the_mass_and_spreads_it_by_sigma() -> None:
    impulse = torch.zeros(1, 2, 41, 41)
    impulse[:, :, 20, 20] = 1.0
    blurred = gaussian_blur(impulse, sigma=3.0)
    assert blurred.sum().item() == pytest.approx(2.0, rel=1e-5)
    column = blurred[0, 0, :, 20]
    variance = (column * (torch.arange(41.0) - 20) ** 2).sum() / column.sum()
    assert math.sqrt(variance) == pytest.approx(3.0, rel=0.02)


def test_a_flip_mirrors_each_image_it_draws_and_leaves_the_others() -> None:
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    assert torch.equal(
        Augment(flip=1.0).flip_and_erase(images, torch.Generator().manual_seed(0)), images.flip(-1)
    )
    half = Augment(flip=0.5).flip_and_erase(images, torch.Generator().manual_seed(0))
    mirrored = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5  # the draws it makes
    assert torch.equal(half[mirrored], images[mirrored].flip(-1)) and torch.equal(
        half[~mirrored], images[~mirrored]
    )
    assert 0 < int(mirrored.sum()) < 64


def test_erasing_blanks_one_rectangle_of_the_drawn_size_inside_the_image() -> None:
    images = torch.full((256, 28, 28), 255, dtype=torch.uint8)
    erased = Augment(erase=1.0, erase_size=10).flip_and_erase(images, torch.Generator().manual_seed(0))
    u = torch.rand(256, 5, generator=torch.Generator().manual_seed(0))  # the draws it makes
    sides = 1 + (u[:, 1:3] * 10).long().clamp(max=9)
    for image, (height, width) in zip(erased, sides.tolist(), strict=True):
        rows, cols = (image == 0).nonzero(as_tuple=True)
        assert len(rows) == height * width  # one filled rectangle of the drawn height and width
        assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (height, width)
    assert {int(h) for h in sides[:, 0]} == set(range(1, 11))  # every size from 1 to erase_size is drawn
    half = Augment(erase=0.5).flip_and_erase(images, torch.Generator().manual_seed(1))
    assert 0.35 < float((half == 0).flatten(1).any(1).float().mean()) < 0.65  # about half of them erased


def test_flip_and_erase_take_the_same_draws_per_image_on_every_rank() -> None:
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    augment = Augment(flip=0.5, erase=0.5)
    whole = augment.flip_and_erase(images, torch.Generator().manual_seed(3))
    parts = [augment.flip_and_erase(images[k * 4 : (k + 1) * 4], torch.Generator().manual_seed(3), 8,
                                    slice(k * 4, (k + 1) * 4)) for k in (0, 1)]  # fmt: skip
    assert torch.equal(torch.cat(parts), whole)


def test_options_that_are_off_draw_nothing() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(4, 28, 28)
    assert torch.equal(Augment().flip_and_erase(images, generator), images)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
