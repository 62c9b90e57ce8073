"""cfg -> device, data batches, model, optimizer, scheduler: the only `instantiate` calls of the project.

Below this module everything takes plain typed arguments."""

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mnist_lab.config import check_config, to_plain
from mnist_lab.data.augment import Augment
from mnist_lab.data.loader import DeviceBatches, split_validation
from mnist_lab.data.sources import MNISTData
from mnist_lab.errors import UserError, exit_code_of
from mnist_lab.trainer import distributed
from mnist_lab.trainer.device import choose_device
from mnist_lab.trainer.distributed import Rank
from mnist_lab.trainer.loop import run_steps
from mnist_lab.trainer.speed import (
    available_cpus,
    choose_cudnn_algorithms,
    configure_threads,
    prefers_channels_last,
    warm_up,
)
from mnist_lab.trainer.state import Precision, TrainState, averaged_every_step

log = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # trainer.precision -> autocast


@dataclass
class Setup:
    """Everything a run trains with, built from the config: what `fit` and the benchmarks take."""

    device: torch.device
    state: TrainState  # model, optimizer, scheduler, training batches, precision, config
    val_batches: DeviceBatches | None  # None: data.validation_size=0, training on the whole training set
    test_batches: DeviceBatches
    threads: int
    channels_last: bool
    compile_seconds: float | None


def instantiate(node: DictConfig) -> Any:
    """hydra.utils.instantiate, with what a callable raises on purpose (mnist_lab.errors: a data file refused,
    a value out of range) raised as it is rather than inside Hydra's InstantiationException."""
    try:
        return hydra_instantiate(node)
    except InstantiationException as error:
        if error.__cause__ is not None and exit_code_of(error.__cause__) is not None:
            raise error.__cause__ from None
        raise


def read_data(cfg: DictConfig) -> MNISTData:
    """The data source `cfg.data.source` names, read and checked."""
    return instantiate(cfg.data.source)


def build_batches(
    cfg: DictConfig, device: torch.device, rank: Rank | None = None
) -> tuple[DeviceBatches, DeviceBatches | None, DeviceBatches]:
    """Training (shuffled, augmented, seeded; under DDP this rank's part of each batch), validation (None with
    data.validation_size=0) and test batches on `device`."""
    mnist = read_data(cfg)
    (train_images, train_labels), (val_images, val_labels) = split_validation(
        mnist.train_images, mnist.train_labels, cfg.data.validation_size, seed=cfg.data.split_seed
    )
    subset = cfg.data.train_subset  # None: all
    mean_std = (cfg.data.mean, cfg.data.std)
    if cfg.augment.get("flip") and all(str(name).isdigit() for name in cfg.data.classes):
        log.warning(f"augment.flip={cfg.augment.flip} mirrors digits, and a mirrored digit can change meaning "
                    "(some 2s read as 5s): mirrors are meant for clothing (data=fashion_mnist)")  # fmt: skip
    train = DeviceBatches(
        train_images[:subset], train_labels[:subset], cfg.trainer.batch_size, device,
        seed=cfg.seed, augment=Augment(**cfg.augment), mean_std=mean_std,
    ).shard(*((rank.rank, rank.world) if rank else (0, 1)))  # fmt: skip
    val = (
        DeviceBatches(val_images, val_labels, cfg.trainer.eval_batch_size, device, mean_std=mean_std)
        if len(val_labels)
        else None
    )
    test = DeviceBatches(
        mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, device, mean_std=mean_std
    )
    return train, val, test


