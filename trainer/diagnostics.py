"""What a model gets wrong: predictions over a set, the confusion matrix, per-class accuracy, and the
figures TensorBoard shows (confusion matrices, a grid of misclassified digits). Plain tensors in, no config."""

import math

import matplotlib

matplotlib.use("Agg")  # figures are rendered to images, never shown
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from data.loader import MNIST_MEAN, MNIST_STD  # noqa: E402
from trainer.evaluation import Predictions  # noqa: E402

NUM_CLASSES = 10


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: Tensor) -> Tensor:
    """Recall of each class: the diagonal over the row sums (0 for a class with no examples)."""
    return matrix.diag().double() / matrix.sum(dim=1).clamp(min=1).double()


def confusion_table(matrix: Tensor) -> str:
    """The counts as a Markdown table (rows: true class, columns: predicted), with per-class accuracy."""
    classes = range(matrix.shape[0])
    lines = ["| true \\ predicted | " + " | ".join(map(str, classes)) + " | accuracy |",
             "|---:|" + "---:|" * (len(classes) + 1)]  # fmt: skip
    for k, accuracy in zip(classes, per_class_accuracy(matrix).tolist(), strict=True):
        lines.append(f"| **{k}** | " + " | ".join(str(int(v)) for v in matrix[k]) + f" | {accuracy:.2%} |")
    return "\n".join(lines)


def confusion_figure(matrix: Tensor, title: str) -> Figure:
    """Counts and row-normalised fractions side by side, each cell labelled."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=80)
    normalised = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    for ax, values, name, fmt in (
        (axes[0], matrix, "counts", "{:.0f}"),
        (axes[1], normalised, "row-normalised", "{:.2f}"),
    ):
        ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)  # both coloured by the row fraction
        for true in range(matrix.shape[0]):
            for pred in range(matrix.shape[1]):
                value = float(values[true, pred])
                if value:
                    dark = normalised[true, pred] > 0.5
                    ax.text(pred, true, fmt.format(value), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")  # fmt: skip
        ax.set(xlabel="predicted", ylabel="true", title=f"{title} ({name})",
               xticks=range(matrix.shape[1]), yticks=range(matrix.shape[0]))  # fmt: skip
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.1, top=0.93, wspace=0.12)  # tight_layout: 0.45 s
    return fig


def misclassified_figure(predictions: Predictions, limit: int = 64) -> Figure:
    """Up to `limit` misclassified digits, 8 to a row, each titled `true -> predicted (confidence)`.

    One image with the digits laid out in it and a text per digit: a grid of 64 Axes (and tight_layout)
    took 1.5-2.5 s to draw here; this takes a tenth of that."""
    shown = min(len(predictions.wrong_index), limit)
    columns, rows = 8, max(math.ceil(shown / 8), 1)
    fig = plt.figure(figsize=(columns * 1.3, rows * 1.5), dpi=80)  # 104 x 120 pixels a digit
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.45 / (rows * 1.5)))  # 0.45 inch above for the title
    ax.axis("off")
    cell_w, cell_h, band = 36, 40, 11  # in image pixels: a 28x28 digit under an 11-pixel band for its title
    canvas = torch.zeros(rows * cell_h, columns * cell_w)
    images = predictions.wrong_images[:shown, 0] * MNIST_STD + MNIST_MEAN  # back to [0, 1] ink
    for k in range(shown):
        row, column = divmod(k, columns)
        top, left = row * cell_h + band, column * cell_w + (cell_w - 28) // 2
        canvas[top : top + 28, left : left + 28] = images[k]
        index = predictions.wrong_index[k]
        ax.text(column * cell_w + cell_w / 2, top - 1.5, f"{int(predictions.labels[index])} → "
                f"{int(predictions.predicted[index])} ({float(predictions.confidence[index]):.2f})",
                ha="center", va="bottom", fontsize=8)  # fmt: skip
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
