"""The Python API, for notebooks and scripts: `train(*overrides)` runs what `python train.py <overrides>` runs
and returns a `Run`; `load(run_dir)` gives the same object for a run already on disk.

    from mnist_lab import train, load
    run = train("model=lenet_res", "trainer.epochs=3")   # the same overrides as the command line
    run.metrics["test_acc"], run.history, run.model
    run.predict(images)                                  # tensors, PIL images or image files
    run.evaluate().confusion_figure()

A call leaves the process as it found it: no exit (an error raises, with the one line the script prints), no
environment, signal handler, logging level, thread count or working directory changed. Ctrl-C (the kernel's
interrupt) stops after the current step, saves last.pt and raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from hydra.core.utils import run_job as hydra_run_job
from hydra.core.utils import setup_globals
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch import Tensor

from mnist_lab.artifacts import Trained, load_trained
from mnist_lab.cli import OUR_LOGGERS, user_message
from mnist_lab.config import compose
from mnist_lab.data.images import ImageError, greyscale, load_greyscale, prepare
from mnist_lab.errors import NotFound, UserError
from mnist_lab.ownership import owned
from mnist_lab.shell import Job, run_job
from mnist_lab.status import read_status
from mnist_lab.trainer.stopping import TrainingStopped

if TYPE_CHECKING:
    from mnist_lab.tools.evaluate import Evaluation

ImageLike = Tensor | np.ndarray | Image.Image | str | Path


@dataclass
class Predictions:
    """What a model makes of some images: the likeliest class of each, its name, and every probability."""

    classes: list[int]
    names: list[str]
    probabilities: Tensor  # (N, 10), rows summing to 1

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class Run:
    """A finished run: its directory and metrics.json; the best model, predictions and evaluation on demand."""

    run_dir: Path
    metrics: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        m = self.metrics
        return f"Run({m['model']}, test accuracy {m['test_acc']:.2%}, {m['epochs']:g} epochs, {self.run_dir})"

    @property
    def history(self) -> list[dict[str, float]]:
        """One row per epoch: epoch, train/loss, train/acc, val/loss, val/acc, lr, time/epoch_s, ..."""
        return self.metrics["history"]

    def curve(self, tag: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of one of history's columns, e.g. `val/acc`, ready to plot."""
        rows = [row for row in self.history if tag in row]
        return [int(row["epoch"]) for row in rows], [row[tag] for row in rows]

    @cached_property
    def trained(self) -> Trained:
        """The best weights (checkpoints/best.pt) on the run's config, in eval mode."""
        return load_trained(str(self.run_dir), [])

    @property
    def model(self) -> torch.nn.Module:
        """The model with the weights that validated best: the ones that were tested."""
        return self.trained.model

    def predict(self, images: ImageLike | Sequence[ImageLike]) -> Predictions:
        """Classify `images`: a tensor or array of 28x28 images as the dataset holds them (light on dark, 0-255
        or 0-1; (28, 28), (N, 28, 28) or (N, 1, 28, 28)), or PIL images and image files of any size, which
        are prepared first as the dataset's images were made (predict.py's preparation)."""
        data = self.trained.cfg.data
        x = model_input(images, data.name, data.mean, data.std).to(self.trained.device)
        with torch.inference_mode():
            probabilities = self.model(x).float().softmax(dim=1).cpu()
        classes = probabilities.argmax(dim=1).tolist()
        return Predictions(classes, [data.classes[k] for k in classes], probabilities)

    def evaluate(self, *overrides: str, tta: str | None = None, split: str = "test") -> Evaluation:
        """The best model on the official test set (or the data source `overrides` name; `split="val"`: the
        validation images the run held out): accuracy, loss, every prediction, the confusion matrix and its
        figures; with `tta` ("flip" or "shift"), probabilities averaged over those views of each image."""
        from mnist_lab.tools.evaluate import evaluate

        trained = load_trained(str(self.run_dir), list(overrides)) if overrides else self.trained
        return evaluate(trained, tta, split)


def model_input(images: ImageLike | Sequence[ImageLike], dataset: str, mean: float, std: float) -> Tensor:
    """`images` as the models' input (N, 1, 28, 28), normalised with the dataset's mean and std."""
    many = images if isinstance(images, list | tuple) else [images]
    if not many:
        raise UserError("no images to predict: an empty list")
    pixels = torch.cat([as_pixels(image, dataset) for image in many])  # (N, 28, 28) in [0, 1]
    return (pixels.unsqueeze(1) - mean) / std


def as_pixels(image: ImageLike, dataset: str) -> Tensor:
    """One image, or a stack of 28x28 ones, as (K, 28, 28) floats in [0, 1], light on dark."""
    if isinstance(image, Tensor | np.ndarray):
        return array_pixels(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(prepare(greyscale(image), dataset)).unsqueeze(0)
    if not isinstance(image, str | Path):
        raise TypeError(
            f"cannot predict a {type(image).__name__}: give tensors, arrays, PIL images or image files"
        )
    try:
        grey = load_greyscale(Path(image))
        return torch.from_numpy(prepare(grey, dataset)).unsqueeze(0)
    except ImageError as error:
        raise ImageError(f"{image}: {error}") from None


def array_pixels(image: Tensor | np.ndarray) -> Tensor:
    """A tensor or array of 28x28 images, (28, 28), (N, 28, 28) or (N, 1, 28, 28), light on dark in 0-255 or
    0-1, as (N, 28, 28) floats in [0, 1]; any other shape or value is refused, naming it."""
    pixels = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).float()
    shape = tuple(pixels.shape)
    if (
        shape[-2:] != (28, 28)
        or len(shape) > 4
        or (len(shape) == 4 and shape[1] != 1)
        or len(shape) == 3
        and 0 in shape
    ):
        raise UserError(
            f"an array of shape {shape}: arrays hold 28x28 greyscale images, (28, 28), (N, 28, 28) or "
            "(N, 1, 28, 28), as the dataset stores them; give other images as PIL images or files"
        )
    if not bool(torch.isfinite(pixels).all()):
        raise UserError(f"an array of shape {shape} with NaN or infinite pixels: pixels are 0-255 or 0-1")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        raise UserError(
            f"an array with pixels from {low:g} to {high:g}: pixels are 0-255 (uint8-like) or 0-1, light on dark"
        )
    return (pixels / 255.0 if high > 1.0 else pixels).reshape(-1, 28, 28)


