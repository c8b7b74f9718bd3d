"""Shared pieces of the benchmark scripts: data sets, condition keys, timing, tables."""

from __future__ import annotations

import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scanpy as sc
import torch

import scflowlm

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOCS = ROOT / "docs" / "benchmarks"

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def machine() -> str:
    """One line naming the machine a table was made on."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def load_perturbench() -> tuple[sc.AnnData, dict]:
    """K562 + glioblastoma lines, PCA 50 on the 500 genes."""
    adata = scflowlm.data.perturbench_devel(SHARED / "perturbench_devel" / "devel.h5ad")
    adata.X = (
        adata.X.toarray().astype(np.float32) if hasattr(adata.X, "toarray") else adata.X.astype(np.float32)
    )
    sc.pp.pca(adata, n_comps=50, random_state=0)
    setup = {
        "prompt_template": "Generate a {cell_type} cell with {condition} perturbed:",
        "control_template": "Generate an unperturbed {cell_type} cell:",
        "perturbation_key": "condition",
        "control_value": "control",
    }
    return adata, setup


def load_kang() -> tuple[sc.AnnData, dict]:
    """Kang 2018 muscat subset: normalise, log1p, 1,000 HVGs, PCA 50."""
    adata = scflowlm.data.kang2018(SHARED / "kang2018_muscat_example" / "kang2018_muscat_example_sce.h5ad")
    adata.X = adata.layers["counts"].copy() if "counts" in adata.layers else adata.X
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=1000, subset=True)
    adata.X = adata.X.toarray().astype(np.float32)
    sc.pp.pca(adata, n_comps=50, random_state=0)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    setup = {
        "prompt_template": "Generate a {cell_type} cell stimulated with IFN-beta:",
        "control_template": "Generate an unstimulated {cell_type} cell:",
        "perturbation_key": "condition",
        "control_value": "control",
    }
    return adata, setup


KEYS = {
    "condition_keys": ["cell_type", "condition"],
    "perturbation_key": "condition",
    "control_value": "control",
}


def write_table(name: str, title: str, table: pd.DataFrame, *, command: str, notes: str = "") -> str:
    """Print the table as markdown and write it to docs/benchmarks/<name>.md with command, machine and date."""
    md = table.to_markdown(index=False)
    text = (
        f"## {title}\n\nCommand: `{command}`  \nMachine: {machine()}  \nDate: {date.today().isoformat()}\n\n{md}\n"
        + (f"\n{notes}\n" if notes else "")
    )
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"{name}.md").write_text(text)
    print(text)
    return text


class Timer:
    """Context manager measuring wall time in seconds (``.s``)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def command_line() -> str:
    """The command that is running, repo-relative."""
    return "python " + " ".join(
        [
            str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
            *sys.argv[1:],
        ]
    )
