"""What a user could run instead of the lab, measured on the same card in the same process (`make gpu-check`):

  - bare loop: LeNet-5 trained the way a 20-line script does, one epoch of the lab's default recipe (batches of
    64, Adam at optimizer.lr, the label-smoothed loss), over the same training images already on the device,
    shuffled by randperm: no validation, logging, checks or checkpoints;
  - anchor: the public reference recipe the lab's speedrun is held against: a 2-conv net of about 215k
    parameters, one epoch in batches of 256 (235 steps), Adam at lr 1e-2 with betas (0.7, 0.9), a one-cycle
    schedule without momentum cycling; its time to the end of the epoch and its test accuracy.

Both are written here from their description; neither uses anything of the lab's but the data reader.
"""

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnist_lab.data.loader import normalize
from mnist_lab.data.sources import MNISTData
from mnist_lab.models import LeNet


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_epoch(
    data: MNISTData, device: torch.device, images: int | None = None, batch_size: int = 64
) -> float:
    """Seconds of one epoch of the bare LeNet-5 loop over the first `images` training images (all: None)."""
    x = normalize(data.train_images[:images]).to(device)  # (N, 1, 28, 28)
    y = data.train_labels[:images].to(device)
    torch.manual_seed(0)
    model = LeNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    synchronize(device)
    start = time.perf_counter()
    order = torch.randperm(len(y), device=device)
    for i in range(0, len(y), batch_size):
        batch = order[i : i + batch_size]
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x[batch]), y[batch]).backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - start


class AnchorNet(nn.Module):
    """Two 3x3 convolutions (32 and 64 channels, each with ReLU and 2x2 max pooling) and two linear layers:
    212,146 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * 5 * 5, 120), nn.Linear(120, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, 13, 13)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 5, 5)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))  # (B, 10)


def anchor_run(data: MNISTData, device: torch.device, seed: int, images: int | None = None) -> dict[str, Any]:
    """The anchor recipe, seeded: seconds from the first step to the end of its epoch, and its test accuracy."""
    x = normalize(data.train_images[:images]).to(device)
    y = data.train_labels[:images].to(device)
    torch.manual_seed(seed)
    model = AnchorNet().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.7, 0.9))
    steps = -(-len(y) // 256)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-2, total_steps=steps, cycle_momentum=False
    )
    synchronize(device)
    start = time.perf_counter()
    order = torch.randperm(len(y), device=device)
    for i in range(0, len(y), 256):
        batch = order[i : i + 256]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        schedule.step()
    synchronize(device)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        test_x, test_y = normalize(data.test_images).to(device), data.test_labels.to(device)
        correct = sum(int((model(test_x[i : i + 2000]).argmax(1) == test_y[i : i + 2000]).sum())
                      for i in range(0, len(test_y), 2000))  # fmt: skip
    return {"seed": seed, "seconds": seconds, "steps": steps, "test_acc": correct / len(test_y)}
