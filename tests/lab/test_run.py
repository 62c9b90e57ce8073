"""lab/run.py: whole seeded runs on tiny synthetic data and one on real MNIST; metrics.json, checkpoints and
TensorBoard curves; exact resume; NaN; bad values refused before anything is written; status.json."""

import json
import logging
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lab.artifacts import load_trained
from mnist_lab.build import build
from mnist_lab.config import compose
from mnist_lab.data.loader import DeviceBatches
from mnist_lab.data.sources import read_idx
from mnist_lab.errors import UserError
from mnist_lab.models import LeNet
from mnist_lab.pipeline import summary, train, train_built
from mnist_lab.shell import Job, run_job
from mnist_lab.status import read_status
from mnist_lab.tools.evaluate import evaluate as evaluate_checkpoint
from mnist_lab.tools.evaluate import evaluate_trained
from mnist_lab.tools.export import export_trained
from mnist_lab.tools.predict import predict_files
from mnist_lab.trainer.checkpoint import load_checkpoint
from mnist_lab.trainer.evaluation import evaluate
from mnist_lab.trainer.schedules import one_cycle
from mnist_lab.trainer.stopping import NonFiniteLoss, TrainingStopped
from mnist_lab.trainer.tensorboard import EPOCH_TAGS
from tests.conftest import scalars, tiny_config
from tests.data.test_images import product_photo

TIMING_KEYS = {"train_seconds", "images_per_second", "time/epoch_s", "throughput/img_per_s"}


def run_tiny(tmp_path: Path, tiny_mnist: Path, name: str, *overrides: str) -> tuple[dict, Path]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    metrics = train(tiny_config(tiny_mnist, *overrides), run_dir)
    return metrics, run_dir


def without_timings(metrics: dict) -> dict:
    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in TIMING_KEYS}

    return {**strip(metrics), "history": [strip(h) for h in metrics["history"]]}


def test_seeded_runs_repeat_exactly_and_seeds_differ(tmp_path: Path, tiny_mnist: Path) -> None:
    first, first_dir = run_tiny(tmp_path, tiny_mnist, "a", "seed=7")
    second, second_dir = run_tiny(tmp_path, tiny_mnist, "b", "seed=7")
    other, other_dir = run_tiny(tmp_path, tiny_mnist, "c", "seed=8")
    assert without_timings(first) == without_timings(second)
    assert json.loads((first_dir / "metrics.json").read_text())["test_acc"] == first["test_acc"]
    weights = [
        load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (first_dir, second_dir, other_dir)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert first["history"][-1]["train/loss"] < first["history"][0]["train/loss"]


def test_run_writes_metrics_checkpoints_and_tensorboard_curves(tmp_path: Path, tiny_mnist: Path) -> None:
    metrics, run_dir = run_tiny(tmp_path, tiny_mnist, "run", "trainer.epochs=3", "model=lenet_res")
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "model",
        "parameters",
        "epochs",
        "best_val_acc",
        "test_loss",
        "test_acc",
        "train_seconds",
        "images_per_second",
        "device",
        "seed",
        "git_commit",
    ):
        assert key in saved, key
    assert saved["model"] == "LeNetRes" and saved["epochs"] == 3 and saved["device"] == "cpu"
    assert saved["test_acc"] > 0.9  # the synthetic classes are easy

    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and best["epoch"] == saved["best_epoch"]
    assert best["best_val_acc"] == saved["best_val_acc"]
    assert last["config"]["model"]["_target_"] == "mnist_lab.models.LeNetRes"

    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in EPOCH_TAGS:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx(
        [h["val/acc"] for h in saved["history"]]
    )
    assert len(events.Scalars("test/acc")) == 1 and events.Scalars("test/acc")[0].value == pytest.approx(
        saved["test_acc"]
    )
    assert {"test/loss", "test/acc"} <= set(scalars)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # one writer per run directory


