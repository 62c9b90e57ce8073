"""Search hyperparameters with Optuna, pruning hopeless trials after each epoch.

python tune.py hparams_search=lenet                      # the search space of configs/hparams_search/lenet.yaml
python tune.py hparams_search=resmlp tune.trials=40 tune.jobs=2 data.train_subset=20000

Every other override applies to every trial. A trial is an ordinary run, `python train.py <your overrides>
<the trial's values>`, in its own run directory <tune.dir>/trial-<n>; after each epoch it reports its
validation accuracy to the study, whose pruner may stop it. The study is kept in <tune.dir>/study.db, so
running the same command again continues it (until `tune.trials` trials have finished; raise it to go on).
At the end: the best trials, the command that trains the best one, and <tune.dir>/best.json.
"""

import fcntl
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig

from train import PROJECT_ROOT
from trainer.runs import read_status
from trainer.speed import available_cpus
from trainer.tuning import PRUNERS, make_pruner, storage_url

log = logging.getLogger("tune")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class TrialFailed(Exception):
    """The trial's run failed (its status.json says why); the search goes on."""


def check_tune(tune: DictConfig) -> None:
    """Refuse a search setting no search could use, naming the key and the value."""
    for key in ("trials", "jobs"):
        if type(tune[key]) is not int or tune[key] <= 0:
            raise ValueError(f"tune.{key} must be an integer > 0, got {tune[key]!r}")
    if tune.pruner.name not in PRUNERS:
        raise ValueError(f"tune.pruner.name must be one of {', '.join(PRUNERS)}, got {tune.pruner.name!r}")
    for key, spec in tune.space.items():
        kind = spec.get("type")
        if kind in ("float", "int"):
            low, high = spec.get("low"), spec.get("high")
            if not (isinstance(low, int | float) and isinstance(high, int | float) and low < high):
                raise ValueError(
                    f"tune.space.{key}: low and high must be numbers with low < high, got {low!r}, {high!r}"
                )
            if spec.get("log") and low <= 0:
                raise ValueError(f"tune.space.{key}: a log scale needs low > 0, got {low!r}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise ValueError(f"tune.space.{key}: choices must be a non-empty list")
        else:
            raise ValueError(f"tune.space.{key}: type must be float, int or categorical, got {kind!r}")


def suggest(trial: optuna.Trial, key: str, spec: DictConfig) -> Any:
    """The trial's value for `key` from its search-space entry."""
    if spec.type == "float":
        return trial.suggest_float(key, spec.low, spec.high, log=bool(spec.get("log")))
    if spec.type == "int":
        return trial.suggest_int(key, spec.low, spec.high, log=bool(spec.get("log")))
    return trial.suggest_categorical(key, list(spec.choices))


def run_trial(trial: optuna.Trial, cfg: DictConfig, overrides: list[str]) -> float:
    """Run one trial as `python train.py` in its own run directory; return its best validation accuracy."""
    tune = cfg.tune
    values = {key: suggest(trial, key, spec) for key, spec in tune.space.items()}
    run_dir = Path(tune.dir) / f"trial-{trial.number}"
    trial.set_user_attr("run_dir", str(run_dir))
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *overrides,
               *(f"{key}={value}" for key, value in values.items()),
               f"tune.trial={trial.number}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    given = {o.split("=", 1)[0] for o in overrides}
    if tune.jobs > 1 and "trainer.threads" not in given:  # trials at once share the cores
        command.append(f"trainer.threads={max(available_cpus() // tune.jobs, 1)}")
    if tune.jobs > 1 and "trainer.device" not in given and torch.cuda.device_count() > 1:
        command.append(f"trainer.device=cuda:{trial.number % torch.cuda.device_count()}")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
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


def lock(study_dir: Path) -> Any:
    """Hold `study_dir/tune.lock` while this process runs the study: a second tune.py is refused."""
    handle = open(study_dir / "tune.lock", "w")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(
            f"another tune.py is running this study ({study_dir}); wait for it to end"
        ) from None
    return handle


def summarise(study: optuna.Study, overrides: list[str], study_dir: Path) -> dict[str, Any] | None:
    """Log the best trials and the command that trains the best one; write best.json; return it."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if s in states)
    log.info(f"study {study.study_name} ({study_dir / 'study.db'}): {len(trials)} trials: {counts}")
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
    kept = [o for o in overrides if not o.startswith("tune.")]  # how the study ran, not what it found
    best_overrides = [*kept, *(f"{key}={value}" for key, value in best.params.items())]
    record = {"trial": best.number, "best_val_acc": best.value, "params": best.params,
              "overrides": best_overrides, "run_dir": best.user_attrs.get("run_dir")}  # fmt: skip
    (study_dir / "best.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info(f"best: trial {best.number}, {best.value:.2%}; train it with:")
    log.info(f"  python train.py {' '.join(best_overrides)}")
    return record


def main(overrides: list[str]) -> int:
    """Run or continue the study that `overrides` (with hparams_search=<model>) define; return the exit status."""
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        if "tune" not in cfg:
            raise ValueError(
                "choose a search space: python tune.py hparams_search=<lenet|lenet_res|resmlp> ..."
            )
        check_tune(cfg.tune)
        study_dir = Path(cfg.tune.dir)
        study_dir.mkdir(parents=True, exist_ok=True)
        held = lock(study_dir)
    except (ValueError, RuntimeError, OSError, HydraException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tune = cfg.tune
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module logs each trial in one line
    pruner = make_pruner(tune.pruner.name, tune.pruner.startup_trials, tune.pruner.warmup_epochs)
    study = optuna.create_study(
        study_name=tune.study, storage=storage_url(study_dir), direction="maximize",
        pruner=pruner, load_if_exists=True,
    )  # fmt: skip
    # Seeded by the trials so far: a continued study does not draw its first trials' values again.
    study.sampler = optuna.samplers.TPESampler(seed=tune.seed + len(study.get_trials(deepcopy=False)))
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(
            stale.number, state=optuna.trial.TrialState.FAIL
        )  # its tune.py was killed: the lock says so
        log.info(f"trial {stale.number} was interrupted: marked failed")
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = tune.trials - finished
    log.info(
        f"study {tune.study} in {study_dir}: {finished} of {tune.trials} trials finished; "
        f"running {max(remaining, 0)}, {tune.jobs} at a time; each trains {cfg.trainer.epochs} epochs"
    )
    with held:  # the lock, released when the search ends
        if remaining > 0:
            study.optimize(lambda trial: run_trial(trial, cfg, overrides), n_trials=remaining,
                           n_jobs=tune.jobs, catch=(TrialFailed,))  # fmt: skip
    return 0 if summarise(study, overrides, study_dir) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(sys.argv[1:]))
