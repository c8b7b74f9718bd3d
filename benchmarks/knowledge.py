"""Knowledge that reaches the unmeasured: a simulated screen with known truth, and the real K562 genes never perturbed.

**Simulated screen** (:func:`scflowlm.data.simulate_screen`; a tool for testing methods, not biology): the K562
control cells of ``perturbench_devel``, ``--n-singles`` perturbed genes drawn from the genes that both the GO and the
literature source know, ``--n-doubles`` doubles; each single's effect is ``--predictable`` (share of its squared
size) a smooth function of the gene's **GO** vector, the rest gene-specific; doubles are 0.8 times the sum of their
singles plus an interaction of the two genes' GO vectors. One model per seed holds out at once

- 10% of the genes with every double that holds one of them (``genes held out``), and
- 30 doubles of two measured genes (``doubles held out``).

Rows: CaLMFlow and OT-CFM with the truth's source (GO), with another source (literature) and without vectors; the
mean training shift, additive (plain and with a learned scale), ridge and k nearest neighbours on each source; the
**oracle** (control cells plus the true effect: the floor a perfect predictor of means reaches), the **knowledge
oracle** (control cells plus the part of the effect the GO vectors determine: the best any vector-based predictor
can do), and real vs real.

**Real K562 genes never perturbed** (as the scoreboard's ``perturbench-genes``: 18 singles in 3 folds, a fold's
singles and every pair holding one of them held out): the same rows with GO, literature and text vectors.

Scores (:func:`scflowlm.tl.evaluate`, perturbed genes excluded where they are genes of the data): change r on the
top-100 DE genes, MSE of the mean profile, E-distance in 50-d PCA, discrimination; differences with 95% paired
bootstrap CIs over held-out conditions and seeds (:func:`scflowlm.tl.compare`).

Usage::

    python benchmarks/knowledge.py                 # 3 seeds, both parts (about an hour and a half on 2 cores)
    python benchmarks/knowledge.py --quick         # a small screen, one seed, fewer steps: a smoke test
    python benchmarks/knowledge.py --resume        # keep the learned rows already in knowledge_runs.partial.csv
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import scflowlm
from scflowlm import tl
from scflowlm.model import CFMModel

KW = C.KEYS
METRICS = ["pearson_delta_de", "mse", "edistance", "discrimination"]
#: the source of the simulated truth, and the others
TRUTH, OTHER = "go", "literature"
LEARNED = {"CaLMFlow": scflowlm.CaLMFlowModel, "OT-CFM": CFMModel}
ORACLES = ("oracle (true effect)", "knowledge oracle (GO part)", "real vs real (floor)")


def candidate_genes(seed: int = 0, n: int = 3000) -> list[str]:
    """Genes both the GO and the literature source know (a random ``n`` of them)."""
    from scflowlm.data._knowledge_sources import go_vectors, literature_vectors

    both = sorted(set(go_vectors()[0]) & set(literature_vectors()[0]))
    return sorted(np.random.default_rng(seed).choice(both, size=min(n, len(both)), replace=False))


def vectors_of(genes, sources) -> dict[str, pd.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {s: scflowlm.data.gene_knowledge_embeddings(genes, sources=[s]) for s in sources}


def simulated(args) -> tuple[ad.AnnData, list[dict], dict[str, pd.DataFrame]]:
    """The screen, its held-out conditions (with their split in ``"split"``) and the vectors of every source."""
    perturbench, _ = C.load_perturbench()
    controls = perturbench[
        (perturbench.obs["cell_type"] == "k562").to_numpy()
        & (perturbench.obs["condition"] == "control").to_numpy()
    ].copy()
    pool = candidate_genes(n=max(3 * args.n_singles, 600))
    vectors = vectors_of(pool, [TRUTH, OTHER])
    screen = scflowlm.data.simulate_screen(
        controls,
        vectors=vectors[TRUTH],
        n_singles=args.n_singles,
        n_doubles=args.n_doubles,
        predictable=args.predictable,
        seed=0,
    )
    sim = screen.uns["simulation"]
    rng = np.random.default_rng(0)
    singles = list(sim["singles"])
    new_genes = set(rng.choice(singles, size=max(2, len(singles) // 10), replace=False))
    held = [{"cell_type": "k562", "condition": g, "split": "genes held out"} for g in sorted(new_genes)]
    held += [
        {"cell_type": "k562", "condition": d, "split": "genes held out"}
        for d in sim["doubles"]
        if new_genes & set(d.split("+"))
    ]
    measured_doubles = [d for d in sim["doubles"] if not new_genes & set(d.split("+"))]
    chosen = rng.choice(measured_doubles, size=min(args.n_held_doubles, len(measured_doubles)), replace=False)
    held += [{"cell_type": "k562", "condition": d, "split": "doubles held out"} for d in sorted(chosen)]
    genes = sorted(set(singles))
    return screen, held, {s: v.loc[[g for g in genes if g in v.index]] for s, v in vectors.items()}


def k562_folds(args) -> list[tuple[ad.AnnData, list[dict], dict[str, pd.DataFrame]]]:
    """The scoreboard's genes-never-perturbed folds of K562, with knowledge vectors of every gene perturbed there."""
    adata, _ = C.load_perturbench()
    adata = adata[adata.obs["cell_type"] == "k562"].copy()
    sc.pp.pca(adata, n_comps=50, random_state=0)
    conds = sorted(set(adata.obs["condition"].astype(str)) - {"control"})
    singles = [c for c in conds if "+" not in c]
    names = adata.obs[["condition", "perturbation_raw"]].astype(str).drop_duplicates()
    raw = {}
    for cond, name in zip(names["condition"], names["perturbation_raw"], strict=True):
        if cond != "control":
            raw |= dict(zip(cond.split("+"), name.split("+"), strict=True))
    vectors = {}
    for source, table in vectors_of(sorted(set(raw.values())), [TRUTH, OTHER, "text"]).items():
        vectors[source] = table.rename(index={v: k for k, v in raw.items()})
    folds = []
    for fold in range(3 if not args.quick else 1):
        genes = set(singles[fold::3])
        held = [
            {
                "cell_type": "k562",
                "condition": c,
                "split": "K562 genes" if "+" not in c else "K562 pairs with a new gene",
            }
            for c in conds
            if genes & set(c.split("+"))
        ]
        folds.append((adata, held, vectors))
    return folds


