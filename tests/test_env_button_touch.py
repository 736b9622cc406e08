"""ButtonTouch: scene sampling, the expert, collisions, and the coarse-vs-fine calibration."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import cfbench  # noqa: F401  (registers the ids)
from cfbench.envs.button_touch import TIP_RADIUS
from policies.interpolation import upsample

ENV_ID = "cfbench/ButtonTouch-v0"


def tracker_episode(env, seed: int, source_hz: float):
    """Follow the episode's expert sampled at ``source_hz``, linearly interpolated to 20 Hz."""
    env.reset(seed=seed)
    coarse = env.unwrapped.expert_trajectory().sample(source_hz)
    fine = upsample(coarse[0], coarse[1:], source_hz, env.unwrapped.control_hz)
    for t in range(env.unwrapped.max_episode_steps):
        _, reward, terminated, truncated, info = env.step(fine[min(t, len(fine) - 1)])
        if terminated or truncated:
            return info, reward, terminated
    return info, reward, terminated


@pytest.fixture
def env():
    env = gym.make(ENV_ID)
    yield env
    env.close()


def test_scene_changes_with_seed_and_repeats_with_it(env):
    scenes = [env.reset(seed=seed)[0] for seed in (0, 1, 2, 0)]
    assert not np.allclose(scenes[0], scenes[1])
    assert not np.allclose(scenes[1], scenes[2])
    np.testing.assert_array_equal(scenes[0], scenes[3])


@pytest.mark.parametrize("seed", [20000, 20001, 20002])
def test_fine_tracker_touches_the_button(env, seed):
    info, reward, terminated = tracker_episode(env, seed, 20.0)
    assert terminated and info["is_success"] and not info["is_collision"]
    assert reward == 1.0


@pytest.mark.parametrize("seed", [20000, 20001, 20002])
def test_coarse_tracker_cuts_a_corner_into_the_wall(env, seed):
    info, reward, terminated = tracker_episode(env, seed, 2.5)
    assert terminated and info["is_collision"] and not info["is_success"]
    assert reward == 0.0


def test_expert_starts_at_the_start_pose_and_ends_on_the_button(env):
    obs, _ = env.reset(seed=7)
    trajectory = env.unwrapped.expert_trajectory()
    np.testing.assert_allclose(trajectory.poses[0], obs[:2], atol=1e-3)
    # features: button face centre, then the slot's direction into the wall at the mouth
    button = obs[2:4]
    final = trajectory.poses[-1]
    assert np.linalg.norm(final - button) < TIP_RADIUS  # the fingertip presses into the button face
    assert trajectory.duration > 1.5  # free-space motion before the precise approach


def test_driving_into_the_wall_terminates_as_collision(env):
    env.reset(seed=3)
    wall = env.unwrapped._walls[0].mean(axis=0)  # centre of the wall block beside the slot
    for _ in range(env.unwrapped.max_episode_steps):
        _, reward, terminated, truncated, info = env.step(wall)
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["is_collision"] and not info["is_success"] and reward == 0.0
    assert info["time"] < 2.0
