"""What one training step costs, the lab's `train_step` beside a bare loop of the same recipe (LeNet-5, the
label-smoothed loss of trainer=default, Adam at optimizer.lr, a fixed batch already on the device):

  - ops dispatched: every aten op the step sends through torch's dispatcher (torch's profiler), nested ones
    included; on CUDA also the kernels launched. The lab's running loss and accuracy sums are its only extra.
  - seconds per step: the median of interleaved rounds, each optimizer implementation (torch's default, and
    the fused kernels the lab uses where the device has them).

    python -m bench.step [--device cpu] [--batch-size 64] [--steps 200] [--rounds 5]

Prints a table and writes bench/results/step-<date>.json.
"""

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from bench import RESULTS, machine, spread, write_result
from mnist_lab.config import compose
from mnist_lab.models import LeNet
from mnist_lab.trainer.device import choose_device
from mnist_lab.trainer.evaluation import Tally
from mnist_lab.trainer.loop import train_step
from mnist_lab.trainer.state import Precision

IMPLEMENTATIONS = {"default": {}, "fused": {"fused": True}}  # torch.optim.Adam's keyword arguments


def dispatched(step: Callable[[], object], device: torch.device) -> dict[str, int]:
    """The aten ops one call of `step` dispatches (and, on CUDA, the kernels it launches), after a warm-up."""
    step()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    counts = {"ops": sum(e.name.startswith("aten::") for e in events)}
    if device.type == "cuda":
        counts["kernels"] = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events)
    return counts


def steps(pipeline: str, implementation: str, device: torch.device, batch_size: int) -> Callable[[], object]:
    """One training step of `pipeline` (bare or mnist-lab) with `implementation`'s optimizer, as a callable."""
    torch.manual_seed(0)
    model = LeNet().to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=compose().optimizer.lr, **IMPLEMENTATIONS[implementation]
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=compose().trainer.label_smoothing)
    images = torch.randn(batch_size, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    if pipeline == "bare":

        def bare() -> None:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(images), labels).backward()
            optimizer.step()

        return bare
    tally, precision = Tally(device), Precision()
    return lambda: train_step(model, images, labels, optimizer, criterion=criterion, precision=precision,
                              tally=tally)  # fmt: skip


def seconds_per_step(step: Callable[[], object], device: torch.device, count: int) -> float:
    """Wall time of `count` calls of `step`, divided by `count`."""
    start = time.perf_counter()
    for _ in range(count):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / count


def run(device: torch.device, batch_size: int, count: int, rounds: int) -> dict[str, Any]:
    """Ops and seconds per step of every (pipeline, implementation)."""
    contenders = {
        f"{p}/{i}": steps(p, i, device, batch_size) for p in ("bare", "mnist-lab") for i in IMPLEMENTATIONS
    }
    results: dict[str, Any] = {name: dispatched(step, device) for name, step in contenders.items()}
    for step in contenders.values():
        seconds_per_step(step, device, count // 10)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name in random.sample(list(contenders), len(contenders)):
            times[name].append(seconds_per_step(contenders[name], device, count))
    for name, values in times.items():
        results[name]["seconds_per_step"] = spread(values)
    for implementation in IMPLEMENTATIONS:
        bare, lab = results[f"bare/{implementation}"], results[f"mnist-lab/{implementation}"]
        lab["ops_over_bare"] = lab["ops"] / bare["ops"]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=compose().trainer.batch_size)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="20 steps, 2 rounds: checks that it runs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds = 20, 2
    device = choose_device(args.device)
    results = run(device, args.batch_size, args.steps, args.rounds)
    print(f"one training step of LeNet-5, batch {args.batch_size}, on {device}:")
    print("| pipeline / optimizer | ops dispatched | vs bare | ms per step (median) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['ops_over_bare']:.3f}" if "ops_over_bare" in r else "1"
        kernels = f" ({r['kernels']} kernels)" if "kernels" in r else ""
        print(f"| {name} | {r['ops']}{kernels} | {ratio} | {r['seconds_per_step']['median'] * 1e3:.3f} |")
    path = write_result("step", {"device": str(device), "batch_size": args.batch_size, "steps": args.steps,
                                 "machine": machine(), "results": results}, args.out_dir)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
