"""trainer/schedules.py: each schedule's shape, and very short runs."""

import pytest
import torch

from mnist_lab.trainer.schedules import constant, cosine, one_cycle, step


def lrs_over(scheduler_factory, steps: int = 100, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = scheduler_factory(optimizer, total_steps=steps, steps_per_epoch=10, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_follow_their_shapes() -> None:
    assert set(lrs_over(constant)) == {0.1}
    one = lrs_over(one_cycle, warmup_fraction=0.25)
    assert max(one) == pytest.approx(0.1) and one.index(max(one)) in (24, 25)
    assert one[0] == pytest.approx(0.1 / 25) and one[-1] < 1e-4
    cos = lrs_over(cosine, min_lr=0.001)
    assert (
        cos[0] == pytest.approx(0.1)
        and all(a >= b for a, b in zip(cos, cos[1:], strict=False))
        and cos[-1] < 0.0015
    )
    stepped = lrs_over(step, every_epochs=3, gamma=0.5)  # 10 steps an epoch: halves every 30 steps
    assert (
        stepped[29] == pytest.approx(0.1)
        and stepped[30] == pytest.approx(0.05)
        and stepped[60] == pytest.approx(0.025)
    )


@pytest.mark.parametrize("factory", [constant, step, cosine, one_cycle])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7])
def test_schedules_survive_very_short_runs(factory, steps: int) -> None:
    lrs = lrs_over(factory, steps=steps)
    assert len(lrs) == steps and all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
