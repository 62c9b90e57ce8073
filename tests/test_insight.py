"""What a run shows about its model: TensorBoard images, per-class scalars, PR curves, histograms, graph and
text, read back with TensorBoard's own reader; the confusion matrix checked against an independent count."""

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from data.loader import DeviceBatches
from models import LeNet
from tests.conftest import tiny_config
from trainer.checkpoint import load_checkpoint
from trainer.diagnostics import confusion_matrix, model_summary, per_class_accuracy

TEST_IMAGES = 200  # the tiny set's test split


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    run = tmp_path_factory.mktemp("insight")
    train.train(tiny_config(tiny_mnist), run)
    return run


@pytest.fixture(scope="module")
def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_images_are_decodable_pngs_of_the_right_size(events: EventAccumulator, run_dir: Path) -> None:
    tags = events.Tags()["images"]
    assert {"val/confusion_matrix", "test/confusion_matrix", "test/misclassified"} <= set(tags)
    assert [e.step for e in events.Images("val/confusion_matrix")] == [1, 2]  # every evaluation
    wrong = round((1 - json.loads((run_dir / "metrics.json").read_text())["test_acc"]) * TEST_IMAGES)
    grid_rows = max((min(wrong, 64) + 7) // 8, 1)  # 8 digits per row, at most 64
    expected = {"val/confusion_matrix": (960, 432), "test/confusion_matrix": (960, 432),
                "test/misclassified": (832, 120 * grid_rows)}  # fmt: skip
    for tag, size in expected.items():
        event = events.Images(tag)[-1]
        picture = Image.open(io.BytesIO(event.encoded_image_string))
        picture.load()  # decodes the whole image
        assert picture.format == "PNG" and picture.size == (event.width, event.height) == size


def test_confusion_matrix_matches_an_independent_count(
    run_dir: Path, events: EventAccumulator, tiny_mnist: Path
) -> None:
    # Recompute the test predictions with the best weights, then count pairs one by one.
    cfg = tiny_config(tiny_mnist)
    setup = train.build(cfg)
    setup.model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    setup.model.eval()
    predicted, labels = [], []
    with torch.no_grad():
        for images, targets in setup.test_batches:
            predicted += setup.model(images).argmax(dim=1).tolist()
            labels += targets.tolist()
    counts = [[0] * 10 for _ in range(10)]
    for true, guess in zip(labels, predicted, strict=True):
        counts[true][guess] += 1

    table = (
        events.Tensors("test/confusion_matrix_counts/text_summary")[-1].tensor_proto.string_val[0].decode()
    )
    rows = [line for line in table.splitlines() if line.startswith("| **")]
    logged = [[int(cell) for cell in row.split("|")[2:12]] for row in rows]
    assert logged == counts
    assert sum(map(sum, logged)) == TEST_IMAGES
    assert confusion_matrix(torch.tensor(predicted), torch.tensor(labels)).tolist() == counts
    # per-class accuracy scalars agree with the same counts
    for k in range(10):
        expected = counts[k][k] / max(sum(counts[k]), 1)
        assert events.Scalars(f"test_class_acc/{k}")[-1].value == pytest.approx(expected)
    assert [e.step for e in events.Scalars("val_class_acc/3")] == [1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(counts[k][k] for k in range(10)) / TEST_IMAGES == pytest.approx(metrics["test_acc"])


def test_pr_curves_histograms_graph_and_text(events: EventAccumulator, run_dir: Path) -> None:
    tensors = set(events.Tags()["tensors"])
    assert {f"test_pr_curve/{k}" for k in range(10)} <= tensors
    curve = events.Tensors("test_pr_curve/0")[-1]
    assert curve.tensor_proto.tensor_shape.dim[0].size == 6  # TP, FP, TN, FN, precision, recall
    histograms = set(events.Tags()["histograms"])
    assert {"weights/conv.0.weight", "grads/conv.0.weight", "weights/fc.1.bias"} <= histograms
    assert [e.step for e in events.Histograms("weights/conv.0.weight")] == [1, 2]
    assert events.Tags()["graph"] is True
    assert {"config/text_summary", "model_summary/text_summary", "provenance/text_summary"} <= tensors
    summary_text = events.Tensors("model_summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "61,706" in summary_text and "[1, 6, 28, 28]" in summary_text
    provenance = events.Tensors("provenance/text_summary")[0].tensor_proto.string_val[0].decode()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("git_commit", "git_dirty", "python", "torch", "torchvision", "device_name", "command"):
        assert key in metrics and f"**{key}**" in provenance
    assert metrics["torch"] == torch.__version__
    assert "lr" in events.Tags()["scalars"]


def test_histograms_can_be_turned_off(tmp_path: Path, tiny_mnist: Path) -> None:
    train.train(tiny_config(tiny_mnist, "trainer.histograms_every=0", "trainer.epochs=1"), tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["histograms"] == []


def test_model_summary_lists_the_paper_shapes() -> None:
    text = model_summary(LeNet(), torch.zeros(1, 1, 28, 28))
    for shape in (
        "[1, 6, 28, 28]",
        "[1, 6, 14, 14]",
        "[1, 16, 10, 10]",
        "[1, 16, 5, 5]",
        "[1, 84]",
        "[1, 10]",
    ):
        assert shape in text
    assert "Total params: 61,706" in text


def test_per_class_accuracy_of_a_class_without_examples_is_zero() -> None:
    matrix = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert per_class_accuracy(matrix).tolist() == [0.5, 1.0, 0.0]


def test_evaluation_keeps_the_misclassified_images(tiny_mnist: Path) -> None:
    from trainer.loop import predict

    model = LeNet()
    images = torch.randint(0, 255, (50, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50,))
    batches = DeviceBatches(images, labels, 16, torch.device("cpu"))
    stats, predictions = predict(model, batches)
    wrong = (predictions.predicted != predictions.labels).nonzero().squeeze(1)
    assert torch.equal(predictions.wrong_index, wrong)
    assert len(predictions.wrong_images) == len(wrong) and stats.accuracy == pytest.approx(
        1 - len(wrong) / 50
    )
    all_inputs = torch.cat([x for x, _ in batches])
    assert torch.equal(predictions.wrong_images, all_inputs[wrong])
