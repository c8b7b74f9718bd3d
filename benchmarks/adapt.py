"""Adapt a trained model to new data: fine-tuning a reference against training on the query alone or on both.

Two cases, side by side in one run, several seeds, CaLMFlow at its defaults:

- **Kang 2018** (as the scoreboard loads it): a reference trained on two cell types (CD4 T cells, CD14+ Monocytes;
  both conditions). The query holds the other three types' control cells and the stimulated cells of all but one;
  that one's stimulated cells are predicted (each of the three in turn).
- **K562** (``perturbench_devel``): a reference trained on the K562 singles (and controls); the query holds the
  control cells and two of the five pairs whose singles are measured; the other three pairs are predicted.

Rows: (a) ``adapted``: the reference prepared and fine-tuned on the query (``prepare_query_anndata``,
``load_query_data``, ``train()`` at its adaptation defaults); (b) ``query alone``: a model trained on the query
only; (c) ``reference + query``: one model trained on both; the nearest-context shift and the linear baseline on
reference + query cells; real vs real. Scores: top-100 DE R^2, change r (``pearson_delta_de``), E-distance (50-d
PCA), and the training wall seconds (the reference's own training is not counted for (a): it is done once and
shared). **Goal**: (a) within 0.01 of (c) on top-100 DE R^2 and change r, above (b), at no more than a quarter of
(c)'s training time.

Usage::

    python benchmarks/adapt.py                 # both cases, 3 seeds
    python benchmarks/adapt.py --resume        # keep the runs already in adapt_runs.partial.csv
    python benchmarks/adapt.py --quick         # one seed, one Kang type, few steps: a smoke test
    python benchmarks/adapt.py --sweep --seeds 0 1   # the adaptation defaults against other settings

**The sweep** (``--sweep``) chose the adaptation defaults: per case and seed one reference, then fine-tuning at
each of :data:`SWEEP` (learning rate and step budget as fractions of a new model's, what stays frozen) and (c);
written to ``docs/benchmarks/adapt_sweep.md``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import scflowlm
from scflowlm import tl

KW = C.KEYS
METRICS = ["r2_de", "pearson_delta_de", "edistance"]
REFERENCE_TYPES = ["CD4 T cells", "CD14+ Monocytes"]
#: fine-tuning settings of the sweep: label -> (freeze, learning-rate fraction, step fraction)
SWEEP = {
    "backbone, lr 1/4, steps 1/4": ("backbone", 0.25, 0.25),
    "backbone, lr 1, steps 1/4": ("backbone", 1.0, 0.25),
    "none, lr 1/4, steps 1/4": ("none", 0.25, 0.25),
    "none, lr 1, steps 1/4": ("none", 1.0, 0.25),
    "backbone, lr 1/2, steps 1/3": ("backbone", 0.5, 1 / 3),
}


def _mask(adata, **values) -> np.ndarray:
    out = np.ones(adata.n_obs, dtype=bool)
    for key, allowed in values.items():
        out &= np.isin(adata.obs[key].astype(str).to_numpy(), list(np.atleast_1d(allowed)))
    return out


def kang_cases(*, quick: bool):
    adata, setup = C.load_kang()
    types = sorted(set(adata.obs["cell_type"]))
    query_types = [t for t in types if t not in REFERENCE_TYPES]
    reference = adata[_mask(adata, cell_type=REFERENCE_TYPES)].copy()
    cases = []
    for held in query_types[:1] if quick else query_types:
        cond = {"cell_type": held, "condition": "stimulated"}
        query = adata[
            _mask(adata, cell_type=query_types) & ~_mask(adata, cell_type=held, condition="stimulated")
        ].copy()
        cases.append(("kang", held, adata, reference, query, [cond]))
    return setup, cases


def k562_cases(*, quick: bool):
    adata, setup = C.load_perturbench()
    adata = adata[adata.obs["cell_type"] == "k562"].copy()
    sc.pp.pca(adata, n_comps=50, random_state=0)
    conds = sorted(set(adata.obs["condition"].astype(str)))
    singles = [c for c in conds if c != "control" and "+" not in c]
    pairs = [c for c in conds if "+" in c and all(s in singles for s in c.split("+"))]
    reference = adata[_mask(adata, condition=["control", *singles])].copy()
    query = adata[_mask(adata, condition=["control", *pairs[:2]])].copy()
    held = [{"cell_type": "k562", "condition": p} for p in pairs[2:]]
    return setup, [("k562", "+".join(p["condition"] for p in held), adata, reference, query, held)]


def train(cls_kwargs, adata, setup, holdout, seed, **train_kwargs):
    scvi.settings.seed = seed
    data = adata.copy()
    scflowlm.CaLMFlowModel.setup_anndata(data, **setup)
    model = scflowlm.CaLMFlowModel(data, **cls_kwargs)
    with C.Timer() as t:
        model.train(holdout=holdout or None, enable_progress_bar=False, **train_kwargs)
    return model, t.s


def fine_tune(prepared, ref_model, seed, steps, setting: str | None = None):
    """(a): the reference fine-tuned on the prepared query, at the adaptation defaults or at a setting of
    :data:`SWEEP` (its freeze and its fractions of a new model's learning rate and steps); and its seconds.

    With ``steps`` (``--steps``, ``--quick``) the fine-tune takes that fraction of ``steps``.
    """
    scvi.settings.seed = seed
    freeze = {} if setting is None else {"freeze": SWEEP[setting][0]}
    adapted = scflowlm.CaLMFlowModel.load_query_data(prepared, ref_model, **freeze)
    if setting is not None:  # the fractions this setting tries instead of the defaults
        _, adapted._adapt_lr_factor, adapted._adapt_steps_factor = SWEEP[setting]
    short = {"max_steps": max(int(steps * adapted._adapt_steps_factor), 1)} if steps else {}
    with C.Timer() as t:
        adapted.train(enable_progress_bar=False, **short)
    return adapted, t.s


def score(adata, pred, cond) -> dict:
    df = tl.evaluate(
        adata, pred, conditions=[cond], metrics=METRICS, space="pca", max_cells=None, key_added=None, **KW
    )
    return df.iloc[0][METRICS].to_dict()


def together(adata, reference, query, held, setup, seed, extra) -> tuple:
    """(c): one model trained on reference + query, the held-out cells held out; and the cells it trained on."""
    held_mask = np.zeros(adata.n_obs, dtype=bool)
    for c in held:
        held_mask |= _mask(adata, cell_type=c["cell_type"], condition=c["condition"])
    in_either = np.isin(adata.obs_names, np.concatenate([reference.obs_names, query.obs_names])) | held_mask
    model = train({}, adata[in_either].copy(), setup, held, seed, **extra)
    return model, adata[in_either & ~held_mask].copy()


def learned_rows(models: dict, adata, cond, base: dict, seed: int, extra: dict | None = None) -> list[dict]:
    """One scored row per learned model (``extra``: more columns for a model's row)."""
    rows = []
    for row, (model, seconds) in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.predict_perturbation(cond, source=controls_of(adata, cond), seed=seed)
        more = (extra or {}).get(row, {})
        rows.append(base | {"model": row, "train s": seconds} | more | score(adata, pred, cond))
    return rows


def controls_of(adata, cond):
    """The control cells of a condition's cell type."""
    return adata[_mask(adata, cell_type=cond["cell_type"], condition="control")]


def base_row(name, cond, seed) -> dict:
    """The columns that name a run: case, held-out condition (K562) or cell type (Kang), seed."""
    return {
        "case": name,
        "held out": cond["condition"] if name == "k562" else cond["cell_type"],
        "seed": seed,
    }


def run_case(name, label, adata, reference, query, held, setup, seed, steps) -> list[dict]:
    """Every row of one held-out set at one seed."""
    extra = {"max_steps": steps} if steps else {}
    rows = []
    ref_model, ref_s = train({}, reference, setup, [], seed, **extra)
    prepared = scflowlm.CaLMFlowModel.prepare_query_anndata(query, ref_model)
    models = {"(a) adapted": fine_tune(prepared, ref_model, seed, steps)}
    models["(b) query alone"] = train({}, query, setup, [], seed, **extra)
    models["(c) reference + query"], train_cells = together(adata, reference, query, held, setup, seed, extra)
    for cond in held:
        base = base_row(name, cond, seed)
        rows += learned_rows(models, adata, cond, base, seed, extra={"(a) adapted": {"reference s": ref_s}})
        for row, fn in (
            ("nearest-context shift", tl.baseline_nearest_context),
            ("linear (PCA ridge)", tl.baseline_linear),
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = fn(train_cells, conditions=[cond], **KW)
            rows.append(base | {"model": row, "train s": 0.0} | score(adata, pred, cond))
        ref, half = tl.baseline_real_vs_real(
            adata, conditions=[cond], condition_keys=KW["condition_keys"], seed=seed
        )
        rows.append(base | {"model": "real vs real (floor)", "train s": 0.0} | score(ref, half, cond))
    print(pd.DataFrame(rows).groupby("model")[[*METRICS, "train s"]].mean().round(3), flush=True)
    return rows


def sweep_case(name, label, adata, reference, query, held, setup, seed, steps) -> list[dict]:
    """One reference, every fine-tuning setting of :data:`SWEEP` and (c), scored on the held-out conditions."""
    extra = {"max_steps": steps} if steps else {}
    ref_model, _ = train({}, reference, setup, [], seed, **extra)
    prepared = scflowlm.CaLMFlowModel.prepare_query_anndata(query, ref_model)
    models = {setting: fine_tune(prepared, ref_model, seed, steps, setting) for setting in SWEEP}
    models["(c) reference + query"], _ = together(adata, reference, query, held, setup, seed, extra)
    rows = []
    for cond in held:
        rows += learned_rows(models, adata, cond, base_row(name, cond, seed), seed)
    print(pd.DataFrame(rows).groupby("model")[[*METRICS, "train s"]].mean().round(3), flush=True)
    return rows


def write_sweep(df: pd.DataFrame) -> None:
    """The sweep's table: means per case and setting, and each setting minus (c) with its CI."""
    out = []
    for case, part in df.groupby("case", sort=False):
        table = tl.compare(
            part, reference="(c) reference + query", metrics=METRICS, condition_keys=["held out"]
        )
        seconds = part.groupby("model")["train s"].mean()
        for setting in SWEEP:
            row = {
                "case": case,
                "setting": setting,
                "time / (c)": round(seconds[setting] / seconds["(c) reference + query"], 2),
            }
            for _, r in table[table["predictor"] == setting].iterrows():
                row[f"{r['metric']} - (c)"] = (
                    f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                )
            out.append(row)
    notes = (
        "Each setting fine-tunes the same reference (per case and seed) at a fraction of a new model's learning "
        "rate and step budget, with the transformer blocks frozen (`backbone`) or not (`none`); differences are "
        "the setting minus (c), one model trained on reference + query, with the paired bootstrap 95% CI of "
        "`tl.compare` over held-out conditions and seeds.\n\nMeans over held-out conditions of the seed means:\n\n"
        + summary(df).to_markdown(index=False)
    )
    C.write_table(
        "adapt_sweep",
        "Adaptation settings",
        pd.DataFrame(out),
        command=C.command_line(),
        notes=notes,
    )


def summary(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["case", "held out", "model"], sort=False)[[*METRICS, "train s"]].mean()
    return g.groupby(["case", "model"], sort=False).mean().round(4).reset_index()


def goal(df: pd.DataFrame) -> pd.DataFrame:
    """Per case: (a) - (c) and (a) - (b) on R^2 and change r (paired bootstrap CIs), and the time ratio (a) / (c)."""
    out = []
    for case, part in df.groupby("case", sort=False):
        for reference in ("(c) reference + query", "(b) query alone"):
            table = tl.compare(
                part, reference=reference, metrics=["r2_de", "pearson_delta_de"], condition_keys=["held out"]
            )
            table = table[table["predictor"] == "(a) adapted"]
            for _, r in table.iterrows():
                out.append(
                    {
                        "case": case,
                        "(a) minus": reference,
                        "metric": r["metric"],
                        "difference [95% CI]": f"{r['difference']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                    }
                )
        seconds = part.groupby("model")["train s"].mean()
        out.append(
            {
                "case": case,
                "(a) minus": "time (a) / (c)",
                "metric": "train s",
                "difference [95% CI]": f"{seconds['(a) adapted'] / seconds['(c) reference + query']:.2f}",
            }
        )
    return pd.DataFrame(out)


def each_run(args):
    """(setup, seed, case) of every run the arguments ask for, cases loaded once per data set."""
    for case in args.cases:
        with C.keep_threads():
            setup, cases = kang_cases(quick=args.quick) if case == "kang" else k562_cases(quick=args.quick)
        for seed in args.seeds:
            for one in cases:
                yield setup, seed, one


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cases", nargs="+", default=["kang", "k562"], choices=["kang", "k562"])
    parser.add_argument(
        "--steps", type=int, default=None, help="from-scratch steps (default: the model's own)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="fine-tuning settings against (c)")
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs of adapt_runs.partial.csv (case, held out, seed)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps = [0], 200
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    if args.sweep:
        rows = []
        for setup, seed, (name, label, adata, reference, query, held) in each_run(args):
            rows += sweep_case(name, label, adata, reference, query, held, setup, seed, args.steps)
        write_sweep(pd.DataFrame(rows))
        return
    partial = C.DOCS / "adapt_runs.partial.csv"
    done = set()
    if args.resume and partial.exists():
        old = pd.read_csv(partial)
        done = set(zip(old["case"], old["label"], old["seed"], strict=True))
    elif partial.exists():
        partial.unlink()
    for setup, seed, (name, label, adata, reference, query, held) in each_run(args):
        if (name, label, seed) in done:
            continue
        rows = run_case(name, label, adata, reference, query, held, setup, seed, args.steps)
        rows = pd.DataFrame(rows).assign(label=label)
        rows.to_csv(partial, mode="a", header=not partial.exists(), index=False)
    df = pd.read_csv(partial).drop(columns="label")
    partial.unlink()
    df.to_csv(C.DOCS / "adapt_runs.csv", index=False, float_format="%.5g")
    notes = (
        "Means over held-out conditions of the seed means. (a): `CaLMFlowModel.load_query_data(prepared, reference)` "
        "then `train()` at the adaptation defaults (a quarter of the learning rate and of the steps; transformer blocks "
        "frozen); train s of (a) is the fine-tuning alone (the reference is trained once, `reference s` in the runs). "
        "(b), (c): `CaLMFlowModel(adata)`, `train()` at the defaults. Per-run rows: `docs/benchmarks/adapt_runs.csv`.\n\n"
        "### The goal: (a) within 0.01 of (c), above (b), at most a quarter of (c)'s time\n\n"
        + goal(df).to_markdown(index=False)
    )
    C.write_table(
        "adapt", "Adapt a trained model to new data", summary(df), command=C.command_line(), notes=notes
    )


if __name__ == "__main__":
    main()
