"""The scoreboard that decides every default: held-out real conditions, several seeds, every peer side by side.

Data (preprocessed the same way for every model; PCA fitted on all cells of a data set):

- ``kang``: Kang 2018 PBMC IFN-beta (muscat example, 1,556 cells): normalise_total, log1p, 1,000 HVGs, PCA 50;
  each of the 5 cell types' stimulated cells held out in turn (one model per held-out type).
- ``perturbench``: Norman 2019 K562 CRISPRa cells of the PerturBench devel set (3,375 cells; already
  log-normalised, 500 genes): PCA 50; every two-gene pair whose two singles are both in the data held out
  together (one model).
- ``perturbench-one``: the same cells; every pair of which only one single is in the data held out together
  (one model).
- ``perturbench-genes``: the same cells; genes never perturbed in training. The 18 measured single genes in 3
  folds of 6; a fold holds out its genes' singles and every pair containing one of them (one model per fold), so
  none of its genes is perturbed in any training cell. The singles are scored as ``perturbench-genes``, the pairs
  as ``perturbench-genes-pairs``. Besides the defaults, CaLMFlow and OT-CFM run with gene vectors
  (``setup_anndata(perturbation_embeddings=...)``): text vectors (:func:`scflowlm.data.gene_text_embeddings`
  of the genes' NCBI names and designations) and knowledge vectors (:func:`scflowlm.data.gene_knowledge_embeddings`:
  GO annotations, literature).

Rows: CaLMFlow at its defaults (``CaLMFlowModel(adata)``, ``train()`` with no arguments), OT-CFM at its defaults
(``CFMModel(adata)``), the control mean, the pooled additive shift (and, on K562, with a scale learned on the training
combinations: ``tl.baseline_additive(scale="fit")``), the nearest-context shift, the mean training shift (K562 only:
:func:`scflowlm.tl.baseline_mean_shift`), the linear PCA-ridge baseline (:func:`scflowlm.tl.baseline_linear`), and
on the genes never perturbed the linear, ridge (:func:`scflowlm.tl.baseline_ridge`) and k-nearest-neighbour
(:func:`scflowlm.tl.baseline_knn`) baselines with the same gene vectors as the models, CellFlow (``cellflow-tools``
in a virtual env of its own made by ``benchmarks/_peers.py``; one seed unless ``--cellflow-seeds``) and the
real-vs-real floor.
Learned models predict one cell per control cell of the held-out context, as the shift baselines do.

Columns: all-genes R^2 (``r2``), top-100 DE R^2 (``r2_de``), Pearson r of the change from the control mean on the
top-100 DE genes (``pearson_delta_de``), the interaction score on those genes (``pearson_interaction_de``: Pearson r of
the prediction minus the additive baseline's with the real cells minus it), MSE and MAE of the mean profile,
variance R^2 on the DE genes, discrimination, DE overlap (with both DE counts), E-distance and MMD (RBF, median
bandwidth) in the 50-d PCA space, and the signal ratio of the held-out condition, all from
:func:`scflowlm.tl.evaluate` (perturbed genes left out on K562), and the training wall time. After the tables:
CaLMFlow (and every learned row) against the best baseline of each data set with :func:`scflowlm.tl.compare`'s
bootstrap CIs and the share of the gap closed, on all held-out conditions and on those with signal, and cell-eval's
own VCC profile on :func:`scflowlm.tl.to_cell_eval` output beside ours. Per held-out condition: mean +- sd over seeds; per data
set: the mean over conditions of the seed means and of the seed sds; for CaLMFlow a win/tie/loss count against
every other row over the held-out conditions (tie: a difference within 0.005 for R^2 and r, within 2 % for
E-distance and MMD).

Usage::

    python benchmarks/scoreboard.py                      # everything (about 80 CPU minutes on 2 cores)
    python benchmarks/scoreboard.py --skip-cellflow      # no peer venv
    python benchmarks/scoreboard.py --resume             # go on after an interruption
    python benchmarks/scoreboard.py --datasets kang --n-holdouts 2 --seeds 0 --tag probe \\
        --calmflow '{"n_time_points": 4}' --train '{"lr": 3e-3}'   # try a lever on a subset
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import _report

import scflowlm
from scflowlm import tl
from scflowlm.model import CFMModel

if TYPE_CHECKING:
    from collections.abc import Sequence

METRICS = [
    "r2",
    "r2_de",
    "pearson_delta_de",
    "pearson_interaction_de",
    "mse",
    "mse_de",
    "mae",
    "r2_var_de",
    "discrimination",
    "de_overlap",
    "edistance",
    "mmd",
]
#: columns scored beside the metrics (DE counts, the signal flag)
EXTRA = ["n_de_real", "n_de_pred", "signal_ratio", "has_signal"]
HIGHER_IS_BETTER = {m: tl.HIGHER_IS_BETTER[m] for m in METRICS}
#: the data sets: Kang's cell types, K562 pairs whose two singles (or only one) are measured, K562 genes never perturbed
DATASETS = ("kang", "perturbench", "perturbench-one", "perturbench-genes")
#: folds of the genes-never-perturbed data set
N_GENE_FOLDS = 3
#: learned rows with gene vectors, run on ``perturbench-genes`` besides ``--models``
VECTOR_ROWS = {
    "CaLMFlow + text vectors": ("CaLMFlow", "text"),
    "CaLMFlow + GO vectors": ("CaLMFlow", "go"),
    "CaLMFlow + literature vectors": ("CaLMFlow", "literature"),
    "OT-CFM + GO vectors": ("CFM", "go"),
}
#: the gene vector sources of the genes data set: text, and the knowledge sources of gene_knowledge_embeddings
VECTOR_SOURCES = ("text", "go", "literature")
KW = C.KEYS
KEYS = KW["condition_keys"]
BASELINES = {
    "control mean": tl.baseline_control_mean,
    "additive shift": tl.baseline_additive,
    "additive (learned scale)": lambda train, **kw: tl.baseline_additive(train, scale="fit", **kw),
    "nearest-context shift": tl.baseline_nearest_context,
    "mean training shift": tl.baseline_mean_shift,
    "linear (PCA ridge)": tl.baseline_linear,
}
#: the baselines with gene vectors, by name prefix
VECTOR_BASELINES = {
    "linear": tl.baseline_linear,
    "ridge": tl.baseline_ridge,
    "kNN": tl.baseline_knn,
}
FLOOR = "real vs real (floor)"
#: the data of each scored data set, for cell-eval (filled by run)
ADATA: dict = {}


def baselines(dataset: str, vectors: dict[str, pd.DataFrame]) -> dict:
    """The baseline rows of a data set: name -> function of (training cells, conditions, keys)."""
    out = dict(BASELINES)
    if (
        dataset == "kang"
    ):  # a held-out cell type has no other perturbation to average, no combination to scale
        out.pop("mean training shift")
        out.pop("additive (learned scale)")
    for kind, table in vectors.items():
        for name, fn in VECTOR_BASELINES.items():
            out[f"{name} + {kind} vectors"] = lambda train, table=table, fn=fn, **kw: fn(
                train, perturbation_embeddings=table, **kw
            )
    return out


def is_baseline(name: str) -> bool:
    """Whether a row is a baseline (recomputed on --resume), not a learned model or CellFlow."""
    return name in BASELINES or name == FLOOR or any(name.startswith(f"{v} + ") for v in VECTOR_BASELINES)


def load(name: str) -> tuple[sc.AnnData, dict, list[list[dict]]]:
    """(adata, setup kwargs, groups of held-out conditions; one model per group)."""
    if name == "kang":
        adata, setup = C.load_kang()
        types = sorted(adata.obs["cell_type"].unique())
        return adata, setup, [[{"cell_type": ct, "condition": "stimulated"}] for ct in types]
    adata, setup = C.load_perturbench()
    adata = adata[adata.obs["cell_type"] == "k562"].copy()
    sc.pp.pca(adata, n_comps=50, random_state=0)
    conds = set(adata.obs["condition"].astype(str))
    if name == "perturbench-genes":
        singles = sorted(c for c in conds if c != "control" and "+" not in c)
        pairs = sorted(c for c in conds if "+" in c)
        groups = []
        for fold in range(N_GENE_FOLDS):
            genes = set(singles[fold::N_GENE_FOLDS])
            held = sorted(genes) + [p for p in pairs if genes & set(p.split("+"))]
            groups.append([{"cell_type": "k562", "condition": c} for c in held])
        return adata, setup, groups
    n_measured = {c: sum(s in conds for s in c.split("+")) for c in conds if "+" in c}
    wanted = 2 if name == "perturbench" else 1  # both singles measured, or only one
    pairs = sorted(c for c, n in n_measured.items() if n == wanted)
    return adata, setup, [[{"cell_type": "k562", "condition": p} for p in pairs]]


def gene_vectors(adata, kind: str) -> pd.DataFrame:
    """Gene vectors of every perturbed gene of ``adata``: ``"text"`` (NCBI names embedded), ``"go"`` or
    ``"literature"`` (:func:`scflowlm.data.gene_knowledge_embeddings`), or ``"data"`` (PCA loadings).

    The vectors look the genes up by their names in the screen (``obs["perturbation_raw"]``: the data's MAP3K21 is
    KIAA1804 in the shipped NCBI table) and are indexed by the condition's names.
    """
    conds = adata.obs[["condition", "perturbation_raw"]].astype(str).drop_duplicates()
    raw = {}
    for cond, name in zip(conds["condition"], conds["perturbation_raw"], strict=True):
        if cond != "control":
            raw |= dict(zip(cond.split("+"), name.split("+"), strict=True))
    if kind == "data":
        return scflowlm.data.gene_loading_embeddings(adata, genes=sorted(raw))
    names = sorted(set(raw.values()))
    if kind in ("go", "literature"):
        vectors = scflowlm.data.gene_knowledge_embeddings(names, sources=[kind])
    else:
        vectors = scflowlm.data.gene_text_embeddings(names)
    by_name = {name: gene for gene, name in raw.items()}
    return vectors.rename(index=by_name)


def dataset_of(dataset: str, cond: dict) -> str:
    """The data set a held-out condition is scored under: the genes data set's pairs apart from its singles."""
    if dataset == "perturbench-genes" and "+" in cond["condition"]:
        return "perturbench-genes-pairs"
    return dataset


