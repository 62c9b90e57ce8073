"""A run's computation: config -> built parts -> fit -> test -> metrics.json. It raises and returns and knows
nothing of status.json, exit codes, ranks' logging, SLURM or Optuna: train.py's jobs (mnist_lab.shell), the
Python API, the sweeps and the benches all call `train`, and say themselves what its outcome means.
"""

import logging
import shutil
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lab import resume as resuming
from mnist_lab.build import Setup, build
from mnist_lab.provenance import provenance
from mnist_lab.resume import CHECKPOINTS, Resume
from mnist_lab.trainer import distributed
from mnist_lab.trainer.checkpoint import Checkpoints
from mnist_lab.trainer.diagnostics import confusion_matrix, model_summary, per_class_accuracy
from mnist_lab.trainer.evaluation import SetPredictions
from mnist_lab.trainer.files import write_json
from mnist_lab.trainer.loop import EpochEnd, final_evaluation, fit
from mnist_lab.trainer.state import Progress
from mnist_lab.trainer.stopping import StopRequests, stopping_at_once
from mnist_lab.trainer.tensorboard import RunLog

log = logging.getLogger("train")


def train(
    cfg: DictConfig,
    run_dir: Path,
    *,
    job: int | None = None,
    resume_from: Path | None = None,
    hparams: tuple[str, dict[str, Any]] | None = None,
    on_epoch_end: Sequence[EpochEnd] = (),
) -> dict[str, Any]:
    """Build everything from `cfg` (job: a sweep's job number, which spreads jobs over GPUs), continue from the
    checkpoint cfg.resume names (else `resume_from`, if given), train, test, and write `run_dir/metrics.json`;
    return the metrics ({} on a DDP rank but 0). `hparams` and `on_epoch_end`: as `train_built` takes them.

    A signal before training begins stops it at once (TrainingStopped); during training, after the step."""
    with stopping_at_once("before training began"):
        setup = build(cfg, job)
        resume = resuming.find(cfg.resume, run_dir, cfg, setup.state.model, resume_from)
    return train_built(setup, cfg, run_dir, resume, hparams, on_epoch_end)


def train_built(
    setup: Setup,
    cfg: DictConfig,
    run_dir: Path,
    resume: Resume | None = None,
    hparams: tuple[str, dict[str, Any]] | None = None,
    on_epoch_end: Sequence[EpochEnd] = (),
) -> dict[str, Any]:
    """Train what `build(cfg)` made (from `resume`, a checkpoint, if given), test it, write metrics.json.

    `hparams` (a name and values) become the run's row in TensorBoard's HParams view; `on_epoch_end` is fit's."""
    state = setup.state
    example = next(iter(setup.test_batches))[0][:1].clone()  # (1, 1, 28, 28)
    layers = model_summary(state.model, example)
    log.info(describe(setup, cfg) + f"\nmodel summary:\n{layers}")
    main = distributed.is_main()  # under DDP, rank 0 alone writes checkpoints, TensorBoard and metrics.json
    checkpoints = Checkpoints(run_dir / CHECKPOINTS, write=main)
    if resume is not None:
        resuming.continue_from(resume, state, checkpoints, cfg.trainer.epochs)
    origin = provenance(setup.device)
    classes, mean_std = list(cfg.data.classes), (cfg.data.mean, cfg.data.std)
    agree = None if distributed.current() is None else partial(distributed.largest, device=state.device)
    with RunLog(run_dir, cfg.trainer.histograms_every, classes, mean_std, write=main) as run_log:
        if resume is None:  # once per run, not again on resume
            run_log.start(state.model, example, tensorboard_texts(cfg, layers, origin))
            run_log.training_images(state.train_batches.preview(64, seed=cfg.seed))
        progress = fit(state, setup.val_batches, epochs=cfg.trainer.epochs, checkpoints=checkpoints,
                       run_log=run_log, stop=StopRequests(cfg.trainer.max_steps, agree), on_epoch_end=on_epoch_end)  # fmt: skip
        if not main:
            return {}  # rank 0 tests the job's model and writes the results
        with stopping_at_once("during the final test", checkpoints.last):
            test, predictions, final_test_acc = final_evaluation(
                state, setup.test_batches, checkpoints, run_log, progress.epoch
            )
        if hparams is not None:
            run_log.hparams(*hparams)
    metrics = results(setup, cfg, progress, (test, predictions, final_test_acc), origin)
    write_json(metrics, run_dir / "metrics.json")
    log.info("%s", summary(metrics, run_dir))
    return metrics


