"""trainer/evaluation.py: predictions keep the misclassified inputs and their positions."""

import pytest
import torch

from mnist_lab.data.loader import DeviceBatches
from mnist_lab.models import LeNet
from mnist_lab.trainer.evaluation import predict


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


def test_test_time_augmentation_changes_nothing_when_its_views_are_the_identity() -> None:
    from mnist_lab.trainer.evaluation import ViewAveraged

    torch.manual_seed(0)
    model = LeNet()
    images, labels = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (300,))
    batches = DeviceBatches(images, labels, 100, torch.device("cpu"))
    plain, plain_predictions = predict(model, batches)
    same, same_predictions = predict(ViewAveraged(model, lambda x: [x, x.clone()]), batches)
    torch.testing.assert_close(same_predictions.probs, plain_predictions.probs)
    assert same.accuracy == plain.accuracy and same.loss == pytest.approx(plain.loss, rel=1e-5)


def test_test_time_augmentation_averages_the_probabilities_of_the_views() -> None:
    from mnist_lab.trainer.evaluation import TTA_VIEWS, ViewAveraged

    torch.manual_seed(0)
    model, x = LeNet().eval(), torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        averaged = ViewAveraged(model, TTA_VIEWS["flip"])(x).softmax(dim=1)
        expected = (model(x).softmax(dim=1) + model(x.flip(-1)).softmax(dim=1)) / 2
        assert len(TTA_VIEWS["shift"](x)) == 4 and torch.equal(TTA_VIEWS["shift"](x)[0][:, :, 0], x[:, :, 1])
    torch.testing.assert_close(averaged, expected)