def label_of(dataset: str, cond: dict, group: list[dict]) -> str:
    """The held-out condition's name in the tables: the cell type for Kang, the perturbation for K562.

    A pair of the genes data set is held out by every fold of its genes: its label names the genes new in this fold
    (``"KLF1+TGFBR2 (new: KLF1)"``).
    """
    if dataset == "kang":
        return cond["cell_type"]
    if dataset_of(dataset, cond) == "perturbench-genes-pairs":
        fold = {c["condition"] for c in group if "+" not in c["condition"]}
        new = [g for g in cond["condition"].split("+") if g in fold]
        return f"{cond['condition']} (new: {'+'.join(new)})"
    return cond["condition"]


def held_mask(adata, group: list[dict]) -> np.ndarray:
    mask = np.zeros(adata.n_obs, dtype=bool)
    for cond in group:
        mask |= (
            (adata.obs["cell_type"] == cond["cell_type"]) & (adata.obs["condition"] == cond["condition"])
        ).to_numpy()
    return mask


def control_mask(adata, cond: dict) -> np.ndarray:
    return ((adata.obs["cell_type"] == cond["cell_type"]) & (adata.obs["condition"] == "control")).to_numpy()


def score(adata, pred, cond: dict) -> dict:
    """The scoreboard's metrics of one prediction of one held-out condition (the package's own evaluate).

    The discrimination rank is among every perturbed condition of ``adata`` (the training conditions too).
    """
    df = tl.evaluate(
        adata,
        pred,
        conditions=[cond],
        metrics=[*METRICS, "signal_ratio"],
        space="pca",
        max_cells=None,
        key_added=None,
        **KW,
    )
    return df.iloc[0][METRICS + EXTRA].to_dict()


