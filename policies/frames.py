"""Re-expressing observations and actions in a frame that removes the scene's random pose.

The environments randomise where the task sits and how it is turned; with 90 demos a network
does not learn those symmetries from absolute coordinates (measured on PassagePassing: open-loop
error on unseen scenes 5.7 / 15.7 / 22 units at steps 1 / 4 / 8 in world coordinates, 1.9 / 2.8 /
3.8 in the task frame). Every env publishes a ``StateLayout``; with it a policy can work in

- ``"world"``: absolute coordinates, untouched;
- ``"agent"``: positions relative to the agent's latest position (relative actions);
- ``"task"``: agent-centred and rotated so the task's reference direction is the x axis.

The frame is computed from the latest observation only, so it needs nothing privileged.

Yaw (envs whose pose has one): in the agent frame an action's yaw is relative to the agent's own;
in the task frame it is the target's yaw in the task frame, continued from the agent's own
task-frame yaw (the state's angle entry) by the turn to the target, so it never jumps at the
wrap. Relative yaw made policies hold whatever yaw they had drifted to: the demos' relative yaw
is ~0 wherever the expert is aligned, so a drifted ring was never turned back (ClampPassing,
DP-T from 20 Hz demos: the ring stuck 20-70 degrees off the axis in most failures). In the task
frame the demos teach "aligned is 0", which a drifted policy still heads for. Angles repeat
every ``StateLayout.angle_period`` (pi for a symmetric agent: the turn back is never more than a
quarter turn).
"""

from __future__ import annotations

import numpy as np

FRAMES = ("world", "agent", "task")


class Frame:
    """Forward and inverse maps for one batch, anchored at each sample's latest state."""

    def __init__(self, kind: str, layout: dict, latest_state: np.ndarray):
        if kind not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {kind!r}")
        self.kind, self.layout = kind, layout
        latest_state = np.asarray(latest_state, dtype=np.float64)
        batch = len(latest_state)
        self.origin = latest_state[:, :2] if kind != "world" else np.zeros((batch, 2))
        if kind == "task":
            k = layout["frame_direction"]
            self.angle = np.arctan2(latest_state[:, k + 1], latest_state[:, k])
        else:
            self.angle = np.zeros(batch)
        # Action yaws (entry 2 when the pose has one) are anchored at the agent's own yaw: an
        # offset from it (agent frame), or its task-frame yaw plus that offset (task frame); either
        # way continuous, never a jump of a period the servo would have to unwind.
        self.period = layout.get("angle_period", 2 * np.pi)
        self.yaw = latest_state[:, 2] if kind != "world" and 2 in layout["angles"] else np.zeros(batch)
        self.task_yaw = wrap_angle(self.yaw - self.angle, self.period) if kind == "task" else np.zeros(batch)
        c, s = np.cos(self.angle), np.sin(self.angle)
        self.rotation = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # world -> frame

    def _rotate(self, xy: np.ndarray, inverse: bool = False) -> np.ndarray:
        matrix = np.swapaxes(self.rotation, -1, -2) if inverse else self.rotation
        return np.einsum("bij,b...j->b...i", matrix, xy)

    def _expand(self, values: np.ndarray, like: np.ndarray) -> np.ndarray:
        return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))

    def states(self, states: np.ndarray) -> np.ndarray:
        """(B, T, D) state histories -> the same in this frame."""
        out = np.array(states, dtype=np.float64)
        origin = self.origin[:, None]
        for i in self.layout["points"]:
            out[..., i : i + 2] = self._rotate(out[..., i : i + 2] - origin)
        for i in self.layout["directions"]:
            out[..., i : i + 2] = self._rotate(out[..., i : i + 2])
        for i in self.layout["angles"]:
            out[..., i] = wrap_angle(out[..., i] - self._expand(self.angle, out[..., i]), self.period)
        return out

    def poses(self, poses: np.ndarray) -> np.ndarray:
        """(B, T, pose_dim) absolute poses (x, y[, yaw]) -> this frame."""
        out = np.array(poses, dtype=np.float64)
        out[..., :2] = self._rotate(out[..., :2] - self.origin[:, None])
        if out.shape[-1] > 2 and self.kind != "world":
            turn = wrap_angle(out[..., 2] - self._expand(self.yaw, out[..., 2]), self.period)
            out[..., 2] = self._expand(self.task_yaw, out[..., 2]) + turn
        return out

    def poses_to_world(self, poses: np.ndarray) -> np.ndarray:
        out = np.array(poses, dtype=np.float64)
        out[..., :2] = self._rotate(out[..., :2], inverse=True) + self.origin[:, None]
        if out.shape[-1] > 2 and self.kind != "world":
            turn = wrap_angle(out[..., 2] - self._expand(self.task_yaw, out[..., 2]), self.period)
            out[..., 2] = self._expand(self.yaw, out[..., 2]) + turn
        return out


def wrap_angle(angle: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    """Into [-period / 2, period / 2)."""
    return (angle + period / 2) % period - period / 2
