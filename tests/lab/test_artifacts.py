"""lab/artifacts.py: checkpoints found by run directory or path; and a run directory written by the main
branch before the redesign (tests/fixtures/main_run: LeNet-5, 2,000 training images, stopped by
trainer.max_steps=24 in epoch 2) still loads for evaluate, predict, export and resume."""

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from mnist_lab.artifacts import load_trained
from mnist_lab.build import build
from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.pipeline import train
from mnist_lab.resume import checkpoint_path, resume_checkpoint, saved_config
from mnist_lab.tools.evaluate import evaluate_trained
from mnist_lab.tools.export import export_trained
from mnist_lab.tools.predict import predict_files
from mnist_lab.trainer.checkpoint import load_checkpoint
from mnist_lab.trainer.evaluation import evaluate
from tests.conftest import FIXTURES, scalars

OLD_RUN = FIXTURES / "main_run"


@pytest.fixture
def old_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_root: Path) -> Path:
    """A copy of the old run directory; the working directory is the project's (its data.source.root=data)."""
    monkeypatch.chdir(PROJECT_ROOT)
    return Path(shutil.copytree(OLD_RUN, tmp_path / "main_run"))


def test_checkpoints_are_found_by_run_directory_or_file(tmp_path: Path) -> None:
    assert checkpoint_path(str(OLD_RUN), "best.pt", "ckpt") == OLD_RUN / "checkpoints" / "best.pt"
    assert checkpoint_path(str(OLD_RUN / "checkpoints" / "last.pt"), "best.pt", "ckpt").name == "last.pt"
    with pytest.raises(
        FileNotFoundError,
        match=f"ckpt={tmp_path}: no checkpoint there \\(no {tmp_path}/checkpoints/best.pt\\)",
    ):
        checkpoint_path(str(tmp_path), "best.pt", "ckpt")
    assert resume_checkpoint("auto", tmp_path) is None  # nothing to resume: a fresh start
    assert resume_checkpoint("auto", OLD_RUN) == OLD_RUN / "checkpoints" / "last.pt"
    assert resume_checkpoint(None, OLD_RUN) is None


def test_an_old_checkpoint_gives_the_validation_accuracy_it_recorded(old_run: Path) -> None:
    trained = load_trained(str(old_run), [])
    recorded = load_checkpoint(old_run / "checkpoints" / "best.pt")
    assert type(trained.model).__name__ == "LeNet" and recorded["best_epoch"] == 1
    setup = build(saved_config(recorded))
    stats = evaluate(trained.model, setup.val_batches)
    assert stats.accuracy == recorded["best_val_acc"] == 0.7132  # the same 5,000 images, the same weights
    report = evaluate_trained(trained, str(old_run / "cm.png"))
    assert "LeNet on 10,000 test images" in report and (old_run / "cm_misclassified.png").is_file()


def test_an_old_run_predicts_and_exports(old_run: Path, mnist_root: Path) -> None:
    trained = load_trained(str(old_run), [])
    from mnist_lab.data.sources import read_idx

    Image.fromarray(read_idx(mnist_root).test_images[0].numpy()).save(old_run / "digit.png")
    (result,) = predict_files(trained, str(old_run / "digit.png"))
    assert len(result["top3"]) == 3 and sum(t["probability"] for t in result["top3"]) <= 1.0
    report, passed = export_trained(trained, "onnx", str(old_run / "model.onnx"))
    assert passed and ": OK" in report


@pytest.mark.slow
def test_an_old_run_resumes_where_it_stopped(old_run: Path) -> None:
    overrides = [
        o
        for o in OmegaConf.load(old_run / ".hydra" / "overrides.yaml")
        if not o.startswith("trainer.max_steps")
    ]
    assert overrides == [
        "trainer.epochs=2",
        "data.train_subset=2000",
        "data.source.root=data",
        "trainer.histograms_every=0",
    ]
    # The defaults have changed since (batch 64, 1-pixel shifts, label smoothing): the refusal names them ...
    with pytest.raises(
        ValueError, match=r"trainer.batch_size: checkpoint 128, now 64; trainer.label_smoothing"
    ):
        train(compose(*overrides, "resume=auto"), old_run)
    # ... and with the settings it was trained with, it continues.
    then = ["trainer.batch_size=128", "augment.max_shift=2", "trainer.label_smoothing=0.0"]
    metrics = train(compose(*overrides, *then, "resume=auto"), old_run)
    assert metrics["epochs"] == 2 and metrics["best_epoch"] in (1, 2)
    steps = [step for step, _ in scalars(old_run, "train/loss_per_step")]
    assert steps == list(range(1, 2 * 16 + 1))  # 24 steps before, 8 after: no gap, no duplicate
    assert [step for step, _ in scalars(old_run, "val/acc")] == [1, 2]
    assert metrics["test_acc"] > 0.7


def test_a_model_is_not_evaluated_on_another_dataset(old_run: Path) -> None:
    with pytest.raises(
        ValueError, match=r"was trained on mnist; these overrides ask for fashion_mnist \(data.name\)"
    ):
        load_trained(str(old_run), ["data=fashion_mnist"])
    assert load_trained(str(old_run), ["data=mnist_pickle"]).cfg.data.name == "mnist"  # another source of it