def to_genes(adata, states: np.ndarray) -> np.ndarray:
    """PCA states -> log-expression, as the models map them (stored loadings + gene means of all cells)."""
    return (states @ np.asarray(adata.varm["PCs"]).T + np.asarray(adata.X.mean(0)).ravel()).astype(np.float32)


def learned_rows(args, dataset: str) -> dict[str, tuple[type, dict, dict, str | None]]:
    """Row name -> (model class, model arguments, train arguments, gene vectors) of every learned model to run."""
    classes = {"CaLMFlow": scflowlm.CaLMFlowModel, "CFM": CFMModel}
    rows = {
        "CaLMFlow": (scflowlm.CaLMFlowModel, args.calmflow, args.train, None),
        "OT-CFM": (CFMModel, {}, {}, None),
    }
    for name, spec in args.variants.items():
        rows[name] = (
            classes[spec.get("class", "CaLMFlow")],
            spec.get("model", {}),
            spec.get("train", {}),
            spec.get("vectors"),
        )
    out = {name: rows[name] for name in args.models}
    if dataset == "perturbench-genes" and not args.no_vector_rows:
        for name, (cls, kind) in VECTOR_ROWS.items():
            kwargs = (args.calmflow, args.train) if cls == "CaLMFlow" else ({}, {})
            out[name] = (classes[cls], *kwargs, kind)
    return out


