"""The training loop: `train_one_epoch`, and `fit`, which adds validation, TensorBoard, tqdm, checkpoints
and stops; `final_evaluation` tests the best weights once at the end (and the last epoch's beside them)."""

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from mnist_lab.trainer.checkpoint import Checkpoints
from mnist_lab.trainer.distributed import is_main
from mnist_lab.trainer.evaluation import Batches, EpochStats, SetPredictions, Tally, predict
from mnist_lab.trainer.state import Precision, Progress, TrainState
from mnist_lab.trainer.stopping import NonFiniteLoss, StopRequests
from mnist_lab.trainer.tensorboard import RunLog, epoch_scalars

log = logging.getLogger(__name__)

PROGRESS_EVERY = 25  # steps between updates of the bar's running loss (each update synchronises)
# Called with (epoch, its validation stats; None without a validation split) once the epoch is saved and logged.
EpochEnd = Callable[[int, EpochStats | None], None]
Criterion = Callable[[Tensor, Tensor], Tensor]  # (logits (B, 10), labels (B,)) -> mean loss


def train_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: Optimizer,
    *,
    criterion: Criterion,
    precision: Precision,
    tally: Tally,
) -> Tensor:
    """One optimiser step on a batch (B, 1, 28, 28) and its labels (B,): forward under `precision`'s autocast,
    loss, backward (scaled for float16), update; the batch counted in `tally`. Returns the loss, detached.

    The one step of every path: eager on the CPU, under DDP (`model` is then the DDP wrapper, which averages the
    gradients), and on an accelerator. On the CPU, where a read costs no synchronisation, a non-finite loss
    raises NonFiniteLoss before its update is applied; on an accelerator nothing is read back."""
    with torch.autocast(images.device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
        logits = model(images)  # (B, 10)
        loss = criterion(logits, labels)
    if images.device.type == "cpu" and not math.isfinite(value := loss.item()):
        raise NonFiniteLoss(0, value)  # the caller knows the step
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is None:
        loss.backward()
        optimizer.step()
    else:
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    loss = loss.detach()
    tally.add_step(loss, logits.detach(), labels)
    return loss


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: Optimizer,
    scheduler: LRScheduler,
    *,
    criterion: Criterion = F.cross_entropy,
    precision: Precision | None = None,
    tally: Tally | None = None,
) -> EpochStats:
    """One pass over `batches`, one `train_step` and scheduler step per batch; returns mean loss and accuracy.

    `criterion(logits, labels)` is the training loss (e.g. `nn.CrossEntropyLoss(label_smoothing=0.1)`).
    `precision` runs the forward pass under autocast and scales float16 losses. A NaN or infinite loss raises
    NonFiniteLoss naming its step: on the CPU, where reading the loss costs no synchronisation, before its
    update is applied; on an accelerator the losses are read every `PROGRESS_EVERY` steps and at the end (no per-step
    synchronisation), so the updates since the last read were applied in memory, never saved.
    """
    model.train()
    device = next(model.parameters()).device
    precision = precision or Precision()
    tally = tally or Tally(device)
    on_cpu = device.type == "cpu"
    checked = 0  # steps of this pass whose losses were read
    step = 0
    for step, (images, labels) in enumerate(batches, start=1):
        try:
            train_step(
                model, images, labels, optimizer, criterion=criterion, precision=precision, tally=tally
            )
        except NonFiniteLoss as error:
            raise NonFiniteLoss(step, error.value) from None
        scheduler.step()
        if not on_cpu and step % PROGRESS_EVERY == 0:
            _check_finite(tally, checked)
            checked = step
    if not on_cpu and step > checked:
        _check_finite(tally, checked)
    return tally.stats()


def _check_finite(tally: Tally, checked: int) -> None:
    """Raise NonFiniteLoss if a loss after step `checked` of this pass is not finite (one synchronisation)."""
    bad_step = tally.first_non_finite(since=checked)
    if bad_step is not None:
        raise NonFiniteLoss(bad_step, None)


def fit(
    state: TrainState,
    val_batches: Batches | None,
    *,
    epochs: float,
    checkpoints: Checkpoints,
    run_log: RunLog,
    stop: StopRequests | None = None,
    on_epoch_end: Sequence[EpochEnd] = (),
) -> Progress:
    """Train `state` for `epochs` (1.5: one and a half passes; a resumed state continues mid-epoch),
    validating after each (with `val_batches` None, none: best.pt is then the last epoch); keep last.pt and
    best.pt; log each epoch. `stop` (signals, max_steps) ends the run after the current step with last.pt
    written: TrainingStopped says where. `on_epoch_end` callables run last; they may raise
    to end the run (a search's pruner does)."""
    stop = stop or StopRequests()
    progress = state.progress
    last_step = run_steps(epochs, len(state.train_batches))  # a fractional last epoch ends early
    with stop:
        while progress.epoch < epochs:
            epoch, steps_before = progress.epoch + 1, progress.step
            trained = _train_epoch(state, (epoch, epochs), stop, checkpoints, last_step)
            if trained.unfinished is not None:  # stopped inside the epoch: its running sums go into last.pt
                state.tally = trained.unfinished
                checkpoints.save(state.state_dict())
                run_log.step_losses(trained.step_losses, steps_before)
                raise stop.stopped(epoch, progress.step, checkpoints.last)
            train, step_losses = trained.stats, trained.step_losses

            val, val_predictions, scalars = _validate(state, val_batches, train, f"{epoch}/{epochs:g}")
            improved = progress.end_epoch(epoch, train, val, scalars)
            checkpoints.save(state.state_dict(), best=improved)
            # Logged after the checkpoint: a crash in between loses points but never duplicates them.
            run_log.step_losses(step_losses, steps_before)
            run_log.epoch(epoch, scalars, val_predictions)
            run_log.histograms(state.model, epoch)
            if epoch < epochs and stop.reached(progress.step):
                raise stop.stopped(epoch, progress.step, checkpoints.last)
            for callback in on_epoch_end:
                callback(epoch, val)
    return progress


