"""Settings that make training faster without changing what it computes: threads, memory format, compile.

Measured on a 2-core CPU (torch 2.14, medians of 5 interleaved rounds; see bench/throughput.py):
channels_last makes LeNet's training step 15-30% faster, but LeNetRes's 10-20% slower, because batch
norm in channels_last is slow on the CPU in eager mode; torch.compile adds a few percent for LeNet
and ~20% for LeNetRes, after a warm-up of 1-11 s.
"""

import copy
import os
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a scheduler such as SLURM granted)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS if set (a parallel sweep sets it for its jobs), else the CPUs available."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cpus()


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to `threads`, or to `default_threads()` when None; return the count.

    More threads than cores makes OpenMP threads spin against each other: a LeNet step was measured
    35x slower with two 2-thread processes on 2 cores.
    """
    count = threads or default_threads()
    torch.set_num_threads(count)
    return count


def choose_cudnn_algorithms(device: torch.device, benchmark: bool) -> None:
    """On CUDA, choose cuDNN's convolution algorithms. With `benchmark`, cuDNN times them for the run's fixed
    batch shapes and keeps the fastest, which may differ from one process to the next: a resumed run then
    agrees with an unbroken one up to floating-point order, not bit for bit. Without it (the default), cuDNN
    uses deterministic algorithms, so that a resumed run is bit-identical."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = not benchmark


def prefers_channels_last(model: nn.Module, setting: bool | str) -> bool:
    """Resolve `trainer.channels_last`: true/false as given; `auto` is on for conv nets without batch norm."""
    if setting == "auto":
        modules = list(model.modules())
        has_conv = any(isinstance(m, nn.Conv2d) for m in modules)
        return has_conv and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    return bool(setting)  # lab.config.check_config refused anything else


def warm_up(model: nn.Module, train_sizes: Iterable[int], eval_sizes: Iterable[int]) -> float:
    """Run `model` once per batch size, training (forward and backward) and evaluating, then restore it.

    With a compiled model this does the compiling, so that epoch times show steady speed and the warm-up
    is reported on its own. Weights, buffers (batch-norm statistics) and the RNG are left as they were. Each
    call starts a new CUDA-graph step (compile modes reduce-overhead and max-autotune), as a training step does.
    """
    device = next(model.parameters()).device
    state, rng, was_training = copy.deepcopy(model.state_dict()), torch.get_rng_state(), model.training
    start = time.perf_counter()
    model.train()
    for size in sorted(set(train_sizes)):
        images = torch.zeros(size, 1, 28, 28, device=device)
        torch.compiler.cudagraph_mark_step_begin()
        F.cross_entropy(model(images), torch.zeros(size, dtype=torch.int64, device=device)).backward()
    model.eval()
    with torch.inference_mode():
        for size in sorted(set(eval_sizes)):
            torch.compiler.cudagraph_mark_step_begin()
            model(torch.zeros(size, 1, 28, 28, device=device))
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    model.train(was_training)
    return seconds
