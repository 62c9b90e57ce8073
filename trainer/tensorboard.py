"""RunLog: a run's one SummaryWriter (one event file per run directory) and the name of every tag it writes.

Per epoch (step = epoch): the EPOCH_TAGS curves, the validation confusion matrix and per-class accuracy,
weight and gradient histograms; per optimiser step: `train/loss_per_step`; once at the end: `test/loss`,
`test/acc`, the test confusion matrix (image and table), per-class accuracy and precision-recall curves, and
the misclassified digits; once at the start: texts, the model graph and the HParams session, whose metrics
are the curves above (so the Scalars tab holds only real curves).
"""

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from mnist_lab.data.loader import MNIST_MEAN, MNIST_STD
from mnist_lab.trainer.diagnostics import (
    DIGITS,
    class_tags,
    confusion_figure,
    confusion_matrix,
    confusion_table,
    misclassified_figure,
    per_class_accuracy,
)
from mnist_lab.trainer.evaluation import EpochStats, SetPredictions

log = logging.getLogger(__name__)

EPOCH_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "time/epoch_s", "throughput/img_per_s")
STEP_LOSS_TAG = "train/loss_per_step"  # by global step, not epoch
AUGMENTED_TAG = "train/augmented_digits"  # once, at the start
TEST_TAGS = ("test/loss", "test/acc")
HPARAMS_METRICS = ("test/acc", "test/loss", "val/acc", "val/loss", "train/loss", "time/epoch_s")


class _Discard:
    """The SummaryWriter of a RunLog that writes nothing: every attribute and call, at any depth, is a no-op."""

    def __getattr__(self, name: str) -> "_Discard":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "_Discard":
        return self


def epoch_scalars(train: EpochStats, val: EpochStats | None, lr: float) -> dict[str, float]:
    """One epoch's values under EPOCH_TAGS (also the keys of metrics.json's history); no val/* without `val`."""
    val_values = (val.loss, val.accuracy) if val else (None, None)
    values = (train.loss, train.accuracy, *val_values, lr, train.seconds, train.images_per_second)
    return {tag: value for tag, value in zip(EPOCH_TAGS, values, strict=True) if value is not None}


def _sort_last(log_dir: Path) -> None:
    """Make the event file about to be opened in `log_dir` sort after those already there. TensorBoard reads a
    directory's event files in name order, and a name begins with the second it was made in (then host, process
    id, a counter): a resumed run's file made in the same second as the one it continues (a stop and resume
    within a second, in one process) could sort first, and TensorBoard would drop the points read out of step
    order. So wait for the next second in that case; a resume seconds later never waits."""
    stamps = [
        int(stamp) for p in log_dir.glob("events.out.tfevents.*") if (stamp := p.name.split(".")[3]).isdigit()
    ]
    if stamps and max(stamps) >= int(time.time()):
        time.sleep(max(stamps) + 1 - time.time() + 0.01)


