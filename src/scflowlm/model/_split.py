"""Which cells train, validate and are held out: the arguments of ``train`` checked, the split, the splitter."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scvi.dataloaders import DataSplitter
from torch.utils.data import DataLoader, Sampler

from scflowlm._utils import check_int
from scflowlm.data import match_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ConditionBatchSampler", "HoldoutSplitter", "check_train_args", "holdout_mask", "split"]


def check_train_args(
    *,
    max_epochs: Any,
    batch_size: Any,
    train_size: Any,
    validation_size: Any,
    lr: Any,
    ema_decay: Any = None,
    ckpt_path: Any = None,
) -> None:
    """Raise a ValueError naming a ``train`` argument that would give a silently wrong run."""
    check_int("max_epochs", max_epochs, minimum=1, allow_none=True)
    check_int("batch_size", batch_size, minimum=1)
    if not isinstance(train_size, numbers.Real) or not 0 < train_size <= 1:
        raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
    if validation_size is not None and (
        not isinstance(validation_size, numbers.Real) or not 0 <= validation_size < 1
    ):
        raise ValueError(f"validation_size must be in [0, 1) or None, got {validation_size!r}.")
    if not isinstance(lr, numbers.Real) or not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    if ema_decay is not None and (
        isinstance(ema_decay, bool) or not isinstance(ema_decay, numbers.Real) or not 0 < ema_decay < 1
    ):
        raise ValueError(f"ema_decay must be a number in (0, 1) (e.g. 0.999) or None, got {ema_decay!r}.")
    if ckpt_path is not None and not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"ckpt_path {str(ckpt_path)!r} is not a file (a Lightning .ckpt checkpoint).")


def holdout_mask(
    obs: pd.DataFrame,
    holdout: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    *,
    perturbation_key: str | None = None,
    combination_sep: str | None = None,
) -> np.ndarray:
    """Cells matching any of the ``holdout`` conditions (obs column -> value; values compared by type).

    In ``perturbation_key`` a combination matches in any order and spacing (``combination_sep``).
    """
    mask = np.zeros(len(obs), dtype=bool)
    if holdout is None:
        return mask
    if isinstance(holdout, Mapping):
        holdout = [holdout]
    elif isinstance(holdout, str | pd.Series) or not all(isinstance(h, Mapping) for h in holdout):
        raise TypeError(
            f"holdout must be a dict of obs column -> value, e.g. {{'cell_type': 'NK', 'condition': 'IFNB'}}, or a "
            f"list of them; got {holdout!r}."
        )
    for cond in holdout:
        unknown = sorted(set(cond) - set(obs.columns), key=str)
        if unknown:
            raise KeyError(f"holdout condition {dict(cond)} names unknown obs column(s) {unknown}.")
        hit, absent = np.ones(len(obs), dtype=bool), []
        for k, v in cond.items():
            one = match_mask(obs[k], v, combination_sep=combination_sep if k == perturbation_key else None)
            if not one.any():
                values = sorted(map(str, pd.unique(obs[k])))
                absent.append(
                    f"obs[{k!r}] has no value {v!r} (its values: {values[:8]}{' ...' if len(values) > 8 else ''})"
                )
            hit &= one
        if not hit.any():
            why = "; ".join(absent) if absent else "each value is in obs, but no cell has them all"
            raise ValueError(
                f"holdout condition {dict(cond)} matches no cell: {why}. Write the values as obs has them."
            )
        mask |= hit
    if mask.all():
        raise ValueError(f"holdout {holdout} covers all {len(obs)} cells; nothing is left to train on.")
    return mask


def split(
    held: np.ndarray, *, train_size: float, validation_size: float | None, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices: the held-out cells are the test set; the rest is split at random."""
    pool = np.random.default_rng(seed).permutation(np.nonzero(~held)[0])
    if validation_size is None:
        n_val = len(pool) - int(round(train_size * len(pool)))
    else:
        n_val = int(round(validation_size * len(pool)))
    n_val = min(n_val, len(pool) - 1)
    return np.sort(pool[n_val:]), np.sort(pool[:n_val]), np.nonzero(held)[0]


