"""Protocol v2: execution is a rollout setting. Changing the curve or the actions per prediction
re-evaluates a cached model and never retrains it; the settings validation chose for a cell are
what a plain run uses, under the user's own overrides."""

import json

import numpy as np
import pytest

import policies
from cfbench.app.cache import SUMMARY, train_or_load
from cfbench.app.spec import RunSpec, Workspace
from cfbench.interface import EpisodeContext
from policies.interpolation import mean_pose, upsample
from policies.learning import LearnedPolicy
from policies.rollout import chosen_rollout, write_choices

#: the diagnostic rollout settings at their neutral values: each chunk runs whole, as predicted
UNTHINNED = {"keep_every": 1, "ensemble_knots": 0}
TINY = {"down_dims": [8, 16], "step_embed_dim": 8, "n_groups": 4, "batch_size": 8, "warmup_steps": 2,
        "train_steps": 4, "eval_every": 4}


def _train(tmp_path, **overrides):
    spec = RunSpec("dp-c", "PassagePassing", (5.0,), overrides={**TINY, **overrides}, n_demos=2, val_episodes=0)
    return train_or_load(spec, Workspace(tmp_path / "demos", tmp_path / "ckpt"), progress=False)


def test_changing_the_rollout_settings_reuses_the_checkpoint(tmp_path, monkeypatch):
    trained, summary = _train(tmp_path)
    run = next((tmp_path / "ckpt").rglob(SUMMARY)).parent

    def no_training(*args, **kwargs):
        raise AssertionError("a rollout setting must not retrain the model")

    monkeypatch.setattr(LearnedPolicy, "fit", no_training)
    other, again = _train(tmp_path, interpolation="akima", n_action_steps=4)
    assert again == summary and list((tmp_path / "ckpt").rglob(SUMMARY)) == [run / SUMMARY]
    assert (other.config.interpolation, other.config.n_action_steps) == ("akima", 4)
    saved = json.loads((run / "policy" / "config.json").read_text())
    assert (saved["interpolation"], saved["n_action_steps"]) == ("linear", 8)  # trained and selected so
    assert other.config.identity() == trained.config.identity()
    assert all(np.array_equal(v, other.state_dict()[k]) for k, v in trained.state_dict().items())


def test_a_training_setting_still_names_another_model():
    base, changed = policies.make("dp-t"), policies.make("dp-t", horizon=12)
    assert base.config.identity() != changed.config.identity()
    assert policies.make("dp-t", interpolation="pchip", n_action_steps=2).config.identity() == base.config.identity()
    # the identity is the one models were cached under before the setting existed
    assert "interpolation" not in base.config.identity() and base.config.identity()["n_action_steps"] == 8
    # DiSPo's φ_r learns from the executed chunk: there n_action_steps is a training setting
    adaptive = policies.make("dispo", step_scale_mode="adaptive")
    assert "n_action_steps" not in adaptive.config.rollout_fields()
    assert policies.make("dispo", step_scale_mode="adaptive", n_action_steps=4).config.identity() \
        != adaptive.config.identity()


def test_only_rollout_settings_change_on_a_trained_policy():
    policy = policies.make("vq-bet")
    policy.set_rollout({"interpolation": "makima", "n_action_steps": 2})
    assert policy.config.rollout() == {"n_action_steps": 2, "interpolation": "makima", **UNTHINNED}
    with pytest.raises(ValueError, match=r"\['horizon'\] are not rollout settings"):
        policies.make("dp-t").set_rollout({"horizon": 4})
    with pytest.raises(ValueError, match="n_action_steps"):
        policy.set_rollout({"n_action_steps": 9})  # more than VQ-BeT's chunk: checked like any config


