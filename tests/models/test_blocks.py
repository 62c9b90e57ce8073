"""models/blocks.py: the residual block, activations by name, conv/pool output sizes."""

import itertools

import torch
from torch import nn

from mnist_lab.models.blocks import ResBlock, out_dim


def test_resblock_is_relu_of_input_plus_residual() -> None:
    torch.manual_seed(0)
    block = ResBlock(8)
    x = torch.randn(3, 8)
    expected = torch.relu(x + block.fc[1](torch.relu(block.fc[0](x))))
    assert torch.allclose(block(x), expected)


def test_out_dim_matches_pytorch_layers() -> None:
    for size, kernel, stride, padding, dilation in itertools.product(
        (7, 28, 32), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)
    ):
        if padding > kernel // 2 or dilation * (kernel - 1) + 1 > size + 2 * padding:
            continue
        conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
        actual = conv(torch.zeros(1, 1, size, size)).shape[-1]
        assert out_dim(size, kernel, padding, stride, dilation) == actual, (
            size,
            kernel,
            stride,
            padding,
            dilation,
        )
        if dilation == 1:
            pool = nn.AvgPool2d(kernel, stride=stride, padding=padding)
            assert out_dim(size, kernel, padding, stride) == pool(torch.zeros(1, 1, size, size)).shape[-1]
