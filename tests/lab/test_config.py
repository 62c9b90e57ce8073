"""lab/config.py and configs/: every option of every group composes and instantiates; paths resolve from the
project root; values are checked by name; overrides are parsed in one way."""

import os
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_lab.config import CONFIG_DIR, PROJECT_ROOT, check_config, compose
from mnist_lab.overrides import override_key, split_args


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def test_groups_have_the_options_the_readme_promises() -> None:
    assert options("model") == ["lenet", "lenet_res", "resmlp"]
    assert options("data") == ["fashion_mnist", "fashion_mnist_pickle", "mnist", "mnist_pickle"]
    assert options("augment") == ["affine", "affine_elastic", "clothing", "elastic", "none", "shift"]
    assert options("optimizer") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["cosine", "none", "onecycle", "step"]
    assert options("trainer") == ["default"]


@pytest.mark.parametrize("name", options("model"))
def test_every_model_option_instantiates_and_classifies(name: str) -> None:
    model = instantiate(compose(f"model={name}").model)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", options("optimizer"))
@pytest.mark.parametrize("schedule", options("scheduler"))
def test_every_optimizer_and_schedule_instantiate_together(name: str, schedule: str) -> None:
    cfg = compose(f"optimizer={name}", f"scheduler={schedule}")
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = instantiate(cfg.optimizer)([weight])
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=20, steps_per_epoch=5)
    assert optimizer.defaults["lr"] == cfg.optimizer.lr
    (weight**2).sum().backward()
    optimizer.step()
    scheduler.step()
    assert not torch.equal(weight.detach(), torch.ones(3))


def test_every_data_option_instantiates(tiny_mnist: Path, tmp_path: Path) -> None:
    from mnist_lab.data.fetch import write_seed_pickle

    pickle_path = write_seed_pickle(tiny_mnist, tmp_path / "tiny.pkl", verify_md5=False)
    from_idx = instantiate(
        compose("data=mnist", f"data.source.root={tiny_mnist}", "data.source.verify_md5=false").data.source
    )
    from_pickle = instantiate(compose("data=mnist_pickle", f"data.source.path={pickle_path}").data.source)
    assert torch.equal(from_idx.train_images, from_pickle.train_images)
    assert torch.equal(from_idx.test_labels, from_pickle.test_labels)


def test_config_paths_resolve_from_the_project_root_not_the_working_directory(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = compose("data=mnist_pickle")
        assert Path(cfg.data.source.path) == PROJECT_ROOT / "data" / "mnist.pkl"
        fashion = compose("data=fashion_mnist_pickle").data
        assert Path(fashion.source.path) == PROJECT_ROOT / "data" / "fashion_mnist.pkl"
        assert OmegaConf.to_container(fashion, resolve=True) | {"source": None} == OmegaConf.to_container(
            compose("data=fashion_mnist").data, resolve=True
        ) | {"source": None}  # the same name, constants, classes and split as the IDX option
        assert Path(compose().data.source.root) == PROJECT_ROOT / "data"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be an integer > 0, got 0"),
        (
            "trainer.epochs=-1",
            "trainer.epochs must be a number > 0 (1.5: one and a half passes over the training data), got -1",
        ),
        (
            "trainer.epochs=0",
            "trainer.epochs must be a number > 0 (1.5: one and a half passes over the training data), got 0",
        ),
        ("optimizer.lr=inf", "optimizer.lr=inf: must be a finite number"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan: must be a finite number"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a number > 0, got -0.1"),
        ("optimizer.lr=abc", "optimizer.lr must be a number > 0, got 'abc'"),
        ("seed=1.5", "seed must be an integer, got 1.5"),
        (
            "trainer.threads=0",
            "trainer.threads must be null (OMP_NUM_THREADS or all available CPUs) or an integer > 0, got 0",
        ),
        ("trainer.channels_last=yes", "trainer.channels_last must be true, false or auto, got 'yes'"),
        ("trainer.precision=fp8", "trainer.precision must be one of fp32, bf16, fp16, got 'fp8'"),
        (
            "trainer.compile_mode=fast",
            "trainer.compile_mode must be one of default, reduce-overhead, max-autotune, got 'fast'",
        ),
        (
            "data.validation_size=-1",
            "data.validation_size must be an integer >= 0 (images; 0: train on all of them, no validation) "
            "or a fraction in (0, 1), got -1",
        ),
        (
            "data.validation_size=1.5",
            "data.validation_size must be an integer >= 0 (images; 0: train on all of them, no validation) "
            "or a fraction in (0, 1), got 1.5",
        ),
        (
            "augment.max_shift=-1",
            "augment.max_shift must be an integer of pixels in [0, 27]: a shift the size of the 28x28 image leaves nothing of it, got -1",
        ),
        (
            "augment.max_shift=28",
            "augment.max_shift must be an integer of pixels in [0, 27]: a shift the size of the 28x28 image leaves nothing of it, got 28",
        ),
        ("model=resmlp model.depth=65", "model.depth must be an integer in [0, 64], got 65"),
        ("augment.sigma=0", "augment.sigma must be a number of pixels > 0, got 0"),
        ("trainer.max_steps=0", "trainer.max_steps must be null or an integer > 0, got 0"),
        ("trainer.label_smoothing=1", "trainer.label_smoothing must be a number in [0, 1), got 1"),
        ("model.activation=swish", "model.activation must be one of gelu, relu, tanh, got 'swish'"),
        ("model.pool=median", "model.pool must be one of avg, max, got 'median'"),
        ("scheduler.warmup_fraction=1.5", "scheduler.warmup_fraction must be a number in (0, 1), got 1.5"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay must be a number >= 0, got -0.1"),
    ],
)
def test_values_no_run_could_use_are_refused_by_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + re.escape(message) + r"$"):
        check_config(compose(*override.split()))


