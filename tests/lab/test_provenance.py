"""lab/provenance.py: where a run's numbers came from (commit, dirty flag, versions, device, command)."""

import re
import sys
from pathlib import Path

import pytest
import torch

import mnist_lab.provenance
from mnist_lab.provenance import git_revision, provenance, versions


def test_the_commit_of_this_checkout_and_nothing_outside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = git_revision()
    assert re.fullmatch(r"[0-9a-f]{40}", revision["git_commit"]) and isinstance(revision["git_dirty"], bool)
    monkeypatch.setattr(mnist_lab.provenance, "PROJECT_ROOT", tmp_path)  # not a git checkout
    assert git_revision() == {"git_commit": None, "git_dirty": None}


def test_versions_device_and_command_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/somewhere/train.py", "seed=3"])
    origin = provenance(torch.device("cpu"))
    assert origin["command"] == "train.py seed=3" and origin["device_name"]
    assert origin["torch"] == torch.__version__ and origin["python"] == sys.version.split()[0]
    assert re.match(r"\d+\.\d+", versions()["torchvision"])  # read from its metadata, without importing it
