"""Train an MNIST classifier from the Hydra configs in configs/.

python train.py                                   # LeNet-5, the defaults of configs/config.yaml
python train.py model=lenet_res trainer.epochs=3  # any config value can be overridden
python train.py -m model=lenet,lenet_res,resmlp   # a multirun: one run directory per job
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data.loader import DeviceBatches, split_validation
from trainer import choose_device, fit

PROJECT_ROOT = Path(__file__).resolve().parent
# Config paths are written as ${project_root:}/...: they resolve from here, not from the working directory.
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)

log = logging.getLogger("train")


# Values a user types, with what each must be: checked before anything is built.
_POSITIVE_INT = (lambda v: type(v) is int and v > 0, "an integer > 0")
_NON_NEGATIVE_INT = (lambda v: type(v) is int and v >= 0, "an integer >= 0")
CHECKED_KEYS = {
    "seed": (lambda v: type(v) is int, "an integer"),
    "trainer.epochs": _NON_NEGATIVE_INT,
    "trainer.batch_size": _POSITIVE_INT,
    "trainer.eval_batch_size": _POSITIVE_INT,
    "optimizer.lr": (lambda v: type(v) in (int, float) and v > 0, "a number > 0"),
    "data.validation_size": _POSITIVE_INT,
    "data.max_shift": _NON_NEGATIVE_INT,
    "data.train_subset": (lambda v: v is None or type(v) is int and v > 0, "null or an integer > 0"),
}


def check_config(cfg: DictConfig) -> None:
    """Refuse values no run could use, naming the key and the value."""
    for key, (valid, expected) in CHECKED_KEYS.items():
        value = OmegaConf.select(cfg, key)
        if not valid(value):
            raise ValueError(f"{key} must be {expected}, got {value!r}")


def git_revision() -> dict[str, Any]:
    """The project's git commit and whether the tree had uncommitted changes (None outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build data, model, optimizer and schedule from `cfg`, train, test, write `run_dir/metrics.json`."""
    check_config(cfg)
    device = choose_device(cfg.trainer.device)
    mnist = instantiate(cfg.data.source)
    (train_images, train_labels), (val_images, val_labels) = split_validation(
        mnist.train_images, mnist.train_labels, cfg.data.validation_size, seed=cfg.data.split_seed
    )
    if cfg.data.train_subset is not None:
        train_images, train_labels = (
            train_images[: cfg.data.train_subset],
            train_labels[: cfg.data.train_subset],
        )
    train_batches = DeviceBatches(
        train_images,
        train_labels,
        cfg.trainer.batch_size,
        device,
        shuffle=True,
        max_shift=cfg.data.max_shift,
        seed=cfg.seed,
    )
    val_batches = DeviceBatches(val_images, val_labels, cfg.trainer.eval_batch_size, device)
    test_batches = DeviceBatches(mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, device)

    torch.manual_seed(cfg.seed)  # model initialisation and dropout
    model = instantiate(cfg.model).to(device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    steps_per_epoch = len(train_batches)
    scheduler = instantiate(cfg.scheduler)(
        optimizer, total_steps=cfg.trainer.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch
    )
    parameters = sum(p.numel() for p in model.parameters())
    log.info(
        "%s (%s parameters) on %s: %d training, %d validation, %d test images; %d epochs of %d steps",
        type(model).__name__,
        f"{parameters:,}",
        device,
        train_batches.num_images,
        val_batches.num_images,
        test_batches.num_images,
        cfg.trainer.epochs,
        steps_per_epoch,
    )
    result = fit(
        model,
        optimizer,
        scheduler,
        train_batches,
        val_batches,
        test_batches,
        epochs=cfg.trainer.epochs,
        run_dir=run_dir,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    metrics = {
        "model": type(model).__name__,
        "parameters": parameters,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "test_loss": result.test.loss,
        "test_acc": result.test.accuracy,
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "device": str(device),
        "seed": cfg.seed,
        **git_revision(),
        "history": result.history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    """The few lines a user reads at the end of a run."""
    tensorboard = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    return "\n".join(
        [
            f"{metrics['model']} ({metrics['parameters']:,} parameters) on {metrics['device']}: "
            f"{metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s of training "
            f"({metrics['images_per_second']:,.0f} images/s)",
            f"  test accuracy        {metrics['test_acc']:.2%}  (loss {metrics['test_loss']:.4f}, "
            f"weights of epoch {metrics['best_epoch']})",
            f"  best val. accuracy   {metrics['best_val_acc']:.2%}",
            f"  run directory        {run_dir}",
            f"  TensorBoard          {tensorboard} --logdir {run_dir}",
        ]
    )


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation accuracy, the value a sweeper maximises."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = train(cfg, run_dir)
    log.info("%s", summary(metrics, run_dir))
    return metrics["best_val_acc"]


if __name__ == "__main__":
    main()
