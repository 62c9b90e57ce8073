"""Resume, all of it in one place: where checkpoints live and which one a run continues from, reading one
back and checking it (its config is data: only what the lab builds, keys added since it was written given the
value the run used), continuing a run from it, and continuing a sweep (`resume_sweep`: the same command, a
completed job skipped, a stopped one continued from its last.pt, a directory holding another job refused)."""

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from mnist_lab.config import check_targets, leaves, nodes, to_plain
from mnist_lab.data.augment import Augment
from mnist_lab.errors import NotFound, UserError
from mnist_lab.overrides import defining_overrides
from mnist_lab.status import read_status
from mnist_lab.trainer.checkpoint import (
    BEST,
    LAST,
    RUN_KEYS,
    CheckpointError,
    Checkpoints,
    check_weights,
    load_checkpoint,
)
from mnist_lab.trainer.files import atomic_write
from mnist_lab.trainer.state import TrainState

log = logging.getLogger("train")

CHECKPOINTS = "checkpoints"  # <run dir>/checkpoints/{last,best}.pt


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (<run dir>/checkpoints/x.pt), or the folder of a loose one."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent


def checkpoint_path(spec: str, which: str, key: str) -> Path:
    """The checkpoint `spec` names: a .pt file, or a run directory (its checkpoints/`which`) or its checkpoints
    folder; `key` is the argument that gave it, for the message when there is none."""
    path = Path(spec)
    if path.is_dir():
        inside = [path / CHECKPOINTS / which, path / which]
        path = next((p for p in inside if p.is_file()), inside[0])
        if not path.is_file():
            raise NotFound(
                f"{key}={spec}: no checkpoint there (no {inside[0]}): give a run directory or a .pt file"
            )
    if not path.is_file():
        raise NotFound(f"{key}={spec}: no checkpoint at {path}")
    return path


@dataclass
class Resume:
    """The checkpoint a run continues from, and where it was read."""

    path: Path
    checkpoint: dict[str, Any]


def find(
    resume: str | None, run_dir: Path, cfg: DictConfig, model: nn.Module, resume_from: Path | None = None
) -> Resume | None:
    """The checkpoint a run continues from, read and checked against `cfg` and `model`: the one `resume` names
    (cfg.resume), else `resume_from` (a resumed sweep's stopped job: its last.pt); None to start afresh."""
    path = resume_checkpoint(resume, run_dir) or resume_from
    if path is None:
        return None
    checkpoint = load_resume(path, cfg)
    check_weights(model, checkpoint["model"], path)
    return Resume(path, checkpoint)


# What a checkpoint must share with the config that resumes it: the same network, data order and schedule.
RESUME_MUST_MATCH = (
    "model",
    "data",
    "augment",
    "optimizer",
    "scheduler",
    "seed",
    "trainer.batch_size",
    "trainer.epochs",
    "trainer.label_smoothing",
)
# Keys added since a checkpoint may have been written: (key, the value the code that wrote it used, and the
# `_target_` its group must have for the key to apply, or None for any).
ADDED_KEYS = [
    ("trainer.label_smoothing", 0.0, None),
    ("trainer.compile_mode", "default", None),
    ("trainer.cudnn_benchmark", True, None),  # cuDNN timed its algorithms on every CUDA run then
    ("trainer.ema", None, None),
    ("model.pool", "avg", "mnist_lab.models.LeNet"),
    ("data.name", "mnist", None),  # before Fashion-MNIST, every run was MNIST with its fixed constants
    ("data.mean", 0.1307, None),
    ("data.std", 0.3081, None),
    ("data.classes", [str(k) for k in range(10)], None),
]


# The packages whose `_target_`s checkpoints named before the lab was installed under one name, mnist_lab.
RENAMED_PACKAGES = ("models.", "data.", "trainer.")