def truth_prediction(screen: ad.AnnData, cond: dict, which: str) -> ad.AnnData:
    """The screen's control cells plus the condition's true effect (``"effects"``) or its GO part (``"predictable"``)."""
    effect = screen.uns["simulation"][which].loc[cond["condition"]].to_numpy()
    controls = (screen.obs["condition"] == "control").to_numpy()
    x = np.asarray(screen.X[controls]) + effect
    obs = pd.DataFrame(
        {"cell_type": cond["cell_type"], "condition": cond["condition"]},
        index=[f"o{i}" for i in range(len(x))],
    )
    out = ad.AnnData(x.astype(np.float32), obs=obs, var=screen.var[[]].copy())
    out.obsm["X_pca"] = (x - np.asarray(screen.X).mean(0)) @ np.asarray(screen.varm["PCs"])
    return out


def score(adata: ad.AnnData, pred: ad.AnnData, held: list[dict]) -> pd.DataFrame:
    conditions = [{k: c[k] for k in KW["condition_keys"]} for c in held]
    table = tl.evaluate(
        adata, pred, conditions=conditions, metrics=METRICS, space="pca", max_cells=None, key_added=None, **KW
    )
    split = {c["condition"]: c["split"] for c in held}
    return table.assign(split=[split[c] for c in table["condition"]])


