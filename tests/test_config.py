"""Configs: every option of every group composes with hydra.compose and instantiates."""

import os
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONFIG_DIR, PROJECT_ROOT, compose_config

GROUPS = ["model", "data", "optimizer", "scheduler", "trainer"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def test_groups_have_the_options_the_readme_promises() -> None:
    assert options("model") == ["lenet", "lenet_res", "resmlp"]
    assert options("data") == ["mnist", "mnist_pickle"]
    assert options("optimizer") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["cosine", "none", "onecycle", "step"]
    assert options("trainer") == ["default"]


@pytest.mark.parametrize("name", options("model"))
def test_every_model_option_instantiates_and_classifies(name: str) -> None:
    model = instantiate(compose_config(f"model={name}").model)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", options("optimizer"))
@pytest.mark.parametrize("schedule", options("scheduler"))
def test_every_optimizer_and_schedule_instantiate_together(name: str, schedule: str) -> None:
    cfg = compose_config(f"optimizer={name}", f"scheduler={schedule}")
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = instantiate(cfg.optimizer)([weight])
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=20, steps_per_epoch=5)
    assert optimizer.defaults["lr"] == cfg.optimizer.lr
    (weight**2).sum().backward()
    optimizer.step()
    scheduler.step()
    assert not torch.equal(weight.detach(), torch.ones(3))


def test_every_data_option_instantiates(tiny_mnist: Path, tmp_path: Path) -> None:
    from data.fetch import write_seed_pickle

    pickle_path = write_seed_pickle(tiny_mnist, tmp_path / "tiny.pkl", verify_md5=False)
    from_idx = instantiate(
        compose_config(
            "data=mnist", f"data.source.root={tiny_mnist}", "data.source.verify_md5=false"
        ).data.source
    )
    from_pickle = instantiate(
        compose_config("data=mnist_pickle", f"data.source.path={pickle_path}").data.source
    )
    assert torch.equal(from_idx.train_images, from_pickle.train_images)
    assert torch.equal(from_idx.test_labels, from_pickle.test_labels)


def test_config_paths_resolve_from_the_project_root_not_the_working_directory(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = compose_config("data=mnist_pickle")
        assert Path(cfg.data.source.path) == PROJECT_ROOT / "data" / "mnist.pkl"
        assert Path(compose_config().data.source.root) == PROJECT_ROOT / "data"
    finally:
        os.chdir(cwd)


def test_defaults_are_the_documented_ones() -> None:
    cfg = compose_config()
    assert cfg.model._target_ == "models.LeNet" and cfg.model.activation == "tanh"
    assert cfg.trainer.epochs == 10 and cfg.data.validation_size == 5000 and cfg.seed == 0
