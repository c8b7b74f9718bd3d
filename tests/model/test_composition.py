"""An unseen combination reached through the prompt, at the defaults (issue 12's composition case)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi

import scflowlm

DRUG_GENES = slice(20, 30)


def two_types_one_drug(n=300, n_genes=100, seed=0):
    """Cell types A and B; a drug shifts genes 20-29 by +3 in both; every cell has its own state.

    A cell's state is a draw along 4 programs shared by both types, so a prediction that keeps each control
    cell's state correlates with that cell, and one that ignores it does not.
    """
    rng = np.random.default_rng(seed)
    programs = rng.normal(0.0, 1.0, (4, n_genes))  # [P, G]
    rows, obs = [], []
    for cell_type in ("A", "B"):
        base = rng.normal(2.0, 1.0, n_genes)  # [G]
        for condition in ("control", "drug"):
            x = base + rng.normal(0.0, 0.8, (n, 4)) @ programs + rng.normal(0.0, 0.2, (n, n_genes))
            if condition == "drug":
                x[:, DRUG_GENES] += 3.0
            rows.append(x)
            obs += [(cell_type, condition)] * n
    obs = pd.DataFrame(obs, columns=["cell_type", "condition"], index=[f"c{i}" for i in range(len(obs))])
    adata = ad.AnnData(np.vstack(rows).astype(np.float32), obs=obs.astype("category"))
    sc.pp.pca(adata, n_comps=16)
    return adata


@pytest.mark.slow
def test_held_out_combination_at_the_defaults():
    """(B, drug) is never seen: the default control-source model must move B's controls by the drug's +3 on
    genes 20-29 (within 2-4) and keep each cell's own state (r > 0.7 between source and prediction)."""
    adata = two_types_one_drug()
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell treated with {condition}:",
        perturbation_key="condition",
        control_value="control",
    )
    scvi.settings.seed = 0
    model = scflowlm.CaLMFlowModel(adata)
    assert model.module.source == "control"
    held = {"cell_type": "B", "condition": "drug"}
    model.train(holdout=[held], enable_progress_bar=False)
    control_b = adata[(adata.obs.cell_type == "B") & (adata.obs.condition == "control")].copy()
    pred = model.predict_perturbation(held, source=control_b, seed=0)
    assert not pred.obs["seen_in_training"].any()  # the combination really was held out

    shift = np.asarray(pred.X).mean(0) - np.asarray(control_b.X).mean(0)  # [G]
    assert 2.0 <= shift[DRUG_GENES].mean() <= 4.0, shift[DRUG_GENES]
    other = np.r_[0:20, 30:100]
    assert np.abs(shift[other]).mean() < 0.5, np.abs(shift[other]).mean()
    identity = scflowlm.tl.paired_identity(pred, mode="dims", fraction=0.8)  # X_source vs X_pca
    print(
        f"drug genes moved by {shift[DRUG_GENES].mean():.2f}; state kept r = {identity.summary['mean_corr']:.3f}"
    )
    assert identity.summary["mean_corr"] > 0.7, identity.summary