@pytest.mark.parametrize("ema", [None, 0.9])
def test_test_set_is_evaluated_with_the_best_checkpoint(
    tmp_path: Path, tiny_mnist: Path, ema: float | None
) -> None:
    metrics, run_dir = run_tiny(
        tmp_path, tiny_mnist, "best", "trainer.epochs=2", f"trainer.ema={ema or 'null'}"
    )
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert ("trained_model" in best) is bool(
        ema
    )  # with trainer.ema, "model" holds the average: validated, tested
    model = LeNet()
    model.load_state_dict(best["model"])

    data = read_idx(tiny_mnist, verify_md5=False)
    stats = evaluate(model, DeviceBatches(data.test_images, data.test_labels, 64, torch.device("cpu")))
    assert stats.accuracy == metrics["test_acc"]


@pytest.mark.parametrize(
    ("override", "message"),
    [  # every checked key's message is tested in tests/lab/test_config.py; here, one of them through a run,
        ("trainer.batch_size=0", "trainer.batch_size must be an integer > 0, got 0"),
        ("trainer.device=cuda:7", "trainer.device='cuda:7' is not available"),  # and one checked at build
    ],
)
def test_bad_values_are_refused_by_name(
    tmp_path: Path, tiny_mnist: Path, override: str, message: str
) -> None:
    if override.startswith("trainer.device") and torch.cuda.device_count() > 7:
        pytest.fail("this test assumes fewer than 8 CUDA devices")
    with pytest.raises(ValueError, match=re.escape(message)):
        run_tiny(tmp_path, tiny_mnist, "bad", override)
    assert not list((tmp_path / "bad").iterdir())  # nothing written for a run that could not start


STEPS_PER_EPOCH = 16  # 500 tiny training images in batches of 32


