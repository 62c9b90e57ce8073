"""Benchmarks: throughput side by side with the classic pipeline, and time to accuracy. Each writes JSON."""

import json
import platform
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "bench" / "results"


def compose_config(*overrides: str) -> DictConfig:
    """configs/config.yaml with `overrides`, as train.py would see them."""
    import train  # noqa: F401  (registers the ${project_root:} resolver)

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def machine() -> dict[str, Any]:
    """The CPU, thread counts and library versions a measurement was taken with."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if cpuinfo.exists()
        else []
    )
    cpu = names[0] if names else platform.processor()
    return {
        "cpu": cpu,
        "logical_cpus": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and every value of a list of per-round measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def write_json(name: str, content: dict[str, Any], out_dir: Path = RESULTS) -> Path:
    """Write `content` as bench/results/<name>-<date>.json and return the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{datetime.now():%Y-%m-%d}.json"
    content = {
        "benchmark": name,
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        **content,
    }
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path
