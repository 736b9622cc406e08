"""Expert trajectories: a collision-free geometric path, time-parametrised by toppra.

Every environment's planner returns waypoints; this module turns them into a continuous,
time-optimal trajectory under per-axis velocity and acceleration limits. The expert moves
*through* corners (corners are rounded, never stopped at), which is what makes coarse
sampling cut them: see docs/design.md section 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import toppra
import toppra.algorithm
import toppra.constraint

from cfbench.protocol import MAX_RATE_HZ

toppra.setup_logging("WARNING")


@dataclass(frozen=True)
class ExpertTrajectory:
    """A time-parametrised pose trajectory, sampled on a fine uniform grid.

    The fine grid (``times``, ``poses``) is the trajectory: evaluating it by linear
    interpolation is exact to well under a world unit, picklable (vector envs send it
    between processes) and independent of toppra's internals.
    """

    times: np.ndarray  # (K,) seconds, times[0] == 0, times[-1] == duration
    poses: np.ndarray  # (K, pose_dim)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def __call__(self, t) -> np.ndarray:
        """Poses at times ``t`` (clipped to [0, duration])."""
        t = np.clip(np.asarray(t, dtype=np.float64), 0.0, self.duration)
        return np.stack(
            [np.interp(t, self.times, self.poses[:, d]) for d in range(self.poses.shape[1])],
            axis=-1,
        )

    def sample(self, hz: float) -> np.ndarray:
        """Poses at 0, 1/hz, 2/hz, ... up to and including the end pose."""
        if not 0 < hz <= MAX_RATE_HZ:
            raise ValueError(f"sample rate must lie in (0, {MAX_RATE_HZ:g}] Hz (the physics rate), got {hz}")
        n = int(np.ceil(self.duration * hz - 1e-9))
        return self(np.arange(n + 1) / hz)


def rounded_polyline(corners: np.ndarray, radius: float, spacing: float = 1.0) -> np.ndarray:
    """Dense 2-D points along a polyline whose interior corners are replaced by circular arcs.

    ``radius`` is clipped per corner to half the shorter adjacent segment so arcs never
    overlap. Returns points about ``spacing`` apart, first and last corner included.
    """
    corners = np.asarray(corners, dtype=np.float64)
    pieces = [corners[:1]]
    start = corners[0]
    for prev, corner, nxt in zip(corners[:-2], corners[1:-1], corners[2:]):
        d_in, d_out = corner - prev, nxt - corner
        len_in, len_out = np.linalg.norm(d_in), np.linalg.norm(d_out)
        u_in, u_out = d_in / len_in, d_out / len_out
        turn = np.arccos(np.clip(u_in @ u_out, -1.0, 1.0))
        if turn < 1e-6:
            continue
        r = min(radius, 0.5 * min(len_in, len_out) * np.tan((np.pi - turn) / 2))
        cut = r * np.tan(turn / 2)  # distance from the corner to each tangent point
        enter, leave = corner - u_in * cut, corner + u_out * cut
        pieces.append(_segment(start, enter, spacing)[1:])
        turn_sign = np.sign(u_in[0] * u_out[1] - u_in[1] * u_out[0])  # left (+) or right (-)
        normal = np.array([-u_in[1], u_in[0]]) * turn_sign
        centre = enter + normal * r
        a0 = np.arctan2(*(enter - centre)[::-1])
        a1 = np.arctan2(*(leave - centre)[::-1])
        sweep = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
        n = max(2, int(np.ceil(abs(sweep) * r / spacing)) + 1)
        angles = a0 + sweep * np.linspace(0.0, 1.0, n)
        pieces.append((centre + r * np.stack([np.cos(angles), np.sin(angles)], axis=1))[1:])
        start = leave
    pieces.append(_segment(start, corners[-1], spacing)[1:])
    return np.concatenate(pieces)


def _segment(a: np.ndarray, b: np.ndarray, spacing: float) -> np.ndarray:
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / spacing)) + 1)
    return a + (b - a) * np.linspace(0.0, 1.0, n)[:, None]


def time_parametrize(
    path: np.ndarray,
    max_velocity: np.ndarray,
    max_acceleration: np.ndarray,
    *,
    gridpoints: int = 400,
    dt: float = 0.005,
) -> ExpertTrajectory:
    """Time-optimal trajectory along ``path`` (K x dof points), starting and ending at rest.

    Raises RuntimeError when toppra finds no feasible parametrisation (it returns None).
    """
    path = _drop_repeated_points(np.asarray(path, dtype=np.float64))
    if len(path) < 2:
        raise ValueError("an expert path needs at least two distinct points")
    # Path parameter = normalised cumulative chord length: uniform speed along the geometry.
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    s[-1] = 1.0  # toppra compares the grid's ends with the path interval exactly
    geometric = toppra.SplineInterpolator(s, path)
    vmax = np.asarray(max_velocity, dtype=np.float64)
    amax = np.asarray(max_acceleration, dtype=np.float64)
    constraints = [
        toppra.constraint.JointVelocityConstraint(np.stack([-vmax, vmax], axis=1)),
        toppra.constraint.JointAccelerationConstraint(np.stack([-amax, amax], axis=1)),
    ]
    solver = toppra.algorithm.TOPPRA(
        constraints,
        geometric,
        gridpoints=np.linspace(0.0, 1.0, gridpoints),
        solver_wrapper="seidel",
        parametrizer="ParametrizeConstAccel",
    )
    trajectory = solver.compute_trajectory(0.0, 0.0)
    if trajectory is None:
        raise RuntimeError("toppra found no feasible time parametrisation for the expert path")
    duration = float(trajectory.duration)
    times = np.append(np.arange(0.0, duration, dt), duration)
    return ExpertTrajectory(times=times, poses=np.asarray(trajectory(times)))


def _drop_repeated_points(path: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    keep = np.concatenate([[True], np.linalg.norm(np.diff(path, axis=0), axis=1) > eps])
    return path[keep]