@pytest.mark.parametrize(
    "overrides",
    [("model=resmlp",), ("augment=affine_elastic", "augment.max_shift=1"), ("augment=clothing",)],
    ids=[
        "dropout",
        "distortions",
        "crop_flip_erase",
    ],  # the RNG state matters; the loader's generator draws the augmentations
)
def test_resume_mid_epoch_matches_never_stopping(
    tmp_path: Path, tiny_mnist: Path, overrides: tuple[str, ...]
) -> None:
    straight = tmp_path / "straight"
    train(tiny_config(tiny_mnist, *overrides), straight)

    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingStopped) as stop:
        train(tiny_config(tiny_mnist, *overrides, "trainer.max_steps=21"), stopped)
    assert stop.value.exit_code == 0 and "in epoch 2" in stop.value.reason
    midway = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (midway["epoch"], midway["step"], midway["loader"]["next_batch"]) == (1, 21, 5)
    resumed = train(tiny_config(tiny_mnist, *overrides, "resume=auto"), stopped)

    final = [load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (straight, stopped)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    losses = [scalars(d, "train/loss_per_step") for d in (straight, stopped)]
    assert [step for step, _ in losses[1]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # no gap, no duplicate
    assert losses[0] == losses[1]
    assert [step for step, _ in scalars(stopped, "val/acc")] == [1, 2]
    expected = json.loads((straight / "metrics.json").read_text())
    assert without_timings(resumed) == without_timings(expected)
    images = EventAccumulator(str(straight)).Reload().Images("train/augmented_digits")
    assert len(images) == 1 and images[0].width > 28 * 7  # one grid of 64 training digits, once


def test_fractional_epochs_end_normally_and_resume_inside_the_last_part(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    straight = tmp_path / "straight"
    metrics = train(tiny_config(tiny_mnist, "trainer.epochs=1.5"), straight)
    last = load_checkpoint(straight / "checkpoints" / "last.pt")
    assert (last["epoch"], last["step"], last["tally"]) == (2, 24, None)  # 16 + 8 steps: a finished run
    assert metrics["epochs"] == 1.5 and [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [step for step, _ in scalars(straight, "train/loss_per_step")] == list(range(1, 25))
    assert [step for step, _ in scalars(straight, "test/acc")] == [2]
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=compose().optimizer.lr)
    schedule = one_cycle(optimizer, total_steps=24, steps_per_epoch=16)
    for _ in range(24):
        optimizer.step()
        schedule.step()
    assert metrics["history"][-1]["lr"] == pytest.approx(schedule.get_last_lr()[0])  # the schedule spans 1.5

    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingStopped, match="in epoch 2"):
        train(tiny_config(tiny_mnist, "trainer.epochs=1.5", "trainer.max_steps=20"), stopped)
    resumed = train(tiny_config(tiny_mnist, "trainer.epochs=1.5", "resume=auto"), stopped)
    assert without_timings(resumed) == without_timings(metrics)
    again = train(tiny_config(tiny_mnist, "trainer.epochs=1.5", "resume=auto"), stopped)  # nothing left to do
    assert (
        load_checkpoint(stopped / "checkpoints" / "last.pt")["step"] == 24
        and again["test_acc"] == metrics["test_acc"]
    )


def test_the_speedrun_recipe_builds_what_it_says_and_runs(tmp_path: Path, tiny_mnist: Path) -> None:
    cfg = tiny_config(tiny_mnist, "experiment=speedrun", "trainer.epochs=1.5")
    setup = build(cfg)
    model, optimizer = setup.state.model, setup.state.optimizer
    assert isinstance(model.pool, torch.nn.MaxPool2d) and isinstance(model.activation, torch.nn.ReLU)
    assert optimizer.param_groups[0]["betas"] == (0.7, 0.9)
    assert setup.state.criterion.label_smoothing == 0.1 and setup.state.train_batches.max_shift == 1
    metrics = train(cfg, tmp_path)
    assert metrics["epochs"] == 1.5 and load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 24


def test_validation_size_0_trains_on_everything_and_keeps_the_last_epoch(
    tmp_path: Path, tiny_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        metrics = train(tiny_config(tiny_mnist, "data.validation_size=0"), tmp_path)
    assert metrics["best_val_acc"] is None and metrics["best_epoch"] == 2
    assert all("val/acc" not in h and "val/loss" not in h for h in metrics["history"])
    assert "no validation split (data.validation_size=0): best.pt is the last epoch's weights" in caplog.text
    assert "600 training, no validation, " in caplog.text  # the tiny set's 600 images, all trained on
    assert "epoch 2/2  train loss" in caplog.text and "no validation  lr" in caplog.text
    best, last = (load_checkpoint(tmp_path / "checkpoints" / f"{n}.pt")["model"] for n in ("best", "last"))
    assert all(torch.equal(best[k], last[k]) for k in best)
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()
    assert "train/acc" in tags["scalars"] and "test/acc" in tags["scalars"]
    assert not [t for t in tags["scalars"] if t.startswith("val")]
    assert "none: no validation split" in summary(metrics, tmp_path)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path, tiny_mnist: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_mnist, "trainer.epochs=1"), run)
    for override, named in (
        (
            "model=lenet_res",
            "model._target_: checkpoint 'mnist_lab.models.LeNet', now 'mnist_lab.models.LeNetRes'",
        ),
        ("trainer.batch_size=64", "trainer.batch_size: checkpoint 32, now 64"),
    ):
        with pytest.raises(
            ValueError, match=f"resume=.*last.pt was trained with another config: .*{re.escape(named)}"
        ):
            train(tiny_config(tiny_mnist, "trainer.epochs=1", override, f"resume={run}"), tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="resume=/nowhere: no checkpoint at /nowhere"):
        train(tiny_config(tiny_mnist, "resume=/nowhere"), tmp_path / "other")


def test_a_lone_last_pt_resumed_elsewhere_makes_its_own_best(tmp_path: Path, tiny_mnist: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(tiny_config(tiny_mnist, "trainer.max_steps=16"), run)  # epoch 1 of 2
    lone = tmp_path / "copied" / "last.pt"
    lone.parent.mkdir()
    lone.write_bytes((run / "checkpoints" / "last.pt").read_bytes())  # without the best.pt beside it
    metrics = train(tiny_config(tiny_mnist, f"resume={lone}"), tmp_path / "new")
    history = metrics["history"]
    best = max(history, key=lambda row: row["val/acc"])  # epoch 1's weights are kept as its best.pt
    assert (metrics["best_epoch"], metrics["best_val_acc"]) == (best["epoch"], best["val/acc"])
    tested = load_checkpoint(tmp_path / "new" / "checkpoints" / "best.pt")
    assert tested["epoch"] == metrics["best_epoch"]


class PoisonedBatches(DeviceBatches):
    """Yields NaN images at one batch of one epoch."""

    epoch, poison_epoch, poison_batch = 0, 2, 3

    def __iter__(self):
        self.epoch += 1
        for number, (images, labels) in enumerate(super().__iter__(), start=1):
            if (self.epoch, number) == (self.poison_epoch, self.poison_batch):
                images = torch.full_like(images, float("nan"))
            yield images, labels


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    cfg = tiny_config(tiny_mnist)
    setup = build(cfg)
    good = setup.state.train_batches
    setup.state.train_batches = PoisonedBatches(good.images, good.labels, good.batch_size, setup.device,
                                          augment=good.augment, seed=cfg.seed)  # fmt: skip
    with pytest.raises(
        NonFiniteLoss,
        match=r"loss is nan .*epoch 2, global step 19; the update was not applied; last good checkpoint: .*last\.pt",
    ):
        train_built(setup, cfg, tmp_path)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == STEPS_PER_EPOCH
    assert all(
        torch.isfinite(p).all() for p in setup.state.model.parameters()
    )  # the bad update was not applied
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_a_bad_value_ends_a_single_run_with_status_2_and_says_why(tmp_path: Path, tiny_mnist: Path) -> None:
    job = Job(tmp_path, ["model.activation=swish"])
    with pytest.raises(UserError) as failed:
        run_job(tiny_config(tiny_mnist, "model.activation=swish"), job)
    assert failed.value.exit_code == 2
    status = read_status(tmp_path)
    assert status["status"] == "failed" and status["exit_code"] == 2
    assert status["error"] == "model.activation must be one of gelu, relu, tanh, got 'swish'"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "status.json"]  # nothing else written


@pytest.mark.parametrize(
    ("raised", "recorded", "bug"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
         "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB; a smaller trainer.batch_size needs less",
         False),
        (KeyError("momentum"), "KeyError: 'momentum'", True),  # a bug of the code: its traceback is kept
    ],
)  # fmt: skip
def test_a_failure_of_the_machine_or_the_code_in_a_sweep_job_is_recorded_and_the_sweep_goes_on(
    raised: Exception, recorded: str, bug: bool, tmp_path: Path, tiny_mnist: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    adam_step, steps = torch.optim.Adam.step, []

    def failing_step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:  # in epoch 2
        steps.append(1)
        if len(steps) == STEPS_PER_EPOCH + 3:
            raise raised
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", failing_step)  # before the run makes its optimizer
    with caplog.at_level(logging.ERROR, logger="train"):
        outcome = run_job(tiny_config(tiny_mnist), Job(tmp_path, ["seed=0"], number=0))
    assert outcome is None  # nothing raised: the sweep goes on
    status = read_status(tmp_path)
    assert (status["status"], status["exit_code"], status["error"]) == ("failed", 1, recorded)
    assert status.get("bug", False) is bug
    assert ("Traceback" in caplog.text and "failing_step" in caplog.text) is bug  # a bug's traceback alone
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1  # what was saved stays


def test_status_json_follows_the_run_epoch_by_epoch(tmp_path: Path, tiny_mnist: Path) -> None:
    from mnist_lab.shell import epoch_end_callables
    from mnist_lab.trainer.evaluation import EpochStats

    job = Job(tmp_path, ["seed=3"])
    (record,) = epoch_end_callables(tiny_config(tiny_mnist), job)
    record(2, EpochStats(loss=0.1, accuracy=0.875, images=100, seconds=1.0))
    status = read_status(tmp_path)
    assert (status["status"], status["epoch"], status["val_acc"], status["overrides"]) == (
        "running",
        2,
        0.875,
        ["seed=3"],
    )
    run = Job(tmp_path / "run", ["seed=3"])  # tmp_path holds a status.json that no run owns: refused
    completed = run_job(tiny_config(tiny_mnist, "seed=3"), run)
    assert read_status(run.run_dir)["status"] == "completed"
    assert read_status(run.run_dir)["best_val_acc"] == completed


@pytest.mark.cuda
@pytest.mark.parametrize(("precision", "cudnn_benchmark"), [("fp32", False), ("bf16", False), ("fp32", True)])
def test_on_cuda_a_run_trains_resumes_exactly_evaluates_and_exports(
    tmp_path: Path, tiny_mnist: Path, precision: str, cudnn_benchmark: bool
) -> None:
    on_cuda = (
        "trainer.device=cuda",
        f"trainer.precision={precision}",
        f"trainer.cudnn_benchmark={cudnn_benchmark}",
    )
    straight = train(tiny_config(tiny_mnist, *on_cuda), tmp_path / "straight")
    assert straight["device"] == "cuda:0" and straight["test_acc"] > 0.5
    assert (
        torch.backends.cudnn.benchmark is cudnn_benchmark
        and torch.backends.cudnn.deterministic is not cudnn_benchmark
    )
    with pytest.raises(TrainingStopped):
        train(tiny_config(tiny_mnist, *on_cuda, "trainer.max_steps=21"), tmp_path / "stopped")
    resumed = train(tiny_config(tiny_mnist, *on_cuda, "resume=auto"), tmp_path / "stopped")
    final = [
        load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"] for d in ("straight", "stopped")
    ]
    if cudnn_benchmark:  # cuDNN's fastest algorithms, chosen anew on resume: equal up to rounding
        assert all(torch.allclose(final[0][k].float(), final[1][k].float(), atol=1e-3) for k in final[0])
    else:  # deterministic algorithms: bit for bit
        assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
        assert resumed["test_acc"] == straight["test_acc"]

    trained = load_trained(str(tmp_path / "straight"), [])
    assert trained.device.type == "cuda"
    report = evaluate_trained(trained, str(tmp_path / "eval" / "cm.png"))
    assert f"accuracy {straight['test_acc']:.2%}" in report
    report, passed = export_trained(load_trained(str(tmp_path / "straight"), []), "torchscript", None)
    assert passed, report


@pytest.mark.slow
@pytest.mark.long
def test_a_compiled_run_really_compiles_in_the_mode_asked_and_logs_its_warm_up(
    tmp_path: Path, tiny_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    cfg = tiny_config(
        tiny_mnist, "trainer.compile=true", "trainer.compile_mode=reduce-overhead", "trainer.epochs=1"
    )
    with caplog.at_level(logging.INFO):
        metrics = train(cfg, tmp_path)
    assert (
        torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    )  # TorchDynamo captured the model's graphs
    assert metrics["compile_seconds"] > 0 and metrics["test_acc"] > 0.1
    assert "torch.compile (mode reduce-overhead) warm-up:" in caplog.text
    assert ", channels_last, compiled (reduce-overhead), fp32:" in caplog.text  # which path the run takes


@pytest.mark.slow
@pytest.mark.long
def test_one_epoch_of_lenet_res_on_fashion_mnist_reaches_85_percent(tmp_path: Path, mnist_root: Path) -> None:
    cfg = compose("data=fashion_mnist", "model=lenet_res", "trainer.epochs=1", "trainer.histograms_every=0")
    setup = build(cfg)
    images, _ = next(iter(setup.test_batches))
    assert abs(images.mean().item()) < 0.05 and abs(images.std().item() - 1) < 0.05  # its own mean and std
    metrics = train_built(setup, cfg, tmp_path)
    assert metrics["test_acc"] >= 0.85, metrics["test_acc"]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["config"]["data"]["name"] == "fashion_mnist"
    # The class names reach metrics.json, TensorBoard, evaluate.py and predict.py.
    names = list(cfg.data.classes)
    assert list(metrics["test_class_acc"]) == names  # 1,000 test images of each: their mean is the accuracy
    assert sum(metrics["test_class_acc"].values()) / 10 == pytest.approx(metrics["test_acc"])
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    assert events.Scalars("test_class_acc/0_T-shirt_top")[0].value == pytest.approx(
        metrics["test_class_acc"]["T-shirt/top"]
    )
    table = events.Tensors("test/confusion_matrix_counts/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| **Ankle boot** |" in table and "| true \\ predicted | T-shirt/top | Trouser |" in table
    trained = load_trained(str(tmp_path), [])
    assert "| **Sandal** |" in evaluate_trained(trained, str(tmp_path / "cm.png"))
    items = read_idx(mnist_root, dataset="FashionMNIST")
    rng = np.random.default_rng(0)
    for k in range(40):  # product photos (dark on white, enlarged, off-centre), prepared as the set was made
        Image.fromarray((product_photo(items.test_images[k].numpy(), rng) * 255).astype(np.uint8)).save(
            tmp_path / f"{k:02d}.png"
        )
    results = predict_files(trained, str(tmp_path))
    right = sum(r["top3"][0]["name"] == names[items.test_labels[k]] for k, r in enumerate(results))
    assert right >= 0.75 * len(results), right  # the model's 86% on the set's own images


def test_the_last_epochs_test_accuracy_is_reported_beside_the_best_validated_ones(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    metrics = train(tiny_config(tiny_mnist, "trainer.epochs=4", "optimizer.lr=0.01"), tmp_path)
    assert metrics["best_epoch"] < 4  # the case where the two differ: a later epoch never validated better
    best, last = (
        evaluate_checkpoint(load_trained(str(tmp_path / "checkpoints" / name), [])).accuracy
        for name in ("best.pt", "last.pt")
    )
    assert metrics["test_acc"] == best and metrics["final_test_acc"] == last
    assert f"the last epoch's weights {last:.2%}" in summary(metrics, tmp_path)
    # split=val: the validation images the run held out, so the best epoch's recorded figure comes back
    validated = evaluate_checkpoint(load_trained(str(tmp_path), []), split="val")
    assert validated.accuracy == metrics["best_val_acc"] and validated.stats.images == 100


def test_evaluating_on_the_validation_split_of_a_run_without_one_says_so(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    train(tiny_config(tiny_mnist, "trainer.epochs=1", "data.validation_size=0"), tmp_path)
    with pytest.raises(ValueError, match=r"split=val: this run trained without a validation split"):
        evaluate_checkpoint(load_trained(str(tmp_path), []), split="val")


@pytest.mark.parametrize(
    ("where", "doing", "saved"),
    [("final_evaluation", "during the final test", True), ("build", "before training began", False)],
)
def test_a_stop_outside_the_training_loop_is_recorded_said_and_continued(
    where: str, doing: str, saved: bool, tmp_path: Path, tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_lab.pipeline

    def signalled(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        raise AssertionError(f"SIGTERM did not stop {where}")

    monkeypatch.setattr(mnist_lab.pipeline, where, signalled)
    job = Job(tmp_path / "run", [])
    with pytest.raises(TrainingStopped) as stopped:
        run_job(tiny_config(tiny_mnist), job)
    last = job.run_dir / "checkpoints" / "last.pt"
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == f"stopped by SIGTERM {doing}; " + (
        f"saved {last}" if saved else "nothing was saved yet"
    )
    status = read_status(job.run_dir)
    assert (status["status"], status["checkpoint"]) == ("stopped", str(last) if saved else None)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    monkeypatch.undo()
    best = run_job(tiny_config(tiny_mnist, "resume=auto"), Job(job.run_dir, ["resume=auto"]))
    assert (
        read_status(job.run_dir)["status"] == "completed" and best == read_status(job.run_dir)["best_val_acc"]
    )
