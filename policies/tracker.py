"""The Tracker: the benchmark's difficulty indicator, not an imitation learner.

It follows the test env's own expert trajectory, downsampled to the source rate and linearly
interpolated back to the control rate with the shared helper. At 20 Hz it is the expert; at
2.5 Hz its straight lines cut the corners, which is exactly what cfbench is calibrated on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import EpisodeContext, Policy, PolicyConfig, register
from policies.interpolation import upsample_linear


@dataclass
class TrackerConfig(PolicyConfig):
    pass


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

    def act(self, obs_history, *, slots: list[int], source_hz: float, target_hz: float) -> np.ndarray:
        """The whole plan in the first chunk (it ignores observations), then hold its last pose."""
        chunks = []
        for slot in slots:
            plan = self._plans[slot]
            if plan is None:
                coarse = self._contexts[slot].expert.sample(source_hz)
                plan = upsample_linear(coarse[0], coarse[1:], source_hz, target_hz)
                self._plans[slot] = plan
                chunks.append(plan)
            else:
                chunks.append(plan[-1:])
        length = max(len(c) for c in chunks)
        # Pad by holding the final pose so the batch is rectangular (the goal is held anyway).
        return np.stack([np.concatenate([c, np.repeat(c[-1:], length - len(c), 0)]) for c in chunks])
