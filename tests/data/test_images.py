"""data/images.py: an ordinary image is made into a digit as MNIST's were made."""

import numpy as np
import pytest

from data.images import mnist_like


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
