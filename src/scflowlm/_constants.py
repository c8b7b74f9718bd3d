"""Keys shared by the models, the torch modules and the tools."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"  # cell state: coordinates from adata.obsm[obsm_key]
    CONDITION_KEY: str = "condition"  # per template field, the integer code of the cell's value
    CONTEXT_KEY: str = "context"  # per context field, the integer code of the cell's value


REGISTRY_KEYS = _RegistryKeys()

#: obs columns of a prediction that the model writes (a source's obs may not have them).
PROMPT_COL = "prompt"
SEEN_COL = "seen_in_training"
#: obsm keys of a prediction: the start states of a control source, the states along the generated path.
SOURCE_OBSM = "X_source"
PATH_OBSM = "X_path"
#: ``uns`` key of what made a prediction (model, keys, settings) and of ``setup_anndata``'s keys.
UNS_KEY = "scflowlm"
#: ``uns`` key of the table written by :func:`scflowlm.tl.evaluate` (read by :func:`scflowlm.pl.evaluate`).
EVALUATE_KEY = "scflowlm_evaluate"
