"""Evaluate a saved model on the official test set (or another data source) and show what it gets wrong.

python evaluate.py ckpt=outputs/2026-11-22/10-00-00-123456-42         # a run directory: its best.pt
python evaluate.py ckpt=path/to/last.pt data=mnist_pickle data.source.path=data/mnist.pkl
python evaluate.py ckpt=<run dir> out=confusion.png
python evaluate.py ckpt=<run dir> tta=flip        # also with test-time augmentation (flip or shift), beside
python evaluate.py ckpt=<run dir> split=val tta=shift  # on the validation images the run held out: choose there

Loads the checkpoint with `weights_only=True` and the config its run trained with; prints accuracy, loss,
per-class accuracy and the confusion matrix; saves the matrix and a grid of the misclassified digits as PNG
files (default: <run dir>/evaluation/confusion_matrix.png and confusion_matrix_misclassified.png).
"""

from mnist_lab import cli
from mnist_lab.artifacts import load_trained
from mnist_lab.overrides import split_args
from mnist_lab.tools.evaluate import USAGE, evaluate_trained


def main(argv: list[str]) -> int:
    args, overrides = split_args(argv, ("ckpt", "out", "tta", "split"))
    cli.require(args, ("ckpt",), USAGE)
    trained = load_trained(args["ckpt"], overrides)
    print(evaluate_trained(trained, args.get("out"), args.get("tta"), args.get("split", "test")))
    return 0


if __name__ == "__main__":
    cli.run(main)
