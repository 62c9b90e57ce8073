"""The CUDA path verified in one command, `make gpu-check` (at most 8 minutes on one GPU):

    python -m bench.gpu_check [--out-dir DIR] [--skip-tests]

  (1) the tests marked `cuda` (pytest -m cuda): AMP bf16/fp16, exact resume on CUDA (deterministic cuDNN, and
      equal up to rounding with trainer.cudnn_benchmark=true), evaluate and export on a GPU, the deferred
      non-finite check;
  (2) the speedrun (experiment=speedrun) on seeds 0-4: seconds to its end and test accuracy;
  (3) a LeNet-5 epoch on the GPU in each setting below (the second of two epochs, from metrics.json's history:
      the first pays for cuDNN's and the compiler's warm-up), the compiled ones last, beside the compute floor
      measured in the same run (train.py's step on one fixed batch: what the GPU and its launch costs allow).
  (4) what a user could run instead, on the same card in the same process (bench/baselines.py): a bare eager
      loop of LeNet-5's recipe (one epoch, its second run), and the public anchor recipe on seeds 0-4.
Writes bench/results/gpu-<date>.json with the device's name and prints the ratios against the targets (a LeNet-5
epoch at most 0.3x the bare loop's; the speedrun at most 0.5x the anchor's time, every seed >= 99%). Without a
CUDA device it runs (1), whose tests then skip, says so, and writes nothing. The JSON is rewritten after each
measurement, so a check cut short keeps what it measured.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import RESULTS, machine, write_result
from bench.baselines import anchor_run, bare_epoch
from bench.throughput import FLOORS, build_contender, mnist_lab_epoch
from bench.time_to_accuracy import run_experiment
from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.data.sources import MNISTData, read_idx
from mnist_lab.pipeline import train

EPOCH_OVER_BARE, SPEEDRUN_OVER_ANCHOR, SPEEDRUN_ACCURACY = 0.3, 0.5, 0.99  # the targets
ON_GPU = ["trainer.device=cuda", "trainer.epochs=2", "trainer.histograms_every=0"]
# A LeNet-5 epoch (60,000 images less the validation split, batches of 64) in each setting.
VARIANTS = {
    "fp32": [],
    "bf16": ["trainer.precision=bf16"],
    "fp16": ["trainer.precision=fp16"],
    "fp32, channels_last": ["trainer.channels_last=true"],
    "fp32, contiguous": ["trainer.channels_last=false"],
    "fp32, cudnn_benchmark": ["trainer.cudnn_benchmark=true"],
    "compile default": ["trainer.compile=true", "trainer.compile_mode=default"],
    "compile reduce-overhead": ["trainer.compile=true", "trainer.compile_mode=reduce-overhead"],
    "compile max-autotune": ["trainer.compile=true", "trainer.compile_mode=max-autotune"],
}
SPEEDRUN_SEEDS = [0, 1, 2, 3, 4]


def cuda_tests() -> dict[str, Any]:
    """(1): `pytest -m cuda`, its exit status and its summary line."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    print(done.stdout[-3000:], flush=True)
    return {"exit_status": done.returncode, "summary": lines[-1] if lines else done.stderr[-500:]}


def epoch(name: str, overrides: list[str]) -> dict[str, Any]:
    """(2): one setting's steady epoch on the GPU."""
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(compose(*ON_GPU, *overrides), Path(run_dir))
    last = metrics["history"][-1]
    row = {"setting": name, "overrides": overrides, "epoch_s": last["time/epoch_s"],
           "images_per_second": last["throughput/img_per_s"], "compile_seconds": metrics["compile_seconds"],
           "test_acc": metrics["test_acc"]}  # fmt: skip
    print(f"{name:26s} epoch {row['epoch_s']:.3f} s  {row['images_per_second']:>10,.0f} img/s", flush=True)
    return row


def floor() -> dict[str, Any]:
    """The compute floor in the same run: train.py's step on one fixed batch, nothing else (bench.throughput's
    floor), LeNet-5, batches of 64, as many steps as an epoch; the second of two such epochs."""
    setup = build_contender("lenet", 64, "cuda", None, "floor-eager-contiguous")
    for _ in range(2):
        start = time.perf_counter()
        images_per_second = mnist_lab_epoch(setup, floor=True)
        seconds = time.perf_counter() - start
    row = {"setting": "floor", "overrides": FLOORS["floor-eager-contiguous"], "epoch_s": seconds,
           "images_per_second": images_per_second, "compile_seconds": None, "test_acc": None}  # fmt: skip
    print(
        f"{'floor (one fixed batch)':26s} epoch {seconds:.3f} s  {images_per_second:>10,.0f} img/s",
        flush=True,
    )
    return row


