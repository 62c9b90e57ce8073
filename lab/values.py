"""Every value a user types, declared once: its type, its range or allowed names, and what it means. The one
line that refuses a bad value is made from the declaration (`trainer.batch_size must be an integer > 0, got
0`), and the code that builds from a checked config (models, schedules, the loader) trusts it.

Torch-free, so that checking a config costs no torch import.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Declared:
    """What one key may hold: `accepts(value)`, and `expected`, the words the refusal says it must be."""

    accepts: Callable[[Any], bool]
    expected: str

    def refusal(self, key: str, value: Any) -> str | None:
        """The line refusing `value` at `key`, or None where it is acceptable."""
        return None if self.accepts(value) else f"{key} must be {self.expected}, got {value!r}"


def _bounds(
    low: float | None, high: float | None, low_open: bool, high_open: bool
) -> tuple[Callable[[Any], bool], str]:
    """The range check and its words: `> 0`, `>= 0`, `in [0, 1)`."""
    above = lambda v: low is None or (v > low if low_open else v >= low)  # noqa: E731
    below = lambda v: high is None or (v < high if high_open else v <= high)  # noqa: E731
    if high is None:
        words = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
    else:
        words = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return (lambda v: above(v) and below(v)), words


def integer(low: int | None = None, high: int | None = None, *, of: str = "", why: str = "") -> Declared:
    """A whole number (not a bool) in [low, high] (either end may be open-ended: None)."""
    fits, words = _bounds(low, high, False, False)
    if low == 1 and high is None:
        fits, words = _bounds(0, None, True, False)  # "> 0" reads better than ">= 1"
    return Declared(
        lambda v: type(v) is int and fits(v), f"an integer{f' of {of}' if of else ''}{words}{why}"
    )


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    noun: str = "a number",
    why: str = "",
) -> Declared:
    """A finite int or float (not a bool) in the range given (`low_open`: low itself excluded; likewise high)."""
    fits, words = _bounds(low, high, low_open, high_open)
    return Declared(lambda v: type(v) in (int, float) and math.isfinite(v) and fits(v), f"{noun}{words}{why}")


def one_of(names: Sequence[Any], words: str | None = None) -> Declared:
    """One of `names` (`words`: how the refusal lists them, where a plain list would not say enough)."""
    return Declared(lambda v: v in names, words or f"one of {', '.join(map(str, names))}")


def flag() -> Declared:
    return Declared(lambda v: type(v) is bool, "true or false")


def nullable(declared: Declared, null_means: str = "") -> Declared:
    """null, or what `declared` accepts; `null_means` says what null does."""
    null = f"null ({null_means})" if null_means else "null"
    return Declared(lambda v: v is None or declared.accepts(v), f"{null} or {declared.expected}")


def where_given(declared: Declared) -> Declared:
    """A key only some options of a group have (model=resmlp's width, scheduler=step's gamma): checked where
    it is there."""
    return Declared(lambda v: v is None or declared.accepts(v), declared.expected)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes
PRECISIONS = ("fp32", "bf16", "fp16")  # trainer.precision: float32, or autocast to bfloat16 / float16
# The names models/blocks.py builds (tests/lab/test_config.py checks that it builds exactly these).
ACTIVATIONS, POOLS = ("gelu", "relu", "tanh"), ("avg", "max")
_IMAGE = ": a {} the size of the 28x28 image leaves nothing of it"

VALUES: dict[str, Declared] = {
    "seed": integer(),
    "trainer.epochs": number(0, low_open=True, why=" (1.5: one and a half passes over the training data)"),
    "trainer.batch_size": integer(1),
    "trainer.eval_batch_size": integer(1),
    "trainer.max_steps": nullable(integer(1)),
    "trainer.label_smoothing": number(0, 1, high_open=True),
    "trainer.histograms_every": integer(0),
    "trainer.compile": flag(),
    "trainer.compile_mode": one_of(COMPILE_MODES),
    "trainer.cudnn_benchmark": flag(),
    "trainer.ema": Declared(
        lambda v: v is None or (type(v) is float and 0 < v < 1), "null or a decay in (0, 1), e.g. 0.999"
    ),
    "trainer.precision": one_of(PRECISIONS),
    "trainer.threads": nullable(integer(1), "OMP_NUM_THREADS or all available CPUs"),
    "trainer.channels_last": one_of((True, False, "auto"), "true, false or auto"),
    "optimizer.lr": number(0, low_open=True),
    "optimizer.weight_decay": where_given(number(0)),
    "data.validation_size": Declared(
        lambda v: (type(v) is int and v >= 0) or (type(v) is float and 0 < v < 1),
        "an integer >= 0 (images; 0: train on all of them, no validation) or a fraction in (0, 1)",
    ),
    "data.train_subset": nullable(integer(1)),
    "data.mean": number(0, 1),
    "data.std": number(0, 1, low_open=True),
    "data.classes": Declared(
        lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 10,
        "a list of the 10 class names",
    ),  # fmt: skip
    "augment.max_shift": integer(0, 27, of="pixels", why=_IMAGE.format("shift")),
    "augment.degrees": number(0, 180, noun="a number of degrees"),
    "augment.scale": number(0, 1, high_open=True),
    "augment.shear": number(0, 90, high_open=True, noun="a number of degrees"),
    "augment.translate": number(
        0, 28, high_open=True, noun="a number of pixels", why=_IMAGE.format("translation")
    ),
    "augment.alpha": number(0, noun="a number of pixels"),
    "augment.sigma": number(0, low_open=True, noun="a number of pixels"),
    "augment.flip": number(0, 1, noun="a probability"),
    "augment.erase": number(0, 1, noun="a probability"),
    "augment.erase_size": integer(1, 28, of="pixels"),
    "model.activation": where_given(one_of(ACTIVATIONS)),
    "model.pool": where_given(one_of(POOLS)),
    "model.width": where_given(integer(1)),
    "model.depth": where_given(integer(0, 64)),
    "model.dropout": where_given(number(0, 1, high_open=True)),
    "scheduler.warmup_fraction": where_given(number(0, 1, low_open=True, high_open=True)),
    "scheduler.every_epochs": where_given(integer(1)),
    "scheduler.gamma": where_given(number(0, low_open=True)),
    "scheduler.min_lr": where_given(number(0)),
}
