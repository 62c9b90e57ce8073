"""A residual-block MLP: flatten, project to `width`, `depth` ResBlocks, classify."""

import math

from torch import Tensor, nn

from mnist_lab.models.blocks import ResBlock, make_activation


class ResBlockMLP(nn.Module):
    """Flatten (B, C, H, W) -> Linear to `width` -> `depth` x ResBlock(width) -> Linear to classes (logits)."""

    def __init__(
        self,
        width: int = 256,
        depth: int = 2,
        dropout: float = 0.1,
        in_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.project = nn.Linear(math.prod(in_shape), width)
        self.activation = make_activation(activation)
        self.blocks = nn.Sequential(*(ResBlock(width, dropout, activation) for _ in range(depth)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.project(self.flatten(x)))  # (B, width)
        x = self.blocks(x)  # (B, width)
        return self.head(x)  # (B, 10) logits
