"""CaLMFlowModel: the user-facing CaLMFlow model."""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import TYPE_CHECKING, Literal

import torch
from transformers import GPTNeoXConfig

from scflowlm._docs import doc_params
from scflowlm._utils import check_fraction, check_int
from scflowlm._warnings import ScflowlmWarning
from scflowlm.module import CaLMFlowModule
from scflowlm.nn import (
    attention_name,
    build_backbone,
    is_word_level,
    kv_cache_bytes,
    select_attn_implementation,
    tokenizer_state,
    word_tokenizer,
)

from ._base import FlowModelBase
from ._save_load import renamed_params

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anndata as ad
    import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CaLMFlowModel"]

#: init parameters passed to :class:`~scflowlm.module.CaLMFlowModule` as they are
_MODULE_PARAMS = (
    "n_time_points",
    "n_space_tokens",
    "n_trajectories",
    "n_latent",
    "variational",
    "kl_weight",
    "dropout",
    "prompt_dropout",
    "head_start_dropout",
    "head_start_penalty",
)


@doc_params()
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
        ``None``: a small random-init GPT-NeoX (2 layers x 64, the paper's single-cell model) with a word-level
        prompt tokenizer.
        A Hugging Face name or local path such as ``"EleutherAI/pythia-160m"``: pretrained weights and tokenizer.
        A :class:`~transformers.GPTNeoXConfig`: random init with that configuration.
    kl_weight
        ``beta``, weight of the KL term (paper eq. 9).
    n_latent
        Latent dimension of the variational head.
    variational
        ``"cvae"`` (learned prior, posterior sees the target in training), ``"paper"`` (latent from the backbone
        outputs alone, KL to N(0, I)) or ``"none"`` (deterministic). See :class:`~scflowlm.nn.VariationalHead`.
        ``"auto"`` (default): ``"none"`` when flows start at a head start (``start_shift`` resolved to
        ``"additive"`` or ``"nearest_context"``), else ``"cvae"``. With the additive head start the flow only corrects
        it, the source cells bring the spread, and a stochastic latent adds noise to small effects; a flow that moves
        the whole way from the control cells (a new cell type's response) fits better with ``"cvae"`` (the levers
        that decided it: ``docs/benchmarks/levers.md``).
    source
        %(source)s
    start_shift
        %(start_shift)s
    shift_training
        %(shift_training)s
    combination_scale
        %(combination_scale)s
    head_start_penalty
        %(head_start_penalty)s
    head_start_dropout
        %(head_start_dropout)s
    control_targets
        %(control_targets)s
    attn_implementation
        ``"auto"`` (flash-attention-2 when installed and on CUDA, else SDPA), ``"sdpa"`` or ``"eager"``.
    dropout
        Dropout in the tokenizer and head MLPs.
    prompt_dropout
        Probability that a training sequence reads its condition's prompt with the context fields left empty
        (``"Generate a  cell stimulated with IFN-beta:"``), so the model also learns each perturbation's flow
        from the start cell alone and leans less on a context word it saw only with other perturbations.
        Generation always reads the full prompt.
    condition_codes
        The training conditions as field codes (set on save; leave ``None``).
    **renamed
        Arguments of an earlier release under their old names (``prior_dropout``: ``head_start_dropout``), as a saved
        model of that release passes them; each gives a :class:`FutureWarning`.
    tokenizer
        A saved prompt tokenizer state (set on save; leave ``None``).

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
    _accepts_raw_prompts = True
    _default_lr = 2e-3
    _default_steps = 3000  # chosen on the scoreboard (docs/benchmarks/levers.md)

    def __init__(
        self,
        adata: ad.AnnData | None = None,
        registry: dict | None = None,
        *,
        n_time_points: int = 4,
        n_space_tokens: int = 1,
        n_trajectories: int = 1,
        backbone: str | GPTNeoXConfig | None = None,
        kl_weight: float = 0.3,
        n_latent: int = 16,
        variational: Literal["auto", "cvae", "paper", "none"] = "auto",
        source: Literal["auto", "noise", "control"] = "auto",
        start_shift: Literal["auto", "none", "additive", "nearest_context"] = "auto",
        shift_training: Literal["held_out", "own"] = "held_out",
        combination_scale: float | Literal["fit"] = "fit",
        head_start_penalty: float = 3.0,
        control_targets: bool = False,
        head_start_dropout: float = 0.0,
        attn_implementation: str = "auto",
        dropout: float = 0.0,
        prompt_dropout: float = 0.0,
        condition_codes: Sequence[Sequence[int]] | None = None,
        tokenizer: str | None = None,
        **renamed,
    ):
        head_start_dropout = renamed_params(renamed, head_start_dropout=head_start_dropout)[
            "head_start_dropout"
        ]
        for name, value, low in (
            ("n_time_points", n_time_points, 2),
            ("n_space_tokens", n_space_tokens, 1),
            ("n_trajectories", n_trajectories, 1),
            ("n_latent", n_latent, 1),
        ):
            check_int(name, value, minimum=low)
        if not isinstance(kl_weight, numbers.Real) or not math.isfinite(kl_weight) or kl_weight < 0:
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}.")
        check_fraction("prompt_dropout", prompt_dropout)
        params = {k: v for k, v in locals().items() if k != "renamed"}
        super().__init__(adata, registry, self._get_init_params(params))

    # ------------------------------------------------------------------ the hooks of FlowModelBase
    def _build_module(self, source: str, params: dict, *, loading: bool) -> CaLMFlowModule:
        attn = select_attn_implementation(
            params["attn_implementation"], device="cuda" if torch.cuda.is_available() else "cpu"
        )
        net, self.prompt_tokenizer = build_backbone(
            params["backbone"],
            prompts=self.prompts
            + self.catalog.context_free_prompts(),  # in the vocabulary, read with prompt_dropout
            tokenizer=params["tokenizer"],
            attn_implementation=attn,
        )
        module_params = {k: params[k] for k in _MODULE_PARAMS}
        if module_params["variational"] == "auto":
            module_params["variational"] = "none" if self.start_shift != "none" else "cvae"
        return self._module_cls(
            net,
            self.n_features,
            self._module_data(loading=loading),
            **module_params,
            source=source,
            zero_velocity=self.start_shift != "none",  # a flow with a head start moves nothing until trained
        )

    def _condition_inputs(self, in_head_start: np.ndarray) -> dict[str, torch.Tensor]:
        """The prompts of the conditions, then the prompts they read at their head start, then the context-free ones.

        The head-start prompts name only what is left to move
        (:meth:`scflowlm.data.ConditionCatalog.reading_prompts`); the context-free ones come with ``prompt_dropout``.
        """
        catalog, prompts = self.catalog, self.prompts
        extra = (
            catalog.context_free_prompts() if self.init_params_["non_kwargs"]["prompt_dropout"] > 0 else []
        )
        reading = catalog.reading_prompts(catalog.conditions(), in_head_start, prompts)
        ids, mask = self._tokenize(prompts + reading + extra)
        return {"prompt_ids": ids, "prompt_mask": mask}

    def _saved_params(self) -> dict:
        """The backbone as a config, the prompt tokenizer and the resolved head (a load rebuilds it offline)."""
        return {
            "backbone": GPTNeoXConfig.from_dict(self.module.backbone.config.to_dict()),
            "tokenizer": tokenizer_state(self.prompt_tokenizer),
            "variational": self.module.head.mode,
        }

    # ------------------------------------------------------------------ adapting (load_query_data)
    def _query_params(self, catalog) -> dict:
        """A word-level vocabulary of the union's prompts, and a backbone with room for its words.

        A pretrained tokenizer reads any text and is kept.
        """
        if not is_word_level(self.prompt_tokenizer):
            return {}
        words = word_tokenizer(catalog.prompts() + catalog.context_free_prompts())
        config = GPTNeoXConfig.from_dict(self.module.backbone.config.to_dict())
        config.vocab_size = max(config.vocab_size, len(words))
        return {"backbone": config, "tokenizer": None}

    def _take_weights(self, reference: CaLMFlowModel) -> None:
        """Every weight of the reference; word embeddings matched by word, the encoder's rows by single.

        A new word starts as the encoder's projection of its gene vector when it names a single with one, else as
        the reference's unknown word.
        """
        word = "backbone.embed_in.weight"
        self._copy_matching(reference, skip=(word, "encoder.embedding.weight"))
        self._take_singles(reference)
        theirs = reference.module.backbone.get_input_embeddings().weight
        mine = self.module.backbone.get_input_embeddings().weight
        old = reference.prompt_tokenizer.backend_tokenizer.get_vocab()
        unknown = old.get(reference.prompt_tokenizer.unk_token, 0)
        vectors, project = self.catalog.vectors, self.module.encoder.project
        with torch.no_grad():
            for token, i in self.prompt_tokenizer.backend_tokenizer.get_vocab().items():
                if token in old:
                    mine[i] = theirs[old[token]]
                elif vectors is not None and project is not None and token in vectors.index:
                    mine[i] = project(torch.as_tensor(vectors.loc[token].to_numpy(), dtype=mine.dtype))
                else:
                    mine[i] = theirs[unknown]

    def _frozen_parameters(self) -> list:
        """The transformer blocks (attention and feed-forward) and the final layer norm of the backbone."""
        backbone = self.module.backbone
        frozen = [*backbone.layers.parameters()]
        norm = getattr(backbone, "final_layer_norm", None)
        return frozen + ([*norm.parameters()] if norm is not None else [])

    #: memory for the key/value cache of one generation batch (``batch_size=None``): on a CPU, on a GPU
    _cache_budget_bytes = {"cpu": 256 * 2**20, "cuda": 4 * 2**30}
    #: the most cells a default generation batch holds: on a CPU, beyond it a step costs the same per cell
    _max_batch_size = {"cpu": 4096, "cuda": 65536}

    def _default_batch_size(self) -> int:
        """As many cells as keep the key/value cache of a batch within :attr:`_cache_budget_bytes` (at least 64).

        A sequence of ``M`` cells caches ``2 x layers x (prefix + N*M*K) x hidden`` numbers; the prefix is the
        longest prompt plus the condition encoder's token.
        """
        m = self.module
        device = "cuda" if m.x_mean.device.type == "cuda" else "cpu"
        tokens = m.prompt_ids.shape[1] + 1 + m.n_time_points * m.n_trajectories * m.n_space_tokens
        per_sequence = kv_cache_bytes(m.backbone.config, tokens)  # float32
        sequences = self._cache_budget_bytes[device] // max(per_sequence, 1)
        return int(min(max(sequences * m.n_trajectories, 64), self._max_batch_size[device]))

    def _describe(self) -> str:
        m, config = self.module, self.module.backbone.config
        return (
            f"CaLMFlow: N={m.n_time_points} time points x K={m.n_space_tokens} space tokens x M={m.n_trajectories} "
            f"trajectories, backbone {config.num_hidden_layers}x{config.hidden_size} ({attention_name(config)} "
            f"attention), head {m.head.mode}"
        )

    def _known_words(
        self, ids: torch.Tensor, mask: torch.Tensor, prompts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts ``[C, L]`` (tokenized ``prompts``) without the words of no training condition's prompt (re-padded on the left).

        The word embeddings of a random-init backbone are learned: a word that no prompt of a condition with
        training cells holds (a perturbation never measured, a word outside the vocabulary) has a random embedding,
        noise to the model. It is left out, with a warning; the condition encoder still reads the perturbation
        (its gene vector, when it has one).
        """
        trained = self.module.known_tokens()
        known = trained[ids] & mask.bool()  # [C, L]
        dropped = (mask.bool() & ~known).any(1)
        if bool(dropped.any()):
            # the user's own words (a word outside the vocabulary reads as [UNK] once tokenized)
            split = self.prompt_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
            words = sorted(
                {
                    word
                    for prompt in prompts
                    for word, _ in split(prompt)
                    if not trained[self.prompt_tokenizer.convert_tokens_to_ids(word)]
                }
            )
            warnings.warn(
                f"The prompt word(s) {words} are in no prompt of a training condition: their embeddings were never "
                "trained, so they are left out of the prompt.",
                ScflowlmWarning,
                stacklevel=4,
            )
        width = int(known.sum(1).max()) if len(known) else 0
        out_ids = ids.new_full((len(ids), width), self.prompt_tokenizer.pad_token_id or 0)
        out_mask = mask.new_zeros((len(ids), width))
        for i, keep in enumerate(known):
            row = ids[i][keep]
            if len(row):
                out_ids[i, width - len(row) :], out_mask[i, width - len(row) :] = row, 1
        return out_ids, out_mask

    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.prompt_tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"]  # [C, L], [C, L]

    def _sample_states(
        self,
        requests,
        rows,
        *,
        members,
        in_head_start,
        x0,
        shift,
        generators,
        temperature,
        batch_size,
        return_path,
        use_cache: bool = True,
        **kwargs,
    ) -> torch.Tensor:
        """One rollout call for all requested conditions: their prompts tokenized together."""
        if kwargs:
            raise TypeError(f"Unknown generation option(s): {sorted(kwargs)}.")
        conditions = [r.condition for r in requests]
        prompts = self.catalog.reading_prompts(
            conditions, in_head_start.numpy(), [r.prompt for r in requests]
        )
        ids, mask = self._tokenize(prompts)  # [C, L]
        if is_word_level(self.prompt_tokenizer):
            ids, mask = self._known_words(ids, mask, prompts)
        else:
            unk = self.prompt_tokenizer.unk_token_id
            for r, row in zip(requests, ids, strict=True):
                if unk is not None and bool((row == unk).any()):
                    logger.warning(
                        "Prompt %r has words outside the tokenizer vocabulary; they read as %s.",
                        r.prompt,
                        self.prompt_tokenizer.unk_token,
                    )
        return self.module.sample(
            ids,
            mask,
            rows,
            members=members,
            in_head_start=in_head_start,
            x0=x0,
            shift=shift,
            generators=generators,
            temperature=temperature,
            batch_size=batch_size,
            use_cache=use_cache,
            return_path=return_path,
        )