def with_current_targets(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config whose `_target_`s (models.LeNet, written before mnist_lab) name the callables as
    the lab does now (mnist_lab.models.LeNet); each is then checked like any other."""
    renamed = copy.deepcopy(config)
    for _, node in nodes(renamed):
        target = node.get("_target_")
        if isinstance(target, str) and target.startswith(RENAMED_PACKAGES):
            node["_target_"] = f"mnist_lab.{target}"
    return renamed


SAVED_GROUPS = ("model", "data", "optimizer", "scheduler", "trainer")  # what every saved config holds


def saved_config(checkpoint: dict[str, Any], path: Path | str = "checkpoint") -> DictConfig:
    """The config a checkpoint (read from `path`) was trained with, checked as data: it names only what the
    lab builds itself (mnist_lab.config.check_targets) and holds no interpolation (a saved config is resolved, and
    a resolver would run when read). Keys added since it was written get the value it used."""
    config = checkpoint["config"]
    if isinstance(config, dict):
        config = with_current_targets(config)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project: its config is a "
                              f"{type(config).__name__}, not a mapping")  # fmt: skip
    for key, value in leaves(config):
        if isinstance(value, str) and "${" in value:
            raise CheckpointError(f"{path}: refused: its config holds an interpolation at {key} ({value[:60]!r}), "
                                  "which a saved config never does; nothing was built")  # fmt: skip
    check_targets(config, str(path))
    missing = [group for group in SAVED_GROUPS if not isinstance(config.get(group), dict)]
    if missing:
        raise CheckpointError(
            f"{path}: not a checkpoint of this project: its config has no {', '.join(missing)}"
        )
    cfg = OmegaConf.create(config)
    if "augment" not in cfg:  # written before the augment group, when data.max_shift was the augmentation
        cfg.augment = asdict(Augment(max_shift=cfg.data.pop("max_shift", 0)))
    for key, value, target in ADDED_KEYS:
        group = key.split(".", 1)[0]
        applies = target is None or OmegaConf.select(cfg, f"{group}._target_") == target
        if applies and OmegaConf.select(cfg, key) is None:
            OmegaConf.update(cfg, key, value)
    return cfg


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy a checkpoint file byte for byte (atomically: `target` is whole or as it was)."""
    atomic_write(target, source.read_bytes(), "checkpoint")


def resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint `resume` names: None, `auto` (run_dir's last.pt, if any), a .pt file or a run directory."""
    if resume is None:
        return None
    if resume == "auto":
        path = run_dir / CHECKPOINTS / LAST
        return path if path.is_file() else None
    return checkpoint_path(resume, LAST, "resume")


def differing(then: Any, now: Any, key: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, then, now) of each value that differs between two configs (or plain values) at `key`."""
    if isinstance(then, DictConfig) and isinstance(now, DictConfig):
        keys = list(then) + [k for k in now if k not in then]
        return [d for k in keys for d in differing(then.get(k), now.get(k), f"{key}.{k}")]
    plain = [OmegaConf.to_container(v) if isinstance(v, DictConfig | ListConfig) else v for v in (then, now)]
    return [] if plain[0] == plain[1] else [(key, *plain)]


def load_resume(path: Path, cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint at `path` (weights only) and refuse it if it was made under a different config."""
    checkpoint = load_checkpoint(path, needs=RUN_KEYS)
    saved, current = saved_config(checkpoint, path), OmegaConf.create(to_plain(cfg))
    differences = [
        f"{key}: checkpoint {then!r}, now {now!r}"
        for name in RESUME_MUST_MATCH
        for key, then, now in differing(OmegaConf.select(saved, name), OmegaConf.select(current, name), name)
    ]
    if differences:
        raise UserError(f"resume={path} was trained with another config: " + "; ".join(differences)
                         + " (repeat the run's overrides: its .hydra/overrides.yaml)")  # fmt: skip
    return checkpoint


def continue_from(resume: Resume, state: TrainState, checkpoints: Checkpoints, epochs: float) -> None:
    """Load `resume` into `state`; bring its best.pt (and, with nothing left to train, its last.pt) along when
    it continues in another directory (rank 0 alone under DDP). Where the best weights are nowhere to be found,
    forget_lost_best settles what counts as the best so far."""
    state.load_state_dict(resume.checkpoint)
    progress = state.progress
    log.info(f"resuming from {resume.path} after {progress.step} steps ({progress.epoch} whole epochs)")
    source_best = resume.path.parent / BEST
    elsewhere = checkpoints.write and source_best.resolve() != checkpoints.best.resolve()
    if progress.best_epoch and elsewhere and source_best.is_file():
        copy_checkpoint(source_best, checkpoints.best)
    if progress.best_epoch and not checkpoints.best.is_file():
        forget_lost_best(resume, state, checkpoints)
    if progress.epoch >= epochs:
        if checkpoints.write and resume.path.resolve() != checkpoints.last.resolve():
            copy_checkpoint(resume.path, checkpoints.last)  # the new directory is a whole run: resumable too
        log.info(
            f"{resume.path}: all {epochs:g} epochs are trained, nothing left to train: testing its best weights"
        )


def forget_lost_best(resume: Resume, state: TrainState, checkpoints: Checkpoints) -> None:
    """No best.pt beside `resume`: the resumed epoch's weights become the best so far (a checkpoint taken
    mid-epoch has none, and the epochs to come choose)."""
    progress = state.progress
    closed_epoch = state.tally is None and progress.epoch > 0
    log.warning(f"no best.pt of epoch {progress.best_epoch} beside {resume.path}: "
                f"the best is chosen from epoch {progress.epoch if closed_epoch else progress.epoch + 1} on")  # fmt: skip
    progress.best_epoch, progress.best_val_acc = 0, -1.0
    if closed_epoch:
        progress.best_epoch = progress.epoch
        progress.best_val_acc = progress.history[-1].get("val/acc", -1.0) if progress.history else -1.0
        checkpoints.save(state.state_dict(), best=True)


def check_resumable(sweep: Path, overrides: list[str], resume: Any) -> None:
    """Refuse to resume `sweep` unless it was swept with the same overrides (those that say how to run aside)."""
    saved = sweep / "multirun.yaml"
    if not saved.is_file():
        raise UserError(f"resume_sweep={resume}: no sweep to resume at {sweep} (no multirun.yaml)")
    try:
        before = defining_overrides([str(o) for o in OmegaConf.load(saved).hydra.overrides.task])
    except Exception as error:  # noqa: BLE001 (YAML's and OmegaConf's errors alike: a damaged file)
        raise UserError(f"resume_sweep={resume}: {saved} is unreadable ({type(error).__name__}): not a sweep "
                        "this lab wrote, or damaged; start a new sweep") from None  # fmt: skip
    if before != defining_overrides(overrides):
        raise UserError(
            f"resume_sweep={resume}: {sweep} was swept with [{' '.join(before)}], "
            f"this command asks for [{' '.join(defining_overrides(overrides))}]; "
            "repeat the sweep's own overrides, or start a new sweep"
        )
    logging.getLogger("sweep").info(
        f"resuming sweep {sweep}: completed jobs are skipped, stopped ones continue"
    )


@dataclass
class Earlier:
    """What a resumed sweep's job found in its directory."""

    completed: dict[str, Any] | None = None  # its status.json, when it completed before: skip it
    checkpoint: Path | None = None  # its last.pt, when it stopped before: continue from it
    refusal: str | None = None  # the directory holds another job


def earlier_job(run_dir: Path, overrides: list[str]) -> Earlier:
    """What a job of a resumed sweep does with what an earlier sweep left in `run_dir`."""
    before = read_status(run_dir)
    if before is not None and defining_overrides(before.get("overrides", [])) != defining_overrides(
        overrides
    ):
        return Earlier(refusal=f"resume_sweep: {run_dir} holds a job with overrides "
                               f"[{' '.join(defining_overrides(before.get('overrides', [])))}], not [{' '.join(defining_overrides(overrides))}]")  # fmt: skip
    if before is not None and before["status"] == "completed":
        return Earlier(completed=before)
    last = run_dir / CHECKPOINTS / LAST
    return Earlier(checkpoint=last if last.is_file() else None)