class RunLog:
    """Everything a run writes to TensorBoard, through one SummaryWriter on `log_dir`; per-class tags and
    figures name the classes as `classes` does, and images are shown un-normalised with `mean_std`."""

    def __init__(
        self,
        log_dir: Path,
        histograms_every: int = 1,
        classes: Sequence[str] = DIGITS,
        mean_std: tuple[float, float] = (MNIST_MEAN, MNIST_STD),
        write: bool = True,
    ) -> None:
        """`write=False` (the ranks of a DDP job but rank 0): no event file, nothing drawn."""
        self.write = write
        if write:
            _sort_last(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir)) if write else _Discard()
        self.histograms_every = histograms_every  # epochs between weight/gradient histograms (0: never)
        self.classes, self.mean_std = list(classes), mean_std

    def start(self, model: nn.Module, example: Tensor, texts: dict[str, str]) -> None:
        """`texts` (Markdown: config, model summary, provenance) and the model's graph, traced on `example`."""
        for tag, text in texts.items():
            self.writer.add_text(tag, text, 0)
        try:
            with (
                warnings.catch_warnings()
            ):  # the tracer's deprecation and shape notes are not the user's concern
                warnings.simplefilter("ignore")
                self.writer.add_graph(getattr(model, "_orig_mod", model), example)  # compiled: the original
        except Exception as error:  # a graph that cannot be traced must not stop training
            log.warning(f"model graph not logged to TensorBoard: {type(error).__name__}: {error}")

    def hparams(self, name: str, values: dict[str, bool | int | float | str]) -> None:
        """The run's row in the HParams view, named `name`; its metrics are the run's own curves."""
        from tensorboard.plugins.hparams import summary_v2 as hparams_api  # 0.3 s to import: only where used

        metrics = [hparams_api.Metric(tag) for tag in HPARAMS_METRICS]
        experiment = hparams_api.hparams_config_pb([hparams_api.HParam(key) for key in values], metrics)
        for summary in (experiment, hparams_api.hparams_pb(values, trial_id=name)):
            self.writer.file_writer.add_summary(summary)

    def training_images(self, images: Tensor) -> None:
        """A grid of training images (N, 1, 28, 28) in [0, 1] as the augmentation makes them (Images tab)."""
        self.writer.add_images(AUGMENTED_TAG, images, 0)

    def step_losses(self, losses: list[float], steps_before: int) -> None:
        """The loss of every optimiser step, by global step."""
        for offset, loss in enumerate(losses, start=1):
            self.writer.add_scalar(STEP_LOSS_TAG, loss, steps_before + offset)

    def epoch(self, epoch: int, scalars: dict[str, float], val: SetPredictions | None) -> None:
        """The epoch's curves and the validation set's confusion matrix and per-class accuracy (if validated)."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        if val is not None:
            self.diagnosis("val", val, epoch)

    def histograms(self, model: nn.Module, epoch: int) -> None:
        """Weights and (the epoch's last step's) gradients of every parameter, every `histograms_every` epochs."""
        if not self.write or not self.histograms_every or epoch % self.histograms_every:
            return
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach(), epoch)
            if parameter.grad is not None:
                self.writer.add_histogram(f"grads/{name}", parameter.grad, epoch)

    def test(self, stats: EpochStats, predictions: SetPredictions, step: int) -> None:
        """The test set, once: loss, accuracy and the full diagnosis."""
        for tag, value in zip(TEST_TAGS, (stats.loss, stats.accuracy), strict=True):
            self.writer.add_scalar(tag, value, step)
        self.diagnosis("test", predictions, step, full=True)

    def diagnosis(self, split: str, predictions: SetPredictions, step: int, full: bool = False) -> None:
        """The confusion matrix (image: row-normalised; with `full`, the counts beside it) and per-class accuracy
        of `split`; with `full`, also the table, the per-class precision-recall curves and the grid of
        misclassified digits."""
        if not self.write:
            return
        matrix = confusion_matrix(predictions.predicted, predictions.labels, len(self.classes))
        figure = confusion_figure(matrix, split, self.classes, counts=full)  # each epoch: the fractions only
        self.writer.add_image(f"{split}/confusion_matrix", np.asarray(figure), step, dataformats="HWC")
        tags = class_tags(self.classes)
        for tag, accuracy in zip(tags, per_class_accuracy(matrix).tolist(), strict=True):
            self.writer.add_scalar(f"{split}_class_acc/{tag}", accuracy, step)
        if full:
            self.writer.add_text(
                f"{split}/confusion_matrix_counts", confusion_table(matrix, self.classes), step
            )
            for k, tag in enumerate(tags):
                self.writer.add_pr_curve(
                    f"{split}_pr_curve/{tag}", predictions.labels == k, predictions.probs[:, k], step
                )
            wrong = misclassified_figure(predictions, self.classes, self.mean_std)
            self.writer.add_image(f"{split}/misclassified", np.asarray(wrong), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
