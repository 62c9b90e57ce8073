"""Where runs and checkpoints live: find a run's checkpoint, load a trained model on its run's config, and
find and check the checkpoint a run resumes from."""

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from mnist_lab.build import build_model
from mnist_lab.config import check_config, check_targets, compose, leaves, nodes, to_plain
from mnist_lab.data.augment import Augment
from mnist_lab.overrides import override_key
from mnist_lab.trainer.checkpoint import BEST, LAST, RUN_KEYS, CheckpointError, load_checkpoint, load_weights
from mnist_lab.trainer.device import choose_device
from mnist_lab.trainer.files import atomic_write

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
            raise FileNotFoundError(
                f"{key}={spec}: no checkpoint there (no {inside[0]}): give a run directory or a .pt file"
            )
    if not path.is_file():
        raise FileNotFoundError(f"{key}={spec}: no checkpoint at {path}")
    return path


@dataclass
class Trained:
    """A trained model loaded back from a checkpoint, with the config of its run."""

    model: nn.Module
    cfg: DictConfig
    checkpoint: Path
    device: torch.device


def load_trained(ckpt: str, overrides: list[str]) -> Trained:
    """The model of checkpoint `ckpt` (a .pt file, or a run directory: its best.pt) on its run's config, read
    with `weights_only=True`. `overrides` replace whole config groups they name (e.g. data=mnist_pickle
    data.source.path=x.pkl replaces `data`), composed from configs/ as train.py would."""
    path = checkpoint_path(ckpt, BEST, "ckpt")
    checkpoint = load_checkpoint(path)
    cfg = saved_config(checkpoint, path)
    if overrides:
        composed = compose(*overrides)
        for group in {override_key(o).split(".", 1)[0] for o in overrides}:
            cfg[group] = composed[group]
        trained_on = saved_config(checkpoint, path).data.name
        if cfg.data.name != trained_on:
            raise ValueError(
                f"{path} was trained on {trained_on}; these overrides ask for {cfg.data.name} "
                f"(data.name): a model is evaluated on the dataset it learned"
            )
    try:
        check_config(cfg)  # the values too, as a run's own are checked before it starts
    except ValueError as error:
        raise CheckpointError(f"{path}: refused: its config: {error}") from None
    device = choose_device(cfg.trainer.device)
    model, _ = build_model(cfg, device)  # in the memory format it was tested in: the same numbers
    load_weights(model, checkpoint["model"], path)
    return Trained(model.eval(), cfg, path, device)


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
        raise ValueError(f"resume={path} was trained with another config: " + "; ".join(differences)
                         + " (repeat the run's overrides: its .hydra/overrides.yaml)")  # fmt: skip
    return checkpoint
