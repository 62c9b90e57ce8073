"""models/resmlp.py: the residual-block MLP's width, depth and dropout."""

import pytest
import torch

from mnist_lab.models import ResBlockMLP


@pytest.mark.parametrize(("width", "depth"), [(64, 0), (64, 1), (128, 3)])
def test_resmlp_width_and_depth(width: int, depth: int) -> None:
    model = ResBlockMLP(width=width, depth=depth, dropout=0.2)
    expected = (784 * width + width) + depth * 2 * (width * width + width) + (width * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert len(model.blocks) == depth
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resmlp_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = ResBlockMLP(width=32, depth=2, dropout=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
