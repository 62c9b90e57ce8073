"""trainer/checkpoint.py: checkpoints written atomically and read with weights_only; every file that is not a
checkpoint of this project is refused with one line that names it and says what it is instead."""

import errno
import io
import os
import pickle
import zipfile
from pathlib import Path
from unittest import mock

import pytest
import torch
from PIL import Image

from mnist_lab.models import LeNet, ResBlockMLP
from mnist_lab.trainer.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint


def test_checkpoint_is_atomic_and_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"model": LeNet().state_dict(), "config": {}, "epoch": 1}, path)
    original = path.read_bytes()
    with (
        mock.patch("os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device")),
        pytest.raises(OSError, match=f"could not write checkpoint {path}: no space left on device"),
    ):
        save_checkpoint({"model": LeNet().state_dict(), "config": {}, "epoch": 2}, path)
    assert path.read_bytes() == original
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["epoch"] == 1


class Payload:
    """What a hostile checkpoint holds: unpickling it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def hostile(path: Path, marker: Path) -> None:
    torch.save({"model": Payload(marker), "config": {}}, path)


def truncated(path: Path, marker: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"model": LeNet().state_dict(), "config": {}}, buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path, marker: path.write_text("hello, not a checkpoint\n"), "not a checkpoint: it is a text file"),
        (lambda path, marker: path.write_bytes(b""), "not a checkpoint: it is an empty file"),
        (lambda path, marker: path.write_text('{"model": 1}'), "not a checkpoint: it is a JSON file"),
        (lambda path, marker: Image.new("L", (28, 28)).save(path, format="PNG"), "not a checkpoint: it is a PNG image"),
        (lambda path, marker: zipfile.ZipFile(path, "w").writestr("notes.txt", "hi"), "it is a zip archive that torch.save did not write (it holds notes.txt)"),
        (lambda path, marker: path.write_bytes(pickle.dumps({"model": 1})), "not a checkpoint: it is a plain pickle"),
        (lambda path, marker: path.write_bytes(pickle.dumps({"model": 1})[:-3]), "truncated: a pickle that ends before its end mark"),
        (lambda path, marker: path.write_bytes(bytes(range(256))), "not a checkpoint: not a file torch.save wrote"),
        (truncated, "truncated or damaged"),
        (lambda path, marker: torch.save({"weights": torch.ones(2)}, path), "not a checkpoint of this project: no model, config (it holds weights)"),
        (lambda path, marker: torch.save([1, 2], path), "not a checkpoint: it holds a list"),
        (hostile, "refused: it holds objects a checkpoint never holds (posix.system)"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(make, says: str, tmp_path: Path) -> None:  # noqa: ANN001
    path, marker = tmp_path / "model.pt", tmp_path / "payload-ran"
    make(path, marker)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message, message
    assert (
        "\n" not in message and "weights_only=False" not in message
    )  # never the advice that runs the payload
    assert not marker.exists()


def test_weights_of_another_model_are_refused_naming_both_shapes(tmp_path: Path) -> None:
    pattern = (
        r"x.pt: made by another model: \S+ is \[6, 1, 5, 5\] in the checkpoint, \[6, 3, 5, 5\] in LeNet$"
    )
    with pytest.raises(CheckpointError, match=pattern):
        load_weights(LeNet(in_channels=3), LeNet().state_dict(), tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="made by another model: missing .* for ResBlockMLP"):
        load_weights(ResBlockMLP(), LeNet().state_dict(), tmp_path / "x.pt")
