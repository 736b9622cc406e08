"""ClampPassing-specific behaviour: scene sampling, calibration on chosen seeds, collisions, success."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pybullet
import pytest

import cfbench  # noqa: F401  (registers the ids)
from cfbench.envs import clamp_passing
from policies.interpolation import upsample

ENV_ID = "cfbench/ClampPassing-v1"


@pytest.fixture
def env():
    env = gym.make(ENV_ID)
    yield env
    env.close()


def run_plan(env, plan):
    """Step through target poses (holding the last one) until the episode ends."""
    for t in range(env.unwrapped.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(plan[min(t, len(plan) - 1)])
        if terminated or truncated:
            break
    return obs, terminated, truncated, info


def tracker(env, seed, source_hz):
    env.reset(seed=seed)
    coarse = env.unwrapped.expert_trajectory().sample(source_hz)
    fine = upsample(coarse[0], coarse[1:], source_hz, env.unwrapped.control_hz)
    return run_plan(env, fine)


def to_world(env, axial, lateral):
    u = env.unwrapped._scene_features()[2:4]
    return env.unwrapped._scene_features()[:2] + axial * u + lateral * np.array([-u[1], u[0]])


def test_scene_changes_with_seed_and_repeats_with_it(env):
    obs = [env.reset(seed=seed)[0] for seed in (0, 1, 2, 0)]
    assert obs[0].shape == (3 + clamp_passing.ClampPassingEnv.scene_dim,)
    assert not np.allclose(obs[0], obs[1]) and not np.allclose(obs[1], obs[2])
    np.testing.assert_array_equal(obs[0], obs[3])
    length, thickness = obs[0][7], obs[0][8]
    assert clamp_passing.PIPE_LENGTH[0] <= length <= clamp_passing.PIPE_LENGTH[1]
    assert clamp_passing.PIPE_THICKNESS[0] <= thickness <= clamp_passing.PIPE_THICKNESS[1]


def test_expert_starts_at_start_pose_and_ends_past_the_far_end(env):
    obs, _ = env.reset(seed=20003)
    trajectory = env.unwrapped.expert_trajectory()
    np.testing.assert_allclose(trajectory.poses[0], obs[:3], atol=1e-6)
    np.testing.assert_allclose(trajectory(0.0), obs[:3], atol=1e-6)
    axial, lateral = env.unwrapped._pipe_frame(*trajectory.poses[-1, :2])
    length = obs[7]
    assert axial > length / 2 + clamp_passing.RING_DEPTH / 2 + clamp_passing.EXIT_MARGIN
    assert abs(lateral) < 1e-6
    # the final yaw is the pipe's axis (either way round: the ring is symmetric)
    pipe_yaw = np.arctan2(obs[6], obs[5])
    assert abs((trajectory.poses[-1, 2] - pipe_yaw + np.pi / 2) % np.pi - np.pi / 2) < 1e-6


def test_tracker_succeeds_at_20hz_and_mostly_collides_at_2p5hz(env):
    """The calibration in small: 20 Hz samples of the expert always get through, the 2.5 Hz
    chord cuts the corner into the pipe end (about 10 % get lucky over 140 seeds)."""
    fine = [tracker(env, seed, 20.0)[3] for seed in range(20)]
    assert all(info["is_success"] and not info["is_collision"] for info in fine)
    coarse = [tracker(env, seed, 2.5)[3] for seed in range(20)]
    assert sum(info["is_success"] for info in coarse) <= 4
    assert sum(info["is_collision"] for info in coarse) >= 16


def test_driving_into_the_pipe_terminates_as_collision(env):
    obs, _ = env.reset(seed=5)
    start = obs[:3].copy()
    target = np.array([*obs[3:5], start[2]])  # straight at the pipe's middle, side-on
    _, terminated, _, info = run_plan(env, [target])
    assert terminated and info["is_collision"] and not info["is_success"]
    # stopped at the first contact, well before reaching the pipe's centre line
    _, lateral = env.unwrapped._pipe_frame(*info["agent_pose"][:2])
    assert abs(lateral) > obs[8] / 2


def test_arriving_past_the_far_end_around_the_pipe_is_no_success(env):
    """Success needs the pipe to have gone through the ring, not just the final pose."""
    obs, _ = env.reset(seed=7)
    length = obs[7]
    _, start_lateral = env.unwrapped._pipe_frame(*obs[:2])
    beyond = length / 2 + 60.0  # past the success line, clear of the pipe end
    waypoints = [obs[:2], to_world(env, beyond, start_lateral), to_world(env, beyond, 0.0)]
    plan = np.concatenate(
        [np.linspace(a, b, 25) for a, b in zip(waypoints[:-1], waypoints[1:])]
    )
    plan = np.column_stack([plan, np.full(len(plan), obs[2])])
    assert np.all((plan >= env.unwrapped.pose_low) & (plan <= env.unwrapped.pose_high))
    final, terminated, truncated, info = run_plan(env, plan)
    axial, lateral = env.unwrapped._pipe_frame(*final[:2])
    assert axial > length / 2 + clamp_passing.RING_DEPTH / 2 + clamp_passing.EXIT_MARGIN
    assert abs(lateral) < 1.0
    assert truncated and not terminated and not info["is_success"] and not info["is_collision"]


def test_start_yaw_is_within_its_range_of_the_axis_either_way_round(env):
    """v1: the expert's turn to the nearer axis-aligned yaw is never close to a tie."""
    offsets = []
    for seed in range(50):
        obs, _ = env.reset(seed=seed)
        pipe_yaw = np.arctan2(obs[6], obs[5])
        offsets.append((obs[2] - pipe_yaw + np.pi / 2) % np.pi - np.pi / 2)
    offsets = np.abs(offsets)
    assert offsets.max() <= clamp_passing.START_YAW_RANGE + 1e-6
    assert offsets.max() > 0.8 * clamp_passing.START_YAW_RANGE  # the range is used, not just 0


