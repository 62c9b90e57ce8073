"""Pieces shared by the models: activations and pooling by name, conv/pool output sizes, the residual block."""

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for `name` (one of ACTIVATIONS)."""
    return ACTIVATIONS[name]()


POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


def make_pool(name: str, kernel_size: int = 2) -> nn.Module:
    """Return a `kernel_size` pooling layer of kind `name` (one of POOLS: LeNet-5 averages, later nets take the max)."""
    return POOLS[name](kernel_size)


def out_dim(in_dim: int, kernel_size: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """Output height/width of a conv or pooling layer (the formula in PyTorch's docs)."""
    return (in_dim + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv_whole_input(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """`conv(x)` flattened to (B, out_channels) when the kernel covers all of x, computed as one matrix product.

    A convolution whose kernel is as large as its (unpadded, undilated) input has one output position, so it
    is exactly `Linear(C*H*W, out_channels)` with the same weights viewed as (out, C*H*W): LeNet's C5 on its
    16x5x5 input. On a CPU the product is several times cheaper than the convolution (its backward above
    all), a few percent of a whole LeNet step, and the Conv2d parameters (count, state-dict layout) stay.
    Any other input goes through the convolution itself.
    """
    if x.shape[-2:] != conv.kernel_size or conv.padding != (0, 0) or conv.groups != 1:
        return conv(x).flatten(1)
    return F.linear(x.flatten(1), conv.weight.reshape(conv.out_channels, -1), conv.bias)  # traces any batch


class ResBlock(nn.Module):
    """Two linear layers with a skip connection: relu(x + fc1(dropout(relu(fc0(x)))))."""

    def __init__(self, dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim)])
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dropout(self.activation(self.fc[0](x)))
        return self.activation(self.fc[1](out) + x)
