"""Execute the tutorials (in memory, in their small ``SCFLOWLM_FAST=1`` mode) so they cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: the real data 02_perturbation_prediction and 05_adapt_to_your_data read (it would download the full data set without it)
KANG = (
    TUTORIALS
    / ".."
    / ".."
    / "shared"
    / "data"
    / "kang2018_muscat_example"
    / "kang2018_muscat_example_sce.h5ad"
)
#: the real data 04_combinations_and_unseen_genes reads (it would download it without)
DEVEL = TUTORIALS / ".." / ".." / "shared" / "data" / "perturbench_devel" / "devel.h5ad"


def test_tutorials_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_quickstart.ipynb",
        "02_perturbation_prediction.ipynb",
        "03_pretrained_backbone.ipynb",
        "04_combinations_and_unseen_genes.ipynb",
        "05_adapt_to_your_data.ipynb",
    ]


def test_tutorials_stored_with_outputs():
    """The committed notebooks hold their outputs (figures are visible on GitHub and in the docs)."""
    nbformat = pytest.importorskip("nbformat")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name} has unexecuted cells"
        assert any(
            o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
            for c in code
            for o in c.outputs
        ), f"{path.name} stores no figure"
        errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
        assert not errors, f"{path.name} stores an error output"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_executes(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if path.stem.startswith(("02", "05")) and not KANG.exists():
        pytest.skip("the Kang 2018 example data is not beside the repository (shared/data)")
    if path.stem.startswith("04") and not DEVEL.exists():
        pytest.skip("the PerturBench devel data is not beside the repository (shared/data)")
    monkeypatch.setenv("SCFLOWLM_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.delenv("SCFLOWLM_DOWNLOAD", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell and traceback
    assert os.environ["SCFLOWLM_FAST"] == "1"
