"""Executing fixed-rate action chunks at a finer control rate (paper section V, protocol v2).

Policies that can only emit actions at the rate they were trained on, and the Tracker, are run
at the target rate by a curve through their actions. The paper joins them with straight lines;
no practitioner stops there, so protocol v2 makes the curve a rollout setting, chosen per env
and rate on the validation seeds. One function, shared by every such policy:

- ``linear``: straight lines between the knots (the paper);
- ``cubic``: scipy's ``CubicSpline`` with the not-a-knot end condition (reproduces any cubic
  exactly; on two knots a straight line);
- ``cubic-clamped``: ``CubicSpline`` with zero velocity at both ends, right for a whole path
  from rest to rest (the Tracker's plan), not for chunks that run on;
- ``akima`` and ``makima``: ``Akima1DInterpolator`` (plain, and the modified one that does not
  overshoot on flat stretches): local, so a far knot cannot bend the near curve;
- ``pchip``: ``PchipInterpolator``, shape-preserving (monotone between monotone knots).

Knots are the pose one source step before the anchor (``past``, when known: the curve keeps
its heading across chunks), the anchor itself and every action of the chunk; only the first
``n_steps`` source steps are returned, so the unexecuted tail shapes the curve's end. Angles
(ClampPassing's yaw) are unwrapped along the knots first, so a curve never swings the long way
round a period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.interpolate import Akima1DInterpolator, CubicSpline, PchipInterpolator

INTERPOLANTS = ("linear", "cubic", "cubic-clamped", "akima", "makima", "pchip")
#: the smooth ones: the candidates of the smooth indicator, ``tracker (smooth)``
SMOOTH_INTERPOLANTS = INTERPOLANTS[1:]


def check_interpolant(name: str) -> str:
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolation {name!r}; choose one of {', '.join(INTERPOLANTS)}")
    return name


@dataclass
class InterpolationConfig:
    """The curve setting of every policy that runs source-rate actions at the target rate (the
    fixed-rate learners and the Tracker). A config lists it before its other bases."""

    #: the curve through the source-rate actions at the target rate: "linear" (the paper), "cubic",
    #: "cubic-clamped", "akima", "makima" or "pchip" (policies/interpolation.py; a rollout setting,
    #: chosen per env and rate on the validation seeds)
    interpolation: str = "linear"

    ROLLOUT: ClassVar[tuple[str, ...]] = ("interpolation",)
    NEUTRAL: ClassVar[dict[str, Any]] = {"interpolation": "linear"}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"interpolation": INTERPOLANTS}


def rate_multiple(source_hz: float, target_hz: float, what: str) -> int:
    """Target-rate steps per source step, target_hz / source_hz, which ``what`` (named in the
    error) needs to be a whole number >= 1: its source-rate steps must land on control steps."""
    finer = target_hz / source_hz
    if finer < 1 or abs(finer - round(finer)) > 1e-9:
        raise ValueError(f"{what} needs target_hz / source_hz to be a whole number >= 1 (a control rate that is a "
                         f"whole multiple of the source rate); {target_hz:g} / {source_hz:g} Hz is not")
    return round(finer)


def _curve(method: str, times: np.ndarray, knots: np.ndarray):
    """The scipy interpolant through ``knots`` (B, k, d) at ``times`` (k,), along axis 1."""
    if method == "cubic":
        return CubicSpline(times, knots, axis=1, bc_type="not-a-knot")
    if method == "cubic-clamped":
        return CubicSpline(times, knots, axis=1, bc_type="clamped")
    if method in ("akima", "makima"):
        return Akima1DInterpolator(times, knots, axis=1, method=method)
    return PchipInterpolator(times, knots, axis=1)


def upsample(
    anchor: np.ndarray,
    chunk: np.ndarray,
    source_hz: float,
    target_hz: float,
    method: str = "linear",
    *,
    n_steps: int | None = None,
    past: np.ndarray | None = None,
    angle_dims: tuple[int, ...] = (),
    angle_period: float = 2 * np.pi,
) -> np.ndarray:
    """A source-rate chunk as target-rate poses along the chosen curve.

    ``anchor`` is the pose at the chunk's start time t0 and ``chunk[i]`` the target pose for
    t0 + (i + 1) / source_hz; ``past`` (optional) the pose at t0 - 1 / source_hz. Returns the
    target poses for t0 + (j + 1) / target_hz up to t0 + n_steps / source_hz (``n_steps``
    defaults to the whole chunk), so the last one is ``chunk[n_steps - 1]`` whenever the rates
    divide. Works on one chunk (n, d) with anchor (d,), or batched (B, n, d) with anchor (B, d).
    """
    check_interpolant(method)
    if not (source_hz > 0 and target_hz > 0):
        raise ValueError(f"rates must be positive, got source {source_hz}, target {target_hz}")
    chunk = np.asarray(chunk, dtype=np.float64)
    anchor = np.asarray(anchor, dtype=np.float64)
    if chunk.ndim == 2:
        single_past = None if past is None else np.asarray(past, dtype=np.float64)[None]
        return upsample(anchor[None], chunk[None], source_hz, target_hz, method, n_steps=n_steps, past=single_past,
                        angle_dims=angle_dims, angle_period=angle_period)[0]
    if chunk.ndim != 3 or chunk.shape[1] == 0 or anchor.shape != (chunk.shape[0], chunk.shape[2]):
        raise ValueError(f"chunk (B, n >= 1, d) and anchor (B, d) expected, got {chunk.shape} and {anchor.shape}")
    n_steps = chunk.shape[1] if n_steps is None else n_steps
    if not 1 <= n_steps <= chunk.shape[1]:
        raise ValueError(f"n_steps={n_steps} must lie in 1..{chunk.shape[1]} (the chunk's length)")
    knots = np.concatenate([anchor[:, None], chunk], axis=1)  # poses at steps 0..n of the source grid
    first = 0
    if past is not None and method != "linear":
        past = np.asarray(past, dtype=np.float64)
        if past.shape != anchor.shape:
            raise ValueError(f"past poses {past.shape} must match the anchors {anchor.shape}")
        knots, first = np.concatenate([past[:, None], knots], axis=1), -1
    if angle_dims:
        knots[..., list(angle_dims)] = np.unwrap(knots[..., list(angle_dims)], axis=1, period=angle_period)
    n_fine = int(np.floor(n_steps * target_hz / source_hz + 1e-9))
    position = np.arange(1, n_fine + 1) * (source_hz / target_hz)  # in source steps after the anchor
    if method == "linear":  # the paper's helper, to the last bit (straight-line records reproduce)
        offset = -first
        left = np.minimum(np.floor(position + 1e-9).astype(int), n_steps - 1)
        frac = (position - left)[None, :, None]
        return knots[:, offset + left] * (1.0 - frac) + knots[:, offset + left + 1] * frac
    times = np.arange(first, chunk.shape[1] + 1, dtype=np.float64)
    return _curve(method, times, knots)(position)


def mean_pose(poses: np.ndarray, *, angle_dims: tuple[int, ...] = (), angle_period: float = 2 * np.pi) -> np.ndarray:
    """The mean of poses (k, d) along the first axis; angles by their circular mean, so two
    headings either side of the period's edge average to the edge, not to the opposite side."""
    poses = np.asarray(poses, dtype=np.float64)
    mean = poses.mean(axis=0)
    for dim in angle_dims:
        phase = poses[:, dim] * (2 * np.pi / angle_period)
        mean[dim] = np.arctan2(np.sin(phase).mean(), np.cos(phase).mean()) * (angle_period / (2 * np.pi))
    return mean
