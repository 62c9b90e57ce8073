"""Time to accuracy: wall seconds and epochs until the official test accuracy first reaches a target.

For each model and seeds 0, 1, 2, trains with the default configs (lab.build's `build` and
`train_one_epoch`), evaluates the official test set after every epoch, and records when it first
reaches the target (99.0% for LeNet-5 and LeNetRes, 98.3% for the ResBlock MLP) and the accuracy after
the default epoch count. Seconds are training time only: the extra test evaluations are not counted.

    python -m bench.time_to_accuracy [--models lenet lenet_res resmlp] [--seeds 0 1 2]

With `--experiment speedrun` it times a whole recipe instead, as `python train.py experiment=speedrun
seed=S` runs it (mnist_lab.pipeline.train, seeds 0-4 by default): training seconds with any compile warm-up, the
official test accuracy at the end, their median and interquartile range, mean and std.

Writes bench/results/time_to_accuracy-<date>.json (time_to_accuracy-<experiment>-<date>.json) and a PNG
of test accuracy against seconds beside it.
"""

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from bench import RESULTS, machine, write_result  # noqa: E402
from mnist_lab.build import build  # noqa: E402
from mnist_lab.config import compose  # noqa: E402
from mnist_lab.pipeline import train  # noqa: E402
from mnist_lab.trainer.evaluation import evaluate  # noqa: E402
from mnist_lab.trainer.loop import train_one_epoch  # noqa: E402

TARGETS = {"lenet": 0.990, "lenet_res": 0.990, "resmlp": 0.983}


