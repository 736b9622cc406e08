"""Contract tests every cfbench environment must pass (Gymnasium API, determinism, bad input)."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import cfbench
from cfbench.envs import resolve_env


@pytest.mark.parametrize("obs_mode", ["state", "pixels", "pixels_state"])
def test_check_env_passes(env_name, obs_mode):
    env = gym.make(cfbench.ENV_IDS[env_name], obs_mode=obs_mode)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_make_with_module_prefix_needs_no_prior_import():
    code = "import gymnasium as gym; e = gym.make('cfbench:cfbench/PassagePassing-v0'); print(e.reset(seed=0)[0].shape)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("(")


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [(obs, 0.0, False, False, info)]
    for action in actions:
        step = env.step(action)
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


def _equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("obs_mode", ["state", "pixels_state"])
def test_same_seed_same_episode(env_name, obs_mode):
    """Identical observations, rewards, flags and infos over a whole (expert) episode."""
    env = gym.make(cfbench.ENV_IDS[env_name], obs_mode=obs_mode)
    env.reset(seed=123)
    plan = env.unwrapped.expert_trajectory().sample(env.unwrapped.control_hz)[1:]
    first = _rollout(env, 123, plan)
    _rollout(env, 999, plan[:5])  # disturb internal state in between
    second = _rollout(gym.make(cfbench.ENV_IDS[env_name], obs_mode=obs_mode), 123, plan)
    assert len(first) == len(second) > 5
    for a, b in zip(first, second):
        assert all(_equal(x, y) for x, y in zip(a, b))
    assert first[-1][4]["is_success"], "the expert executed at 20 Hz should succeed on seed 123"


def test_different_seeds_different_scenes(env_name):
    env = gym.make(cfbench.ENV_IDS[env_name])
    assert not np.array_equal(env.reset(seed=1)[0], env.reset(seed=2)[0])


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda a: a[:-1], "shape"),
        (lambda a: np.concatenate([a, a]), "shape"),
        (lambda a: a.reshape(1, -1), "shape"),
        (lambda a: np.where(np.arange(a.size) == 0, np.nan, a), "NaN"),
        (lambda a: np.where(np.arange(a.size) == 0, np.inf, a), "inf"),
    ],
)
def test_bad_actions_raise_clear_errors(env_name, bad, message):
    env = gym.make(cfbench.ENV_IDS[env_name])
    env.reset(seed=0)
    good = env.action_space.sample()
    with pytest.raises(ValueError, match=message):
        env.step(bad(good.astype(np.float64)))
    # The env is untouched by the rejected action and still usable.
    env.step(good)


def test_out_of_bounds_actions_are_clipped(env_name):
    """A target beyond the workspace drives the agent exactly as the nearest pose inside it does."""
    outcomes = []
    for scale in (10.0, 1.0):
        env = gym.make(cfbench.ENV_IDS[env_name])
        env.reset(seed=0)
        high = env.unwrapped.pose_high
        outcomes.append([np.asarray(env.step(high * scale)[0]) for _ in range(3)])
        env.close()
    for far, edge in zip(*outcomes):
        np.testing.assert_array_equal(far, edge)


def test_unknown_env_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown environment 'Pushy'"):
        resolve_env("Pushy")


def test_bad_constructor_arguments(env_name):
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make(cfbench.ENV_IDS[env_name], obs_mode="depth")
    with pytest.raises(ValueError, match="control_hz"):
        gym.make(cfbench.ENV_IDS[env_name], control_hz=0)


def test_pixel_views_and_render(env_name):
    env = gym.make(cfbench.ENV_IDS[env_name], obs_mode="pixels", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    views = env.unwrapped.views
    assert list(obs) == list(views) and views[0] == "global"
    assert len(views) == (1 if env_name == "ButtonTouch" else 2)
    for image in obs.values():
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert image.std() > 5, "a view should show the scene, not a blank image"
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 5


def test_time_limit_is_in_seconds(env_name):
    fast = gym.make(cfbench.ENV_IDS[env_name], control_hz=40).unwrapped
    slow = gym.make(cfbench.ENV_IDS[env_name], control_hz=10).unwrapped
    assert fast.max_episode_steps == 4 * slow.max_episode_steps
    env = gym.make(cfbench.ENV_IDS[env_name], control_hz=10)
    _, info = env.reset(seed=0)
    hold = info["agent_pose"]
    for _ in range(env.unwrapped.max_episode_steps):
        _, _, terminated, truncated, info = env.step(hold)
        assert not terminated
    assert truncated and not info["is_success"]


def test_human_render_mode_opens_a_window(env_name):
    env = gym.make(cfbench.ENV_IDS[env_name], render_mode="human", control_hz=200)  # SDL dummy driver in tests
    env.reset(seed=0)
    assert env.unwrapped._window is not None and env.render() is None
    env.close()


def test_observations_stay_inside_the_space_over_many_scenes(env_name):
    env = gym.make(cfbench.ENV_IDS[env_name])
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        assert env.observation_space.contains(obs), f"seed {seed}: {obs}"


def test_state_layout_describes_the_state(env_name):
    env = gym.make(cfbench.ENV_IDS[env_name])
    layout = env.unwrapped.state_layout
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert np.allclose(obs[:2], info["agent_pose"][:2])
        for i in layout.directions:
            assert np.linalg.norm(obs[i : i + 2]) == pytest.approx(1.0, abs=1e-5)
        assert layout.frame_direction in layout.directions
        assert max((*layout.points, *layout.directions)) + 1 < len(obs)


def test_control_rates_and_reset_options_that_would_mislead_are_refused(env_name):
    """control_hz=True became 1 Hz, 7 Hz a 203 Hz physics step; unknown reset options were ignored."""
    for bad, message in ((True, "must be a positive number"), (7, "must divide the physics rate 200 Hz")):
        with pytest.raises(ValueError, match=message):
            gym.make(cfbench.ENV_IDS[env_name], control_hz=bad)
    env = gym.make(cfbench.ENV_IDS[env_name])
    with pytest.raises(ValueError, match=r"unknown options \['start_pose'\]"):
        env.reset(seed=0, options={"start_pose": [0, 0]})
    env.close()


def test_act_before_reset_names_the_slot():
    import numpy as np

    import policies

    for name in ("tracker", "dp-c"):
        with pytest.raises(ValueError, match=r"act\(\) for slot 0 before reset\(0, context\)"):
            policies.make(name).act(np.zeros((1, 2, 12)), slots=[0], reference_hz=5, target_hz=20)
