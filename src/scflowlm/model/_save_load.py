"""Save and load: nothing lost on the way, and an AnnData that does not fit the saved model is refused."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scflowlm._version import scflowlm_version

from ._gene_map import TOLERANCE

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["RENAMED_PARAMS", "SaveLoadMixin", "renamed_params"]

#: init parameters of earlier releases -> today's names
RENAMED_PARAMS = {"prior_dropout": "head_start_dropout"}


def renamed_params(renamed: dict, **current) -> dict:
    """``current`` with the values of parameters passed under an earlier name (a :class:`FutureWarning` each).

    Any other unknown keyword is a :class:`TypeError`, as Python raises it (a save of a newer release).
    """
    for old, value in renamed.items():
        if old not in RENAMED_PARAMS:
            raise TypeError(f"__init__() got an unexpected keyword argument {old!r}")
        new = RENAMED_PARAMS[old]
        warnings.warn(f"{old} is now called {new}; pass {new}=.", FutureWarning, stacklevel=3)
        current[new] = value
    return current


def _unreadable(err: BaseException) -> bool:
    """Whether a loading error means the saved file itself is broken (rather than the AnnData not fitting)."""
    if isinstance(err, pickle.UnpicklingError | EOFError | zipfile.BadZipFile) or (
        isinstance(err, OSError) and not isinstance(err, FileNotFoundError)
    ):
        return True
    if isinstance(err, RuntimeError):
        text = str(err)
        return any(
            s in text for s in ("PytorchStreamReader", "zip archive", "Error(s) in loading state_dict")
        )
    if isinstance(err, ValueError):
        return str(err).startswith("Failed to load model file")
    return (
        isinstance(err, KeyError)
        and bool(err.args)
        and err.args[0] in ("attr_dict", "var_names", "model_state_dict")
    )


class SaveLoadMixin:
    """``save`` and ``load`` of the flow models, on top of scvi-tools' (weights, registry, init parameters, ``*_``)."""

    @classmethod
    def load(cls, dir_path: str, adata: ad.AnnData | None = None, *, prefix: str | None = None, **kwargs):
        """Load a model saved with :meth:`save` (see :meth:`scvi.model.base.BaseModelClass.load`).

        With ``adata``, it is checked against the saved model: the genes (names and order), the ``obsm`` width,
        the PCA (the saved loadings must reproduce ``obsm[obsm_key]``) and the condition values must be those of
        training (a subset of the cells is fine). Raises :class:`FileNotFoundError` for a missing directory or
        model file and :class:`ValueError` for an unreadable (corrupt) save or an AnnData that does not match,
        naming what differs.
        """
        path = os.fspath(dir_path)
        model_file = os.path.join(path, f"{prefix or ''}model.pt")
        if kwargs.get("backup_url") is None:
            if os.path.isfile(path):
                raise NotADirectoryError(
                    f"{path!r} is a file; pass the folder that holds it (the one given to save()): "
                    f"{cls.__name__}.load({os.path.dirname(path) or '.'!r}, adata)."
                )
            if not os.path.isdir(path):
                raise FileNotFoundError(f"No saved model at {path!r}: the directory does not exist.")
            if not os.path.isfile(model_file):
                raise FileNotFoundError(
                    f"{path!r} holds no saved model: {os.path.basename(model_file)} is missing "
                    f"(the directory has {sorted(os.listdir(path))[:10]})."
                )
        try:
            with warnings.catch_warnings():
                # scvi-tools only warns about other genes; they are an error below
                warnings.filterwarnings("ignore", message=r".?var_names.? for the loaded")
                model = super().load(path, adata=adata, prefix=prefix, **kwargs)
        except TypeError as err:
            if "unexpected keyword argument" not in str(err):
                raise
            raise ValueError(
                f"The model in {path!r} was saved by a newer scflowlm than this one ({scflowlm_version()}): {err}. "
                "Upgrade scflowlm to load it."
            ) from err
        except (
            pickle.UnpicklingError,
            EOFError,
            zipfile.BadZipFile,
            OSError,
            RuntimeError,
            ValueError,
            KeyError,
        ) as err:
            if not _unreadable(err):
                raise
            raise ValueError(
                f"The saved model in {path!r} cannot be read: it is corrupt, incomplete or not a {cls.__name__} "
                f"save ({type(err).__name__}: {err})."
            ) from err
        model._check_saved_state(path)
        if getattr(model, "freeze_", None) is not None:  # an adapted model keeps what it froze
            model._apply_freeze()
        if adata is not None and adata is not False:
            model._check_loaded_anndata(adata)
        return model

    def _check_saved_state(self, path: str) -> None:
        """Refuse a save whose weights are not finite or whose gene map is incomplete (a ValueError naming it)."""
        # every tensor but the condition means, NaN for conditions without training cells (the held-out ones)
        state = {k: v for k, v in self.module.state_dict().items() if k != "condition_means"}
        bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
        if bad:
            raise ValueError(
                f"The saved model in {path!r} has NaN or infinite weights in {len(bad)} tensor(s) ({bad[:3]}): it "
                "was saved after training diverged, or the file is damaged. Train again (a lower lr) or load an "
                "earlier save."
            )
        wrong = self.module.data_shape_errors(
            n_conditions=len(self.condition_table), n_singles=len(self.vocabulary)
        )
        if wrong:
            raise ValueError(
                f"The saved model in {path!r} is damaged: its data do not fit its {len(self.condition_table)} "
                f"conditions ({'; '.join(wrong[:3])}). Load an earlier save or train again."
            )
        parts = {"loadings_": self.loadings_, "gene_means_": self.gene_means_, "var_names_": self.var_names_}
        if self.loadings_ is not None and any(v is None for v in parts.values()):
            missing = [k for k, v in parts.items() if v is None]
            raise ValueError(
                f"The saved model in {path!r} is incomplete: its attributes lack {missing}, which map generated "
                "states to genes. Save the model again with this scflowlm."
            )

    def _check_loaded_anndata(self, adata: ad.AnnData) -> None:
        saved = self.var_names_
        if saved is not None:
            saved = pd.Index(np.asarray(saved).astype(str))
            genes = pd.Index(adata.var_names.astype(str))
            if not genes.equals(saved):
                missing, extra = saved.difference(genes, sort=False), genes.difference(saved, sort=False)
                detail = (
                    "the same genes in another order"
                    if not len(missing) and not len(extra)
                    else f"{len(genes)} genes vs {len(saved)} in training; missing: {list(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}; not in training: {list(extra[:5])}{' ...' if len(extra) > 5 else ''}"
                )
                raise ValueError(
                    f"The AnnData's genes differ from the ones the model was trained on ({detail}). "
                    "Subset and order them as in training: adata[:, model.var_names_]."
                )
        args = self._setup_args
        error = self.gene_map.mismatch(adata, obsm_key=args["obsm_key"], layer=args["layer"])
        if error > TOLERANCE:
            raise ValueError(
                f"adata.obsm[{args['obsm_key']!r}] is not the PCA the model was trained on: the saved loadings and gene "
                f"means reproduce it with a median relative error of {error:.2g} (a recomputed PCA flips or reorders "
                "components; shifted coordinates move every prediction). Pass the AnnData with the training PCA, or "
                "project the cells with the model: adata.obsm[obsm_key] = (adata.X - model.gene_means_) @ model.loadings_."
            )

    def save(
        self,
        dir_path: str,
        *,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **kwargs,
    ) -> None:
        """Save the model (weights, registry, init parameters and every ``*_`` attribute) to ``dir_path``.

        Raises :class:`ValueError` if ``dir_path`` exists and ``overwrite`` is False. The files are written into a
        temporary folder beside ``dir_path`` and moved into place once all are written, so a save that fails (an
        AnnData that cannot be written with ``save_anndata=True``, a full disk) leaves nothing half-written. See
        :meth:`scvi.model.base.BaseModelClass.save`.
        """
        path = os.path.abspath(os.fspath(dir_path))
        if os.path.exists(path) and not overwrite:
            raise ValueError(
                f"{os.fspath(dir_path)!r} already exists; pass overwrite=True to replace the saved model there, or "
                "another folder."
            )
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.saving-", dir=parent)
        try:
            super().save(staging, prefix=prefix, overwrite=True, save_anndata=save_anndata, **kwargs)
            if not os.path.exists(path):
                os.replace(staging, path)  # one rename: the folder appears whole
            else:  # overwrite: the saved files replace those of the same name, other files stay
                for name in os.listdir(staging):
                    os.replace(os.path.join(staging, name), os.path.join(path, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
