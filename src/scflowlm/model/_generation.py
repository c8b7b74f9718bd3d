"""Prediction: conditions and source cells in, one module call, a new AnnData out."""

from __future__ import annotations

import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from scflowlm._constants import PATH_OBSM, PROMPT_COL, SEEN_COL, SOURCE_OBSM
from scflowlm._utils import PredictionRecord, check_int, predicted_anndata
from scflowlm._warnings import ScflowlmWarning
from scflowlm.data import as_condition_list

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import anndata as ad

__all__ = ["GenerationMixin"]


@dataclass
class _Request:
    """The cells of one full condition in a prediction."""

    condition: dict[str, Any] | None  # typed field values (None: a raw prompt)
    prompt: str
    seen: bool
    seed: int
    cells: list[int] = field(default_factory=list)  # rows of the prediction


def _check_memory(n_cells: int, n_values: int) -> None:
    """Refuse a prediction whose output alone would not fit in this machine's memory."""
    need = 4 * n_cells * n_values
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on POSIX
        return
    if need > total:
        raise ValueError(
            f"The prediction would hold {n_cells:,} cells x {n_values:,} values, about {need / 1e9:.0f} GB, more than "
            f"this machine's {total / 1e9:.0f} GB of memory; predict fewer cells (n_cells) or fewer conditions per call."
        )


