"""LeNet-5 as the paper's table defines it, and LeNetRes: the same network with batch norm and a residual skip.

Both keep the usual state-dict layout (`conv.0..2`, `fc.0..`), so weights move between them.
The 28x28 MNIST digit is zero-padded to the paper's 32x32 by the first convolution, which keeps the
table's shapes layer by layer: 6x28x28, 6x14x14, 16x10x10, 16x5x5, 120.
"""

from torch import Tensor, nn

from mnist_lab.models.blocks import conv_whole_input, make_activation, make_pool, out_dim

PAPER_PADDING = 2  # (32 - 28) / 2: LeCun et al. (1998) centre the 28x28 digit in a 32x32 field


def _lenet_convs(in_channels: int) -> nn.ModuleList:
    return nn.ModuleList(
        [
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=PAPER_PADDING),  # C1
            nn.Conv2d(6, 16, kernel_size=5),  # C3
            nn.Conv2d(16, 120, kernel_size=5),  # C5
        ]
    )


def _c5_features(image_size: int) -> int:
    """Number of features C5 produces: 120 x side x side, side computed through C1, S2, C3, S4, C5."""
    side = out_dim(image_size, kernel_size=5, padding=PAPER_PADDING)  # C1: 28
    side = out_dim(side, kernel_size=2, stride=2)  # S2: 14
    side = out_dim(side, kernel_size=5)  # C3: 10
    side = out_dim(side, kernel_size=2, stride=2)  # S4: 5
    side = out_dim(side, kernel_size=5)  # C5: 1
    return 120 * side * side


class LeNet(nn.Module):
    """LeNet-5 (tanh, average pooling), 61,706 parameters on 28x28 input; returns logits.

    `activation` and `pool` ("max") give the modern variant (ReLU, max pooling) with the same parameters."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        activation: str = "tanh",
        pool: str = "avg",
    ) -> None:
        super().__init__()
        self.conv = _lenet_convs(in_channels)
        self.pool = make_pool(pool)
        self.activation = make_activation(activation)
        self.fc = nn.ModuleList([nn.Linear(_c5_features(image_size), 84), nn.Linear(84, num_classes)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.activation(self.conv[0](x)))  # (B, 6, 14, 14)
        x = self.pool(self.activation(self.conv[1](x)))  # (B, 16, 5, 5)
        x = self.activation(conv_whole_input(self.conv[2], x))  # (B, 120): C5 as a matrix product
        x = self.activation(self.fc[0](x))  # (B, 84)
        return self.fc[1](x)  # (B, 10) logits


class LeNetRes(nn.Module):
    """LeNet with batch norm after C1 and C3 and a residual fully connected layer on the C5 features.

    The version this grew from declares its batch-norm layers but never calls them, and ends with `fc[1]` twice;
    this one uses both BN layers and ends with the 84->10 layer, and returns logits, not softmax.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, activation: str = "tanh"
    ) -> None:
        super().__init__()
        features = _c5_features(image_size)
        self.conv = _lenet_convs(in_channels)
        self.bn = nn.ModuleList([nn.BatchNorm2d(6), nn.BatchNorm2d(16)])
        self.pool = nn.AvgPool2d(2)
        self.activation = make_activation(activation)
        self.fc = nn.ModuleList(
            [nn.Linear(features, features), nn.Linear(features, 84), nn.Linear(84, num_classes)]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.activation(self.bn[0](self.conv[0](x))))  # (B, 6, 14, 14)
        x = self.pool(self.activation(self.bn[1](self.conv[1](x))))  # (B, 16, 5, 5)
        x = self.activation(conv_whole_input(self.conv[2], x))  # (B, 120): C5 as a matrix product
        x = self.activation(x + self.fc[0](x))  # (B, 120) residual skip
        x = self.activation(self.fc[1](x))  # (B, 84)
        return self.fc[2](x)  # (B, 10) logits