def test_v0_is_no_longer_registered_and_gymnasium_points_to_v1():
    with pytest.raises(gym.error.DeprecatedEnv, match="Please use `cfbench/ClampPassing-v1`"):
        gym.make("cfbench/ClampPassing-v0")


def test_contact_test_is_skipped_only_where_the_ring_is_clear_of_the_pipe(env):
    """``_may_touch`` spares pybullet's test only where the ring is surely ``CONTACT_SLACK`` clear:
    at every such pose drawn around the pipe, threaded and turned near the bound included,
    pybullet finds nothing within half the slack."""
    unwrapped, rng = env.unwrapped, np.random.default_rng(0)
    near_bound = skipped = 0
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        length, half_thickness = obs[7], obs[8] / 2
        inner = half_thickness + clamp_passing.CLEARANCE
        for _ in range(500):
            axial = rng.uniform(-1.0, 1.0) * (length / 2 + unwrapped._reach + 10.0)
            threaded = rng.random() < 0.7
            lateral = rng.uniform(-1.0, 1.0) * (inner if threaded else half_thickness + unwrapped._reach + 10.0)
            turn = rng.normal(0.0, 0.15) if threaded else rng.uniform(-np.pi, np.pi)
            yaw = unwrapped._pipe_yaw + turn + rng.choice([0.0, np.pi])
            if unwrapped._may_touch(axial, lateral, yaw):
                continue
            skipped += 1
            spread = abs(lateral) + clamp_passing.RING_DEPTH / 2 * abs(np.sin(turn)) + half_thickness
            near_bound += inner * abs(np.cos(turn)) - spread < 1.5 * clamp_passing.CONTACT_SLACK
            unwrapped._pose = [*to_world(env, axial, lateral), yaw]
            unwrapped._place_agent()
            assert not pybullet.getClosestPoints(unwrapped._agent, unwrapped._pipe, clamp_passing.CONTACT_SLACK / 2,
                                                 physicsClientId=unwrapped._client), (seed, axial, lateral, turn)
    assert skipped > 300 and near_bound > 100, (skipped, near_bound)
