"""The Tracker: the benchmark's difficulty indicator, not an imitation learner.

It follows the test env's own expert trajectory, downsampled to the source rate and joined
back to the control rate by the shared interpolation helper. At 20 Hz it is the expert. Two
indicators (docs/design.md section 3):

- ``tracker``: straight lines (the paper's): at 2.5 Hz they cut the corners, which is what
  cfbench is calibrated on;
- ``tracker (smooth)`` (``--variant smooth``): the smooth curve through the same exact samples
  that did best on the validation seeds for that env and rate (``policies/rollout_choices.json``).
  A learner below it does worse than a spline through perfect waypoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cfbench.envs import state_layout
from cfbench.interface import EpisodeContext
from cfbench.tree import tree_index
from policies.base import Policy, PolicyConfig, register
from policies.chunking import angle_settings
from policies.interpolation import InterpolationConfig, upsample


@dataclass
class TrackerConfig(InterpolationConfig, PolicyConfig):
    """Linear: the paper's indicator; a smooth curve through the same samples: the smooth one."""

    #: "smooth": Akima unless the validation seeds chose another curve for the env and rate
    variants: ClassVar[dict[str, dict[str, Any]]] = {"smooth": {"interpolation": "akima"}}


@register("tracker")
class Tracker(Policy):
    config_class = TrackerConfig
    privileged = True
    trainable = False

    def __init__(self, config: TrackerConfig | None = None):
        super().__init__(config)
        self._contexts: dict[int, EpisodeContext] = {}
        self._plans: dict[int, np.ndarray | None] = {}

    def reset(self, slot: int, context: EpisodeContext) -> None:
        if context.expert is None:
            raise ValueError("the Tracker needs the episode's expert trajectory in its context")
        self._contexts[slot] = context
        self._plans[slot] = None

    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float) -> np.ndarray:
        """The whole plan in the first chunk, then hold its last pose."""
        self.check_started(slots, self._plans)
        chunks = []
        for i, slot in enumerate(slots):
            plan = self._plans[slot]
            if plan is None:
                history = None if obs_history is None else tree_index(obs_history, i)  # the Tracker needs none
                plan = self._plans[slot] = self.plan(self._contexts[slot], history, reference_hz, target_hz)
                chunks.append(plan)
            else:
                chunks.append(plan[-1:])
        length = max(len(c) for c in chunks)
        # Pad by holding the final pose so the batch is rectangular (the goal is held anyway).
        return np.stack([np.concatenate([c, np.repeat(c[-1:], length - len(c), 0)]) for c in chunks])

    def plan(self, context: EpisodeContext, obs_history, reference_hz: float, target_hz: float) -> np.ndarray:
        """The episode's target-rate poses: the expert sampled at the source rate, joined by the
        configured curve (the observations are not needed)."""
        coarse = context.expert.sample(reference_hz)
        angles = angle_settings(state_layout(context.env_id).to_dict(), coarse.shape[1])
        return upsample(coarse[0], coarse[1:], reference_hz, target_hz, self.config.interpolation, **angles)
