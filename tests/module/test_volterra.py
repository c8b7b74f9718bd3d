from __future__ import annotations

import torch

from scflowlm.module import group_trajectories, straight_path, time_grid


def test_straight_path_endpoints_and_constant_velocity():
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    t = time_grid(5)
    path = straight_path(x0, x1, t)  # [4, 5, 3]
    torch.testing.assert_close(path[:, 0], x0)
    torch.testing.assert_close(path[:, -1], x1)
    steps = (path[:, 1:] - path[:, :-1]) / 0.25
    torch.testing.assert_close(steps, (x1 - x0)[:, None].expand_as(steps))


def test_group_trajectories_same_condition_and_covers_batch():
    cond = torch.tensor([0, 1, 0, 0, 1, 2, 0])
    g = group_trajectories(cond, 2, generator=torch.Generator().manual_seed(0))
    assert g.shape[1] == 2
    assert (cond[g] == cond[g[:, :1]]).all()
    assert set(g.view(-1).tolist()) == set(range(7))
    assert torch.equal(group_trajectories(cond, 1).view(-1), torch.arange(7))
