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


@pytest.mark.parametrize("n_prompts", [1, 2])
def test_reserved_cache_from_shared_prompts_equals_the_full_pass(n_prompts):
    """Prompts cached once and gathered into reserved room (from memory a larger earlier batch used) read the same."""
    from transformers import GPTNeoXModel

    from scflowlm.nn import KVStorage, backbone_forward, new_kv_cache, reserve_kv_cache

    torch.manual_seed(0)
    net = GPTNeoXModel(tiny_config()).eval()
    prompts = torch.randn(n_prompts, 5, 32)  # [U, P, H]
    storage = KVStorage()
    for S in (6, 4):  # the second batch is smaller and reuses the first one's memory
        rows = torch.arange(S) % n_prompts  # [S]
        steps = torch.randn(S, 3, 32)  # [S, 3, H] one token a step
        with torch.no_grad():
            full = backbone_forward(net, torch.cat([prompts[rows], steps], dim=1))[:, 5:]  # [S, 3, H]
            cache = new_kv_cache()
            backbone_forward(net, prompts, cache=cache)
            reserve_kv_cache(cache, 3, rows=rows, storage=storage)
            cached = torch.cat([backbone_forward(net, steps[:, i : i + 1], cache=cache) for i in range(3)], 1)
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
        assert cache.get_seq_length() == 8
        kept = storage._tensors[(0, "keys")]
        assert kept.shape[0] == 6
        assert cache.layers[0].keys.data_ptr() == kept.data_ptr()


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_backbone_decodes_on_cpu_as_its_full_pass(padded):
    """ "sdpa" runs as scflowlm's kernel (one-query cached steps in broadcast form): same outputs, masks included."""
    from scflowlm.nn import attention_name, backbone_forward, new_kv_cache
    from scflowlm.nn._attention import SDPA_KERNEL

    torch.manual_seed(0)
    net, _ = build_backbone(tiny_config(), prompts=PROMPTS, attn_implementation="sdpa")
    net.eval()
    assert net.config._attn_implementation == SDPA_KERNEL
    assert attention_name(net.config) == "sdpa"  # the user's choice, as the model's summary shows it
    emb = torch.randn(3, 8, 32)  # [S, T, H]: a prompt of 5, then 3 steps
    mask = torch.ones(3, 8, dtype=torch.long)
    if padded:
        mask[0, :2] = 0  # left padding of the first prompt
        mask[2, :1] = 0
    with torch.no_grad():
        full = backbone_forward(net, emb, attention_mask=mask if padded else None)[:, 5:]  # [S, 3, H]
        cache = new_kv_cache()
        backbone_forward(net, emb[:, :5], attention_mask=mask[:, :5] if padded else None, cache=cache)
        steps = [
            backbone_forward(
                net, emb[:, t : t + 1], attention_mask=mask[:, : t + 1] if padded else None, cache=cache
            )
            for t in range(5, 8)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
