"""The configs: where they live, the resolvers they use, compose() for scripts and tests, override parsing and
the checks of every value a user may type.

Importing this module registers the resolvers (`${project_root:}`, `${pid:}`, `${sweep_dir:...}`), so any
code that composes or loads a config of this project imports it first.
"""

import difflib
import functools
import inspect
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from mnist_lab.errors import UserError
from mnist_lab.sweep import slurm
from mnist_lab.values import VALUES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def sweep_dir(resume: Any, new: str) -> str:
    """hydra.sweep.dir (the `${sweep_dir:...}` resolver): `new`, or the sweep `resume_sweep` names
    (`last`/true: the newest in new's root)."""
    if resume in (None, False):
        return new
    if resume in (True, "last"):
        root = Path(new).parent.parent  # multirun/<date>/<time>: the newest sorts last
        earlier = sorted(p.parent for p in root.glob("*/*/multirun.yaml"))
        return str(earlier[-1]) if earlier else new
    return str(Path(str(resume)).absolute())


# Config paths are written as ${project_root:}/...: they resolve from here, not from the working directory.
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True, use_cache=True)
for name, resolver in {
    "slurm_gpus": slurm.gpus,
    "slurm_cpus": slurm.cpus,
    "slurm_mem_gb": slurm.mem_gb,
}.items():
    OmegaConf.register_new_resolver(name, resolver, replace=True, use_cache=True)  # hydra/launcher=slurm
# configs/hydra/launcher/ray.yaml replaces hydra-ray-launcher's config of the same name on purpose; Hydra 1.3
# still checks it against that schema (which it matches), and warns that it will stop doing so.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