def test_keeping_every_kth_action_runs_the_chunk_as_coarse_waypoints():
    """keep_every=4 of a 20 Hz chunk: the curve through its 5 Hz actions, carried across chunks."""
    rng = np.random.default_rng(0)
    policy = policies.make("dp-t", keep_every=4, interpolation="cubic", n_action_steps=8)
    policy.config.action_dim = 2
    first, second = rng.normal(size=(2, 1, 15, 2)).cumsum(axis=2)  # two predictions, one slot
    predictions = iter([first, second])
    policy.predict_chunk = lambda obs, slots: next(predictions)
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0))
    obs = rng.normal(size=(1, 2, 5))
    start = obs[:, -1, :2]
    actions = policy.act(obs, slots=[0], reference_hz=20.0, target_hz=20.0)
    np.testing.assert_allclose(actions, upsample(start, first[:, 3::4], 5, 20, "cubic", n_steps=2, past=start))
    actions = policy.act(obs, slots=[0], reference_hz=20.0, target_hz=20.0)
    np.testing.assert_allclose(actions, upsample(first[:, 7], second[:, 3::4], 5, 20, "cubic", n_steps=2,
                                                 past=first[:, 3]))
    with pytest.raises(ValueError, match="multiple of keep_every"):
        policies.make("dp-t", keep_every=3, n_action_steps=8)
    with pytest.raises(ValueError, match="keep_every=2"):
        policies.make("dispo", keep_every=2)
    assert "keep_every" not in policies.make("ct-t").config.rollout_fields()


def test_the_temporal_ensemble_runs_the_mean_of_the_knots_due_at_each_control_step():
    """5 Hz knots at 20 Hz: knot j of call k (made at control step k) is due at step k + 4 (j + 1)."""
    policy = policies.make("dp-t", ensemble_knots=2, interpolation="akima")
    policy.config.action_dim = 2
    calls = iter(range(100))

    def predict_chunk(obs, slots):  # knot j of call k sits at (100 k + j, 0)
        k = next(calls)
        return np.array([[[100.0 * k + j, 0.0] for j in range(15)]])

    policy.predict_chunk = predict_chunk
    policy.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0))
    obs = np.zeros((1, 2, 5))
    actions = [policy.act(obs, slots=[0], reference_hz=5.0, target_hz=20.0) for _ in range(9)]
    assert all(a.shape == (1, 1, 2) for a in actions)
    start = upsample(np.zeros(2), np.array([[j, 0.0] for j in range(15)]), 5, 20, "akima", n_steps=1, past=np.zeros(2))
    np.testing.assert_allclose(np.concatenate(actions[:3])[:, 0], start[:3])  # before any knot is due
    assert actions[3][0, 0, 0] == 0.0  # step 4: the first prediction's first knot
    assert actions[4][0, 0, 0] == 100.0  # step 5: the second prediction's
    assert actions[7][0, 0, 0] == (400.0 + 1.0) / 2  # step 8: call 4's first knot and call 0's second
    with pytest.raises(ValueError, match="whole multiple"):
        policy.act(obs, slots=[0], reference_hz=3.0, target_hz=20.0)
    with pytest.raises(ValueError, match="ensemble_knots=1"):
        policies.make("ct-t", ensemble_knots=1)


def test_the_mean_pose_averages_angles_round_the_circle():
    poses = np.array([[0.0, 1.0, np.pi - 0.1], [2.0, 3.0, -np.pi + 0.1]])
    mean = mean_pose(poses, angle_dims=(2,))
    np.testing.assert_allclose(mean[:2], [1.0, 2.0])
    assert abs(abs(mean[2]) - np.pi) < 1e-9


def test_the_validated_choice_is_the_default_under_the_users_overrides(tmp_path, monkeypatch):
    choices = tmp_path / "choices.json"
    entry = {"policy": "dp-t", "variant": "", "env": "PassagePassing", "source_hz": "5",
             "settings": {"interpolation": "akima", "n_action_steps": 4}, "validation_success": {}}
    smooth = {**entry, "policy": "tracker", "variant": "smooth", "settings": {"interpolation": "cubic"}}
    write_choices([entry, smooth], choices)
    assert chosen_rollout("dp-t", "", "PassagePassing", (5.0,), choices) == entry["settings"]
    assert chosen_rollout("dp-t", "", "PassagePassing", (2.5,), choices) == {}
    monkeypatch.setattr("cfbench.app.spec.chosen_rollout", lambda *args: chosen_rollout(*args, path=choices))

    def config(policy, rates, variant="", **overrides):
        return RunSpec(policy, "PassagePassing", rates, variant, overrides).make_policy().config

    assert config("dp-t", (5.0,)).rollout() == {**entry["settings"], **UNTHINNED}
    assert config("dp-t", (2.5,)).rollout() == {"n_action_steps": 8, "interpolation": "linear", **UNTHINNED}
    user = config("dp-t", (5.0,), n_action_steps=2)
    assert (user.interpolation, user.n_action_steps) == ("akima", 2)
    # the paper's execution, as a declared variant, and the smooth indicator's choice per cell
    straight = config("dp-t", (5.0,), "straight")
    assert (straight.interpolation, straight.n_action_steps) == ("linear", 8)
    assert config("tracker", (5.0,), "smooth").interpolation == "cubic"
    assert config("tracker", (10.0,), "smooth").interpolation == "akima"
    assert config("tracker", (5.0,)).interpolation == "linear"


