"""hydra/launcher=ray (lab/sweep/ray_jobs.py, hydra_plugins/mnist_lab/ray_launcher.py) on a real local Ray instance,
started and stopped by the sweep; the resource check on its own."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.status import job_dirs, read_status
from mnist_lab.sweep.ray_jobs import refusal
from mnist_lab.tools.report import report
from tests.conftest import tiny_overrides


def session_processes(session: int) -> list[str]:
    """The processes still in the session `session` (what a sweep started with start_new_session left)."""
    listing = subprocess.run(["ps", "-e", "-o", "sid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if int(line.split()[0]) == session]


@pytest.mark.slow
@pytest.mark.long
def test_a_ray_sweep_records_each_job_contains_a_failure_resumes_and_stops_ray(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    sweep = tmp_path / "sweep"
    # lr=-1 is a bad value: job 1 fails on purpose, job 0 trains.
    command = [sys.executable, "train.py", "-m", "hydra/launcher=ray", "optimizer=sgd", "optimizer.lr=0.05,-1",
               *tiny_overrides(tiny_mnist), f"hydra.sweep.dir={sweep}", f"hydra.launcher.ray.init._temp_dir={ray_dir}",
               "++hydra.launcher.ray.init.include_dashboard=false"]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}  # Ray's own setting
    try:
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True, cwd=PROJECT_ROOT, env=env)  # fmt: skip
        output = driver.communicate(timeout=300)[0]
        assert driver.returncode == 1, output
        assert (
            "Ray: the local Ray instance, 1 node(s); each job asks for {'num_cpus': 1, 'num_gpus': 0"
            in output
        )
        assert {job.name: read_status(job)["status"] for job in job_dirs(sweep)} == {
            "0": "completed",
            "1": "failed",
        }
        assert read_status(sweep / "1")["error"] == "optimizer.lr must be a number > 0, got -1"
        assert "1 completed, 1 failed" in output and "job 1 [" in output
        metrics = json.loads((sweep / "0" / "metrics.json").read_text())
        assert metrics["threads"] == 1  # Ray gives a job OMP_NUM_THREADS = its num_cpus
        assert metrics["best_val_acc"] > 0.5
        assert "| 1 |" in report(sweep)  # the leaderboard counts the failed job
        # Ray stopped with the sweep: none of its processes is left in the driver's session.
        deadline = time.monotonic() + 15
        while session_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert session_processes(driver.pid) == []

        # resume_sweep on Ray: the completed job is skipped, the failed one runs (and fails) again.
        before = (sweep / "0" / "metrics.json").stat().st_mtime_ns
        again = subprocess.run([*command, f"resume_sweep={sweep}"], capture_output=True, text=True, env=env,
                               cwd=PROJECT_ROOT, timeout=300)  # fmt: skip
        printed = again.stdout + again.stderr
        assert again.returncode == 1, printed
        assert (
            "completed before: skipped" in (sweep / "0" / "train.log").read_text()
        )  # Ray may not forward it
        assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == before
        assert read_status(sweep / "1")["status"] == "failed" and "1 completed, 1 failed" in printed
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_a_job_no_node_could_hold_is_refused_naming_the_key_and_the_largest_node() -> None:
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0, "GPU": 1.0}]
    assert refusal({"num_cpus": 8, "num_gpus": 1}, nodes, "the local Ray instance") is None
    assert refusal({"num_cpus": 3, "num_gpus": 0}, nodes[:1], "the local Ray instance") == (
        "hydra.launcher.ray.remote.num_cpus=3: no node of the local Ray instance has that many CPUs "
        "(the largest has 2), so the jobs would wait for ever; ask for at most 2"
    )
    said = refusal({"num_cpus": 1, "num_gpus": 2}, nodes, "the Ray cluster at ray://head:10001")
    assert said is not None and said.startswith(
        "hydra.launcher.ray.remote.num_gpus=2: no node of the Ray cluster"
    )


def alive(pid: str) -> bool:
    """Whether process `pid` still runs (exists and is not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def head_node(port: int, env: dict[str, str]) -> str:
    """The node id of the cluster's head (the node whose end ends the cluster)."""
    code = (f"import ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR', log_to_driver=False); "
            "print(next(n['NodeID'] for n in ray.nodes() if 'node:__internal_head__' in n['Resources']))")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stdout.strip()  # fmt: skip


def job_training_on_another_node(sweep: Path, head: str, timeout: float = 180) -> tuple[Path, dict]:
    """The job of `sweep` that runs on a node other than `head` once it has closed an epoch, and its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in (sweep / "0", sweep / "1"):
            status = read_status(job)
            if status and status.get("ray_node") not in (None, head) and (status.get("epoch") or 0) >= 1:
                return job, status
        time.sleep(0.2)
    raise AssertionError(f"no job of {sweep} trained on the second node within {timeout} s")


@pytest.mark.slow
@pytest.mark.long
def test_a_ray_cluster_of_two_nodes_runs_a_job_on_each_survives_a_node_stopped_mid_sweep_and_is_left_as_found(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tempfile.mkdtemp(prefix="mlr-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_CLUSTER_STATE": state, "RAY_CLUSTER_PORT": str(port),
           "RAY_AUTH_MODE": "disabled"}  # fmt: skip
    script = str(PROJECT_ROOT / "scripts" / "ray-cluster.sh")
    before = set(subprocess.run(["pgrep", "-f", "ray"], capture_output=True, text=True).stdout.split())
    up = subprocess.run(["bash", script, "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0 and "2 nodes of 1 CPU(s)" in up.stdout, up.stdout + up.stderr

    def sweep_command(
        sweep: Path, *more: str
    ) -> list[str]:  # two jobs of one CPU each on nodes of one CPU each
        return [sys.executable, str(PROJECT_ROOT / "train.py"), "-m", "hydra/launcher=ray",
                f"hydra.launcher.ray.init.address=127.0.0.1:{port}", "seed=0,1", *tiny_overrides(tiny_mnist),
                f"hydra.sweep.dir={sweep}", *more]  # fmt: skip

    try:
        done = subprocess.run(sweep_command(tmp_path / "sweep"), env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        statuses = [read_status(tmp_path / "sweep" / job) for job in ("0", "1")]
        assert [s["status"] for s in statuses] == ["completed", "completed"]
        assert len({s["ray_node"] for s in statuses}) == 2  # each job recorded the node it ran on: both

        # The second node stopped mid-sweep (its raylet and the job's worker killed): that job is recorded
        # failed and the other completes; resume_sweep, on the head alone, continues it from its last.pt.
        sweep = tmp_path / "stopped"
        driver = subprocess.Popen(sweep_command(sweep, "trainer.epochs=40"), env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        victim, status = job_training_on_another_node(sweep, head_node(port, env))
        worker = int(status["pid"])
        raylet = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
        for pid in (raylet, worker):
            os.kill(pid, signal.SIGKILL)
        output = driver.communicate(timeout=300)[0]
        assert driver.returncode == 1, output[-3000:]  # a job did not complete
        other = sweep / ("1" if victim.name == "0" else "0")
        assert read_status(other)["status"] == "completed", output[-3000:]
        failed = read_status(victim)
        assert failed["status"] == "failed" and "the Ray worker of job" in failed["error"], failed
        assert (victim / "checkpoints" / "last.pt").is_file()
        resumed = subprocess.run(sweep_command(sweep, "trainer.epochs=40", f"resume_sweep={sweep}"), env=env,
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert [read_status(sweep / job)["status"] for job in ("0", "1")] == ["completed", "completed"]
        assert "resuming from" in (victim / "train.log").read_text()  # continued, not started again
        assert json.loads((victim / "metrics.json").read_text())["history"][-1]["epoch"] == 40
    finally:
        down = subprocess.run(["bash", script, "down"], env=env, capture_output=True, text=True, timeout=120)
    shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    left = set(subprocess.run(["pgrep", "-f", "ray"], capture_output=True, text=True).stdout.split())
    running = {pid for pid in left - before if alive(pid)}  # a killed daemon may linger as a zombie: gone
    assert not running, [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in running]  # cluster gone
