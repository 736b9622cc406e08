"""PassagePassing: scene randomisation, expert, calibration on chosen seeds, wall collisions."""

import gymnasium as gym
import numpy as np
import pytest

import cfbench  # noqa: F401  (registers the ids)
from cfbench.envs.passage_passing import AGENT_HALF, CLEARANCE, N_SEGMENTS, PassagePassingEnv
from policies.interpolation import upsample

ENV_ID = "cfbench/PassagePassing-v0"


def tracker_episode(env, seed, source_hz):
    """Follow the expert sampled at ``source_hz``, linearly interpolated to the control rate."""
    env.reset(seed=seed)
    coarse = env.expert_trajectory().sample(source_hz)
    fine = upsample(coarse[0], coarse[1:], source_hz, env.control_hz)
    for t in range(env.max_episode_steps):
        _, _, terminated, truncated, info = env.step(fine[min(t, len(fine) - 1)])
        if terminated or truncated:
            break
    return info


@pytest.fixture
def env():
    return gym.make(ENV_ID).unwrapped


def test_scene_changes_with_seed(env):
    scenes = [env.reset(seed=seed)[0] for seed in range(5)]
    for a, b in zip(scenes[:-1], scenes[1:]):
        assert not np.allclose(a, b)
    width = np.array([s[2 + 2 * (N_SEGMENTS + 1)] for s in scenes])
    assert np.all(np.abs(np.diff(width)) > 0)
    clearance = width / 2 - AGENT_HALF[0]
    assert np.all((clearance >= CLEARANCE[0]) & (clearance <= CLEARANCE[1]))
    angles = [np.arctan2(s[-1], s[-2]) for s in scenes]
    assert len(set(np.round(angles, 3))) == len(angles)


def test_success_test_skips_only_poses_outside_the_goal_area(env):
    """``_is_success`` asks the exact test only inside ``_goal_circle``: the goal area (its
    corners, as it is convex) lies inside that circle with room to spare."""
    for seed in range(20):
        env.reset(seed=seed)
        cx, cy, radius2 = env._goal_circle
        distance = np.linalg.norm(env._goal_area - (cx, cy), axis=1)
        assert np.all(distance <= np.sqrt(radius2) - 0.9), (seed, distance, np.sqrt(radius2))


def test_passage_inside_world_and_agent_starts_at_entrance(env):
    for seed in range(20):
        state, _ = env.reset(seed=seed)
        corners = state[2 : 2 + 2 * (N_SEGMENTS + 1)].reshape(-1, 2)
        np.testing.assert_allclose(state[:2], corners[0], atol=1e-4)
        assert np.all(env._outline > 0) and np.all(env._outline < env.pose_high)


def test_expert_starts_at_start_pose_and_ends_in_goal(env):
    for seed in (0, 7, 20000):
        state, _ = env.reset(seed=seed)
        traj = env.expert_trajectory()
        np.testing.assert_allclose(traj(0.0), state[:2], atol=1e-3)
        env._agent.position = tuple(traj(traj.duration))
        assert env._is_success()


def test_expert_keeps_clear_of_walls(env):
    """Every expert pose leaves the agent free of all walls (pymunk's own overlap query)."""
    for seed in (1, 2, 20003):
        env.reset(seed=seed)
        shape = next(iter(env._agent.shapes))
        for pose in env.expert_trajectory().poses[::5]:
            env._agent.position = tuple(pose)
            env._space.reindex_shapes_for_body(env._agent)
            assert env._space.shape_query(shape) == []


@pytest.mark.parametrize("seed", [20000, 20001, 20002])
def test_tracker_20hz_succeeds_and_2p5hz_collides(env, seed):
    fine = tracker_episode(env, seed, 20.0)
    assert fine["is_success"] and not fine["is_collision"]
    coarse = tracker_episode(env, seed, 2.5)
    assert coarse["is_collision"] and not coarse["is_success"]


def test_driving_into_a_wall_terminates_as_collision(env):
    env.reset(seed=3)
    start = env._agent_pose()
    sideways = env._rotation @ np.array([0.0, 1.0])  # across the first segment
    for _ in range(20):
        _, reward, terminated, truncated, info = env.step(start + 40.0 * sideways)
        if terminated or truncated:
            break
    assert terminated and info["is_collision"] and not info["is_success"] and reward == 0.0
    assert info["time"] < 0.5


def test_far_target_does_not_tunnel_through_walls(env):
    """The servo's speed limit keeps a wild command from jumping the agent over a wall: it
    collides while its centre is still inside the corridor."""
    world_corners = np.array([[0.0, 0.0], [512.0, 0.0], [0.0, 512.0], [512.0, 512.0]])
    for seed in range(10):
        state, _ = env.reset(seed=seed)
        target = world_corners[np.argmax(np.linalg.norm(world_corners - state[:2], axis=1))]
        for _ in range(40):
            _, _, terminated, _, info = env.step(target)
            if terminated:
                break
        assert info["is_collision"]
        centreline = state[2 : 2 + 2 * (N_SEGMENTS + 1)].reshape(-1, 2)
        assert _distance_to_polyline(info["agent_pose"], centreline) < env._width / 2


def _distance_to_polyline(point, points):
    a, b = points[:-1], points[1:]
    t = np.clip(np.einsum("ij,ij->i", point - a, b - a) / np.einsum("ij,ij->i", b - a, b - a), 0, 1)
    return np.min(np.linalg.norm(a + t[:, None] * (b - a) - point, axis=1))


def test_pose_bounds_are_the_world():
    assert PassagePassingEnv.scene_dim == 2 * (N_SEGMENTS + 1) + 3
    np.testing.assert_array_equal(PassagePassingEnv.pose_high, [512.0, 512.0])
