"""End to end, in real processes: a full disk while a run saves its checkpoint (a real tmpfs filled to the
brim, or the OS's file-size limit) ends in one line, exit status 1, and the previous last.pt intact; a run
resumed into another directory ends with a tested best model and metrics.json, whatever was left to train."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_lab.config import PROJECT_ROOT
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 16  # the tiny set: 500 training images in batches of 32


def train(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`python train.py <args>`; with `limit_bytes`, under that file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored
    so that a write past it fails with EFBIG instead of killing the process)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, str(PROJECT_ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=300, preexec_fn=limit if limit_bytes else None)  # fmt: skip


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill the file system of `disk` but for `leave_bytes`."""
    free = shutil.disk_usage(disk).free
    with (disk / "filler").open("wb") as file:
        file.truncate(0)
        file.write(b"\0" * max(free - leave_bytes, 0))


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A real 4 MB tmpfs (mounting needs root; where it is refused, the test says so and skips)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the file-size limit case runs"
        )
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    """A 2-epoch run stopped by trainer.max_steps after its first epoch (copied by each test that uses it)."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    done = train(*tiny_overrides(tiny_mnist), f"trainer.max_steps={STEPS_PER_EPOCH}", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def copy_run(stopped: Path, run: Path) -> dict[str, bytes]:
    """A copy of the stopped run at `run`; its checkpoints' bytes."""
    shutil.copytree(stopped, run)
    return {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}


def assert_one_line_and_last_pt_intact(done: subprocess.CompletedProcess, run: Path, saved: dict[str, bytes],
                                       reason: str) -> None:  # fmt: skip
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1, output
    assert f"could not write checkpoint {run}/checkpoints/last.pt: {reason}" in errors[0], errors[0]
    assert (
        f"{run}/checkpoints/last.pt is intact; when there is room again, resume with: python train.py"
        in errors[0]
    )
    assert "Traceback" not in output and "inline_container" not in output, output
    assert {
        p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()
    } == saved  # no temporary file either
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_a_full_disk_while_saving_last_pt_is_one_line_and_keeps_the_previous_one(
    small_disk: Path, stopped: Path, tiny_mnist: Path
) -> None:
    run = small_disk / "run"
    saved = copy_run(stopped, run)
    fill(small_disk, leave_bytes=200_000)  # room for the logs and status.json, not for a 780 kB checkpoint
    done = train(*tiny_overrides(tiny_mnist), "resume=auto", f"hydra.run.dir={run}")
    assert_one_line_and_last_pt_intact(done, run, saved, "no space left on device")
    os.remove(small_disk / "filler")  # room again: the command the line gave finishes the run
    command = next(
        line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.startswith("error:")
    )
    resume = command.split("resume with: python train.py ")[1].split()
    finished = train(*resume, f"hydra.run.dir={run}")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_a_file_size_limit_while_saving_last_pt_is_one_line_and_keeps_the_previous_one(
    tmp_path: Path, stopped: Path, tiny_mnist: Path
) -> None:
    run = tmp_path / "run"
    saved = copy_run(stopped, run)
    done = train(*tiny_overrides(tiny_mnist), "resume=auto", f"hydra.run.dir={run}", limit_bytes=600_000)
    assert_one_line_and_last_pt_intact(done, run, saved, "file too large")


@pytest.mark.long
def test_resuming_into_another_directory_ends_with_a_tested_best_model(
    tmp_path: Path, stopped: Path, tiny_mnist: Path
) -> None:
    first = tmp_path / "first"
    copy_run(stopped, first)
    # Mid-run, into a new directory: best.pt of epoch 1 comes along, epoch 2 trains, the best is tested.
    done = train(*tiny_overrides(tiny_mnist), f"resume={first}", f"hydra.run.dir={tmp_path / 'second'}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        f"resuming from {first}/checkpoints/last.pt after {STEPS_PER_EPOCH} steps (1 whole epochs)"
        in done.stdout
    )
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert second["epochs"] == 2 and second["best_epoch"] in (1, 2) and 0 < second["test_acc"] <= 1
    # A finished run, into a third directory: nothing left to train, said in one line; tested again, the same.
    done = train(
        *tiny_overrides(tiny_mnist), f"resume={tmp_path / 'second'}", f"hydra.run.dir={tmp_path / 'third'}"
    )
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert "all 2 epochs are trained, nothing left to train: testing its best weights" in done.stdout
    third = json.loads((tmp_path / "third" / "metrics.json").read_text())
    assert (third["test_acc"], third["best_epoch"]) == (second["test_acc"], second["best_epoch"])
    assert sorted(p.name for p in (tmp_path / "third" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert json.loads((tmp_path / "third" / "status.json").read_text())["status"] == "completed"


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    """`python <name> <args>` as a user runs it."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / name), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.long
def test_on_a_full_disk_export_evaluate_and_report_name_the_file_and_keep_the_one_there(
    small_disk: Path, stopped: Path
) -> None:
    run = small_disk / "run"
    copy_run(stopped, run)
    ckpt = f"ckpt={run}/checkpoints/last.pt"
    commands = {
        small_disk / "model.onnx": ("export.py", ckpt, "format=onnx", f"out={small_disk / 'model.onnx'}"),
        small_disk / "model.pt": ("export.py", ckpt, "format=torchscript", f"out={small_disk / 'model.pt'}"),
        small_disk / "cm.png": ("evaluate.py", ckpt, f"out={small_disk / 'cm.png'}"),
        small_disk / "leaderboard.md": ("report.py", str(small_disk)),
    }
    for path in commands:  # what an earlier command wrote there
        path.write_bytes(f"the {path.name} a user keeps".encode())
    before = {p: p.read_bytes() for p in small_disk.iterdir() if p.is_file()}
    fill(small_disk, leave_bytes=0)
    for path, command in commands.items():
        done = script(*command)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert (done.returncode, len(errors)) == (1, 1), done.stdout + done.stderr
        assert f" {path}: no space left on device" in errors[0], errors[0]
        assert "Traceback" not in done.stdout + done.stderr
    assert {p: p.read_bytes() for p in small_disk.iterdir() if p.is_file() and p.name != "filler"} == before
