"""CellFlow as a peer model: train on all but the held-out conditions, predict those from control cells.

Run by the python of the separate CellFlow venv (see ``_peers.ensure_cellflow_env``), never by
scflowlm's own environment, and never importing scflowlm::

    python _cellflow_peer.py --input in.h5ad --output out.h5ad \
        --holdout '[{"cell_type": "CD14+ Monocytes", "condition": "stimulated"}]' --seed 0 --iterations 2000

Input: ``obs["cell_type"]``, ``obs["condition"]`` (control cells are ``"control"``, combinations ``"A+B"``) and
``obsm["X_pca"]``. The model is CellFlow's ``otfm`` solver in the PCA space: for every cell type, a flow from its
control cells to its perturbed cells. The cell type is the split covariate (its control cells are the source)
and a sample covariate whose representation is the mean PCA of its control cells. A condition is the set of
its single perturbations (``"A+B"`` -> {A, B}), each a one-hot vector, pooled by CellFlow's set pooling; a
condition with fewer parts than the longest is padded with an all-zero "no perturbation" element.
CellFlow's default layer sizes and optimiser are meant for GPUs; here the velocity field is 256 wide
(``--width``), batches are 256 cells and Adam runs at 1e-4 (``--lr``); the rest keeps CellFlow's defaults
(attention-token set pooling, concatenation conditioning, condition dropout 0.9, linear OT matching).

Output: one predicted cell per control cell of the held-out condition's cell type, with ``obsm["X_pca"]``,
``obs["cell_type"]``, ``obs["condition"]`` and ``obs["source_cell"]`` (the control cell's obs name).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

CONTROL = "control"
#: Filler for the empty slots of a condition with fewer parts than the longest one (all-zero vector).
NONE = "__none__"
CONTEXT = "cell_type_rep"
PERT_REP = "perturbation_rep"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--holdout", required=True, help='JSON list of {"cell_type": ..., "condition": ...}')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=2000)
    # CPU-sized network and optimiser; CellFlow's own defaults (3 x 2048 / 3 x 4096 layers, batch 1024,
    # Adam 5e-5 accumulated over 20 steps) are sized for GPUs and days of iterations.
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=256, help="width of every MLP layer of the velocity field")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--condition-dim", type=int, default=64)
    p.add_argument(
        "--time-predict",
        type=int,
        nargs="*",
        default=[],
        help="also time predicting this many cells of the first held-out condition (its control cells repeated)",
    )
    p.add_argument(
        "--time-predict-repeats", type=int, default=2, help="timed calls per size (after a warm-up)"
    )
    return p.parse_args(argv)


def parts_of(condition: str) -> list[str]:
    """Single perturbations of a condition, sorted ("B+A" and "A+B" are the same set)."""
    return [] if condition == CONTROL else sorted({s.strip() for s in condition.split("+") if s.strip()})


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()

    import anndata as ad
    import numpy as np
    import optax
    import pandas as pd
    from cellflow.model import CellFlow

    holdout = [(str(h["cell_type"]), str(h["condition"])) for h in json.loads(args.holdout)]
    adata = ad.read_h5ad(args.input)
    x = np.asarray(adata.obsm["X_pca"], dtype=np.float32)
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    condition = adata.obs["condition"].astype(str).to_numpy()
    is_control = condition == CONTROL
    for ct, cond in holdout:
        if cond == CONTROL:
            sys.exit(f"cannot hold out the control condition ({ct})")
        if not (is_control & (cell_type == ct)).any():
            sys.exit(f"no control cells of cell type {ct!r} to predict {cond!r} from")

    # Representations: one-hot per single perturbation (over all parts in the data, held-out ones included, so
    # that a held-out combination of seen singles is a new set of known vectors); "none" is the zero vector.
    singles = sorted({p for c in set(condition) for p in parts_of(c)})
    eye = np.eye(len(singles), dtype=np.float32)
    pert_rep = {s: eye[i] for i, s in enumerate(singles)}
    pert_rep[NONE] = np.zeros(len(singles), dtype=np.float32)
    # Cell-type context: the mean PCA of its control cells.
    context_rep = {
        ct: x[is_control & (cell_type == ct)].mean(axis=0) for ct in sorted(set(cell_type[is_control]))
    }
    max_len = max([len(parts_of(c)) for c in set(condition)] + [len(parts_of(c)) for _, c in holdout] + [1])
    pert_cols = [f"pert_{i + 1}" for i in range(max_len)]

    def obs_frame(cts, conds) -> pd.DataFrame:
        df = pd.DataFrame({"cell_type": list(cts), "condition": list(conds)})
        df["is_control"] = df["condition"] == CONTROL
        for i, col in enumerate(pert_cols):
            df[col] = [(parts_of(c) + [NONE] * max_len)[i] for c in df["condition"]]
        return df

    # Training cells: all but the held-out conditions; a cell type is kept only if it has both control and
    # (training) perturbed cells, since CellFlow samples a target for every control population.
    held = np.zeros(adata.n_obs, dtype=bool)
    for ct, cond in holdout:
        held |= (cell_type == ct) & (condition == cond)
    keep = ~held
    types_with_targets = set(cell_type[keep & ~is_control])
    keep &= np.isin(cell_type, sorted(types_with_targets & set(context_rep)))
    # The trainer draws batches with a fixed generator (seed 0); shuffling the cells by --seed makes the seed
    # reach the batches too, not only the initial weights.
    idx = np.flatnonzero(keep)
    idx = idx[np.random.default_rng(args.seed).permutation(len(idx))]
    obs = obs_frame(cell_type[idx], condition[idx])
    obs.index = adata.obs_names[idx].astype(str)
    train = ad.AnnData(obs=obs, obsm={"X_pca": x[idx]})
    train.uns[PERT_REP] = pert_rep
    train.uns[CONTEXT] = context_rep
    for col in ["cell_type", "condition", *pert_cols]:
        train.obs[col] = train.obs[col].astype("category")

    cf = CellFlow(train, solver="otfm")
    cf.prepare_data(
        sample_rep="X_pca",
        control_key="is_control",
        perturbation_covariates={"perturbation": tuple(pert_cols)},
        perturbation_covariate_reps={"perturbation": PERT_REP},
        sample_covariates=["cell_type"],
        sample_covariate_reps={"cell_type": CONTEXT},
        split_covariates=["cell_type"],
        max_combination_length=max_len,
    )
    w = args.width
    cf.prepare_model(
        condition_embedding_dim=args.condition_dim,
        time_freqs=64,
        time_encoder_dims=(w, w),
        hidden_dims=(w, w),
        decoder_dims=(w, w, w),
        optimizer=optax.adam(args.lr),
        seed=args.seed,
    )
    t_prep = time.perf_counter()
    cf.train(
        num_iterations=args.iterations, batch_size=args.batch_size, valid_freq=max(args.iterations, 1) + 1
    )
    t_train = time.perf_counter()
    losses = cf.trainer.training_logs["loss"]

    def predict(ct: str, cond: str, rows: np.ndarray) -> np.ndarray:
        """Predicted states of ``cond`` from the control cells at ``rows`` (positions; repeats allowed)."""
        ctrl_obs = obs_frame([ct] * len(rows), [CONTROL] * len(rows))
        unique = len(np.unique(rows)) == len(rows)  # the cells' own names, unless repeated for a timing
        ctrl_obs.index = (
            adata.obs_names[rows].astype(str) if unique else [f"source-{i}" for i in range(len(rows))]
        )
        ctrl = ad.AnnData(obs=ctrl_obs, obsm={"X_pca": x[rows]})
        ctrl.uns[PERT_REP] = pert_rep  # predict() reads the representations from this AnnData's uns
        ctrl.uns[CONTEXT] = context_rep
        cov = obs_frame([ct], [cond])  # get_prediction_data also wants the control column (False)
        cov["condition_id"] = f"{ct}|{cond}"
        for col in ["cell_type", *pert_cols]:
            cov[col] = cov[col].astype("category")
        out = cf.predict(ctrl, covariate_data=cov, sample_rep="X_pca", condition_id_key="condition_id")
        (pred,) = out.values()
        pred = np.asarray(pred, dtype=np.float32)
        if pred.shape != (len(rows), x.shape[1]):
            sys.exit(f"unexpected prediction shape {pred.shape} for {ct!r}/{cond!r}")
        return pred

    # Predict every held-out condition from its cell type's control cells.
    blocks = []
    for ct, cond in holdout:
        rows = np.flatnonzero(is_control & (cell_type == ct))
        blocks.append((ct, cond, adata.obs_names[rows].astype(str), predict(ct, cond, rows)))
    t_pred = time.perf_counter()

    # Generation speed: n cells of the first held-out condition, its control cells repeated; a first call of the
    # same size compiles (JAX traces every new shape), then the best of the timed calls.
    rates = {}
    for n in args.time_predict:
        ct, cond = holdout[0]
        rows = np.resize(np.flatnonzero(is_control & (cell_type == ct)), n)
        predict(ct, cond, rows)
        best = float("inf")
        for _ in range(max(args.time_predict_repeats, 1)):
            t = time.perf_counter()
            predict(ct, cond, rows)
            best = min(best, time.perf_counter() - t)
        rates[str(n)] = n / best

    obs = pd.DataFrame(
        {
            "cell_type": np.concatenate([[b[0]] * len(b[2]) for b in blocks]),
            "condition": np.concatenate([[b[1]] * len(b[2]) for b in blocks]),
            "source_cell": np.concatenate([b[2] for b in blocks]),
        }
    )
    obs.index = [f"cellflow-{i}" for i in range(len(obs))]
    res = ad.AnnData(obs=obs, obsm={"X_pca": np.concatenate([b[3] for b in blocks])})
    res.uns["cellflow_peer"] = {
        "seed": args.seed,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "width": args.width,
        "lr": args.lr,
        "n_train_cells": int(train.n_obs),
        "final_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "seconds": {"prepare": t_prep - t0, "train": t_train - t_prep, "predict": t_pred - t_train},
        "predict_cells_per_s": rates,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    res.write_h5ad(args.output)
    print(json.dumps(res.uns["cellflow_peer"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
