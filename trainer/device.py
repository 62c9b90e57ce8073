"""Pick the training device: `auto` takes CUDA, then MPS, then the CPU; an explicit device must exist."""

import torch


class DeviceUnavailable(ValueError):
    """trainer.device names a device this machine does not have (or no device at all)."""

    exit_code = 2  # a value of the user's (mnist_lab.errors)


def choose_device(name: str = "auto", job: int | None = None) -> torch.device:
    """Return the device for `name` ('auto', 'cpu', 'cuda', 'cuda:1', 'mps'); raise if it is not available here.

    `job`: the job's number in a sweep; with `auto` and several GPUs, job k trains on GPU k mod count, so
    that parallel jobs spread over the GPUs instead of all landing on the first.
    """
    if name == "auto":
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return (
                torch.device("cuda", job % count) if job is not None and count > 1 else torch.device("cuda")
            )
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceUnavailable(
            f"trainer.device={name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        raise DeviceUnavailable(
            f"trainer.device={name!r} is not available: this machine has {torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"trainer.device={name!r} is not available: this machine has no MPS device")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailable(
            f"trainer.device={name!r} is not supported; use auto, cpu, cuda, cuda:N or mps"
        )
    return device
