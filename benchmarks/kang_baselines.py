"""Baselines on the Kang 2018 IFN-beta example data: one cell type's stimulated cells held out at a time.

Data: ``shared/data/kang2018_muscat_example/kang2018_muscat_example_sce.h5ad`` beside the repository (raw counts;
normalize_total + log1p, all 1,267 genes, PCA 50 on all cells). For each cell type, its stimulated cells are
held out; the control-mean, pooled additive and nearest-context baselines are built from the other cells.

Fair comparison: the real-vs-real floor splits the held-out cells in two random halves, so every predictor is
scored against the same reference half, and the distribution metrics (MMD, W2, energy distance) use the same
number of cells on both sides (``max_cells`` = size of the half). Leiden clusters (resolution 0.3) and their MLP
classifier are fitted once on the PCA coordinates of all cells.

Usage::

    python benchmarks/kang_baselines.py [--quick] [--space umap pca] [--seed 0] [--data PATH]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import scflowlm
from scflowlm import tl

KEYS = ["cell_type", "condition"]
KW = {"condition_keys": KEYS, "perturbation_key": "condition", "control_value": "control"}
DEFAULT_DATA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "kang2018_muscat_example"
    / "kang2018_muscat_example_sce.h5ad"
)
METHODS = ["control_mean", "additive", "nearest_context", "real_vs_real"]


def load(path: Path) -> sc.AnnData:
    adata = sc.read_h5ad(path)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
    sc.pp.pca(adata, n_comps=50, random_state=0)
    return adata


def run(adata: sc.AnnData, cell_types: list[str], spaces: list[str], seed: int) -> pd.DataFrame:
    clf = scflowlm.metrics.fit_leiden_classifier(adata.obsm["X_pca"], seed=seed)
    print(f"Leiden: {clf.n_clusters} clusters, MLP held-out accuracy {clf.accuracy:.3f}")
    rows = []
    for ct in cell_types:
        cond = {"cell_type": ct, "condition": "stimulated"}
        held = ((adata.obs.cell_type == ct) & (adata.obs.condition == "stimulated")).to_numpy()
        train = adata[~held].copy()
        ref, half = tl.baseline_real_vs_real(adata, conditions=cond, condition_keys=KEYS, seed=seed)
        preds = {
            "control_mean": tl.baseline_control_mean(train, conditions=cond, **KW),
            "additive": tl.baseline_additive(train, conditions=cond, **KW),
            "nearest_context": tl.baseline_nearest_context(train, conditions=cond, **KW),
            "real_vs_real": half,
        }
        n_half = half.n_obs
        for name, pred in preds.items():
            row = (
                tl.evaluate(
                    ref,
                    pred,
                    metrics=["correlation", "leiden"],
                    leiden_classifier=clf,
                    seed=seed,
                    key_added=None,
                    **KW,
                )
                .iloc[0]
                .to_dict()
            )
            for space in spaces:
                d = tl.evaluate(
                    ref,
                    pred,
                    metrics="distribution",
                    space=space,
                    max_cells=n_half,
                    seed=seed,
                    key_added=None,
                    **KW,
                ).iloc[0]
                row |= {f"{m}_{space}": d[m] for m in ["mmd", "wasserstein", "edistance"]}
            row["method"] = name
            row["source"] = str(pred.obs["source_context"].iloc[0]) if "source_context" in pred.obs else ""
            row["n_pred_used"] = min(pred.n_obs, n_half)
            rows.append(row)
        print(f"  done {ct} (held-out cells: {held.sum()}, reference half: {held.sum() - n_half})")
    return pd.DataFrame(rows)


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def markdown(df: pd.DataFrame, spaces: list[str]) -> str:
    cols = {
        "r2": "R² all",
        "r2_de": "R² top-100 DE",
        "pearson_delta": "Δr all",
        "pearson_delta_de": "Δr top-100 DE",
    }
    for space in spaces:
        cols |= {
            f"mmd_{space}": f"MMD² {space}",
            f"wasserstein_{space}": f"W2 {space}",
            f"edistance_{space}": f"E-dist {space}",
        }
    cols |= {"leiden_kl": "Leiden KL"}
    out = []
    header = "| cell type | method | " + " | ".join(cols.values()) + " |"
    sep = "|" + "---|" * (len(cols) + 2)
    out += ["### Per held-out cell type", "", header, sep]
    for _, r in df.iterrows():
        out.append(f"| {r['cell_type']} | {r['method']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    out += [
        "",
        "### Mean over held-out cell types",
        "",
        "| method | " + " | ".join(cols.values()) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    means = df.groupby("method", sort=False)[list(cols)].mean()
    for name in METHODS:
        if name in means.index:
            out.append(f"| {name} | " + " | ".join(_fmt(means.loc[name, c]) for c in cols) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="2 cell types, PCA space only")
    parser.add_argument("--space", nargs="+", default=["pca", "umap"], choices=["pca", "umap", "raw"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if not args.data.exists():
        raise SystemExit(f"data not found: {args.data}")
    t0 = time.time()
    adata = load(args.data)
    cell_types = sorted(adata.obs.cell_type.unique())
    spaces = args.space
    if args.quick:
        cell_types, spaces = cell_types[:2], ["pca"]
    df = run(adata, cell_types, spaces, args.seed)
    print()
    print(markdown(df, spaces))
    print()
    print(
        "nearest context chosen:",
        "; ".join(f"{r.cell_type} <- {r.source}" for r in df[df.method == "nearest_context"].itertuples()),
    )
    print(f"\nruntime: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
