"""The cost of each `augment` option per training epoch, and the batched distortions against
torchvision.transforms.v2 applied image by image (v2 draws one set of parameters per call, so per-image
randomness on a batch means a loop) and against kornia.augmentation, which draws per image on a batch.

    python -m bench.augment [--rounds 3] [--batch-size 64]

Each round times one pass of the training loader (55,000 images, the default split) per option, with no
model: the seconds the augmentation adds to an epoch on top of the step. torchvision is timed on
`--sample` images and scaled to an epoch. Writes bench/results/augment-<date>.json.
"""

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from bench import RESULTS, machine, spread, write_result
from mnist_lab.build import build_batches
from mnist_lab.config import compose
from mnist_lab.trainer.device import choose_device

OPTIONS = ("none", "shift", "affine", "elastic", "affine_elastic")


def loader_epoch_seconds(option: str, batch_size: int, device: torch.device, images: int | None) -> float:
    """One pass of the training batches with augment=<option> (`images` of them; None: all)."""
    overrides = [
        f"augment={option}",
        f"trainer.batch_size={batch_size}",
        f"data.train_subset={images or 'null'}",
    ]
    train, _, _ = build_batches(compose(*overrides), device)
    start = time.perf_counter()
    for _batch in train:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def torchvision_epoch_seconds(option: str, images: torch.Tensor, epoch_images: int) -> float:
    """torchvision.transforms.v2 with the same ranges, one call per image, scaled to `epoch_images`."""
    from torchvision.transforms import v2  # imported here only: 1.5 s that train.py does not pay

    augment = compose(f"augment={option}").augment
    transforms = []
    if option in ("affine", "affine_elastic"):
        translate = augment.translate / 28
        transforms.append(v2.RandomAffine(augment.degrees, (translate, translate),
                                          (1 - augment.scale, 1 + augment.scale), augment.shear))  # fmt: skip
    if option in ("elastic", "affine_elastic"):
        transforms.append(v2.ElasticTransform(alpha=augment.alpha, sigma=augment.sigma))
    transform = v2.Compose(transforms)
    start = time.perf_counter()
    for image in images:
        transform(image)
    return (time.perf_counter() - start) * epoch_images / len(images)


def kornia_epoch_seconds(option: str, images: torch.Tensor, batch_size: int, epoch_images: int) -> float:
    """kornia.augmentation with the same ranges on whole batches of `images`, scaled to `epoch_images`."""
    import kornia.augmentation as K  # noqa: N812 (kornia's own spelling)

    augment = compose(f"augment={option}").augment
    transforms = []
    if option in ("affine", "affine_elastic"):
        translate = augment.translate / 28
        transforms.append(K.RandomAffine(augment.degrees, (translate, translate),
                                         (1 - augment.scale, 1 + augment.scale), augment.shear, p=1.0))  # fmt: skip
    if option in ("elastic", "affine_elastic"):
        size = 2 * math.ceil(3 * augment.sigma) + 1  # the kernel data/augment.py uses
        alpha = augment.alpha * 2 / 28  # kornia's displacements are in grid units, ours in pixels
        transforms.append(K.RandomElasticTransform((size, size), (augment.sigma,) * 2, (alpha, alpha), p=1.0))
    transform = K.AugmentationSequential(*transforms)
    batches = images.float().split(batch_size)
    start = time.perf_counter()
    for batch in batches:
        transform(batch)
    return (time.perf_counter() - start) * epoch_images / len(images)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample", type=int, default=2000, help="images torchvision is timed on")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--images", type=int, help="images per epoch (default: the whole training split)")
    parser.add_argument("--smoke", action="store_true", help="1 round of 2,000 images, 100 for torchvision")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.images, args.sample = 1, 2000, 100
    device = choose_device(args.device)
    train, _, _ = build_batches(compose("augment=none", f"data.train_subset={args.images or 'null'}"), device)
    sample = train.images[: args.sample].unsqueeze(1).cpu()  # uint8 (N, 1, 28, 28)
    ours: dict[str, list[float]] = {option: [] for option in OPTIONS}
    theirs: dict[str, list[float]] = {option: [] for option in OPTIONS[2:]}
    kornia: dict[str, list[float]] = {option: [] for option in OPTIONS[2:]}
    for round_number in range(1, args.rounds + 1):
        for option in OPTIONS:
            ours[option].append(loader_epoch_seconds(option, args.batch_size, device, args.images))
            line = f"round {round_number}  {option:15s} ours {ours[option][-1]:6.2f} s/epoch"
            if option in theirs:
                theirs[option].append(torchvision_epoch_seconds(option, sample, train.num_images))
                kornia[option].append(kornia_epoch_seconds(option, sample, args.batch_size, train.num_images))
                line += (
                    f"  kornia {kornia[option][-1]:6.2f}  torchvision v2 per image {theirs[option][-1]:7.1f}"
                )
            print(line, flush=True)
    content: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "device": str(device),
            "epoch_images": train.num_images,
            "torchvision_sample": args.sample,
        },  # fmt: skip
        "seconds_per_epoch": {option: spread(values) for option, values in ours.items()},
        "torchvision_v2_per_image_seconds_per_epoch": {o: spread(v) for o, v in theirs.items()},
        "kornia_seconds_per_epoch": {o: spread(v) for o, v in kornia.items()},
    }
    path = write_result("augment", content, Path(args.out_dir))
    print(
        "\n| augment | ours, s/epoch | kornia, s/epoch | torchvision v2 per image, s/epoch |\n|---|---:|---:|---:|"
    )
    for option in OPTIONS:
        k = f"{spread(kornia[option])['median']:.2f}" if option in kornia else "-"
        v2 = f"{spread(theirs[option])['median']:.1f}" if option in theirs else "-"
        print(f"| {option} | {spread(ours[option])['median']:.2f} | {k} | {v2} |")
    print(f"\nmedians of {args.rounds} rounds; written to {path}")


if __name__ == "__main__":
    main()
