"""Adapt a trained model to new data: a query AnnData in the reference's genes and PCA, and a model for it.

As scvi-tools' ``prepare_query_anndata`` / ``load_query_data`` (scArches): the query keeps the reference's gene
space and PCA, its conditions, prompt words and single perturbations are added to the reference's, and everything
the reference learned is kept; :meth:`~scflowlm.model.FlowModelBase.train` then fine-tunes it.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scflowlm._constants import REGISTRY_KEYS
from scflowlm._utils import check_choice
from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import ConditionCatalog, ConditionTable, PromptBuilder, check_gene_vectors

from ._setup import registered_categories

__all__ = ["FREEZE", "AdaptMixin"]

#: what ``load_query_data(freeze=...)`` can keep fixed while fine-tuning
FREEZE = ("none", "backbone")
#: the setup_anndata arguments a query is registered with (the reference's)
_SETUP_KEYS = (
    "prompt_template",
    "control_template",
    "perturbation_key",
    "control_value",
    "obsm_key",
    "layer",
    "context_keys",
    "combination_sep",
)


def _reference(cls, reference) -> AdaptMixin:
    """A trained model of class ``cls``: the model itself, or the one saved in a folder (loaded without its data)."""
    if isinstance(reference, str | os.PathLike):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Save path contains no saved anndata")
            reference = cls.load(os.fspath(reference))
    if not isinstance(reference, cls):
        raise TypeError(
            f"reference must be a {cls.__name__} (or the folder it was saved to), got {type(reference).__name__}."
        )
    return reference


class AdaptMixin:
    """``prepare_query_anndata`` and ``load_query_data`` of the flow models."""

    #: how much lower than from scratch the default learning rate of fine-tuning an adapted model is
    _adapt_lr_factor = 0.25
    #: the share of the from-scratch optimisation steps that fine-tuning an adapted model takes by default
    _adapt_steps_factor = 0.25

    @classmethod
    def prepare_query_anndata(cls, adata: ad.AnnData, reference) -> ad.AnnData:
        """A new AnnData of the query's cells in the reference's genes and PCA (``adata`` is not changed).

        The genes are put in the reference's order: genes the reference has and the query lacks are added as zeros,
        genes the reference does not know are dropped (one warning counts both). ``obsm[obsm_key]`` holds the cells'
        coordinates in the reference's PCA, ``(x - gene_means_) @ loadings_``, and ``varm["PCs"]`` its loadings, so
        ``setup_anndata`` finds the same map between states and genes.

        Parameters
        ----------
        adata
            The query's cells, with the expression the reference was set up with (``X`` or its ``layer``).
        reference
            A trained model of this class, or the folder it was saved to.
        """
        ref = _reference(cls, reference)
        if ref.loadings_ is None:
            raise ValueError(
                "The reference maps no states to genes (it was set up without varm['PCs']): compute the query's "
                f"coordinates in its space yourself (obsm[{ref._setup_args['obsm_key']!r}])."
            )
        genes = pd.Index(np.asarray(ref.var_names_).astype(str))
        query = pd.Index(adata.var_names.astype(str))
        missing, extra = genes.difference(query, sort=False), query.difference(genes, sort=False)
        parts = []
        if len(missing):
            parts.append(f"{len(missing)} missing ones are added as zeros (e.g. {list(missing[:5])})")
        if len(extra):
            parts.append(
                f"{len(extra)} genes the reference does not know are dropped (e.g. {list(extra[:5])})"
            )
        if parts:
            warnings.warn(
                f"The query has {len(genes) - len(missing)} of the reference's {len(genes)} genes: "
                + "; ".join(parts)
                + ".",
                ScflowlmWarning,
                stacklevel=2,
            )
        layer = ref._setup_args.get("layer")
        X = adata.layers[layer] if layer is not None else adata.X
        position = query.get_indexer(genes)  # [G] column of each reference gene in the query, -1: missing
        present = position >= 0
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            take = sp.csr_matrix(
                (np.ones(present.sum()), (position[present], np.flatnonzero(present))),
                shape=(X.shape[1], len(genes)),
            )
            aligned = (X @ take).astype(np.float32)  # [n, G] sparse, zeros for missing genes
            dense = aligned.toarray()
        else:
            dense = np.zeros((adata.n_obs, len(genes)), dtype=np.float32)
            dense[:, present] = np.asarray(X)[:, position[present]]
            aligned = dense
        out = ad.AnnData(aligned, obs=adata.obs.copy(), var=pd.DataFrame(index=genes))
        if layer is not None:
            out.layers[layer] = aligned.copy()
        out.obsm[ref._setup_args["obsm_key"]] = ((dense - ref.gene_means_) @ ref.loadings_).astype(np.float32)
        out.varm["PCs"] = np.asarray(ref.loadings_, dtype=np.float32)
        return out

    @classmethod
    def load_query_data(
        cls,
        adata: ad.AnnData,
        reference,
        *,
        freeze: Literal["none", "backbone"] = "backbone",
        perturbation_embeddings: pd.DataFrame | str | None = None,
    ) -> AdaptMixin:
        """A model for the query data that starts from everything the reference learned.

        ``adata`` is registered as ``setup_anndata`` would, with the reference's templates and keys (it gets the
        same registration entries), its obs values added to the reference's. The new model knows the union of the
        reference's and the query's conditions, prompt words and single perturbations. What the reference learned
        is copied: every weight, the standardisation of the states, and the mean state of each reference
        condition (so head starts of new combinations of reference singles, and predictions of reference
        conditions, keep working without the reference's cells). New rows start from what is known of them: the
        embedding of a new single is zero, so the condition encoder reads it through its gene vector
        (``perturbation_embeddings``, added to the reference's) or not at all, as an unknown perturbation; a new
        prompt word starts as the encoder's projection of its gene vector, or as the unknown word.

        Then :meth:`train` fine-tunes it: by default at a quarter of the reference's learning rate and for a
        quarter of its optimisation steps (a model that starts close needs small steps not to lose what it
        learned, and few of them; ``docs/benchmarks/adapt.md``).

        Parameters
        ----------
        adata
            The query's cells in the reference's genes and PCA (:meth:`prepare_query_anndata`).
        reference
            A trained model of this class, or the folder it was saved to.
        freeze
            What stays fixed while fine-tuning. ``"backbone"`` (default): the transformer blocks of CaLMFlow (their
            attention and feed-forward weights, most of the parameters), the hidden layers of CFM's vector field
            but its first; the embeddings, condition encoder, state tokenizer and head train, so new words and
            singles are learned at a fraction of the cost of a step through every weight. ``"none"``: everything
            trains.
        perturbation_embeddings
            Gene vectors of the query's new single perturbations (a DataFrame or an ``adata.uns`` key); those of
            the reference are kept.

        Returns
        -------
        The adapted model (``adapted_ = True``), trained as far as the reference was.
        """
        ref = _reference(cls, reference)
        check_choice("freeze", freeze, FREEZE)
        args = ref._setup_args
        vectors = ref.catalog.vectors
        if perturbation_embeddings is not None:
            new = check_gene_vectors(perturbation_embeddings, uns=adata.uns)
            if vectors is not None:
                if new.shape[1] != vectors.shape[1]:
                    raise ValueError(
                        f"perturbation_embeddings have {new.shape[1]} columns, the reference's vectors "
                        f"{vectors.shape[1]}: give the query's singles vectors of the same kind."
                    )
                new = pd.concat(
                    [vectors, new.loc[~new.index.isin(vectors.index)].set_axis(vectors.columns, axis=1)]
                )
            vectors = new
        cls.setup_anndata(
            adata,
            **{k: args.get(k) for k in _SETUP_KEYS if k in args},
            perturbation_embeddings=vectors,
            source_registry=ref.registry_,
            extend_categories=True,
        )
        manager = cls._get_most_recent_anndata_manager(adata, required=True)
        catalog = _union_catalog(ref, manager.registry, adata)
        init = copy.deepcopy(ref.init_params_["non_kwargs"])
        init["condition_codes"] = catalog.table.codes.tolist()
        # "auto" is resolved again on the union (the query may bring combinations); the head keeps the reference's
        init["start_shift"] = getattr(ref, "start_shift_requested_", init["start_shift"])
        init |= ref._query_params(catalog)
        model = cls(adata, **init)
        model.loadings_, model.gene_means_, model.var_names_ = ref.loadings_, ref.gene_means_, ref.var_names_
        model._take_weights(ref)
        rows = np.array(
            [model.condition_table.index_of(c) for c in ref.condition_table.codes]
        )  # ref row -> new
        means = np.full((len(model.condition_table), ref.n_features), np.nan)
        means[rows] = ref.module.condition_means.cpu().numpy()
        model.reference_means_ = means
        model.reference_conditions_ = sorted(int(rows[i]) for i in ref.train_conditions_)
        known = dict(zip(ref.vocabulary, ref.module.encoder.known.cpu().numpy(), strict=True))
        model.reference_known_ = np.array([bool(known.get(s, False)) for s in model.vocabulary])
        model.standardization_ = (ref.module.x_mean.cpu().numpy(), float(ref.module.x_scale))
        model.adapted_, model.freeze_ = True, freeze
        model.module.load_data(model._module_data())
        model.train_conditions_ = sorted(set(model.reference_conditions_) | set(model.train_conditions_))
        model._apply_freeze()
        model.is_trained_ = getattr(ref, "is_trained_", False)
        # fine-tuning's epochs are appended to the reference's (``pl.history`` shows both)
        history = getattr(ref, "history_", None)
        model.history_ = copy.deepcopy(history) if isinstance(history, dict) and history else None
        return model

    # ------------------------------------------------------------------ what a subclass adds
    def _query_params(self, catalog: ConditionCatalog) -> dict:
        """Init parameters of an adapted model that differ from the reference's (e.g. a larger vocabulary)."""
        return {}

    def _take_weights(self, reference: AdaptMixin) -> None:
        """Copy the reference's weights; rows of a vocabulary are matched by name, new rows initialised."""
        raise NotImplementedError

    def _frozen_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters ``freeze="backbone"`` keeps fixed."""
        raise NotImplementedError

    def _apply_freeze(self) -> None:
        """Set ``requires_grad`` by :attr:`freeze_` (after adapting, and after a load of an adapted model)."""
        for p in self.module.parameters():
            p.requires_grad_(requires_grad=True)
        if getattr(self, "freeze_", "none") == "backbone":
            for p in self._frozen_parameters():
                p.requires_grad_(requires_grad=False)

    def _copy_matching(self, reference: AdaptMixin, skip: tuple[str, ...] = ()) -> None:
        """Copy every parameter of the reference's module of the same name and shape (but ``skip``)."""
        theirs = dict(reference.module.named_parameters())
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name in skip or name not in theirs:
                    continue
                if theirs[name].shape != p.shape:
                    raise ValueError(
                        f"The reference's {name} has shape {tuple(theirs[name].shape)}, not {tuple(p.shape)}."
                    )
                p.copy_(theirs[name])

    def _take_singles(self, reference: AdaptMixin) -> None:
        """The condition encoder's rows of the singles the reference knew; a new single's row is zero."""
        old = {s: i for i, s in enumerate(reference.vocabulary)}
        theirs = reference.module.encoder.embedding.weight
        mine = self.module.encoder.embedding.weight
        with torch.no_grad():
            mine.zero_()
            for i, s in enumerate(self.vocabulary):
                if s in old:
                    mine[i] = theirs[old[s]]


def _union_catalog(ref: AdaptMixin, registry: dict, adata: ad.AnnData) -> ConditionCatalog:
    """The reference's conditions and the query's, in the query registry's (extended) codes."""
    args = registry["setup_args"]
    builder = PromptBuilder(
        args["prompt_template"], args["control_template"], args["perturbation_key"], args["control_value"]
    )
    cats = registered_categories(registry, REGISTRY_KEYS.CONDITION_KEY)
    fields = builder.fields
    if fields:
        cell_codes = np.asarray(adata.obsm["_scvi_condition"], dtype=np.int64)  # [n, F]
        codes = np.unique(np.vstack([ref.condition_table.codes, cell_codes]), axis=0)
    else:
        codes = np.zeros((1, 0), dtype=np.int64)
    table = ConditionTable.from_codes(
        fields,
        cats,
        codes,
        perturbation_key=args["perturbation_key"],
        control_value=args["control_value"],
        combination_sep=args.get("combination_sep", "+"),
    )
    return ConditionCatalog(table, builder, args.get("perturbation_embeddings"))
