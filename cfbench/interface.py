"""What the evaluator needs from a policy: the core's whole view of one.

The evaluator and the fidelity probe drive any object with this shape; they never import the
policy zoo (``policies`` implements it, the application package ``cfbench.app`` connects the
two). A policy observes and replans at ``reference_hz`` (the reference rate of its demos) and
returns target poses at the control rate ``target_hz``:

- ``reset(slot, context)`` starts a new episode in vector-env slot ``slot``;
- ``act(obs_history, slots=..., reference_hz=..., target_hz=...)`` returns, for each requested
  slot, a chunk of absolute target poses at the target rate, executed one per control step
  (an array, or a list when the slots' chunks differ in length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cfbench.expert import ExpertTrajectory


@dataclass(frozen=True)
class EpisodeContext:
    """What the evaluator tells a policy at the start of an episode."""

    env_id: str
    seed: int
    control_hz: float
    #: the test env's own expert trajectory; given only to privileged policies (the Tracker)
    expert: ExpertTrajectory | None = None


class ObservationSettings(Protocol):
    """The part of a policy's config the evaluator reads: how much history, of what."""

    #: observations given to ``act``, one reference-rate step apart (oldest first)
    n_obs_steps: int
    #: the env's obs_mode: "state", "pixels" or "pixels_state"
    obs_mode: str


@runtime_checkable
class Agent(Protocol):
    """A policy as the evaluator drives it."""

    config: ObservationSettings
    #: reference policies that read the test env's expert get it in their ``EpisodeContext``
    privileged: bool

    @property
    def name(self) -> str: ...

    def reset(self, slot: int, context: EpisodeContext) -> None: ...

    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float): ...
