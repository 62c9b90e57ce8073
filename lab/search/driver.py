"""tune.py's side of a search (the driver): the study opened or continued, its sampler, each trial run as
`python train.py` in its own run directory, the trials shared between workers, the summary and best.json.

A trial is an ordinary `python train.py` run. After each epoch it reports its validation accuracy to the
study and asks the pruner whether to go on, so pruning works whichever process runs the trial.

The study lives in an SQLite file in its directory (`tune.storage: null`: one tune.py at a time, locked), or
in storage that several tune.py workers on several machines share (`tune.storage`: a database URL, or a
journal file on a shared file system: Optuna's JournalStorage). Shared, every worker claims trials from the
study in trial-number order, and the first `tune.trials` trials that do not fail are the study: a worker
that draws one more stops.
"""

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import optuna
import torch
from omegaconf import DictConfig

from mnist_lab.config import PROJECT_ROOT
from mnist_lab.errors import UserError
from mnist_lab.overrides import override_key
from mnist_lab.search.study import check_tune, make_pruner, masked, open_storage
from mnist_lab.status import read_status
from mnist_lab.trainer.files import write_json
from mnist_lab.trainer.speed import available_cpus

log = logging.getLogger("tune")

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class TrialFailed(Exception):
    """The trial's run failed (its status.json says why); the search goes on."""


class StudyFull(Exception):
    """The study already has `tune.trials` trials (finished, or running in other workers): this one is not run."""


def worker_name() -> str:
    """This tune.py process, as a shared study's trials record it (`host:pid`): open_study reads it back to tell
    a dead worker's trials on this machine."""
    return f"{socket.gethostname()}:{os.getpid()}"


def suggest(trial: optuna.Trial, key: str, spec: DictConfig) -> Any:
    """The trial's value for `key` from its search-space entry."""
    if spec.type == "float":
        return trial.suggest_float(key, spec.low, spec.high, log=bool(spec.get("log")))
    if spec.type == "int":
        return trial.suggest_int(key, spec.low, spec.high, log=bool(spec.get("log")))
    return trial.suggest_categorical(key, list(spec.choices))


def trial_command(
    trial_number: int, values: dict[str, Any], tune: DictConfig, overrides: list[str]
) -> list[str]:
    """`python train.py <overrides> <the trial's values>` into <tune.dir>/trial-<n>, sharing the machine."""
    run_dir = Path(tune.dir) / f"trial-{trial_number}"
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *overrides,
               *(f"{key}={value}" for key, value in values.items()),
               f"tune.trial={trial_number}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    given = {override_key(o) for o in overrides}
    if tune.jobs > 1 and "trainer.threads" not in given:  # trials at once share the cores
        command.append(f"trainer.threads={max(available_cpus() // tune.jobs, 1)}")
    if tune.jobs > 1 and "trainer.device" not in given and torch.cuda.device_count() > 1:
        command.append(f"trainer.device=cuda:{trial_number % torch.cuda.device_count()}")
    return command


def claim(trial: optuna.Trial, tune: DictConfig) -> None:
    """Raise StudyFull (and stop this worker) if `tune.trials` trials numbered below this one are finished or
    running: trial numbers come from the storage, so workers that share a study agree on which run."""
    taken = trial.study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
    if sum(t.number < trial.number for t in taken) >= tune.trials:
        trial.set_user_attr("surplus", f"the study had its {tune.trials} trials (tune.trials) when it began")
        trial.study.stop()
        raise StudyFull(f"trial {trial.number}: not run, the study has its {tune.trials} trials")


def run_trial(trial: optuna.Trial, tune: DictConfig, overrides: list[str]) -> float:
    """Run one trial as `python train.py` in its own run directory; return its best validation accuracy."""
    claim(trial, tune)
    trial.set_user_attr("worker", worker_name())
    if "SLURM_JOB_ID" in os.environ:  # a worker started as a SLURM job: which one
        trial.set_user_attr("slurm_job", os.environ["SLURM_JOB_ID"])
    values = {key: suggest(trial, key, spec) for key, spec in tune.space.items()}
    run_dir = Path(tune.dir) / f"trial-{trial.number}"
    trial.set_user_attr("run_dir", str(run_dir))
    start = time.perf_counter()
    done = subprocess.run(
        trial_command(trial.number, values, tune, overrides), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    status = read_status(run_dir) or {"status": "failed", "error": _last_line(done.stderr)}
    shown = " ".join(f"{key}={_short(value)}" for key, value in values.items())
    if status["status"] == "completed":
        log.info(
            f"trial {trial.number}: {status['best_val_acc']:.2%} validation accuracy, {seconds:.0f} s  [{shown}]"
        )
        return status["best_val_acc"]
    if status["status"] == "pruned":
        log.info(f"trial {trial.number}: {status['reason']}, {seconds:.0f} s  [{shown}]")
        raise optuna.TrialPruned(status["reason"])
    message = status.get("error") or status.get("reason") or f"exit status {done.returncode}"
    log.warning(
        f"trial {trial.number}: {status['status']}: {message}  [{shown}] (log: {run_dir / 'train.log'})"
    )
    raise TrialFailed(message)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def lock(study_dir: Path) -> IO[str]:
    """Hold `study_dir/tune.lock` while this process runs the study: a second tune.py is refused."""
    handle = open(study_dir / "tune.lock", "w")  # noqa: SIM115 (held until the search ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BlockingIOError(
            f"another tune.py is running this study ({study_dir}); wait for it to end"
        ) from None
    return handle