def train_learned(
    cls: type,
    model_kwargs: dict,
    train_kwargs: dict,
    adata,
    setup: dict,
    group: list[dict],
    seed: int,
    vectors: pd.DataFrame | None = None,
):
    """Train one learned model: its defaults, plus the given arguments (a lever to try, an ablation)."""
    scvi.settings.seed = seed
    data = adata.copy()
    cls.setup_anndata(data, **setup, perturbation_embeddings=vectors)
    kwargs = dict(model_kwargs)
    if isinstance(kwargs.get("backbone"), dict):  # {"hidden_size": 64, "n_layers": 2, "n_heads": 4}: a size
        kwargs["backbone"] = scflowlm.nn.default_backbone_config(256, **kwargs["backbone"])
    model = cls(data, **kwargs)
    with C.Timer() as t:
        model.train(**train_kwargs, holdout=group, enable_progress_bar=False)
    return model, t.s


def predict_learned(model, adata, cond: dict, seed: int, **options):
    """One predicted cell per control cell of the condition's context (``options``: to ``predict_perturbation``)."""
    if model.module.source == "control":
        return model.predict_perturbation(cond, source=control_mask(adata, cond), seed=seed, **options)
    return model.predict_perturbation(
        cond, n_cells=int(control_mask(adata, cond).sum()), seed=seed, **options
    )


