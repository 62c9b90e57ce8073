"""Export a trained model to ONNX or TorchScript, with a dynamic batch dimension, and check the export.

python export.py ckpt=<run dir or checkpoint> format=onnx           # -> <run dir>/export/model.onnx
python export.py ckpt=<...> format=torchscript out=lenet.pt

The export is checked against the PyTorch model on real test images, at two batch sizes: the largest
absolute difference of the logits must be at most 1e-4 and every argmax the same; it says so, or fails.
Needs the export extra: pip install -e '.[export]' (onnx, onnxscript, onnxruntime).
"""

from mnist_lab import cli
from mnist_lab.artifacts import load_trained
from mnist_lab.errors import UserError
from mnist_lab.overrides import split_args
from mnist_lab.tools.export import FORMATS, USAGE, export_trained


def main(argv: list[str]) -> int:
    args, overrides = split_args(argv, ("ckpt", "format", "out"))
    cli.require(args, ("ckpt", "format"), USAGE)
    if args["format"] not in FORMATS:
        raise UserError(f"format={args['format']}: not an export format; choose one of {', '.join(FORMATS)}")
    report, passed = export_trained(load_trained(args["ckpt"], overrides), args["format"], args.get("out"))
    print(report)
    return 0 if passed else 1


if __name__ == "__main__":
    cli.run(main)
