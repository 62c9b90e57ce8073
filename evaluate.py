"""Evaluate a saved model on the official test set (or another data source) and show what it gets wrong.

python evaluate.py ckpt=outputs/2026-11-22/10-00-00-123456-42         # a run directory: its best.pt
python evaluate.py ckpt=path/to/last.pt data=mnist_pickle data.source.path=data/mnist.pkl
python evaluate.py ckpt=<run dir> out=confusion.png

Loads the checkpoint with `weights_only=True` and the config its run trained with; prints accuracy, loss,
per-class accuracy and the confusion matrix; saves the matrix and a grid of the misclassified digits as PNG
files (default: <run dir>/evaluation/confusion_matrix.png and confusion_matrix_misclassified.png).
"""

import logging
import sys
from pathlib import Path

from hydra.errors import HydraException
from hydra.utils import instantiate

import train
from data.loader import DeviceBatches
from trainer.diagnostics import confusion_figure, confusion_matrix, confusion_table, misclassified_figure
from trainer.loop import predict

log = logging.getLogger("evaluate")


def main(argv: list[str]) -> int:
    args, overrides = train.split_args(argv, ("ckpt", "out"))
    if "ckpt" not in args:
        print(
            "usage: python evaluate.py ckpt=<run dir or checkpoint> [out=<png>] [config overrides]",
            file=sys.stderr,
        )
        return 2
    try:
        trained = train.load_trained(args["ckpt"], overrides)
        mnist = instantiate(trained.cfg.data.source)
    except (ValueError, FileNotFoundError, KeyError, HydraException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg = trained.cfg
    batches = DeviceBatches(mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, trained.device)
    stats, predictions = predict(trained.model, batches, amp_dtype=train.PRECISIONS[cfg.trainer.precision])
    matrix = confusion_matrix(predictions.predicted, predictions.labels)
    out = Path(args.get("out") or trained.checkpoint.parent.parent / "evaluation" / "confusion_matrix.png")
    grid = out.with_name(f"{out.stem}_misclassified.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{type(trained.model).__name__}, {stats.images:,} test images"
    confusion_figure(matrix, title).savefig(out)
    misclassified_figure(predictions).savefig(grid)
    print(f"{trained.checkpoint}: {type(trained.model).__name__} on {stats.images:,} test images")
    print(
        f"  accuracy {stats.accuracy:.2%} ({int(matrix.diag().sum()):,} of {stats.images:,})  loss {stats.loss:.4f}"
    )
    print()
    print(confusion_table(matrix))
    print()
    print(f"saved the confusion matrix to {out} and the misclassified digits to {grid}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(sys.argv[1:]))
