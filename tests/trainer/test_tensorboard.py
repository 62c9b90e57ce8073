"""trainer/tensorboard.py: what a run shows in TensorBoard (images, per-class scalars, PR curves, histograms,
graph, text, HParams), read back with TensorBoard's own reader; the confusion matrix checked against an
independent count."""

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lab.build import build
from mnist_lab.pipeline import train
from mnist_lab.trainer.checkpoint import load_checkpoint
from mnist_lab.trainer.diagnostics import confusion_matrix
from tests.conftest import tiny_config

TEST_IMAGES = 200  # the tiny set's test split


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    run = tmp_path_factory.mktemp("insight")
    train(tiny_config(tiny_mnist), run)
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
    # One panel (the fractions) for validation; the test has the counts beside it.
    panel = events.Images("val/confusion_matrix")[-1].width
    expected = {"val/confusion_matrix": (panel, 480), "test/confusion_matrix": (2 * panel, 480),
                "test/misclassified": (8 * 104, 30 + 108 * grid_rows)}  # fmt: skip
    for tag, size in expected.items():
        event = events.Images(tag)[-1]
        picture = Image.open(io.BytesIO(event.encoded_image_string))
        picture.load()  # decodes the whole image
        assert picture.format == "PNG" and picture.size == (event.width, event.height) == size
    assert 10 * 40 < panel < 10 * 40 + 80  # ten 40-pixel cells and the class names


def test_confusion_matrix_matches_an_independent_count(
    run_dir: Path, events: EventAccumulator, tiny_mnist: Path
) -> None:
    # Recompute the test predictions with the best weights, then count pairs one by one.
    cfg = tiny_config(tiny_mnist)
    setup = build(cfg)
    model = setup.state.model
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    model.eval()
    predicted, labels = [], []
    with torch.no_grad():
        for images, targets in setup.test_batches:
            predicted += model(images).argmax(dim=1).tolist()
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


def test_pr_curves_count_the_best_models_test_predictions(
    events: EventAccumulator, run_dir: Path, tiny_mnist: Path
) -> None:
    setup = build(tiny_config(tiny_mnist))
    model = setup.state.model
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    model.eval()
    with torch.no_grad():
        batches = list(setup.test_batches)
        probs = torch.cat([model(images).softmax(dim=1) for images, _ in batches])
        labels = torch.cat([targets for _, targets in batches])
    assert {f"test_pr_curve/{k}" for k in range(10)} <= set(events.Tags()["tensors"])
    for k in (0, 7):
        event = events.Tensors(f"test_pr_curve/{k}")[-1]
        tp, fp, tn, fn, precision, recall = torch.tensor(list(event.tensor_proto.float_val)).reshape(6, -1)
        thresholds = len(tp) - 1
        for i in (0, thresholds // 2, thresholds * 9 // 10):  # counted at probability >= i / thresholds
            called = (probs[:, k] * thresholds).floor() >= i
            assert tp[i] == (called & (labels == k)).sum() and fp[i] == (called & (labels != k)).sum()
            assert tn[i] == (~called & (labels != k)).sum() and fn[i] == (~called & (labels == k)).sum()
        assert tp[0] + fn[0] == (labels == k).sum() and recall[0] == 1.0


def test_histograms_graph_and_text(events: EventAccumulator, run_dir: Path) -> None:
    tensors = set(events.Tags()["tensors"])
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
    train(tiny_config(tiny_mnist, "trainer.histograms_every=0", "trainer.epochs=1"), tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["histograms"] == []


def test_run_log_writes_each_tag_where_tensorboard_reads_it(tmp_path: Path) -> None:
    from mnist_lab.trainer.evaluation import EpochStats, SetPredictions
    from mnist_lab.trainer.tensorboard import EPOCH_TAGS, STEP_LOSS_TAG, TEST_TAGS, RunLog, epoch_scalars

    probs = torch.eye(10)[torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])]  # the last one wrong: 9 -> 8
    labels = torch.arange(10)
    predictions = SetPredictions(probs, labels, torch.zeros(1, 1, 28, 28), torch.tensor([9]))
    train, val = EpochStats(0.5, 0.8, 100, 2.0), EpochStats(0.4, 0.9, 10, 0.1)
    with RunLog(tmp_path / "run", histograms_every=0) as run_log:
        run_log.step_losses([1.0, 0.5], steps_before=0)
        run_log.epoch(1, epoch_scalars(train, val, lr=0.01), predictions)
        run_log.test(EpochStats(0.3, 0.9, 10, 0.1), predictions, step=1)
    with RunLog(tmp_path / "rank1", write=False) as silent:  # a DDP rank but 0 writes nothing
        silent.epoch(1, epoch_scalars(train, val, lr=0.01), predictions)
    assert not (tmp_path / "rank1").exists() or not list((tmp_path / "rank1").iterdir())

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    tags = events.Tags()
    assert set(EPOCH_TAGS) | set(TEST_TAGS) | {STEP_LOSS_TAG, "val_class_acc/9", "test_class_acc/9"} <= set(
        tags["scalars"]
    )
    assert [(e.step, e.value) for e in events.Scalars(STEP_LOSS_TAG)] == [(1, 1.0), (2, 0.5)]
    assert events.Scalars("val/acc")[0].value == pytest.approx(0.9)
    assert (
        events.Scalars("test_class_acc/9")[0].value == 0.0
        and events.Scalars("test_class_acc/8")[0].value == 1.0
    )
    assert {"val/confusion_matrix", "test/confusion_matrix", "test/misclassified"} <= set(tags["images"])


def test_a_run_log_reopened_within_the_second_continues_where_tensorboard_reads_it(tmp_path: Path) -> None:
    from mnist_lab.trainer.tensorboard import STEP_LOSS_TAG, RunLog

    for steps_before in range(3):  # a run stopped and resumed twice in the same second, as a test does
        with RunLog(tmp_path, histograms_every=0) as run_log:
            run_log.step_losses([float(steps_before)], steps_before=steps_before)
    files = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert (
        len({name.split(".")[3] for name in files}) == 3
    )  # each file made in a later second than the one before
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars(STEP_LOSS_TAG)] == [(1, 0.0), (2, 1.0), (3, 2.0)]
