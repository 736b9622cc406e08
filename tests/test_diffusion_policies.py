"""DP-C, DP-T, D-Ma, E0 and CT-T on the shared machinery: learning, persistence, resumption, pixels."""

import numpy as np
import pytest
import torch

import policies
from cfbench.datasets import load_demos
from cfbench.evaluate import evaluate
from cfbench.interface import EpisodeContext

TINY = {
    "dp-c": {"down_dims": [16, 32], "step_embed_dim": 16, "n_groups": 4},
    "dp-t": {"n_layer": 1, "n_emb": 32, "n_head": 2},
    "d-ma": {"d_model": 16, "n_layer": 1, "d_state": 4},
    "e0": {"n_layer": 1, "n_emb": 32, "n_head": 2, "bins": 32, "refinement_steps": 3},
    "ct-t": {"n_layer": 1, "n_emb": 32, "n_head": 2},
}
LEARNED = list(TINY)
#: E0's cross-entropy over 32 bins falls more slowly than the others' regression losses
OVERFIT_LR = {"e0": 3e-3}


def _make(name, **overrides):
    return policies.make(name, **{**TINY[name], "batch_size": 32, "warmup_steps": 10, **overrides})


def _rollout_actions(policy, obs_history, seed=7):
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", seed, 20.0))
    return policy.act(obs_history, slots=[0], reference_hz=10.0, target_hz=20.0)


def _history(dataset, n_obs_steps):
    return np.stack([dataset.episodes[0].observations[:n_obs_steps]])


@pytest.mark.parametrize("name", LEARNED)
def test_overfitting_two_demos_drives_the_loss_down(name, two_demos):
    policy = _make(name, train_steps=300, eval_every=300, lr=OVERFIT_LR.get(name, 1e-3))
    history = policy.fit(two_demos, progress=False)
    first, last = history["losses"][0][1], history["losses"][-1][1]
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", LEARNED)
def test_save_load_round_trip_gives_identical_actions(name, two_demos, tmp_path):
    policy = _make(name, train_steps=20, eval_every=20)
    policy.fit(two_demos, progress=False)
    policy.save(tmp_path / "ckpt")
    loaded = policies.load(tmp_path / "ckpt")
    obs = _history(two_demos, policy.config.n_obs_steps)
    actions = _rollout_actions(policy, obs)
    assert actions.shape == (1, 2 * policy.config.n_action_steps, 2)  # 10 Hz chunk run at 20 Hz
    assert np.array_equal(actions, _rollout_actions(loaded, obs))
    assert not np.array_equal(actions, _rollout_actions(loaded, obs, seed=8))  # the episode seeds the noise


def test_training_is_deterministic_and_resumes_exactly(two_demos, tmp_path):
    straight = _make("dp-t", train_steps=40, eval_every=10)
    straight.fit(two_demos, validate=lambda p: 0.5, progress=False)

    calls = []

    def crash_on_third_evaluation(policy):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed at step 30: the state of step 20 is on disk
        return 0.5

    with pytest.raises(KeyboardInterrupt):
        _make("dp-t", train_steps=40, eval_every=10).fit(
            two_demos, work_dir=tmp_path, validate=crash_on_third_evaluation, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        _make("dp-t", train_steps=40, eval_every=10, lr=1.0).fit(two_demos, work_dir=tmp_path, progress=False)
    resumed = _make("dp-t", train_steps=40, eval_every=10)
    history = resumed.fit(two_demos, work_dir=tmp_path, validate=lambda p: 0.5, progress=False)
    assert [step for step, _ in history["validation"]] == [10, 20, 30, 40]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_checkpoint_selection_keeps_the_best_validated_weights(two_demos):
    policy = _make("dp-c", train_steps=30, eval_every=10)
    scores = iter([0.2, 0.9, 0.1])
    snapshots = []

    def validate(candidate):
        snapshots.append({k: v.clone() for k, v in candidate.state_dict().items()})
        return next(scores)

    history = policy.fit(two_demos, validate=validate, progress=False)
    assert history["best_step"] == 20 and history["validation"] == [[10, 0.2], [20, 0.9], [30, 0.1]]
    for key, value in policy.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


@pytest.mark.parametrize("name", LEARNED)
def test_pixel_policy_trains_one_step_and_acts(name, tmp_path):
    dataset = load_demos("PassagePassing", (5.0,), n=1, obs_mode="pixels_state", demos_dir=tmp_path)
    policy = _make(name, obs_mode="pixels_state", resnet_width=8, train_steps=1, eval_every=1, batch_size=2)
    history = policy.fit(dataset, progress=False)
    assert [step for step, _ in history["losses"]] == [1] and np.isfinite(history["losses"]).all()
    episode = dataset.episodes[0]
    obs = {"state": episode.observations["state"][None, :2],
           "pixels": {v: episode.observations["pixels"][v][None, :2] for v in policy.config.views}}
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0))
    actions = policy.act(obs, slots=[0], reference_hz=5.0, target_hz=20.0)
    assert actions.shape == (1, 4 * policy.config.n_action_steps, 2) and np.isfinite(actions).all()
    if name == "dp-c":  # the evaluator batches dict observations from a vector env
        outcome = evaluate(policy, "PassagePassing", 5.0, seeds=[20000, 20001], num_envs=2, progress=False)
        assert outcome["metrics"]["episodes"] == 2


def test_bad_configs_are_rejected():
    # string settings are checked once, from their declared choices, with one message
    for name, field, value in (("dp-c", "frame", "egocentric"), ("dp-t", "sampler", "dpm"),
                               ("d-ma", "prediction_type", "v"), ("dispo", "scan_direction", "sideways"),
                               ("e0", "detokenize", "median"), ("pf-dag", "flow_time_sampler", "beta"),
                               ("tracker", "interpolation", "bezier"), ("vq-bet", "obs_mode", "depth")):
        with pytest.raises(ValueError, match=rf"^{name}: {field}='{value}' must be one of \w"):
            policies.make(name, **{field: value})
    with pytest.raises(ValueError, match="n_action_steps"):
        policies.make("dp-t", horizon=8, n_action_steps=8)
    with pytest.raises(ValueError, match="no profile 'tpu'"):
        policies.make("dp-c", profile="tpu")
    assert policies.make("dp-c", profile="gpu").config.down_dims == (256, 512, 1024)


def test_a_window_fraction_trains_on_a_seeded_subset_of_the_windows(two_demos):
    """The rate-or-amount control: fewer windows of the same demos, the same ones for a seed."""
    full = _make("dp-t").training_windows(two_demos)["actions"]
    quarter = _make("dp-t", window_fraction=0.25).training_windows(two_demos)["actions"]
    assert len(quarter) == round(len(full) / 4)
    assert (quarter.flatten(1)[:, None] == full.flatten(1)[None]).all(-1).any(1).all()  # every kept row is one of them
    assert torch.equal(quarter, _make("dp-t", window_fraction=0.25).training_windows(two_demos)["actions"])
    assert not torch.equal(quarter, _make("dp-t", window_fraction=0.25, seed=1).training_windows(two_demos)["actions"])
    assert _make("dp-t", window_fraction=1.0).config.identity() == _make("dp-t").config.identity()  # cached runs stay
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="window_fraction"):
            _make("dp-t", window_fraction=bad)