def results(
    setup: Setup,
    cfg: DictConfig,
    progress: Progress,
    tested: tuple[Any, SetPredictions, float | None],
    origin: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: what was trained, how well (`tested`: the final test's stats, predictions and the last
    epoch's accuracy), how fast, where and from which code."""
    state, (test, predictions, final_test_acc) = setup.state, tested
    classes = list(cfg.data.classes)
    seconds = progress.train_seconds
    return {
        "model": type(state.model).__name__,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "epochs": cfg.trainer.epochs,
        "best_epoch": progress.best_epoch,
        "best_val_acc": max(progress.best_val_acc, 0.0)
        if setup.val_batches is not None
        else None,  # None: not validated
        "test_loss": test.loss,
        "test_acc": test.accuracy,
        "final_test_acc": final_test_acc,  # the last epoch's weights (test_acc: the best validated epoch's)
        "test_class_acc": class_accuracy(predictions, classes),
        "train_seconds": seconds,
        "images_per_second": progress.train_images / seconds if seconds else 0.0,
        "compile_seconds": setup.compile_seconds,
        "device": str(setup.device),
        "threads": setup.threads,
        "seed": cfg.seed,
        **origin,
        "history": progress.history,
    }


def class_accuracy(predictions: SetPredictions, classes: list[str]) -> dict[str, float]:
    """The test accuracy of each class, by name (metrics.json; the report names the weakest)."""
    matrix = confusion_matrix(predictions.predicted, predictions.labels, len(classes))
    return dict(zip(classes, per_class_accuracy(matrix).tolist(), strict=True))


def describe(setup: Setup, cfg: DictConfig) -> str:
    """The run's first log line: model, device, threads, memory format, eager or compiled, precision, data sizes,
    epochs."""
    model, threads = setup.state.model, setup.threads
    parameters = sum(p.numel() for p in model.parameters())
    path = "eager" if setup.compile_seconds is None else f"compiled ({cfg.trainer.compile_mode})"
    val_images = setup.val_batches.num_images if setup.val_batches is not None else "no"
    line = (
        f"{type(model).__name__} ({parameters:,} parameters) on {setup.device}, {threads} thread{'s' if threads > 1 else ''}"
        f"{', channels_last' if setup.channels_last else ''}, {path}, {cfg.trainer.precision}: "
        f"{setup.state.train_batches.num_images} training, {val_images} validation, "
        f"{setup.test_batches.num_images} test images; {cfg.trainer.epochs:g} epochs of {len(setup.state.train_batches)} steps"
    )
    if setup.val_batches is None:
        line += "\nno validation split (data.validation_size=0): best.pt is the last epoch's weights"
    if setup.compile_seconds is not None:
        line += (
            f"\ntorch.compile (mode {cfg.trainer.compile_mode}) warm-up: {setup.compile_seconds:.1f} s "
            "(not counted in the epoch times)"
        )
    return line


def tensorboard_texts(cfg: DictConfig, layers: str, origin: dict[str, Any]) -> dict[str, str]:
    """The Markdown texts a run shows in TensorBoard: its config, model summary and provenance."""
    return {
        "config": "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```",
        "model_summary": "```\n" + layers + "\n```",
        "provenance": "\n".join(f"- **{key}**: `{value}`" for key, value in origin.items()),
    }


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The few lines a user reads at the end of a run."""
    tensorboard = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    best_val = metrics["best_val_acc"]
    return "\n".join(
        [
            f"{metrics['model']} ({metrics['parameters']:,} parameters) on {metrics['device']}: "
            f"{metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s of training "
            f"({metrics['images_per_second']:,.0f} images/s)",
            f"  test accuracy        {metrics['test_acc']:.2%}  (loss {metrics['test_loss']:.4f}, "
            f"weights of epoch {metrics['best_epoch']}){last_epoch(metrics)}",
            "  best val. accuracy   "
            + (
                "none: no validation split (data.validation_size=0)"
                if best_val is None
                else f"{best_val:.2%}"
            ),
            f"  run directory        {run_dir}",
            f"  TensorBoard          {tensorboard} --logdir {run_dir}",
        ]
    )


def last_epoch(metrics: dict[str, Any]) -> str:
    """The last epoch's test accuracy, where the best validated epoch is an earlier one."""
    best, final, history = metrics["best_epoch"], metrics.get("final_test_acc"), metrics["history"]
    if final is None or not best or not history or best == history[-1]["epoch"]:
        return ""
    return f"; the last epoch's weights {final:.2%}"
