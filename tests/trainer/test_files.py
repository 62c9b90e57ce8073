"""trainer/files.py: the one atomic writer; a failed write names the file and leaves the previous one whole."""

import errno
import json
import os
import stat
from pathlib import Path
from unittest import mock

import pytest

from mnist_lab.trainer.files import WriteFailed, atomic_write, write_json


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json({"status": "running"}, path)
    with (
        mock.patch("os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device")),
        pytest.raises(WriteFailed, match=f"could not write file {path}: no space left on device") as failed,
    ):
        write_json({"status": "completed"}, path)
    assert failed.value.disk_full and failed.value.path == path
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_path_that_is_not_a_folder_is_the_users_mistake_not_a_full_disk(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(WriteFailed, match="could not write checkpoint .*a-file/last.pt") as failed:
        atomic_write(tmp_path / "a-file" / "last.pt", b"x", "checkpoint")
    assert not failed.value.disk_full


def test_files_get_the_mode_an_ordinary_write_gives_them(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "last.pt", b"x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"last.pt": 0o644, "plain.txt": 0o644}
