"""trainer/checkpoint.py: the one atomic writer, and checkpoints read with weights_only."""

import json
from pathlib import Path
from unittest import mock

import pytest

from models import LeNet
from trainer.checkpoint import load_checkpoint, save_checkpoint, write_json


def test_checkpoint_is_atomic_and_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"model": LeNet().state_dict(), "epoch": 1}, path)
    original = path.read_bytes()
    with (
        mock.patch("torch.save", side_effect=OSError(28, "No space left on device")),
        pytest.raises(OSError, match=f"could not write checkpoint {path}: No space left"),
    ):
        save_checkpoint({"model": LeNet().state_dict(), "epoch": 2}, path)
    assert path.read_bytes() == original
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["epoch"] == 1


def test_json_goes_through_the_same_atomic_writer(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json({"status": "running"}, path)
    with (
        mock.patch("json.dumps", side_effect=OSError(28, "No space left on device")),
        pytest.raises(OSError, match=f"could not write file {path}: No space left"),
    ):
        write_json({"status": "completed"}, path)
    assert json.loads(path.read_text()) == {"status": "running"}  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
