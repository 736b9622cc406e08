"""CT-T: time-offset queries, strided windows with their true times, rollouts without a curve.

Overfitting, the save/load round trip and pixel observations run in the shared policy tests
(tests/test_diffusion_policies.py), the config documentation in tests/test_policies.py."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import policies
from cfbench.app.commands import train_main
from cfbench.datasets import DemoDataset
from cfbench.interface import EpisodeContext

TINY = {"n_layer": 1, "n_emb": 32, "n_head": 2, "batch_size": 32, "warmup_steps": 10}


@pytest.fixture(scope="module")
def trained(two_demos):
    """Trained on 10 Hz demos, so also on their 5 and 2.5 Hz windows (strides 2 and 4)."""
    policy = policies.make("ct-t", **TINY, train_steps=150, eval_every=150)
    policy.fit(two_demos, progress=False)
    return policy


def _act(policy, dataset, reference_hz, target_hz, seeds=(7,)):
    obs = np.stack([episode.observations[: policy.config.n_obs_steps] for episode in dataset.episodes])[: len(seeds)]
    for slot, seed in enumerate(seeds):
        policy.reset(slot, EpisodeContext("cfbench/PassagePassing-v0", seed, target_hz))
    return policy.act(obs, slots=list(range(len(seeds))), reference_hz=reference_hz, target_hz=target_hz)


def test_queries_at_20_hz_offsets_agree_with_those_at_2_5_hz_where_they_meet(trained, two_demos):
    """A query's output depends on its own offset only: asked at 20 Hz, every 8th pose is the
    2.5 Hz query's. Fails if queries see each other, if noise is drawn per query, or if the
    offsets are not the times the poses are due; the poses between are the model's own."""
    coarse = _act(trained, two_demos, reference_hz=2.5, target_hz=2.5)
    fine = _act(trained, two_demos, reference_hz=2.5, target_hz=20.0)
    middle = _act(trained, two_demos, reference_hz=2.5, target_hz=5.0)
    n = trained.config.n_action_steps
    assert coarse.shape == (1, n, 2) and fine.shape == (1, 8 * n, 2) and middle.shape == (1, 2 * n, 2)
    np.testing.assert_allclose(fine[:, 7::8], coarse, atol=1e-3)
    np.testing.assert_allclose(fine[:, 3::4], middle, atol=1e-3)
    assert np.abs(fine[:, 3::8] - coarse).min(axis=-1).max() > 0.1  # halfway poses are not the coarse ones
    assert np.abs(np.diff(coarse, axis=1)).max() > 1.0  # the chunk moves


def test_training_is_deterministic_for_a_seed_and_batching_changes_no_rollout(two_demos):
    first, again, other = (policies.make("ct-t", **TINY, train_steps=20, eval_every=20, seed=seed)
                           for seed in (0, 0, 1))
    for policy in (first, again, other):
        policy.fit(two_demos, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert any(not torch.equal(value, other.state_dict()[key]) for key, value in first.state_dict().items())
    together = _act(first, two_demos, 10.0, 20.0, seeds=(7, 8))
    assert np.array_equal(together, _act(again, two_demos, 10.0, 20.0, seeds=(7, 8)))
    np.testing.assert_allclose(together[:1], _act(first, two_demos, 10.0, 20.0, seeds=(7,)), atol=1e-3)  # float order
    assert not np.array_equal(together[0], together[1])  # each episode its own noise


def test_windows_at_every_stride_carry_their_own_rate(two_demos):
    """Mixed-rate demos: each episode's windows are timed at its own rate, resampled per stride."""
    fast, slow = two_demos.episodes
    mixed = DemoDataset(two_demos.env_id, (5.0, 10.0), two_demos.obs_mode, [fast, replace(slow, source_hz=5.0)])
    policy = policies.make("ct-t", **TINY)
    data = policy.prepare(mixed)
    c = policy.config
    counts = {hz: int((data["window_hz"] == hz).sum()) for hz in data["window_hz"].unique().tolist()}
    n_fast, n_slow = len(fast.actions), len(slow.actions)
    assert counts == {10.0: n_fast, 5.0: n_fast + n_slow, 2.5: n_fast + n_slow, 1.25: n_slow}
    assert data["actions"].shape == (3 * (n_fast + n_slow), c.horizon - c.n_obs_steps + 1, 2)


@pytest.mark.parametrize(("reference_hz", "target_hz", "n_actions"), [(10.0, 20.0, 16), (2.5, 20.0, 64),
                                                                      (3.0, 20.0, 53), (10.0, 10.0, 8)])
def test_a_chunk_covers_n_action_steps_reference_steps_at_the_target_rate(trained, two_demos, reference_hz,
                                                                          target_hz, n_actions):
    actions = _act(trained, two_demos, reference_hz, target_hz)
    assert actions.shape == (1, n_actions, 2) and np.isfinite(actions).all()


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="augment_strides must name at least one stride"):
        policies.make("ct-t", augment_strides=[])
    with pytest.raises(ValueError, match=r"^ct-t: augment_strides=\(1, 0\) must be positive"):
        policies.make("ct-t", augment_strides=[1, 0])
    with pytest.raises(ValueError, match=r"^ct-t: time_scale=0 must be positive"):
        policies.make("ct-t", time_scale=0)
    with pytest.raises(ValueError, match="interpolation='akima': CT-T asks for target-rate actions itself"):
        policies.make("ct-t", interpolation="akima")
    with pytest.raises(ValueError, match=r"\['interpolation'\] are not rollout settings \(these are: n_action_steps\)"):
        policies.make("ct-t").set_rollout({"interpolation": "akima"})
    with pytest.raises(ValueError, match="n_action_steps"):
        policies.make("ct-t", horizon=8, n_action_steps=8)


def test_show_config_documents_the_time_settings_and_the_ablation(capsys):
    train_main(["--policy", "ct-t", "--show-config", "--profile", "gpu", "--variant", "no-aug"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.split("\n\ndeclared variants")[0].splitlines()[2:]}
    assert rows["augment_strides"].split()[1] == "[1]" and "DiSPo's" in rows["augment_strides"]
    assert "radians per second" in rows["time_scale"] and "no curve" in rows["interpolation"]
    assert rows["n_emb"].split()[1] == "256"  # DP-T's gpu profile
    assert "  no-aug: augment_strides=[1]" in out