def baseline_rows(
    train: ad.AnnData, held: list[dict], vectors: dict[str, pd.DataFrame]
) -> dict[str, ad.AnnData]:
    conditions = [{k: c[k] for k in KW["condition_keys"]} for c in held]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "mean training shift": tl.baseline_mean_shift(train, conditions=conditions, **KW),
            "additive": tl.baseline_additive(train, conditions=conditions, **KW),
            "additive (learned scale)": tl.baseline_additive(train, conditions=conditions, scale="fit", **KW),
        }
        for source, table in vectors.items():
            out[f"ridge + {source}"] = tl.baseline_ridge(
                train, conditions=conditions, perturbation_embeddings=table, **KW
            )
            out[f"kNN + {source}"] = tl.baseline_knn(
                train, conditions=conditions, perturbation_embeddings=table, **KW
            )
    return out


def learned(cls, adata, held, setup, vectors, seed: int, steps: int | None) -> tuple[ad.AnnData, float]:
    scvi.settings.seed = seed
    data = adata.copy()
    cls.setup_anndata(data, **setup, perturbation_embeddings=vectors)
    model = cls(data)
    group = [{k: c[k] for k in KW["condition_keys"]} for c in held]
    kwargs = {"max_steps": steps} if steps else {}
    with C.Timer() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(holdout=group, enable_progress_bar=False, **kwargs)
    controls = (adata.obs["condition"] == "control").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.predict_perturbation(group, source=controls, seed=seed)
    return pred, t.s


SETUP = {
    "prompt_template": "Generate a {cell_type} cell with {condition} perturbed:",
    "control_template": "Generate an unperturbed {cell_type} cell:",
    "perturbation_key": "condition",
    "control_value": "control",
}


def run_part(part: str, adata, held, vectors, args, partial: Path, done: set) -> list[pd.DataFrame]:
    """Every row of one held-out set: baselines and oracles once, the learned rows per seed (resumable)."""
    mask = np.zeros(adata.n_obs, dtype=bool)
    for c in held:
        mask |= (adata.obs["condition"].astype(str) == c["condition"]).to_numpy()
    train = adata[~mask].copy()
    tag = f"{part}|{held[0]['condition']}"
    out = []
    for name, pred in baseline_rows(train, held, vectors).items():
        out.append(
            score(adata, pred, held).assign(model=name, seed=0, part=part, fold=tag, **{"train s": 0.0})
        )
    if "simulation" in adata.uns:
        for name, which in (
            ("oracle (true effect)", "effects"),
            ("knowledge oracle (GO part)", "predictable"),
        ):
            preds = ad.concat([truth_prediction(adata, c, which) for c in held])
            out.append(
                score(adata, preds, held).assign(model=name, seed=0, part=part, fold=tag, **{"train s": 0.0})
            )
    for seed in args.seeds:
        ref, half = tl.baseline_real_vs_real(
            adata,
            conditions=[{k: c[k] for k in KW["condition_keys"]} for c in held],
            condition_keys=KW["condition_keys"],
            seed=seed,
        )
        out.append(
            score(ref, half, held).assign(
                model="real vs real (floor)", seed=seed, part=part, fold=tag, **{"train s": 0.0}
            )
        )
    for seed in args.seeds:
        for model_name, cls in LEARNED.items():
            for source in [TRUTH, OTHER, "text", None]:
                if source is not None and source not in vectors:
                    continue
                name = model_name + (f" + {source}" if source else "")
                if (tag, name, seed) in done:
                    continue
                pred, seconds = learned(cls, adata, held, SETUP, vectors.get(source), seed, args.steps)
                rows = score(adata, pred, held).assign(
                    model=name, seed=seed, part=part, fold=tag, **{"train s": seconds}
                )
                rows.to_csv(partial, mode="a", header=not partial.exists(), index=False)
                print(name, seed, part, rows.groupby("split")[METRICS].mean().round(3).to_dict(), flush=True)
    return out


