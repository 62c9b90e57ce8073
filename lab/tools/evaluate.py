"""evaluate.py's work: a trained model on the official test set (or another source): accuracy, loss,
per-class accuracy, the confusion matrix as a table and a PNG, and a grid of the misclassified digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from data.loader import DeviceBatches
from lab.artifacts import Trained
from lab.build import AMP_DTYPES, read_data
from trainer.diagnostics import confusion_figure, confusion_matrix, confusion_table, misclassified_figure
from trainer.evaluation import TTA_VIEWS, EpochStats, Predictions, ViewAveraged, predict

if TYPE_CHECKING:
    from PIL.Image import Image

USAGE = (
    "usage: python evaluate.py ckpt=<run dir or checkpoint> [out=<png>] [tta=flip|shift] [config overrides]"
)


@dataclass
class Evaluation:
    """A model's results on a test set: loss and accuracy, every prediction, the confusion matrix."""

    model_name: str
    stats: EpochStats
    predictions: Predictions
    confusion: Tensor  # (10, 10) counts: rows the true class, columns the predicted one
    classes: list[str]
    mean_std: tuple[float, float]

    @property
    def accuracy(self) -> float:
        return self.stats.accuracy

    @property
    def loss(self) -> float:
        return self.stats.loss

    def confusion_figure(self) -> Image:
        """The confusion matrix drawn: counts and row-normalised fractions."""
        title = f"{self.model_name}, {self.stats.images:,} test images"
        return confusion_figure(self.confusion, title, self.classes)

    def misclassified_figure(self, limit: int = 64) -> Image:
        """The first `limit` misclassified images, each with its true and predicted class."""
        return misclassified_figure(self.predictions, self.classes, self.mean_std, limit)

    def table(self) -> str:
        """The confusion matrix as a Markdown table, with per-class accuracy."""
        return confusion_table(self.confusion, self.classes)


def evaluate(trained: Trained, tta: str | None = None) -> Evaluation:
    """`trained` on the test split of its run's data source (or of the source its overrides name); with `tta`
    (a name of TTA_VIEWS: flip, shift), its probabilities averaged over each batch and those views of it."""
    cfg = trained.cfg
    mnist = read_data(cfg)
    mean_std = (cfg.data.mean, cfg.data.std)
    batches = DeviceBatches(mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, trained.device,
                            mean_std=mean_std)  # fmt: skip
    if tta is not None and tta not in TTA_VIEWS:
        raise ValueError(f"tta={tta}: not a test-time augmentation; choose one of {', '.join(TTA_VIEWS)}")
    model = trained.model if tta is None else ViewAveraged(trained.model, TTA_VIEWS[tta])
    stats, predictions = predict(model, batches, amp_dtype=AMP_DTYPES[cfg.trainer.precision])
    classes = list(cfg.data.classes)
    matrix = confusion_matrix(predictions.predicted, predictions.labels, len(classes))
    return Evaluation(type(trained.model).__name__, stats, predictions, matrix, classes, mean_std)


def evaluate_trained(trained: Trained, out: str | None, tta: str | None = None) -> str:
    """Evaluate on the test split of the run's data source; save the figures (default: <run dir>/evaluation/);
    return the report to print. With `tta`, the figure with test-time augmentation is reported beside."""
    result = evaluate(trained)
    augmented = evaluate(trained, tta) if tta else None
    path = Path(out or trained.checkpoint.parent.parent / "evaluation" / "confusion_matrix.png")
    grid = path.with_name(f"{path.stem}_misclassified.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    result.confusion_figure().save(path)
    result.misclassified_figure().save(grid)
    images, correct = result.stats.images, int(result.confusion.diag().sum())
    return "\n".join([
        f"{trained.checkpoint}: {result.model_name} on {images:,} test images ({trained.cfg.data.name})",
        f"  accuracy {result.accuracy:.2%} ({correct:,} of {images:,})  loss {result.loss:.4f}",
        *([f"  with tta={tta}: accuracy {augmented.accuracy:.2%}  loss {augmented.loss:.4f}"] if augmented else []),
        "",
        result.table(),
        "",
        f"saved the confusion matrix to {path} and the misclassified images to {grid}",
    ])  # fmt: skip
