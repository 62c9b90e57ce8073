"""A search whose study lives on a real PostgreSQL server (`make postgres` starts one on this machine's loopback):
two tune.py workers fill one study with exactly tune.trials trials, none run twice (two on this machine, and one
here with one in a SLURM job); a wrong password, a server
that does not answer and a missing database each end in one line naming the URL without its password; Optuna's
dashboard opens the study from the same URL. Skipped, saying why, where no server answers."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.status import read_status
from tests.conftest import needs_slurm, run_script, tiny_overrides

URL = (
    os.environ.get("MNIST_LAB_POSTGRES_URL")
    or subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "postgres.sh"), "url"], capture_output=True, text=True
    ).stdout.strip()
)


def server_answers() -> bool:
    try:
        import psycopg

        psycopg.connect(URL.replace("+psycopg", ""), connect_timeout=3).close()
    except Exception:  # no driver, no server, no such role: the tests cannot run here
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not server_answers(), reason=f"no PostgreSQL server answers at {URL}: `make postgres` starts one here"
    ),
]


def search(tmp_path: Path, tiny_mnist: Path, study: str, *more: str) -> list[str]:
    """tune.py's arguments for a small search of `study` on the server, trials of one tiny epoch."""
    return ["hparams_search=lenet", f"tune.study={study}", f"tune.dir={tmp_path}", f"tune.storage={URL}",
            "tune.pruner.name=none", *tiny_overrides(tiny_mnist), "trainer.epochs=1", *more]  # fmt: skip


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> tuple[str, Path, list[str]]:
    """Two tune.py workers started together on one new study, one running a trial at a time, the other two:
    the study's name, its trials' folder and the two workers' output."""
    study, folder = f"two-workers-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("study")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_ROOT / "tune.py"),
                *search(folder, tiny_mnist, study, "tune.trials=3", f"tune.jobs={jobs}"),
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for jobs in (1, 2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    return study, folder, outputs


def test_two_workers_fill_one_study_on_postgresql_without_running_a_trial_twice(
    shared_study: tuple[str, Path, list[str]],
) -> None:
    study, folder, outputs = shared_study
    password = URL.split("://", 1)[1].split("@")[0].split(":")[1]
    assert f":{password}@" not in "".join(outputs) and ":***@" in outputs[0]  # the password is never printed
    trials = [
        t for t in optuna.load_study(study_name=study, storage=URL).trials if "surplus" not in t.user_attrs
    ]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3  # tune.trials, across workers
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials of the one study
    for t in trials:  # each ran once, in its own run directory, by the worker that claimed it
        assert read_status(folder / f"trial-{t.number}")["status"] == "completed"
        assert len([out for out in outputs if f"trial {t.number}: " in out]) == 1


@pytest.mark.slurm
@pytest.mark.long
@needs_slurm
def test_a_worker_here_and_one_in_a_slurm_job_fill_one_study_without_running_a_trial_twice(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    study = f"two-launchers-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable,
        str(PROJECT_ROOT / "tune.py"),
        *search(tmp_path, tiny_mnist, study, "tune.trials=6"),
    ]
    here = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    in_slurm = subprocess.run(["srun", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", f"--chdir={PROJECT_ROOT}",
                               "--job-name=tune-worker", *command], capture_output=True, text=True, timeout=300)  # fmt: skip
    outputs = [here.communicate(timeout=300)[0], in_slurm.stdout + in_slurm.stderr]
    assert [here.returncode, in_slurm.returncode] == [0, 0], outputs
    trials = [
        t for t in optuna.load_study(study_name=study, storage=URL).trials if "surplus" not in t.user_attrs
    ]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6, outputs  # tune.trials in all
    workers = {(t.user_attrs["worker"], t.user_attrs.get("slurm_job")) for t in trials}
    launched_by_slurm = [job for _, job in workers if job is not None]
    assert len(workers) == 2 and len(launched_by_slurm) == 1, workers  # one worker of each launcher
    for t in trials:  # each ran once, in its own run directory, by the worker that claimed it
        assert read_status(tmp_path / f"trial-{t.number}")["status"] == "completed"
        assert len([out for out in outputs if f"trial {t.number}: " in out]) == 1, outputs


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda url: url.replace(":mnist_lab@", ":wrong-password@"), "password authentication failed"),
        (lambda url: url.replace(f":{url.rsplit(':', 1)[1].split('/')[0]}/", f":{free_port()}/"), "Connection refused"),
        (lambda url: url.rsplit("/", 1)[0] + "/no_such_database", 'database "no_such_database" does not exist'),
    ],
    ids=["wrong password", "no server on that port", "no such database"],
)  # fmt: skip
def test_a_database_that_cannot_be_opened_is_one_line_naming_the_url_without_its_password(
    change,
    says: str,
    tmp_path: Path,
    tiny_mnist: Path,  # noqa: ANN001
) -> None:
    url = change(URL)
    done = run_script(
        "tune.py", *search(tmp_path, tiny_mnist, "refused", "tune.trials=1")[:3], f"tune.storage={url}"
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stdout + done.stderr
    password = url.split("://", 1)[1].split("@")[0].split(":")[1]
    shown = url.replace(f":{password}@", ":***@")
    assert (
        errors[0].startswith(f"error: tune.storage={shown}: cannot open the database: ") and says in errors[0]
    )
    assert f":{password}@" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, seconds: float = 60) -> None:
    """Return once `server` accepts connections on `port` (it prints its address before it binds it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(
        f"the dashboard never listened on {port}: {server.stdout.read() if server.poll() is not None else ''}"
    )


def test_the_dashboard_opens_the_study_from_the_same_url(shared_study: tuple[str, Path, list[str]]) -> None:
    study = shared_study[0]
    port = free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), "--port", str(port), URL],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for_port(port, dashboard)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as response:
            studies = json.loads(response.read())["study_summaries"]
        assert study in [s["study_name"] for s in studies]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


@pytest.mark.long
def test_a_worker_killed_mid_trial_has_its_trial_failed_by_the_heartbeat_and_the_study_finishes(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    if subprocess.run(["unshare", "-u", "true"], capture_output=True).returncode:
        pytest.skip("unshare -u (a host name of its own for the first worker) needs root here")
    study = f"heartbeat-{uuid.uuid4().hex[:8]}"
    args = search(tmp_path, tiny_mnist, study, "tune.trials=2", "tune.heartbeat_s=1", "tune.grace_s=2",
                  "trainer.epochs=3")  # fmt: skip
    # The first worker runs on "another machine" (its own host name): only its heartbeat can tell it died.
    elsewhere = f"hostname node-b && exec {sys.executable} {PROJECT_ROOT / 'tune.py'} " + " ".join(args)
    first = subprocess.Popen(["unshare", "-u", "sh", "-c", elsewhere], cwd=PROJECT_ROOT, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    status = tmp_path / "trial-0" / "status.json"
    deadline = time.monotonic() + 120
    while not (status.exists() and read_status(status.parent)) and time.monotonic() < deadline:
        assert first.poll() is None, first.stdout.read()  # type: ignore[union-attr]
        time.sleep(0.1)
    os.killpg(first.pid, 9)  # the worker and its trial, mid-trial, as a machine that goes away
    first.communicate(timeout=60)
    second = subprocess.run([sys.executable, str(PROJECT_ROOT / "tune.py"), *args], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    trials = {t.number: t for t in optuna.load_study(study_name=study, storage=URL).trials}
    assert trials[0].state == optuna.trial.TrialState.FAIL and trials[0].user_attrs["worker"].startswith(
        "node-b:"
    )
    done = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and {t.number for t in done} == {1, 2}  # the study still has its tune.trials trials
    assert "3 trials: 2 complete, 1 fail" in second.stdout + second.stderr
