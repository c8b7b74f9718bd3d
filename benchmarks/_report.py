"""The scoreboard's comparisons: CaLMFlow against the best baseline with bootstrap CIs, and cell-eval's own scores.

Predictions of the first seed are kept as h5ad files under ``benchmarks/.cache/<tag>/`` (ignored by git), so a
resumed run can still hand them to cell-eval.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scflowlm import tl

CACHE = Path(__file__).resolve().parent / ".cache"
#: the metrics the comparisons report, and the one that picks the best baseline of a data set
COMPARED = ["pearson_delta_de", "mse", "mse_de", "edistance", "r2_de", "discrimination", "de_overlap"]
RANK_BY = "pearson_delta_de"
#: the learned rows compared with the best baseline
LEARNED = ["CaLMFlow", "OT-CFM", "CellFlow"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def keep_prediction(tag: str, dataset: str, model: str, label: str, pred: ad.AnnData) -> None:
    """Write one prediction (first seed) for :func:`cell_eval_table`."""
    folder = CACHE / tag / _slug(dataset) / _slug(model)
    folder.mkdir(parents=True, exist_ok=True)
    out = pred.copy()
    out.uns = {k: v for k, v in out.uns.items() if k == "scflowlm"}
    out.write_h5ad(folder / f"{_slug(label)}.h5ad")


def kept_predictions(tag: str, dataset: str, model: str) -> list[ad.AnnData]:
    folder = CACHE / tag / _slug(dataset) / _slug(model)
    return [ad.read_h5ad(f) for f in sorted(folder.glob("*.h5ad"))] if folder.exists() else []


def best_baseline(df: pd.DataFrame, dataset: str, baselines: list[str]) -> str:
    """The baseline with the highest mean change r (``RANK_BY``) over the data set's held-out conditions."""
    rows = df[(df["dataset"] == dataset) & df["model"].isin(baselines)]
    means = rows.groupby("model")[RANK_BY].mean().dropna()
    return str(means.idxmax())


def signal_of(df: pd.DataFrame) -> dict[tuple[str, str], bool]:
    """(data set, held out) -> whether the real condition moves beyond its half-split noise (from a baseline row)."""
    rows = df[df["model"] == "control mean"]
    return {
        (d, h): bool(s) for d, h, s in zip(rows["dataset"], rows["held out"], rows["has_signal"], strict=True)
    }


def comparisons(df: pd.DataFrame, baselines: list[str], floor: str, seed: int = 0) -> pd.DataFrame:
    """Per data set, each learned row minus the best baseline (tl.compare), on all conditions and on those with signal."""
    signal = signal_of(df)
    df = df.assign(
        signal=[signal.get((d, h), False) for d, h in zip(df["dataset"], df["held out"], strict=True)]
    )
    out = []
    for dataset in dict.fromkeys(df["dataset"]):
        part = df[df["dataset"] == dataset]
        reference = best_baseline(df, dataset, baselines)
        keep = part["model"].isin([*LEARNED, reference, floor])
        for subset, rows in (("all", part[keep]), ("with signal", part[keep & part["signal"]])):
            if rows.empty or reference not in set(rows["model"]):
                continue
            table = tl.compare(
                rows,
                reference=reference,
                floor=floor,
                metrics=COMPARED,
                condition_keys=["held out"],
                seed=seed,
            )
            if len(table):
                n = rows[rows["model"] == reference]["held out"].nunique()
                out.append(table.assign(dataset=dataset, conditions=subset, n_held_out=n))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _fmt_ci(row: pd.Series, digits: int) -> str:
    if not np.isfinite(row.get("difference", np.nan)):
        return "n.a."
    return f"{row['difference']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def _fmt_gap(row: pd.Series) -> str:
    gap = row.get("gap_closed", np.nan)
    if not np.isfinite(gap):
        return "n.a."
    low, high = row.get("gap_ci_low", np.nan), row.get("gap_ci_high", np.nan)
    return f"{gap:+.0%} [{low:+.0%}, {high:+.0%}]" if np.isfinite(low) else f"{gap:+.0%}"


def headline(comparison: pd.DataFrame, model: str = "CaLMFlow") -> pd.DataFrame:
    """One row per (data set, conditions): the model minus the best baseline on change r, MSE and E-distance, CIs."""
    rows = []
    if comparison.empty:
        return pd.DataFrame()
    for (dataset, subset), part in comparison[comparison["predictor"] == model].groupby(
        ["dataset", "conditions"], sort=False
    ):
        by = part.set_index("metric")
        row = {
            "dataset": dataset,
            "conditions": f"{subset} ({int(by['n_held_out'].iloc[0])})",
            "best baseline": by["reference"].iloc[0],
        }
        for metric, digits in (("pearson_delta_de", 3), ("mse", 4), ("edistance", 2)):
            if metric in by.index:
                row[f"Δ {metric} [95% CI]"] = _fmt_ci(by.loc[metric], digits)
                row[f"gap closed ({metric})"] = _fmt_gap(by.loc[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def cell_eval_table(
    df: pd.DataFrame, adata_of: dict[str, ad.AnnData], tag: str, baselines: list[str]
) -> pd.DataFrame:
    """cell-eval's VCC profile (MAE, discrimination, DE overlap) beside ours, for CaLMFlow and the best baseline.

    cell-eval reads :func:`scflowlm.tl.to_cell_eval`'s pair (real control cells included in the prediction). Its
    discrimination score is ``1 - rank / n`` (1 best) among the predicted conditions; ours is the rank among every
    real perturbed condition (0 best); its DE overlap orders genes by |log fold change|, ours by the test statistic.
    """
    try:
        from cell_eval import MetricsEvaluator
    except ImportError:
        warnings.warn("cell-eval is not installed (the [eval] extra): its table is left out", stacklevel=2)
        return pd.DataFrame()
    rows = []
    for dataset, adata in adata_of.items():
        reference = best_baseline(df, dataset, baselines)
        for model in ("CaLMFlow", reference):
            preds = kept_predictions(tag, dataset, model)
            if not preds:
                continue
            pred_ce, real_ce = tl.to_cell_eval(adata, preds)
            n_perturbations = int(pred_ce.obs["target"].nunique()) - 1
            if n_perturbations < 2:  # a rank needs two conditions
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results, _ = MetricsEvaluator(
                    pred_ce,
                    real_ce,
                    control_pert="non-targeting",
                    pert_col="target",
                    num_threads=1,
                    outdir=str(CACHE / tag / "cell-eval"),
                ).compute(profile="vcc", write_csv=False)
            res = results.to_pandas()
            ours = df[(df["dataset"] == dataset) & (df["model"] == model) & (df["seed"] == df["seed"].min())]
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "conditions": n_perturbations,
                    "cell-eval mae": res["mae"].mean(),
                    "ours mae": ours["mae"].mean(),
                    "cell-eval discrimination (1 best)": res["discrimination_score_l1"].mean(),
                    "ours discrimination (0 best)": ours["discrimination"].mean(),
                    "cell-eval overlap_at_N": res["overlap_at_N"].mean(),
                    "ours de_overlap": ours["de_overlap"].mean(),
                }
            )
    return pd.DataFrame(rows)
