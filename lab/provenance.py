"""Where a run's numbers came from: the git commit (and whether the tree was dirty), library versions, the
device's name and the command line. metrics.json, TensorBoard and the benchmarks' JSON all take it from here."""

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mnist_lab.config import PROJECT_ROOT


def git_revision() -> dict[str, Any]:
    """The project's git commit and whether the tree had uncommitted changes (None outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_name()


def versions() -> dict[str, str]:
    """Python, torch and torchvision versions (torchvision's from its package metadata: importing it would
    cost a run 1.5 s, and no run uses it)."""
    try:
        torchvision = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        torchvision = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision}


def provenance(device: torch.device) -> dict[str, Any]:
    """Code version, library versions, device and command line of this process."""
    return {
        **git_revision(),
        **versions(),
        "device_name": device_name(device),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
