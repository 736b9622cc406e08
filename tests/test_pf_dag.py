"""PF-DAG: primary modes with hysteresis, training in two phases, persistence, determinism."""

import numpy as np
import pytest
import torch

import policies
from cfbench.interface import EpisodeContext
from policies.pf_dag import choose_modes

TINY = {"down_dims": [16, 32], "step_embed_dim": 16, "n_groups": 4, "n_modes": 4, "mode_steps": 30,
        "selector_hidden_dim": 32, "mode_embed_dim": 16, "batch_size": 32, "warmup_steps": 10}


@pytest.fixture(scope="module")
def trained(two_demos):
    policy = policies.make("pf-dag", **TINY, train_steps=150, eval_every=150, lr=2e-3)  # error 0.2x untrained
    history = policy.fit(two_demos, progress=False)
    return policy, history


def _chunk(policy, obs, seed=7):
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", seed, 20.0))
    return policy.predict_chunk(obs, [0])


def test_the_previous_mode_stays_unless_another_is_more_probable_by_the_margin():
    p = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    assert choose_modes(p, [None, 1, 1, 2], margin=0.15) == [0, 1, 0, 2]
    assert choose_modes(p, [None, 1, 1, 2], margin=0.0) == [0, 0, 0, 2]


def test_two_phases_modes_then_selector_and_meanflow(trained, two_demos):
    policy, history = trained
    modes, flow = history["phases"]
    assert modes["name"] == "modes" and flow["name"] == "selector + MeanFlow"
    windows = len(two_demos.windows(policy.config.n_obs_steps, policy.config.horizon).actions)
    assert sum(modes["windows_per_mode"]) == windows and modes["modes_used"] >= 2
    assert modes["quantization_mse"] < 0.1


def test_the_no_modes_variant_puts_every_chunk_in_one_mode(two_demos):
    """The decoupling's ablation: one mode, so the selector has nothing to choose."""
    tiny = {key: value for key, value in TINY.items() if key != "n_modes"}
    policy = policies.make("pf-dag", variant="no-modes", **tiny, train_steps=5, eval_every=5)
    assert policy.config.n_modes == 1
    modes, _ = policy.fit(two_demos, progress=False)["phases"]
    windows = len(two_demos.windows(policy.config.n_obs_steps, policy.config.horizon).actions)
    assert modes["windows_per_mode"] == [windows] and modes["modes_used"] == 1
    obs = np.stack([two_demos.episodes[0].observations[: policy.config.n_obs_steps]])
    assert np.isfinite(_chunk(policy, obs)).all() and policy._modes[0] == 0


def test_overfitting_two_demos_reproduces_their_chunks(trained, two_demos):
    """One MeanFlow step from a training window's observations lands near that window's chunk,
    far nearer than the same network untrained does."""
    policy, _ = trained
    c = policy.config
    windows = two_demos.windows(c.n_obs_steps, c.horizon)
    rows = np.arange(0, len(windows.actions), 7)
    target = windows.actions[rows, c.n_obs_steps - 1 :]
    untrained = policies.make("pf-dag", **TINY, seed=1)
    untrained.setup(two_demos)

    def error(p):
        chunks = np.concatenate([_chunk(p, windows.observations[i : i + 1]) for i in rows])
        return np.mean(np.linalg.norm(chunks - target, axis=-1))

    assert error(policy) < 0.3 * error(untrained)


def test_save_load_round_trip_gives_identical_actions(trained, two_demos, tmp_path):
    policy, _ = trained
    policy.save(tmp_path / "ckpt")
    loaded = policies.load(tmp_path / "ckpt")
    obs = np.stack([two_demos.episodes[0].observations[: policy.config.n_obs_steps]])
    actions = _chunk(policy, obs)
    assert actions.shape == (1, policy.config.horizon - policy.config.n_obs_steps + 1, 2)
    assert np.array_equal(actions, _chunk(loaded, obs))
    assert not np.array_equal(actions, _chunk(loaded, obs, seed=8))  # the episode seeds the noise


def test_training_is_deterministic(two_demos):
    runs = [policies.make("pf-dag", **TINY, train_steps=20, eval_every=20) for _ in range(2)]
    for run in runs:
        run.fit(two_demos, progress=False)
    for key, value in runs[0].state_dict().items():
        assert torch.equal(value, runs[1].state_dict()[key]), key


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="n_modes=0 must be 1"):
        policies.make("pf-dag", n_modes=0)
    with pytest.raises(ValueError, match="flow_distinct_share"):
        policies.make("pf-dag", flow_distinct_share=1.5)
    with pytest.raises(ValueError, match="flow_time_sampler='beta'"):
        policies.make("pf-dag", flow_time_sampler="beta")
