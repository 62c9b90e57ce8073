"""Train an MNIST classifier from the Hydra configs in configs/.

python train.py                                   # LeNet-5, the defaults of configs/config.yaml
python train.py model=lenet_res trainer.epochs=3  # any config value can be overridden
python train.py -m model=lenet,lenet_res,resmlp   # a multirun: one run directory per job

Every run leaves status.json in its run directory (running, completed, failed, stopped or pruned). In a
multirun a job that fails is recorded as failed and the others go on; the sweep exits non-zero at the end.
"""

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from data.loader import DeviceBatches, split_validation
from trainer import choose_device, fit
from trainer.checkpoint import load_checkpoint
from trainer.diagnostics import model_summary
from trainer.interrupt import NonFiniteLoss, TrainingStopped
from trainer.loop import HParams
from trainer.runs import identity, read_status, write_status
from trainer.speed import configure_threads, prefers_channels_last, warm_up
from trainer.tuning import Pruned, make_pruner, trial_reporter

PROJECT_ROOT = Path(__file__).resolve().parent
# Config paths are written as ${project_root:}/...: they resolve from here, not from the working directory.
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)


def sweep_dir(resume: Any, new: str) -> str:
    """hydra.sweep.dir: `new`, or the sweep `resume_sweep` names (`last`/true: the newest in new's root)."""
    if resume in (None, False):
        return new
    if resume in (True, "last"):
        root = Path(new).parent.parent  # multirun/<date>/<time>: the newest sorts last
        earlier = sorted(p.parent for p in root.glob("*/*/multirun.yaml"))
        return str(earlier[-1]) if earlier else new
    return str(Path(str(resume)).absolute())


OmegaConf.register_new_resolver("sweep_dir", sweep_dir, replace=True, use_cache=True)

log = logging.getLogger("train")


PRECISIONS = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}  # trainer.precision -> autocast dtype

