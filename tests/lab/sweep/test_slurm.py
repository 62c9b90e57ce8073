"""hydra/launcher=slurm and slurm_ddp on a real SLURM cluster (`make slurm` starts one of two nodes on this
machine): a sweep's jobs each complete with their status.json and a failing one is contained, a 2-task DDP job
trains one model in one run directory, on one node and over two, a job cancelled mid-training saves last.pt and
the sweep resumes from it.
Skipped, saying why, where no cluster answers. lab/sweep/slurm.py's checks are tested without one."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.sweep import slurm
from mnist_lab.trainer.checkpoint import load_checkpoint
from tests.conftest import needs_slurm, run_script

SMALL = ["hydra/launcher=slurm", "data.train_subset=2000", "data.validation_size=1000", "trainer.epochs=1",
         "trainer.histograms_every=0"]  # fmt: skip


def statuses(sweep: Path) -> dict[str, str]:
    return {job.name: json.loads((job / "status.json").read_text())["status"]
            for job in sorted(sweep.iterdir()) if job.name.isdigit()}  # fmt: skip


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
@pytest.mark.long
def test_a_sweep_runs_each_job_as_a_slurm_job_and_contains_a_failing_one(
    tmp_path: Path, mnist_root: Path
) -> None:
    done = run_script("train.py", "-m", *SMALL, f"data.source.root={mnist_root}", "optimizer=sgd",
                      "optimizer.lr=0.05,0.1,-1", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed  # not every job completed
    assert statuses(tmp_path) == {"0": "completed", "1": "completed", "2": "failed"}, printed
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["epochs"] == 1
    assert "optimizer.lr must be a number > 0, got -1" in printed and "2 completed, 1 failed" in printed
    # The cluster keeps no accounting: submitit reads the states from squeue, said once, with no sacct warning.
    assert "job states are read with squeue" in printed and "sacct error" not in printed
    script = next((tmp_path / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--gpus-per-node=0" in script  # a CPU-only cluster: no GPU asked for, with nothing overridden


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
@pytest.mark.long
def test_a_slurm_ddp_job_of_two_tasks_trains_one_model_in_one_run_directory(
    tmp_path: Path, mnist_root: Path
) -> None:
    done = run_script("train.py", "-m", *SMALL, "hydra/launcher=slurm_ddp", "hydra.launcher.tasks_per_node=2",
                      f"data.source.root={mnist_root}", f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(tmp_path) == {"0": "completed"}
    run_dir = tmp_path / "0"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    log = (run_dir / "train.log").read_text()
    assert "[rank 0/2]" in log and "[rank 1/2]" not in log  # rank 0 alone writes the run directory
    # Rank 1 speaks in its task's submitit log: the same all-reduced epoch as rank 0.
    epoch = re.search(r"epoch 1/1  train loss \S+ acc \S+  val loss \S+ acc \S+", log)
    task_1 = "".join(p.read_text() for p in (tmp_path / ".submitit").glob("*/*_1_log.*"))
    assert epoch and "[rank 1/2] " in task_1 and epoch[0] in task_1, task_1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.5


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
@pytest.mark.long
def test_a_slurm_ddp_job_over_two_nodes_trains_one_model_written_by_global_rank_0(
    tmp_path: Path, mnist_root: Path
) -> None:
    done = run_script("train.py", "-m", *SMALL, "hydra/launcher=slurm_ddp", "hydra.launcher.nodes=2",
                      "hydra.launcher.tasks_per_node=1", f"data.source.root={mnist_root}",
                      f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(tmp_path) == {"0": "completed"}
    script = next((tmp_path / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    run_dir = tmp_path / "0"
    log = (run_dir / "train.log").read_text()
    assert re.search(r"\[rank 0/2\] .*joined the DDP job on node0 \(local rank 0 of 1\)", log), log
    assert "[rank 1/2]" not in log  # global rank 0 alone writes the run directory
    task_1 = "".join(p.read_text() for p in (tmp_path / ".submitit").glob("*/*_1_log.*"))
    assert re.search(r"\[rank 1/2\] .*joined the DDP job on node1 \(local rank 0 of 1\)", task_1), task_1
    epoch = re.search(r"epoch 1/1  train loss \S+ acc \S+  val loss \S+ acc \S+", log)
    assert epoch and epoch[0] in task_1  # all-reduced: the same epoch on both nodes
    assert json.loads((run_dir / "metrics.json").read_text())["test_acc"] > 0.5


@pytest.mark.slow
@pytest.mark.slurm
@needs_slurm
@pytest.mark.long
def test_a_job_cancelled_mid_training_saves_last_pt_and_the_sweep_resumes_from_it(
    tmp_path: Path, mnist_root: Path
) -> None:
    sweep = ["-m", *SMALL, "data.train_subset=12000", "trainer.epochs=3", f"data.source.root={mnist_root}",
             f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    first = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "train.py"), *sweep], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    log = tmp_path / "0" / "train.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "epoch 1/3" in log.read_text()):
        assert time.monotonic() < deadline and first.poll() is None, "the job never finished its first epoch"
        time.sleep(0.2)
    (job_id,) = [p.name for p in (tmp_path / ".submitit").iterdir() if p.name[0].isdigit()]
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)  # as SLURM does before a preemption
    printed = first.communicate(timeout=120)[0]
    assert first.returncode == 1 and "1 stopped" in printed, printed  # the job alone stopped, not the sweep
    status = json.loads((tmp_path / "0" / "status.json").read_text())
    assert status["status"] == "stopped" and "stopped by SIGTERM" in status["reason"], printed
    assert load_checkpoint(tmp_path / "0" / "checkpoints" / "last.pt")["epoch"] >= 1

    again = run_script("train.py", *sweep, f"resume_sweep={tmp_path}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(tmp_path) == {"0": "completed"}
    assert "resuming from" in log.read_text()
    assert json.loads((tmp_path / "0" / "metrics.json").read_text())["epochs"] == 3


def test_the_launcher_settings_follow_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = {"%G": "(null)\n", "%c %m": "2 21694\n"}
    monkeypatch.setattr(slurm, "ask", lambda *command: nodes[command[-1].removeprefix("--format=")])
    assert slurm.gpus(1) == 0 and slurm.cpus(4, 1) == 2 and slurm.cpus(4, 2) == 1 and slurm.mem_gb(16) == 16
    launcher = OmegaConf.create({"partition": None, "cpus_per_task": 2, "tasks_per_node": 2, "mem_gb": 1})
    assert slurm.refusal(launcher) == (
        "hydra.launcher.cpus_per_task=2 x tasks_per_node=2 asks for 4 CPUs on one node, and the largest node "
        "of the partition has 2: ask for at most 1 CPUs per task"
    )
    nodes.update({"%G": "gpu:4\n", "%c %m": "64 515000\n"})
    assert slurm.gpus(2) == 2 and slurm.cpus(4, 1) == 4 and slurm.refusal(launcher) is None
    monkeypatch.setattr(slurm, "ask", lambda *command: None)  # no cluster here: the settings as written
    assert slurm.gpus(1) == 1 and slurm.cpus(4, 2) == 4 and slurm.mem_gb(16) == 16
