"""data/images.py: an ordinary image is made into a digit as MNIST's were made, or into an item as
Fashion-MNIST's were made."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lab.data.images import fashion_like, mnist_like, prepare
from mnist_lab.data.sources import read_idx


def test_prepared_digit_is_centred_and_fits_20_pixels() -> None:
    canvas = np.full((100, 60), 0.9, np.float32)  # light paper
    canvas[10:70, 5:25] = 0.1  # a dark bar, 60 x 20, off-centre
    digit = mnist_like(canvas)
    rows, cols = np.nonzero(digit > 0.05)
    assert digit.shape == (28, 28) and rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21
    total = digit.sum()
    com = ((digit.sum(1) * np.arange(28)).sum() / total, (digit.sum(0) * np.arange(28)).sum() / total)
    assert com == pytest.approx((13.5, 13.5), abs=0.6)
    assert digit.max() == pytest.approx(1.0, abs=0.05)  # inverted: white ink on black


def product_photo(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Fashion-MNIST item as a product photo: dark on white, enlarged 3x, off-centre on a larger canvas."""
    big = (
        np.asarray(Image.fromarray(255 - image).resize((84, 84), Image.Resampling.BICUBIC), np.float32) / 255
    )
    photo = np.ones((130, 110), np.float32)
    top, left = rng.integers(0, 130 - 84), rng.integers(0, 110 - 84)
    photo[top : top + 84, left : left + 84] = big
    return photo


def test_a_fashion_photo_is_made_back_into_the_item_it_was_made_from(mnist_root: Path) -> None:
    items = read_idx(mnist_root, dataset="FashionMNIST").test_images[:50].numpy()
    rng = np.random.default_rng(0)
    differences = []
    for item in items:
        made = fashion_like(product_photo(item, rng))
        original = item.astype(np.float32) / 255
        assert made.shape == (28, 28) and made.min() >= 0 and made.max() <= 1

        def box(image: np.ndarray) -> np.ndarray:
            rows, cols = np.nonzero(image > 0.05)
            return np.array([rows.min(), rows.max(), cols.min(), cols.max()])

        assert np.abs(box(made) - box(original)).max() <= 1  # the whole item, centred, full size
        differences.append(np.abs(made - original).mean())  # light on dark, as the set's own
    assert np.mean(differences) < 0.06 and max(differences) < 0.15, differences
    assert np.array_equal(prepare(items[0] / 255, "fashion_mnist"), fashion_like(items[0] / 255))


def test_an_item_is_scaled_to_fill_28_pixels_on_its_longest_side() -> None:
    photo = np.ones((200, 100), np.float32)
    photo[20:180, 30:70] = 0.2  # a dark item, 160 x 40, on white
    made = fashion_like(photo)
    rows, cols = np.nonzero(made > 0.1)
    assert rows.max() - rows.min() + 1 == 28 and cols.max() - cols.min() + 1 == 7
    assert cols.min() == 10 and made.max() == pytest.approx(0.8, abs=0.02)  # centred; negated, not stretched


def test_a_blank_photo_and_an_unknown_dataset_are_refused() -> None:
    with pytest.raises(ValueError, match="no item found"):
        fashion_like(np.ones((40, 40), np.float32))
    with pytest.raises(
        ValueError, match=r"data.name=kmnist: no image preparation for it \(known: mnist, fashion_mnist\)"
    ):
        prepare(np.ones((40, 40), np.float32), "kmnist")
