"""examples/*.ipynb run top to bottom in a real Jupyter kernel (nbclient + ipykernel), failing on any error cell;
the TensorBoard cell (a server) is left out. Committed without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mnist_lab.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

EXAMPLES = PROJECT_ROOT / "examples"


def outputs_text(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) for output in cell.outputs
    )


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_notebooks_are_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(notebook)
    assert all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in notebook.cells
        if cell.cell_type == "code"
    )


@pytest.mark.long
def test_quickstart_runs_in_a_jupyter_kernel(tmp_path: Path, mnist_root: Path) -> None:
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    notebook.cells = [c for c in notebook.cells if "tensorboard" not in c.metadata.get("tags", [])]
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "Run(LeNet, test accuracy" in outputs_text(code[0])
    assert any(o.get("data", {}).get("image/png") for o in code[1].outputs)  # the history, plotted
    assert (
        "test accuracy" in outputs_text(code[2]) and "image/png" in code[2].outputs[-1]["data"]
    )  # confusion
    predicted = outputs_text(code[4])
    assert predicted.startswith("7: ") and "\n1: " in predicted, predicted  # the drawn 7 and the stored 1
    assert "LeNetRes" in outputs_text(code[5]) and "LeNet " in outputs_text(code[5])
    for run in ("lenet", "lenet_res"):  # the same run directories `python train.py` writes
        assert (tmp_path / "runs" / run / "metrics.json").is_file()
        assert (tmp_path / "runs" / run / ".hydra" / "overrides.yaml").is_file()
        assert (tmp_path / "runs" / run / "checkpoints" / "best.pt").is_file()
        assert "epoch 3/3" in (tmp_path / "runs" / run / "train.log").read_text()
