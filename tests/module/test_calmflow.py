from __future__ import annotations

import pytest
import torch
from helpers import flow_data, tiny_config
from transformers import GPTNeoXModel

from scflowlm._constants import REGISTRY_KEYS
from scflowlm.module import CaLMFlowModule

IDS = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])  # two prompts, the first left-padded
MASK = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])


def make_module(data=None, **kwargs):
    """Two conditions of one field (two prompts), one context."""
    torch.manual_seed(0)
    kw = {"n_time_points": 5, "n_space_tokens": 2, "n_trajectories": 1, "n_latent": 4} | kwargs
    data = data or flow_data(prompt_ids=IDS, prompt_mask=MASK)
    return CaLMFlowModule(GPTNeoXModel(tiny_config()), 6, data, **kw).eval()


def batch(n=8):
    return {
        REGISTRY_KEYS.X_KEY: torch.randn(n, 6),
        REGISTRY_KEYS.CONDITION_KEY: torch.tensor([0, 1] * (n // 2)).view(-1, 1).float(),
        REGISTRY_KEYS.CONTEXT_KEY: torch.zeros(n, 1),
    }


@pytest.mark.parametrize("M", [1, 2])
def test_training_pass_shapes_and_finite_loss(M):
    module = make_module(n_trajectories=M).train()
    inf, gen, loss = module(batch())
    S = 8 // M
    assert inf["h"].shape == (S, 4, M, 2 * 32)
    assert gen["v_hat"].shape == (S, 4, M, 6)
    assert torch.isfinite(loss.loss)
    loss.loss.backward()
    assert module.state_tokenizer.proj[0].weight.grad is not None
    assert module.backbone.get_input_embeddings().weight.grad is not None  # the prompt is read


@pytest.mark.parametrize(("M", "rows"), [(1, [0]), (2, [0]), (1, [1]), (2, [1]), (1, [0, 1, 0])])
def test_kv_cache_matches_full_recomputation(M, rows):
    """Shared left-padded prompt ([0]), shared unpadded prompt ([1], no attention mask), one prompt per row."""
    module = make_module(n_trajectories=M)
    x0 = torch.randn(3, M, 6)
    ids, mask = module.prompt_ids[rows], module.prompt_mask[rows]
    cached = module.rollout(
        ids, mask, x0, temperature=1.0, use_cache=True, generator=torch.Generator().manual_seed(1)
    )
    full = module.rollout(
        ids, mask, x0, temperature=1.0, use_cache=False, generator=torch.Generator().manual_seed(1)
    )
    assert cached.shape == (3, 5, M, 6)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached[:, 0], x0)


@pytest.mark.parametrize(
    "rows", [[0], [1], [0, 1, 0]], ids=["padded prompt", "one prompt", "several prompts"]
)
def test_shared_prefix_decoding_matches_transformers_cached_steps(rows):
    """One token a step (K = M = 1) on a CPU runs SharedPrefixDecoder: the same path as transformers' cache and as
    the full recomputation, with a shared left-padded prompt, a shared unpadded one, and one prompt per sequence."""
    module = make_module(n_space_tokens=1)
    assert module._decodes_shared(1)
    x0 = torch.randn(3, 1, 6)
    ids, mask = module.prompt_ids[rows], module.prompt_mask[rows]

    def roll(**kwargs):
        return module.rollout(
            ids, mask, x0, temperature=1.0, generator=torch.Generator().manual_seed(1), **kwargs
        )

    shared = roll(use_cache=True)
    module.shared_prefix_decoding = False
    transformers_cache = roll(use_cache=True)
    full = roll(use_cache=False)
    torch.testing.assert_close(shared, transformers_cache, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=1e-4)


def test_prompt_changes_generation():
    module = make_module()
    x0 = torch.randn(2, 1, 6)
    a = module.rollout(module.prompt_ids[:1], module.prompt_mask[:1], x0, temperature=0.0)
    b = module.rollout(module.prompt_ids[1:], module.prompt_mask[1:], x0, temperature=0.0)
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4


def test_control_source_pairs_within_context():
    pool = torch.cat([torch.zeros(4, 6), torch.full((4, 6), 10.0)])
    data = flow_data(
        controls=[False, True],  # condition 1: the controls
        pool=pool,
        pool_context=torch.tensor([0] * 4 + [1] * 4),
        prompt_ids=IDS,
        prompt_mask=MASK,
    )
    module = make_module(data, source="control")
    x1 = torch.randn(6, 6)
    context = torch.tensor([0, 0, 1, 1, 0, 1])
    condition = torch.tensor([0, 0, 0, 0, 1, 1])
    x0 = module.draw_source(x1, condition, context)
    assert torch.equal(x0[0], torch.zeros(6))
    assert torch.equal(x0[2], torch.full((6,), 10.0))
    torch.testing.assert_close(x0[4:], x1[4:])  # controls start from themselves


def test_sample_is_independent_of_batching_and_of_other_conditions():
    """Each condition's cells come from its own generator in a fixed order: batch size and company do not matter."""
    module = make_module(n_trajectories=2)
    ids, mask = module.prompt_ids, module.prompt_mask
    rows = torch.tensor([0] * 5 + [1] * 3)

    def gens(seed=3):
        return [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)]

    together = module.sample(ids, mask, rows, generators=gens(), batch_size=64)
    small_batches = module.sample(ids, mask, rows, generators=gens(), batch_size=2)
    alone = module.sample(ids[1:], mask[1:], torch.zeros(3, dtype=torch.long), generators=gens()[:1])
    assert together.shape == (8, 6)
    torch.testing.assert_close(together, small_batches, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[5:], alone, atol=1e-5, rtol=1e-5)
    path = module.sample(ids, mask, rows, x0=torch.ones(8, 6), generators=gens(), return_path=True)
    assert path.shape == (8, 5, 6)
    torch.testing.assert_close(path[:, 0], torch.ones(8, 6))  # raw start states in, raw path out


