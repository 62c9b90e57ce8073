"""The fast paths compute what the plain ones do: memory format, C5 as a product, batching, compile, precision."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data.loader import MNIST_MEAN, MNIST_STD, DeviceBatches
from models import LeNet, LeNetRes, ResBlockMLP
from tests.conftest import PROJECT_ROOT, synthetic_digits
from trainer import train_one_epoch
from trainer.schedules import constant
from trainer.speed import configure_threads, prefers_channels_last, warm_up


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


def test_device_batches_give_the_classic_normalised_images() -> None:
    images = torch.from_numpy(synthetic_digits(300, 0)[0])
    classic = (images.float() / 255 - MNIST_MEAN) / MNIST_STD  # what ToTensor + Normalize give
    positions = torch.arange(300)  # as labels: each batch says which images it holds
    batches = DeviceBatches(images, positions, 64, torch.device("cpu"), shuffle=True, seed=1)
    seen = []
    for x, index in batches:
        assert x.shape[1:] == (1, 28, 28)
        assert torch.allclose(x[:, 0], classic[index], atol=1e-5)
        seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(300))


def test_channels_last_auto_follows_the_measurements() -> None:
    assert prefers_channels_last(LeNet(), "auto") is True
    assert prefers_channels_last(LeNetRes(), "auto") is False  # batch norm: slower in channels_last on a CPU
    assert prefers_channels_last(ResBlockMLP(), "auto") is False  # no convolutions: nothing to gain
    assert prefers_channels_last(LeNetRes(), True) is True
    with pytest.raises(ValueError, match="trainer.channels_last must be true, false or auto, got 'yes'"):
        prefers_channels_last(LeNet(), "yes")


def test_thread_count_is_checked_and_set() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(None) >= 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="trainer.threads must be null .* got 0"):
        configure_threads(0)


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
    torch.manual_seed(0)
    eager = LeNet()
    compiled = copy.deepcopy(eager)
    compiled.compile()
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    assert torch.allclose(compiled(images), eager(images), atol=1e-5)
    assert one_step(compiled, images, labels) == pytest.approx(one_step(eager, images, labels), abs=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name  # and the state dict keeps its keys


@pytest.mark.parametrize(("precision", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_mixed_precision_epoch_tracks_float32(precision: torch.dtype, tolerance: float) -> None:
    images, labels = synthetic_digits(256, 0)
    results = []
    for amp_dtype in (None, precision):
        torch.manual_seed(0)
        model = LeNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = DeviceBatches(
            torch.from_numpy(images), torch.from_numpy(labels).long(), 32, torch.device("cpu"), shuffle=True
        )
        scaler = torch.amp.GradScaler("cpu") if amp_dtype is torch.float16 else None
        results.append(
            train_one_epoch(
                model, batches, optimizer, constant(optimizer, 0, 0), amp_dtype=amp_dtype, scaler=scaler
            )
        )
    assert results[1].loss == pytest.approx(results[0].loss, rel=tolerance)


def run_bench(module: str, tmp_path: Path, *args: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out-dir", str(tmp_path), *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    return path


def test_throughput_benchmark_runs_and_writes_its_json(mnist_root: Path, tmp_path: Path) -> None:
    path = run_bench("bench.throughput", tmp_path, "--models", "lenet", "resmlp", "--batch-sizes", "64")
    content = json.loads(path.read_text())
    assert content["settings"]["rounds"] == 2 and content["machine"]["torch"] == torch.__version__
    assert {(r["model"], r["pipeline"]) for r in content["results"]} == {
        (m, p) for m in ("lenet", "resmlp") for p in ("classic", "mnist-lab", "floor")
    }
    for result in content["results"]:
        spread = result["images_per_second"]
        assert (
            len(spread["rounds"]) == 2
            and spread["min"] <= spread["median"] <= spread["max"]
            and spread["min"] > 0
        )
    for ratio in content["ratios"]:
        assert len(ratio["ours_over_classic"]["rounds"]) == 2 and ratio["ours_over_floor"]["median"] > 0
    assert content["table"].count("\n") == 3  # header, rule, two rows


def test_time_to_accuracy_benchmark_writes_json_and_a_plot(mnist_root: Path, tmp_path: Path) -> None:
    path = run_bench("bench.time_to_accuracy", tmp_path, "--models", "lenet")
    content = json.loads(path.read_text())
    (run,) = content["runs"]
    assert run["model"] == "lenet" and run["target"] == 0.99 and len(run["curve"]) == 1
    assert 0 < run["final_test_acc"] < 1 and run["train_seconds"] > 0
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
