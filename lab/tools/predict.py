"""predict.py's work: the three likeliest classes of each image file, with a trained model; each image is
prepared as the images of the checkpoint's dataset were made (data.name), its classes named by data.classes."""

import json
import sys
from typing import Any

import torch

from mnist_lab.artifacts import Trained
from mnist_lab.data.images import ImageError, image_paths, load_greyscale, prepare, to_input
from mnist_lab.errors import NotFound

USAGE = (
    "usage: python predict.py ckpt=<run dir or checkpoint> images=<file, folder or [a.png,b.png]> [--json]"
)


def predict_files(trained: Trained, spec: str) -> list[dict[str, Any]]:
    """One result per image of `spec` (a file, a folder or `[a.png,b.png]`): its top 3, or its error."""
    paths = image_paths(spec)
    if not paths:
        raise NotFound(f"images={spec}: no image files there")
    data = trained.cfg.data
    results = []
    for path in paths:
        try:
            x = to_input(prepare(load_greyscale(path), data.name), data.mean, data.std).to(trained.device)
        except ImageError as error:
            results.append({"image": str(path), "error": str(error)})
            continue
        with torch.inference_mode():
            probs = trained.model(x).float().softmax(dim=1)[0]
        top = probs.topk(3)
        results.append({"image": str(path), "top3": [
            {"class": int(k), "name": data.classes[int(k)], "probability": round(float(p), 4)}
            for p, k in zip(top.values, top.indices, strict=True)
        ]})  # fmt: skip
    return results


def show(results: list[dict[str, Any]], as_json: bool) -> int:
    """Print the results (JSON, or one line per image with errors on stderr); 1 if any file failed."""
    if as_json:
        print(json.dumps(results, indent=2))
    for result in [] if as_json else results:
        if "error" in result:
            print(f"error: {result['image']}: {result['error']}", file=sys.stderr)
        else:
            guesses = "  ".join(f"{t['name']} ({t['probability']:.1%})" for t in result["top3"])
            print(f"{result['image']}: {guesses}")
    return 1 if any("error" in r for r in results) else 0
