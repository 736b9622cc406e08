"""E0: quantisation, the Gaussian forward process on one-hots, refinement on a bimodal toy,
determinism per episode seed; the released hybrid's heads, their average, save / load."""

import numpy as np
import pytest
import torch
from torch import nn

import policies
from cfbench.interface import EpisodeContext
from policies.e0 import (
    ActionBins,
    hybrid_loss,
    hybrid_sample,
    noised_onehot,
    sample_times,
    tweedie_loss,
    tweedie_sample,
)


@pytest.mark.parametrize("spacing", ["uniform", "quantile"])
def test_quantisation_round_trip_is_within_half_a_bin(spacing):
    values = torch.cat([torch.randn(5000, 2) * torch.tensor([0.3, 2.0]), torch.full((5000, 1), 0.25)], dim=1)
    values = torch.cat([values, torch.rand(5000, 3) * 4 - 2])  # a second, uniform block of samples
    bins = ActionBins(3, 64).fit(values.reshape(-1, 3)[:, :3], spacing)
    low, high = bins.edges[:, 0], bins.edges[:, -1]
    inside = values[((values >= low) & (values <= high)).all(dim=1)]
    indices = bins.tokenize(inside)
    widths = (bins.edges[:, 1:] - bins.edges[:, :-1]).gather(1, indices.T).T
    assert ((bins.detokenize(indices) - inside).abs() <= widths / 2 + 1e-6).all()
    assert (torch.diff(bins.edges, dim=1) > 0).all()
    assert bins.tokenize(torch.tensor([[-1e3, 1e3, 0.25]])).tolist() == [[0, 63, bins.tokenize(inside)[0, 2]]]
    if spacing == "quantile":  # equal mass: no bin of the Gaussian dimension is nearly empty or crowded
        counts = torch.bincount(bins.tokenize(values)[:, 0], minlength=64)[1:-1].float()
        assert counts.max() < 2.5 * counts.mean() and counts.min() > 0.3 * counts.mean()


def test_forward_process_statistics():
    generator = torch.Generator().manual_seed(0)
    t = sample_times(200_000, 1.5, generator)
    assert 0 <= t.min() and t.max() <= 0.999
    assert abs(t.mean().item() - 0.999 * 0.4) < 0.005  # E[1 - u] = 1 - 1.5 / 2.5
    assert (t < 0.5).float().mean() > 0.6  # biased towards high noise
    indices = torch.full((20_000, 1), 3)
    times = torch.full((20_000,), 0.7)
    x = noised_onehot(indices, times, torch.randn(20_000, 1, 8, generator=generator), scale=0.5)
    assert torch.allclose(x.mean(0)[0], 0.7 * 0.5 * torch.eye(8)[3], atol=0.01)
    assert torch.allclose(x.std(0)[0], torch.full((8,), 0.3), atol=0.01)


class ToyDenoiser(nn.Module):
    def __init__(self, bins):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bins + 1, 128), nn.Mish(), nn.Linear(128, 128), nn.Mish(),
                                 nn.Linear(128, bins))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None, None].expand(-1, x.shape[1], 1)], dim=-1))


def test_bimodal_toy_samples_land_on_both_modes_and_never_between():
    torch.manual_seed(0)
    bins, modes = 32, torch.tensor([6, 25])
    net = ToyDenoiser(bins)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(600):
        data = modes[torch.randint(0, 2, (256, 1), generator=generator)]
        loss = tweedie_loss(net, data, bins, scale=1.0, beta=1.5, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        indices, _ = tweedie_sample(net, lambda: torch.randn(2000, 1, bins, generator=generator), steps=6, scale=1.0)
    share = (indices == modes[0]).float().mean().item()
    assert 0.3 < share < 0.7  # both modes, in about their proportions
    assert torch.isin(indices, modes).float().mean() > 0.98  # nothing in between


@pytest.fixture(scope="module")
def trained(two_demos):
    demos = two_demos
    policy = policies.make("e0", n_layer=1, n_emb=32, n_head=2, bins=32, batch_size=32, train_steps=20,
                           eval_every=20, warmup_steps=5, temperature=0.5)
    policy.fit(demos, progress=False)
    return policy, demos


def _chunk(policy, obs, seed):
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", seed, 20.0))
    return policy.predict_chunk(obs, [0])


def test_rollouts_are_determined_by_the_episode_seed_not_the_batch(trained):
    policy, demos = trained
    obs = np.stack([demos.episodes[0].observations[:2]])
    assert np.array_equal(_chunk(policy, obs, 3), _chunk(policy, obs, 3))
    assert not np.array_equal(_chunk(policy, obs, 3), _chunk(policy, obs, 4))
    both = np.concatenate([obs, obs])
    for slot, seed in enumerate((3, 4)):
        policy.reset(slot, EpisodeContext("cfbench/PassagePassing-v0", seed, 20.0))
    batched = policy.predict_chunk(both, [0, 1])
    np.testing.assert_allclose(batched[0], _chunk(policy, obs, 3)[0], atol=1e-5)


def test_centre_detokenising_gives_chunks_of_the_same_shape(trained):
    policy, demos = trained
    obs = np.stack([demos.episodes[0].observations[:2]])
    policy.config.detokenize = "centre"
    try:
        chunk = _chunk(policy, obs, 3)
    finally:
        policy.config.detokenize = "mean"
    assert np.isfinite(chunk).all() and chunk.shape == _chunk(policy, obs, 3).shape


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="bins=1 must be 2 or more"):
        policies.make("e0", bins=1)
    with pytest.raises(ValueError, match="bin_spacing"):
        policies.make("e0", bin_spacing="log")
    with pytest.raises(ValueError, match="detokenize"):
        policies.make("e0", detokenize="median")
    with pytest.raises(ValueError, match="heads"):
        policies.make("e0", heads="both")


