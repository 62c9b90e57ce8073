"""lab/api.py: train() from Python writes the run directory train.py writes and returns a Run; load() reads it
back; predict() takes tensors, arrays, PIL images and files; errors raise with the script's one line; Ctrl-C
raises KeyboardInterrupt with last.pt saved; nothing process-wide is left changed, so train() runs twice."""

import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab import load, train
from mnist_lab.errors import UserError
from mnist_lab.status import read_status
from mnist_lab.trainer.checkpoint import load_checkpoint
from mnist_lab.trainer.stopping import TrainingStopped
from tests.conftest import synthetic_digits, tiny_overrides


def process_state() -> tuple:
    """What a library call must leave as it found it."""
    loggers = [
        (logging.getLogger(n).level, logging.getLogger(n).handlers[:])
        for n in ("train", "mnist_lab", "mnist_lab.trainer")
    ]
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    return dict(os.environ), handlers, loggers, logging.root.handlers[:], os.getcwd(), torch.get_num_threads()


def test_train_twice_returns_runs_and_leaves_the_process_as_it_was(tmp_path: Path, tiny_mnist: Path) -> None:
    before = process_state()
    first = train(*tiny_overrides(tiny_mnist), "trainer.threads=1", run_dir=tmp_path / "first")
    assert process_state() == before
    second = train(*tiny_overrides(tiny_mnist), "model=resmlp", run_dir=tmp_path / "second")
    assert process_state() == before
    assert first.metrics == json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert (first.metrics["model"], second.metrics["model"]) == ("LeNet", "ResBlockMLP")
    assert [row["epoch"] for row in first.history] == [1, 2] and first.curve("val/acc")[0] == [1, 2]
    assert (tmp_path / "first" / ".hydra" / "overrides.yaml").is_file()  # what report.py finds runs by
    assert "epoch 2/2" in (tmp_path / "first" / "train.log").read_text()
    assert not first.model.training
    again = load(tmp_path / "first")
    assert again.metrics == first.metrics and repr(again).startswith("Run(LeNet, test accuracy")
    evaluation = again.evaluate()
    assert evaluation.accuracy == first.metrics["test_acc"]  # the tested weights, tested again
    assert int(evaluation.confusion.sum()) == evaluation.stats.images == 200


def test_predict_takes_tensors_arrays_pil_images_and_files(tmp_path: Path, tiny_mnist: Path) -> None:
    run = train(*tiny_overrides(tiny_mnist), "trainer.epochs=3", run_dir=tmp_path / "run")
    images, labels = synthetic_digits(8, seed=5)
    as_tensor = run.predict(torch.from_numpy(images))
    assert len(as_tensor) == 8 and as_tensor.probabilities.shape == (8, 10)
    assert torch.allclose(as_tensor.probabilities.sum(dim=1), torch.ones(8))
    assert as_tensor.names == [str(k) for k in as_tensor.classes]
    assert run.predict(images / 255.0).classes == as_tensor.classes  # an array in [0, 1]: the same
    Image.fromarray(images[0]).save(tmp_path / "digit.png")
    mixed = run.predict([images[0], Image.open(tmp_path / "digit.png"), tmp_path / "digit.png"])
    assert len(mixed) == 3 and mixed.classes[1] == mixed.classes[2]  # a PIL image or its file: the same
    with pytest.raises(ValueError, match=r"an array of shape \(5, 5\)"):
        run.predict(np.zeros((5, 5)))
    # what is not a batch of 28x28 greyscale images in 0-255 or 0-1 is refused, naming what it is
    for bad, says in [
        ([], "no images to predict: an empty list"),
        (np.zeros((2, 3, 28, 28)), r"an array of shape \(2, 3, 28, 28\)"),  # colour: not 6 greyscale images
        (np.full((28, 28), np.nan), "with NaN or infinite pixels"),
        (torch.full((1, 28, 28), float("inf")), "with NaN or infinite pixels"),
        (np.full((28, 28), -5.0), "pixels from -5 to -5: pixels are 0-255"),
        (np.full((28, 28), 300.0), "pixels from 300 to 300"),
        (tmp_path / "nothing.png", f"^{tmp_path / 'nothing.png'}: cannot be read"),
    ]:
        with pytest.raises(ValueError, match=says):
            run.predict(bad)
    # a 16-bit digit is scaled to its depth, not clipped to white: the same prediction as its 8-bit self
    Image.fromarray(images[0].astype(np.uint16) * 257).save(tmp_path / "digit16.png")
    assert Image.open(tmp_path / "digit16.png").mode.startswith("I")
    assert run.predict(tmp_path / "digit16.png").classes == mixed.classes[2:]
    assert torch.allclose(
        run.predict(tmp_path / "digit16.png").probabilities, mixed.probabilities[2:], atol=1e-3
    )


