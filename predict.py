"""Predict what ordinary images show (digits, or Fashion-MNIST's clothing) with a trained model.

python predict.py ckpt=<run dir or checkpoint> images=[digit.png,photo.jpg]   # or images=<folder> / one file
python predict.py ckpt=<...> images=drawings/ --json                           # machine-readable output

Each image is prepared the way the images of the checkpoint's dataset were made (data/images.py: MNIST's
digits centred by their centre of mass in a 20x20 box; Fashion-MNIST's whole item scaled to 28x28), and the
three likeliest classes are printed by name with their probabilities (JSON: `class`, `name`, `probability`).
A file that cannot be used (unreadable, not an image, nothing drawn) gets its own error line, and the others
are still predicted (exit status 1 if any failed).
"""

from mnist_lab import cli
from mnist_lab.artifacts import load_trained
from mnist_lab.overrides import split_args
from mnist_lab.tools.predict import USAGE, predict_files, show


def main(argv: list[str]) -> int:
    args, overrides = split_args([a for a in argv if a != "--json"], ("ckpt", "images"))
    cli.require(args, ("ckpt", "images"), USAGE)
    return show(predict_files(load_trained(args["ckpt"], overrides), args["images"]), "--json" in argv)


if __name__ == "__main__":
    cli.run(main)
