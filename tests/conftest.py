from __future__ import annotations

import pytest
from helpers import HOLDOUT, quiet_train, setup, small_model

import scflowlm


@pytest.fixture
def adata():
    return scflowlm.data.synthetic_perturbation(n_cells_per_condition=24, n_genes=40, n_pcs=8, seed=0)


@pytest.fixture(scope="module")
def trained():
    """A model trained for one epoch with one combination held out (module-scoped: built once)."""
    ad = setup(scflowlm.data.synthetic_perturbation(n_cells_per_condition=24, n_genes=40, n_pcs=8, seed=0))
    return quiet_train(small_model(ad), holdout=[HOLDOUT]), ad
