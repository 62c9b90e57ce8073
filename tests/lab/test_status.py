"""lab/status.py: the identity of a job, `resume_sweep=last`, status.json."""

from pathlib import Path

import pytest

from mnist_lab.config import sweep_dir
from mnist_lab.overrides import defining_overrides
from mnist_lab.status import job_dirs, read_status, write_status


def test_resume_sweep_last_is_the_newest_sweep(tmp_path: Path) -> None:
    new = str(tmp_path / "multirun" / "2026-11-22" / "12-00-00-000001-99")
    assert sweep_dir(None, new) == new and sweep_dir(False, new) == new
    assert sweep_dir("last", new) == new  # nothing to resume: the callback then says so
    for name in (
        "2026-11-21/23-59-59-000000-1",
        "2026-11-22/09-00-00-000000-5",
        "2026-11-22/08-59-59-999999-7",
    ):
        (tmp_path / "multirun" / name).mkdir(parents=True)
        (tmp_path / "multirun" / name / "multirun.yaml").write_text("{}")
    assert sweep_dir(True, new) == str(tmp_path / "multirun" / "2026-11-22" / "09-00-00-000000-5")
    assert sweep_dir("some/dir", new) == str(Path("some/dir").absolute())


def test_identity_ignores_how_a_job_is_run() -> None:
    assert defining_overrides(["seed=1", "resume=auto", "trainer.max_steps=5", "resume_sweep=last", "model=lenet",
                     "trainer.threads=1", "+experiment@_global_=x"]) == ["+experiment@_global_=x", "model=lenet", "seed=1"]  # fmt: skip


def test_status_is_written_whole_and_read_back(tmp_path: Path) -> None:
    write_status(tmp_path, "failed", ["seed=1"], error="loss is nan", exit_code=1)
    status = read_status(tmp_path)
    assert (status["status"], status["overrides"], status["error"], status["exit_code"]) == (
        "failed",
        ["seed=1"],
        "loss is nan",
        1,
    )
    assert read_status(tmp_path / "nowhere") is None
    (tmp_path / "status.json").write_text("{half a fi")
    assert read_status(tmp_path) is None  # unreadable: as if absent


def test_job_dirs_are_the_numbered_directories_in_job_order(tmp_path: Path) -> None:
    for name in ("10", "2", "0", ".submitit", "leaderboard.md"):
        (tmp_path / name).mkdir()
    assert [d.name for d in job_dirs(tmp_path)] == ["0", "2", "10"]


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2]",
        '"completed"',
        '{"overrides": []}',
        '{"status": 3}',
        '{"status": "completed", "overrides": [1]}',
    ],
)
def test_a_status_json_this_lab_did_not_write_reads_as_none(content: str, tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(content)
    assert read_status(tmp_path) is None  # a sweep, the ownership check and the report treat it as no record