METRICS_KEYS = ("model", "parameters", "epochs", "test_acc", "history")  # what Run reads from metrics.json


def train(*overrides: str, run_dir: str | Path | None = None) -> Run:
    """Train as `python train.py <overrides>` does, into the same kind of run directory (outputs/<date>/<time>,
    or `run_dir`), and return the finished Run. What ends it otherwise raises, as the script would end
    (mnist_lab.errors, with the line the script prints): a bad value or file UserError (a ValueError), a full
    disk WriteFailed; Ctrl-C stops after the current step with last.pt saved and raises KeyboardInterrupt; a
    stop at trainer.max_steps (or on SIGTERM) raises TrainingStopped, whose message names last.pt."""
    for override in overrides:
        if not isinstance(override, str):
            raise TypeError(f"train({override!r}): an override is a string, as on the command line: "
                            f"train('trainer.epochs=3'), not {type(override).__name__}")  # fmt: skip
    try:
        cfg = compose(*overrides, return_hydra_config=True)
    except HydraException as error:
        raise UserError(user_message(error)) from None
    setup_globals()  # Hydra's `now` resolver, which the run directory's name uses
    given, run_dir = (
        run_dir is not None,
        Path(run_dir or cfg.hydra.run.dir).absolute(),
    )  # resolved once: `now` is the time of this call
    with open_dict(cfg.hydra):
        cfg.hydra.run.dir = str(run_dir)
    job = Job(run_dir, list(cfg.hydra.overrides.task), None, dict(cfg.hydra.runtime.choices))
    key = "run_dir" if given else "hydra.run.dir"
    ended: list[Exception] = []  # how the run ended, where it did not complete

    def task(task_cfg: DictConfig) -> float | None:
        try:
            return run_job(task_cfg, job)
        except Exception as error:  # raised below, past Hydra's job runner (which would print it first)
            ended.append(error)
            return None

    with (
        owned(job.run_dir, cfg.get("resume"), key),
        unchanged_process(),
        logging_to(job.run_dir / "train.log"),
    ):
        # Hydra's own job runner, as its launchers use it: .hydra/ written as for train.py, HydraConfig set
        hydra_run_job(
            task, cfg, "hydra.run.dir", None, HydraContext(None, NO_CALLBACKS), configure_logging=False
        )  # type: ignore[arg-type]
    if ended:
        stop = ended[0]
        if isinstance(stop, TrainingStopped) and stop.exit_code == 128 + signal.SIGINT:
            raise KeyboardInterrupt(str(stop)) from None  # Ctrl-C: what a notebook user expects
        raise stop  # trainer.max_steps or SIGTERM (TrainingStopped), a bad value, a failure
    return load(job.run_dir)


class _NoCallbacks:
    """Hydra's job callbacks, none: the API's run is one job with no Hydra callbacks configured around it."""

    def on_job_start(self, **kwargs: Any) -> None:
        pass

    def on_job_end(self, **kwargs: Any) -> None:
        pass


NO_CALLBACKS = _NoCallbacks()


def load(run_dir: str | Path) -> Run:
    """The run in `run_dir` (a run directory with metrics.json: one that completed)."""
    path = Path(run_dir)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        status = read_status(path)
        said = f"its status.json says {status['status']}" if status else "no status.json either"
        raise NotFound(f"{path}: no metrics.json, so not a completed run ({said})")
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise UserError(
            f"{metrics_file}: unreadable ({error}); the run's checkpoints are as they were"
        ) from None
    missing = [key for key in METRICS_KEYS if not isinstance(metrics, dict) or key not in metrics]
    if missing:
        raise UserError(f"{metrics_file}: not a metrics.json this lab wrote (no {', '.join(missing)})")
    return Run(path.absolute(), metrics)


@contextlib.contextmanager
def unchanged_process() -> Iterator[None]:
    """Put back what a run sets for the whole process: torch's thread count, cuDNN's algorithm choice, and the
    environment (torch's compiler notes its cache folder there)."""
    threads, benchmark, deterministic, environment = (
        torch.get_num_threads(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        dict(os.environ),
    )
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
        for key in os.environ.keys() - environment.keys():
            del os.environ[key]
        os.environ.update(environment)


@contextlib.contextmanager
def logging_to(log_file: Path) -> Iterator[None]:
    """Our loggers at INFO, to the notebook's output and to the run's train.log (as Hydra's job logging does for
    train.py), for the duration of a call; their levels, handlers and propagation are put back after."""
    loggers = [logging.getLogger(name) for name in OUR_LOGGERS]
    before = [(lg.level, lg.propagate) for lg in loggers]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout), logging.FileHandler(log_file)]
    handlers[1].setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.propagate = False  # the notebook's own root handlers, if any, would print each line twice
        for handler in handlers:
            lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, (level, propagate) in zip(loggers, before, strict=True):
            for handler in handlers:
                lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
        for handler in handlers:
            handler.close()
