"""export.py's work: a trained model to ONNX or TorchScript with a dynamic batch dimension, checked against
PyTorch on real test images."""

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from mnist_lab.artifacts import Trained
from mnist_lab.build import read_data
from mnist_lab.data.loader import normalize
from mnist_lab.resume import run_dir_of
from mnist_lab.trainer.files import atomic_write

USAGE = "usage: python export.py ckpt=<run dir or checkpoint> format=onnx|torchscript [out=<file>]"
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TOLERANCE = 1e-4
CHECK_BATCHES = (256, 7)  # two sizes: the batch dimension must really be dynamic


def export_onnx(model: nn.Module, example: Tensor) -> tuple[bytes, Callable[[Tensor], Tensor]]:
    """The model as ONNX bytes (torch.onnx's dynamo exporter), and a function running them with onnxruntime."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], verbose=False,
                                    output_names=["logits"], dynamic_shapes={"x": {0: batch}})  # fmt: skip
    content = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    return content, lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def export_torchscript(model: nn.Module, example: Tensor) -> tuple[bytes, Callable[[Tensor], Tensor]]:
    """The model traced with TorchScript, as the bytes torch.jit.save writes, and the module loaded back."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still widely loaded
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    return buffer.getvalue(), lambda x: loaded(x)


def check(model: nn.Module, exported: Callable[[Tensor], Tensor], images: Tensor) -> tuple[float, bool]:
    """Largest absolute logit difference and whether every argmax agrees, on `images`."""
    with torch.inference_mode():
        expected = model(images)
        got = exported(images)
    return float((expected - got).abs().max()), bool(torch.equal(expected.argmax(1), got.argmax(1)))


def export_trained(trained: Trained, fmt: str, out: str | None) -> tuple[str, bool]:
    """Export in memory, check what was exported, and write it to `out` (default <run dir>/export/) only if it
    passed, atomically: a failed check or a full disk leaves the file that was there as it was. Returns the
    report to print and whether it passed."""
    mnist = read_data(trained.cfg)
    model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()  # exported for the CPU
    path = Path(out or run_dir_of(trained.checkpoint) / "export" / FORMATS[fmt])
    images = normalize(mnist.test_images[: max(CHECK_BATCHES)], trained.cfg.data.mean, trained.cfg.data.std)
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    content, exported = exporter(model, images[:2])
    worst, same = 0.0, True
    for size in CHECK_BATCHES:
        difference, agrees = check(model, exported, images[:size])
        worst, same = max(worst, difference), same and agrees
    passed = worst <= TOLERANCE and same
    if passed:
        atomic_write(path, content, "export")
    report = (
        f"{path}: {fmt}, batch dimension dynamic ({len(content) / 1e6:.2f} MB{'' if passed else ', not written'})\n"
        f"  check on real test images (batches of {' and '.join(map(str, CHECK_BATCHES))}): "
        f"max |difference| {worst:.2e} (tolerance {TOLERANCE:.0e}), same argmax: {'yes' if same else 'no'}: "
        f"{'OK' if passed else 'FAILED'}"
    )
    return report, passed
