"""lab/tools/predict.py and data/images.py: ordinary image files of digits are prepared as MNIST's were and
predicted; bad files get their own error."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.artifacts import load_trained
from mnist_lab.data.images import load_greyscale, mnist_like, to_input
from mnist_lab.data.sources import read_idx
from mnist_lab.tools.predict import predict_files, show


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


@pytest.mark.slow
def test_predict_reads_ordinary_images_and_reports_bad_files(
    trained_run: tuple[Path, object], mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    trained = load_trained(str(trained_run[0]), [])
    truth = drawn_digits(read_idx(mnist_root), tmp_path)
    (tmp_path / "zz_broken.png").write_bytes(b"this is not a png")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(tmp_path / "zz_blank.png")
    results = {Path(r["image"]): r for r in predict_files(trained, str(tmp_path))}
    assert "not an image" in results[tmp_path / "zz_broken.png"]["error"]
    assert "blank" in results[tmp_path / "zz_blank.png"]["error"]
    right = sum(results[path]["top3"][0]["class"] == label for path, label in truth.items())
    assert right / len(truth) >= 0.95, right
    for path in sorted(truth)[:20]:  # the three likeliest digits, as the model itself ranks them
        with torch.inference_mode():
            probs = trained.model(to_input(mnist_like(load_greyscale(path)))).softmax(dim=1)[0]
        top = probs.topk(3)
        assert [t["class"] for t in results[path]["top3"]] == top.indices.tolist()
        assert [t["probability"] for t in results[path]["top3"]] == pytest.approx(
            top.values.tolist(), abs=1e-4
        )
    # The plain listing: one line per image, errors on stderr, exit status 1 when a file failed.
    first = sorted(truth)[:2]
    listed = predict_files(trained, f"[{first[0]},{tmp_path / 'zz_broken.png'},{first[1]}]")
    assert show(listed, as_json=False) == 1
    printed = capsys.readouterr()
    assert (
        printed.out.count("\n") == 2 and f"error: {tmp_path / 'zz_broken.png'}: not an image" in printed.err
    )
    assert show(listed[:1], as_json=True) == 0 and json.loads(capsys.readouterr().out)[0]["image"] == str(
        first[0]
    )


def test_a_spec_without_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"images={tmp_path}: no image files there"):
        predict_files(None, str(tmp_path))  # type: ignore[arg-type]  (refused before the model is used)
