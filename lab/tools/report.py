"""report.py's work: a leaderboard of every configuration in a sweep (or outputs) directory, seeds grouped.

Reads each run's .hydra/overrides.yaml, status.json and metrics.json below the directory; a configuration
is a set of overrides without the seed. Prints the leaderboard as a Markdown table and writes, beside the
runs, leaderboard.md, leaderboard.csv, val_acc_per_epoch.png, test_acc_vs_params.png and test_error.png.
"""

import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mnist_lab.errors import NotFound, UserError
from mnist_lab.overrides import defining_overrides, override_key  # noqa: E402
from mnist_lab.status import read_status  # noqa: E402
from mnist_lab.trainer.files import atomic_write  # noqa: E402

log = logging.getLogger(__name__)
REQUIRED_METRICS = {"model", "parameters", "epochs", "test_acc", "train_seconds"}


@dataclass
class SweepRun:
    """One run directory: what it trained (its overrides) and how it ended."""

    path: Path
    overrides: list[str]
    status: str
    metrics: dict[str, Any] | None


@dataclass
class Row:
    """One configuration of the leaderboard: its runs over seeds."""

    name: str
    runs: list[SweepRun] = field(default_factory=list)

    @property
    def completed(self) -> list[dict[str, Any]]:
        return [r.metrics for r in self.runs if r.status == "completed" and r.metrics]

    @property
    def failed(self) -> int:
        return sum(r.status not in ("completed", "pruned") for r in self.runs)

    def values(self, key: str) -> list[float]:
        """`key` of every completed run that has it (best_val_acc is None for runs without validation)."""
        return [m[key] for m in self.completed if m.get(key) is not None]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None

    def weakest_class(self) -> tuple[str, float] | None:
        """The class (by its dataset's name) with the lowest test accuracy, mean over seeds; None if unknown."""
        per_run = [m["test_class_acc"] for m in self.completed if m.get("test_class_acc")]
        if not per_run:
            return None
        means = {name: statistics.fmean(r[name] for r in per_run) for name in per_run[0]}
        name = min(means, key=means.__getitem__)
        return name, means[name]

    def seconds_per_epoch(self) -> float | None:
        values = [m["train_seconds"] / m["epochs"] for m in self.completed if m["epochs"]]
        return statistics.fmean(values) if values else None


def find_runs(directory: Path) -> list[SweepRun]:
    """Every run directory below `directory` (those Hydra wrote .hydra/overrides.yaml into)."""
    runs = []
    for saved in sorted(directory.rglob(".hydra/overrides.yaml")):
        path = saved.parent.parent
        try:
            overrides = [str(o) for o in OmegaConf.load(saved)]
        except Exception as error:  # noqa: BLE001 (YAML's and OmegaConf's errors alike: a damaged file)
            log.warning(
                f"warning: {saved}: unreadable ({type(error).__name__}); run left out of the leaderboard"
            )
            continue
        status = read_status(path)
        metrics = read_metrics(path / "metrics.json")
        state = status["status"] if status else ("completed" if metrics else "unknown")
        runs.append(SweepRun(path, defining_overrides(overrides), state, metrics))
    return runs


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A run's metrics.json; None if it has none, or (with a warning naming it) one that cannot be read."""
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict) or not metrics.keys() >= REQUIRED_METRICS:
            raise UserError(f"not the metrics of a run (needs {', '.join(sorted(REQUIRED_METRICS))})")
        return metrics
    except (OSError, ValueError) as error:
        log.warning(f"warning: {path}: unreadable ({error}); left out of the leaderboard")
        return None


def _readable(override: str) -> str:
    """`+experiment@_global_=best_lenet` -> `experiment=best_lenet`."""
    return f"{override_key(override).split('@')[0]}={override.split('=', 1)[1]}"


def group(runs: list[SweepRun]) -> tuple[list[Row], list[str]]:
    """Rows of runs that differ only in their seed, and the overrides every run shares (left out of names)."""
    without_seed = [[o for o in r.overrides if override_key(o) != "seed"] for r in runs]
    shared = set.intersection(*(set(o) for o in without_seed)) if runs else set()
    rows: dict[str, Row] = {}
    for run, overrides in zip(runs, without_seed, strict=True):
        name = " ".join(_readable(o) for o in overrides if o not in shared) or "defaults"
        rows.setdefault(name, Row(name)).runs.append(run)
    ranked = sorted(rows.values(), key=lambda row: -(row.mean("test_acc") or -1.0))
    return ranked, sorted(_readable(o) for o in shared)