def test_2048_bins_round_trip_within_half_a_bin_and_lower_edges_within_one():
    values = torch.randn(20_000, 3) * torch.tensor([0.2, 1.0, 3.0])
    bins = ActionBins(3, 2048).fit(values, "uniform")
    inside = values[((values >= bins.edges[:, 0]) & (values <= bins.edges[:, -1])).all(dim=1)]
    indices = bins.tokenize(inside)
    width = (bins.edges[:, -1] - bins.edges[:, 0]) / 2048
    assert ((bins.detokenize(indices) - inside).abs() <= width / 2 + 1e-5).all()
    below = inside - bins.detokenize(indices, lower_edges=True)
    assert (below >= -1e-5).all() and (below <= width + 1e-5).all()


class ToyHybrid(nn.Module):
    """(velocity, logits) per position from (z, noisy one-hot, t): the hybrid's heads on one trunk."""

    def __init__(self, bins):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(bins + 2, 128), nn.Mish(), nn.Linear(128, 128), nn.Mish())
        self.velocity, self.logits = nn.Linear(128, 1), nn.Linear(128, bins)

    def forward(self, z, x, t):
        hidden = self.trunk(torch.cat([z, x, t[:, None, None].expand(-1, x.shape[1], 1)], dim=-1))
        return self.velocity(hidden), self.logits(hidden)


def test_the_flow_head_alone_reproduces_a_gaussian_mixtures_mean():
    """With either re-noising; only along the training schedule does it keep the mixture's spread."""
    torch.manual_seed(0)
    bins, net = 16, ToyHybrid(16)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)

    def mixture(n):  # a quarter at -1, three quarters at +1, spread 0.1: mean 0.5
        sign = (torch.rand(n, 1, 1, generator=generator) < 0.75).float() * 2 - 1
        return sign + 0.1 * torch.randn(n, 1, 1, generator=generator)

    for _ in range(500):
        actions = mixture(256)
        indices = ((actions[..., 0] + 2) / 4 * bins).long().clamp(0, bins - 1)
        loss = hybrid_loss(net, actions, indices, bins, flow_weight=0.5, beta=1.5, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    spreads = {}
    for renoise in ("released", "schedule"):
        with torch.no_grad():
            z, _, _ = hybrid_sample(net, torch.randn(4000, 1, 1, generator=generator),
                                    lambda: torch.randn(4000, 1, bins, generator=generator), steps=10, scale=0.1,
                                    renoise=renoise)
        assert abs(z.mean().item() - 0.5) < 0.08
        spreads[renoise] = z.std().item()
    assert 0.6 < spreads["schedule"] < 1.1 and spreads["released"] < spreads["schedule"]  # the mixture's: 0.87


@pytest.fixture(scope="module")
def hybrid(two_demos):
    policy = policies.make("e0", variant="hybrid", n_layer=1, n_emb=16, n_head=2, batch_size=16, train_steps=5,
                           eval_every=5, warmup_steps=2)
    policy.fit(two_demos, progress=False)
    return policy, np.stack([two_demos.episodes[0].observations[:2]])


def test_the_hybrids_action_is_the_average_of_its_two_heads(hybrid):
    policy, obs = hybrid
    assert (policy.config.bins, policy.config.refinement_steps, policy.config.heads) == (2048, 10, "hybrid")
    chunks = {}
    for output in ("average", "flow", "discrete"):
        policy.config.hybrid_output = output
        chunks[output] = _chunk(policy, obs, 3)
    policy.config.hybrid_output = "average"
    assert not np.allclose(chunks["flow"], chunks["discrete"], atol=1e-3)
    np.testing.assert_allclose(chunks["average"], (chunks["flow"] + chunks["discrete"]) / 2, atol=1e-5)


def test_the_hybrid_is_determined_by_the_seed_and_saved_with_its_bins(hybrid, tmp_path):
    policy, obs = hybrid
    assert np.array_equal(_chunk(policy, obs, 3), _chunk(policy, obs, 3))
    assert not np.array_equal(_chunk(policy, obs, 3), _chunk(policy, obs, 4))
    policy.save(tmp_path / "hybrid")
    loaded = policies.load(tmp_path / "hybrid")
    assert loaded.config == policy.config
    assert np.array_equal(_chunk(loaded, obs, 3), _chunk(policy, obs, 3))
