"""The cells a control-source prediction starts from: registered cells, a mask, positions, names or an AnnData."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from scflowlm._constants import PROMPT_COL, REGISTRY_KEYS, SEEN_COL
from scflowlm.data import match_mask

from ._generation import _check_memory

__all__ = ["SourceMixin"]


class SourceMixin:
    """Source cells of control-source predictions, placed in the training space."""

    def _source_states(
        self, source, condition: dict, *, n_cells: int, seed: int, controls: np.ndarray | None = None
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Raw start states ``[n, D]`` and obs of the cells a control-source prediction starts from.

        ``controls``: positions of the registered control cells, when the caller computed them once for many
        conditions (``source=None``).
        """
        if isinstance(source, ad.AnnData):
            if source.n_obs == 0:
                raise ValueError("The source AnnData has no cells; pass the control cells to perturb.")
            if source.obs.index.inferred_type not in ("string", "empty"):
                raise ValueError(
                    f"The source AnnData's obs index holds {source.obs.index.inferred_type} labels (as after "
                    "source.obs.index = pd.RangeIndex(...)), which anndata refuses; give its cells string names "
                    "first: source.obs_names = source.obs_names.astype(str)."
                )
            obs = source.obs.copy()
            states = self._project(source)
        else:
            if self.adata is None:
                raise ValueError("Without a registered AnnData, pass source= as an AnnData of control cells.")
            rows = self._source_rows(source, condition, n_cells=n_cells, seed=seed, controls=controls)
            obs = self.adata.obs.iloc[rows].copy()
            states = self._registered("X", rows).astype(np.float32)
        clash = [c for c in (PROMPT_COL, SEEN_COL) if c in obs.columns]
        if clash:
            raise ValueError(
                f"The source cells' obs has column(s) {clash}, which the prediction writes itself; rename or drop them."
            )
        _check_memory(len(obs), self._values_per_cell())
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith(("_scvi_", "_scflowlm_"))])
        obs.index = [f"{name}-pred" for name in obs.index.astype(str)]
        return states, obs

    def _source_rows(
        self, source, condition: dict, *, n_cells: int, seed: int, controls: np.ndarray | None = None
    ) -> np.ndarray:
        obs = self.adata.obs
        if source is None:
            if controls is None:
                controls = np.nonzero(self._cell_is_control())[0]
            hit = np.ones(len(controls), dtype=bool)  # among the control cells: those of the context
            for k in self.context_keys:
                if k in condition:
                    hit &= match_mask(obs[k].iloc[controls], condition[k])
            if not hit.any():
                ctx = {k: condition.get(k) for k in self.context_keys}
                raise ValueError(
                    f"There are no registered control cells for the context {ctx}; pass source= (an AnnData "
                    "of control cells, a boolean mask or obs names) to say which cells to perturb."
                )
            rows = controls[hit]
            rng = np.random.default_rng(seed)
            return np.sort(rng.choice(rows, size=n_cells, replace=n_cells > len(rows)))
        if not isinstance(source, np.ndarray | pd.Series | list | pd.Index | tuple):
            raise TypeError(
                "source must be an AnnData, a boolean mask, integer positions, obs names or None."
            )
        arr = np.asarray(source)
        if arr.dtype == bool:
            if arr.shape != (self.adata.n_obs,):
                raise ValueError(f"A boolean source mask needs {self.adata.n_obs} entries, got {arr.shape}.")
            rows = np.nonzero(arr)[0]
        elif arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() >= self.adata.n_obs):
                raise IndexError(
                    f"source positions must be in [0, {self.adata.n_obs}), got {arr.min()}..{arr.max()}."
                )
            rows = arr.astype(int)
        else:
            if not obs.index.is_unique:
                raise ValueError(
                    "The registered AnnData has duplicate obs_names, so names cannot select source cells; pass a "
                    "boolean mask or integer positions, or call adata.obs_names_make_unique() before setup_anndata."
                )
            rows = obs.index.get_indexer(arr.astype(str))
            if (rows < 0).any():
                raise KeyError(f"source names not in the registered AnnData: {list(arr[rows < 0][:5])}.")
        if len(rows) == 0:
            raise ValueError("source selects no cells.")
        return rows

    def _project(self, source: ad.AnnData) -> np.ndarray:
        """States of a source AnnData in the training space.

        The source must have the training genes (in order); otherwise it is rejected with what differs. Cells of
        the registered AnnData (same obs names and coordinates) keep their registered states; other cells are
        projected with the stored PCA loadings, or, without loadings, read from ``obsm[obsm_key]``.
        """
        key, gene_map = self._setup_args["obsm_key"], self.gene_map
        if self.adata is not None and source is self.adata:
            return self._registered(REGISTRY_KEYS.X_KEY).astype(np.float32)
        if gene_map.var_names is not None and list(source.var_names) != list(gene_map.var_names):
            missing = [g for g in gene_map.var_names if g not in set(source.var_names)]
            extra = [g for g in source.var_names if g not in set(gene_map.var_names)]
            raise ValueError(
                f"The source AnnData's genes differ from training ({source.n_vars} vs {len(gene_map.var_names)} genes; "
                f"missing: {missing[:5]}; not in training: {extra[:5]}"
                + ("; same genes in another order" if not missing and not extra else "")
                + "). Its coordinates may come from another PCA: subset it to the training genes, "
                "source[:, model.var_names_]."
            )
        if self.adata is not None and key in source.obsm and source.obs_names.is_unique:
            rows = (
                self.adata.obs_names.get_indexer(source.obs_names) if self.adata.obs_names.is_unique else None
            )
            if rows is not None and (rows >= 0).all():
                registered = self._registered(REGISTRY_KEYS.X_KEY, rows)
                theirs = np.asarray(source.obsm[key])
                if theirs.shape == registered.shape and np.allclose(theirs, registered, rtol=1e-5, atol=1e-5):
                    return registered.astype(np.float32)
        if gene_map.loadings is not None:
            return gene_map.project(source, layer=self._setup_args["layer"])
        if key in source.obsm and np.asarray(source.obsm[key]).shape[1] == self.n_features:
            return np.asarray(source.obsm[key], dtype=np.float32)
        raise ValueError(
            f"Cannot place the source cells in the training space: there are no stored PCA loadings and "
            f"obsm[{key!r}] is missing or has another width than the model's {self.n_features}."
        )