class ConditionBatchSampler(Sampler):
    """Minibatches of a few conditions each, many cells per condition.

    Each epoch, every condition's cells are shuffled and cut into chunks of ``batch_size // conditions_per_batch``
    cells; the chunks are shuffled and laid end to end into batches of ``batch_size`` (the last incomplete batch
    is dropped). With many conditions, random minibatches hold a few cells of each, and the optimal-transport
    pairing of a condition's cells with control cells inside a minibatch is then nearly random; here each
    condition brings enough cells for the pairing to follow the data (as CellFlow samples one condition a step).
    The order follows torch's global random state (``scvi.settings.seed``).

    Parameters
    ----------
    groups
        ``[n]`` the condition of each cell of the loader.
    batch_size
        Cells per minibatch.
    conditions_per_batch
        Conditions per minibatch (about).
    """

    def __init__(self, groups: np.ndarray, *, batch_size: int, conditions_per_batch: int):
        self.groups = np.asarray(groups)
        self.batch_size = batch_size
        self.chunk = max(batch_size // max(conditions_per_batch, 1), 1)

    def __len__(self) -> int:
        return len(self.groups) // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        chunks = []
        for c in np.unique(self.groups):
            cells = np.flatnonzero(self.groups == c)
            cells = cells[torch.randperm(len(cells), generator=generator).numpy()]
            chunks += [cells[i : i + self.chunk] for i in range(0, len(cells), self.chunk)]
        order = torch.randperm(len(chunks), generator=generator).numpy()
        flat = np.concatenate([chunks[i] for i in order]) if chunks else np.zeros(0, dtype=np.int64)
        for b in range(len(self)):
            yield flat[b * self.batch_size : (b + 1) * self.batch_size].tolist()


class HoldoutSplitter(DataSplitter):
    """scvi-tools' :class:`~scvi.dataloaders.DataSplitter` whose test set is the cells of held-out conditions.

    The other cells are split at random (``seed``) into training and validation cells (:func:`split`). Cells that
    are no flows to learn (``not_flows``: the control cells of a control-source model with
    ``control_targets=False``) stay out of both loaders but remain :attr:`training_cells`: the module's statistics
    and control pool come from them. Under DDP without a seed, rank 0 draws one and the ranks Lightning launches
    inherit it through the environment, so every rank draws the same split.

    Parameters
    ----------
    adata_manager
        The model's registry of the AnnData.
    held_out
        ``[n]`` cells of held-out conditions (the test set).
    not_flows
        ``[n]`` cells that are not flows to learn.
    not_flows_reason
        Why, for the error when too few cells are left for one batch.
    train_size, validation_size, seed
        See :func:`split`.
    batch_size
        Cells per minibatch (the last incomplete batch is dropped).
    distributed
        Whether training runs with DDP (a distributed sampler, one shared split seed).
    groups, conditions_per_batch
        ``[n]`` the condition of every cell, and how many conditions a training minibatch holds
        (:class:`ConditionBatchSampler`); ``None``: random minibatches (and always under DDP).
    **kwargs
        Passed to :class:`~scvi.dataloaders.DataSplitter`.

    Attributes
    ----------
    training_cells
        Positions of the cells left for training, flows or not (the module's data comes from them).
    held_out_cells
        Positions of the held-out cells.
    n_train_flows, n_val_flows
        Number of cells in the training and validation loaders.
    """

    #: environment variable through which DDP ranks share the split seed
    SEED_VARIABLE = "SCFLOWLM_SPLIT_SEED"

    def __init__(
        self,
        adata_manager,
        *,
        held_out: np.ndarray,
        not_flows: np.ndarray,
        not_flows_reason: str = "",
        train_size: float,
        validation_size: float | None,
        seed: int | None,
        batch_size: int,
        distributed: bool = False,
        groups: np.ndarray | None = None,
        conditions_per_batch: int | None = None,
        **kwargs,
    ):
        self.groups, self.batch_size = groups, batch_size
        self.conditions_per_batch = None if distributed or groups is None else conditions_per_batch
        if seed is None and distributed:
            seed = int(
                os.environ.setdefault(self.SEED_VARIABLE, str(np.random.default_rng().integers(2**31)))
            )
        train, val, test = split(held_out, train_size=train_size, validation_size=validation_size, seed=seed)
        self.training_cells, self.held_out_cells = train, test
        flows_train, flows_val = train[~not_flows[train]], val[~not_flows[val]]
        if len(flows_train) < batch_size:
            n_out = len(train) - len(flows_train)
            why = f" ({n_out} {not_flows_reason})" if n_out else ""
            if not len(flows_train):  # no smaller batch_size helps
                raise ValueError(f"There are no cells to train on{why}.")
            raise ValueError(
                f"batch_size={batch_size} is larger than the {len(flows_train)} training cells{why}; pass a smaller "
                "batch_size."
            )
        self.n_train_flows, self.n_val_flows = len(flows_train), len(flows_val)
        # every cell placed: the cells that are no flows go with the test set
        placed = np.sort(np.concatenate([test, train[not_flows[train]], val[not_flows[val]]]))
        if distributed:
            kwargs.setdefault("distributed_sampler", True)
        super().__init__(
            adata_manager,
            external_indexing=[flows_train, flows_val, placed],
            batch_size=batch_size,
            drop_last=True,
            **kwargs,
        )

    def train_dataloader(self):
        """The training loader: condition minibatches with ``conditions_per_batch``, else scvi-tools' random ones."""
        if not self.conditions_per_batch:
            return super().train_dataloader()
        dataset = self.adata_manager.create_torch_dataset(
            indices=self.train_idx, load_sparse_tensor=self.load_sparse_tensor
        )
        sampler = ConditionBatchSampler(
            self.groups[self.train_idx],
            batch_size=self.batch_size,
            conditions_per_batch=self.conditions_per_batch,
        )
        # the sampler yields whole batches: no automatic batching (as scvi-tools' loader)
        return DataLoader(dataset, sampler=sampler, batch_size=None, pin_memory=self.pin_memory)