COLUMNS = ["configuration", "model", "parameters", "seeds", "test acc. mean", "test acc. std",
           "best val. acc. mean", "weakest class (test)", "s / epoch", "failed"]  # fmt: skip


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The leaderboard's cells, formatted."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    cells = []
    for row in rows:
        done, weakest = row.completed, row.weakest_class()
        cells.append([
            row.name,
            done[0]["model"] if done else "-",
            f"{done[0]['parameters']:,}" if done else "-",
            str(len(done)),
            pct(row.mean("test_acc")),
            pct(row.std("test_acc")),
            pct(row.mean("best_val_acc")),
            "-" if weakest is None else f"{weakest[0]} {weakest[1]:.2%}",
            "-" if row.seconds_per_epoch() is None else f"{row.seconds_per_epoch():.1f}",
            str(row.failed),
        ])  # fmt: skip
    return cells


def markdown(rows: list[Row], shared: list[str]) -> str:
    """The leaderboard as a Markdown table, with the overrides all runs share above it."""
    lines = [f"All runs: {' '.join(shared)}", ""] if shared else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], path: Path) -> None:
    """Unformatted numbers, one row per configuration (written atomically)."""
    with io.StringIO(newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["configuration", "model", "parameters", "seeds", "test_acc_mean", "test_acc_std",
                         "best_val_acc_mean", "weakest_class", "weakest_class_acc", "seconds_per_epoch", "failed",
                         "run_dirs"])  # fmt: skip
        for row in rows:
            done, weakest = row.completed, row.weakest_class() or (None, None)
            writer.writerow([
                row.name, done[0]["model"] if done else "", done[0]["parameters"] if done else "", len(done),
                row.mean("test_acc"), row.std("test_acc"), row.mean("best_val_acc"), *weakest,
                row.seconds_per_epoch(), row.failed, " ".join(str(r.path) for r in row.runs),
            ])  # fmt: skip
        atomic_write(path, file.getvalue().encode(), "leaderboard")


def save(fig: Figure, ax: Axes, path: Path) -> None:
    """Write a plot to `path` atomically (with its legend, if it has labelled lines) and free it."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write(path, buffer.getvalue(), "plot")


def plot_curves(rows: list[Row], path: Path) -> None:
    """Validation accuracy per epoch, the mean over seeds, one line per configuration."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for row in rows:
        histories = [m["history"] for m in row.completed if m.get("history") and "val/acc" in m["history"][0]]
        if not histories:
            continue
        epochs = min(len(h) for h in histories)
        mean = [statistics.fmean(h[e]["val/acc"] for h in histories) * 100 for e in range(epochs)]
        ax.plot(
            range(1, epochs + 1), mean, marker="o", markersize=3, label=f"{row.name} (n={len(histories)})"
        )
    ax.set(
        xlabel="epoch",
        ylabel="validation accuracy (%)",
        title="Validation accuracy per epoch (mean over seeds)",
    )
    ax.grid(alpha=0.3)
    save(fig, ax, path)


def plot_size(rows: list[Row], path: Path) -> None:
    """Test accuracy against parameter count, mean and standard deviation over seeds."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for row in rows:
        done = row.completed
        if not done:
            continue
        ax.errorbar(done[0]["parameters"], row.mean("test_acc") * 100, yerr=(row.std("test_acc") or 0) * 100,
                    fmt="o", capsize=4, label=row.name)  # fmt: skip
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="test accuracy (%)", title="Test accuracy against model size")
    ax.grid(alpha=0.3, which="both")
    save(fig, ax, path)


def plot_errors(rows: list[Row], path: Path) -> None:
    """Test error (%) of each configuration: the mean over seeds as a bar, the standard deviation as its
    error bar, every seed as a dot (the frontier table's figure)."""
    done = [row for row in rows if row.completed]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(len(done), 1)), dpi=110)
    for y, row in enumerate(done):
        errors = [(1 - a) * 100 for a in row.values("test_acc")]
        ax.barh(y, statistics.fmean(errors), xerr=(row.std("test_acc") or 0) * 100, capsize=4, alpha=0.6)
        ax.plot(errors, [y] * len(errors), "k.", markersize=5)
    ax.set_yticks(range(len(done)), [row.name for row in done], fontsize=7)
    ax.set(xlabel="test error (%)", title="Test error: mean and std over seeds (dots: each seed)")
    ax.grid(alpha=0.3, axis="x")
    save(fig, ax, path)


def report(directory: Path) -> str:
    """Write the leaderboard files and plots into `directory`; return the Markdown table and what was written."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    runs = find_runs(directory)
    if not runs:
        raise NotFound(f"no runs below {directory} (no .hydra/overrides.yaml)")
    rows, shared = group(runs)
    text = markdown(rows, shared)
    atomic_write(directory / "leaderboard.md", text.encode(), "leaderboard")
    write_csv(rows, directory / "leaderboard.csv")
    plot_curves(rows, directory / "val_acc_per_epoch.png")
    plot_size(rows, directory / "test_acc_vs_params.png")
    plot_errors(rows, directory / "test_error.png")
    return (
        f"{text}\nwrote {directory / 'leaderboard.md'}, leaderboard.csv, val_acc_per_epoch.png, "
        "test_acc_vs_params.png, test_error.png"
    )
