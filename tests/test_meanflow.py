"""MeanFlow: the jvp total derivative, and one-step sampling of a bimodal distribution."""

import pytest
import torch
from torch import nn

from policies.meanflow import meanflow_loss, meanflow_sample, sample_times, total_derivative


class ToyVelocity(nn.Module):
    """u(z, r, t) for 2-D points: an MLP on (z, r, t - r) (no in-place operations)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, z, r, t):
        return self.net(torch.cat([z, r[:, None], (t - r)[:, None]], dim=1))


def _bimodal(n, generator):
    """Two tight clusters at (-2, 0) and (2, 0)."""
    side = torch.randint(0, 2, (n,), generator=generator) * 4.0 - 2.0
    return torch.stack([side, torch.zeros(n)], dim=1) + 0.1 * torch.randn((n, 2), generator=generator)


@pytest.mark.parametrize("sampler", ["logit-normal", "uniform"])
def test_times_are_ordered_and_a_quarter_distinct(sampler):
    r, t = sample_times(20000, torch.Generator().manual_seed(0), sampler=sampler)
    assert torch.all((0 <= r) & (r <= t) & (t < 1))
    assert abs((r < t).float().mean().item() - 0.25) < 0.01


def test_uniform_times_reach_the_one_step_jump_more_often():
    """Pairs with r < 0.1 and t > 0.9 (the jump one-step sampling makes): uniform times give
    about 2 * 0.1 * 0.1 of the distinct pairs, logit-normal ones a fraction of that."""
    def near_jump(sampler):
        r, t = sample_times(200_000, torch.Generator().manual_seed(0), distinct_share=1.0, sampler=sampler)
        return ((r < 0.1) & (t > 0.9)).float().mean().item()

    assert abs(near_jump("uniform") - 0.02) < 0.002
    assert near_jump("logit-normal") < 0.3 * near_jump("uniform")
    with pytest.raises(ValueError, match="unknown time sampler"):
        sample_times(4, torch.Generator(), sampler="beta")


def test_the_total_derivative_is_the_derivative_along_the_flow():
    """jvp with tangents (v, 0, 1) = d/ds u(z + s v, r, t + s) at s = 0 (central differences)."""
    torch.manual_seed(0)
    u = ToyVelocity().double()
    z, v = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    r, t = torch.rand(5, dtype=torch.float64) * 0.4, 0.5 + torch.rand(5, dtype=torch.float64) * 0.5
    value, derivative = total_derivative(u, z, r, t, v)
    h = 1e-6
    numeric = (u(z + h * v, r, t + h) - u(z - h * v, r, t - h)) / (2 * h)
    assert torch.allclose(value, u(z, r, t))
    assert torch.allclose(derivative, numeric, atol=1e-7)


def test_one_step_samples_cover_both_modes_and_land_on_them():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    u = ToyVelocity()
    optimizer = torch.optim.Adam(u.parameters(), lr=2e-3)
    for _ in range(2000):
        loss = meanflow_loss(u, _bimodal(256, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])

    def squared_distance_to_the_data(points):
        return (torch.cdist(points, centres).min(dim=1).values ** 2).mean().item()

    one_step = meanflow_sample(u, torch.randn((4000, 2), generator=generator), steps=1)
    assert 0.4 < (one_step[:, 0] < 0).float().mean().item() < 0.6  # both modes, in the data's proportion
    # the best single Gaussian (the data's mean and covariance) puts its samples between the modes
    gaussian = torch.randn((4000, 2), generator=generator) * _bimodal(4000, generator).std(dim=0)
    assert squared_distance_to_the_data(one_step) < 0.25 * squared_distance_to_the_data(gaussian)
    two_steps = meanflow_sample(u, torch.randn((4000, 2), generator=generator), steps=2)
    assert squared_distance_to_the_data(two_steps) < squared_distance_to_the_data(one_step)
