from __future__ import annotations

import pytest
import torch

from scflowlm.nn import VariationalHead


@pytest.mark.parametrize("mode", ["cvae", "paper", "none"])
def test_head_shapes(mode):
    head = VariationalHead(12, 5, 4, 16, mode)
    h, v = torch.randn(3, 7, 12), torch.randn(3, 7, 5)
    out, kl = head(h, v)
    assert out.shape == (3, 7, 5)
    assert kl.shape == (3, 7)
    assert (kl >= -1e-5).all()
    assert head.sample(h, temperature=0.5).shape == (3, 7, 5)


def test_temperature_zero_is_deterministic_and_scales_spread():
    torch.manual_seed(0)
    head = VariationalHead(6, 3, 4, 16, "cvae")
    h = torch.randn(1, 6).expand(2000, 6)
    g = torch.Generator().manual_seed(0)
    cold = head.sample(h, temperature=0.0, generator=g)
    assert torch.allclose(cold, cold[:1].expand_as(cold))
    warm = head.sample(h, temperature=1.0, generator=g)
    hot = head.sample(h, temperature=4.0, generator=g)
    assert warm.std(0).sum() > 0
    assert hot.std(0).sum() > warm.std(0).sum()


def test_cvae_kl_is_zero_when_posterior_equals_prior():
    head = VariationalHead(6, 3, 4, 16, "cvae")
    with torch.no_grad():
        for p in head.posterior.parameters():
            p.zero_()
        for p in head.prior.parameters():
            p.zero_()
    _, kl = head(torch.randn(5, 6), torch.randn(5, 3))
    torch.testing.assert_close(kl, torch.zeros(5))


def test_unknown_mode():
    with pytest.raises(ValueError, match="variational"):
        VariationalHead(6, 3, 4, 16, "vq")
