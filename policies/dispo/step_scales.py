"""DiSPo's step-scale arithmetic: the factor r that stretches each token's SSM step.

r = 1 is one step of the reference rate ω_ref; a token at rate ω gets r = ω_ref / ω. A sequence
holds its observations and past actions one source step apart and its current and future actions
``finer`` times denser, as many as cover the training-rate chunk, so its step scales are:

- relative (``relative_step_scales``): 1 per observation and past action, 1/finer per current
  and future action;
- of training windows (``window_step_scales``): those times each window's observation step
  scale r_o = ω_ref / ω of its own rate;
- at rollout (``rollout_step_scales``): those times ω_ref / ω_source.

With adaptive step scales φ_r predicts the action tokens' r_a instead, and each chunk gets the
whole number of actions per source step nearest to it (``whole_actions_per_step``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cfbench.datasets import Windows
from policies.interpolation import rate_multiple

#: what a DiSPo rate that is no whole multiple is refused for
DISPO_RATES = "DiSPo (it emits target_hz / source_hz actions per source step)"


def relative_step_scales(config, finer: int) -> np.ndarray:
    """Step scales relative to one source step, (T_o + T_o - 1 + n_future * finer,)."""
    n_future = (config.horizon - config.n_obs_steps + 1) * finer
    return np.concatenate([np.ones(2 * config.n_obs_steps - 1), np.full(n_future, 1.0 / finer)])


def window_step_scales(config, windows: Windows, finer: int) -> torch.Tensor:
    """Step scales of training windows whose future actions are ``finer`` per observation step,
    (len(windows), tokens): the relative ones times each window's r_o."""
    observation_scales = config.reference_hz / windows.source_hz
    return torch.as_tensor(observation_scales[:, None] * relative_step_scales(config, finer)[None],
                           dtype=torch.float32)


def rollout_step_scales(config, source_hz: float, target_hz: float) -> torch.Tensor:
    """The step scales of a rollout's sequence, (tokens,): observations and past actions
    ``source_hz`` apart (r_o = ω_ref / ω_source), current and future actions ``target_hz`` apart."""
    finer = rate_multiple(source_hz, target_hz, DISPO_RATES)
    scales = relative_step_scales(config, finer) * (config.reference_hz / source_hz)
    return torch.as_tensor(scales, dtype=torch.float32)


def whole_actions_per_step(source_scale: float, action_scales: np.ndarray, finer: int,
                           max_speedup: float) -> np.ndarray:
    """Actions per source step of chunks at the action step scales r_a (one per chunk): the source
    step's r_o / r_a rounded, between the target rate's ``finer`` and ``max_speedup`` times fewer."""
    wanted = np.round(source_scale / action_scales)
    return np.clip(wanted, math.ceil(finer / max_speedup - 1e-9), finer).astype(int)
