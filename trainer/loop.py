"""The training loop: `train_one_epoch`, `evaluate` and `fit`, which adds TensorBoard, tqdm and checkpoints."""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from data.loader import DeviceBatches
from trainer.checkpoint import load_checkpoint, rng_states, save_checkpoint

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


class _Tally:
    """Loss and correct-prediction sums kept on the device, read once at the end of a pass.

    Every `.item()` is a host-device synchronisation, so the loops never call it per step.
    """

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0
        self.start = time.perf_counter()

    def add(self, loss_sum: Tensor, logits: Tensor, labels: Tensor) -> None:
        self.loss_sum += loss_sum
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.seen += len(labels)

    def stats(self) -> EpochStats:
        seen = max(self.seen, 1)
        loss, accuracy = self.loss_sum.item() / seen, self.correct.item() / seen
        return EpochStats(loss, accuracy, self.seen, time.perf_counter() - self.start)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> EpochStats:
    """One pass over `batches`, one optimiser and scheduler step per batch; returns mean loss and accuracy.

    `amp_dtype` runs the forward pass under autocast (mixed precision); `scaler` scales float16 losses.
    If `batches` is a tqdm bar it shows the running loss and accuracy.
    """
    model.train()
    device = next(model.parameters()).device
    tally = _Tally(device)
    for step, (images, labels) in enumerate(batches, start=1):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, 10)
            loss = F.cross_entropy(logits, labels)
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
        if isinstance(batches, tqdm) and step % PROGRESS_EVERY == 0:
            running = tally.stats()
            batches.set_postfix(loss=f"{running.loss:.4f}", acc=f"{running.accuracy:.2%}", refresh=False)
    return tally.stats()


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches, *, amp_dtype: torch.dtype | None = None) -> EpochStats:
    """Mean loss and accuracy of `model` over `batches`, in eval mode and without autograd."""
    model.eval()
    device = next(model.parameters()).device
    tally = _Tally(device)
    for images, labels in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, 10)
        tally.add(F.cross_entropy(logits.float(), labels, reduction="sum"), logits, labels)
    return tally.stats()


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
) -> FitResult:
    """Train for `epochs`, validating after each; keep `last.pt` and `best.pt`; test once with the best weights.

    Logs to TensorBoard in `run_dir` (step = epoch) and to the `logging` log, one line per epoch.
    """
    checkpoints = run_dir / "checkpoints"
    writer = SummaryWriter(log_dir=str(run_dir))
    history: list[dict[str, float]] = []
    best_epoch, best_val_acc, train_seconds, train_images = 0, -1.0, 0.0, 0
    try:
        for epoch in range(1, epochs + 1):
            bar = tqdm(train_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=None)
            train = train_one_epoch(model, bar, optimizer, scheduler, amp_dtype=amp_dtype, scaler=scaler)
            bar.close()
            val = evaluate(model, val_batches, amp_dtype=amp_dtype)
            lr = scheduler.get_last_lr()[0]
            train_seconds += train.seconds
            train_images += train.images
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
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, epoch)
            history.append({"epoch": epoch, **scalars})

            improved = val.accuracy > best_val_acc
            if improved:
                best_epoch, best_val_acc = epoch, val.accuracy
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": epoch * len(train_batches),
                "best_epoch": best_epoch,
                "best_val_acc": best_val_acc,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng_states(train_batches.generator),
                "config": config,
            }
            save_checkpoint(state, checkpoints / "last.pt")
            if improved:
                save_checkpoint(state, checkpoints / "best.pt")

        if best_epoch:  # test the weights that validated best, not merely the last ones
            model.load_state_dict(load_checkpoint(checkpoints / "best.pt")["model"])
        test = evaluate(model, test_batches, amp_dtype=amp_dtype)
        writer.add_scalar("test/loss", test.loss, epochs)
        writer.add_scalar("test/acc", test.accuracy, epochs)
    finally:
        writer.close()
    return FitResult(
        epochs_run=epochs,
        best_epoch=best_epoch,
        best_val_acc=max(best_val_acc, 0.0),
        test=test,
        train_seconds=train_seconds,
        images_per_second=train_images / train_seconds if train_seconds else 0.0,
        history=history,
    )


__all__ = ["EpochStats", "FitResult", "evaluate", "fit", "train_one_epoch"]
