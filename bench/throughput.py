"""Training images per second, side by side, in one process, interleaved round by round:

  (a) classic   torchvision's MNIST with ToTensor + Normalize through a DataLoader (num_workers=0), the
                loop of pytorch/examples' mnist/main.py: what a user writes first;
  (b) mnist-lab train.py's own path (`lab.build.build` + `train_one_epoch`) with the default settings;
  (c) floor     the same model class, optimizer and step fed one fixed pre-made batch: no data work, in
                four variants, eager or torch.compile'd, contiguous or channels_last (the MLP: contiguous
                only); the floor of a (model, batch size) is the variant with the best median, the others
                are kept in the JSON.

    python -m bench.throughput [--rounds 5] [--models lenet lenet_res resmlp] [--batch-sizes 128 256]

Each round runs every contender for one epoch, in a new random order. Every set-up is built once and kept
for all rounds, so a compiled variant's warm-up (reported apart) is paid once. Prints a table and writes
bench/results/throughput-<date>.json (medians, min, max, per-round ratios, machine, versions).
"""

import argparse
import itertools
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from bench import RESULTS, machine, spread, write_result
from mnist_lab.build import Setup, build
from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.models import LeNet, LeNetRes, ResBlockMLP
from mnist_lab.trainer.device import choose_device
from mnist_lab.trainer.loop import train_one_epoch

MODELS = {"lenet": LeNet, "lenet_res": LeNetRes, "resmlp": ResBlockMLP}  # the configs' defaults
FLOORS = {  # variant -> its overrides
    f"floor-{mode}-{layout}": [
        f"trainer.compile={mode == 'compiled'}",
        f"trainer.channels_last={layout == 'cl'}",
    ]
    for mode in ("eager", "compiled")
    for layout in ("contiguous", "cl")
}
PIPELINES = ("classic", "mnist-lab", *FLOORS)


def pipelines(model_name: str) -> list[str]:
    """What `model_name` is measured with: channels_last changes nothing for the MLP (no convolution), so its
    floor has no `-cl` variants (a compile fewer)."""
    return [p for p in PIPELINES if not (model_name == "resmlp" and p.endswith("-cl"))]


def classic_epoch(model_name: str, batch_size: int, device: torch.device, images: int | None) -> float:
    """(a): one epoch the way pytorch/examples' mnist/main.py trains; returns images per second."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(str(PROJECT_ROOT / "data"), train=True, transform=transform)
    if images is not None:
        dataset = Subset(dataset, range(images))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    model = MODELS[model_name]().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=compose().optimizer.lr)
    model.train()
    start = time.perf_counter()
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(dataset) / (time.perf_counter() - start)


def build_contender(
    model_name: str, batch_size: int, device: str, images: int | None, pipeline: str
) -> Setup:
    """(b) with the default settings, or a floor variant: built once, trained on in every round."""
    overrides = [f"model={model_name}", f"trainer.batch_size={batch_size}", f"trainer.device={device}"]
    if images is not None:
        overrides.append(f"data.train_subset={images}")
    return build(compose(*overrides, *FLOORS.get(pipeline, [])))


def mnist_lab_epoch(setup: Setup, floor: bool) -> float:
    """(b), or (c) with `floor`: one epoch of train.py's own loop; returns images per second."""
    state = setup.state
    batches = state.train_batches
    if floor:
        fixed = next(iter(batches))
        batches = itertools.repeat(fixed, len(state.train_batches))
    stats = train_one_epoch(
        state.model, batches, state.optimizer, state.scheduler, criterion=state.criterion,
        precision=state.precision,
    )  # fmt: skip
    return stats.images_per_second


def run(
    rounds: int, models: list[str], batch_sizes: list[int], device: str, images: int | None, seed: int
) -> dict[str, Any]:
    """Measure every (model, batch size, pipeline) once per round, in a shuffled order; return the JSON content."""
    torch_device = choose_device(device)
    contenders = [(m, b, p) for m, b in itertools.product(models, batch_sizes) for p in pipelines(m)]
    measured: dict[tuple[str, int, str], list[float]] = {c: [] for c in contenders}
    setups = {c: build_contender(*c[:2], device, images, c[2]) for c in contenders if c[2] != "classic"}
    warm_up = {"/".join(map(str, c)): s.compile_seconds for c, s in setups.items() if s.compile_seconds}
    order = random.Random(seed)
    for round_number in range(1, rounds + 1):
        order.shuffle(contenders)
        for model_name, batch_size, pipeline in contenders:
            torch.manual_seed(round_number)
            if pipeline == "classic":
                value = classic_epoch(model_name, batch_size, torch_device, images)
            else:
                setup = setups[(model_name, batch_size, pipeline)]
                value = mnist_lab_epoch(setup, floor=pipeline != "mnist-lab")
            measured[(model_name, batch_size, pipeline)].append(value)
            print(
                f"round {round_number}/{rounds}  {model_name:9s} batch {batch_size:4d}  {pipeline:9s} {value:9,.0f} img/s",
                flush=True,
            )

    results, ratios = [], []
    for model_name, batch_size in itertools.product(models, batch_sizes):
        per = {p: measured[(model_name, batch_size, p)] for p in pipelines(model_name)}
        for pipeline in per:
            results.append({"model": model_name, "batch_size": batch_size, "pipeline": pipeline,
                            "images_per_second": spread(per[pipeline])})  # fmt: skip
        best = max((v for v in FLOORS if v in per), key=lambda variant: statistics.median(per[variant]))
        per["floor"] = per[best]
        ratios.append({
            "model": model_name, "batch_size": batch_size, "floor": best,
            "ours_over_classic": spread([b / a for a, b in zip(per["classic"], per["mnist-lab"], strict=True)]),
            "ours_over_floor": spread([b / c for b, c in zip(per["mnist-lab"], per["floor"], strict=True)]),
        })  # fmt: skip
    return {
        "machine": machine(),
        "settings": {
            "rounds": rounds,
            "device": str(torch_device),
            "images_per_epoch": images or "all",
            "defaults": "configs/config.yaml (optimizer, schedule, shifts, channels_last auto, fp32)",
            "compile_warm_up_seconds": warm_up,
        },  # fmt: skip
        "results": results,
        "ratios": ratios,
    }


def table(content: dict[str, Any]) -> str:
    """The results as a Markdown table: medians of images/s and of the per-round ratios."""
    median = {
        (r["model"], r["batch_size"], r["pipeline"]): r["images_per_second"]["median"]
        for r in content["results"]
    }
    lines = [
        "| model | batch | (a) classic img/s | (b) mnist-lab img/s | (c) floor img/s | floor variant | (b)/(a) | (b)/(c) |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in content["ratios"]:
        key = (r["model"], r["batch_size"])
        lines.append(
            f"| {key[0]} | {key[1]} | {median[(*key, 'classic')]:,.0f} | {median[(*key, 'mnist-lab')]:,.0f} | "
            f"{median[(*key, r['floor'])]:,.0f} | {r['floor'].removeprefix('floor-')} | {r['ours_over_classic']['median']:.2f} | {r['ours_over_floor']['median']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--images", type=int, default=None, help="images per epoch (default: the whole split)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the contenders")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 512 images: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.images = 2, 512
    content = run(args.rounds, args.models, args.batch_sizes, args.device, args.images, args.seed)
    content["table"] = table(content)
    path = write_result("throughput", content, out_dir=Path(args.out_dir))
    print(f"\n{content['table']}\n\nmedians of {args.rounds} rounds; written to {path}")


if __name__ == "__main__":
    main()