def compose(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """configs/config.yaml with `overrides`, as `python train.py <overrides>` would see it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(
            config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python values: what a checkpoint stores."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# The places where a config names a callable to build, and the config group whose options list the callables
# allowed there: the `_target_`s of configs/<group>/*.yaml are the lab's registry. Nothing else is ever built.
BUILT_AT = {"model": "model", "data.source": "data", "optimizer": "optimizer", "scheduler": "scheduler"}
# What the lab passes to those callables itself: never a config's to set.
PASSED_BY_THE_LAB = {"params", "optimizer", "total_steps", "steps_per_epoch"}
INSTANTIATE_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}
HOW_TO_BUILD = {
    "_partial_": (True, False),
    "_convert_": ("none", "partial", "object", "all"),
}  # values allowed


@functools.cache
def registry() -> dict[str, dict[str, frozenset[str]]]:
    """place (model, data.source, ...) -> each `_target_` configs/ names there -> the settings it takes. A
    model takes the settings its configs/model/ files give it (the input and class counts are the dataset's);
    a data source, optimizer or schedule the keyword arguments of its function."""
    found: dict[str, dict[str, set[str]]] = {place: {} for place in BUILT_AT}
    for place, group in BUILT_AT.items():
        inner = place.partition(".")[2]
        for file in sorted((CONFIG_DIR / group).glob("*.yaml")):
            node = OmegaConf.select(OmegaConf.load(file), inner) if inner else OmegaConf.load(file)
            if isinstance(node, DictConfig) and "_target_" in node:
                found[place].setdefault(str(node._target_), set()).update(str(k) for k in node)
    for place in ("data.source", "optimizer", "scheduler"):  # their functions' own keyword arguments
        for target, keys in found[place].items():
            keys.update(set(inspect.signature(_locate(target)).parameters) - PASSED_BY_THE_LAB)
    return {place: {t: frozenset(k) for t, k in targets.items()} for place, targets in found.items()}


def _locate(target: str) -> Any:
    """The callable a registry name stands for (only names configs/ itself holds reach here)."""
    from hydra.utils import get_method

    return get_method(target)


def check_targets(config: dict[str, Any], origin: str = "") -> None:
    """Refuse a plain config that would build anything but the lab's own parts: a `_target_` outside the places
    of BUILT_AT or not in the registry, a setting its callable does not take, Hydra's other instantiation keys.
    `origin` (a checkpoint's path) starts the message when the config was read from a file."""
    said = f"{origin}: refused: its config" if origin else "refused: the config"
    allowed = registry()
    for place, node in nodes(config):
        special = INSTANTIATE_KEYS & set(node)
        if not special:
            continue
        target = node.get("_target_")
        if place not in allowed:
            raise UserError(f"{said} names a callable at {place or 'its top'} ({place}._target_={target!r}): "
                             f"the lab builds only {', '.join(BUILT_AT)}; nothing was built")  # fmt: skip
        if target not in allowed[place]:
            known = ", ".join(sorted(allowed[place]))
            raise UserError(f"{said} has {place}._target_={target!r}, which the lab never builds "
                             f"({place} is one of {known}); nothing was built")  # fmt: skip
        unknown = sorted(set(node) - allowed[place][target] - {"_target_", "_partial_", "_convert_"})
        odd = [k for k, ok in HOW_TO_BUILD.items() if k in node and node[k] not in ok]
        if unknown or odd:
            key = (unknown or odd)[0]
            takes = ", ".join(sorted(k for k in allowed[place][target] if not k.startswith("_")))
            raise UserError(f"{said} sets {place}.{key}, which {target} does not take (it takes: {takes}); "
                             "nothing was built")  # fmt: skip


def nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, mapping) of every mapping in a plain config, the config itself first."""
    if isinstance(node, dict):
        yield prefix, node
        for key, value in node.items():
            yield from nodes(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from nodes(value, f"{prefix}.{index}" if prefix else str(index))


def check_config(cfg: DictConfig) -> None:
    """Refuse values no run could use, naming the key and the value: a callable the lab does not build, NaN
    and infinity anywhere, then each key as mnist_lab.values declares it."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_targets(plain)  # type: ignore[arg-type]
    for key, value in leaves(plain):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}={value}: must be a finite number")
    for key, declared in VALUES.items():
        if refusal := declared.refusal(key, OmegaConf.select(cfg, key)):
            raise UserError(refusal)
    check_declared(plain)  # type: ignore[arg-type]
    floor, peak = OmegaConf.select(cfg, "scheduler.min_lr"), cfg.optimizer.lr
    if floor is not None and floor > peak:
        raise UserError(f"scheduler.min_lr={floor} is above optimizer.lr={peak}, the peak rate: the schedule "
                         "would raise the rate instead of annealing it; choose a floor below the peak")  # fmt: skip


# Keys of the top level besides the groups: configs/config.yaml's own, and tune.py's (configs/hparams_search/).
TOP_LEVEL = ("seed", "resume", "resume_sweep", "tune")
DECLARED_GROUPS = ("trainer", "data", "augment")  # read key by key (model & co: check_targets knows theirs)


@functools.cache
def declared_keys() -> dict[str, frozenset[str]]:
    """group -> the keys its options in configs/<group>/ declare; "" -> the top level's keys."""
    declared = {
        group: frozenset(str(k) for f in (CONFIG_DIR / group).glob("*.yaml") for k in OmegaConf.load(f))
        for group in DECLARED_GROUPS
    }
    return {**declared, "": frozenset([*TOP_LEVEL, *BUILT_AT, *DECLARED_GROUPS])}


def check_declared(config: dict[str, Any]) -> None:
    """Refuse a key no option declares (an added `+trainer.foo=1`): nothing would read it."""
    declared = declared_keys()
    for group, keys in [("", config), *((g, config.get(g) or {}) for g in DECLARED_GROUPS)]:
        for key in keys:
            if key not in declared[group] and key != "defaults":
                known = sorted(declared[group])
                close = difflib.get_close_matches(str(key), known, n=1)
                name = f"{group}.{key}" if group else str(key)
                hint = (
                    f"did you mean {group + '.' if group else ''}{close[0]}?"
                    if close
                    else f"its keys: {', '.join(known)}"
                )
                raise UserError(f"{name}: nothing reads this key ({hint})")


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value in a plain config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), node