def open_study(tune: DictConfig) -> optuna.Study:
    """The study in tune.storage, created or continued; trials a killed tune.py left running are marked failed
    (alone on the study: all of them; shared: those of dead workers on this machine, and, with a database,
    those whose worker stopped beating)."""
    study = optuna.create_study(
        study_name=tune.study, storage=open_storage(tune), direction="maximize",
        pruner=make_pruner(tune), load_if_exists=True,
    )  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    # Seeded by the trials so far (a continued study does not draw its first values again); shared, also by
    # the worker, so that workers starting together do not draw the same values.
    shared = tune.storage is not None
    study.sampler = optuna.samplers.TPESampler(seed=tune.seed + len(trials) + (os.getpid() if shared else 0))
    host = socket.gethostname()
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = stale.user_attrs.get("worker", "")
        if shared and not (worker.startswith(f"{host}:") and not _alive(int(worker.split(":")[1]))):
            continue  # another worker's, running or not: only its own machine (or the heartbeat) can tell
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        log.info(f"trial {stale.number} was interrupted (its tune.py was killed): marked failed")
    return study


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's
    return True


def summarise(study: optuna.Study, overrides: list[str], study_dir: Path) -> dict[str, Any] | None:
    """Log the best trials and the command that trains the best one; write best.json; return it."""
    trials = [t for t in study.get_trials(deepcopy=False) if "surplus" not in t.user_attrs]  # never run
    states = [t.state.name.lower() for t in trials]
    counts = ", ".join(
        f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail", "running") if s in states
    )
    log.info(f"study {study.study_name} ({study_dir}): {len(trials)} trials: {counts}")
    completed = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.value
    )
    if not completed:
        return None
    for t in completed[:5]:
        log.info(
            f"  trial {t.number:3d}  {t.value:.2%}  "
            + " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        )
    best = completed[0]
    kept = [
        o for o in overrides if not override_key(o).startswith("tune.")
    ]  # how the study ran, not what it found
    best_overrides = [*kept, *(f"{key}={value}" for key, value in best.params.items())]
    record = {"trial": best.number, "best_val_acc": best.value, "params": best.params,
              "overrides": best_overrides, "run_dir": best.user_attrs.get("run_dir")}  # fmt: skip
    write_json(record, study_dir / "best.json")
    log.info(f"best: trial {best.number}, {best.value:.2%}; train it with:")
    log.info(f"  python train.py {' '.join(best_overrides)}")
    return record


def search(cfg: DictConfig, overrides: list[str]) -> int:
    """Run or continue the study `cfg.tune` defines; every trial also gets `overrides`. Returns the exit status."""
    if "tune" not in cfg:
        raise UserError("choose a search space: python tune.py hparams_search=<lenet|lenet_res|resmlp> ...")
    tune = cfg.tune
    check_tune(tune)
    if cfg.data.validation_size == 0:
        raise UserError(
            "data.validation_size=0 leaves a search nothing to choose on: keep a validation split"
        )
    study_dir = Path(tune.dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    alone = tune.storage is None  # shared storage: other workers fill the same study
    with lock(study_dir) if alone else contextlib.nullcontext():
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module logs each trial in one line
        study = open_study(tune)
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        remaining = tune.trials - finished
        where = (
            study_dir if alone else f"{masked(tune.storage)} (shared; trial run directories in {study_dir})"
        )
        log.info(
            f"study {tune.study} in {where}: {finished} of {tune.trials} trials finished; "
            f"running up to {max(remaining, 0)}, {tune.jobs} at a time; each trains {cfg.trainer.epochs} epochs"
        )
        if remaining > 0:
            study.optimize(lambda trial: run_trial(trial, tune, overrides), n_trials=remaining,
                           n_jobs=tune.jobs, catch=(TrialFailed, StudyFull))  # fmt: skip
    return 0 if summarise(study, overrides, study_dir) else 1