def summarise(df: pd.DataFrame) -> str:
    """Per split: each row's mean over held-out conditions of its seed means (± mean seed sd), and the comparisons."""
    text = []
    for split, part in df.groupby("split", sort=False):
        g = part.groupby(["condition", "model"])[METRICS]
        mean, sd = g.mean(), g.std().fillna(0.0)
        table = mean.groupby("model").mean()
        spread = sd.groupby("model").mean()
        shown = pd.DataFrame(index=table.index)
        for m in METRICS:
            digits = 4 if m == "mse" else 3
            shown[m] = [f"{a:.{digits}f} ± {b:.{digits}f}" for a, b in zip(table[m], spread[m], strict=True)]
        shown["conditions"] = mean.reset_index().groupby("model")["condition"].nunique()
        order = sorted(shown.index, key=lambda n: (n.startswith(("oracle", "knowledge", "real")), n))
        text.append(f"### {split}\n\n" + shown.loc[order].reset_index().to_markdown(index=False))
        for reference in ("mean training shift", f"ridge + {TRUTH}", "additive"):
            if reference not in set(part["model"]):
                continue
            cmp = tl.compare(
                part,
                reference=reference,
                floor="real vs real (floor)",
                metrics=METRICS,
                condition_keys=["condition"],
            )
            cmp = cmp[cmp["predictor"].str.startswith(("CaLMFlow", "OT-CFM"))]
            if len(cmp):
                cmp = cmp[["predictor", "metric", "difference", "ci_low", "ci_high", "verdict", "gap_closed"]]
                text.append(
                    f"Against **{reference}** (95% paired bootstrap CI over conditions and seeds):\n\n"
                    + cmp.round(4).to_markdown(index=False)
                )
    return "\n\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parts", nargs="+", default=["simulated", "k562"], choices=["simulated", "k562"])
    parser.add_argument("--n-singles", type=int, default=600)
    parser.add_argument("--n-doubles", type=int, default=150)
    parser.add_argument("--n-held-doubles", type=int, default=30)
    parser.add_argument("--predictable", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the models' own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small screen, one seed, 300 steps")
    parser.add_argument(
        "--resume", action="store_true", help="keep the learned rows of knowledge_runs.partial.csv"
    )
    parser.add_argument("--tag", default="knowledge")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n_singles, args.n_doubles, args.n_held_doubles, args.steps = [0], 60, 20, 5, 300
    torch.set_num_threads(args.threads)
    partial = C.DOCS / f"{args.tag}_runs.partial.csv"
    done: set = set()
    if args.resume and partial.exists():
        old = pd.read_csv(partial)
        done = set(zip(old["fold"], old["model"], old["seed"], strict=True))
        print(f"resuming: {len(done)} learned runs", flush=True)
    elif partial.exists():
        partial.unlink()
    frames = []
    if "simulated" in args.parts:
        with C.keep_threads():
            screen, held, vectors = simulated(args)
        frames += run_part("simulated", screen, held, vectors, args, partial, done)
    if "k562" in args.parts:
        with C.keep_threads():
            folds = k562_folds(args)
        for adata, held, vectors in folds:
            frames += run_part("k562", adata, held, vectors, args, partial, done)
    if partial.exists():
        frames.append(pd.read_csv(partial))
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(C.DOCS / f"{args.tag}_runs.csv", index=False, float_format="%.5g")
    partial.unlink(missing_ok=True)
    notes = (
        f"Simulated screen: {args.n_singles} singles, {args.n_doubles} doubles, {args.predictable:.0%} of a single's "
        f"effect a function of its GO vector; seeds {args.seeds} (the models'; one screen). Rows: CaLMFlow / OT-CFM at "
        "their defaults with the source's vectors (`setup_anndata(perturbation_embeddings=...)`), or none. change r: "
        "`pearson_delta_de`; MSE of the mean profile; E-distance in 50-d PCA; discrimination (0 best). Per-run rows: "
        f"`docs/benchmarks/{args.tag}_runs.csv`.\n\n" + summarise(df)
    )
    C.write_table(
        args.tag,
        "Knowledge that reaches the unmeasured",
        df.groupby(["split", "model"])[METRICS].mean().round(4).reset_index(),
        command=C.command_line(),
        notes=notes,
    )


if __name__ == "__main__":
    main()