class GenerationMixin:
    """``predict_perturbation`` and ``sample`` of the flow models (needs the model's condition table and gene map)."""

    #: whether a raw prompt string can stand for a condition (only a prompt-conditioned, noise-source model)
    _accepts_raw_prompts = False
    #: cells generated at once with ``batch_size=None`` (``benchmarks/speed.py``: CFM's dopri5 gains little beyond)
    _predict_batch_size = 1024

    def predict_perturbation(
        self,
        condition: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pd.DataFrame | str,
        *,
        n_cells: int = 500,
        source: ad.AnnData | np.ndarray | Sequence[str] | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int | None = None,
        return_path: bool = False,
        **generate_kwargs,
    ) -> ad.AnnData:
        """Generate cells under one or more conditions (possibly never seen in training).

        Parameters
        ----------
        condition
            A dict of template field -> value (``{"cell_type": "CD4 T", "condition": "IFN-beta"}``), a list of
            such dicts, a pandas Series (one condition) or DataFrame (one per row), or a raw prompt string
            (noise-source CaLMFlow only). Values are compared as the user gave them (numbers as numbers). Unseen
            values are allowed (with a warning).
        n_cells
            Cells per condition. A control-source model given ``source=None`` starts them from ``n_cells``
            registered control cells of the condition's context (drawn without replacement while there are
            enough); with a ``source`` it makes one cell per source cell and condition instead.
        source
            Control-source models only (``source="control"``, the default when control cells are registered):
            the cells to perturb, as an AnnData of control cells (with the training genes), a boolean mask,
            integer positions or obs names of the registered AnnData. One prediction per source cell and
            condition, in order. Fields missing from ``condition`` are taken from each source cell's obs.
        temperature
            ``tau >= 0``: scales the variance of the latent at inference (CaLMFlow).
        seed
            Seed of the start noise, the drawn control cells and the latent samples. Every condition of the call
            is generated with this seed as if it were predicted alone: its cells depend neither on
            ``batch_size`` nor on the other conditions of the call (up to an adaptive ODE solver's tolerance).
        batch_size
            Cells generated at once (bounds memory); conditions are batched together. ``None``: the model's default,
            as many as fit a fixed memory budget (CaLMFlow: its key/value cache in about 256 MB, at most 4,096 cells;
            CFM: 1,024). Larger batches share the fixed cost of each step over more cells.
        return_path
            Also store every state of each generated path in ``obsm["X_path"]`` (cells x states x coordinates:
            the first is where the flow starts, the last the prediction). With a head start (``start_shift``) the
            flow starts at the source cell plus the condition's head start, so ``obsm["X_path"][:, 0]`` is
            ``obsm["X_source"]`` (the source cells themselves) plus the head start.
        **generate_kwargs
            Model-specific generation options (CaLMFlow: ``use_cache``; CFM: ``method``, ``rtol``, ``atol``,
            ``n_steps``, ``n_path_points``).

        Returns
        -------
        A new AnnData: ``X`` generated expression in the genes of the training data (via ``varm["PCs"]``),
        ``obs`` the condition fields (typed as in training), ``"prompt"`` and ``"seen_in_training"`` (with a
        source, the source's obs with the condition's fields overwritten), ``obsm[obsm_key]`` the generated
        states, ``obsm["X_source"]`` the source cells' states (of a control source; without the head start), ``obsm["X_path"]`` with
        ``return_path``, and ``uns["scflowlm"]`` what made the prediction (model, keys, settings), which
        :func:`scflowlm.tl.evaluate` reads.
        """
        if not isinstance(temperature, numbers.Real) or not np.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}.")
        batch_size = self._batch_size(batch_size)
        check_int("seed", seed, minimum=0, allow_none=True)
        if source is None:
            check_int("n_cells", n_cells)
        if not getattr(self, "is_trained_", False):
            warnings.warn(
                f"This {type(self).__name__} is not trained: its predictions come from random weights. Call train() "
                "first.",
                ScflowlmWarning,
                stacklevel=2,
            )
        seed = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
        if isinstance(condition, str):
            requests, x0, obs = self._prompt_requests(condition, n_cells, seed)
        elif self.module.source == "control":
            requests, x0, obs = self._source_requests(as_condition_list(condition), source, n_cells, seed)
        else:
            if source is not None:
                raise ValueError("source= needs a model trained with source='control'.")
            requests, x0, obs = self._noise_requests(as_condition_list(condition), n_cells, seed)
        return self._generate(
            requests,
            x0,
            obs,
            temperature=temperature,
            batch_size=batch_size,
            return_path=return_path,
            **generate_kwargs,
        )

    def sample(
        self,
        n_cells: int,
        *,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int | None = None,
        return_path: bool = False,
    ) -> ad.AnnData:
        """Generate ``n_cells`` cells across the registered conditions, in their proportions in the data.

        With a template without fields this is plain unconditional generation. Returns a new AnnData as
        :meth:`predict_perturbation` does; each condition gets its own seed drawn from ``seed``. ``batch_size``
        as in :meth:`predict_perturbation`.
        """
        batch_size = self._batch_size(batch_size)
        check_int("n_cells", n_cells)
        check_int("seed", seed, minimum=0, allow_none=True)
        rng = np.random.default_rng(seed)
        table = self.condition_table
        if self.adata is not None:
            freq = np.bincount(self._cell_conditions(), minlength=len(table)) / self.adata.n_obs
        else:
            freq = np.full(len(table), 1.0 / len(table))
        counts = rng.multinomial(n_cells, freq)
        requests, x0s, obs = [], [], []
        for code in np.nonzero(counts)[0]:
            s = int(rng.integers(2**31))
            cond = table.condition(int(code))
            if self.module.source == "control":
                r, x, o = self._source_requests([cond], None, int(counts[code]), s)
                x0s.append(x)
            else:
                r, _, o = self._noise_requests([cond], int(counts[code]), s)
            for req in r:
                req.cells = [c + sum(len(q) for q in obs) for c in req.cells]
            requests += r
            obs.append(o)
        x0 = np.concatenate(x0s) if x0s else None
        pred = self._generate(
            requests,
            x0,
            pd.concat(obs),
            temperature=temperature,
            batch_size=batch_size,
            return_path=return_path,
        )
        pred.obs_names = np.arange(pred.n_obs).astype(str)
        return pred

    def _default_batch_size(self) -> int:
        """Cells generated at once when ``batch_size=None`` (a model may size it by memory)."""
        return self._predict_batch_size

    def _batch_size(self, batch_size: int | None) -> int:
        """The user's ``batch_size``, checked, or the model's default for ``None``."""
        batch_size = self._default_batch_size() if batch_size is None else batch_size
        check_int("batch_size", batch_size)
        return batch_size

    # ------------------------------------------------------------------ requests
    def _request(self, condition: dict[str, Any], seed: int) -> _Request:
        typed, codes = self.condition_table.encode(condition)
        self._warn_unseen(typed, codes)
        index = self.condition_table.index_of(codes) if min(codes, default=0) >= 0 else -1
        seen = index >= 0 and index in set(self.train_conditions_)
        return _Request(typed, self.prompt_builder.render(typed), seen, seed)

    def _warn_unseen(self, condition: dict[str, Any], codes: Iterable[int]) -> None:
        table = self.condition_table
        trained = table.codes[list(self.train_conditions_)]  # [C_train, F]
        new = {f: v for j, (f, v) in enumerate(condition.items()) if list(codes)[j] not in set(trained[:, j])}
        if new:
            warnings.warn(
                f"Values never seen in training: {new}. The prompt still conditions on them.",
                ScflowlmWarning,
                stacklevel=5,
            )

    def _prompt_requests(self, prompt: str, n_cells: int, seed: int):
        if self.module.source == "control" or not self._accepts_raw_prompts:
            raise ValueError(
                "A raw prompt needs a noise-source CaLMFlowModel; pass a condition dict instead."
            )
        _check_memory(n_cells, self._values_per_cell())
        req = _Request(None, prompt, seen=False, seed=seed, cells=list(range(n_cells)))
        return [req], None, pd.DataFrame({PROMPT_COL: [prompt] * n_cells, SEEN_COL: False})

    def _noise_requests(self, conditions: list[dict], n_cells: int, seed: int):
        _check_memory(n_cells * len(conditions), self._values_per_cell())
        requests, rows = [], []
        for cond in conditions:
            req = self._request(cond, seed)
            req.cells = list(range(len(rows), len(rows) + n_cells))
            rows += [{**req.condition, PROMPT_COL: req.prompt, SEEN_COL: req.seen}] * n_cells
            requests.append(req)
        return requests, None, pd.DataFrame(rows)

    def _source_requests(self, conditions: list[dict], source, n_cells: int, seed: int):
        fields = self.prompt_builder.fields
        requests: dict[tuple, _Request] = {}
        x0s, obs_parts, start = [], [], 0
        controls = None  # positions of the registered control cells, found once for all conditions
        if source is None:
            _check_memory(n_cells * len(conditions), self._values_per_cell())
        if source is None and self.adata is not None:
            controls = np.nonzero(self._cell_is_control())[0]
        for cond in conditions:
            unknown = sorted(set(cond) - set(fields), key=str)
            if unknown:
                raise KeyError(
                    f"Condition has unknown field(s) {unknown}; the prompt template fields are {fields}."
                )
            x0, obs = self._source_states(source, cond, n_cells=n_cells, seed=seed, controls=controls)
            missing = [f for f in fields if f not in cond and f not in obs.columns]
            if missing:
                raise KeyError(f"Field(s) {missing} are neither in the condition nor in the source obs.")
            for f, v in cond.items():  # typed as registered: {"dose": 1.0} on an int column writes 1
                obs[f] = [self.condition_table.typed(f, v)[0]] * len(obs)
            if all(f in cond for f in fields):  # the condition names every field: one request for all cells
                groups = {(): np.arange(len(obs))}
            else:  # one request per distinct condition among the source cells (their obs fill the missing fields)
                groups = obs[fields].astype(str).groupby(fields, sort=False).indices
            for cells in groups.values():
                row = obs[fields].iloc[int(cells[0])].to_dict()
                request = requests[(len(x0s), tuple(map(str, row.values())))] = self._request(row, seed)
                request.cells.extend((start + cells).tolist())
            x0s.append(x0)
            obs_parts.append(obs)
            start += len(obs)
        obs = pd.concat(obs_parts) if len(obs_parts) > 1 else obs_parts[0]
        prompts, seen = np.full(len(obs), None, dtype=object), np.zeros(len(obs), dtype=bool)  # [n], [n]
        for req in requests.values():
            prompts[req.cells], seen[req.cells] = req.prompt, req.seen
        obs[PROMPT_COL], obs[SEEN_COL] = prompts, seen
        return list(requests.values()), np.concatenate(x0s), obs

    # ------------------------------------------------------------------ one module call
    def _generate(
        self,
        requests: list[_Request],
        x0: np.ndarray | None,
        obs: pd.DataFrame,
        *,
        temperature: float,
        batch_size: int,
        return_path: bool,
        **kwargs,
    ) -> ad.AnnData:
        rows = np.empty(len(obs), dtype=np.int64)
        for i, req in enumerate(requests):
            rows[req.cells] = i
        generators = [torch.Generator().manual_seed(req.seed) for req in requests]
        conditions = [r.condition for r in requests]
        members = self.catalog.members(conditions)  # [R, P]
        unknown = self.catalog.unknown_singles(conditions, self.module.encoder.known.cpu().numpy())
        if unknown:
            warnings.warn(
                f"These perturbations have no gene vector and no training cells: {unknown}. The condition encoder "
                "knows nothing of them, so only the prompt's words carry them; give them vectors with "
                "setup_anndata(perturbation_embeddings=...) (see scflowlm.data.gene_knowledge_embeddings).",
                ScflowlmWarning,
                stacklevel=4,
            )
        means = self.module.condition_means.cpu().numpy()  # [C, D] of the training conditions
        shift, in_head_start = self._head_start(conditions, means, members, training=False)  # [R, D], [R, P]
        start = None if x0 is None else torch.as_tensor(x0)
        self.module.eval()
        out = self._sample_states(
            requests,
            torch.as_tensor(rows),
            members=torch.as_tensor(members),
            in_head_start=torch.as_tensor(in_head_start),
            x0=start,
            shift=torch.as_tensor(shift[rows], dtype=torch.float32),  # zeros without a head start
            generators=generators,
            temperature=temperature,
            batch_size=batch_size,
            return_path=return_path,
            **kwargs,
        ).numpy()  # [n, D] or [n, N, D]
        states = out[:, -1] if return_path else out
        bad = ~np.isfinite(states).all(1)
        if bad.any():
            warnings.warn(
                f"{int(bad.sum())} of {len(states)} predicted cells have NaN or infinite states: the model's weights "
                "or its start states are not usable (a diverged training run, or source cells far outside the "
                "training data). Check model.history and the source cells.",
                ScflowlmWarning,
                stacklevel=3,
            )
        X, var = self.gene_map.to_genes(states)
        obsm = {self._setup_args["obsm_key"]: states}
        if x0 is not None:
            obsm[SOURCE_OBSM] = x0
        if return_path:
            obsm[PATH_OBSM] = out
        return predicted_anndata(
            X, obs, var, record=self._prediction_record(temperature, **kwargs), obsm=obsm
        )

    def _prediction_record(self, temperature: float, **settings) -> PredictionRecord:
        """What made a prediction, for ``pred.uns["scflowlm"]``."""
        args = self._setup_args
        settings = {
            "source": self.module.source,
            "temperature": temperature,
            "layer": args.get("layer"),
        } | settings
        return PredictionRecord(
            condition_keys=list(self.prompt_builder.fields),
            perturbation_key=args["perturbation_key"],
            control_value=args["control_value"],
            combination_sep=self.condition_table.combination_sep,
            obsm_key=args["obsm_key"],
            model=type(self).__name__,
            context_keys=list(self.context_keys),
            settings=settings,
        )

    def _values_per_cell(self) -> int:
        """Numbers a predicted cell holds (genes, states, source states)."""
        n_genes = len(self.gene_map.var_names) if self.gene_map.loadings is not None else 0
        return n_genes + 2 * self.n_features
