"""One model over two processes: a real `torchrun --nproc_per_node=2 train.py` on CPU (gloo) on a small MNIST
subset: one run directory and one event file, the same all-reduced figures on every rank and as one process,
SIGTERM then resume exactly, and a killed rank ending the job with a line that names it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lab.config import PROJECT_ROOT, compose
from lab.run import train
from trainer.checkpoint import load_checkpoint

SMALL = [
    "data.train_subset=6000",
    "data.validation_size=1000",
    "trainer.epochs=2",
    "trainer.histograms_every=0",
]
EPOCH = re.compile(
    r"^\[rank (\d)/2\] (epoch \d+/\d+  train loss [\d.]+ acc [\d.]+%  val loss [\d.]+ acc [\d.]+%)"
)


def torchrun(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`torchrun --nproc_per_node=2 train.py <args>` on real MNIST, output (both ranks) captured."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(PROJECT_ROOT / "train.py"),
               f"data.source.root={PROJECT_ROOT / 'data'}", *SMALL, *args]  # fmt: skip
    environment = {**os.environ, "TMPDIR": str(tmp_path)}  # torchrun's torchelastic_* folders
    return subprocess.Popen(command, cwd=tmp_path, env=environment, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def epoch_lines(output: str) -> dict[int, list[str]]:
    """Each rank's epoch lines, without their timings."""
    lines: dict[int, list[str]] = {0: [], 1: []}
    for line in output.splitlines():
        if match := EPOCH.match(line):
            lines[int(match[1])].append(match[2])
    return lines


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> tuple[Path, str]:
    """A whole 2-process job; its run directory named by the project's pattern (time and pid), under tmp."""
    root = tmp_path_factory.mktemp("ddp")
    process = torchrun(root, f"hydra.run.dir={root}/runs/" + "${now:%H-%M-%S-%f}-${pid:}")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    (run_dir,) = (root / "runs").iterdir()  # exactly one directory for the whole job
    return run_dir, output


@pytest.mark.slow
def test_two_processes_write_one_run_directory_and_agree(job: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, output = job
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    log = (run_dir / "train.log").read_text()
    assert "[rank 0/2]" in log and "[rank 1/2]" not in log  # rank 0 alone writes the run directory
    lines = epoch_lines(output)
    assert len(lines[0]) == 2 and lines[0] == lines[1]  # the all-reduced figures, the same on both ranks
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]

    # One process on the same data and global batch trains on the same images with the same draws.
    one = train(compose(*SMALL, f"data.source.root={PROJECT_ROOT / 'data'}", "trainer.threads=1"), tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    two_losses = [h["train/loss"] for h in metrics["history"]]
    assert two_losses == pytest.approx([h["train/loss"] for h in one["history"]], abs=2e-3)
    assert abs(metrics["test_acc"] - one["test_acc"]) <= 0.005


@pytest.mark.slow
def test_sigterm_stops_both_ranks_and_the_job_resumes_exactly(job: tuple[Path, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = torchrun(tmp_path, f"hydra.run.dir={run_dir}")
    output = ""
    for line in process.stdout:  # type: ignore[union-attr]
        output += line
        if line.startswith("[rank 0/2] epoch 1/2"):
            process.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both ranks
            break
    output += process.communicate(timeout=120)[0]
    assert process.returncode != 0  # torchrun's own status; each rank's line is ours
    for rank in (0, 1):
        assert re.search(
            rf"\[rank {rank}/2\] stopped by SIGTERM in epoch [12] after step \d+; saved", output
        ), output
    assert "resume with: torchrun --nproc_per_node=2 train.py" in output
    stopped = json.loads((run_dir / "status.json").read_text())
    assert (
        stopped["status"] == "stopped" and load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    )

    again = torchrun(tmp_path, f"hydra.run.dir={run_dir}", "resume=auto")  # every rank reads last.pt
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    assert "[rank 1/2] resuming after" in output, output
    resumed = json.loads((run_dir / "metrics.json").read_text())
    whole = json.loads((job[0] / "metrics.json").read_text())
    assert resumed["test_acc"] == whole["test_acc"] and resumed["history"][-1]["train/loss"] == pytest.approx(
        whole["history"][-1]["train/loss"], abs=1e-6
    )


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_a_line_naming_it(tmp_path: Path, mnist_root: Path) -> None:
    process = torchrun(tmp_path, f"hydra.run.dir={tmp_path / 'run'}", "trainer.epochs=20")
    output = ""
    for line in process.stdout:  # type: ignore[union-attr]
        output += line
        if line.startswith("[rank 0/2] epoch 1/20"):
            break
    (status,) = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("status.json")]
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert status["pid"] in map(int, workers)  # rank 0's process; the other one is rank 1
    (rank_1,) = [int(pid) for pid in workers if int(pid) != status["pid"]]
    os.kill(rank_1, signal.SIGKILL)
    start = time.monotonic()
    output += process.communicate(timeout=120)[0]
    assert time.monotonic() - start < 60 and process.returncode != 0
    assert re.search(
        r"\[rank 0/2\] error: rank 0 of 2: the job lost another rank \(rank 1 is gone: ", output
    ), output
    assert "resume from" in output and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_slurm_ddp_asks_submitit_for_tasks_per_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    cfg = compose("hydra/launcher=slurm_ddp", "hydra.launcher.tasks_per_node=4", "hydra.launcher.nodes=2",
                  f"hydra.sweep.dir={tmp_path}", return_hydra_config=True)  # fmt: skip
    settings = {
        k: v for k, v in OmegaConf.to_container(cfg.hydra.launcher, resolve=True).items() if k != "_target_"
    }
    launcher = SlurmLauncher(**settings)
    launcher.config = cfg
    scripts = []

    def submitted(executor: submitit.AutoExecutor, *args: object) -> list:
        scripts.append(
            executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
        )
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submitted)
    (tmp_path / "srun").write_text("#!/bin/sh\n")  # submitit looks for it; nothing is submitted here
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    launcher.launch([["seed=0"]], initial_job_idx=0)
    (script,) = scripts
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "srun "):
        assert line in script, script


@pytest.mark.slow
def test_two_processes_with_a_slurm_jobs_variables_train_together(tmp_path: Path, mnist_root: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), "hydra/launcher=slurm_ddp", f"hydra.run.dir={run_dir}",
               f"data.source.root={PROJECT_ROOT / 'data'}", *SMALL, "trainer.epochs=1"]  # fmt: skip
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_NODELIST": "localhost"}  # fmt: skip
    tasks = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                **slurm,
                "SLURM_PROCID": str(r),
                "SLURM_LOCALID": str(r),
                "OMP_NUM_THREADS": "1",
            },
        )  # fmt: skip
        for r in (0, 1)
    ]
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    lines = [epoch_lines(output) for output in outputs]
    assert (
        len(lines[0][0]) == 1 and lines[0][0] == lines[1][1]
    )  # rank 0 and rank 1: the same all-reduced epoch
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert "[rank 1/2]" not in (run_dir / "train.log").read_text()
