"""MNIST classifiers: plain `nn.Module`s that take (B, 1, 28, 28) normalised images and return (B, 10) logits."""

from mnist_lab.models.lenet import LeNet, LeNetRes
from mnist_lab.models.resmlp import ResBlockMLP

__all__ = ["LeNet", "LeNetRes", "ResBlockMLP"]
