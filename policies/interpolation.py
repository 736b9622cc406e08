"""Executing fixed-rate action chunks at a finer control rate (paper section V).

Policies that can only emit actions at the rate they were trained on are run at the target
rate by linear interpolation between their actions. One helper, shared by every such policy.
"""

from __future__ import annotations

import numpy as np


def upsample_linear(anchor: np.ndarray, chunk: np.ndarray, source_hz: float, target_hz: float) -> np.ndarray:
    """Linearly interpolate a source-rate chunk to the target rate.

    ``anchor`` is the pose at the chunk's start time t0 and ``chunk[i]`` the target pose for
    t0 + (i + 1) / source_hz. Returns the target poses for t0 + (j + 1) / target_hz up to the
    chunk's last time, so the last returned pose is ``chunk[-1]`` whenever the rates divide.
    Works on a single chunk (n, d) with anchor (d,), or batched (B, n, d) with anchor (B, d).
    """
    if not (source_hz > 0 and target_hz > 0):
        raise ValueError(f"rates must be positive, got source {source_hz}, target {target_hz}")
    chunk = np.asarray(chunk, dtype=np.float64)
    anchor = np.asarray(anchor, dtype=np.float64)
    if chunk.ndim == 2:
        return upsample_linear(anchor[None], chunk[None], source_hz, target_hz)[0]
    if chunk.ndim != 3 or anchor.shape != (chunk.shape[0], chunk.shape[2]):
        raise ValueError(f"chunk (B, n, d) and anchor (B, d) expected, got {chunk.shape} and {anchor.shape}")
    knots = np.concatenate([anchor[:, None], chunk], axis=1)  # poses at steps 0..n of the source grid
    n_fine = int(np.floor(chunk.shape[1] * target_hz / source_hz + 1e-9))
    position = np.arange(1, n_fine + 1) * (source_hz / target_hz)  # in source steps
    left = np.minimum(np.floor(position + 1e-9).astype(int), chunk.shape[1] - 1)
    frac = (position - left)[None, :, None]
    return knots[:, left] * (1.0 - frac) + knots[:, left + 1] * frac
