"""trainer/diagnostics.py: the model summary's shapes and per-class accuracy."""

import torch

from mnist_lab.models import LeNet
from mnist_lab.trainer.diagnostics import confusion_matrix, model_summary, per_class_accuracy


def test_model_summary_lists_the_paper_shapes() -> None:
    text = model_summary(LeNet(), torch.zeros(1, 1, 28, 28))
    for shape in (
        "[1, 6, 28, 28]",
        "[1, 6, 14, 14]",
        "[1, 16, 10, 10]",
        "[1, 16, 5, 5]",
        "[1, 84]",
        "[1, 10]",
    ):
        assert shape in text
    assert "Total params: 61,706" in text


def test_per_class_accuracy_of_a_class_without_examples_is_zero() -> None:
    matrix = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert per_class_accuracy(matrix).tolist() == [0.5, 1.0, 0.0]
