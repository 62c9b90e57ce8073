"""lab/tools/export.py: every model exports to ONNX and TorchScript and agrees with PyTorch on real digits."""

from pathlib import Path

import pytest
import torch

from mnist_lab.data.loader import normalize
from mnist_lab.data.sources import read_idx
from mnist_lab.models import LeNetRes, ResBlockMLP
from mnist_lab.tools.export import check, export_onnx, export_torchscript


@pytest.mark.parametrize("model_class", [LeNetRes, ResBlockMLP])
def test_other_models_export_too(model_class: type, mnist_root: Path) -> None:
    torch.manual_seed(0)
    model = model_class().eval()
    images = normalize(read_idx(mnist_root).test_images[:64])
    for exporter in (export_onnx, export_torchscript):
        content, exported = exporter(model, images[:2])
        assert len(content) > 100_000  # the weights are in it
        difference, same = check(model, exported, images)
        assert difference <= 1e-4 and same
