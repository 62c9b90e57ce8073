"""The training loop: `train_one_epoch`, `evaluate` and `fit`, which adds TensorBoard, tqdm and checkpoints."""

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from tqdm.auto import tqdm

from data.loader import DeviceBatches
from trainer.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from trainer.diagnostics import Predictions, log_diagnosis, log_model
from trainer.interrupt import NonFiniteLoss, StopOnSignal, TrainingStopped

log = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]
PROGRESS_EVERY = 25  # steps between updates of the bar's running loss (each update synchronises)


@dataclass
class EpochStats:
    """Mean loss and accuracy over one pass, with its size and wall time."""

    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        """Throughput of the pass."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FitResult:
    """What `fit` measured: best validation epoch, test stats with the best weights, and timings."""

    epochs_run: int
    best_epoch: int
    best_val_acc: float
    test: EpochStats
    train_seconds: float
    images_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class HParams:
    """A run's row in TensorBoard's HParams view: its name (the sweep's overrides) and hyperparameter values."""

    name: str
    values: dict[str, bool | int | float | str]


class _Tally:
    """Loss and correct-prediction sums kept on the device, read once at the end of a pass.

    Every `.item()` is a host-device synchronisation, so the loops never call it per step. The per-step
    losses are kept on the device too, for the per-step curve.
    """

    def __init__(self, device: torch.device, state: dict[str, Any] | None = None) -> None:
        state = state or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.loss_sum = torch.tensor(float(state["loss_sum"]), device=device)
        self.correct = torch.tensor(int(state["correct"]), dtype=torch.int64, device=device)
        self.seen = int(state["seen"])
        self.start = time.perf_counter() - state["seconds"]  # a resumed epoch keeps its earlier time
        self.step_losses: list[Tensor] = []

    def add(self, loss_sum: Tensor, logits: Tensor, labels: Tensor) -> None:
        self.loss_sum += loss_sum
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.seen += len(labels)

    def stats(self) -> EpochStats:
        seen = max(self.seen, 1)
        loss, accuracy = self.loss_sum.item() / seen, self.correct.item() / seen
        return EpochStats(loss, accuracy, self.seen, time.perf_counter() - self.start)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers, for a checkpoint taken in the middle of an epoch."""
        return {"loss_sum": self.loss_sum.item(), "correct": self.correct.item(), "seen": self.seen,
                "seconds": time.perf_counter() - self.start}  # fmt: skip

    def take_step_losses(self) -> list[float]:
        """The per-step losses since the last call (one synchronisation)."""
        losses = torch.stack(self.step_losses).tolist() if self.step_losses else []
        self.step_losses = []
        return losses


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    should_stop: Callable[[int], bool] | None = None,
    tally: _Tally | None = None,
) -> EpochStats:
    """One pass over `batches`, one optimiser and scheduler step per batch; returns mean loss and accuracy.

    `amp_dtype` runs the forward pass under autocast (mixed precision); `scaler` scales float16 losses.
    `should_stop(steps_done)` is asked after every step; True ends the pass there. A NaN or infinite loss
    raises NonFiniteLoss before its update is applied (the check reads the loss: on CUDA, a synchronisation).
    If `batches` is a tqdm bar it shows the running loss and accuracy.
    """
    model.train()
    device = next(model.parameters()).device
    tally = tally or _Tally(device)
    for step, (images, labels) in enumerate(batches, start=1):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, 10)
            loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {step} of this pass")
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        tally.add(loss.detach() * len(labels), logits, labels)
        tally.step_losses.append(loss.detach())
        if isinstance(batches, tqdm) and step % PROGRESS_EVERY == 0:
            running = tally.stats()
            batches.set_postfix(loss=f"{running.loss:.4f}", acc=f"{running.accuracy:.2%}", refresh=False)
        if should_stop is not None and should_stop(step):
            break
    return tally.stats()


def evaluate(model: nn.Module, batches: Batches, *, amp_dtype: torch.dtype | None = None) -> EpochStats:
    """Mean loss and accuracy of `model` over `batches`, in eval mode and without autograd."""
    return predict(model, batches, amp_dtype=amp_dtype)[0]


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Batches, *, amp_dtype: torch.dtype | None = None
) -> tuple[EpochStats, Predictions]:
    """Mean loss and accuracy over `batches`, and every prediction (with the misclassified inputs)."""
    model.eval()
    device = next(model.parameters()).device
    tally = _Tally(device)
    probs, targets, wrong_images, wrong_index = [], [], [], []
    for images, labels in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, 10)
        wrong = logits.argmax(dim=1) != labels
        wrong_images.append(images[wrong])
        wrong_index.append(wrong.nonzero().squeeze(1) + tally.seen)  # positions in the whole set
        tally.add(F.cross_entropy(logits.float(), labels, reduction="sum"), logits, labels)
        probs.append(logits.float().softmax(dim=1))
        targets.append(labels)
    outputs = (
        torch.cat(t).cpu() if t else torch.empty(0) for t in (probs, targets, wrong_images, wrong_index)
    )
    return tally.stats(), Predictions(*outputs)


def fit(
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    train_batches: DeviceBatches,
    val_batches: Batches,
    test_batches: Batches,
    *,
    epochs: int,
    run_dir: Path,
    config: dict[str, Any],
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_steps: int | None = None,
    resume: dict[str, Any] | None = None,
    hparams: HParams | None = None,
    after_epoch: Callable[[int, float], None] | None = None,
    texts: dict[str, str] | None = None,
    histograms_every: int = 1,
) -> FitResult:
    """Train for `epochs`, validating after each; keep `last.pt` and `best.pt`; test once with the best weights.

    Logs to TensorBoard in `run_dir` (step = epoch; `train/loss_per_step` by global step) and one log line
    per epoch. `resume` (a checkpoint) continues where it was taken, mid-epoch included. SIGINT/SIGTERM or
    `max_steps` end the run after the current step with `last.pt` written: TrainingStopped says where.
    `after_epoch(epoch, val_acc)` runs after each epoch is saved and logged; it may raise to end the run
    (a search's pruner does). `hparams` and the final metrics go to the HParams view at the end.
    TensorBoard also gets: `texts` (Markdown) and the model's graph at the start; the validation confusion
    matrix and per-class accuracy every epoch; weight and gradient histograms every `histograms_every`
    epochs (0: never); at the end the test set's confusion matrix, per-class accuracy and precision-recall
    curves, and a grid of the misclassified test digits.
    """
    checkpoints = run_dir / "checkpoints"
    device = next(model.parameters()).device
    progress: dict[str, Any] = {"epoch": 0, "step": 0, "best_epoch": 0, "best_val_acc": -1.0,
                                "train_seconds": 0.0, "train_images": 0, "history": []}  # fmt: skip
    tally_state = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume["scaler"] is not None:
            scaler.load_state_dict(resume["scaler"])
        train_batches.load_state_dict(resume["loader"])
        restore_rng_states(resume["rng"])
        progress = {key: resume[key] for key in progress}
        tally_state = resume["tally"]  # None: the checkpoint closed an epoch

    def state(tally: _Tally | None) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "loader": train_batches.state_dict(),
            "rng": rng_states(),
            "tally": tally.state_dict() if tally is not None else None,
            "config": config,
            **progress,  # epoch (completed), step, best epoch and accuracy, time, history
        }

    writer = SummaryWriter(log_dir=str(run_dir))
    if progress["epoch"] == 0 and progress["step"] == 0:  # once per run, not again on resume
        log_model(writer, model, next(iter(val_batches))[0][:1], texts or {})
    try:
        with StopOnSignal() as signals:
            while progress["epoch"] < epochs:
                epoch, steps_before = progress["epoch"] + 1, progress["step"]

                def should_stop(done: int) -> bool:
                    reached = max_steps is not None and steps_before + done >= max_steps  # noqa: B023
                    return signals.signum is not None or reached

                tally = _Tally(device, tally_state)
                tally_state = None
                bar = tqdm(
                    train_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=None
                )
                try:
                    train = train_one_epoch(model, bar, optimizer, scheduler, amp_dtype=amp_dtype, scaler=scaler,
                                            should_stop=should_stop, tally=tally)  # fmt: skip
                except NonFiniteLoss as error:
                    last = checkpoints / "last.pt"
                    kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint written yet"
                    raise NonFiniteLoss(
                        f"{error}: epoch {epoch}, global step {steps_before + len(tally.step_losses) + 1}; "
                        f"the update was not applied; {kept}"
                    ) from None
                finally:
                    bar.close()
                step_losses = tally.take_step_losses()
                progress["step"] = steps_before + len(step_losses)
                if train_batches.next_batch < len(train_batches):  # stopped inside the epoch
                    save_checkpoint(state(tally), checkpoints / "last.pt")
                    _log_step_losses(writer, step_losses, steps_before)
                    raise _stopped(
                        signals.signum, max_steps, epoch, progress["step"], checkpoints / "last.pt"
                    )

                val, val_predictions = predict(model, val_batches, amp_dtype=amp_dtype)
                lr = scheduler.get_last_lr()[0]
                log.info(
                    f"epoch {epoch}/{epochs}  train loss {train.loss:.4f} acc {train.accuracy:.2%}  "
                    f"val loss {val.loss:.4f} acc {val.accuracy:.2%}  lr {lr:.2e}  "
                    f"{train.seconds:.1f} s  {train.images_per_second:,.0f} img/s"
                )
                scalars = {
                    "train/loss": train.loss,
                    "train/acc": train.accuracy,
                    "val/loss": val.loss,
                    "val/acc": val.accuracy,
                    "lr": lr,
                    "time/epoch_s": train.seconds,
                    "throughput/img_per_s": train.images_per_second,
                }
                improved = val.accuracy > progress["best_val_acc"]
                if improved:
                    progress["best_epoch"], progress["best_val_acc"] = epoch, val.accuracy
                progress["epoch"] = epoch
                progress["train_seconds"] += train.seconds
                progress["train_images"] += train.images
                progress["history"].append({"epoch": epoch, **scalars})
                save_checkpoint(state(None), checkpoints / "last.pt")
                if improved:
                    save_checkpoint(state(None), checkpoints / "best.pt")
                # Logged after the checkpoint: a crash in between loses points but never duplicates them.
                _log_step_losses(writer, step_losses, steps_before)
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, epoch)
                log_diagnosis(writer, "val", val_predictions, epoch)
                if histograms_every and epoch % histograms_every == 0:
                    for name, parameter in model.named_parameters():
                        writer.add_histogram(f"weights/{name}", parameter.detach(), epoch)
                        if parameter.grad is not None:  # the epoch's last step
                            writer.add_histogram(f"grads/{name}", parameter.grad, epoch)
                if epoch < epochs and should_stop(progress["step"] - steps_before):  # last.pt is saved above
                    raise _stopped(
                        signals.signum, max_steps, epoch, progress["step"], checkpoints / "last.pt"
                    )
                if after_epoch is not None:
                    after_epoch(epoch, val.accuracy)

        if progress["best_epoch"]:  # test the weights that validated best, not merely the last ones
            model.load_state_dict(load_checkpoint(checkpoints / "best.pt")["model"])
        test, test_predictions = predict(model, test_batches, amp_dtype=amp_dtype)
        writer.add_scalar("test/loss", test.loss, epochs)
        writer.add_scalar("test/acc", test.accuracy, epochs)
        log_diagnosis(writer, "test", test_predictions, epochs, full=True)
        if hparams is not None:
            final = {
                "hparams/best_val_acc": max(progress["best_val_acc"], 0.0),
                "hparams/test_acc": test.accuracy,
                "hparams/test_loss": test.loss,
                "hparams/train_seconds": progress["train_seconds"],
            }
            _log_hparams(writer, hparams, final, epochs)
    finally:
        writer.close()
    seconds = progress["train_seconds"]
    return FitResult(
        epochs_run=epochs,
        best_epoch=progress["best_epoch"],
        best_val_acc=max(progress["best_val_acc"], 0.0),
        test=test,
        train_seconds=seconds,
        images_per_second=progress["train_images"] / seconds if seconds else 0.0,
        history=progress["history"],
    )


def _log_step_losses(writer: SummaryWriter, losses: list[float], steps_before: int) -> None:
    for offset, loss in enumerate(losses, start=1):
        writer.add_scalar("train/loss_per_step", loss, steps_before + offset)


def _log_hparams(writer: SummaryWriter, hparams: HParams, metrics: dict[str, float], step: int) -> None:
    """One HParams session in the run's own event file (torch's `add_hparams` would open a new
    timestamped sub-directory per call), named by `hparams.name`; the metric tags are not curve tags."""
    experiment, start, end = hparams_summaries(hparams.values, metrics)
    data = HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content)
    data.session_start_info.group_name = hparams.name  # the row's name in the HParams table
    start.value[0].metadata.plugin_data.content = data.SerializeToString()
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary, step)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, step)


def _stopped(signum: int | None, max_steps: int | None, epoch: int, step: int, path: Path) -> TrainingStopped:
    """The TrainingStopped to raise after a signal or `max_steps`, with `path` already written."""
    if signum is not None:
        name = signal.Signals(signum).name
        return TrainingStopped(f"stopped by {name} in epoch {epoch} after step {step}", path, 128 + signum)
    return TrainingStopped(f"stopped at trainer.max_steps={max_steps}, in epoch {epoch}", path, 0)


__all__ = ["EpochStats", "FitResult", "HParams", "evaluate", "fit", "predict", "train_one_epoch"]
