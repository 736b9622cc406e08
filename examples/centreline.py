"""A policy of your own, in one file, evaluated and ranked without editing cfbench.

It drives PassagePassing along the passage's centre line, which the state observation gives
(the agent's centre, then the 6 centre-line corners, entrance first), at a constant speed: no
demos, no training, no torch. From the repository root:

    cfbench-eval --policy-module examples.centreline --policy centreline --source-hz 2.5
    cfbench-leaderboard --submit runs/results/PassagePassing__centreline__2.5hz__to20hz__seeds20000-20100__train0.json

``--policy-module`` imports a module (the current folder first, as ``python -m`` does) whose
classes register themselves with ``@policies.register``. A package of your own can instead name
its module under the ``cfbench.policies`` entry-point group (``[project.entry-points."cfbench.policies"]
centreline = "mypkg.centreline"`` in its pyproject.toml): installed, its policy is known to every
command, ``cfbench-leaderboard --verify`` included. What the evaluator gives and expects is
``cfbench.interface``; a learning policy also implements ``fit`` (``policies/base.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import policies


@dataclass
class CentrelineConfig(policies.PolicyConfig):
    #: speed along the centre line, in world units per second
    speed: float = 100.0
    #: how far to go on past the exit corner, into the goal area beyond the exit line
    overshoot: float = 25.0

    LIMITS: ClassVar[dict[str, str]] = {"speed": "positive", "overshoot": "non-negative"}


@policies.register("centreline")
class Centreline(policies.Policy):
    config_class = CentrelineConfig
    trainable = False  # it needs no demos

    def __init__(self, config: CentrelineConfig | None = None):
        super().__init__(config)
        self.plans: dict[int, np.ndarray | None] = {}

    def reset(self, slot, context):
        if context.env_id != "cfbench/PassagePassing-v0":
            raise ValueError(f"centreline drives PassagePassing, not {context.env_id}")
        self.plans[slot] = None

    def act(self, obs_history, *, slots, reference_hz, target_hz):
        """The whole path in the first chunk, one target per control step; then hold its end."""
        self.check_started(slots, self.plans)
        chunks = []
        for slot, history in zip(slots, obs_history):
            if self.plans[slot] is None:
                self.plans[slot] = self.plan(history[-1], target_hz)
                chunks.append(self.plans[slot])
            else:
                chunks.append(self.plans[slot][-1:])
        return chunks  # chunks of different lengths: a list

    def plan(self, state: np.ndarray, control_hz: float) -> np.ndarray:
        """Targets every ``speed / control_hz`` units along agent -> corners -> past the exit."""
        corners = np.concatenate([state[:2][None], state[2:14].reshape(6, 2)])
        exit_direction = corners[-1] - corners[-2]
        goal = corners[-1] + self.config.overshoot * exit_direction / np.linalg.norm(exit_direction)
        path = np.concatenate([corners, goal[None]])
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
        steps = np.append(np.arange(self.config.speed / control_hz, along[-1], self.config.speed / control_hz),
                          along[-1])
        return np.stack([np.interp(steps, along, path[:, axis]) for axis in range(2)], axis=1)
