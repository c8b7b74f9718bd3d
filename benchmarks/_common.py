"""Shared pieces of the benchmark scripts: data sets, condition keys, timing, tables."""

from __future__ import annotations

import contextlib
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
from lightning.pytorch.callbacks import Callback

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


def table_text(title: str, table: pd.DataFrame, *, command: str, notes: str = "") -> str:
    """The markdown of a benchmark table: title, command, machine, date, the table and notes."""
    md = table.to_markdown(index=False)
    return (
        f"## {title}\n\nCommand: `{command}`  \nMachine: {machine()}  \nDate: {date.today().isoformat()}\n\n{md}\n"
        + (f"\n{notes}\n" if notes else "")
    )


def write_table(
    name: str, title: str, table: pd.DataFrame, *, command: str, notes: str = "", path: Path | None = None
) -> str:
    """Print the table as markdown and write it to docs/benchmarks/<name>.md (or ``path``) with command, machine
    and date."""
    text = table_text(title, table, command=command, notes=notes)
    path = DOCS / f"{name}.md" if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return text


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB.

    Linux's ``VmHWM`` (``/proc/self/status``): unlike ``getrusage``'s ``ru_maxrss``, which a process started with
    ``subprocess`` inherits from its parent across ``exec`` (a fresh child of a 1 GB parent reports at least 1 GB),
    it counts this process's own pages only. ``ru_maxrss`` where there is no ``/proc``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepTimer(Callback):
    """Lightning callback timing the training steps after ``warmup`` steps (``.times``: seconds since the first
    timed step, one per step; ``.steps_per_s``)."""

    def __init__(self, warmup: int):
        self.warmup, self.times, self.t0 = warmup, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None and trainer.global_step > self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

    @property
    def steps_per_s(self) -> float:
        """Timed steps per second (NaN before any was timed)."""
        return len(self.times) / self.times[-1] if self.times and self.times[-1] > 0 else float("nan")


@contextlib.contextmanager
def keep_threads():
    """Keep torch's CPU thread count across the block: loading and preprocessing a data set with scanpy can reset
    it (OpenMP's count, which torch reads, put back to the machine's cores)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


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
