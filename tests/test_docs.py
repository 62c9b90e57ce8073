"""README.md and docs/: every relative link resolves, every `python train.py` / `tune.py` / `torchrun ... train.py`
command in a fenced block composes with the project's configs, the module map lists exactly the modules in the
tree, and the README stays short."""

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mnist_lab.config import PROJECT_ROOT, compose

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)


def commands(script: str) -> list[tuple[str, list[str]]]:
    """(page, arguments) of every line in a fenced block that runs `script` (after `python` or `torchrun ...`)."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.splitlines():
                if not line.startswith(("python ", "torchrun ")):
                    continue
                words = shlex.split(line.split(" #")[0].split("&&")[0])
                if script in words:
                    found.append((page.name, words[words.index(script) + 1 :]))
    return found


def first_of_each_sweep(args: list[str]) -> list[str]:
    """A multirun's overrides as one of its jobs sees them: the first value of each sweep."""
    flags = {"-m", "--multirun", "--cfg", "job", "hydra", "all"}  # Hydra's own flags (--cfg job: print)
    parsed = OverridesParser.create().parse_overrides([a for a in args if a not in flags])
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_every_page_is_linked_from_the_readme_and_the_readme_is_short() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert {p.name for p in PAGES[1:]} <= {Path(t).name for t in LINK.findall(readme)}


@pytest.mark.parametrize(
    ("page", "args"), commands("train.py") + commands("tune.py"), ids=lambda value: str(value)[:60]
)
def test_every_command_shown_composes(page: str, args: list[str]) -> None:
    compose(
        *first_of_each_sweep(args), return_hydra_config=True
    )  # an unknown option, key or value fails here


def test_the_docs_show_commands_for_the_common_tasks() -> None:
    shown = [" ".join(args) for _, args in commands("train.py")]
    assert len(shown) >= 20 and any("hydra/launcher=slurm" in s for s in shown)
    assert any("resume=" in s for s in shown) and any(s.startswith("-m") for s in shown)


def test_the_module_map_lists_exactly_the_modules_in_the_tree() -> None:
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Module map") :].split("\n## ")[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    mapped = set(re.findall(r"`([\w/]+\.py)`", " ".join(first_cells)))
    tree = {
        str(p.relative_to(PROJECT_ROOT))
        for pattern in (
            "*.py",
            "lab/*.py",
            "lab/*/*.py",
            "trainer/*.py",
            "data/*.py",
            "models/*.py",
            "bench/*.py",
            "hydra_plugins/*/*.py",
        )
        for p in PROJECT_ROOT.glob(pattern)
        if p.name != "__init__.py"
    }
    assert mapped == tree, f"missing: {sorted(tree - mapped)}; not in the tree: {sorted(mapped - tree)}"


def test_the_docs_speak_of_the_product_not_its_history() -> None:
    for page in PAGES:
        text = page.read_text().lower()
        for phrase in ("the issue", "this round", "redesign", "before this", "left for later"):
            assert phrase not in text, f"{page.name}: {phrase!r}"
