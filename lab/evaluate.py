"""evaluate.py's work: a trained model on the official test set (or another source): accuracy, loss,
per-class accuracy, the confusion matrix as a table and a PNG, and a grid of the misclassified digits."""

from pathlib import Path

from data.loader import DeviceBatches
from lab.artifacts import Trained
from lab.build import AMP_DTYPES, read_data
from trainer.diagnostics import confusion_figure, confusion_matrix, confusion_table, misclassified_figure
from trainer.evaluation import predict

USAGE = "usage: python evaluate.py ckpt=<run dir or checkpoint> [out=<png>] [config overrides]"


def evaluate_trained(trained: Trained, out: str | None) -> str:
    """Evaluate on the test split of the run's data source; save the figures (default: <run dir>/evaluation/);
    return the report to print."""
    cfg = trained.cfg
    mnist = read_data(cfg)
    batches = DeviceBatches(mnist.test_images, mnist.test_labels, cfg.trainer.eval_batch_size, trained.device,
                            mean_std=(cfg.data.mean, cfg.data.std))  # fmt: skip
    stats, predictions = predict(trained.model, batches, amp_dtype=AMP_DTYPES[cfg.trainer.precision])
    classes, mean_std = list(cfg.data.classes), (cfg.data.mean, cfg.data.std)
    matrix = confusion_matrix(predictions.predicted, predictions.labels, len(classes))
    path = Path(out or trained.checkpoint.parent.parent / "evaluation" / "confusion_matrix.png")
    grid = path.with_name(f"{path.stem}_misclassified.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    name = type(trained.model).__name__
    confusion_figure(matrix, f"{name}, {stats.images:,} test images", classes).savefig(path)
    misclassified_figure(predictions, classes, mean_std).savefig(grid)
    return "\n".join([
        f"{trained.checkpoint}: {name} on {stats.images:,} test images ({cfg.data.name})",
        f"  accuracy {stats.accuracy:.2%} ({int(matrix.diag().sum()):,} of {stats.images:,})  loss {stats.loss:.4f}",
        "",
        confusion_table(matrix, classes),
        "",
        f"saved the confusion matrix to {path} and the misclassified images to {grid}",
    ])  # fmt: skip
