"""How the cost of scflowlm grows with the data: backed AnnData from 10k to 1M cells, many conditions at once.

For each size a synthetic data set is written to disk as a backed ``.h5ad``: sparse counts-like ``X`` (2,000 genes,
about 40 detected per cell, log1p of Poisson counts), ``obsm["X_pca"]`` = the centred expression projected on 50
orthonormal loadings (``varm["PCs"]``, so the model's gene map is exact), and 1,000 conditions: 4 cell types x 250
perturbations (one of them the control). Each size runs in a process of its own, which reports:

- ``setup_anndata`` time and its peak RSS above the process's RSS before it (the peak count restarted just before
  it; X is read in chunks only for the finiteness check and the gene means; the states come from ``obsm``);
- training throughput: cells per second over a fixed number of steps after a warm-up (the default model,
  batch 128, ``--steps`` steps, one thread);
- prediction throughput: cells per second for ``--predict-cells`` cells of one condition;
- the peak RSS of the whole run.

Then, once (on the smallest data), for the default model and for the paper's 16 time points (``--presets``):
1,000 conditions x 100 cells predicted in one call against 1,000 calls of one condition each, side by side in one
process (conditions per minute).

Usage::

    python benchmarks/scale.py                     # 10k and 100k cells (about 3 CPU minutes)
    python benchmarks/scale.py --sizes 10000 100000 1000000   # the 1M point: about 1 more minute, 0.6 GB of disk
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

N_GENES, N_PCS, N_TYPES, N_PERTS = 2000, 50, 4, 250
SETUP = {
    "prompt_template": "Generate a {cell_type} cell with {perturbation} perturbed:",
    "control_template": "Generate an unperturbed {cell_type} cell:",
    "perturbation_key": "perturbation",
    "control_value": "control",
}


def rss_mb() -> float:
    """Peak resident memory of this process so far, MB (its own, not its parent's: see ``C.peak_rss_mb``)."""
    return C.peak_rss_mb()


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak since the last reset), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count (Linux ``clear_refs``), so the next peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def make_data(n: int, path: Path, seed: int = 0, *, n_genes: int = N_GENES, n_pcs: int = N_PCS) -> None:
    """Write the synthetic backed data set of ``n`` cells (chunked; memory stays a few hundred MB at 1M cells)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    loadings = np.linalg.qr(rng.normal(size=(n_genes, n_pcs)))[0].astype(np.float32)  # [G, P] orthonormal
    types = rng.integers(N_TYPES, size=n)
    perts = rng.integers(N_PERTS, size=n)  # 0 = control
    # per type / perturbation: 40 favoured genes' rates
    programs = rng.normal(size=(N_TYPES + N_PERTS, 40)) * 0.5
    genes = rng.integers(n_genes, size=(N_TYPES + N_PERTS, 40))
    rows, cols, vals = [], [], []
    for start in range(0, n, 100_000):
        idx = np.arange(start, min(start + 100_000, n))
        g = np.concatenate([genes[types[idx]], genes[N_TYPES + perts[idx]]], axis=1)  # [m, 80]
        # [m, 80]
        lam = np.exp(np.concatenate([programs[types[idx]], programs[N_TYPES + perts[idx]]], axis=1))
        counts = rng.poisson(lam)
        keep = counts > 0
        r = np.repeat(idx[:, None], g.shape[1], axis=1)[keep]
        rows.append(r)
        cols.append(g[keep])
        vals.append(np.log1p(counts[keep]).astype(np.float32))
    X = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n_genes)
    )
    X.sum_duplicates()
    means = np.asarray(X.mean(0)).ravel()
    pcs = np.zeros((n, n_pcs), dtype=np.float32)
    for start in range(0, n, 50_000):
        block = X[start : start + 50_000]
        pcs[start : start + 50_000] = block @ loadings - means @ loadings
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in types]),
            "perturbation": pd.Categorical(
                np.where(perts == 0, "control", np.char.add("gene", perts.astype(str)))
            ),
        },
        index=np.char.add("c", np.arange(n).astype(str)),
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.obsm["X_pca"] = pcs
    adata.varm["PCs"] = loadings
    adata.write_h5ad(path)


def measure(n: int, path: Path, steps: int, predict_cells: int, threads: int) -> dict:
    """One size, in this process: setup, training throughput, prediction throughput, peak RSS."""
    import anndata as ad
    import scvi
    import torch

    import scflowlm

    torch.set_num_threads(threads)
    scvi.settings.seed = 0
    adata = ad.read_h5ad(path, backed="r")
    before, peak_before = current_rss_mb(), rss_mb()
    # the peak of setup alone: without the reset, reading the file (a transient peak) would count as setup's
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    scflowlm.CaLMFlowModel.setup_anndata(adata, **SETUP)
    setup_s = time.perf_counter() - t0
    setup_peak = (_status_mb("VmHWM") if reset else rss_mb()) - before
    obsm_mb = adata.obsm["X_pca"].nbytes / 2**20
    model = scflowlm.CaLMFlowModel(adata)

    timer = C.StepTimer(warmup=20)
    model.train(
        max_epochs=1000,
        max_steps=steps + 20,
        batch_size=128,
        enable_progress_bar=False,
        callbacks=[timer],
        check_val_every_n_epoch=10**6,
        train_size=0.9,
    )
    train_cells_s = 128 * timer.steps_per_s
    cond = {"cell_type": "type1", "perturbation": "gene7"}
    t0 = time.perf_counter()
    model.predict_perturbation(cond, n_cells=predict_cells, seed=0, batch_size=512)
    predict_s = time.perf_counter() - t0
    return {
        "cells": n,
        "setup s": round(setup_s, 2),
        "setup peak RSS MB (above start)": round(setup_peak, 0),
        "obsm MB": round(obsm_mb, 0),
        "train cells/s": round(train_cells_s, 0),
        "train s/step": round(1 / max(train_cells_s, 1e-9) * 128, 4),
        "predict cells/s": round(predict_cells / predict_s, 0),
        "peak RSS MB": round(max(peak_before, rss_mb()), 0),
    }


def many_conditions(path: Path, n_conditions: int, n_cells: int, threads: int, preset: str) -> dict:
    """n_conditions x n_cells predicted in one call vs one call per condition, same model, same process."""
    import anndata as ad
    import scvi
    import torch

    import scflowlm

    torch.set_num_threads(threads)
    scvi.settings.seed = 0
    adata = ad.read_h5ad(path)
    scflowlm.CaLMFlowModel.setup_anndata(adata, **SETUP)
    model = scflowlm.CaLMFlowModel(adata, **scflowlm.model.PRESETS[preset])
    model.is_trained_ = True  # throughput only: the weights' values do not change the cost
    conds = [
        {"cell_type": f"type{t}", "perturbation": f"gene{p}"}
        for t in range(N_TYPES)
        for p in range(1, N_PERTS + 1)
    ]
    conds = conds[:n_conditions]
    t0 = time.perf_counter()
    together = model.predict_perturbation(conds, n_cells=n_cells, seed=0, batch_size=1024)
    one_call = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = [model.predict_perturbation(c, n_cells=n_cells, seed=0) for c in conds]
    per_condition = time.perf_counter() - t0
    same = max(
        float(np.abs(together.X[i * n_cells : (i + 1) * n_cells] - p.X).max()) for i, p in enumerate(parts)
    )
    return {
        "model": f"{preset} (N={model.module.n_time_points}, K={model.module.n_space_tokens})",
        "conditions": len(conds),
        "cells each": n_cells,
        "one call s": round(one_call, 1),
        f"{len(conds)} calls s": round(per_condition, 1),
        "speed-up": round(per_condition / one_call, 1),
        "conditions/min (one call)": round(60 * len(conds) / one_call, 0),
        "max |difference|": f"{same:.1e}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument(
        "--steps", type=int, default=200, help="timed training steps (after 20 warm-up steps)"
    )
    parser.add_argument("--predict-cells", type=int, default=5000)
    parser.add_argument("--conditions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["cpu", "paper"],
        help="model presets (scflowlm.model.PRESETS) of the many-conditions comparison",
    )
    parser.add_argument("--preset", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one measurement in a fresh process, printed as JSON
        kind, path = args.worker
        out = (
            measure(args.n, Path(path), args.steps, args.predict_cells, args.threads)
            if kind == "size"
            else many_conditions(Path(path), args.conditions, 100, args.threads, args.preset)
        )
        print("RESULT " + json.dumps(out), flush=True)
        return

    import pandas as pd

    rows, extra = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            path = Path(tmp) / f"synthetic_{n}.h5ad"
            t0 = time.perf_counter()
            make_data(n, path)
            print(
                f"{n:,} cells written in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 2**20:.0f} MB)",
                flush=True,
            )
            jobs = [("size", "cpu")] + (
                [("conditions", p) for p in args.presets] if n == min(args.sizes) else []
            )
            for kind, preset in jobs:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    str(path),
                    "--n",
                    str(n),
                    "--steps",
                    str(args.steps),
                    "--predict-cells",
                    str(args.predict_cells),
                    "--conditions",
                    str(args.conditions),
                    "--threads",
                    str(args.threads),
                    "--preset",
                    preset,
                ]
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    check=False,
                    env=os.environ | {"PYTHONWARNINGS": "ignore"},
                )
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    raise RuntimeError(proc.stderr[-3000:])
                result = json.loads(line[len("RESULT ") :])
                print(result, flush=True)
                if kind == "size":
                    rows.append(result)
                else:
                    extra.append(result)
            path.unlink()
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["setup time / cells vs smallest"] = [
        f"{(r['setup s'] / base['setup s']) / (r['cells'] / base['cells']):.2f}" for _, r in table.iterrows()
    ]
    table["step time vs smallest"] = [
        f"{r['train s/step'] / base['train s/step']:.2f}" for _, r in table.iterrows()
    ]
    notes = (
        "Training: the default CaLMFlowModel, batch 128, one thread; throughput over the timed steps after 20 warm-up "
        "steps. Setup peak RSS: the peak resident memory during setup_anndata above the process's memory before it "
        "(the backed X is read in chunks of 4,096 rows; obsm is in memory). Ratios below 1.2 for the step time and about "
        "1 for setup time per cell mean the cost does not grow with the data beyond linear.\n\n"
        + (
            "### Many conditions in one call\n\n"
            + pd.DataFrame(extra).to_markdown(index=False)
            + "\n\nOne call batches the rollouts of all conditions (their prompts encoded together, each condition's "
            "randomness from its own generator): the cells equal those of one call per condition (max |difference| "
            "above)."
            if extra
            else ""
        )
    )
    C.write_table(
        "scale", "Scale: backed AnnData, 1,000 conditions", table, command=C.command_line(), notes=notes
    )


if __name__ == "__main__":
    main()
