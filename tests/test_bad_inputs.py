"""Bad inputs through the six entry points, as a user types them: each ends with exactly one `error:` line that
names the culprit, the exit status says whose fault it was (2: the input's), no traceback is printed, no
payload runs, and every file saved before is byte-identical afterwards.

The scripts run in this process, through the same `__main__` block and wrapper (lab/cli.py) a shell runs:
`runpy` executes the script file with the arguments in sys.argv, and its SystemExit is the exit status.
What needs a process of its own (a full disk) is in tests/test_entry_points.py.
"""

import hashlib
import logging
import os
import runpy
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.api import load
from mnist_lab.api import train as api_train
from mnist_lab.config import PROJECT_ROOT
from mnist_lab.models import LeNet
from mnist_lab.pipeline import train
from mnist_lab.trainer.speed import available_cpus
from tests.conftest import tiny_config, tiny_overrides

pytestmark = pytest.mark.slow


class Payload:
    """What a hostile file holds: unpickling it would run a command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (a decompression bomb's shape; its data is one row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    """A folder of what a user has saved: a trained run, a sweep, images, and files that are not what they
    claim to be (named in the cases below as {saved}/...)."""
    root = tmp_path_factory.mktemp("saved")
    run = root / "run"
    train(tiny_config(tiny_mnist), run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    (root / "text.pt").write_text("hello, I am a text file\n")
    (root / "empty.pt").write_bytes(b"")
    whole = (run / "checkpoints" / "best.pt").read_bytes()
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"model": Payload(root / "payload-ran"), "config": last["config"]}, root / "payload.pt")
    torch.save({"weights": torch.ones(3)}, root / "no_keys.pt")
    torch.save({**last, "model": LeNet(in_channels=3).state_dict()}, root / "other_model.pt")
    with (root / "payload.pkl").open("wb") as file:
        file.write(__import__("pickle").dumps(Payload(root / "payload-ran")))
    (root / "canary.txt").write_text("a file the user can write: a hostile config must not touch it\n")
    for name, model in hostile_models(root).items():  # real checkpoints whose saved config names a callable
        torch.save({**last, "config": {**last["config"], "model": model}}, root / f"calls_{name}.pt")
    data = {**last["config"]["data"], "mean": "x", "classes": 5}
    torch.save({**last, "config": {**last["config"], "data": data}}, root / "bad_values.pt")
    torch.save({**last, "config": {"seed": 0}}, root / "no_groups.pt")
    interpolated = {
        **last["config"]["data"],
        "source": {**last["config"]["data"]["source"], "root": "${slurm_gpus:}"},
    }
    torch.save({**last, "config": {**last["config"], "data": interpolated}}, root / "interpolated.pt")
    images = root / "images"
    images.mkdir()
    digit = np.full((28, 28), 255, np.uint8)
    digit[6:22, 12:16] = 0  # a dark stroke on white paper: a 1
    Image.fromarray(digit).save(images / "one.png")
    png_header(root / "bomb.png", 20_000, 20_000)
    png_header(root / "big.png", 10_000, 10_000)
    Image.new("L", (28, 28), 255).save(root / "blank.png")
    (root / "not_an_image.png").write_text("not a picture")
    (root / "empty_folder").mkdir()
    sweep = root / "sweep"
    for job, metrics in (("0", None), ("1", '{"model": "LeNet",\n')):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        (sweep / job / "metrics.json").write_text(metrics or (run / "metrics.json").read_text())
    return root


def hostile_models(root: Path) -> dict[str, dict]:
    """Saved `model` configs that would run code if instantiated: each empties, writes or runs something."""
    canary, ran = str(root / "canary.txt"), str(root / "payload-ran")
    return {
        "open": {"_target_": "builtins.open", "file": canary, "mode": "w"},
        "numpy_save": {"_target_": "numpy.save", "file": canary, "arr": [1, 2, 3]},
        "torch_load": {"_target_": "torch.load", "f": str(root / "payload.pkl"), "weights_only": False},
        "os_system": {"_target_": "os.system", "command": f"touch {ran}"},
        "subprocess_run": {"_target_": "subprocess.run", "args": ["touch", ran]},
        "nested": {
            "_target_": "mnist_lab.models.LeNet",
            "activation": {"_target_": "os.system", "command": f"touch {ran}"},
        },
    }


HOSTILE = [name for name in hostile_models(Path("/")) if name != "nested"]


def snapshot(root: Path) -> dict[Path, str]:
    """The sha256 of every file below `root`."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_entry(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> tuple[int, str]:  # fmt: skip
    """`python <script> <args>` in this process: its exit status and everything it printed."""
    monkeypatch.setattr(sys, "argv", [str(PROJECT_ROOT / script), *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # set by lab.cli.run_hydra; put back afterwards
    monkeypatch.setattr(logging, "raiseExceptions", logging.raiseExceptions)
    handlers = logging.root.handlers[:]
    try:
        with pytest.raises(SystemExit) as exit_status:
            runpy.run_path(str(PROJECT_ROOT / script), run_name="__main__")
    finally:
        logging.root.handlers[:] = handlers
    out, err = capfd.readouterr()
    return int(exit_status.value.code or 0), out + err


# (script, arguments, exit status, what the one error line says). {saved}: the fixture's folder; {out}: a
# fresh folder of the test's own.
CASES = [
    # train.py: options, keys and values
    ("train.py", ["model=doesnotexist"], 2, "model=doesnotexist: no such option; model is one of: lenet, lenet_res, resmlp"),
    ("train.py", ["optimizer=sgdd"], 2, "optimizer=sgdd: no such option (did you mean optimizer=sgd?)"),
    ("train.py", ["trainer.epocs=3"], 2, "trainer.epocs=3: trainer has no key epocs (did you mean trainer.epochs?)"),
    ("train.py", ["model.widht=3"], 2, "model.widht=3: model has no key widht"),
    ("train.py", ["trainer.epochs=[1"], 2, "no viable alternative at input '[1'"),
    ("train.py", ["trainer.epochs"], 2, "Error parsing override 'trainer.epochs'"),
    ("train.py", ["optimizer.lr=inf"], 2, "optimizer.lr=inf: must be a finite number"),
    ("train.py", ["optimizer.lr=nan"], 2, "optimizer.lr=nan: must be a finite number"),
    ("train.py", ["optimizer.lr=-1"], 2, "optimizer.lr must be a number > 0, got -1"),
    ("train.py", ["trainer.epochs=0"], 2, "trainer.epochs must be a number > 0"),
    ("train.py", ["trainer.batch_size=0"], 2, "trainer.batch_size must be an integer > 0, got 0"),
    ("train.py", ["seed=abc"], 2, "seed must be an integer, got 'abc'"),
    ("train.py", ["model.activation=swish"], 2, "model.activation must be one of"),
    ("train.py", ["data.validation_size=2.5"], 2, "data.validation_size must be"),
    ("train.py", ["optimizer=sgd", "optimizer.momentum=-1", "optimizer.nesterov=false"], 2, "optimizer.momentum=-1: refused by torch.optim.SGD: Invalid momentum value: -1"),
    ("train.py", ["optimizer=sgd", "optimizer.momentum=0"], 2, "optimizer.momentum=0 optimizer.nesterov=True: refused by torch.optim.SGD: Nesterov momentum requires"),
    ("train.py", ["+optimizer.betas=[2,0.9]"], 2, "optimizer.betas=[2, 0.9]: refused by torch.optim.Adam: Invalid beta parameter"),
    ("train.py", ["scheduler=cosine", "scheduler.min_lr=10"], 2, "scheduler.min_lr=10 is above optimizer.lr=0.003, the peak rate"),
    ("train.py", ["augment.max_shift=5000"], 2, "augment.max_shift must be an integer of pixels in [0, 27]"),
    ("train.py", ["augment=affine", "augment.translate=40"], 2, "augment.translate must be a number of pixels in [0, 28)"),
    ("train.py", ["+trainer.epohcs=3"], 2, "trainer.epohcs: nothing reads this key (did you mean trainer.epochs?)"),
    ("train.py", ["model=resmlp", "model.width=200000"], 2, "needs about 2,386.6 GiB to train (weights, gradients, optimizer state)"),
    ("train.py", ["data.source.root=/tmp/my", "data"], 2, """'data' follows data.source.root=/tmp/my: a value with a space is quoted, as in 'data.source.root="/tmp/my data"'"""),
    ("train.py", ["data.source.root=/tmp/données"], 2, """a value with a non-ASCII letter is quoted, as in 'data.source.root="/tmp/données"'"""),
    ("train.py", ["+trainer." + "a" * 300 + "=1"], 2, "a name of 300 characters, too long for the file system (255 at most)"),
    ("train.py", ["hydra.run.dir=/proc/self/run"], 2, "hydra.run.dir=/proc/self/run cannot be created: /proc/self is not writable"),
    ("train.py", ["data.source.root={saved}/nowhere"], 2, "MNIST files missing in {saved}/nowhere/MNIST/raw"),
    ("train.py", ["data=mnist_pickle", "data.source.path={saved}/payload.pkl"], 2, "{saved}/payload.pkl"),
    ("train.py", ["data=mnist_pickle", "data.source.path={saved}/text.pt"], 2, "{saved}/text.pt"),
    ("train.py", ["hydra.run.dir={saved}/text.pt/run"], 2, "hydra.run.dir={saved}/text.pt/run cannot be created: {saved}/text.pt is a file"),
    # train.py: what resume= names
    ("train.py", ["resume={saved}/text.pt"], 2, "{saved}/text.pt: not a checkpoint: it is a text file"),
    ("train.py", ["resume={saved}/empty.pt"], 2, "{saved}/empty.pt: not a checkpoint"),
    ("train.py", ["resume={saved}/truncated.pt"], 2, "{saved}/truncated.pt: truncated or damaged"),
    ("train.py", ["resume={saved}/payload.pt"], 2, "{saved}/payload.pt: refused: it holds objects a checkpoint never holds (posix.system)"),
    ("train.py", ["resume={saved}/no_keys.pt"], 2, "{saved}/no_keys.pt: not a checkpoint of this project: no model, optimizer"),
    ("train.py", ["resume={saved}/other_model.pt"], 2, "{saved}/other_model.pt: made by another model: conv.0.weight is [6, 3, 5, 5] in the checkpoint, [6, 1, 5, 5] in LeNet"),
    ("train.py", ["resume={saved}/nothing.pt"], 2, "resume={saved}/nothing.pt: no checkpoint at {saved}/nothing.pt"),
    ("train.py", ["resume={saved}/empty_folder"], 2, "resume={saved}/empty_folder: no checkpoint there"),
    ("train.py", ["resume={saved}/run", "trainer.batch_size=16"], 2, "resume={saved}/run/checkpoints/last.pt was trained with another config: trainer.batch_size: checkpoint 32, now 16"),
    # train.py: a run directory holding another run's files, or a callable in a resumed checkpoint's config
    ("train.py", ["hydra.run.dir={saved}/run"], 2, "hydra.run.dir={saved}/run holds a completed run (metrics.json"),
    ("train.py", ["hydra.run.dir={saved}/run", "trainer.epochs=3"], 2, "which a new run would overwrite: continue it with resume=auto, or choose a new directory"),
    *[("train.py", [f"resume={{saved}}/calls_{name}.pt"], 2, f"{{saved}}/calls_{name}.pt: refused: its config has model._target_=") for name in HOSTILE],
    ("train.py", ["resume={saved}/calls_nested.pt"], 2, "{saved}/calls_nested.pt: refused: its config names a callable at model.activation"),
    ("train.py", ["model._target_=builtins.open"], 2, "model._target_='builtins.open', which the lab never builds"),
    ("train.py", ["+model.in_channels=3"], 2, "sets model.in_channels, which mnist_lab.models.LeNet does not take (it takes: activation, pool)"),
    ("train.py", ["+trainer._target_=os.system"], 2, "names a callable at trainer"),
    # evaluate.py, predict.py, export.py: a callable in the checkpoint's config is refused before anything is built
    *[(script, [f"ckpt={{saved}}/calls_{name}.pt", *extra], 2, f"{{saved}}/calls_{name}.pt: refused: its config has model._target_=")
      for name in HOSTILE
      for script, extra in (("evaluate.py", []), ("predict.py", ["images={saved}/images"]), ("export.py", ["format=onnx"]))],
    ("evaluate.py", ["ckpt={saved}/bad_values.pt"], 2, "{saved}/bad_values.pt: refused: its config: data.mean must be a number in [0, 1], got 'x'"),
    ("evaluate.py", ["ckpt={saved}/no_groups.pt"], 2, "{saved}/no_groups.pt: not a checkpoint of this project: its config has no model, data, optimizer, scheduler, trainer"),
    ("evaluate.py", ["ckpt={saved}/interpolated.pt"], 2, "{saved}/interpolated.pt: refused: its config holds an interpolation at data.source.root ('${{slurm_gpus:}}')"),
    ("train.py", ["resume={saved}/interpolated.pt"], 2, "{saved}/interpolated.pt: refused: its config holds an interpolation"),
    # evaluate.py
    ("evaluate.py", ["ckpt={saved}/canary.txt"], 2, "{saved}/canary.txt: not a checkpoint: it is a text file"),
    ("evaluate.py", ["ckpt={saved}/blank.png"], 2, "{saved}/blank.png: not a checkpoint: it is a PNG image"),
    ("evaluate.py", [], 2, "ckpt= missing (usage: python evaluate.py"),
    ("evaluate.py", ["ckpt={saved}/text.pt"], 2, "{saved}/text.pt: not a checkpoint"),
    ("evaluate.py", ["ckpt={saved}/truncated.pt"], 2, "{saved}/truncated.pt: truncated or damaged"),
    ("evaluate.py", ["ckpt={saved}/payload.pt"], 2, "{saved}/payload.pt: refused"),
    ("evaluate.py", ["ckpt={saved}/no_keys.pt"], 2, "{saved}/no_keys.pt: not a checkpoint of this project: no model, config"),
    ("evaluate.py", ["ckpt={saved}/other_model.pt"], 2, "{saved}/other_model.pt: made by another model"),
    ("evaluate.py", ["ckpt={saved}/run", "model=resmlp"], 2, "{saved}/run/checkpoints/best.pt: made by another model"),
    ("evaluate.py", ["ckpt={saved}/run", "data=fashion_mnist"], 2, "was trained on mnist; these overrides ask for fashion_mnist"),
    ("evaluate.py", ["ckpt={saved}/run", "model=lenet7"], 2, "model=lenet7: no such option"),
    ("evaluate.py", ["ckpt={saved}/run", "out={saved}/text.pt/cm.png"], 2, "{saved}/text.pt"),
    # predict.py (each bad image gets its own line; the others are still predicted: exit status 1)
    ("predict.py", ["ckpt={saved}/run"], 2, "images= missing"),
    ("predict.py", ["ckpt={saved}/payload.pt", "images={saved}/images"], 2, "{saved}/payload.pt: refused"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/empty_folder"], 2, "images={saved}/empty_folder: no image files there"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/bomb.png"], 1, "{saved}/bomb.png: 400,000,000 pixels, over the limit of 50 megapixels"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/big.png"], 1, "{saved}/big.png: 10000x10000 pixels, over the limit"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/not_an_image.png"], 1, "{saved}/not_an_image.png: not an image PIL can read"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/blank.png"], 1, "{saved}/blank.png: no digit found"),
    ("predict.py", ["ckpt={saved}/run", "images={saved}/nothing.png"], 1, "{saved}/nothing.png: cannot be read"),
    # export.py
    ("export.py", ["ckpt={saved}/run"], 2, "format= missing (usage: python export.py"),
    ("export.py", ["ckpt={saved}/run", "format=tflite"], 2, "format=tflite: not an export format; choose one of onnx, torchscript"),
    ("export.py", ["ckpt={saved}/truncated.pt", "format=onnx"], 2, "{saved}/truncated.pt: truncated or damaged"),
    ("export.py", ["ckpt={saved}/run", "format=torchscript", "out={saved}/text.pt/model.pt"], 2, "{saved}/text.pt"),
    # report.py
    ("report.py", [], 2, "give one directory, not 0 arguments"),
    ("report.py", ["{saved}/nowhere"], 2, "{saved}/nowhere is not a directory"),
    ("report.py", ["{saved}/empty_folder"], 2, "no runs below {saved}/empty_folder"),
    # tune.py
    ("tune.py", [], 2, "choose a search space: python tune.py hparams_search="),
    ("tune.py", ["hparams_search=lenet", "tune.storage=foo://somewhere"], 2, "tune.storage=foo://somewhere: unknown database 'foo'"),
    ("tune.py", ["hparams_search=lenet", "tune.storage=mysql://user@host/db"], 2, "tune.storage=mysql://user@host/db: the driver for mysql is not installed"),
    ("tune.py", ["hparams_search=lenet", "tune.storage=sqlite:///{saved}/nowhere/study.db"], 2, "tune.storage=sqlite:///{saved}/nowhere/study.db: no folder {saved}/nowhere"),
    ("tune.py", ["hparams_search=lenet", "tune.storage=sqlite://"], 2, "tune.storage=sqlite://: an in-memory database"),
    ("tune.py", ["hparams_search=lenet", "tune.storage={saved}/nowhere/journal.log"], 2, "tune.storage={saved}/nowhere/journal.log: no folder {saved}/nowhere"),
    ("tune.py", ["hparams_search=lenet", "tune.trials=0"], 2, "tune.trials must be an integer > 0, got 0"),
    ("tune.py", ["hparams_search=lenett"], 2, "hparams_search=lenett: no such option (did you mean hparams_search=lenet?)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "args", "status", "says"), CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES]
)
def test_a_bad_input_ends_in_one_line_naming_it(
    script: str, args: list[str], status: int, says: str, saved: Path, tiny_mnist: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture,
) -> None:  # fmt: skip
    fill = {"saved": str(saved), "out": str(tmp_path)}
    args = [a.format(**fill) for a in args]
    if script == "train.py":  # the tiny set, in a directory of the test's own (unless the case names one)
        shrink = [
            o
            for o in tiny_overrides(tiny_mnist)
            if not o.startswith("data.source.") or "data=" not in str(args)
        ]
        args = [*shrink, f"hydra.run.dir={tmp_path / 'run'}", *args]
    if script == "tune.py" and args:
        args = [*args, f"tune.dir={tmp_path / 'study'}"]
    before = snapshot(saved)
    code, output = run_entry(script, args, monkeypatch, capfd)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert (code, len(errors)) == (status, 1), output
    assert says.format(**fill) in errors[0], errors[0]
    assert "Traceback" not in output and "weights_only=False" not in output, output
    assert not (saved / "payload-ran").exists()  # no payload ran
    assert snapshot(saved) == {**before, **{p: h for p, h in snapshot(saved).items() if p not in before}}
    status_file = tmp_path / "run" / "status.json"
    if status_file.exists():  # a run that failed says so, never "running"
        assert '"status": "failed"' in status_file.read_text()


def test_an_oversized_image_is_refused_and_the_good_ones_are_still_predicted(
    saved: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    images = f"images=[{saved}/bomb.png,{saved}/images/one.png,{saved}/big.png]"
    code, output = run_entry("predict.py", [f"ckpt={saved}/run", images], monkeypatch, capfd)
    assert code == 1 and "Traceback" not in output
    assert [line.split(":")[1].strip() for line in output.splitlines() if line.startswith("error:")] == [
        f"{saved}/bomb.png",
        f"{saved}/big.png",
    ]
    assert any(line.startswith(f"{saved}/images/one.png: ") for line in output.splitlines()), output


def test_a_report_skips_a_corrupt_metrics_file_with_a_warning_naming_it(
    saved: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    code, output = run_entry("report.py", [f"{saved}/sweep"], monkeypatch, capfd)
    assert code == 0 and "Traceback" not in output, output
    assert f"warning: {saved}/sweep/1/metrics.json: unreadable" in output
    assert "| defaults | LeNet | 61,706 | 1 |" in output  # the leaderboard, from the readable run


def test_more_threads_than_cpus_is_warned_about(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    asked = available_cpus() + 1  # one more than there are: enough to warn, not enough to crawl
    args = [
        *tiny_overrides(tiny_mnist),
        "trainer.epochs=0.1",
        f"trainer.threads={asked}",
        f"hydra.run.dir={tmp_path}",
    ]
    threads = torch.get_num_threads()
    try:
        code, output = run_entry("train.py", args, monkeypatch, capfd)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, output
    assert f"trainer.threads={asked} is more than the {asked - 1} CPUs this process may use" in output


@pytest.mark.parametrize("name", [*HOSTILE, "nested"])
def test_the_api_refuses_a_checkpoint_whose_config_names_a_callable(
    name: str, saved: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(saved / "run", run)
    shutil.copyfile(saved / f"calls_{name}.pt", run / "checkpoints" / "best.pt")
    before = snapshot(saved)
    with pytest.raises(ValueError, match="refused: its config") as refused:
        load(run).predict(torch.zeros(28, 28))
    assert str(refused.value).startswith(f"{run}/checkpoints/best.pt: refused")
    assert snapshot(saved) == before and not (saved / "payload-ran").exists()


def test_the_api_refuses_to_train_over_a_completed_run(saved: Path, tiny_mnist: Path) -> None:
    before = snapshot(saved)
    with pytest.raises(ValueError, match=f"run_dir={saved / 'run'} holds a completed run"):
        api_train(*tiny_overrides(tiny_mnist), run_dir=saved / "run")
    assert all(snapshot(saved)[path] == digest for path, digest in before.items())
