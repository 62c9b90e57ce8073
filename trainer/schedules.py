"""Learning-rate schedules, all stepped once per optimiser step; each takes the run's length in steps.

They wrap torch's own schedulers, turning epochs into steps so that the configs speak in epochs. The
peak learning rate is always the optimizer's `lr`. Their settings arrive checked (mnist_lab.values).
"""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, OneCycleLR, StepLR


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    """Keep the optimizer's learning rate."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def step(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, every_epochs: int = 3, gamma: float = 0.1
) -> LRScheduler:
    """Multiply the learning rate by `gamma` every `every_epochs` epochs."""
    return StepLR(optimizer, step_size=every_epochs * steps_per_epoch, gamma=gamma)


def cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, min_lr: float = 0.0) -> LRScheduler:
    """Anneal from the optimizer's learning rate to `min_lr` along a half cosine over the whole run."""
    return CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=min_lr)


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    cycle_momentum: bool = True,
) -> LRScheduler:
    """Warm up to the optimizer's learning rate over `warmup_fraction` of the run, then anneal (Smith 2018).

    `cycle_momentum` (torch's default) also moves the momentum, Adam's first beta, from 0.95 to 0.85 and back
    against the learning rate; false leaves the optimizer's own."""
    peak = [group["lr"] for group in optimizer.param_groups]
    total_steps = max(total_steps, 1)
    # OneCycleLR divides by zero when the warm-up is a single step: give very short runs 1.5 steps of it.
    warmup_fraction = min(max(warmup_fraction, 1.5 / total_steps), max(warmup_fraction, 0.75))
    return OneCycleLR(
        optimizer,
        max_lr=peak,
        total_steps=total_steps,
        pct_start=warmup_fraction,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )
