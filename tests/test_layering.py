"""The layout's rules (docs/architecture.md): entry points -> lab -> trainer, data, models; trainer, data and models know
nothing of Hydra, OmegaConf, Optuna or lab; nothing imports an entry point; everything installed lives under one
import name, mnist_lab (lab/ is mnist_lab itself; trainer/, data/ and models/ are mnist_lab.trainer, ...), so a
project's own `data/` or `models/` package shadows nothing of ours."""

import ast
import subprocess
import sys

import pytest

from mnist_lab.config import PROJECT_ROOT

ENTRY_POINTS = {"train", "evaluate", "predict", "export", "tune", "report"}
PACKAGES = ("lab", "trainer", "data", "models", "bench", "tests", "hydra_plugins")


def imported_modules(path) -> set[str]:  # noqa: ANN001
    """Top-level names of every module `path` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names |= {arg.value.split(".")[0] for arg in node.args if isinstance(arg, ast.Constant)}
    return names


def test_no_module_imports_an_entry_point() -> None:
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(imported_modules(path) & ENTRY_POINTS)
        for package in PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if imported_modules(path) & ENTRY_POINTS
    }
    offenders |= {f"{name}.py": sorted(imported_modules(PROJECT_ROOT / f"{name}.py") & ENTRY_POINTS)
                  for name in ENTRY_POINTS if imported_modules(PROJECT_ROOT / f"{name}.py") & ENTRY_POINTS}  # fmt: skip
    assert offenders == {}


@pytest.mark.slow  # a Python process per package
@pytest.mark.parametrize("package", ["trainer", "data", "models"])
def test_plain_pytorch_packages_load_no_config_or_search_library(package: str) -> None:
    modules = [
        f"mnist_lab.{package}.{p.stem}"
        for p in sorted((PROJECT_ROOT / package).glob("*.py"))
        if p.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in sys.modules if '.' not in m or m.startswith('mnist_lab.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    layers = {name.split(".")[1] for name in loaded if name.startswith("mnist_lab.")}
    assert loaded & {"hydra", "omegaconf", "optuna", *ENTRY_POINTS} == set()
    assert layers <= {"trainer", "data", "models"}, layers  # nothing of lab/ (mnist_lab's own modules)
    if package != "trainer":
        assert "trainer" not in layers  # data and models never import trainer


@pytest.mark.slow  # a Python process
def test_status_and_report_code_pay_no_torch_import() -> None:
    code = (
        "import sys, mnist_lab.status, mnist_lab.tools.report, mnist_lab.overrides; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.slow  # a Python process
def test_a_projects_own_data_and_models_packages_shadow_nothing_of_the_labs(tmp_path) -> None:  # noqa: ANN001
    for package in ("data", "models", "trainer", "lab"):  # a notebook folder's own packages, as many have
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"MINE = '{package}'\n")
    code = (
        "from mnist_lab import load, train; import mnist_lab.data.loader, mnist_lab.models, mnist_lab.trainer.loop; "
        "import data, models; print(data.MINE, models.MINE, mnist_lab.data.loader.MNIST_MEAN)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["data", "models", "0.1307"]
