"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig

import scflowlm

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
TEMPLATE = "Generate a {cell_type} cell stimulated with {condition}:"
CONTROL_TEMPLATE = "Generate an unstimulated {cell_type} cell:"
HOLDOUT = {"cell_type": "NK", "condition": "IFNB+TNF"}

# tiny models: one thread avoids thread-synchronisation overhead on a shared machine (all tests)
torch.set_num_threads(1)


def tiny_config(vocab_size: int = 64) -> GPTNeoXConfig:
    """A tiny GPT-NeoX for tests (2 layers x 32)."""
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {'/'.join(parts)} is not beside the repository")
    return path


def setup(adata, **kwargs):
    """Register ``adata`` with the test templates (kwargs override)."""
    kwargs = {
        "prompt_template": TEMPLATE,
        "control_template": CONTROL_TEMPLATE,
        "perturbation_key": "condition",
        "control_value": "control",
    } | kwargs
    scflowlm.CaLMFlowModel.setup_anndata(adata, **kwargs)
    return adata


def small_model(adata, **kwargs):
    """A CaLMFlowModel small enough for a test."""
    kwargs = {
        "n_time_points": 4,
        "n_space_tokens": 2,
        "backbone": tiny_config(),
        "n_latent": 8,
        "source": "noise",
    } | kwargs
    return scflowlm.CaLMFlowModel(adata, **kwargs)


def quiet_train(model, **kwargs):
    """Train without progress bars, loggers or checkpoints (1 epoch by default)."""
    kwargs = {
        "max_epochs": 1,
        "batch_size": 32,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
    } | kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(**kwargs)
    return model


def flow_data(
    n_features: int = 6, *, n_conditions: int = 2, controls=None, pool=None, pool_context=None, **extra
):
    """A :class:`~scflowlm.module.FlowData` for module tests: one field with ``n_conditions`` values, one context.

    ``controls``: which conditions are controls; ``pool`` / ``pool_context``: raw control states and their
    contexts (default: none); ``extra``: prompts or covariates and any field to override.
    """
    from scflowlm.module import FlowData

    pool = torch.zeros(0, n_features) if pool is None else pool
    n_contexts = 1 if pool_context is None else int(pool_context.max()) + 1
    fields = {
        "condition_codes": torch.arange(n_conditions).view(-1, 1),
        "n_categories": [n_conditions],
        "condition_is_control": torch.tensor(controls or [False] * n_conditions),
        "context_codes": torch.arange(n_contexts).view(-1, 1),
        "n_context_categories": [n_contexts],
        "x_mean": torch.zeros(n_features),
        "x_scale": torch.tensor(1.0),
        "control_x": pool,
        "control_context": torch.zeros(len(pool), dtype=torch.long) if pool_context is None else pool_context,
        "condition_means": torch.zeros(n_conditions, n_features, dtype=torch.float64),
        "condition_shift": torch.zeros(n_conditions, n_features),
        # one single perturbation per perturbed condition (a control has none)
        "members": torch.tensor(
            [[-1] if c else [i] for i, c in enumerate(controls or [False] * n_conditions)]
        ),
        "in_head_start": torch.zeros(n_conditions, 1, dtype=torch.bool),
        "known_singles": torch.ones(n_conditions, dtype=torch.bool),
    }
    return FlowData(**(fields | extra))