def test_errors_raise_with_the_scripts_one_line(tmp_path: Path, tiny_mnist: Path) -> None:
    before = process_state()
    with pytest.raises(UserError, match="^optimizer.lr must be a number > 0, got -1$") as failed:
        train(*tiny_overrides(tiny_mnist), "optimizer.lr=-1", run_dir=tmp_path / "bad")
    assert failed.value.exit_code == 2
    with pytest.raises(ValueError, match="^model=lenet7: no such option"):
        train("model=lenet7")
    with pytest.raises(FileNotFoundError, match="no metrics.json, so not a completed run .*failed"):
        load(tmp_path / "bad")
    with pytest.raises(TypeError, match=r"^train\(3\): an override is a string"):
        train(*tiny_overrides(tiny_mnist), 3)  # type: ignore[arg-type]
    (tmp_path / "a-file").write_text("keep me")
    with pytest.raises(ValueError, match=f"^run_dir={tmp_path / 'a-file'} cannot be created: .* is a file"):
        train(*tiny_overrides(tiny_mnist), run_dir=tmp_path / "a-file")
    (tmp_path / "corrupt").mkdir()
    for text, says in [('{"model": ', "unreadable"), ("[1, 2]", "not a metrics.json this lab wrote")]:
        (tmp_path / "corrupt" / "metrics.json").write_text(text)
        with pytest.raises(ValueError, match=f"^{tmp_path / 'corrupt' / 'metrics.json'}: {says}"):
            load(tmp_path / "corrupt")
    assert (tmp_path / "a-file").read_text() == "keep me"
    assert process_state() == before


def test_a_max_steps_stop_raises_run_stopped_not_keyboard_interrupt(tmp_path: Path, tiny_mnist: Path) -> None:
    with pytest.raises(
        TrainingStopped, match="stopped at trainer.max_steps=3, in epoch 1; saved .*last.pt"
    ) as stop:
        train(*tiny_overrides(tiny_mnist), "trainer.max_steps=3", run_dir=tmp_path / "run")
    assert stop.value.exit_code == 0
    finished = train(*tiny_overrides(tiny_mnist), "resume=auto", run_dir=tmp_path / "run")
    assert finished.metrics["epochs"] == 2


def test_ctrl_c_stops_after_the_step_saves_last_pt_and_raises_keyboard_interrupt(
    tmp_path: Path, tiny_mnist: Path
) -> None:
    run_dir = tmp_path / "run"

    def press_ctrl_c_once_an_epoch_is_done() -> None:  # as a user at the kernel would, from outside the run
        while (read_status(run_dir) or {}).get("epoch") is None:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # what the kernel's interrupt sends

    before = process_state()
    threading.Thread(target=press_ctrl_c_once_an_epoch_is_done, daemon=True).start()
    with pytest.raises(
        KeyboardInterrupt, match=r"stopped by SIGINT in epoch \d+ after step \d+; saved"
    ) as stop:
        train(*tiny_overrides(tiny_mnist), "trainer.epochs=50", run_dir=run_dir)
    assert process_state() == before
    step = int(re.search(r"after step (\d+)", str(stop.value))[1])
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == step  # saved where it says
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"
