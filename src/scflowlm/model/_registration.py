"""``setup_anndata`` of the flow models: which obs columns make the prompt and where the cell states are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._setup import register

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    import pandas as pd

__all__ = ["SetupMixin"]


class SetupMixin:
    """The ``setup_anndata`` classmethod (the checks and the registration are :func:`register`'s)."""

    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        *,
        prompt_template: str,
        control_template: str | None = None,
        perturbation_key: str | None = None,
        control_value: Any = None,
        obsm_key: str = "X_pca",
        layer: str | None = None,
        context_keys: Sequence[str] | None = None,
        combination_sep: str = "+",
        perturbation_embeddings: pd.DataFrame | str | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData: which obs columns make the prompt and where the cell states are.

        Parameters
        ----------
        adata
            Cells x genes; ``adata.obsm[obsm_key]`` holds the cell states (PCA coordinates).
        prompt_template
            Prompt with obs column names in braces, e.g.
            ``"Generate a {cell_type} cell stimulated with {condition}:"``.
        control_template
            Prompt used for control cells (``obs[perturbation_key] == control_value``), e.g.
            ``"Generate an unstimulated {cell_type} cell:"``.
        perturbation_key
            The obs column with the perturbation.
        control_value
            The label of control cells in ``obs[perturbation_key]``, of the column's type (a number for a
            numeric column).
        obsm_key
            Key of the cell states in ``adata.obsm`` (make them with :func:`scanpy.pp.pca`).
        layer
            Layer with the expression that the PCA was computed from (``None``: ``adata.X``); used to map
            generated states back to genes.
        context_keys
            obs columns that define a cell's context (which control cells a perturbed cell starts from with
            ``source="control"``); defaults to the template fields other than ``perturbation_key``.
        combination_sep
            Separator of the single perturbations in a value of ``perturbation_key`` (``"KLF1+MAP2K6"``): the
            condition encoder reads a combination as its singles, in any order.
        perturbation_embeddings
            Gene vectors of single perturbations: a DataFrame (perturbation name -> vector, one row each), or the key
            of one in ``adata.uns``. The condition encoder reads them through a learned projection, and the
            additive head start estimates a single never perturbed in training from its vector, so perturbations
            with a vector but no cells can be predicted. Make them offline with
            :func:`scflowlm.data.gene_text_embeddings` (names and descriptions of genes) or
            :func:`scflowlm.data.gene_loading_embeddings` (the data's PCA loadings). Saved with the model.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).

        Notes
        -----
        Checks the inputs (finite states and expression, read in chunks for a backed AnnData; template fields
        present and without missing values; control cells present; distinct conditions get distinct prompts).
        Writes the integer codes of the template fields and context columns to ``adata.obsm["_scvi_condition"]``
        and ``adata.obsm["_scvi_context"]``, scvi-tools' registry entries and ``adata.uns["scflowlm"]`` (the keys,
        for :mod:`scflowlm.tl`); nothing else of ``adata`` changes.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        register(
            cls,
            adata,
            setup_method_args=setup_method_args,
            prompt_template=prompt_template,
            control_template=control_template,
            perturbation_key=perturbation_key,
            control_value=control_value,
            obsm_key=obsm_key,
            layer=layer,
            context_keys=context_keys,
            perturbation_embeddings=perturbation_embeddings,
            combination_sep=combination_sep,
            **kwargs,
        )
