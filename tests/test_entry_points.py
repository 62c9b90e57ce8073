"""The entry points as users run them, in real subprocesses: one line and a non-zero exit for a bad value,
Hydra's own message for an unknown option, the run's log and summary, signals and resume; evaluate.py,
predict.py and export.py on a trained run. (What they call is tested in-process under tests/lab/.)"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_lab.artifacts import load_trained
from mnist_lab.config import PROJECT_ROOT, compose
from mnist_lab.data.loader import normalize
from mnist_lab.data.sources import read_idx
from mnist_lab.pipeline import train
from mnist_lab.trainer.checkpoint import load_checkpoint
from tests.conftest import run_script, scalars, tiny_overrides

pytestmark = pytest.mark.slow


def test_train_refuses_a_bad_value_in_one_line_with_exit_status_2(tmp_path: Path) -> None:
    done = run_script("train.py", "optimizer.lr=-1", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    # on stderr, where scripts and schedulers look, and nothing of Hydra's after it
    assert done.stderr == "error: optimizer.lr must be a number > 0, got -1\n"
    assert "error" not in done.stdout.lower() and "Traceback" not in done.stdout
    # no checkpoints, no events; status.json says why
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", ".lock", "status.json", "train.log"]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "optimizer.lr must be a number > 0, got -1"


def test_an_unknown_option_is_one_line_with_the_choices_and_exit_2(tmp_path: Path) -> None:
    done = run_script("train.py", "model=lenet7", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr == (
        "error: model=lenet7: no such option (did you mean model=lenet?); model is one of: lenet, lenet_res, resmlp\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_run_prints_one_line_per_epoch_and_a_summary_and_learns(
    trained_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    run_dir, done = trained_run
    out = done.stdout
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert "\r" not in out + done.stderr  # not a terminal: log lines, no progress bar
    assert "test accuracy" in out and f"--logdir {run_dir}" in out
    assert (run_dir / "train.log").read_text().count("epoch ") >= 2
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "LeNet" and metrics["parameters"] == 61_706
    assert metrics["test_acc"] >= 0.975, metrics["test_acc"]  # 2 epochs of LeNet-5 on 30,000 images
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_a_max_steps_stop_says_so_on_stderr_and_its_resume_command_finishes_the_run(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    done = run_script(
        "train.py", *tiny_overrides(tiny_mnist), f"hydra.run.dir={tmp_path}", "trainer.max_steps=5"
    )
    assert done.returncode == 0 and "Error executing job" not in done.stdout + done.stderr, done.stderr
    assert done.stderr.startswith(
        f"stopped at trainer.max_steps=5, in epoch 1; saved {tmp_path}/checkpoints/last.pt"
    )
    resume = next(
        line for line in done.stderr.splitlines() if line.startswith("resume with: python train.py ")
    )
    assert "trainer.max_steps=" not in resume  # it would stop again at once
    finished = run_script(
        "train.py", *resume.removeprefix("resume with: python train.py ").split(), f"hydra.run.dir={tmp_path}"
    )
    assert finished.returncode == 0, finished.stderr
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "completed"


def start_training(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """Start `python train.py <args>` and return once its training loop listens for signals."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("training: Ctrl-C or SIGTERM stops"):  # the handlers are in place
            return process, output
    raise AssertionError("training never started:\n" + "".join(output))


