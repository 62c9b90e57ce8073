"""One model over two processes: a real `torchrun --nproc_per_node=2 train.py` on CPU (gloo) on a small MNIST
subset: one run directory and one event file, SIGTERM and resume, the same all-reduced figures on every rank
and as one process, a killed rank ending the job with a line that names it; the sbatch script of a SLURM job
of several tasks (tests/lab/sweep/test_slurm.py runs one on a real cluster)."""

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

from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.pipeline import train
from mnist_lab.trainer.checkpoint import load_checkpoint
from tests.conftest import rest_of_output

SMALL = [
    "data.train_subset=4000",
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


def stopped_at_epoch_1(process: subprocess.Popen) -> str:
    """Send SIGTERM to torchrun (which passes it on to every rank) once epoch 1 is logged; the whole output."""
    output = ""
    for line in process.stdout:  # type: ignore[union-attr]
        output += line
        if line.startswith("[rank 0/2] epoch 1/"):
            process.send_signal(signal.SIGTERM)
            break
    return output + rest_of_output(process, timeout=120)


@pytest.mark.slow
@pytest.mark.long
def test_a_job_writes_one_run_directory_stops_on_sigterm_and_resumes_as_one_process_trains(
    tmp_path: Path, mnist_root: Path
) -> None:
    # The run directory named by the project's pattern (time and pid): resolved once, on rank 0.
    output = stopped_at_epoch_1(
        torchrun(tmp_path, f"hydra.run.dir={tmp_path}/runs/" + "${now:%H-%M-%S-%f}-${pid:}")
    )
    (run_dir,) = (tmp_path / "runs").iterdir()  # exactly one directory for the whole job
    assert (
        len(list(run_dir.glob("events.out.tfevents.*"))) == 1
        and (run_dir / ".hydra" / "config.yaml").is_file()
    )
    log = (run_dir / "train.log").read_text()
    assert "[rank 0/2]" in log and "[rank 1/2]" not in log  # rank 0 alone writes the run directory
    for rank in (0, 1):  # each rank ends with our line (torchrun's own exit status is torchrun's)
        assert re.search(
            rf"\[rank {rank}/2\] stopped by SIGTERM in epoch [12] after step \d+; saved", output
        ), output
    assert "resume with: torchrun --nproc_per_node=2 train.py" in output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    lines, first = epoch_lines(output), output

    again = torchrun(tmp_path, f"hydra.run.dir={run_dir}", "resume=auto")  # every rank reads last.pt
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    assert "[rank 1/2] resuming from" in output, output
    for rank, resumed in epoch_lines(output).items():
        lines[rank] += resumed
    # All-reduced: the same figures on both ranks, every epoch.
    assert len(lines[0]) == 2 and lines[1] == lines[0], first + output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"

    # One process on the same data and global batch trains on the same images with the same draws.
    one = train(
        compose(*SMALL, f"data.source.root={PROJECT_ROOT / 'data'}", "trainer.threads=1"), tmp_path / "one"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    two_losses = [h["train/loss"] for h in metrics["history"]]
    assert two_losses == pytest.approx([h["train/loss"] for h in one["history"]], abs=2e-3)
    assert abs(metrics["test_acc"] - one["test_acc"]) <= 0.005


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
    output += rest_of_output(process, timeout=120)
    assert time.monotonic() - start < 60 and process.returncode != 0
    assert re.search(
        r"\[rank 0/2\] error: rank 0 of 2: the job lost another rank \(rank 1 is gone: ", output
    ), output
    assert "resume from" in output and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_slurm_ddp_asks_submitit_for_tasks_per_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from mnist_lab.sweep import slurm

    gpu_cluster = {"--format=%G": "gpu:8\n", "--format=%c %m": "64 515000\n"}  # what sinfo says of its nodes
    monkeypatch.setattr(slurm, "ask", lambda *command: gpu_cluster[command[-1]])
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


def two_nodes(tmp_path: Path, port: int, *args: str) -> list[subprocess.Popen]:
    """Two torchrun agents on this machine as two nodes of one job (`--nnodes=2 --node_rank=0|1`, one process
    each, the rendezvous on 127.0.0.1:`port`)."""
    common = [
        f"data.source.root={PROJECT_ROOT / 'data'}",
        *SMALL,
        "trainer.threads=1",
        *args,
    ]  # 2 nodes, 2 cores
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(PROJECT_ROOT / "train.py"),
                *common,
            ],
            cwd=tmp_path,
            env={**os.environ, "TMPDIR": str(tmp_path)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        for node in (0, 1)
    ]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.long
def test_two_nodes_train_one_model_lose_a_node_and_resume_as_one_process_trains(
    tmp_path: Path, mnist_root: Path
) -> None:
    run_dir = tmp_path / "run"
    longer = ["trainer.epochs=3", "data.train_subset=20000"]  # epochs of seconds: node 1 is lost mid-run
    node_0, node_1 = two_nodes(tmp_path, free_port(), f"hydra.run.dir={run_dir}", *longer)
    output_1 = ""
    for line in node_1.stdout:  # type: ignore[union-attr]
        output_1 += line
        if line.startswith(
            "[rank 1/2] epoch 1/3"
        ):  # node 1 is lost: its agent and its worker (which torchrun
            workers = subprocess.run(["pgrep", "-P", str(node_1.pid)], capture_output=True, text=True).stdout
            for pid in [node_1.pid, *map(int, workers.split())]:  # starts in a session of its own) together
                os.kill(pid, signal.SIGKILL)
            break
    rest_of_output(node_1, timeout=60)
    start = time.monotonic()
    output_0 = node_0.communicate(timeout=180)[0]
    assert time.monotonic() - start < 120 and node_0.returncode != 0, output_0
    last = run_dir / "checkpoints" / "last.pt"
    assert re.search(
        r"\[rank 0/2\] error: rank 0 of 2: the job lost another rank \(rank 1 is gone: ", output_0
    )
    assert f"resume from {last} with: (on each of the 2 nodes, with its own --node_rank; this is node 0) " \
           "torchrun --nnodes=2 --node_rank=0 --nproc_per_node=1 --master_addr=127.0.0.1" in output_0  # fmt: skip
    assert load_checkpoint(last)["epoch"] == 1  # what node 0 saved: epoch 1, closed before the loss
    assert (run_dir / "train.log").read_text().count("[rank 1/2]") == 0  # global rank 0 alone writes

    again = two_nodes(tmp_path, free_port(), f"hydra.run.dir={run_dir}", *longer, "resume=auto")
    outputs = [node.communicate(timeout=300)[0] for node in again]
    assert [node.returncode for node in again] == [0, 0], outputs
    assert "[rank 1/2] resuming from" in outputs[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    one = train(compose(*SMALL, f"data.source.root={PROJECT_ROOT / 'data'}", *longer, "trainer.threads=1"),
                tmp_path / "one")  # fmt: skip
    losses = [h["train/loss"] for h in metrics["history"]]
    assert losses == pytest.approx([h["train/loss"] for h in one["history"]], abs=2e-3)
