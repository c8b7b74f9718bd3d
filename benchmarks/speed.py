"""Speed and memory: training and generation throughput of CaLMFlow (with / without KV cache) and CFM (dopri5).

Measured side by side in one run on synthetic data (the default CaLMFlow backbone, GPT-NeoX 2 layers x 64):

- generation: cells/s with and without the KV cache for N time points x K space tokens (target: cache >= 10x
  faster at 16 x 4), and how it grows with N, K, M and the number of cells;
- training: cells/s per epoch for the same settings;
- peak memory (max RSS of a fresh process) for generating 10,000 cells in batches (target < 2 GB).

Examples
--------
python benchmarks/speed.py --quick
python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import scflowlm

warnings.filterwarnings("ignore")
HELD = {"cell_type": "NK", "condition": "IFNB+TNF"}


def make(n_time_points=16, n_space_tokens=4, n_trajectories=1, n_pcs=50):
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=100, n_genes=500, n_pcs=n_pcs)
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    model = scflowlm.CaLMFlowModel(
        adata, n_time_points=n_time_points, n_space_tokens=n_space_tokens, n_trajectories=n_trajectories
    )
    model.module.eval()
    return adata, model


def gen_rate(model, n_cells: int, *, use_cache: bool, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_perturbation(HELD, n_cells=n_cells, seed=0, use_cache=use_cache, batch_size=256)
        best = min(best, time.perf_counter() - t0)
    return n_cells / best


def train_rate(model, adata, *, epochs: int = 1) -> float:
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=128,
        enable_progress_bar=False,
        check_val_every_n_epoch=None,
        train_size=1.0,
    )
    return epochs * adata.n_obs / (time.perf_counter() - t0)


def peak_memory_child(n_cells: int) -> None:
    """Run in a fresh process: generate n_cells in batches and print peak RSS (MB)."""
    adata, model = make()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pred = model.predict_perturbation(HELD, n_cells=n_cells, seed=0, batch_size=256)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"cells": pred.n_obs, "genes": pred.n_vars, "rss_after_setup_mb": base, "peak_rss_mb": peak}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return
    n = 128 if args.quick else 512
    from scflowlm.model import CFMModel

    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=100, n_genes=500, n_pcs=50)
    CFMModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    cfm = CFMModel(adata)
    t0 = time.perf_counter()
    cfm.predict_perturbation(HELD, n_cells=n, seed=0)
    rows = [
        {
            "model": "OT-CFM (dopri5)",
            "N": None,
            "K": None,
            "M": None,
            "gen cells/s (cache)": n / (time.perf_counter() - t0),
            "gen cells/s (no cache)": None,
            "cache speed-up": None,
            "train cells/s": train_rate(cfm, adata),
        }
    ]
    print(rows[-1], flush=True)
    grid = (
        [(16, 4, 1), (8, 4, 1), (16, 1, 1), (16, 2, 1), (16, 4, 2)]
        if args.quick
        else [(16, 4, 1), (8, 4, 1), (32, 4, 1), (16, 1, 1), (16, 2, 1), (16, 8, 1), (16, 4, 2), (16, 4, 4)]
    )
    for N, K, M in grid:
        adata, model = make(N, K, M)
        cached = gen_rate(model, n, use_cache=True)
        uncached = gen_rate(model, n, use_cache=False)
        rows.append(
            {
                "model": "CaLMFlow",
                "N": N,
                "K": K,
                "M": M,
                "gen cells/s (cache)": cached,
                "gen cells/s (no cache)": uncached,
                "cache speed-up": cached / uncached,
                "train cells/s": train_rate(model, adata),
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    scaling = []
    _, model = make()
    for cells in [128, 512] if args.quick else [256, 1024, 4096]:
        scaling.append({"cells": cells, "gen cells/s (cache)": gen_rate(model, cells, use_cache=True)})
    mem_cells = 10_000
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(mem_cells)]
        + (["--threads", str(args.threads)] if args.threads else []),
        capture_output=True,
        text=True,
        check=True,
    )
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    notes = (
        "Generation throughput vs number of cells (16 x 4, batch 256): "
        + ", ".join(f"{r['cells']} cells: {r['gen cells/s (cache)']:.0f} cells/s" for r in scaling)
        + f".\n\nPeak memory generating {mem['cells']:,} cells x {mem['genes']} genes in batches of 256 (fresh process, max RSS): "
        f"{mem['peak_rss_mb']:.0f} MB (after building the model and data: {mem['rss_after_setup_mb']:.0f} MB); target < 2,048 MB."
    )
    C.write_table(
        "speed" + ("_quick" if args.quick else ""),
        f"Speed and memory ({'quick' if args.quick else 'full'})",
        table.round(2),
        command=C.command_line(),
        notes=notes,
    )


if __name__ == "__main__":
    main()
