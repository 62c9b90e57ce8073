"""A run directory is one process's at a time and never takes over another run's files: the lock with real
processes (one killed, one training), the refusals and what they leave."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_lab.ownership import DirectoryTaken, claim, owned, release
from mnist_lab.sweep.callbacks import CheckOutputDir
from tests.conftest import rest_of_output, run_script, tiny_overrides


def holder(run_dir: Path) -> subprocess.Popen:
    """Another process that has claimed `run_dir` and holds it until killed (returned once it holds it)."""
    code = f"from mnist_lab.ownership import claim; from pathlib import Path; claim(Path({str(run_dir)!r}), None, 'dir'); print('held', flush=True); input()"  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"  # type: ignore[union-attr]
    return process


def test_a_directory_another_process_holds_is_refused_until_that_process_dies(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = holder(run)
    try:
        with pytest.raises(DirectoryTaken, match=f"dir={run} is in use by another run"):
            claim(run, None, "dir")
    finally:
        process.kill()  # SIGKILL: no clean-up of its own; the kernel drops its lock
        process.wait()
    with owned(run, None, "dir"):
        pass


def test_a_directory_with_a_finished_or_stopped_run_is_refused_unless_the_run_continues_it(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"saved")
    (run / "status.json").write_text(json.dumps({"status": "stopped"}))
    with pytest.raises(DirectoryTaken) as refused:
        claim(run, None, "hydra.run.dir")
    assert str(refused.value) == (
        f"hydra.run.dir={run} holds a stopped run (status.json, checkpoints/last.pt), which a new run would "
        "overwrite: continue it with resume=auto, or choose a new directory"
    )
    with pytest.raises(
        DirectoryTaken, match="holds a stopped run"
    ):  # resuming another run's checkpoint into it
        claim(run, str(tmp_path / "elsewhere.pt"), "hydra.run.dir")
    for resume in ("auto", str(run / "checkpoints" / "last.pt"), str(run)):
        assert claim(run, resume, "hydra.run.dir")
        assert not claim(run, resume, "hydra.run.dir")  # held by this process already: nothing to do
        release(run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"saved"


def test_a_sweep_directory_with_runs_is_refused_without_resume_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "status.json").write_text(json.dumps({"status": "completed"}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "resume_sweep": None})
    with pytest.raises(SystemExit) as ended:
        CheckOutputDir().on_multirun_start(config)
    assert ended.value.code == 2
    assert re.match(f"error: hydra.sweep.dir={tmp_path} holds a sweep's runs .* resume_sweep={tmp_path}",
                    capsys.readouterr().err)  # fmt: skip


@pytest.mark.slow
def test_two_train_py_on_one_directory_the_second_is_refused_and_changes_nothing(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "train.py", *tiny_overrides(tiny_mnist), f"hydra.run.dir={run}"]
    first = subprocess.Popen([*command, "trainer.epochs=500"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=Path(__file__).parents[2])  # fmt: skip
    try:
        for line in first.stdout:  # type: ignore[union-attr]
            if line.startswith("training:"):  # its config is written and the directory is its own
                break
        before = {p: p.read_bytes() for p in (run / ".hydra").iterdir()}
        for extra in ([], ["resume=auto"]):
            second = run_script("train.py", *tiny_overrides(tiny_mnist), f"hydra.run.dir={run}", *extra)
            errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
            assert second.returncode == 2 and len(errors) == 1, second.stdout + second.stderr
            assert f"hydra.run.dir={run} is in use by another run (pid {first.pid} on" in errors[0]
            assert {p: p.read_bytes() for p in (run / ".hydra").iterdir()} == before
    finally:
        first.send_signal(signal.SIGTERM)
        rest_of_output(first, timeout=120)
    assert first.returncode == 143
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
