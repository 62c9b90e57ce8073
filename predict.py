"""Predict digits in ordinary images with a trained model.

python predict.py ckpt=<run dir or checkpoint> images=[digit.png,photo.jpg]   # or images=<folder> / one file
python predict.py ckpt=<...> images=drawings/ --json                           # machine-readable output

Each image is prepared the way MNIST's digits were made (data/images.py). A file that cannot be used
(unreadable, not an image, no ink) gets its own error line, and the others are still predicted (exit status
1 if any failed).
"""

import sys

from lab import cli
from lab.artifacts import load_trained
from lab.config import split_args
from lab.predict import USAGE, predict_files, show


def main(argv: list[str]) -> int:
    args, overrides = split_args([a for a in argv if a != "--json"], ("ckpt", "images"))
    if "ckpt" not in args or "images" not in args:
        print(USAGE, file=sys.stderr)
        return 2
    return show(predict_files(load_trained(args["ckpt"], overrides), args["images"]), "--json" in argv)


if __name__ == "__main__":
    cli.run(main)