def baselines(data: MNISTData) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(4): the bare loop's steady epoch (the second of two) and the anchor recipe on every seed."""
    cuda = torch.device("cuda")
    seconds = [bare_epoch(data, cuda) for _ in range(2)][-1]
    bare = {"setting": "bare loop", "overrides": [], "epoch_s": seconds, "images_per_second": len(data.train_labels) / seconds,
            "compile_seconds": None, "test_acc": None}  # fmt: skip
    print(f"{'bare loop (eager)':26s} epoch {seconds:.3f} s", flush=True)
    anchor = []
    for seed in SPEEDRUN_SEEDS:
        anchor.append(anchor_run(data, cuda, seed))
        print(
            f"anchor seed {seed}  {anchor[-1]['seconds']:5.2f} s  test accuracy {anchor[-1]['test_acc']:.2%}",
            flush=True,
        )
    return bare, anchor


def targets(content: dict[str, Any]) -> dict[str, bool]:
    """The targets met so far (one not yet measured is left out)."""
    met = {}
    epochs = {row["setting"]: row["epoch_s"] for row in content["epochs"]}
    if "fp32" in epochs and "bare loop" in epochs:
        met[f"LeNet-5 epoch (fp32) at most {EPOCH_OVER_BARE}x the bare loop's"] = (
            epochs["fp32"] <= EPOCH_OVER_BARE * epochs["bare loop"]
        )
    if content["speedrun"] and content["anchor"]:
        anchor = max(run["seconds"] for run in content["anchor"])
        met[f"speedrun at most {SPEEDRUN_OVER_ANCHOR}x the anchor's time, every seed >= 99%"] = all(
            run["test_acc"] >= SPEEDRUN_ACCURACY and run["seconds"] <= SPEEDRUN_OVER_ANCHOR * anchor
            for run in content["speedrun"]
        )
    return met


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    args = parser.parse_args(argv)
    tests = None if args.skip_tests else cuda_tests()
    if not torch.cuda.is_available():
        print(
            "no CUDA device here: the cuda tests skipped (above), and so do the GPU benchmarks; nothing written"
        )
        return
    content = {"machine": machine(), "device": torch.cuda.get_device_name(), "cuda_tests": tests,
               "speedrun": [], "anchor": [], "epochs": [], "targets": {}}  # fmt: skip
    out_dir = Path(args.out_dir)

    def keep(section: str, row: dict[str, Any]) -> Path:
        """Add a measurement and rewrite the file: a check cut short keeps what it measured."""
        content[section].append(row)
        content["targets"] = targets(content)
        return write_result("gpu", content, out_dir)

    for seed in SPEEDRUN_SEEDS:
        run = run_experiment("speedrun", seed, ["trainer.device=cuda"])
        keep("speedrun", {k: run[k] for k in ("seed", "seconds", "test_acc", "compile_seconds")})
    bare, anchor = baselines(read_idx(PROJECT_ROOT / "data"))
    keep("epochs", bare)
    for run in anchor:
        keep("anchor", run)
    keep("epochs", floor())
    for name, overrides in VARIANTS.items():
        path = keep("epochs", epoch(name, overrides))
    epochs = {row["setting"]: row["epoch_s"] for row in content["epochs"]}
    speedrun, slowest_anchor = content["speedrun"], max(r["seconds"] for r in anchor)
    slowest = max(r["seconds"] for r in speedrun)
    print(f"\n{content['device']}: LeNet-5 epoch fp32 {epochs['fp32']:.3f} s, bf16 {epochs['bf16']:.3f} s "
          f"(floor {epochs['floor']:.3f} s; bare loop {epochs['bare loop']:.3f} s: "
          f"{epochs['fp32'] / epochs['bare loop']:.2f}x); speedrun slowest seed {slowest:.2f} s "
          f"({slowest / slowest_anchor:.2f}x the anchor's {slowest_anchor:.2f} s), "
          f"lowest accuracy {min(r['test_acc'] for r in speedrun):.2%}")  # fmt: skip
    for target, met in content["targets"].items():
        print(f"  {target}: {'met' if met else 'NOT met'}")
    if tests is not None:
        print(f"  cuda tests: {tests['summary']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
