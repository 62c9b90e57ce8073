"""The configs: where they live, the resolvers they use, compose() for scripts and tests, override parsing and
the checks of every value a user may type.

Importing this module registers the resolvers (`${project_root:}`, `${pid:}`, `${sweep_dir:...}`), so any
code that composes or loads a config of this project imports it first.
"""

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lab.sweep import slurm
from lab.sweep.resume import sweep_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"

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


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes
PRECISIONS = ("fp32", "bf16", "fp16")  # trainer.precision: float32, or autocast to bfloat16 / float16

# Values a user types, with what each must be: checked before anything is built.
_POSITIVE_INT = (lambda v: type(v) is int and v > 0, "an integer > 0")
_NON_NEGATIVE_INT = (lambda v: type(v) is int and v >= 0, "an integer >= 0")
_OPTIONAL_POSITIVE_INT = (lambda v: v is None or type(v) is int and v > 0, "null or an integer > 0")
# The names models/blocks.py knows (tests/lab/test_config.py checks that the two lists agree): kept here as
# strings so that checking a config costs no torch import.
ACTIVATIONS, POOLS = ("gelu", "relu", "tanh"), ("avg", "max")


def _number(test: Any) -> Any:
    """A check for a number (not a bool) that also passes `test`."""
    return lambda v: type(v) in (int, float) and test(v)


def _optional(check: tuple[Any, str]) -> tuple[Any, str]:
    """`check` for a key only some options of a group have (absent: nothing to check)."""
    return lambda v: v is None or check[0](v), check[1]


CHECKED_KEYS = {
    "seed": (lambda v: type(v) is int, "an integer"),
    "trainer.epochs": (
        lambda v: type(v) in (int, float) and v > 0,
        "a number > 0 (1.5: one and a half passes over the training data)",
    ),
    "trainer.batch_size": _POSITIVE_INT,
    "trainer.eval_batch_size": _POSITIVE_INT,
    "optimizer.lr": (lambda v: type(v) in (int, float) and v > 0, "a number > 0"),
    "trainer.compile": (lambda v: type(v) is bool, "true or false"),
    "trainer.cudnn_benchmark": (lambda v: type(v) is bool, "true or false"),
    "trainer.ema": (
        lambda v: v is None or (type(v) is float and 0 < v < 1),
        "null or a decay in (0, 1), e.g. 0.999",
    ),
    "trainer.compile_mode": (lambda v: v in COMPILE_MODES, f"one of {', '.join(COMPILE_MODES)}"),
    "trainer.precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "trainer.threads": (
        _OPTIONAL_POSITIVE_INT[0],
        "null (OMP_NUM_THREADS or all available CPUs) or an integer > 0",
    ),
    "trainer.channels_last": (lambda v: v in (True, False, "auto"), "true, false or auto"),
    "data.validation_size": (
        lambda v: (type(v) is int and v >= 0) or (type(v) is float and 0 < v < 1),
        "an integer >= 0 (images; 0: train on all of them, no validation) or a fraction in (0, 1)",
    ),
    "data.mean": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a number in [0, 1]"),
    "data.std": (lambda v: type(v) in (int, float) and 0 < v <= 1, "a number in (0, 1]"),
    "data.classes": (lambda v: v is not None and len(v) == 10, "a list of the 10 class names"),
    "augment.max_shift": _NON_NEGATIVE_INT,
    "augment.degrees": (
        lambda v: type(v) in (int, float) and 0 <= v <= 180,
        "a number of degrees in [0, 180]",
    ),
    "augment.scale": (lambda v: type(v) in (int, float) and 0 <= v < 1, "a number in [0, 1)"),
    "augment.shear": (lambda v: type(v) in (int, float) and 0 <= v < 90, "a number of degrees in [0, 90)"),
    "augment.translate": (lambda v: type(v) in (int, float) and v >= 0, "a number of pixels >= 0"),
    "augment.alpha": (lambda v: type(v) in (int, float) and v >= 0, "a number of pixels >= 0"),
    "augment.sigma": (lambda v: type(v) in (int, float) and v > 0, "a number of pixels > 0"),
    "augment.flip": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a probability in [0, 1]"),
    "augment.erase": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a probability in [0, 1]"),
    "augment.erase_size": (lambda v: type(v) is int and 1 <= v <= 28, "a whole number of pixels in [1, 28]"),
    "data.train_subset": _OPTIONAL_POSITIVE_INT,
    "trainer.max_steps": _OPTIONAL_POSITIVE_INT,
    "trainer.label_smoothing": (lambda v: type(v) in (int, float) and 0 <= v < 1, "a number in [0, 1)"),
    "trainer.histograms_every": _NON_NEGATIVE_INT,
    # Keys of some options of a group only (model=resmlp's width, scheduler=step's gamma, ...); the models and
    # schedules refuse the same values themselves, as plain modules do.
    "model.activation": _optional((lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}")),
    "model.pool": _optional((lambda v: v in POOLS, f"one of {', '.join(POOLS)}")),
    "model.width": _optional(_POSITIVE_INT),
    "model.depth": _optional(_NON_NEGATIVE_INT),
    "model.dropout": _optional((_number(lambda v: 0 <= v < 1), "a number in [0, 1)")),
    "scheduler.warmup_fraction": _optional((_number(lambda v: 0 < v < 1), "a number in (0, 1)")),
    "scheduler.every_epochs": _optional(_POSITIVE_INT),
    "scheduler.gamma": _optional((_number(lambda v: v > 0), "a number > 0")),
    "scheduler.min_lr": _optional((_number(lambda v: v >= 0), "a number >= 0")),
    "optimizer.weight_decay": _optional((_number(lambda v: v >= 0), "a number >= 0")),
}


def check_config(cfg: DictConfig) -> None:
    """Refuse values no run could use, naming the key and the value: NaN and infinity anywhere, then each
    key of CHECKED_KEYS."""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value}: must be a finite number")
    for key, (valid, expected) in CHECKED_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if not valid(value):
            raise ValueError(f"{key} must be {expected}, got {value!r}")


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value in a plain config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), node