def test_prompt_dropout_uses_the_context_free_rows_in_training_only(monkeypatch):
    # full prompts, then the head-start prompts, then the context-free ones
    ids = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9], [0, 0, 0, 3], [0, 0, 0, 6], [0, 0, 3, 5], [0, 0, 6, 9]])
    module = make_module(flow_data(prompt_ids=ids, prompt_mask=(ids > 0).long()), prompt_dropout=0.9999)
    seen = []
    real = module._prompt_cache
    monkeypatch.setattr(module, "_prompt_cache", lambda p, *a: seen.append(p.clone()) or real(p, *a))
    module.train()
    module(batch())
    assert {tuple(r) for r in seen[-1].tolist()} <= {(0, 0, 3, 5), (0, 0, 6, 9)}
    module.eval()
    module(batch())
    assert {tuple(r) for r in seen[-1].tolist()} == {(0, 3, 4, 5), (6, 7, 8, 9)}


def test_state_dict_alone_round_trips_a_trained_module():
    """Everything the module knows is in its state_dict: a fresh module of the same data object predicts the same."""
    pool = torch.randn(8, 6)
    data = flow_data(
        controls=[False, True], pool=pool, prompt_ids=IDS, prompt_mask=MASK, x_mean=torch.ones(6)
    )
    trained = make_module(data, source="control").train()
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        trained(batch())[2].loss.backward()
        optimizer.step()
    trained.eval()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    fresh = make_module(data, source="control")
    fresh.load_state_dict(state)
    rows, x0 = torch.tensor([0, 0, 1]), torch.randn(3, 6)
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    expected = trained.sample(IDS, MASK, rows, x0=x0, generators=gens)
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    torch.testing.assert_close(fresh.sample(IDS, MASK, rows, x0=x0, generators=gens), expected)
    # the data itself travels: a module built from other data takes the saved statistics and control pool
    other = make_module(flow_data(prompt_ids=IDS, prompt_mask=MASK, pool=torch.zeros(3, 6)), source="control")
    other.load_state_dict(state)
    torch.testing.assert_close(other.control_x, pool)
    torch.testing.assert_close(other.x_mean, torch.ones(6))
    assert other.condition_is_control.tolist() == [False, True]
