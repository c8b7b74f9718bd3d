"""Keys shared by the model, the torch module and the tools."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"  # cell state: coordinates from adata.obsm[obsm_key]
    CONDITION_KEY: str = "condition"  # integer code of the cell's condition (one prompt each)
    CONTEXT_KEY: str = "context"  # integer code of the cell's context (template fields but the perturbation)
    CONTROL_KEY: str = "is_control"  # 1.0 for control cells, 0.0 otherwise


REGISTRY_KEYS = _RegistryKeys()

#: obs columns written by ``setup_anndata`` (scvi-tools writes its own ``_scvi_*`` columns the same way).
CONDITION_COL = "_scflowlm_condition"
CONTEXT_COL = "_scflowlm_context"
CONTROL_COL = "_scflowlm_is_control"

#: keys of a prediction AnnData
PROMPT_COL = "prompt"
SOURCE_OBSM = "X_source"
UNS_KEY = "scflowlm"