def run_one(model: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Train one model with one seed; return its test-accuracy curve and when it reached its target."""
    cfg = compose(f"model={model}", f"seed={seed}", *overrides)
    setup = build(cfg)
    state = setup.state
    seconds, curve = 0.0, []
    for epoch in range(1, cfg.trainer.epochs + 1):
        stats = train_one_epoch(
            state.model,
            state.train_batches,
            state.optimizer,
            state.scheduler,
            criterion=state.criterion,
            precision=state.precision,
        )
        seconds += stats.seconds
        test = evaluate(state.model, setup.test_batches, amp_dtype=state.precision.dtype)
        curve.append(
            {
                "epoch": epoch,
                "seconds": seconds,
                "test_acc": test.accuracy,
                "images_per_second": stats.images_per_second,
            }
        )
        print(
            f"{model:9s} seed {seed}  epoch {epoch:2d}  {seconds:6.1f} s  test accuracy {test.accuracy:.2%}",
            flush=True,
        )
    hit = next((point for point in curve if point["test_acc"] >= TARGETS[model]), None)
    return {
        "model": model,
        "seed": seed,
        "target": TARGETS[model],
        "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["seconds"] if hit else None,
        "epochs": cfg.trainer.epochs,
        "final_test_acc": curve[-1]["test_acc"] if curve else None,
        "train_seconds": seconds,
        "curve": curve,
    }


def run_experiment(experiment: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """`python train.py experiment=<experiment> seed=<seed>`, in-process, in a scratch run directory."""
    cfg = compose(f"experiment={experiment}", f"seed={seed}", *overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(cfg, Path(run_dir))
    seconds = metrics["train_seconds"] + (metrics["compile_seconds"] or 0.0)
    print(f"{experiment} seed {seed}  {seconds:5.2f} s  test accuracy {metrics['test_acc']:.2%}", flush=True)
    return {"experiment": experiment, "seed": seed, "seconds": seconds, "test_acc": metrics["test_acc"],
            "compile_seconds": metrics["compile_seconds"], "epochs": metrics["epochs"],
            "images_per_second": metrics["images_per_second"], "history": metrics["history"]}  # fmt: skip


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and interquartile range of the seconds, mean and std of the test accuracy, over the seeds."""
    seconds, accuracy = [r["seconds"] for r in runs], [r["test_acc"] for r in runs]
    q1, _, q3 = statistics.quantiles(seconds, n=4) if len(runs) > 1 else (seconds[0],) * 3
    return {
        "seconds_median": statistics.median(seconds),
        "seconds_iqr": [q1, q3],
        "test_acc_mean": statistics.mean(accuracy),
        "test_acc_std": statistics.stdev(accuracy) if len(runs) > 1 else 0.0,
        "test_acc_min": min(accuracy),
        "all_reached_99": min(accuracy) >= 0.99,
    }


def plot_experiment(runs: list[dict[str, Any]], path: Path) -> None:
    """Each seed's test accuracy against its training seconds, the 99% line dashed."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.scatter([r["seconds"] for r in runs], [100 * r["test_acc"] for r in runs])
    for run in runs:
        ax.annotate(f"seed {run['seed']}", (run["seconds"], 100 * run["test_acc"]), fontsize=8)
    ax.axhline(99.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="training seconds (compile warm-up included)", ylabel="official test accuracy (%)")
    ax.set_title(f"experiment={runs[0]['experiment']}")
    ax.grid(alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy against training seconds, one line per run, a colour per model, targets dashed."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = dict(zip(TARGETS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for run in runs:
        xs = [0.0] + [p["seconds"] for p in run["curve"]]
        ys = [None] + [100 * p["test_acc"] for p in run["curve"]]
        label = f"{run['model']} (seeds)" if run["seed"] == min(r["seed"] for r in runs) else None
        ax.plot(xs[1:], ys[1:], marker="o", markersize=3, color=colours[run["model"]], alpha=0.8, label=label)
    for model in sorted({run["model"] for run in runs}):
        ax.axhline(100 * TARGETS[model], color=colours[model], linestyle="--", linewidth=0.8)
    ax.set(
        xlabel="training seconds (evaluation excluded)", ylabel="official test accuracy (%)", ylim=(96, 100)
    )
    ax.set_title("Time to accuracy, default configs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2, or 0-4 with --experiment")
    parser.add_argument("--experiment", help="time this whole recipe (configs/experiment/) instead")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch on 512 images, seed 0: checks that it runs"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.compile=true")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    args.seeds = args.seeds or ([0, 1, 2, 3, 4] if args.experiment else [0, 1, 2])
    if args.smoke:
        overrides += ["trainer.epochs=1", "data.train_subset=512"]
        args.seeds = args.seeds[:1]
    if args.experiment:
        return main_experiment(args.experiment, args.seeds, overrides, Path(args.out_dir))
    runs = [run_one(model, seed, overrides) for model in args.models for seed in args.seeds]
    path = write_result(
        "time_to_accuracy", {"machine": machine(), "overrides": overrides, "runs": runs}, Path(args.out_dir)
    )
    plot(runs, path.with_suffix(".png"))
    print(
        "\n| model | seed | epochs to target | seconds to target | test acc after all epochs | seconds, all epochs |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        epochs = run["epochs_to_target"] or f"not in {run['epochs']}"
        seconds = f"{run['seconds_to_target']:.1f}" if run["seconds_to_target"] else "-"
        print(
            f"| {run['model']} (≥{run['target']:.1%}) | {run['seed']} | {epochs} | {seconds} | {run['final_test_acc']:.2%} | {run['train_seconds']:.1f} |"
        )
    print(f"\nwritten to {path} and {path.with_suffix('.png')}")


def main_experiment(experiment: str, seeds: list[int], overrides: list[str], out_dir: Path) -> None:
    """Time `experiment` over `seeds`; print, write JSON and the plot."""
    runs = [run_experiment(experiment, seed, overrides) for seed in seeds]
    summary = summarize(runs)
    content = {"machine": machine(), "experiment": experiment, "overrides": overrides, "summary": summary,
               "runs": runs}  # fmt: skip
    path = write_result(f"time_to_accuracy-{experiment}", content, out_dir)
    plot_experiment(runs, path.with_suffix(".png"))
    q1, q3 = summary["seconds_iqr"]
    print(
        f"\nexperiment={experiment}, seeds {seeds}: {summary['seconds_median']:.2f} s median "
        f"(IQR {q1:.2f}-{q3:.2f}), test accuracy {summary['test_acc_mean']:.2%} ± {summary['test_acc_std']:.2%} "
        f"(lowest {summary['test_acc_min']:.2%})\nwritten to {path} and {path.with_suffix('.png')}"
    )


if __name__ == "__main__":
    main()