# Values a user types, with what each must be: checked before anything is built.
_POSITIVE_INT = (lambda v: type(v) is int and v > 0, "an integer > 0")
_NON_NEGATIVE_INT = (lambda v: type(v) is int and v >= 0, "an integer >= 0")
CHECKED_KEYS = {
    "seed": (lambda v: type(v) is int, "an integer"),
    "trainer.epochs": _NON_NEGATIVE_INT,
    "trainer.batch_size": _POSITIVE_INT,
    "trainer.eval_batch_size": _POSITIVE_INT,
    "optimizer.lr": (lambda v: type(v) in (int, float) and v > 0, "a number > 0"),
    "trainer.compile": (lambda v: type(v) is bool, "true or false"),
    "trainer.precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "data.validation_size": (
        lambda v: (type(v) is int and v > 0) or (type(v) is float and 0 < v < 1),
        "an integer > 0 (images) or a fraction in (0, 1)",
    ),
    "data.max_shift": _NON_NEGATIVE_INT,
    "data.train_subset": (lambda v: v is None or type(v) is int and v > 0, "null or an integer > 0"),
    "trainer.max_steps": (lambda v: v is None or type(v) is int and v > 0, "null or an integer > 0"),
    "trainer.histograms_every": _NON_NEGATIVE_INT,
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


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device) -> dict[str, Any]:
    """Where a run's numbers came from: code version, library versions, device and command line."""
    return {
        **git_revision(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device_name": device_name(device),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


@dataclass
class Setup:
    """Everything a run trains with, built from the config: what `fit` and the benchmarks take."""

    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_batches: DeviceBatches
    val_batches: DeviceBatches
    test_batches: DeviceBatches
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    threads: int
    channels_last: bool
    compile_seconds: float | None


def build(cfg: DictConfig, job: int | None = None) -> Setup:
    """Check `cfg` and build data, model, optimizer, schedule and speed settings from it.

    `job`: the job's number in a sweep (parallel jobs spread over several GPUs by it)."""
    check_config(cfg)
    device = choose_device(cfg.trainer.device, job)
    threads = configure_threads(cfg.trainer.threads)
    amp_dtype = PRECISIONS[cfg.trainer.precision]

    mnist = instantiate(cfg.data.source)
    (train_images, train_labels), (val_images, val_labels) = split_validation(
        mnist.train_images, mnist.train_labels, cfg.data.validation_size, seed=cfg.data.split_seed
    )
    subset = cfg.data.train_subset  # None: all
    train_batches = DeviceBatches(
        train_images[:subset], train_labels[:subset], cfg.trainer.batch_size, device,
        shuffle=True, max_shift=cfg.data.max_shift, seed=cfg.seed,
    )  # fmt: skip
    val_batches = DeviceBatches(val_images, val_labels, cfg.trainer.eval_batch_size, device)
    test_batches = DeviceBatches(mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, device)

    torch.manual_seed(cfg.seed)  # model initialisation and dropout
    model = instantiate(cfg.model).to(device)
    channels_last = prefers_channels_last(model, cfg.trainer.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    steps_per_epoch = len(train_batches)
    scheduler = instantiate(cfg.scheduler)(
        optimizer, total_steps=cfg.trainer.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch
    )
    scaler = torch.amp.GradScaler(device.type) if cfg.trainer.precision == "fp16" else None
    compile_seconds = None
    if cfg.trainer.compile:
        model.compile()  # in place: the state dict keeps its keys
        compile_seconds = warm_up(model, train_batches.batch_sizes(), val_batches.batch_sizes())
    return Setup(
        device, model, optimizer, scheduler, train_batches, val_batches, test_batches,
        amp_dtype, scaler, threads, channels_last, compile_seconds,
    )  # fmt: skip


@dataclass
class Trained:
    """A trained model loaded back from a checkpoint, with the config of its run."""

    model: nn.Module
    cfg: DictConfig
    checkpoint: Path
    device: torch.device


def split_args(argv: list[str], own: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """`key=value` arguments of a script's own keys, and the rest: config overrides (`data=mnist_pickle`)."""
    mine = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] in own and "=" in a}
    return mine, [a for a in argv if a.split("=", 1)[0] not in own]


def load_trained(ckpt: str, overrides: list[str]) -> Trained:
    """The model of checkpoint `ckpt` (a .pt file, or a run directory: its best.pt) on its run's config, read
    with `weights_only=True`. `overrides` replace whole config groups they name (e.g. data=mnist_pickle
    data.source.path=x.pkl replaces `data`), composed from configs/ as train.py would."""
    path = Path(ckpt)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: no checkpoint at {path}")
    checkpoint = load_checkpoint(path)
    cfg = OmegaConf.create(checkpoint["config"])
    if overrides:
        with hydra.initialize_config_dir(config_dir=str(PROJECT_ROOT / "configs"), version_base="1.3"):
            composed = hydra.compose(config_name="config", overrides=overrides)
        for group in {o.lstrip("+").split("=", 1)[0].split(".", 1)[0] for o in overrides}:
            cfg[group] = composed[group]
    device = choose_device(cfg.trainer.device)
    model = instantiate(cfg.model).to(device)
    model.load_state_dict(checkpoint["model"])
    if prefers_channels_last(model, cfg.trainer.channels_last):  # as it was tested: the same numbers
        model = model.to(memory_format=torch.channels_last)
    return Trained(model.eval(), cfg, path, device)


# What a checkpoint must share with the config that resumes it: the same network, data order and schedule.
RESUME_MUST_MATCH = (
    "model",
    "data",
    "optimizer",
    "scheduler",
    "seed",
    "trainer.batch_size",
    "trainer.epochs",
)


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint `resume` names: None, `auto` (run_dir's last.pt, if any), a .pt file or a run directory."""
    if resume is None:
        return None
    if resume == "auto":
        path = run_dir / "checkpoints" / "last.pt"
        return path if path.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no checkpoint at {path}")
    return path


def load_resume(path: Path, cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint at `path` (weights only) and refuse it if it was made under a different config."""
    checkpoint = load_checkpoint(path)
    saved = OmegaConf.create(checkpoint["config"])
    current = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    differences = [
        f"{key}: checkpoint {OmegaConf.select(saved, key)!r}, now {OmegaConf.select(current, key)!r}"
        for key in RESUME_MUST_MATCH
        if OmegaConf.select(saved, key) != OmegaConf.select(current, key)
    ]
    if differences:
        raise ValueError(f"resume={path} does not match this config: " + "; ".join(differences))
    return checkpoint


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build everything from `cfg`, train, test, and write `run_dir/metrics.json`; return the metrics."""
    setup, resume = prepare(cfg, run_dir)
    return train_with(setup, cfg, run_dir, resume)


def prepare(cfg: DictConfig, run_dir: Path, job: int | None = None) -> tuple[Setup, dict[str, Any] | None]:
    """Everything checked and built, and the checkpoint to resume from (if `cfg.resume` names one)."""
    setup = build(cfg, job)
    resume_from = find_resume_checkpoint(cfg.resume, run_dir)
    return setup, load_resume(resume_from, cfg) if resume_from else None


def train_with(
    setup: Setup,
    cfg: DictConfig,
    run_dir: Path,
    resume: dict[str, Any] | None = None,
    hparams: HParams | None = None,
    after_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train what `build(cfg)` made (from `resume`, a checkpoint, if given), test it, write metrics.json.

    `hparams` go to TensorBoard's HParams view with the final metrics; `after_epoch` is fit's."""
    model = setup.model
    parameters = sum(p.numel() for p in model.parameters())
    log.info(
        f"{type(model).__name__} ({parameters:,} parameters) on {setup.device}, {setup.threads} thread{'s' if setup.threads > 1 else ''}"
        f"{', channels_last' if setup.channels_last else ''}, {cfg.trainer.precision}: "
        f"{setup.train_batches.num_images} training, {setup.val_batches.num_images} validation, "
        f"{setup.test_batches.num_images} test images; {cfg.trainer.epochs} epochs of {len(setup.train_batches)} steps"
    )
    if resume is not None:
        log.info(f"resuming after {resume['step']} steps ({resume['epoch']} whole epochs) from {cfg.resume}")
    if setup.compile_seconds is not None:
        log.info(f"torch.compile warm-up: {setup.compile_seconds:.1f} s (not counted in the epoch times)")
    example = next(iter(setup.val_batches))[0][:1].clone()  # (1, 1, 28, 28)
    layers = model_summary(model, example)
    log.info(f"model summary:\n{layers}")
    origin = provenance(setup.device)
    texts = {
        "config": "```yaml\n" + OmegaConf.to_yaml(cfg, resolve=True) + "```",
        "model_summary": "```\n" + layers + "\n```",
        "provenance": "\n".join(f"- **{key}**: `{value}`" for key, value in origin.items()),
    }
    result = fit(
        model, setup.optimizer, setup.scheduler, setup.train_batches, setup.val_batches, setup.test_batches,
        epochs=cfg.trainer.epochs, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True),
        amp_dtype=setup.amp_dtype, scaler=setup.scaler, max_steps=cfg.trainer.max_steps, resume=resume,
        hparams=hparams, after_epoch=after_epoch, texts=texts, histograms_every=cfg.trainer.histograms_every,
    )  # fmt: skip
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
        "compile_seconds": setup.compile_seconds,
        "device": str(setup.device),
        "threads": setup.threads,
        "seed": cfg.seed,
        **origin,
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


def run_hparams(cfg: DictConfig, overrides: list[str]) -> HParams:
    """The run's row in TensorBoard's HParams view: the choices a sweep varies, named by its overrides.

    The same keys in every run (plus any overridden value), so a sweep's runs share one table."""
    choices = HydraConfig.get().runtime.choices
    keys = ["optimizer.lr", "optimizer.weight_decay", "trainer.batch_size", "trainer.epochs", "data.max_shift",
            "seed", *(o.lstrip("+").split("=", 1)[0] for o in overrides)]  # fmt: skip
    values: dict[str, Any] = {
        group: choices.get(group) for group in ("model", "data", "optimizer", "scheduler")
    }
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if key not in values:
            values[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return HParams(" ".join(overrides) or "defaults", values)


def after_epoch_hook(cfg: DictConfig) -> Callable[[int, float], None] | None:
    """In a trial of `python tune.py`: report each epoch to the study, which may prune the run."""
    tune = cfg.get("tune")
    if tune is None or tune.get("trial") is None:
        return None
    pruner = make_pruner(tune.pruner.name, tune.pruner.startup_trials, tune.pruner.warmup_epochs)
    return trial_reporter(tune.dir, tune.study, tune.trial, pruner)


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the best validation accuracy (None if the run did not complete).

    Whatever happens, status.json says so. A single run exits with 2 for a bad value or file, 1 for any
    other failure, 130/143 when stopped by a signal. In a multirun a failure is recorded and the sweep goes
    on (the Sweep callback sums it up); a signal stops the sweep.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    job = hydra_cfg.job.num if in_sweep else None

    def failed(message: str, exit_code: int, details: str | None = None) -> None:
        log.error(f"error: {message}")
        if details:
            log.error(details)  # the traceback, into train.log
        write_status(run_dir, "failed", overrides, error=message, exit_code=exit_code)
        if not in_sweep:
            sys.exit(exit_code)

    if in_sweep and cfg.resume_sweep:
        before = read_status(run_dir)
        if before is not None and identity(before["overrides"]) != identity(overrides):
            return failed(
                f"resume_sweep: {run_dir} holds a job with overrides [{' '.join(identity(before['overrides']))}], "
                f"not [{' '.join(identity(overrides))}]", 2,
            )  # fmt: skip
        if before is not None and before["status"] == "completed":
            log.info(f"job {job} [{' '.join(identity(overrides))}] completed before: skipped")
            return before.get("best_val_acc")
        if cfg.resume is None and (run_dir / "checkpoints" / "last.pt").is_file():
            cfg.resume = str(run_dir / "checkpoints" / "last.pt")  # a stopped job continues

    write_status(run_dir, "running", overrides)
    try:
        try:
            setup, resume = prepare(cfg, run_dir, job)
            hook = after_epoch_hook(cfg)
        except (ValueError, FileNotFoundError, InstantiationException) as error:
            # A bad value or file: one line saying which, no traceback. instantiate() wraps what the
            # constructors raise; their own message is the one that names the key.
            cause = (
                error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
            )
            return failed(str(cause).strip(), 2)
        metrics = train_with(setup, cfg, run_dir, resume, run_hparams(cfg, identity(overrides)), hook)
    except TrainingStopped as stop:
        write_status(run_dir, "stopped", overrides, reason=stop.reason, checkpoint=str(stop.checkpoint))
        log.warning(f"{stop.reason}; saved {stop.checkpoint}")
        if in_sweep:
            log.warning("resume the sweep with the same command and resume_sweep=last (or its directory)")
            if stop.exit_code == 0:  # trainer.max_steps: this job is done for now, the sweep goes on
                return None
        else:
            again = [o for o in overrides if not o.startswith("resume=")]
            log.warning(f"resume with: python train.py {' '.join([*again, f'resume={stop.checkpoint}'])}")
        sys.exit(stop.exit_code)  # a signal: the whole sweep stops
    except Pruned as pruned:
        write_status(run_dir, "pruned", overrides, reason=str(pruned))
        log.info(str(pruned))
        return None
    except NonFiniteLoss as error:
        return failed(str(error), 1)
    except Exception as error:  # out of memory, a bug: recorded with its traceback, the sweep goes on
        return failed(f"{type(error).__name__}: {error}", 1, traceback.format_exc())
    write_status(
        run_dir, "completed", overrides,
        best_val_acc=metrics["best_val_acc"], test_acc=metrics["test_acc"], metrics=str(run_dir / "metrics.json"),
    )  # fmt: skip
    log.info("%s", summary(metrics, run_dir))
    return metrics["best_val_acc"]


if __name__ == "__main__":
    main()
