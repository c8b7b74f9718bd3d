from __future__ import annotations

import torch

from scflowlm.nn import SpatioTemporalTokenizer


def test_shapes_and_order_time_trajectory_space():
    S, N, M, D, K, H = 2, 3, 2, 5, 4, 8
    tok = SpatioTemporalTokenizer(D, H, K, N)
    states = torch.randn(S, N, M, D)
    out = tok(states)
    assert out.shape == (S, N * M * K, H)
    # token (t, m, k) sits at position (t * M + m) * K + k and depends only on states[:, t, m]
    perturbed = states.clone()
    perturbed[:, 1, 0] += 1.0
    diff = (tok(perturbed) - out).abs().sum(-1)[0]  # [N*M*K]
    changed = torch.nonzero(diff > 1e-6).view(-1).tolist()
    assert changed == [(1 * M + 0) * K + k for k in range(K)]


def test_time_index_offsets_embedding():
    tok = SpatioTemporalTokenizer(3, 8, 2, 4)
    states = torch.randn(1, 4, 1, 3)
    full = tok(states)  # [1, 4*2, 8]
    step2 = tok(states[:, 2:3], time_index=2)  # [1, 2, 8]
    torch.testing.assert_close(full[:, 4:6], step2)


def test_space_tokens_differ():
    tok = SpatioTemporalTokenizer(3, 8, 3, 2)
    out = tok(torch.randn(1, 1, 1, 3)).view(3, 8)
    assert (out[0] - out[1]).abs().sum() > 0