def build_model(cfg: DictConfig, device: torch.device) -> tuple[nn.Module, bool]:
    """The model `cfg.model` names on `device`, in channels_last where `trainer.channels_last` says so; one
    whose training would not fit the device's memory is refused before anything is allocated."""
    with torch.device("meta"):  # shapes only: the parameter count of any width, in no memory
        sized = instantiate(cfg.model)
    needed = TRAINING_COPIES * sum(p.numel() * p.element_size() for p in sized.parameters())
    if needed > (memory := device_memory(device)):
        raise UserError(f"model ({', '.join(f'model.{k}={v}' for k, v in cfg.model.items() if k != '_target_')}) "
                         f"needs about {needed / 2**30:,.1f} GiB to train (weights, gradients, optimizer state); "
                         f"{device} has {memory / 2**30:,.1f} GiB: choose a smaller model")  # fmt: skip
    model = instantiate(cfg.model).to(device)
    channels_last = prefers_channels_last(model, cfg.trainer.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def build_optimizer(node: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer `node` names over `model`'s parameters, with its fused kernels (one kernel for all
    parameters' updates, instead of several per parameter) where it has them for the device and the config does
    not choose (`+optimizer.fused=false` turns them off)."""
    make = instantiate(node)
    if "fused" in node or "fused" not in inspect.signature(make.func).parameters:
        return make(model.parameters())
    try:
        return make(model.parameters(), fused=True)
    except (RuntimeError, ValueError):  # no fused kernels for this device or these parameters
        return make(model.parameters())


@contextlib.contextmanager
def naming_keys(node: DictConfig, group: str) -> Iterator[None]:
    """A ValueError of torch's own checks (`Invalid momentum value: -1`) again, naming the config keys it is
    about (the settings its message mentions; all of them where it mentions none)."""
    try:
        yield
    except ValueError as error:
        said = str(error)
        settings = {str(k): v for k, v in node.items() if not str(k).startswith("_")}
        named = [k for k in settings if k.rstrip("s").replace("_", " ") in said.lower().replace("_", " ")]
        keys = " ".join(f"{group}.{k}={settings[k]}" for k in named or settings)
        raise UserError(f"{keys}: refused by {node._target_}: {said}") from None


TRAINING_COPIES = 4  # a parameter's memory while training: itself, its gradient and Adam's two moments


def device_memory(device: torch.device) -> int:
    """Bytes of memory `device` has in all (a GPU's own; otherwise this machine's)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_ddp(cfg: DictConfig, rank: Rank) -> None:
    """Refuse a DDP job its settings cannot run: the global batch must divide over the ranks, and on CUDA
    each rank on a node needs a GPU of its own."""
    if cfg.trainer.batch_size % rank.world:
        raise UserError(
            f"trainer.batch_size={cfg.trainer.batch_size} does not divide over the job's {rank.world} processes "
            f"(WORLD_SIZE): it is the global batch, each process takes batch_size / {rank.world}"
        )
    gpus = torch.cuda.device_count()
    if cfg.trainer.device in ("auto", "cuda") and 0 < gpus < rank.local_world:
        raise UserError(
            f"{rank.local_world} processes on this node (LOCAL_WORLD_SIZE) but {gpus} GPU(s): one GPU per "
            f"process (or trainer.device=cpu)"
        )


def build(cfg: DictConfig, job: int | None = None) -> Setup:
    """Check `cfg` and build data, model, optimizer, schedule and speed settings from it.

    `job`: the job's number in a sweep (parallel jobs spread over several GPUs by it)."""
    check_config(cfg)
    rank = distributed.current()
    if rank is not None:
        check_ddp(cfg, rank)
    device = choose_device(cfg.trainer.device, rank.local if rank else job)
    # torch.cuda.set_device needs an index: an unindexed cuda is the rank's GPU, else the current one
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", rank.local if rank else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    if cfg.trainer.threads and cfg.trainer.threads > available_cpus():
        log.warning(f"trainer.threads={cfg.trainer.threads} is more than the {available_cpus()} CPUs this process "
                    f"may use: the threads will wait on each other; null uses all {available_cpus()}")  # fmt: skip
    threads = configure_threads(
        cfg.trainer.threads or (max(available_cpus() // rank.local_world, 1) if rank else None)
    )
    choose_cudnn_algorithms(device, cfg.trainer.cudnn_benchmark)
    train_batches, val_batches, test_batches = build_batches(cfg, device, rank)
    torch.manual_seed(cfg.seed)  # model initialisation and dropout
    model, channels_last = build_model(cfg, device)
    steps_per_epoch = len(train_batches)
    with naming_keys(cfg.optimizer, "optimizer"):
        optimizer = build_optimizer(cfg.optimizer, model)
    with naming_keys(cfg.scheduler, "scheduler"):
        scheduler = instantiate(cfg.scheduler)(
            optimizer,
            total_steps=run_steps(cfg.trainer.epochs, steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
        )
    scaler = torch.amp.GradScaler(device.type) if cfg.trainer.precision == "fp16" else None
    precision = Precision(AMP_DTYPES[cfg.trainer.precision], scaler)
    ema = None  # made before compiling: validation runs the average eagerly
    if cfg.trainer.ema:
        ema = averaged_every_step(model, optimizer, cfg.trainer.ema)
    compile_seconds = None
    if cfg.trainer.compile:
        model.compile(mode=cfg.trainer.compile_mode)  # in place: the state dict keeps its keys
        evaluated = [b for b in (val_batches, test_batches) if b is not None]
        eval_sizes = set().union(*(b.batch_sizes() for b in evaluated))
        compile_seconds = warm_up(model, train_batches.batch_sizes(), eval_sizes)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)
    state = TrainState(
        model, optimizer, scheduler, train_batches, criterion, precision, config=to_plain(cfg), ema=ema
    )
    if rank is not None:  # averages the gradients over the ranks at every step
        state.replica = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return Setup(device, state, val_batches, test_batches, threads, channels_last, compile_seconds)
