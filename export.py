"""Export a trained model to ONNX or TorchScript, with a dynamic batch dimension, and check the export.

python export.py ckpt=<run dir or checkpoint> format=onnx           # -> <run dir>/export/model.onnx
python export.py ckpt=<...> format=torchscript out=lenet.pt

The export is checked against the PyTorch model on real test images, at two batch sizes: the largest
absolute difference of the logits must be at most 1e-4 and every argmax the same; it says so, or fails.
Needs the export extra: pip install -e '.[export]' (onnx, onnxscript, onnxruntime).
"""

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

import train
from data.loader import normalize

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


def main(argv: list[str]) -> int:
    args, overrides = train.split_args(argv, ("ckpt", "format", "out"))
    if "ckpt" not in args or args.get("format") not in FORMATS:
        print("usage: python export.py ckpt=<run dir or checkpoint> format=onnx|torchscript [out=<file>]",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        trained = train.load_trained(args["ckpt"], overrides)
        mnist = instantiate(trained.cfg.data.source)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = trained.model.to("cpu", memory_format=torch.contiguous_format).eval()  # exported for the CPU
    out = Path(args.get("out") or trained.checkpoint.parent.parent / "export" / FORMATS[args["format"]])
    out.parent.mkdir(parents=True, exist_ok=True)
    images = normalize(mnist.test_images[: max(CHECK_BATCHES)])  # real test digits, (N, 1, 28, 28)
    exporter = export_onnx if args["format"] == "onnx" else export_torchscript
    exported = exporter(model, images[:2], out)
    worst, same = 0.0, True
    for size in CHECK_BATCHES:
        difference, agrees = check(model, exported, images[:size])
        worst, same = max(worst, difference), same and agrees
    verdict = "OK" if worst <= TOLERANCE and same else "FAILED"
    print(f"{out}: {args['format']}, batch dimension dynamic ({out.stat().st_size / 1e6:.2f} MB)")
    print(f"  check on real test images (batches of {' and '.join(map(str, CHECK_BATCHES))}): "
          f"max |difference| {worst:.2e} (tolerance {TOLERANCE:.0e}), same argmax: {'yes' if same else 'no'}: "
          f"{verdict}")  # fmt: skip
    if verdict != "OK":
        out.unlink()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
