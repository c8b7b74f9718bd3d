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
