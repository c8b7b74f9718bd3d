"""Held-out combinations on real data: CaLMFlow (noise / control source) vs CFM vs simple baselines.

Examples
--------
python benchmarks/heldout.py --dataset perturbench --quick
python benchmarks/heldout.py --dataset kang --quick --models calmflow calmflow-control cfm cfm-control
python benchmarks/heldout.py --dataset perturbench --seeds 0 1 2          # full settings (GPU recommended)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import scvi
import torch
from transformers import GPTNeoXConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import scflowlm

HOLDOUTS = {
    "perturbench": [
        {"cell_type": "k562", "condition": "KLF1+MAP2K6"},
        {"cell_type": "k562", "condition": "CBL+CNN1"},
    ],
    "kang": [
        {"cell_type": ct, "condition": "stimulated"}
        for ct in ("CD14+ Monocytes", "B cells", "CD4 T cells", "CD8 T cells", "FCGR3A+ Monocytes")
    ],
}


def calmflow_kwargs(n_cells: int, *, quick: bool) -> tuple[dict, dict]:
    """Model and train settings: a CPU-sized model with --quick (about 3,000 steps), the default model otherwise."""
    if quick:
        backbone = GPTNeoXConfig(
            vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256
        )
        epochs = max(20, round(3000 / max(int(0.9 * n_cells) // 128, 1)))
        return {"n_time_points": 8, "n_space_tokens": 1, "backbone": backbone, "n_latent": 16}, {
            "max_epochs": epochs,
            "lr": 2e-3,
        }
    return {}, {}


def build(name: str, adata, setup: dict, *, quick: bool):
    """(model, train kwargs) for a model name; registers ``adata`` with the model's class."""
    source = "control" if name.endswith("-control") else "noise"
    if name.startswith("calmflow"):
        kw, train = calmflow_kwargs(adata.n_obs, quick=quick)
        scflowlm.CaLMFlowModel.setup_anndata(adata, **setup)
        return scflowlm.CaLMFlowModel(adata, source=source, **kw), train
    if name.startswith("cfm"):
        from scflowlm.model import CFMModel

        CFMModel.setup_anndata(adata, **setup)
        epochs = max(20, round((3000 if quick else 10000) / max(int(0.9 * adata.n_obs) // 128, 1)))
        return CFMModel(adata, source=source, flow="ot"), {"max_epochs": epochs, "lr": 1e-3}
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=list(HOLDOUTS), default="perturbench")
    parser.add_argument("--models", nargs="+", default=["cfm", "cfm-control", "calmflow", "calmflow-control"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized models and fewer held-out cell types")
    parser.add_argument("--n-holdouts", type=int, default=None, help="use the first n held-out conditions")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is fastest for the quick models)"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    adata, setup = C.load_perturbench() if args.dataset == "perturbench" else C.load_kang()
    holdouts = HOLDOUTS[args.dataset][: args.n_holdouts or (2 if args.quick else None)]
    # perturbench: one model holds out both pairs; kang: one model per held-out stimulated cell type
    groups = [holdouts] if args.dataset == "perturbench" else [[h] for h in holdouts]
    rows = []
    for seed in args.seeds:
        for group in groups:
            for held in group:
                for name, scores in C.baselines(adata, held, seed).items():
                    rows.append(
                        {
                            "held out": held["condition"]
                            if args.dataset == "perturbench"
                            else held["cell_type"],
                            "model": name,
                            "seed": seed,
                            "train s": 0.0,
                            **scores,
                        }
                    )
            for name in args.models:
                scvi.settings.seed = seed
                model, train_kw = build(name, adata.copy(), setup, quick=args.quick)
                with C.Timer() as t:
                    model.train(holdout=group, batch_size=128, enable_progress_bar=False, **train_kw)
                for held in group:
                    pred = (
                        model.predict_perturbation(held, n_cells=500, seed=seed, temperature=args.temperature)
                        if model.module.source == "noise"
                        else model.predict_perturbation(held, seed=seed, temperature=args.temperature)
                    )
                    label = held["condition"] if args.dataset == "perturbench" else held["cell_type"]
                    rows.append(
                        {
                            "held out": label,
                            "model": name,
                            "seed": seed,
                            "train s": t.s,
                            **C.score(adata, pred, held),
                        }
                    )
                    print(rows[-1], flush=True)
                print(f"seed {seed} {name} {group}: trained in {t.s:.0f} s", flush=True)
    import pandas as pd

    df = pd.DataFrame(rows)
    table = C.summarise(rows, by=["held out", "model"])
    table["train s"] = df.groupby(["held out", "model"], sort=False)["train s"].mean().round(0).to_numpy()
    C.write_table(
        f"heldout_{args.dataset}{'_quick' if args.quick else ''}"
        + ("" if args.seeds == [0] else "_seeds" + "-".join(map(str, args.seeds))),
        f"Held-out conditions, {args.dataset} ({'quick CPU settings' if args.quick else 'default settings'}), seeds {args.seeds}",
        table,
        command=C.command_line(),
        notes="Metrics from `scflowlm.tl.evaluate` in 50-d PCA space: r2 / r2_de = Pearson R^2 of mean expression on all genes / "
        "top-100 DE genes (vs the control cells of the same cell type); pearson_delta(_de) = Pearson r of the change from the "
        "control mean; mmd (RBF, paper kernel), wasserstein (exact W2), edistance: distribution distances (lower is better).",
    )


if __name__ == "__main__":
    main()
