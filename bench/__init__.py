"""Benchmarks: throughput side by side with the classic pipeline, and time to accuracy. Each writes JSON."""

import platform
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.provenance import cpu_name, git_revision, versions
from mnist_lab.trainer.files import write_json

RESULTS = PROJECT_ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """The CPU, thread counts, code and library versions a measurement was taken with."""
    return {
        "cpu": cpu_name(),
        "logical_cpus": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        **versions(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        **git_revision(),
    }


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and every value of a list of per-round measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def write_result(name: str, content: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    """Write `content` as bench/results/<name>-<date>.json and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{datetime.now():%Y-%m-%d}.json"
    content = {
        "benchmark": name,
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        **content,
    }
    write_json(content, path)
    return path
