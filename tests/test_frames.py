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
    poses[..., 2] = states[:, -1:, 2] + rng.uniform(-3, 3, (4, 16))  # turns of less than half a turn
    assert np.allclose(frame.poses_to_world(frame.poses(poses)), poses)


def test_task_frame_puts_agent_at_origin_and_task_direction_on_x():
    states = _scene(np.random.default_rng(1))
    frame = Frame("task", LAYOUT, states[:, -1])
    out = frame.states(states)
    assert np.allclose(out[:, -1, :2], 0)
    assert np.allclose(out[:, -1, 5:7], [1.0, 0.0])
    assert np.allclose(out[..., 7], states[..., 7])  # scalars untouched
    # an action holding the agent's pose: at the origin, with the agent's own task-frame yaw
    assert np.allclose(frame.poses(states[:, -1:, :3]), out[:, -1:, :3])


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


@pytest.mark.parametrize("period", [2 * np.pi, np.pi])
def test_task_frame_yaw_says_aligned_whatever_yaw_the_agent_drifted_to(period):
    """A target aligned with the task direction is 0 in the task frame for any agent yaw (a
    relative yaw would differ with the drift), and mapping 0 back turns the agent to it."""
    layout = {**LAYOUT, "angle_period": period}
    states = _scene(np.random.default_rng(3))
    task_direction = np.arctan2(states[:, -1, 6], states[:, -1, 5])
    for drift in (-0.4, 0.0, 0.4):
        drifted = states.copy()
        drifted[..., 2] = task_direction[:, None] + drift
        frame = Frame("task", layout, drifted[:, -1])
        aligned = np.concatenate([drifted[:, -1:, :2], task_direction[:, None, None]], axis=-1)
        assert np.allclose(frame.poses(aligned)[..., 2], 0)
        assert np.allclose(frame.states(drifted)[:, -1, 2], drift)
        back = frame.poses_to_world(np.zeros((4, 1, 3)))
        assert np.allclose(back[..., 2], task_direction[:, None])


def test_a_symmetric_agent_never_turns_more_than_a_quarter_turn():
    layout = {**LAYOUT, "angle_period": np.pi}
    states = _scene(np.random.default_rng(4))
    task_direction = np.arctan2(states[:, -1, 6], states[:, -1, 5])
    states[..., 2] = task_direction[:, None] + np.pi - 0.3  # half a turn round, 0.3 short of aligned
    frame = Frame("task", layout, states[:, -1])
    assert np.allclose(frame.states(states)[:, -1, 2], -0.3)  # the same ring as 0.3 short of 0
    back = frame.poses_to_world(np.zeros((4, 1, 3)))[..., 2]
    assert np.allclose(back - states[:, -1:, 2], 0.3)  # turned 0.3 on, not 0.3 - pi back
