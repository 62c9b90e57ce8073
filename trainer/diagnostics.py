"""What a model gets wrong: predictions over a set, the confusion matrix, per-class accuracy, and the
figures TensorBoard shows (confusion matrices, a grid of misclassified images), with the classes named as
the dataset names them (data.classes). Plain tensors and names in, no config."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from data.loader import MNIST_MEAN, MNIST_STD
from trainer.evaluation import Predictions

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NUM_CLASSES = 10
DIGITS = tuple(str(k) for k in range(NUM_CLASSES))  # MNIST's class names


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure made without pyplot: no backend is chosen or changed (a notebook keeps its own),
    nothing is kept open, and matplotlib is imported only where a figure is drawn."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80)


def class_tags(classes: Sequence[str]) -> list[str]:
    """Names fit for TensorBoard tags and JSON keys: a digit stays `3`; `T-shirt/top` (class 0) becomes
    `0_T-shirt_top` (a `/` would open a tag group)."""
    return [name if name == str(k) else f"{k}_{re.sub(r'[^0-9A-Za-z-]+', '_', name)}"
            for k, name in enumerate(classes)]  # fmt: skip


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: Tensor) -> Tensor:
    """Recall of each class: the diagonal over the row sums (0 for a class with no examples)."""
    return matrix.diag().double() / matrix.sum(dim=1).clamp(min=1).double()


def confusion_table(matrix: Tensor, classes: Sequence[str] = DIGITS) -> str:
    """The counts as a Markdown table (rows: true class, columns: predicted), with per-class accuracy."""
    lines = ["| true \\ predicted | " + " | ".join(classes) + " | accuracy |",
             "|---:|" + "---:|" * (len(classes) + 1)]  # fmt: skip
    for k, (name, accuracy) in enumerate(zip(classes, per_class_accuracy(matrix).tolist(), strict=True)):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in matrix[k]) + f" | {accuracy:.2%} |")
    return "\n".join(lines)


def confusion_figure(
    matrix: Tensor, title: str, classes: Sequence[str] = DIGITS, counts: bool = True
) -> Figure:
    """Counts and row-normalised fractions side by side (without `counts`: the fractions alone, half the
    drawing time), each cell labelled, the axes by class name."""
    panels = 2 if counts else 1
    fig = new_figure(6 * panels, 5.4)
    axes = fig.subplots(1, panels, squeeze=False)
    long_names = max(map(len, classes)) > 2
    normalised = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    shown = [(matrix, "counts", "{:.0f}")] if counts else []
    for ax, (values, name, fmt) in zip(
        axes[0], [*shown, (normalised, "row-normalised", "{:.2f}")], strict=True
    ):
        ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)  # both coloured by the row fraction
        for true in range(matrix.shape[0]):
            for pred in range(matrix.shape[1]):
                value = float(values[true, pred])
                if value:
                    dark = normalised[true, pred] > 0.5
                    ax.text(pred, true, fmt.format(value), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")  # fmt: skip
        ax.set(xlabel="predicted", ylabel="true", title=f"{title} ({name})")
        ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=30 if long_names else 0,
                      ha="right" if long_names else "center")  # fmt: skip
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    left, bottom = (0.09, 0.17) if long_names else (0.05, 0.1)
    left, right = (left * 2, 0.98) if panels == 1 else (left, 0.99)
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=0.93, wspace=0.22 if long_names else 0.12)
    return fig  # (tight_layout would cost 0.45 s)


def misclassified_figure(
    predictions: Predictions,
    classes: Sequence[str] = DIGITS,
    mean_std: tuple[float, float] = (MNIST_MEAN, MNIST_STD),
    limit: int = 64,
) -> Figure:
    """Up to `limit` misclassified images, 8 to a row, each titled `true -> predicted (confidence)` by class
    name; `mean_std` undoes the inputs' normalisation.

    One image with the digits laid out in it and a text per digit: a grid of 64 Axes (and tight_layout)
    took 1.5-2.5 s to draw here; this takes a tenth of that."""
    shown = min(len(predictions.wrong_index), limit)
    long_names = max(map(len, classes)) > 2  # two lines of title, a wider cell
    cell_w, cell_h, band = (56, 48, 19) if long_names else (36, 40, 11)  # image pixels; band: the title's
    columns, rows = 8, max(math.ceil(shown / 8), 1)
    width, height = columns * cell_w * 1.3 / 36, rows * cell_h * 1.5 / 40  # inches: 104 x 120 pixels a digit
    fig = new_figure(width, height)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.45 / height))  # 0.45 inch above for the title
    ax.axis("off")
    canvas = torch.zeros(rows * cell_h, columns * cell_w)
    mean, std = mean_std
    images = predictions.wrong_images[:shown, 0] * std + mean  # back to [0, 1]
    for k in range(shown):
        row, column = divmod(k, columns)
        top, left = row * cell_h + band, column * cell_w + (cell_w - 28) // 2
        canvas[top : top + 28, left : left + 28] = images[k]
        index = predictions.wrong_index[k]
        true, guess = classes[int(predictions.labels[index])], classes[int(predictions.predicted[index])]
        confidence = float(predictions.confidence[index])
        title = (
            f"{true}\n→ {guess} ({confidence:.2f})" if long_names else f"{true} → {guess} ({confidence:.2f})"
        )
        ax.text(column * cell_w + cell_w / 2, top - 1.5, title, ha="center", va="bottom", fontsize=8)
    ax.imshow(
        canvas.clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1, aspect="auto", interpolation="nearest"
    )
    fig.suptitle(
        f"misclassified: {len(predictions.wrong_index)} of {len(predictions.labels)} (true → predicted)"
    )
    return fig


def model_summary(model: nn.Module, example: Tensor) -> str:
    """torchinfo's per-layer table (output shape, parameters) of `model` on `example` (eval mode, no RNG used)."""
    import torchinfo

    table = torchinfo.summary(getattr(model, "_orig_mod", model), input_data=example, mode="eval", verbose=0,
                              col_names=("output_size", "num_params"), depth=3)  # fmt: skip
    return str(table)
