"""Loss and accuracy kept on the device (`Tally`), and passes without gradients: `evaluate` and `predict`."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnist_lab.trainer.distributed import all_sum

Batches = Iterable[tuple[Tensor, Tensor]]


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
class SetPredictions:
    """A model's outputs over a whole set, on the CPU: probabilities, true labels, the misclassified images."""

    probs: Tensor  # (N, 10) softmax probabilities
    labels: Tensor  # (N,) int64
    wrong_images: Tensor  # (W, 1, 28, 28) the normalised inputs the model got wrong, in set order
    wrong_index: Tensor  # (W,) their positions in the set

    @property
    def predicted(self) -> Tensor:
        return self.probs.argmax(dim=1)

    @property
    def confidence(self) -> Tensor:
        return self.probs.max(dim=1).values


class Tally:
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
        """Count one batch: the sum of its losses, its logits (B, 10) against its labels (B,)."""
        self.loss_sum += loss_sum
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.seen += len(labels)

    def add_step(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        """Count one training step: its mean loss over the batch (kept for the per-step curve), its logits
        (B, 10) against its labels (B,). Five small ops on the device, no synchronisation."""
        self.loss_sum.add_(loss, alpha=len(labels))  # the batch's sum of losses, in one op
        self.correct.add_((logits.argmax(dim=1) == labels).sum())
        self.seen += len(labels)
        self.step_losses.append(loss)

    def first_non_finite(self, since: int = 0) -> int | None:
        """The step (1-based, of this pass) of the first non-finite loss at or after step `since` + 1, or None
        (one synchronisation: a read of the losses since then)."""
        recent = self.step_losses[since:]
        if not recent:
            return None
        finite = torch.isfinite(torch.stack(recent))
        if bool(finite.all()):
            return None
        return since + 1 + int((~finite).nonzero()[0, 0])

    def stats(self) -> EpochStats:
        """Mean loss and accuracy so far (one synchronisation)."""
        seen = max(self.seen, 1)
        loss, accuracy = self.loss_sum.item() / seen, self.correct.item() / seen
        return EpochStats(loss, accuracy, self.seen, time.perf_counter() - self.start)

    def reduce(self) -> None:
        """Sum the counts over the ranks of a DDP job (each rank counted its own part of every batch)."""
        seen = torch.tensor(self.seen, device=self.loss_sum.device)
        all_sum(self.loss_sum, self.correct, seen)
        self.seen = int(seen)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers, for a checkpoint taken in the middle of an epoch."""
        return {"loss_sum": self.loss_sum.item(), "correct": self.correct.item(), "seen": self.seen,
                "seconds": time.perf_counter() - self.start}  # fmt: skip

    def take_step_losses(self) -> list[float]:
        """The per-step losses since the last call (one synchronisation)."""
        losses = torch.stack(self.step_losses).tolist() if self.step_losses else []
        self.step_losses = []
        return losses


def evaluate(model: nn.Module, batches: Batches, *, amp_dtype: torch.dtype | None = None) -> EpochStats:
    """Mean loss and accuracy of `model` over `batches`, in eval mode and without autograd."""
    return predict(model, batches, amp_dtype=amp_dtype)[0]


def _shifts(x: Tensor) -> list[Tensor]:
    """The images moved one pixel up, down, left and right (torch.roll: the pixel leaving one edge comes in at
    the other, which on these images is background)."""
    return [x.roll(step, dim) for dim in (-2, -1) for step in (-1, 1)]


# Test-time augmentation: the views of a batch whose class probabilities are averaged with the batch's own.
TTA_VIEWS: dict[str, Callable[[Tensor], list[Tensor]]] = {
    "flip": lambda x: [x.flip(-1)],  # clothing: a mirrored digit can change meaning
    "shift": _shifts,
}


class ViewAveraged(nn.Module):
    """`model` with test-time augmentation: its class probabilities averaged over a batch and `views(batch)`,
    returned as their logarithm (softmax gives the average back), so that `predict` and `evaluate` take it as
    they take a model."""

    def __init__(self, model: nn.Module, views: Callable[[Tensor], list[Tensor]]) -> None:
        super().__init__()
        self.model, self.views = model, views

    def forward(self, x: Tensor) -> Tensor:
        probs = [self.model(view).float().softmax(dim=1) for view in (x, *self.views(x))]
        return torch.stack(probs).mean(dim=0).log()


@torch.inference_mode()
def predict(
    model: nn.Module, batches: Batches, *, amp_dtype: torch.dtype | None = None
) -> tuple[EpochStats, SetPredictions]:
    """Mean loss and accuracy over `batches`, and every prediction (with the misclassified inputs)."""
    model.eval()
    device = next(model.parameters()).device
    tally = Tally(device)
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
    return tally.stats(), SetPredictions(*outputs)
