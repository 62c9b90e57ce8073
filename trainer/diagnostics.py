"""What a model gets wrong: predictions over a set, the confusion matrix, per-class accuracy, and the
figures TensorBoard shows (confusion matrices, a grid of misclassified images), with the classes named as
the dataset names them (data.classes). Plain tensors and names in, no config."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from mnist_lab.data.loader import MNIST_MEAN, MNIST_STD
from mnist_lab.trainer.evaluation import SetPredictions

NUM_CLASSES = 10
DIGITS = tuple(str(k) for k in range(NUM_CLASSES))  # MNIST's class names


# matplotlib's "Blues", sampled at 9 points: a cell's colour is its row fraction along them.
BLUES = torch.tensor([(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
                      (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)], dtype=torch.float64)  # fmt: skip


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's own font: no file to find, no matplotlib


def _blue(fraction: float) -> tuple[int, int, int]:
    position = min(max(fraction, 0.0), 1.0) * (len(BLUES) - 1)
    low = min(int(position), len(BLUES) - 2)
    colour = BLUES[low] + (BLUES[low + 1] - BLUES[low]) * (position - low)
    return tuple(int(c) for c in colour.round())  # type: ignore[return-value]


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
) -> Image.Image:
    """Counts and row-normalised fractions side by side (without `counts`: the fractions alone), each cell
    coloured by its row fraction and labelled (a fraction that would read 0.00 is left blank), the rows by class
    name and the columns by class number. An RGB image drawn with PIL in milliseconds (matplotlib took 0.5-1 s
    with its import, at every epoch's end)."""
    cell, top, bottom = 40, 40, 40
    names = [name if name == str(k) else f"{k} {name}" for k, name in enumerate(classes)]
    left = 16 + max(_font(12).getbbox(name)[2] for name in [*names, "true"])
    n = len(classes)
    panel_width = left + n * cell + 16
    normalised = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    panels = [(matrix, "counts", "{:.0f}", 1.0)] if counts else []
    panels.append((normalised, "row-normalised", "{:.2f}", 0.005))
    image = Image.new("RGB", (panel_width * len(panels), top + n * cell + bottom), "white")
    draw = ImageDraw.Draw(image)
    small, label = _font(11), _font(12)
    for p, (values, name, fmt, smallest) in enumerate(panels):
        x0 = p * panel_width + left
        draw.text((x0 + n * cell / 2, 14), f"{title} ({name})", fill="black", font=_font(14), anchor="mm")
        for true in range(n):
            y = top + true * cell
            draw.text(
                (x0 - 6, y + cell / 2), f"{true} {classes[true]}", fill="black", font=label, anchor="rm"
            )
            for pred in range(n):
                fraction, value = float(normalised[true, pred]), float(values[true, pred])
                box = (x0 + pred * cell, y, x0 + (pred + 1) * cell - 1, y + cell - 1)
                draw.rectangle(box, fill=_blue(fraction))
                if value >= smallest:
                    draw.text((box[0] + cell / 2, y + cell / 2), fmt.format(value), font=small, anchor="mm",
                              fill="white" if fraction > 0.5 else "black")  # fmt: skip
        for pred in range(n):
            draw.text((x0 + pred * cell + cell / 2, top + n * cell + 4), str(pred), fill="black", font=label,
                      anchor="mt")  # fmt: skip
        draw.text((x0 - 6, top - 3), "true", fill="black", font=small, anchor="rb")
        draw.text(
            (x0 + n * cell / 2, top + n * cell + 22), "predicted", fill="black", font=small, anchor="mt"
        )
    return image


def misclassified_figure(
    predictions: SetPredictions,
    classes: Sequence[str] = DIGITS,
    mean_std: tuple[float, float] = (MNIST_MEAN, MNIST_STD),
    limit: int = 64,
) -> Image.Image:
    """Up to `limit` misclassified images, 8 to a row, each titled `true -> predicted (confidence)` by class
    name; `mean_std` undoes the inputs' normalisation. An RGB image drawn with PIL, each digit enlarged 3x."""
    shown = min(len(predictions.wrong_index), limit)
    long_names = max(map(len, classes)) > 2  # two lines of title, a wider cell
    cell_w, cell_h, band = (136, 124, 34) if long_names else (104, 108, 18)  # band: the digit's title
    columns, rows, header = 8, max(math.ceil(shown / 8), 1), 30
    image = Image.new("RGB", (columns * cell_w, header + rows * cell_h), "white")
    draw = ImageDraw.Draw(image)
    mean, std = mean_std
    digits = (
        ((1 - (predictions.wrong_images[:shown, 0] * std + mean).clamp(0, 1)) * 255).round().to(torch.uint8)
    )
    font = _font(12)
    for k in range(shown):
        row, column = divmod(k, columns)
        x, y = column * cell_w, header + row * cell_h
        index = predictions.wrong_index[k]
        true, guess = classes[int(predictions.labels[index])], classes[int(predictions.predicted[index])]
        separator = "\n" if long_names else " "
        title = f"{true}{separator}-> {guess} ({float(predictions.confidence[index]):.2f})"
        draw.multiline_text(
            (x + cell_w / 2, y + 2), title, fill="black", font=font, anchor="ma", align="center"
        )
        digit = Image.fromarray(digits[k].numpy(), "L").resize((84, 84), Image.Resampling.NEAREST)
        image.paste(digit.convert("RGB"), (x + (cell_w - 84) // 2, y + band))
    draw.text((columns * cell_w / 2, header / 2), f"misclassified: {len(predictions.wrong_index)} of "
              f"{len(predictions.labels)} (true -> predicted)", fill="black", font=_font(15), anchor="mm")  # fmt: skip
    return image


def model_summary(model: nn.Module, example: Tensor) -> str:
    """torchinfo's per-layer table (output shape, parameters) of `model` on `example` (eval mode, no RNG used)."""
    import torchinfo

    table = torchinfo.summary(getattr(model, "_orig_mod", model), input_data=example, mode="eval", verbose=0,
                              col_names=("output_size", "num_params"), depth=3)  # fmt: skip
    return str(table)