def _validate(
    state: TrainState, val_batches: Batches | None, train: EpochStats, epoch: str
) -> tuple[EpochStats | None, SetPredictions | None, dict[str, float]]:
    """The epoch's validation (None without a validation split), its curves' values and its log line."""
    val, predictions = None, None
    if val_batches is not None:
        val, predictions = predict(state.evaluation_module, val_batches, amp_dtype=state.precision.dtype)
    scalars = epoch_scalars(train, val, lr=state.scheduler.get_last_lr()[0])
    validated = f"val loss {val.loss:.4f} acc {val.accuracy:.2%}" if val else "no validation"
    log.info(
        f"epoch {epoch}  train loss {train.loss:.4f} acc {train.accuracy:.2%}  {validated}  "
        f"lr {scalars['lr']:.2e}  {train.seconds:.1f} s  {train.images_per_second:,.0f} img/s"
    )
    return val, predictions, scalars


def run_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps in a run of `epochs` passes (1.5: one and a half): the schedules' length."""
    return round(epochs * steps_per_epoch)


@dataclass
class TrainedEpoch:
    """What one epoch of `fit` did: its stats, the loss of every step, and, when it stopped before its end,
    its running sums (for the checkpoint; None when the epoch, or the run's last fraction of one, was done)."""

    stats: EpochStats
    step_losses: list[float]
    unfinished: dict[str, Any] | None


def _train_epoch(
    state: TrainState, of: tuple[int, float], stop: StopRequests, checkpoints: Checkpoints, last_step: int
) -> TrainedEpoch:
    """One epoch of `fit` (`of`: this epoch and the run's epochs) under a progress bar, ending at global step
    `last_step` if it comes first, or after the step a stop is asked at."""
    # A resumed epoch's running sums (all ranks' together) are rank 0's to continue from.
    tally, state.tally = Tally(state.device, state.tally if is_main() else None), None
    steps_before, (epoch, epochs) = state.progress.step, of
    bar = tqdm(state.train_batches, f"epoch {epoch}/{epochs:g}", total=len(state.train_batches), unit="batch",
               leave=False, disable=None)  # fmt: skip

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches until the run's last step or a stop, asked before each batch is drawn (a batch
        that is not trained on never leaves the loader); the running figures on the bar every PROGRESS_EVERY."""
        drawn, steps = iter(bar), 0
        while not (steps and (steps_before + steps >= last_step or stop.reached(steps_before + steps))):
            batch = next(drawn, None)
            if batch is None:
                return
            yield batch
            steps += 1
            if steps % PROGRESS_EVERY == 0:  # (reading the sums synchronises with the device)
                shown = tally.stats()
                bar.set_postfix(loss=f"{shown.loss:.4f}", acc=f"{shown.accuracy:.2%}", refresh=False)

    try:
        train = train_one_epoch(
            state.training_module, batches(), state.optimizer, state.scheduler, criterion=state.criterion,
            precision=state.precision, tally=tally,
        )  # fmt: skip
        if state.replica is not None:  # DDP: every rank's part of the epoch, summed
            tally.reduce()
            train = tally.stats()
    except NonFiniteLoss as error:
        raise _located(error, epoch, steps_before, checkpoints) from None
    finally:
        bar.close()
    step_losses = tally.take_step_losses()
    state.progress.step = steps_before + len(step_losses)
    stopped_inside = state.progress.step < last_step and state.train_batches.next_batch < len(
        state.train_batches
    )
    return TrainedEpoch(train, step_losses, tally.state_dict() if stopped_inside else None)


def _located(error: NonFiniteLoss, epoch: int, steps_before: int, checkpoints: Checkpoints) -> NonFiniteLoss:
    """`error` again, its message naming the epoch, the global step and what was saved."""
    kept = (
        f"last good checkpoint: {checkpoints.last}"
        if checkpoints.last.exists()
        else "no checkpoint written yet"
    )
    value = "not finite" if error.value is None else error.value
    applied = "applied in memory from there on, never saved" if error.value is None else "not applied"
    where = f"step {error.step} of this pass: epoch {epoch}, global step {steps_before + error.step}"
    return NonFiniteLoss(
        error.step, error.value, f"loss is {value} at {where}; the update was {applied}; {kept}"
    )


def final_evaluation(
    state: TrainState, test_batches: Batches, checkpoints: Checkpoints, run_log: RunLog, step: int
) -> tuple[EpochStats, SetPredictions, float]:
    """Test once with the weights that validated best (not merely the last ones), logged at `step`; and return
    the last epoch's test accuracy beside it (the same pass where the best epoch is the last)."""
    final = None
    if state.progress.best_epoch and state.progress.best_epoch != state.progress.epoch:
        final, _ = predict(state.evaluation_module, test_batches, amp_dtype=state.precision.dtype)
    if state.progress.best_epoch:
        state.evaluation_module.load_state_dict(checkpoints.best_model())
    test, predictions = predict(state.evaluation_module, test_batches, amp_dtype=state.precision.dtype)
    run_log.test(test, predictions, step)
    return test, predictions, (final or test).accuracy
