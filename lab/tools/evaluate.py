"""evaluate.py's work: a trained model on the official test set (or another source): accuracy, loss,
per-class accuracy, the confusion matrix as a table and a PNG, and a grid of the misclassified digits."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import PIL.Image
from torch import Tensor

from mnist_lab.artifacts import Trained
from mnist_lab.build import AMP_DTYPES, read_data
from mnist_lab.data.loader import DeviceBatches, split_validation
from mnist_lab.errors import UserError
from mnist_lab.resume import run_dir_of
from mnist_lab.trainer.diagnostics import (
    confusion_figure,
    confusion_matrix,
    confusion_table,
    misclassified_figure,
)
from mnist_lab.trainer.evaluation import TTA_VIEWS, EpochStats, SetPredictions, ViewAveraged, predict
from mnist_lab.trainer.files import atomic_write

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from PIL.Image import Image

    from mnist_lab.data.sources import MNISTData

USAGE = (
    "usage: python evaluate.py ckpt=<run dir or checkpoint> [out=<png>] [tta=flip|shift] [split=test|val] "
    "[config overrides]"
)
SPLITS = {"test": "test", "val": "validation"}  # split= -> how reports name it


@dataclass
class Evaluation:
    """A model's results on a test (or validation) set: loss and accuracy, every prediction, the confusion
    matrix."""

    model_name: str
    stats: EpochStats
    predictions: SetPredictions
    confusion: Tensor  # (10, 10) counts: rows the true class, columns the predicted one
    classes: list[str]
    mean_std: tuple[float, float]
    split: str = "test"

    @property
    def accuracy(self) -> float:
        return self.stats.accuracy

    @property
    def loss(self) -> float:
        return self.stats.loss

    def confusion_figure(self) -> Image:
        """The confusion matrix drawn: counts and row-normalised fractions."""
        title = f"{self.model_name}, {self.stats.images:,} {SPLITS[self.split]} images"
        return confusion_figure(self.confusion, title, self.classes)

    def misclassified_figure(self, limit: int = 64) -> Image:
        """The first `limit` misclassified images, each with its true and predicted class."""
        return misclassified_figure(self.predictions, self.classes, self.mean_std, limit)

    def table(self) -> str:
        """The confusion matrix as a Markdown table, with per-class accuracy."""
        return confusion_table(self.confusion, self.classes)


def evaluate(trained: Trained, tta: str | None = None, split: str = "test") -> Evaluation:
    """`trained` on the test split of its run's data source (or of the source its overrides name), or with
    `split="val"` on the validation images its run held out; with `tta` (a name of TTA_VIEWS: flip, shift), its
    probabilities averaged over each batch and those views of it."""
    cfg = trained.cfg
    if tta is not None and tta not in TTA_VIEWS:
        raise UserError(f"tta={tta}: not a test-time augmentation; choose one of {', '.join(TTA_VIEWS)}")
    if split not in SPLITS:
        raise UserError(f"split={split}: not a split; choose test (the official test set) or val")
    images, labels = split_images(cfg, read_data(cfg), split)
    mean_std = (cfg.data.mean, cfg.data.std)
    batches = DeviceBatches(images, labels, cfg.trainer.eval_batch_size, trained.device, mean_std=mean_std)
    model = trained.model if tta is None else ViewAveraged(trained.model, TTA_VIEWS[tta])
    stats, predictions = predict(model, batches, amp_dtype=AMP_DTYPES[cfg.trainer.precision])
    classes = list(cfg.data.classes)
    matrix = confusion_matrix(predictions.predicted, predictions.labels, len(classes))
    return Evaluation(type(trained.model).__name__, stats, predictions, matrix, classes, mean_std, split)


def split_images(cfg: DictConfig, mnist: MNISTData, split: str) -> tuple[Tensor, Tensor]:
    """The images and labels of `split`: the official test set, or the validation images the run held out of
    the training set (the same ones: data.validation_size and data.split_seed of its config)."""
    if split == "test":
        return mnist.test_images, mnist.test_labels
    _, (images, labels) = split_validation(
        mnist.train_images, mnist.train_labels, cfg.data.validation_size, seed=cfg.data.split_seed
    )
    if not len(labels):
        raise UserError("split=val: this run trained without a validation split (data.validation_size=0); "
                         "use split=test")  # fmt: skip
    return images, labels


def image_bytes(image: Image, path: Path) -> bytes:
    """`image` encoded in the format `path`'s suffix names (PNG without one)."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=PIL.Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    except (KeyError, OSError) as error:  # a format PIL cannot write (or cannot write this image in)
        raise UserError(f"out={path}: cannot write a {path.suffix} image ({error}); use .png") from None
    return buffer.getvalue()


def evaluate_trained(trained: Trained, out: str | None, tta: str | None = None, split: str = "test") -> str:
    """Evaluate on the test split of the run's data source (or its validation split); save the figures
    (default: <run dir>/evaluation/); return the report to print. With `tta`, the figure with test-time
    augmentation is reported beside."""
    result = evaluate(trained, split=split)
    augmented = evaluate(trained, tta, split) if tta else None
    path = Path(out or run_dir_of(trained.checkpoint) / "evaluation" / "confusion_matrix.png")
    grid = path.with_name(f"{path.stem}_misclassified.png")
    atomic_write(path, image_bytes(result.confusion_figure(), path), "figure")
    atomic_write(grid, image_bytes(result.misclassified_figure(), grid), "figure")
    images, correct = result.stats.images, int(result.confusion.diag().sum())
    return "\n".join([
        f"{trained.checkpoint}: {result.model_name} on {images:,} {SPLITS[split]} images ({trained.cfg.data.name})",
        f"  accuracy {result.accuracy:.2%} ({correct:,} of {images:,})  loss {result.loss:.4f}",
        *([f"  with tta={tta}: accuracy {augmented.accuracy:.2%}  loss {augmented.loss:.4f}"] if augmented else []),
        "",
        result.table(),
        "",
        f"saved the confusion matrix to {path} and the misclassified images to {grid}",
    ])  # fmt: skip
