"""Paper table 1 (and tables 2/7, figures 4/8): Gaussian -> {2 Gaussians, 8 Gaussians, 2 moons} in high dimension.

Experiments (``--experiment``):

- ``table1``: CaLMFlow vs I-CFM, OT-CFM, SB-CFM, 2-D targets embedded in ``--dims`` dimensions;
- ``trajectories``: CaLMFlow with 1 vs several trajectories per sequence (paper tables 2 and 7);
- ``temperature``: tau in {0, 0.25, 0.5, 1, 2}, with the variational head (cvae, paper) and without (paper figure 4);
- ``timepoints``: N in {4, 8, 16} time points (paper figure 8).

Scores: exact 2-Wasserstein (``metrics.wasserstein``) and MMD (``metrics.mmd``, the paper's RBF kernel) between generated and
held-out target samples in the embedding space, mean +- sd over seeds.

Examples
--------
python benchmarks/synthetic.py --experiment table1 --quick
python benchmarks/synthetic.py --experiment trajectories --quick
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch
from transformers import GPTNeoXConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

import scflowlm

warnings.filterwarnings("ignore")


def target_2d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """2-D target samples ``[n, 2]`` (the torchcfm toy distributions, written here)."""
    if name == "2gaussians":
        centers = np.array([[-4.0, 0.0], [4.0, 0.0]])
        return centers[rng.integers(2, size=n)] + 0.5 * rng.normal(size=(n, 2))
    if name == "8gaussians":
        angles = 2 * np.pi * np.arange(8) / 8
        centers = 5.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
        return centers[rng.integers(8, size=n)] + 0.5 * rng.normal(size=(n, 2))
    if name == "moons":
        t = rng.uniform(0, np.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        return 3.0 * np.stack([x - 0.5, y - 0.25], 1) + 0.1 * rng.normal(size=(n, 2))
    raise ValueError(name)


def embedded(name: str, n: int, dim: int, seed: int) -> np.ndarray:
    """Target samples embedded in ``dim`` dimensions by a fixed random isometry ``[n, dim]``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.random.default_rng(1234).normal(size=(dim, 2)))  # [dim, 2], same for every seed
    return (target_2d(name, n, rng) @ q.T).astype(np.float32)


def as_adata(x: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(
        X=x, obs=pd.DataFrame({"kind": ["target"] * len(x)}, index=[f"c{i}" for i in range(len(x))])
    )
    adata.obsm["X_pca"] = x
    adata.varm["PCs"] = np.eye(x.shape[1], dtype=np.float32)
    return adata


def calmflow(adata, *, quick: bool, **kw):
    backbone = GPTNeoXConfig(
        vocab_size=16,
        hidden_size=64 if quick else 128,
        num_hidden_layers=2 if quick else 4,
        num_attention_heads=4,
        intermediate_size=256 if quick else 512,
    )
    kw = {"n_time_points": 8, "n_space_tokens": 1, "backbone": backbone, "n_latent": 16} | kw
    return scflowlm.CaLMFlowModel(adata, **kw)


def run_one(
    method: str, data: str, dim: int, seed: int, *, quick: bool, epochs: int, temperature: float = 1.0, **kw
) -> dict:
    n = 1000 if quick else 5000
    x = embedded(data, n, dim, seed)
    test = embedded(data, 500, dim, seed + 100)
    adata = as_adata(x)
    scvi.settings.seed = seed
    if method == "CaLMFlow":
        scflowlm.CaLMFlowModel.setup_anndata(adata, prompt_template="Generate a sample:")
        model = calmflow(adata, quick=quick, **kw)
        train = {"max_epochs": epochs, "lr": 2e-3}
    else:
        from scflowlm.model import CFMModel

        CFMModel.setup_anndata(adata, prompt_template="Generate a sample:")
        flow = {"I-CFM": "i", "OT-CFM": "ot", "SB-CFM": "sb"}[method]
        model = CFMModel(adata, flow=flow)
        train = {"max_epochs": epochs, "lr": 1e-3}
    with C.Timer() as t:
        model.train(batch_size=128, enable_progress_bar=False, **train)
    gen = model.sample(500, seed=seed, temperature=temperature).obsm["X_pca"]
    return {
        "W2": scflowlm.metrics.wasserstein(gen, test),
        "MMD": scflowlm.metrics.mmd(gen, test),
        "MMD (median)": scflowlm.metrics.mmd(gen, test, gamma="median"),
        "train s": t.s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment", choices=["table1", "trajectories", "temperature", "timepoints"], default="table1"
    )
    parser.add_argument("--dims", nargs="+", type=int, default=None)
    parser.add_argument("--data", nargs="+", default=["2gaussians", "8gaussians", "moons"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is fastest for the quick models)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2, 3, 4])
    epochs = args.epochs or (30 if args.quick else 200)
    dims = args.dims or ([100] if args.quick else [100, 1000])
    rows = []
    for dim in dims:
        for data in args.data:
            for seed in seeds:
                if args.experiment == "table1":
                    settings = [(m, {}) for m in ("CaLMFlow", "I-CFM", "OT-CFM", "SB-CFM")]
                elif args.experiment == "trajectories":
                    settings = [(f"CaLMFlow M={m}", {"n_trajectories": m}) for m in (1, 4)]
                elif args.experiment == "temperature":
                    settings = [
                        (f"CaLMFlow {v} tau={tau}", {"variational": v, "temperature": tau})
                        for v in ("cvae", "paper", "none")
                        for tau in ((0.0, 0.5, 1.0, 2.0) if v != "none" else (1.0,))
                    ]
                else:
                    settings = [(f"CaLMFlow N={n}", {"n_time_points": n}) for n in (4, 8, 16)]
                for label, kw in settings:
                    method = "CaLMFlow" if label.startswith("CaLMFlow") else label
                    tau = kw.pop("temperature", 1.0)
                    res = run_one(
                        method, data, dim, seed, quick=args.quick, epochs=epochs, temperature=tau, **kw
                    )
                    rows.append({"dim": dim, "data": data, "method": label, "seed": seed, **res})
                    print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    agg = df.groupby(["dim", "data", "method"], sort=False)[["W2", "MMD", "MMD (median)", "train s"]].agg(
        ["mean", "std"]
    )
    table = pd.DataFrame(index=agg.index)
    for m in ("W2", "MMD", "MMD (median)"):
        table[m] = [
            f"{a:.3f} ± {b:.3f}" for a, b in zip(agg[(m, "mean")], agg[(m, "std")].fillna(0), strict=True)
        ]
    table["train s"] = agg[("train s", "mean")].round(0).to_numpy()
    C.write_table(
        f"synthetic_{args.experiment}{'_quick' if args.quick else ''}",
        f"Synthetic {args.experiment} ({'quick CPU settings' if args.quick else 'full settings'}), seeds {seeds}",
        table.reset_index(),
        command=C.command_line(),
        notes="W2: exact 2-Wasserstein (POT `emd2`) and MMD: unbiased RBF MMD with k(x,y)=exp(-||x-y||^2) (the paper's "
        "kernel; in 100+ dimensions it is nearly blind: generated points off the 2-D plane see no kernel mass, so every "
        "method gets about the same value) and MMD (median): the same with the median-heuristic bandwidth, between 500 "
        "generated and 500 held-out target samples in the embedding space.",
    )


if __name__ == "__main__":
    main()
