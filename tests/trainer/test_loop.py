"""trainer/loop.py: an epoch lowers the loss; mixed precision tracks float32."""

import pytest
import torch

from data.loader import DeviceBatches
from models import LeNet
from tests.conftest import synthetic_digits
from trainer.evaluation import evaluate
from trainer.loop import train_one_epoch
from trainer.schedules import constant
from trainer.state import Precision


def test_train_one_epoch_lowers_the_loss_on_learnable_data() -> None:
    torch.manual_seed(0)
    images, labels = synthetic_digits(512, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), shuffle=True
    )
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = evaluate(model, batches)
    stats = [train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0)) for _ in range(3)]
    after = evaluate(model, batches)
    assert stats[2].loss < stats[0].loss
    assert after.loss < before.loss / 4 and after.accuracy > 0.95
    assert stats[0].images == 512


@pytest.mark.parametrize(("precision", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_mixed_precision_epoch_tracks_float32(precision: torch.dtype, tolerance: float) -> None:
    images, labels = synthetic_digits(256, 0)
    results = []
    for amp_dtype in (None, precision):
        torch.manual_seed(0)
        model = LeNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = DeviceBatches(
            torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), shuffle=True
        )
        scaler = torch.amp.GradScaler("cpu") if amp_dtype is torch.float16 else None
        precision = Precision(amp_dtype, scaler)
        results.append(
            train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0), precision=precision)
        )
    assert results[1].loss == pytest.approx(results[0].loss, rel=tolerance)
