"""bench/: the benchmarks run (smoke size) and write their JSON and plot."""

import importlib
import json
import statistics
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def run_bench(module: str, tmp_path: Path, *args: str) -> Path:
    """`python -m <module> --smoke --out-dir <tmp_path> <args>`, in this process (no interpreter start-up)."""
    importlib.import_module(module).main(["--smoke", "--out-dir", str(tmp_path), *args])
    (path,) = tmp_path.glob("*.json")
    return path


def test_throughput_benchmark_runs_and_writes_its_json(mnist_root: Path, tmp_path: Path) -> None:
    path = run_bench("bench.throughput", tmp_path, "--models", "resmlp", "--batch-sizes", "64")
    content = json.loads(path.read_text())
    assert content["settings"]["rounds"] == 2 and content["machine"]["torch"] == torch.__version__
    floors = ["floor-eager-contiguous", "floor-compiled-contiguous"]  # channels_last: not for an MLP
    assert {(r["model"], r["pipeline"]) for r in content["results"]} == {
        ("resmlp", p) for p in ("classic", "mnist-lab", *floors)
    }
    for result in content["results"]:
        spread = result["images_per_second"]
        assert (
            len(spread["rounds"]) == 2
            and spread["median"] == statistics.median(spread["rounds"])
            and (spread["min"], spread["max"]) == (min(spread["rounds"]), max(spread["rounds"]))
            and spread["min"] > 0
        )
    median = {r["pipeline"]: r["images_per_second"]["median"] for r in content["results"]}
    (ratio,) = content["ratios"]
    assert len(ratio["ours_over_classic"]["rounds"]) == 2 and ratio["ours_over_floor"]["median"] > 0
    assert ratio["floor"] == max(floors, key=median.get)  # the fastest variant is the floor
    assert set(content["settings"]["compile_warm_up_seconds"]) == {
        "resmlp/64/floor-compiled-contiguous"
    }  # compiled once, the warm-up reported apart
    assert content["table"].count("\n") == 2  # header, rule, one row


def test_time_to_accuracy_benchmark_writes_json_and_a_plot(mnist_root: Path, tmp_path: Path) -> None:
    # (torch.compile's path through lab.build is run by the throughput smoke's compiled floors)
    path = run_bench("bench.time_to_accuracy", tmp_path, "optimizer.lr=0.002", "--models", "resmlp")
    content = json.loads(path.read_text())
    assert "optimizer.lr=0.002" in content["overrides"]
    (run,) = content["runs"]
    assert run["model"] == "resmlp" and run["target"] == 0.983 and len(run["curve"]) == 1
    assert 0 < run["final_test_acc"] < 1 and run["train_seconds"] > 0
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_to_accuracy_times_a_whole_experiment(mnist_root: Path, tmp_path: Path) -> None:
    path = run_bench("bench.time_to_accuracy", tmp_path, "--experiment", "speedrun")
    content = json.loads(path.read_text())
    (run,) = content["runs"]  # smoke: seed 0, 1 epoch on 512 images, through lab.run.train
    assert content["experiment"] == "speedrun" and path.name.startswith("time_to_accuracy-speedrun-")
    assert run["epochs"] == 1 and 0 < run["test_acc"] < 1 and run["seconds"] > 0
    summary = content["summary"]
    assert summary["seconds_median"] == run["seconds"] and summary["test_acc_mean"] == run["test_acc"]
    assert summary["all_reached_99"] == (run["test_acc"] >= 0.99)
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_benchmark_times_every_option_and_torchvision(mnist_root: Path, tmp_path: Path) -> None:
    content = json.loads(run_bench("bench.augment", tmp_path).read_text())
    ours = content["seconds_per_epoch"]
    assert set(ours) == {"none", "shift", "affine", "elastic", "affine_elastic"}
    assert all(len(v["rounds"]) == 1 and v["median"] > 0 for v in ours.values())
    for library in ("torchvision_v2_per_image_seconds_per_epoch", "kornia_seconds_per_epoch"):
        assert set(content[library]) == {"affine", "elastic", "affine_elastic"}
        assert all(v["median"] > 0 for v in content[library].values())


def test_step_benchmark_counts_the_ops_of_both_pipelines_and_writes_its_json(tmp_path: Path) -> None:
    path = run_bench("bench.step", tmp_path, "--device", "cpu")
    content = json.loads(path.read_text())
    results = content["results"]
    assert set(results) == {"bare/default", "bare/fused", "mnist-lab/default", "mnist-lab/fused"}
    for implementation in ("default", "fused"):
        lab = results[f"mnist-lab/{implementation}"]
        assert (
            lab["ops"] > results[f"bare/{implementation}"]["ops"] > 100
        )  # a real step: forward, backward, update
        assert lab["ops_over_bare"] == lab["ops"] / results[f"bare/{implementation}"]["ops"]
        assert len(lab["seconds_per_step"]["rounds"]) == 2 and lab["seconds_per_step"]["min"] > 0
    assert results["bare/fused"]["ops"] < results["bare/default"]["ops"]  # one kernel for all the updates
