import numpy as np
import pytest

from cfbench.envs.core import StateLayout
from policies.frames import Frame

# A ClampPassing-like state: agent (x, y, yaw), a point, a direction, a scalar.
LAYOUT = StateLayout(points=(0, 3), directions=(5,), angles=(2,), frame_direction=5).to_dict()


def _scene(rng, batch=4):
    angle = rng.uniform(-np.pi, np.pi, batch)
    state = np.concatenate([
        rng.uniform(0, 512, (batch, 2)), rng.uniform(-3, 3, (batch, 1)), rng.uniform(0, 512, (batch, 2)),
        np.stack([np.cos(angle), np.sin(angle)], 1), rng.uniform(10, 20, (batch, 1)),
    ], axis=1)
    return state[:, None].repeat(2, axis=1)  # (B, T=2, D)


@pytest.mark.parametrize("kind", ["world", "agent", "task"])
def test_poses_round_trip(kind):
    rng = np.random.default_rng(0)
    states = _scene(rng)
    frame = Frame(kind, LAYOUT, states[:, -1])
    poses = rng.uniform(0, 512, (4, 16, 3))
    assert np.allclose(frame.poses_to_world(frame.poses(poses)), poses)


def test_task_frame_puts_agent_at_origin_and_task_direction_on_x():
    states = _scene(np.random.default_rng(1))
    frame = Frame("task", LAYOUT, states[:, -1])
    out = frame.states(states)
    assert np.allclose(out[:, -1, :2], 0)
    assert np.allclose(out[:, -1, 5:7], [1.0, 0.0])
    assert np.allclose(out[..., 7], states[..., 7])  # scalars untouched
    assert np.allclose(frame.poses(states[:, -1:, :3])[..., 2], 0)  # yaw relative to the agent's own


def test_task_frame_is_invariant_to_moving_and_turning_the_whole_scene():
    rng = np.random.default_rng(2)
    states = _scene(rng)
    poses = rng.uniform(0, 512, (4, 8, 3))
    turn, shift = 0.7, np.array([31.0, -12.0])
    c, s = np.cos(turn), np.sin(turn)
    rotate = lambda xy: xy @ np.array([[c, s], [-s, c]]) + shift  # noqa: E731
    moved, moved_poses = states.copy(), poses.copy()
    for i in (0, 3):
        moved[..., i : i + 2] = rotate(states[..., i : i + 2])
    moved[..., 5:7] = states[..., 5:7] @ np.array([[c, s], [-s, c]])
    moved[..., 2] += turn
    moved_poses[..., :2] = rotate(poses[..., :2])
    moved_poses[..., 2] += turn
    a, b = Frame("task", LAYOUT, states[:, -1]), Frame("task", LAYOUT, moved[:, -1])
    assert np.allclose(a.states(states), b.states(moved))
    assert np.allclose(a.poses(poses), b.poses(moved_poses))


def test_unknown_frame_is_rejected():
    with pytest.raises(ValueError, match="frame must be one of"):
        Frame("egocentric", LAYOUT, np.zeros((1, 8)))
