"""After training, on real MNIST: evaluate.py reproduces the recorded test accuracy, predict.py reads
ordinary images of digits, export.py writes ONNX and TorchScript models that agree with PyTorch."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

import export
import predict
from data.loader import normalize
from data.sources import read_idx
from models import LeNetRes, ResBlockMLP
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """LeNet-5 trained for 2 epochs on the real training set by `python train.py`."""
    run = tmp_path_factory.mktemp("trained")
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "train.py"), "trainer.epochs=2", f"data.source.root={mnist_root}",
         f"hydra.run.dir={run}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def mnist(mnist_root: Path):  # noqa: ANN201
    return read_idx(mnist_root)


def test_evaluate_reproduces_the_recorded_test_accuracy(run_dir: Path, tmp_path: Path) -> None:
    recorded = json.loads((run_dir / "metrics.json").read_text())
    for extra in ([], ["data=mnist_pickle", f"data.source.path={PROJECT_ROOT / 'data' / 'mnist.pkl'}"]):
        out = tmp_path / f"cm{len(extra)}.png"
        done = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "evaluate.py"), f"ckpt={run_dir}", f"out={out}", *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        correct, total = (
            int(n.replace(",", "")) for n in re.search(r"\(([\d,]+) of ([\d,]+)\)", done.stdout).groups()
        )
        assert (
            total == 10_000 and correct / total == recorded["test_acc"]
        )  # exactly, from the same data either way
        assert f"loss {recorded['test_loss']:.4f}" in done.stdout
        rows = [line for line in done.stdout.splitlines() if line.startswith("| **")]
        assert len(rows) == 10 and sum(int(r.split("|")[k + 2]) for k, r in enumerate(rows)) == correct
        assert (
            out.read_bytes()[:8]
            == out.with_name(f"{out.stem}_misclassified.png").read_bytes()[:8]
            == b"\x89PNG\r\n\x1a\n"
        )


def test_evaluate_names_a_missing_checkpoint(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "evaluate.py"), f"ckpt={tmp_path}"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and f"no checkpoint at {tmp_path / 'checkpoints' / 'best.pt'}" in done.stderr


def drawn_digits(mnist, folder: Path, count: int = 200) -> dict[Path, int]:  # noqa: ANN001
    """Test digits saved as ordinary images, four ways: as is; black on white; off-centre on a larger
    canvas; enlarged 4x, black on white, in RGB with a margin. Returns path -> true label."""
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(count):
        image, label = mnist.test_images[i].numpy(), int(mnist.test_labels[i])
        kind = i % 4
        if kind == 0:
            drawn = image
        elif kind == 1:
            drawn = 255 - image
        elif kind == 2:
            drawn = np.zeros((60, 80), np.uint8)
            top, left = rng.integers(0, 32), rng.integers(0, 52)
            drawn[top : top + 28, left : left + 28] = image
        else:
            big = np.asarray(Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BILINEAR))
            drawn = np.full((150, 130), 255, np.uint8)
            drawn[20:132, 10:122] = big
            drawn = np.stack([drawn] * 3, axis=-1)
        path = folder / f"{i:03d}.png"
        Image.fromarray(drawn).save(path)
        truth[path] = label
    return truth


def test_predict_reads_ordinary_images_and_reports_bad_files(
    run_dir: Path,
    mnist,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,  # noqa: ANN001
) -> None:
    truth = drawn_digits(mnist, tmp_path)
    (tmp_path / "zz_broken.png").write_bytes(b"this is not a png")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(tmp_path / "zz_blank.png")
    assert predict.main([f"ckpt={run_dir}", f"images={tmp_path}", "--json"]) == 1  # some files failed
    results = {Path(r["image"]): r for r in json.loads(capsys.readouterr().out)}
    assert "not an image" in results[tmp_path / "zz_broken.png"]["error"]
    assert "blank" in results[tmp_path / "zz_blank.png"]["error"]
    right = sum(results[path]["top3"][0]["digit"] == label for path, label in truth.items())
    assert right / len(truth) >= 0.95, right
    for path in truth:
        top3 = results[path]["top3"]
        assert len(top3) == 3 and sum(t["probability"] for t in top3) <= 1.0001
    # The plain listing: one line per image, errors on stderr, a list argument.
    first = sorted(truth)[:2]
    assert (
        predict.main([f"ckpt={run_dir}", f"images=[{first[0]},{tmp_path / 'zz_broken.png'},{first[1]}]"]) == 1
    )
    printed = capsys.readouterr()
    assert (
        printed.out.count("\n") == 2 and f"error: {tmp_path / 'zz_broken.png'}: not an image" in printed.err
    )


def test_prepared_digit_is_centred_and_fits_20_pixels() -> None:
    canvas = np.full((100, 60), 0.9, np.float32)  # light paper
    canvas[10:70, 5:25] = 0.1  # a dark bar, 60 x 20, off-centre
    digit = predict.mnist_like(canvas)
    rows, cols = np.nonzero(digit > 0.05)
    assert digit.shape == (28, 28) and rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21
    total = digit.sum()
    com = ((digit.sum(1) * np.arange(28)).sum() / total, (digit.sum(0) * np.arange(28)).sum() / total)
    assert com == pytest.approx((13.5, 13.5), abs=0.6)
    assert digit.max() == pytest.approx(1.0, abs=0.05)  # inverted: white ink on black


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_agrees_with_pytorch(run_dir: Path, mnist, tmp_path: Path, fmt: str) -> None:  # noqa: ANN001
    out = tmp_path / f"model.{fmt}"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "export.py"), f"ckpt={run_dir}", f"format={fmt}", f"out={out}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": OK" in done.stdout and out.is_file()
    # Checked here independently too, on a batch size the export never saw.
    trained = __import__("train").load_trained(str(run_dir), [])
    model = trained.model.to("cpu", memory_format=torch.contiguous_format)
    images = normalize(mnist.test_images[1000:1033])
    with torch.inference_mode():
        expected = model(images)
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    else:
        got = torch.jit.load(str(out))(images)
    assert got.shape == (33, 10)
    assert (got - expected).abs().max() <= 1e-4 and torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("model_class", [LeNetRes, ResBlockMLP])
def test_other_models_export_too(model_class: type, mnist, tmp_path: Path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = model_class().eval()
    images = normalize(mnist.test_images[:64])
    for exporter, name in ((export.export_onnx, "m.onnx"), (export.export_torchscript, "m.pt")):
        exported = exporter(model, images[:2], tmp_path / name)
        difference, same = export.check(model, exported, images)
        assert difference <= 1e-4 and same
