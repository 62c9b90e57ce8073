"""trainer/speed.py: the fast settings compute what the plain ones do: memory format, compile, threads."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mnist_lab.models import LeNet, LeNetRes, ResBlockMLP
from mnist_lab.trainer.speed import (
    available_cpus,
    choose_cudnn_algorithms,
    configure_threads,
    prefers_channels_last,
    warm_up,
)


def one_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    # SGD, not Adam: Adam turns the ~1e-9 float noise in the gradient of a bias that batch norm cancels
    # (LeNetRes's conv biases) into a full-size step of either sign.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("model_class", [LeNet, LeNetRes])
def test_channels_last_gives_the_same_loss_and_update(model_class: type[torch.nn.Module]) -> None:
    torch.manual_seed(0)
    plain = model_class()
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    assert one_step(fast, images, labels) == pytest.approx(one_step(plain, images, labels), abs=1e-6)
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_channels_last_auto_follows_the_measurements() -> None:
    assert prefers_channels_last(LeNet(), "auto") is True
    assert prefers_channels_last(LeNetRes(), "auto") is False  # batch norm: slower in channels_last on a CPU
    assert prefers_channels_last(ResBlockMLP(), "auto") is False  # no convolutions: nothing to gain
    assert prefers_channels_last(LeNetRes(), True) is True
    assert prefers_channels_last(LeNet(), False) is False


def test_thread_count_is_set_as_asked_or_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads(None) == 1 and torch.get_num_threads() == 1  # a parallel sweep's share
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert configure_threads(None) == available_cpus() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_warm_up_leaves_weights_statistics_and_rng_as_they_were() -> None:
    torch.manual_seed(0)
    model = LeNetRes()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    assert warm_up(model, {32, 7}, {100}) > 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_compiled_model_matches_the_eager_one() -> None:
    # aot_eager: TorchDynamo's capture and AOTAutograd's forward and backward graphs of our model, without
    # inductor's C++ code generation (17 s on a fresh machine; tests/bench/test_bench.py runs that path).
    torch.manual_seed(0)
    eager = LeNet()
    compiled = copy.deepcopy(eager)
    compiled.compile(backend="aot_eager")
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    assert torch.allclose(compiled(images), eager(images), atol=1e-5)
    assert one_step(compiled, images, labels) == pytest.approx(one_step(eager, images, labels), abs=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name  # and the state dict keeps its keys


@pytest.mark.cuda
def test_on_cuda_without_benchmark_two_runs_of_the_same_steps_are_bit_identical() -> None:
    """What choose_cudnn_algorithms(cuda, benchmark=False) is for: a resumed run repeats an unbroken one bit for bit."""
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    images, labels = torch.randn(64, 1, 28, 28).cuda(), torch.randint(0, 10, (64,)).cuda()
    try:
        choose_cudnn_algorithms(torch.device("cuda"), False)
        weights = []
        for _ in range(2):
            torch.manual_seed(0)
            model = LeNetRes().cuda()
            for _ in range(3):
                one_step(model, images, labels)
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert torch.equal(weights[0], weights[1])
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
