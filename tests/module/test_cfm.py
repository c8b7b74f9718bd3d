from __future__ import annotations

import pytest
import torch
from helpers import flow_data

from scflowlm._constants import REGISTRY_KEYS
from scflowlm.module import CFMModule, ot_permutation, sinkhorn_pairing
from scflowlm.nn import VectorFieldMLP, time_features

# two conditions in 2-D: targets N(MEANS[c], 0.3^2 I), one-hot covariates
MEANS = torch.tensor([[2.0, 0.0], [-1.0, 2.0]])
COVARIATES = torch.eye(2)


def toy_batch(n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    condition = torch.randint(2, (n,), generator=generator)  # [n]
    x = MEANS[condition] + 0.3 * torch.randn(n, 2, generator=generator)  # [n, 2]
    return {
        REGISTRY_KEYS.X_KEY: x,
        REGISTRY_KEYS.CONDITION_KEY: condition.view(-1, 1).float(),  # one field, two values
        REGISTRY_KEYS.CONTEXT_KEY: torch.zeros(n, 1),  # one context
    }


def full_covariates(module: CFMModule) -> torch.Tensor:
    """The vector field's covariates ``[C, Pc+E]`` of the module's conditions: context part and encoder output."""
    with torch.no_grad():
        return module.condition_covariates(module.covariates, module.members, module.in_head_start)


def make_module(flow: str = "ot", data=None, **kwargs) -> CFMModule:
    """Two conditions of one field with one-hot covariates, one context."""
    data = data or flow_data(2, covariates=COVARIATES)
    return CFMModule(2, data, flow=flow, n_hidden=64, n_layers=2, **kwargs)


def fit(module: CFMModule, n_steps: int = 300, batch_size: int = 128, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    module.train()
    for _ in range(n_steps):
        _, _, out = module(toy_batch(batch_size))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


@pytest.fixture(scope="module")
def trained_ot() -> CFMModule:
    module = make_module("ot")
    fit(module)
    return module


def test_vector_field_shapes():
    field = VectorFieldMLP(5, 3, n_hidden=16, n_layers=2)
    x, c = torch.randn(7, 5), torch.randn(7, 3)
    assert field(x, torch.rand(7), c).shape == (7, 5)
    assert field(x, 0.5, c).shape == (7, 5)
    assert field(x, torch.tensor(0.5), c).shape == (7, 5)
    assert time_features(torch.rand(7), 4).shape == (7, 9)
    assert VectorFieldMLP(5, 0)(x, 0.1).shape == (7, 5)


def test_module_shapes():
    module = make_module("sb")
    inf, gen, out = module(toy_batch(32))
    assert inf["x_t"].shape == (32, 2)
    assert inf["u_t"].shape == (32, 2)
    assert inf["t"].shape == (32,)
    assert inf["c"].shape == (32, 2 + 32)  # context covariates, then the condition encoder's embedding
    assert gen["v"].shape == (32, 2)
    assert out.loss.dim() == 0
    assert out.reconstruction_loss["reconstruction_loss"].shape == (32,)
    x0 = torch.randn(10, 2)
    cov = full_covariates(module)
    assert module.integrate(x0, cov[0]).shape == (2, 10, 2)
    times = torch.linspace(0, 1, 5)
    assert module.integrate(x0, cov[0].expand(10, -1), method="euler", n_steps=4, times=times).shape == (
        5,
        10,
        2,
    )
    rows = torch.tensor([0] * 6 + [1] * 4)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    members = {"members": module.members, "in_head_start": module.in_head_start}
    out = module.sample(COVARIATES, rows, **members, generators=gens, method="euler", n_steps=5)
    assert out.shape == (10, 2)
    path = module.sample(
        COVARIATES, rows, **members, x0=x0, generators=gens, method="euler", n_steps=5, return_path=True
    )
    assert path.shape == (10, 11, 2)
    torch.testing.assert_close(path[:, 0], x0)  # raw coordinates in, raw out
    assert module.training  # generation restores the mode


def test_invalid_arguments():
    with pytest.raises(ValueError, match="flow"):
        make_module(flow="bad")
    with pytest.raises(ValueError, match="sigma"):
        make_module(flow="sb", sigma=0.0)
    with pytest.raises(ValueError, match=r"needs data.covariates, the \[C, Pc\] context covariates"):
        make_module(data=flow_data(2))
    assert make_module(flow="sb").sigma == 0.5
    assert make_module(flow="ot").sigma == 0.0


def test_loss_decreases():
    module = make_module("ot")
    losses = fit(module, n_steps=100)
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("flow", ["i", "ot", "sb"])
def test_learns_conditional_shift(flow, trained_ot):
    if flow == "ot":
        module = trained_ot
    else:
        module = make_module(flow, **({"sigma": 0.2} if flow == "sb" else {}))
        fit(module, batch_size=64 if flow == "sb" else 128)  # Sinkhorn is the slow part of SB-CFM
    torch.manual_seed(1)
    for c in range(2):
        x1 = module.integrate(torch.randn(500, 2), full_covariates(module)[c], method="euler", n_steps=50)[-1]
        assert torch.allclose(x1.mean(0), MEANS[c], atol=0.25), (flow, c, x1.mean(0))
        assert 0.1 < float(x1.std(0).mean()) < 0.6


def test_ot_pairing_lowers_cost():
    torch.manual_seed(0)
    x0, x1 = torch.randn(128, 8), torch.randn(128, 8) + 1.0
    condition = torch.zeros(128, dtype=torch.long)
    random_cost = (x1 - x0).pow(2).sum(-1).mean()
    ot_cost = (x1 - make_module("ot").pair(x0, x1, condition)).pow(2).sum(-1).mean()
    sb_cost = (x1 - make_module("sb", sigma=0.5).pair(x0, x1, condition)).pow(2).sum(-1).mean()
    assert ot_cost < 0.8 * random_cost
    assert ot_cost <= sb_cost + 1e-4
    assert sb_cost < random_cost
    # I-CFM keeps the independent coupling
    assert torch.equal(make_module("i").pair(x0, x1, condition), x0)


def test_pairing_stays_within_condition():
    torch.manual_seed(0)
    condition = torch.tensor([0, 1] * 20)
    # second column tags the condition
    x0 = torch.cat([torch.zeros(40, 1), condition.view(-1, 1).float()], dim=1)
    x1 = torch.randn(40, 2)
    for flow in ("ot", "sb"):
        paired = make_module(flow).pair(x0, x1, condition)
        assert torch.equal(paired[:, 1], condition.float())


def test_sinkhorn_limits():
    torch.manual_seed(0)
    x0, x1 = torch.randn(32, 4), torch.randn(32, 4)
    # small regularisation: the sample is close to the exact OT assignment
    agree = (sinkhorn_pairing(x0, x1, 0.05) == ot_permutation(x0, x1)).float().mean()
    assert agree > 0.8
    # high dimension, regularisation far below the cost: no underflow
    idx = sinkhorn_pairing(10 * torch.randn(64, 50), 10 * torch.randn(64, 50), 0.5)
    assert idx.shape == (64,)
    assert len(torch.unique(idx)) > 48
    # huge regularisation: nearly independent pairing (sources drawn with repetition)
    assert len(torch.unique(sinkhorn_pairing(x0, x1, 1e4))) < 32


def test_sb_path_and_target():
    module = make_module("sb", sigma=0.5)
    x0, x1 = torch.zeros(4000, 2), torch.ones(4000, 2)
    t = torch.full((4000,), 0.25)
    torch.manual_seed(0)
    x_t, u_t = module.sample_path(x0, x1, t)
    # mean t x1 + (1-t) x0, std sigma sqrt(t(1-t))
    assert torch.allclose(x_t.mean(0), torch.full((2,), 0.25), atol=0.02)
    assert torch.allclose(x_t.std(0), torch.full((2,), 0.5 * (0.25 * 0.75) ** 0.5), atol=0.01)
    # u_t = (1-2t) / (2t(1-t)) (x_t - mu_t) + x1 - x0
    expected = (1 - 0.5) / (2 * 0.25 * 0.75) * (x_t - 0.25) + 1.0
    assert torch.allclose(u_t, expected, atol=1e-5)
    # I-CFM with sigma: constant noise, straight target
    x_t, u_t = make_module("i", sigma=0.1).sample_path(x0, x1, t)
    assert torch.allclose(u_t, x1 - x0)
    assert abs(float(x_t.std()) - 0.1) < 0.01


def test_dopri5_matches_euler(trained_ot):
    torch.manual_seed(2)
    x0 = torch.randn(200, 2)
    cov = full_covariates(trained_ot)[torch.randint(2, (200,))]
    adaptive = trained_ot.integrate(x0, cov, method="dopri5", rtol=1e-5, atol=1e-5)[-1]
    euler = trained_ot.integrate(x0, cov, method="euler", n_steps=400)[-1]
    assert (adaptive - euler).abs().max() < 0.05
    assert (adaptive - euler).abs().mean() < 0.01


def test_control_source_keeps_controls_and_context():
    controls = torch.cat([torch.zeros(20, 2), torch.full((20, 2), 5.0)])  # context 0 near 0, context 1 near 5
    data = flow_data(
        2,
        n_conditions=3,
        controls=[False, False, True],  # value 2: the controls
        pool=controls,
        pool_context=torch.tensor([0] * 20 + [1] * 20),
        covariates=torch.cat([COVARIATES, torch.zeros(1, 2)]),
    )
    module = make_module("ot", data=data, source="control")
    batch = toy_batch(64)
    batch[REGISTRY_KEYS.CONTEXT_KEY] = torch.randint(2, (64, 1)).float()
    batch[REGISTRY_KEYS.CONDITION_KEY][:8] = 2.0
    inputs = module._get_inference_input(batch)
    x1 = module.standardize(batch[REGISTRY_KEYS.X_KEY])
    x0 = module.draw_source(x1, inputs["condition"], inputs["context"])
    assert torch.equal(x0[:8], x1[:8])
    ctx = batch[REGISTRY_KEYS.CONTEXT_KEY].view(-1)[8:]
    assert torch.equal(x0[8:, 0], 5.0 * ctx)
    _, _, out = module(batch)
    assert torch.isfinite(out.loss)
