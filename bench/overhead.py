"""Per-run overhead: the wall time of a short run beyond its training epochs' own seconds, phase by phase.

    python -m bench.overhead [--repeats 3] [overrides ...]

Each repeat measures, one after the other:
  (0) the floor: `python -c "import torch, torch._dynamo, hydra, omegaconf; from torch.utils.tensorboard import
      SummaryWriter"`, the imports no run can avoid (torch.optim pulls in torch._dynamo); the target is an
      overhead of at most the floor + 1.0 s;
  (1) `python train.py trainer.epochs=1 <overrides>` as a user runs it: wall time from the outside, minus
      metrics.json's `train_seconds` (compile warm-up, if any, counts as overhead);
  (2) the same run in a fresh interpreter that times its phases: interpreter start and exit, imports, config, data
      (reading and checking the files), build (batches, model, optimizer), training (the epochs' own
      seconds), evaluation (validation and test passes), TensorBoard (figures, texts, graph, histograms)
      and the rest of the end of the run (checkpoints, metrics.json);
  (3) `python evaluate.py ckpt=<that run>` and `python predict.py ckpt=<that run> images=<one digit>`.
Prints a table and writes bench/results/overhead-<date>.json (medians, min, max, every repeat).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, machine, spread, write_result
from mnist_lab.config import PROJECT_ROOT

# The child interpreter of (2): times each phase of a run's own path (mnist_lab.pipeline.train) by wrapping the functions it calls.
PHASES_CHILD = r"""
import json, sys, time
start = time.perf_counter()
from pathlib import Path
import mnist_lab.build, mnist_lab.pipeline, mnist_lab.trainer.loop, mnist_lab.trainer.tensorboard
from mnist_lab.config import compose
seconds = {"imports": time.perf_counter() - start}

def timed(module, name, key):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - began
    setattr(module, name, wrapper)

timed(mnist_lab.build, "read_data", "data")
timed(mnist_lab.pipeline, "build", "build_total")
timed(mnist_lab.trainer.loop, "predict", "predict")  # validation each epoch, and the test set once
for name in ("start", "hparams", "step_losses", "epoch", "histograms", "close"):
    timed(mnist_lab.trainer.tensorboard.RunLog, name, "tensorboard")
timed(mnist_lab.trainer.tensorboard.RunLog, "test", "tensorboard_test")
began = time.perf_counter()
cfg = compose(*sys.argv[2:])
seconds["config"] = time.perf_counter() - began
began = time.perf_counter()
metrics = mnist_lab.pipeline.train(cfg, Path(sys.argv[1]))
seconds["run_total"] = time.perf_counter() - began
seconds["training"] = metrics["train_seconds"]
seconds["all"] = time.perf_counter() - start
print(json.dumps(seconds))
"""


def wall(command: list[str]) -> float:
    """Seconds `command` takes, from the outside; it must succeed."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def phases(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """(2): the phases of one run in a fresh interpreter, grouped as the issue asks."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PHASES_CHILD, str(run_dir), *overrides], cwd=PROJECT_ROOT,
                          capture_output=True, text=True)  # fmt: skip
    outside = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    s = json.loads(done.stdout.strip().splitlines()[-1])
    build = s["build_total"] - s["data"]
    tensorboard = s.get("tensorboard", 0.0) + s["tensorboard_test"]
    evaluation = s["predict"]
    rest = s["run_total"] - s["build_total"] - s["training"] - evaluation - tensorboard
    return {
        "interpreter start and exit": outside - s["all"],
        "imports": s["imports"],
        "config": s["config"],
        "data": s["data"],
        "build": build,
        "training": s["training"],
        "evaluation (validation and test passes)": evaluation,
        "TensorBoard (figures, texts, graph, histograms)": tensorboard,
        "the rest (model summary, checkpoints, best weights, metrics.json)": rest,
        "wall": outside,
        "overhead": outside - s["training"],
    }


FLOOR = "import torch, torch._dynamo, hydra, omegaconf; from torch.utils.tensorboard import SummaryWriter"
TARGET_ABOVE_FLOOR = 1.0


def one_repeat(workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """(0) to (3) once."""
    floor = wall([sys.executable, "-c", FLOOR])
    run_dir = workdir / "run"
    command = [sys.executable, "train.py", "trainer.epochs=1", *overrides, f"hydra.run.dir={run_dir}"]
    train_wall = wall(command)
    train_seconds = json.loads((run_dir / "metrics.json").read_text())["train_seconds"]
    split = phases(workdir / "phases", ["trainer.epochs=1", *overrides])
    digit = workdir / "digit.png"
    if not digit.exists():
        from PIL import Image

        from mnist_lab.data.sources import read_idx

        Image.fromarray(read_idx(PROJECT_ROOT / "data").test_images[0].numpy()).save(digit)
    return {
        "floor": floor,
        "train.py": {
            "wall": train_wall,
            "train_seconds": train_seconds,
            "overhead": train_wall - train_seconds,
        },
        "phases": split,
        "evaluate.py": wall([sys.executable, "evaluate.py", f"ckpt={run_dir}", f"out={workdir / 'cm.png'}"]),
        "predict.py": wall([sys.executable, "predict.py", f"ckpt={run_dir}", f"images={digit}"]),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", help="config overrides for the run, e.g. model=lenet_res")
    args = parser.parse_args(argv)
    repeats = []
    for repeat in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            repeats.append(one_repeat(Path(tmp), args.overrides))
        r = repeats[-1]
        print(f"repeat {repeat}/{args.repeats}: train.py overhead {r['train.py']['overhead']:.2f} s "
              f"(floor {r['floor']:.2f} s), "
              f"evaluate.py {r['evaluate.py']:.2f} s, predict.py {r['predict.py']:.2f} s", flush=True)  # fmt: skip
    content = {
        "machine": machine(),
        "overrides": ["trainer.epochs=1", *args.overrides],
        "floor": spread([r["floor"] for r in repeats]),
        "train.py overhead": spread([r["train.py"]["overhead"] for r in repeats]),
        "train.py wall": spread([r["train.py"]["wall"] for r in repeats]),
        "evaluate.py wall": spread([r["evaluate.py"] for r in repeats]),
        "predict.py wall": spread([r["predict.py"] for r in repeats]),
        "phases": {key: spread([r["phases"][key] for r in repeats]) for key in repeats[0]["phases"]},
    }
    content["target"] = content["floor"]["median"] + TARGET_ABOVE_FLOOR
    content["target met"] = content["train.py overhead"]["median"] <= content["target"]
    path = write_result("overhead", content, Path(args.out_dir))
    print("\n| phase | median s | min | max |\n|---|---:|---:|---:|")
    for key, value in content["phases"].items():
        print(f"| {key} | {value['median']:.2f} | {value['min']:.2f} | {value['max']:.2f} |")
    for key in ("floor", "train.py overhead", "train.py wall", "evaluate.py wall", "predict.py wall"):
        value = content[key]
        print(f"| **{key}** | {value['median']:.2f} | {value['min']:.2f} | {value['max']:.2f} |")
    print(
        f"\ntrain.py overhead {content['train.py overhead']['median']:.2f} s, target (floor + "
        f"{TARGET_ABOVE_FLOOR:.1f} s) {content['target']:.2f} s: {'met' if content['target met'] else 'NOT met'}"
    )
    print(f"medians of {args.repeats} repeats; written to {path}")


if __name__ == "__main__":
    main()
