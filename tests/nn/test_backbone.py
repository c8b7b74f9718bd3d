from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from scflowlm.nn import (
    build_backbone,
    select_attn_implementation,
    tokenizer_from_state,
    tokenizer_state,
    word_tokenizer,
)

PROMPTS = ["Generate a B cell stimulated with IFNB+TNF:", "Generate an unstimulated NK cell:"]


def test_word_tokenizer_splits_combinations_and_pads_left():
    tok = word_tokenizer(PROMPTS)
    ids = tok.convert_ids_to_tokens(tok("stimulated with IFNB+TNF", add_special_tokens=False)["input_ids"])
    assert ids == ["stimulated", "with", "IFNB", "+", "TNF"]
    # an unseen combination of seen words has no unknown token
    enc = tok(["Generate a NK cell stimulated with TNF+IFNB:"], add_special_tokens=False)["input_ids"][0]
    assert tok.unk_token_id not in enc
    batch = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    assert batch["attention_mask"][1, 0] == 0  # shorter prompt is padded on the left
    assert tok("Generate a Zebra cell", add_special_tokens=False)["input_ids"][2] == tok.unk_token_id


def test_tokenizer_state_roundtrip():
    tok = word_tokenizer(PROMPTS)
    again = tokenizer_from_state(tokenizer_state(tok))
    assert again(PROMPTS)["input_ids"] == tok(PROMPTS)["input_ids"]
    assert again.padding_side == "left"


def test_default_backbone_is_random_init_gpt_neox():
    net, tok = build_backbone(None, prompts=PROMPTS)
    assert net.config.hidden_size == 64  # the paper's single-cell model: 2 blocks x 64, 4 heads
    assert net.config.num_hidden_layers == 2
    assert net.config.vocab_size == len(tok)


def test_pretrained_path_loads_weights_and_tokenizer_offline(tmp_path):
    """A local directory stands in for a hub name: same from_pretrained code path."""
    from transformers import GPTNeoXModel

    config = tiny_config(vocab_size=len(word_tokenizer(PROMPTS)))
    src = GPTNeoXModel(config)
    src.save_pretrained(tmp_path)
    tok = word_tokenizer(PROMPTS)
    tok.save_pretrained(tmp_path)
    net, loaded_tok = build_backbone(str(tmp_path), prompts=[])
    for (name, a), (_, b) in zip(src.state_dict().items(), net.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert loaded_tok(PROMPTS)["input_ids"] == tok(PROMPTS)["input_ids"]


def test_attention_selection_on_cpu():
    assert select_attn_implementation("auto", device="cpu") == "sdpa"
    with pytest.raises(ValueError, match="flash-attn"):
        select_attn_implementation("flash_attention_2", device="cpu")


def test_cached_forward_equals_full_pass_without_deprecation(capfd):
    """The KV cache through the installed transformers' own argument: no deprecation warning or log line."""
    import warnings

    from transformers import GPTNeoXModel

    from scflowlm.nn import backbone_forward, new_kv_cache

    torch.manual_seed(0)
    net = GPTNeoXModel(tiny_config()).eval()
    emb = torch.randn(3, 7, 32)  # [S, T, H]
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        full = backbone_forward(net, emb)  # [S, 7, H]
        cache = new_kv_cache()
        first = backbone_forward(net, emb[:, :4], cache=cache)
        rest = backbone_forward(net, emb[:, 4:], cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == 7
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert not deprecations, [str(w.message) for w in deprecations]
    assert "deprecated" not in capfd.readouterr().err