def test_a_broken_choice_file_is_named(tmp_path):
    choices = tmp_path / "choices.json"
    choices.write_text('{"choices": [{"policy": "dp-t"}]}')
    with pytest.raises(ValueError, match="is not a rollout-choice file"):
        chosen_rollout("dp-t", "", "PassagePassing", (5.0,), choices)


def test_the_smooth_tracker_runs_through_the_exact_samples():
    """The smooth indicator's plan passes through the expert's own samples at the source rate, as
    the straight one does, and bends between them."""
    import gymnasium as gym

    from cfbench.interface import EpisodeContext

    env = gym.make("cfbench/ClampPassing-v1")
    env.reset(seed=10000)
    expert = env.unwrapped.expert_trajectory()
    env.close()
    plans = {}
    for curve in ("linear", "akima"):
        tracker = policies.make("tracker", interpolation=curve)
        tracker.reset(0, EpisodeContext("cfbench/ClampPassing-v1", 10000, 20.0, expert))
        plans[curve] = tracker.act(None, slots=[0], reference_hz=2.5, target_hz=20.0)[0]
    samples = expert.sample(2.5)[1:]
    for plan in plans.values():
        np.testing.assert_allclose(plan[7::8][: len(samples)], samples, atol=1e-9)
    assert not np.allclose(plans["linear"], plans["akima"])


def _choice_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "rollout_choice.py"
    spec = importlib.util.spec_from_file_location("rollout_choice", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_choice_search_keeps_the_default_on_ties_and_runs_each_setting_once():
    script = _choice_script()
    values = script.axes(policies.make("dp-t").config, None, None, smooth_only=False)
    assert values["n_action_steps"] == [8, 4, 2] and values["interpolation"][0] == "linear"
    assert values["ensemble_knots"] == [0, 1, 2, 4]  # the default first: it wins ties
    assert script.axes(policies.make("vq-bet").config, None, None, False)["n_action_steps"] == [5, 2]
    assert script.axes(policies.make("dp-t", n_action_steps=1).config, None, [1, 2], False)["n_action_steps"] == [1, 2]
    smooth = script.axes(policies.make("tracker", variant="smooth").config, None, None, smooth_only=True)
    assert smooth == {"interpolation": ["cubic", "cubic-clamped", "akima", "makima", "pchip"]}
    assert script.axes(policies.make("dispo").config, None, None, False) == {"n_action_steps": [8, 4, 2]}

    values = {name: values[name] for name in ("interpolation", "n_action_steps")}  # the search on two axes

    def score(settings):  # akima helps, fewer actions per prediction help with akima only
        calls.append(script.label(settings))
        return (10 if settings["interpolation"] == "akima" else 5) + (settings["n_action_steps"] < 8) * (
            settings["interpolation"] == "akima")

    calls = []
    best, table = script.search(values, score, coordinate=True)
    assert best == {"interpolation": "akima", "n_action_steps": 4}  # 4 and 2 tie: the earlier
    assert len(calls) == len(set(calls)) == 6 + 2 and set(table) == set(calls)
    calls = []
    assert script.search(values, score, coordinate=False)[0] == best and len(calls) == 18
    flat = lambda settings: 1.0  # noqa: E731  (nothing helps: the defaults stay)
    assert script.search(values, flat, coordinate=True)[0] == {"interpolation": "linear", "n_action_steps": 8}
