"""CaLMFlowModel: the user-facing CaLMFlow model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import torch
from transformers import GPTNeoXConfig

from scflowlm.module import CaLMFlowModule
from scflowlm.nn import build_backbone, select_attn_implementation, tokenizer_state

from ._base import FlowModelBase

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

__all__ = ["CaLMFlowModel"]


class CaLMFlowModel(FlowModelBase):
    """CaLMFlow: flow matching as a Volterra integral equation solved by a causal language model.

    Cells travel straight paths from a source (Gaussian noise, or a control cell of the same context) to
    the cell, cut into ``n_time_points`` states; each state becomes ``n_space_tokens`` tokens; a prompt
    built from the cell's obs values is prepended; a GPT-NeoX backbone and a variational head predict each
    next state (:cite:p:`he2024calmflow`). Generation is autoregressive with a key/value cache.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_time_points
        ``N``: states per path, including start and end.
    n_space_tokens
        ``K``: tokens per state.
    n_trajectories
        ``M``: trajectories of one condition per sequence (multi-trajectory context).
    backbone
        ``None``: a small random-init GPT-NeoX (4 layers x 128) with a word-level prompt tokenizer.
        A Hugging Face name or local path such as ``"EleutherAI/pythia-160m"``: pretrained weights and tokenizer.
        A :class:`~transformers.GPTNeoXConfig`: random init with that configuration.
    kl_weight
        ``beta``, weight of the KL term (paper eq. 9).
    n_latent
        Latent dimension of the variational head.
    variational
        ``"cvae"`` (default; learned prior, posterior sees the target in training), ``"paper"`` (latent from
        the backbone outputs alone, KL to N(0, I)) or ``"none"`` (deterministic). See
        :class:`~scflowlm.nn.VariationalHead`.
    source
        ``"auto"`` (default): ``"control"`` when ``setup_anndata`` registered control cells, else ``"noise"``.
        ``"noise"``: flows start from Gaussian noise (the paper); ``predict_perturbation`` draws a population.
        ``"control"``: flows start from control cells of the same context, paired with their targets by
        minibatch optimal transport in training; ``predict_perturbation`` returns one cell per control cell.
        The control source gave lower W2 on every held-out condition in ``docs/benchmarks.md`` and keeps each
        cell's own state (mean-based scores varied with the seed); the noise
        source is needed for contexts without control cells.
    attn_implementation
        ``"auto"`` (flash-attention-2 when installed and on CUDA, else SDPA), ``"sdpa"`` or ``"eager"``.
    dropout
        Dropout in the tokenizer and head MLPs.
    tokenizer
        A saved tokenizer state (set on save; leave ``None``).

    Examples
    --------
    >>> import scflowlm
    >>> adata = scflowlm.data.synthetic_perturbation()
    >>> scflowlm.CaLMFlowModel.setup_anndata(
    ...     adata,
    ...     prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
    ...     perturbation_key="condition",
    ...     control_value="control",
    ... )
    >>> model = scflowlm.CaLMFlowModel(adata)
    >>> model.train(max_epochs=5, holdout=[{"cell_type": "NK", "condition": "IFNB+TNF"}])
    >>> pred = model.predict_perturbation({"cell_type": "NK", "condition": "IFNB+TNF"}, n_cells=200, seed=0)
    """

    _module_cls = CaLMFlowModule

    def __init__(
        self,
        adata: ad.AnnData | None = None,
        registry: dict | None = None,
        *,
        n_time_points: int = 16,
        n_space_tokens: int = 4,
        n_trajectories: int = 1,
        backbone: str | GPTNeoXConfig | None = None,
        kl_weight: float = 0.3,
        n_latent: int = 32,
        variational: Literal["cvae", "paper", "none"] = "cvae",
        source: Literal["auto", "noise", "control"] = "auto",
        attn_implementation: str = "auto",
        dropout: float = 0.0,
        tokenizer: str | None = None,
    ):
        super().__init__(adata, registry)
        for name, value, low in (("n_time_points", n_time_points, 2), ("n_space_tokens", n_space_tokens, 1), ("n_trajectories", n_trajectories, 1)):
            if int(value) < low:
                raise ValueError(f"{name} must be at least {low}, got {value}.")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
        self._init_data(adata)
        source = self._resolve_source(source)
        attn = select_attn_implementation(attn_implementation, device="cuda" if torch.cuda.is_available() else "cpu")
        net, tok = build_backbone(backbone, prompts=self.prompts, tokenizer=tokenizer, attn_implementation=attn)
        self.tokenizer = tok
        self.module = CaLMFlowModule(
            net,
            self.n_features,
            n_time_points=n_time_points,
            n_space_tokens=n_space_tokens,
            n_trajectories=n_trajectories,
            n_latent=n_latent,
            variational=variational,
            source=source,
            dropout=dropout,
        )
        self._kl_weight = kl_weight
        self._set_prompt_buffers()
        if adata is not None:
            self._prepare_module()
        self._model_summary_string = (
            f"CaLMFlow: N={n_time_points} time points x K={n_space_tokens} space tokens x M={n_trajectories} "
            f"trajectories, backbone {net.config.num_hidden_layers}x{net.config.hidden_size} "
            f"({sum(p.numel() for p in self.module.parameters()) / 1e6:.2f} M parameters), "
            f"head {variational}, source {source}, {len(self.conditions)} training conditions."
        )
        self.init_params_ = self._get_init_params(locals())
        # What load() needs to rebuild the same network offline: the backbone as a config, the tokenizer.
        self.init_params_["non_kwargs"]["backbone"] = GPTNeoXConfig.from_dict(net.config.to_dict())
        self.init_params_["non_kwargs"]["tokenizer"] = tokenizer_state(tok)

    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"]  # [C, L], [C, L]

    def _set_prompt_buffers(self) -> None:
        ids, mask = self._tokenize(self.prompts)
        self.module.set_prompts(ids, mask)

    def _generate_std(self, condition, prompt, x0, *, generator, temperature=1.0, batch_size=256, use_cache=True, **kwargs):
        """Roll out trajectories from standardised sources ``x0 [n, D]`` with the prompt encoded once."""
        if kwargs:
            raise TypeError(f"Unknown generation option(s): {sorted(kwargs)}.")
        unk = self.tokenizer.unk_token_id
        ids, mask = self._tokenize([prompt])  # [1, L]
        if unk is not None and (ids == unk).any():
            logger.warning("Prompt %r has words outside the tokenizer vocabulary; they read as %s.", prompt, self.tokenizer.unk_token)
        M = self.module.n_trajectories
        device = self._device()
        n = x0.shape[0]
        out = []
        seqs_per_batch = max(batch_size // M, 1)
        for start in range(0, n, seqs_per_batch * M):
            chunk = x0[start : start + seqs_per_batch * M]  # [b, D]
            b = chunk.shape[0]
            pad = (-b) % M
            if pad:  # fill the last sequence with extra noise trajectories, dropped below
                chunk = torch.cat([chunk, torch.randn(pad, chunk.shape[1], generator=generator)])
            path = self.module.generate(
                ids.to(device),
                mask.to(device),
                chunk.view(-1, M, chunk.shape[1]).to(device),
                temperature=temperature,
                use_cache=use_cache,
                generator=generator,
            )  # [S, N, M, D]
            out.append(path[:, -1].reshape(-1, chunk.shape[1])[:b].cpu())
        return torch.cat(out)
