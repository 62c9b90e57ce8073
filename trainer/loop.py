"""The training loop: `train_one_epoch`, and `fit`, which adds validation, TensorBoard, tqdm, checkpoints
and stops; `final_evaluation` tests the best weights once at the end."""

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from trainer.checkpoint import Checkpoints
from trainer.evaluation import Batches, EpochStats, Tally, predict
from trainer.state import Precision, Progress, TrainState
from trainer.stopping import NonFiniteLoss, StopRequests
from trainer.tensorboard import RunLog, epoch_scalars

log = logging.getLogger(__name__)

PROGRESS_EVERY = 25  # steps between updates of the bar's running loss (each update synchronises)
EpochEnd = Callable[[int, EpochStats], None]  # (epoch, validation stats) after the epoch is saved and logged


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: Optimizer,
    scheduler: LRScheduler,
    *,
    precision: Precision | None = None,
    should_stop: Callable[[int], bool] | None = None,
    tally: Tally | None = None,
) -> EpochStats:
    """One pass over `batches`, one optimiser and scheduler step per batch; returns mean loss and accuracy.

    `precision` runs the forward pass under autocast and scales float16 losses. `should_stop(steps_done)` is
    asked after every step; True ends the pass there. A NaN or infinite loss raises NonFiniteLoss before its
    update is applied (the check reads the loss: on CUDA, a synchronisation). If `batches` is a tqdm bar it
    shows the running loss and accuracy.
    """
    model.train()
    device = next(model.parameters()).device
    precision = precision or Precision()
    tally = tally or Tally(device)
    for step, (images, labels) in enumerate(batches, start=1):
        with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
            logits = model(images)  # (B, 10)
            loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {step} of this pass")
        optimizer.zero_grad(set_to_none=True)
        if precision.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            precision.scaler.scale(loss).backward()
            precision.scaler.step(optimizer)
            precision.scaler.update()
        scheduler.step()
        tally.add(loss.detach() * len(labels), logits, labels)
        tally.step_losses.append(loss.detach())
        if isinstance(batches, tqdm) and step % PROGRESS_EVERY == 0:
            running = tally.stats()
            batches.set_postfix(loss=f"{running.loss:.4f}", acc=f"{running.accuracy:.2%}", refresh=False)
        if should_stop is not None and should_stop(step):
            break
    return tally.stats()


def fit(
    state: TrainState,
    val_batches: Batches,
    *,
    epochs: int,
    checkpoints: Checkpoints,
    run_log: RunLog,
    stop: StopRequests | None = None,
    on_epoch_end: Sequence[EpochEnd] = (),
) -> Progress:
    """Train `state` for `epochs` (from where it stands: a resumed state continues mid-epoch), validating after
    each; keep last.pt and best.pt; log each epoch. `stop` (signals, max_steps) ends the run after the current
    step with last.pt written: TrainingStopped says where. `on_epoch_end` callables run last; they may raise
    to end the run (a search's pruner does)."""
    stop = stop or StopRequests()
    progress = state.progress
    with stop:
        while progress.epoch < epochs:
            epoch, steps_before = progress.epoch + 1, progress.step
            train, step_losses = _train_epoch(state, epoch, epochs, stop, checkpoints)
            if state.tally is not None:  # stopped inside the epoch
                checkpoints.save(state.state_dict())
                run_log.step_losses(step_losses, steps_before)
                raise stop.stopped(epoch, progress.step, checkpoints.last)

            val, val_predictions = predict(state.model, val_batches, amp_dtype=state.precision.dtype)
            scalars = epoch_scalars(train, val, lr=state.scheduler.get_last_lr()[0])
            log.info(
                f"epoch {epoch}/{epochs}  train loss {train.loss:.4f} acc {train.accuracy:.2%}  "
                f"val loss {val.loss:.4f} acc {val.accuracy:.2%}  lr {scalars['lr']:.2e}  "
                f"{train.seconds:.1f} s  {train.images_per_second:,.0f} img/s"
            )
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


def _train_epoch(
    state: TrainState, epoch: int, epochs: int, stop: StopRequests, checkpoints: Checkpoints
) -> tuple[EpochStats, list[float]]:
    """One epoch of `fit` under a progress bar: its stats and per-step losses. Stopped inside the epoch,
    `state.tally` keeps the epoch's running sums for the checkpoint."""
    tally, state.tally = Tally(state.device, state.tally), None
    steps_before = state.progress.step
    bar = tqdm(state.train_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=None)
    try:
        train = train_one_epoch(
            state.model, bar, state.optimizer, state.scheduler, precision=state.precision,
            should_stop=lambda done: stop.reached(steps_before + done), tally=tally,
        )  # fmt: skip
    except NonFiniteLoss as error:
        kept = (
            f"last good checkpoint: {checkpoints.last}"
            if checkpoints.last.exists()
            else "no checkpoint written yet"
        )
        raise NonFiniteLoss(
            f"{error}: epoch {epoch}, global step {steps_before + len(tally.step_losses) + 1}; "
            f"the update was not applied; {kept}"
        ) from None
    finally:
        bar.close()
    step_losses = tally.take_step_losses()
    state.progress.step = steps_before + len(step_losses)
    if state.train_batches.next_batch < len(state.train_batches):
        state.tally = tally.state_dict()
    return train, step_losses


def final_evaluation(
    state: TrainState, test_batches: Batches, checkpoints: Checkpoints, run_log: RunLog, step: int
) -> EpochStats:
    """Test once, with the weights that validated best (not merely the last ones); log it at `step`."""
    if state.progress.best_epoch:
        state.model.load_state_dict(checkpoints.best_model())
    test, predictions = predict(state.model, test_batches, amp_dtype=state.precision.dtype)
    run_log.test(test, predictions, step)
    return test
