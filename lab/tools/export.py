"""export.py's work: a trained model to ONNX or TorchScript with a dynamic batch dimension, checked against
PyTorch on real test images."""

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from data.loader import normalize
from lab.artifacts import Trained
from lab.build import read_data

USAGE = "usage: python export.py ckpt=<run dir or checkpoint> format=onnx|torchscript [out=<file>]"
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TOLERANCE = 1e-4
CHECK_BATCHES = (256, 7)  # two sizes: the batch dimension must really be dynamic


def export_onnx(model: nn.Module, example: Tensor, out: Path) -> Callable[[Tensor], Tensor]:
    """Write `out` with torch.onnx's dynamo exporter; return a function running it with onnxruntime."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], verbose=False,
                                    output_names=["logits"], dynamic_shapes={"x": {0: batch}})  # fmt: skip
    program.save(str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def export_torchscript(model: nn.Module, example: Tensor, out: Path) -> Callable[[Tensor], Tensor]:
    """Write `out` traced with TorchScript; return the module loaded back from the file."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still widely loaded
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out))
        loaded = torch.jit.load(str(out))
    return lambda x: loaded(x)


def check(model: nn.Module, exported: Callable[[Tensor], Tensor], images: Tensor) -> tuple[float, bool]:
    """Largest absolute logit difference and whether every argmax agrees, on `images`."""
    with torch.inference_mode():
        expected = model(images)
        got = exported(images)
    return float((expected - got).abs().max()), bool(torch.equal(expected.argmax(1), got.argmax(1)))


def export_trained(trained: Trained, fmt: str, out: str | None) -> tuple[str, bool]:
    """Export to `out` (default <run dir>/export/), check it; the report to print and whether it passed
    (a failed export's file is removed)."""
    mnist = read_data(trained.cfg)
    model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()  # exported for the CPU
    path = Path(out or trained.checkpoint.parent.parent / "export" / FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    images = normalize(mnist.test_images[: max(CHECK_BATCHES)], trained.cfg.data.mean, trained.cfg.data.std)
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    exported = exporter(model, images[:2], path)
    worst, same = 0.0, True
    for size in CHECK_BATCHES:
        difference, agrees = check(model, exported, images[:size])
        worst, same = max(worst, difference), same and agrees
    passed = worst <= TOLERANCE and same
    report = (
        f"{path}: {fmt}, batch dimension dynamic ({path.stat().st_size / 1e6:.2f} MB)\n"
        f"  check on real test images (batches of {' and '.join(map(str, CHECK_BATCHES))}): "
        f"max |difference| {worst:.2e} (tolerance {TOLERANCE:.0e}), same argmax: {'yes' if same else 'no'}: "
        f"{'OK' if passed else 'FAILED'}"
    )
    if not passed:
        path.unlink()
    return report, passed
