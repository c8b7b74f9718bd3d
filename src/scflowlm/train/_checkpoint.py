"""Resuming from a Lightning checkpoint: refuse one that another architecture or other data wrote."""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DATA_KEY", "check_checkpoint"]

#: key of a checkpoint holding what identifies the training data (written by the training plan)
DATA_KEY = "scflowlm_data"


def _read(path: str) -> dict:
    """The checkpoint at ``path``, or a ValueError saying it is none (a text file, a model folder's model.pt)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, OSError) as err:
        raise ValueError(
            f"ckpt_path {path!r} is not a Lightning checkpoint ({type(err).__name__}); pass the last.ckpt that "
            "train(checkpoint_dir=...) wrote."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"ckpt_path {path!r} holds no training state (no 'state_dict'); pass the last.ckpt that "
            "train(checkpoint_dir=...) wrote (a saved model folder is loaded with Model.load instead)."
        )
    return ckpt


def check_checkpoint(path: str | os.PathLike, module: torch.nn.Module, data: Mapping[str, Any]) -> None:
    """Raise a ValueError unless the checkpoint at ``path`` can continue training ``module`` on ``data``.

    Parameters
    ----------
    path
        A Lightning checkpoint (``last.ckpt``).
    module
        The module to resume: the checkpoint's weights (parameters) must have its names and shapes.
    data
        What identifies the training data (cells, conditions, split); compared with the record the training
        plan wrote into the checkpoint (:data:`DATA_KEY`), entry by entry.
    """
    path = os.fspath(path)
    ckpt = _read(path)
    saved = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items() if k.startswith("module.")}
    # the architecture is the parameters (the data buffers have the size of the data, which the record checks)
    params = dict(module.named_parameters())
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(module.state_dict()))
    shapes = [k for k in set(params) & set(saved) if tuple(params[k].shape) != tuple(saved[k].shape)]
    if missing or extra or shapes:
        raise ValueError(
            f"ckpt_path {path!r} was written by a model of another architecture or class (weights missing: "
            f"{missing[:3]}, unexpected: {extra[:3]}, other shapes: {sorted(shapes)[:3]}); resume with the model "
            "settings (and class) that wrote it."
        )
    recorded = ckpt.get(DATA_KEY)
    if recorded is None:
        return
    differ = [k for k in data if recorded.get(k) != data[k]]
    if differ:
        raise ValueError(
            f"ckpt_path {path!r} was written while training on other data ({', '.join(differ)} differ): resume "
            "with the same AnnData (cells and conditions), holdout and split seed (scvi.settings.seed)."
        )