def test_ctrl_c_saves_last_pt_and_exits_130_then_resume_finishes(mnist_root: Path, tmp_path: Path) -> None:
    # SIGTERM takes the same path to its own status, 143: tests/trainer/test_stopping.py sends it for real.
    signum, status = signal.SIGINT, 130
    args = [
        "trainer.epochs=2",
        "data.train_subset=5000",
        "trainer.batch_size=128",
        f"hydra.run.dir={tmp_path}",
    ]
    process, output = start_training(args)
    process.send_signal(signum)
    output += process.stdout.readlines()
    assert process.wait(timeout=120) == status, "".join(output)
    text = "".join(output)
    name = signal.Signals(signum).name
    assert f"stopped by {name} in epoch 1" in text and "resume with: python train.py" in text
    assert f"resume={tmp_path}/checkpoints/last.pt" in text
    assert "Traceback" not in text, text
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] >= 1
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "stopped"
    train(compose(*args[:-1], "resume=auto"), tmp_path)  # what `python train.py ... resume=auto` calls
    steps = [step for step, _ in scalars(tmp_path, "train/loss_per_step")]
    assert steps == list(range(1, 2 * 40 + 1))  # 5,000 images in batches of 128: 40 steps an epoch
    assert [step for step, _ in scalars(tmp_path, "val/acc")] == [1, 2]


def test_evaluate_reproduces_the_recorded_test_accuracy(
    trained_run: tuple[Path, object], tmp_path: Path
) -> None:
    run_dir, _ = trained_run
    recorded = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "cm.png"
    done = run_script(
        "evaluate.py", f"ckpt={run_dir}", f"out={out}", "data=mnist", "tta=shift"
    )  # read the IDX files this time; with test-time augmentation reported beside
    assert done.returncode == 0, done.stderr
    assert re.search(r"  with tta=shift: accuracy \d+\.\d\d%  loss \d\.\d{4}\n", done.stdout), done.stdout
    correct, total = (
        int(n.replace(",", "")) for n in re.search(r"\(([\d,]+) of ([\d,]+)\)", done.stdout).groups()
    )
    assert (
        total == 10_000 and correct / total == recorded["test_acc"]
    )  # exactly, from the same data either way
    assert f"loss {recorded['test_loss']:.4f}" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| **")]
    assert len(rows) == 10 and sum(int(r.split("|")[k + 2]) for k, r in enumerate(rows)) == correct
    for png in (out, out.with_name("cm_misclassified.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_names_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    done = run_script("evaluate.py", f"ckpt={tmp_path}")
    assert done.returncode == 2
    assert done.stderr == (
        f"error: ckpt={tmp_path}: no checkpoint there (no {tmp_path / 'checkpoints' / 'best.pt'}): "
        "give a run directory or a .pt file\n"
    )


def test_predict_prints_json_and_names_bad_files(
    trained_run: tuple[Path, object], mnist_root: Path, tmp_path: Path
) -> None:
    from PIL import Image

    run_dir, _ = trained_run
    image = read_idx(mnist_root).test_images[0].numpy()  # a 7
    Image.fromarray(255 - image).save(tmp_path / "seven.png")  # black on white, as drawn on paper
    (tmp_path / "broken.png").write_bytes(b"not a png")
    done = run_script("predict.py", f"ckpt={run_dir}", f"images={tmp_path}", "--json")
    assert done.returncode == 1  # one file failed
    results = {Path(r["image"]).name: r for r in json.loads(done.stdout)}
    assert results["seven.png"]["top3"][0]["class"] == 7
    assert "not an image" in results["broken.png"]["error"]


@pytest.mark.parametrize(
    "fmt", ["torchscript"]
)  # ONNX: tests/lab/tools/test_export.py and tests/lab/test_artifacts.py
def test_export_agrees_with_pytorch(
    trained_run: tuple[Path, object], mnist_root: Path, tmp_path: Path, fmt: str
) -> None:
    run_dir, _ = trained_run
    out = tmp_path / f"model.{fmt}"
    done = run_script("export.py", f"ckpt={run_dir}", f"format={fmt}", f"out={out}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": OK" in done.stdout and out.is_file()
    # Checked here independently too, on a batch size the export never saw.
    model = load_trained(str(run_dir), []).model.to("cpu", memory_format=torch.contiguous_format)
    images = normalize(read_idx(mnist_root).test_images[1000:1033])
    with torch.inference_mode():
        expected = model(images)
    got = torch.jit.load(str(out))(images)
    assert got.shape == (33, 10)
    assert (got - expected).abs().max() <= 1e-4 and torch.equal(got.argmax(1), expected.argmax(1))
