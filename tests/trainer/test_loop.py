"""trainer/loop.py: an epoch lowers the loss; the criterion is the training loss; mixed precision tracks
float32; a non-finite loss names its step (on CUDA, without a per-step synchronisation)."""

import pytest
import torch
from torch import nn

from mnist_lab.data.loader import DeviceBatches
from mnist_lab.models import LeNet
from mnist_lab.trainer.evaluation import Tally, evaluate
from mnist_lab.trainer.loop import train_one_epoch, train_step
from mnist_lab.trainer.schedules import constant
from mnist_lab.trainer.state import Precision
from mnist_lab.trainer.stopping import NonFiniteLoss
from tests.conftest import synthetic_digits


def test_train_one_epoch_lowers_the_loss_on_learnable_data() -> None:
    torch.manual_seed(0)
    images, labels = synthetic_digits(512, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), seed=0
    )
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = evaluate(model, batches)
    stats = [train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0)) for _ in range(3)]
    after = evaluate(model, batches)
    assert stats[2].loss < stats[0].loss
    assert after.loss < before.loss / 4 and after.accuracy > 0.95
    assert stats[0].images == 512


@pytest.mark.parametrize(("precision", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_mixed_precision_epoch_tracks_float32(precision: torch.dtype, tolerance: float) -> None:
    images, labels = synthetic_digits(256, 0)
    results = []
    for amp_dtype in (None, precision):
        torch.manual_seed(0)
        model = LeNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = DeviceBatches(
            torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), seed=0
        )
        scaler = torch.amp.GradScaler("cpu") if amp_dtype is torch.float16 else None
        precision = Precision(amp_dtype, scaler)
        results.append(
            train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0), precision=precision)
        )
    assert results[1].loss == pytest.approx(results[0].loss, rel=tolerance)


def test_the_criterion_is_the_loss_trained_and_reported() -> None:
    images, labels = synthetic_digits(128, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu")
    )
    torch.manual_seed(0)
    model = LeNet()
    adam = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):  # confident predictions, where smoothing matters
        train_one_epoch(model, batches, adam, constant(adam, 0, 0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: the losses can be recomputed
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)
    stats = train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0), criterion=smoothed)
    with torch.no_grad():
        expected = sum(smoothed(model(x), y) * len(y) for x, y in batches) / 128
        plain = sum(nn.functional.cross_entropy(model(x), y) * len(y) for x, y in batches) / 128
    assert stats.loss == pytest.approx(expected.item(), rel=1e-5)
    assert stats.loss > plain.item() + 0.1  # smoothing changed the loss


@pytest.mark.cuda
def test_on_cuda_a_non_finite_loss_is_found_without_a_per_step_synchronisation() -> None:
    images, labels = synthetic_digits(64 * 30, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 64, torch.device("cuda")
    )
    model = LeNet().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = {"n": 0}

    def nan_from_step_7(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if calls["n"] >= 7 else loss

    with pytest.raises(NonFiniteLoss, match=r"^loss is not finite at step 7 of this pass") as error:
        train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0), criterion=nan_from_step_7)
    assert error.value.step == 7 and error.value.value is None
    assert calls["n"] == 25  # read at the 25th step, not at every one


def test_the_moving_average_of_the_weights_follows_its_formula_step_by_step() -> None:
    from mnist_lab.trainer.state import averaged_every_step

    images, labels = synthetic_digits(32 * 4, 0)
    batches = DeviceBatches(
        torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu")
    )
    torch.manual_seed(0)
    model = LeNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    after_each_step = []
    optimizer.register_step_post_hook(
        lambda *_: after_each_step.append([p.detach().clone() for p in model.parameters()])
    )
    ema = averaged_every_step(model, optimizer, 0.9)  # its hook runs after the one above
    train_one_epoch(model, batches, optimizer, constant(optimizer, 0, 0))
    expected = after_each_step[0]  # the first update copies the weights
    for weights in after_each_step[1:]:
        expected = [0.9 * e + 0.1 * w for e, w in zip(expected, weights, strict=True)]
    assert len(after_each_step) == 4 and int(ema.n_averaged) == 4
    for averaged, value in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(averaged, value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer_settings", [{}, {"fused": True}], ids=["default", "fused"])
def test_the_step_is_the_bare_loops_arithmetic_bit_for_bit(optimizer_settings: dict) -> None:
    images, labels = synthetic_digits(32 * 5, 0)
    batches = list(
        DeviceBatches(torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    trained = []
    for lab in (False, True):
        torch.manual_seed(0)
        model = LeNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, **optimizer_settings)
        tally = Tally(torch.device("cpu"))
        for x, y in batches:
            if lab:
                train_step(model, x, y, optimizer, criterion=criterion, precision=Precision(), tally=tally)
            else:  # the loop everyone writes
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
        trained.append((model.state_dict(), optimizer.state_dict()["state"]))
    (bare_weights, bare_state), (lab_weights, lab_state) = trained
    assert all(torch.equal(bare_weights[k], lab_weights[k]) for k in bare_weights)
    assert all(torch.equal(bare_state[i]["exp_avg_sq"], lab_state[i]["exp_avg_sq"]) for i in bare_state)


def test_a_step_dispatches_at_most_a_tenth_more_ops_than_the_bare_loop(capsys: pytest.CaptureFixture) -> None:
    from bench.step import dispatched, steps

    cpu = torch.device("cpu")
    for implementation in ("default", "fused"):
        bare = dispatched(steps("bare", implementation, cpu, 64), cpu)["ops"]
        lab = dispatched(steps("mnist-lab", implementation, cpu, 64), cpu)["ops"]
        with capsys.disabled():
            print(
                f"\nops a LeNet-5 step dispatches on the CPU ({implementation} Adam): bare loop {bare}, train_step {lab}"
            )
        assert bare < lab <= 1.10 * bare  # the running sums are the only extra