def cellflow_output(
    adata, group: list[dict], seed: int, iterations: int, threads: int, extra_args: Sequence[str] = ()
):
    """Train CellFlow in its own venv and predict ``group``; returns the peer's output AnnData and the wall time."""
    import _peers
    import anndata as ad

    python = _peers.ensure_cellflow_env(C.ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.h5ad", Path(tmp) / "out.h5ad"
        ad.AnnData(
            obs=adata.obs[["cell_type", "condition"]].astype(str),
            obsm={"X_pca": np.asarray(adata.obsm["X_pca"], np.float32)},
        ).write_h5ad(src)
        seconds = _peers.run_cellflow(
            python,
            input_h5ad=src,
            output_h5ad=out,
            holdout=group,
            seed=seed,
            iterations=iterations,
            threads=threads,
            extra_args=extra_args,
        )
        return ad.read_h5ad(out), seconds


def run_cellflow(adata, group: list[dict], seed: int, iterations: int, threads: int) -> tuple[dict, float]:
    """Train CellFlow in its own venv; returns {condition: predicted AnnData} and the wall time."""
    import anndata as ad

    res, seconds = cellflow_output(adata, group, seed, iterations, threads)
    preds = {}
    for cond in group:
        m = (
            (res.obs["cell_type"] == cond["cell_type"]) & (res.obs["condition"] == cond["condition"])
        ).to_numpy()
        states = np.asarray(res.obsm["X_pca"][m])
        obs = pd.DataFrame(
            {k: [cond[k]] * int(m.sum()) for k in KEYS}, index=[f"cellflow-{i}" for i in range(int(m.sum()))]
        )
        preds[tuple(cond.values())] = ad.AnnData(
            to_genes(adata, states), obs=obs, var=adata.var[[]].copy(), obsm={"X_pca": states}
        )
    return preds, seconds


def _done(rows: list[dict], datasets: list[str], model: str, seed: int, labels: list[str]) -> bool:
    """Whether (a resumed) ``rows`` already hold this model's run on every condition of a held-out group
    (``datasets``, ``labels``: the data set and label each condition is scored under)."""
    have = {(r["dataset"], r["held out"]) for r in rows if (r["model"], r["seed"]) == (model, seed)}
    return set(zip(datasets, labels, strict=True)) <= have


def run(args) -> pd.DataFrame:
    """Every row of the scoreboard. Learned and CellFlow rows are appended to ``{tag}_runs.partial.csv`` as they
    finish; with ``--resume`` the runs already there are kept and not run again (the baselines are recomputed)."""
    partial = C.DOCS / f"{args.tag}_runs.partial.csv"
    finished = C.DOCS / f"{args.tag}_runs.csv"
    learned: list[dict] = []
    if args.resume and (partial.exists() or finished.exists()):
        # an interrupted run's rows, else a finished run's learned rows (the baselines are recomputed)
        source = partial if partial.exists() else finished
        old = pd.read_csv(source, dtype={"held out": str})
        old = old[~old["model"].map(is_baseline)]
        learned = old.to_dict("records")
        if source is finished:
            old.to_csv(partial, index=False)
        print(f"resuming: {len(learned)} learned rows from {source.name}", flush=True)
    elif partial.exists():
        partial.unlink()

    def keep(row: dict) -> None:
        learned.append(row)
        pd.DataFrame([row]).to_csv(partial, mode="a", header=not partial.exists(), index=False)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    rows = []
    for dataset in args.datasets:
        adata, setup, groups = load(dataset)
        for scored in {dataset_of(dataset, c) for group in groups for c in group}:
            ADATA[scored] = adata
        vectors = (
            {k: gene_vectors(adata, k) for k in VECTOR_SOURCES} if dataset == "perturbench-genes" else {}
        )
        if args.n_holdouts:
            groups = groups[: args.n_holdouts] if dataset == "kang" else [groups[0][: args.n_holdouts]]
        for group in groups:
            held = held_mask(adata, group)
            train_cells = adata[~held].copy()
            for cond in group:
                label = label_of(dataset, cond, group)
                base = {"dataset": dataset_of(dataset, cond), "held out": label}
                for name, fn in baselines(dataset, vectors).items():
                    pred = fn(train_cells, conditions=[cond], **KW)
                    _report.keep_prediction(args.tag, base["dataset"], name, label, pred)
                    rows.append(base | {"model": name, "seed": 0, "train s": 0.0} | score(adata, pred, cond))
                for seed in args.seeds:
                    ref, half = tl.baseline_real_vs_real(
                        adata, conditions=[cond], condition_keys=KEYS, seed=seed
                    )
                    rows.append(
                        base
                        | {"model": "real vs real (floor)", "seed": seed, "train s": 0.0}
                        | score(ref, half, cond)
                    )
            labels = [label_of(dataset, c, group) for c in group]
            for seed in args.seeds:
                for name, (cls, model_kwargs, train_kwargs, kind) in learned_rows(args, dataset).items():
                    if _done(learned, [dataset_of(dataset, c) for c in group], name, seed, labels):
                        continue
                    model, seconds = train_learned(
                        cls, model_kwargs, train_kwargs, adata, setup, group, seed, vectors.get(kind)
                    )
                    for cond in group:
                        label = label_of(dataset, cond, group)
                        pred = predict_learned(model, adata, cond, seed)
                        if seed == args.seeds[0]:  # kept for cell-eval's own scores (_report.cell_eval_table)
                            _report.keep_prediction(args.tag, dataset_of(dataset, cond), name, label, pred)
                        keep(
                            {
                                "dataset": dataset_of(dataset, cond),
                                "held out": label,
                                "model": name,
                                "seed": seed,
                                "train s": seconds,
                            }
                            | score(adata, pred, cond)
                        )
            if not args.skip_cellflow and dataset != "perturbench-genes":  # the peer takes no gene vectors
                for seed in args.cellflow_seeds:
                    if _done(learned, [dataset_of(dataset, c) for c in group], "CellFlow", seed, labels):
                        continue
                    preds, seconds = run_cellflow(adata, group, seed, args.cellflow_iterations, args.threads)
                    for cond in group:
                        label = label_of(dataset, cond, group)
                        keep(
                            {
                                "dataset": dataset_of(dataset, cond),
                                "held out": label,
                                "model": "CellFlow",
                                "seed": seed,
                                "train s": seconds,
                            }
                            | score(adata, preds[tuple(cond.values())], cond)
                        )
    df = pd.DataFrame(rows + learned)
    # held-out conditions in the order they were run, each with its baselines first (a stable sort)
    order = {key: i for i, key in enumerate(dict.fromkeys(zip(df["dataset"], df["held out"], strict=True)))}
    df["_order"] = [order[key] for key in zip(df["dataset"], df["held out"], strict=True)]
    return df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def _fmt(mean: float, sd: float, metric: str) -> str:
    digits = 2 if metric == "edistance" else 4 if metric.startswith(("mse", "mae")) else 3
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


#: the metrics of the per-condition table (all of them are in the runs CSV)
PER_CONDITION = ["r2_de", "pearson_delta_de", "mse", "edistance", "discrimination", "de_overlap"]


def summarise(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per-condition table, per-data-set table, CaLMFlow win/tie/loss table)."""
    cols = [*METRICS, "train s"]
    g = df.groupby(["dataset", "held out", "model"], sort=False)[cols]
    mean, sd = g.mean(), g.std().fillna(0.0)
    per_cond = pd.DataFrame(index=mean.index)
    for m in PER_CONDITION:
        per_cond[m] = [_fmt(a, b, m) for a, b in zip(mean[m], sd[m], strict=True)]
    counts = df.groupby(["dataset", "held out", "model"], sort=False)[["n_de_real", "n_de_pred"]].mean()
    per_cond["DE genes real / pred"] = [
        f"{a:.0f} / {b:.0f}" for a, b in zip(counts["n_de_real"], counts["n_de_pred"], strict=True)
    ]
    signal = df.groupby(["dataset", "held out", "model"], sort=False)["signal_ratio"].mean()
    per_cond["signal ratio"] = signal.round(1)
    per_cond["train s"] = mean["train s"].round(0)
    per_cond["seeds"] = g.size()
    overall_mean = mean.groupby(["dataset", "model"], sort=False).mean()
    overall_sd = sd.groupby(["dataset", "model"], sort=False).mean()
    per_set = pd.DataFrame(index=overall_mean.index)
    for m in METRICS:
        per_set[m] = [_fmt(a, b, m) for a, b in zip(overall_mean[m], overall_sd[m], strict=True)]
    per_set["train s"] = overall_mean["train s"].round(0)
    wtl = []
    if "CaLMFlow" in set(df["model"]):
        for (dataset, other), _ in overall_mean.groupby(level=["dataset", "model"], sort=False):
            if other == "CaLMFlow":
                continue
            row = {"dataset": dataset, "CaLMFlow vs": other}
            for m in METRICS:
                w = t = loss = 0
                for held in mean.loc[dataset].index.get_level_values(0).unique():
                    if (held, "CaLMFlow") not in mean.loc[dataset].index or (held, other) not in mean.loc[
                        dataset
                    ].index:
                        continue
                    a, b = mean.loc[(dataset, held, "CaLMFlow"), m], mean.loc[(dataset, held, other), m]
                    if np.isnan(a) or np.isnan(b):  # a metric the row lacks (the control mean's Δr)
                        continue
                    tol = 0.005 if HIGHER_IS_BETTER[m] else 0.02 * abs(b)
                    if abs(a - b) <= tol:
                        t += 1
                    elif (a > b) == HIGHER_IS_BETTER[m]:
                        w += 1
                    else:
                        loss += 1
                row[m] = f"{w}/{t}/{loss}" if w + t + loss else "n.a."
            wtl.append(row)
    return per_cond.reset_index(), per_set.reset_index(), pd.DataFrame(wtl)


def time_ratio(df: pd.DataFrame) -> pd.DataFrame:
    """CaLMFlow / OT-CFM training time, per (data set, held-out group, seed), measured side by side."""
    t = df[df["model"].isin(["CaLMFlow", "OT-CFM"])].drop_duplicates(["dataset", "model", "seed", "train s"])
    wide = t.pivot_table(
        index=["dataset", "seed", "held out"], columns="model", values="train s", aggfunc="first"
    )
    if not {"CaLMFlow", "OT-CFM"} <= set(wide.columns):
        return pd.DataFrame()
    wide = wide.dropna()
    ratio = (wide["CaLMFlow"] / wide["OT-CFM"]).groupby("dataset").agg(["mean", "min", "max", "count"])
    return ratio.round(2).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="*", default=["CaLMFlow", "OT-CFM"], help="learned rows to run (and --variants)"
    )
    parser.add_argument(
        "--variants",
        type=json.loads,
        default={},
        help='JSON {"row name": {"class": "CaLMFlow" or "CFM", "model": {...}, "train": {...}}}: more learned rows',
    )
    parser.add_argument(
        "--n-holdouts",
        type=int,
        default=None,
        help="kang: the first n cell types; perturbench: the first n pairs",
    )
    parser.add_argument(
        "--calmflow", type=json.loads, default={}, help="JSON of CaLMFlowModel arguments (a lever to try)"
    )
    parser.add_argument(
        "--train", type=json.loads, default={}, help="JSON of CaLMFlow train() arguments (a lever to try)"
    )
    parser.add_argument(
        "--skip-cellflow", action="store_true", help="leave out the CellFlow peer (no separate venv)"
    )
    parser.add_argument(
        "--no-vector-rows",
        action="store_true",
        help="perturbench-genes: leave out the rows with gene vectors (only --models)",
    )
    parser.add_argument(
        "--skip-cell-eval", action="store_true", help="leave out cell-eval's own scores (the [eval] extra)"
    )
    parser.add_argument("--cellflow-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cellflow-iterations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2, help="torch (and CellFlow) CPU threads")
    parser.add_argument(
        "--tag", default="scoreboard", help="name of the table written under docs/benchmarks/"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the learned runs already in docs/benchmarks/{tag}_runs.partial.csv (an interrupted run), else "
        "those of {tag}_runs.csv (a finished run: add data sets or seeds to it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    df = run(args)
    per_cond, per_set, wtl = summarise(df)
    signal = _report.signal_of(df)
    with_signal = df[[signal.get((d, h), False) for d, h in zip(df["dataset"], df["held out"], strict=True)]]
    per_set_signal = summarise(with_signal)[1] if len(with_signal) else pd.DataFrame()
    n_signal = pd.Series(signal).groupby(level=0).agg(["sum", "size"])
    ratio = time_ratio(df)
    df.to_csv(C.DOCS / f"{args.tag}_runs.csv", index=False, float_format="%.5g")
    (C.DOCS / f"{args.tag}_runs.partial.csv").unlink(missing_ok=True)
    baseline_names = sorted({m for m in df["model"] if is_baseline(m) and m != FLOOR})
    comparison = _report.comparisons(df, baseline_names, FLOOR)
    comparison.to_csv(C.DOCS / f"{args.tag}_compare.csv", index=False, float_format="%.5g")
    head = _report.headline(comparison)
    cell_eval = (
        pd.DataFrame()
        if args.skip_cell_eval
        else _report.cell_eval_table(df, ADATA, args.tag, baseline_names)
    )
    notes = (
        "Per data set: the mean over held-out conditions of the per-condition seed means ± the mean of the per-condition "
        "seed sds. r2 / r2_de: Pearson R² of mean expression on all genes / the top-100 DE genes of the real condition "
        "(vs the control cells of its context); pearson_delta_de: Pearson r of the change from the control mean on "
        "those genes; mse / mse_de / mae: squared and absolute error of the mean profile (all genes / top-100 DE genes); "
        "r2_var_de: R² of the per-gene variance on the DE genes; discrimination: rank of the own condition among every "
        "real perturbed condition of the data set by the L1 distance of the changes (0 best, 0.5 chance); de_overlap: share "
        "of the real DE genes (Wilcoxon, FDR 5%) among the prediction's top DE genes; edistance, mmd: in 50-d PCA space "
        "(lower is better). On K562 the perturbed genes are left out of every expression metric (`exclude_perturbed`, "
        "as cell-eval). Metrics are explained on the docs' metrics page. Train s: training wall time (the same run for "
        "every condition of a group). CellFlow's time includes its venv's start-up and JIT compilation.\n\n"
        "### CaLMFlow against the best baseline (95% bootstrap CI over held-out conditions and seeds)\n\n"
        "The best baseline of a data set is the baseline with the highest mean change r (pearson_delta_de). Δ: CaLMFlow "
        "minus it (a positive Δ is better for change r, a negative one for MSE and E-distance); the interval is "
        "`tl.compare`'s paired bootstrap (conditions, then seeds, redrawn); gap closed: (CaLMFlow - baseline) / (real vs "
        "real - baseline). 'with signal': the held-out conditions whose real change is at least twice its half-split "
        "noise (`tl.condition_signal`).\n\n"
        + (head.to_markdown(index=False) if len(head) else "(no comparison)")
        + f"\n\nEvery learned row against the best baseline, every compared metric: `docs/benchmarks/{args.tag}_compare.csv`.\n\n"
        "### Held-out conditions with signal\n\n"
        + (
            ", ".join(f"{d}: {int(r['sum'])} of {int(r['size'])}" for d, r in n_signal.iterrows())
            + "\n\n"
            + (per_set_signal.to_markdown(index=False) if len(per_set_signal) else "")
        )
        + (
            "\n\n### cell-eval's own scores beside ours (first seed)\n\n"
            "`tl.to_cell_eval` (real control cells included in the prediction), cell-eval's VCC profile "
            "(`MetricsEvaluator(...).compute(profile='vcc')`). cell-eval's discrimination is 1 - rank / n among the "
            "predicted conditions (1 best); ours is the rank among every real perturbed condition (0 best); its DE genes "
            "are ordered by |log fold change|, ours by the test statistic; its MAE clips predicted log-expression at 0.\n\n"
            + cell_eval.to_markdown(index=False)
            if len(cell_eval)
            else ""
        )
        + "\n\n### Per held-out condition\n\n"
        + per_cond.to_markdown(index=False)
        + (
            "\n\n### CaLMFlow wins / ties / losses over held-out conditions\n\n"
            + wtl.to_markdown(index=False)
            if len(wtl)
            else ""
        )
        + (
            "\n\n### Training time, CaLMFlow / OT-CFM (side by side, same process)\n\n"
            + ratio.to_markdown(index=False)
            if len(ratio)
            else ""
        )
        + f"\n\nCaLMFlow arguments: `{json.dumps(args.calmflow)}`; train arguments: `{json.dumps(args.train)}` (empty: defaults)."
        + f"\nPer-run rows: `docs/benchmarks/{args.tag}_runs.csv`."
    )
    C.write_table(
        args.tag,
        f"Scoreboard: held-out real conditions, seeds {args.seeds}",
        per_set,
        command=C.command_line(),
        notes=notes,
    )


if __name__ == "__main__":
    main()