def test_every_model_option_passes_the_checks_and_builds_its_class() -> None:
    built = {}
    for name in options("model"):
        cfg = compose(f"model={name}")
        check_config(cfg)
        model = instantiate(cfg.model)
        built[name] = type(model).__name__
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert built == {"lenet": "LeNet", "lenet_res": "LeNetRes", "resmlp": "ResBlockMLP"}


def test_overrides_are_parsed_one_way() -> None:
    assert [override_key(o) for o in ("seed=1", "+trainer.x=2", "~resume", "+experiment@_global_=a")] == [
        "seed",
        "trainer.x",
        "resume",
        "experiment@_global_",
    ]
    own, rest = split_args(
        ["ckpt=runs/a=b", "out=x.png", "data=mnist_pickle", "data.source.path=a.pkl"], ("ckpt", "out")
    )
    assert own == {"ckpt": "runs/a=b", "out": "x.png"}  # a value may hold '='
    assert rest == ["data=mnist_pickle", "data.source.path=a.pkl"]


def test_every_named_experiment_composes_and_passes_the_checks() -> None:
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        check_config(compose(f"experiment={path.stem}"))
    lenet = compose("experiment=frontier_lenet")  # the seed architecture, unchanged
    assert (lenet.model.activation, lenet.model.pool, lenet.augment.degrees, lenet.trainer.epochs) == (
        "tanh",
        "avg",
        10.0,
        30,
    )
    assert compose("experiment=fashion_models").data.name == "fashion_mnist"


def test_every_declared_activation_and_pool_builds_a_model_that_runs() -> None:
    from mnist_lab.values import ACTIVATIONS, POOLS

    for activation in ACTIVATIONS:
        for pool in POOLS:
            cfg = compose(f"model.activation={activation}", f"model.pool={pool}")
            check_config(cfg)  # declared, so accepted; and the model builds from it
            assert instantiate(cfg.model)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.width=0", "model.width must be an integer > 0, got 0"),
        ("model.dropout=1", "model.dropout must be a number in [0, 1), got 1"),
    ],
)
def test_a_resmlp_value_is_refused_by_name(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + re.escape(message) + r"$"):
        check_config(compose("model=resmlp", override))


def test_every_option_and_experiment_passes_the_registry_and_the_declared_keys() -> None:
    options = [f"{f.parent.name}={f.stem}" for group in ("model", "data", "augment", "optimizer", "scheduler",
               "experiment", "hparams_search") for f in sorted((CONFIG_DIR / group).glob("*.yaml"))]  # fmt: skip
    assert len(options) > 30
    for option in options:
        check_config(compose(option))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model._target_=builtins.open", "refused: the config has model._target_='builtins.open', which the lab never builds (model is one of mnist_lab.models.LeNet, mnist_lab.models.LeNetRes, mnist_lab.models.ResBlockMLP); nothing was built"),
        ("+model.in_channels=3", "refused: the config sets model.in_channels, which mnist_lab.models.LeNet does not take (it takes: activation, pool); nothing was built"),
        ("+data.source._args_=[1]", "refused: the config sets data.source._args_, which mnist_lab.data.sources.read_idx does not take (it takes: dataset, root, verify_md5); nothing was built"),
        ("+trainer._target_=os.system", "refused: the config names a callable at trainer (trainer._target_='os.system'): the lab builds only model, data.source, optimizer, scheduler; nothing was built"),
        ("+optimizer.foo=1", "refused: the config sets optimizer.foo, which torch.optim.Adam does not take"),
        ("+foo=1", "foo: nothing reads this key"),
        ("+augment.flips=0.5", "augment.flips: nothing reads this key (did you mean augment.flip?)"),
        ("scheduler=cosine scheduler.min_lr=1", "scheduler.min_lr=1 is above optimizer.lr=0.003, the peak rate"),
    ],
)  # fmt: skip
def test_a_config_builds_only_the_labs_own_parts_and_keys_something_reads(
    override: str, message: str
) -> None:
    with pytest.raises(ValueError, match=r"^" + re.escape(message)):
        check_config(compose(*override.split()))
    check_config(compose("+optimizer.betas=[0.7,0.9]", "+optimizer.fused=false"))  # what Adam itself takes
