"""trainer/evaluation.py: predictions keep the misclassified inputs and their positions."""

import pytest
import torch

from data.loader import DeviceBatches
from models import LeNet
from trainer.evaluation import predict


def test_evaluation_keeps_the_misclassified_images() -> None:
    model = LeNet()
    images = torch.randint(0, 255, (50, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50,))
    batches = DeviceBatches(images, labels, 16, torch.device("cpu"))
    stats, predictions = predict(model, batches)
    wrong = (predictions.predicted != predictions.labels).nonzero().squeeze(1)
    assert torch.equal(predictions.wrong_index, wrong)
    assert len(predictions.wrong_images) == len(wrong) and stats.accuracy == pytest.approx(
        1 - len(wrong) / 50
    )
    all_inputs = torch.cat([x for x, _ in batches])
    assert torch.equal(predictions.wrong_images, all_inputs[wrong])
