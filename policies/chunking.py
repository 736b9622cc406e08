"""What every action-chunking policy shares (Diffusion Policy, D-Ma, DiSPo, VQ-BeT).

Such a policy predicts, from ``n_obs_steps`` observations one source step apart, a chunk of
absolute poses at the source rate, executes ``n_action_steps`` of them (receding horizon) and
runs them at the target rate along the curve its ``interpolation`` names (the shared helper of
``policies/interpolation.py``; both are rollout settings, see ``PolicyConfig.ROLLOUT``; DiSPo
emits target-rate actions itself and has no curve). Its network sees
states and poses in one of the frames of ``policies/frames.py``; its model has an
``obs_encoder`` (state normaliser, optional pixel encoders) and an ``action_normalizer``.
Subclasses say how a chunk is predicted (``predict_chunk``) and how they learn.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from cfbench.interface import EpisodeContext
from cfbench.protocol import mix_seed
from cfbench.tree import state_of
from policies.frames import FRAMES, Frame
from policies.interpolation import InterpolationConfig, mean_pose, rate_multiple, upsample
from policies.learning import LearnedConfig, LearnedPolicy


@dataclass
class ChunkConfig(InterpolationConfig, LearnedConfig):
    #: observations per prediction, one source step apart (Diffusion Policy's T_o = 2)
    n_obs_steps: int = 2
    #: actions of each predicted chunk executed before the next prediction (a rollout setting)
    n_action_steps: int = 8
    #: coordinates the network works in: "world", "agent" (relative poses) or "task" (policies/frames.py)
    frame: str = "task"
    #: the env's StateLayout, filled in by ``fit``
    state_layout: dict = field(default_factory=dict)
    #: channels of the first ResNet-18 stage of each pixel view's encoder (64 = the standard ResNet-18)
    resnet_width: int = 64
    #: run only every k-th action of a chunk, at 1/k the source rate, joined by the curve (1 = all):
    #: a model of fine demos executed as if it predicted coarse waypoints (a rollout setting, for
    #: the model-or-execution control of docs/coarse-waypoints.md)
    keep_every: int = 1
    #: 0: run ``n_action_steps`` of each chunk along the curve. k >= 1: predict again at every
    #: control step and run there the mean of the first k knots that earlier predictions placed at
    #: it (ACT's temporal ensembling, on the source-rate knots; the first source step runs the
    #: first chunk's curve). The in-between poses then come from predictions made at every phase
    #: between the demos' samples, not from a curve (a rollout setting)
    ensemble_knots: int = 0

    LIMITS: ClassVar[dict[str, str]] = {"n_action_steps": "positive", "resnet_width": "positive",
                                        "keep_every": "positive", "ensemble_knots": "non-negative"}
    ROLLOUT: ClassVar[tuple[str, ...]] = ("n_action_steps", "keep_every", "ensemble_knots")
    NEUTRAL: ClassVar[dict[str, Any]] = {"keep_every": 1, "ensemble_knots": 0}
    FITTED: ClassVar[tuple[str, ...]] = ("state_layout",)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"frame": FRAMES}

    #: "straight": the paper's execution (straight lines, the default actions per prediction), where
    #: the plain policy runs with the rollout settings the validation seeds chose for the cell
    variants: ClassVar[dict[str, dict[str, Any]]] = {"straight": {"interpolation": "linear"}}

    def __post_init__(self):
        super().__post_init__()
        if self.n_action_steps % self.keep_every:
            raise ValueError(f"{self.name}: n_action_steps={self.n_action_steps} must be a multiple of "
                             f"keep_every={self.keep_every} (whole coarse steps per prediction)")


#: how a source-rate chunk runs at the target rate (each field's NEUTRAL value leaves it as predicted)
SOURCE_RATE_EXECUTION = ("interpolation", "keep_every", "ensemble_knots")


class TargetRateConfig:
    """What a config of a policy that emits target-rate actions itself and learns from windows at
    several strides (DiSPo, CT-T) adds: it runs no source-rate chunk, so the settings of
    ``SOURCE_RATE_EXECUTION`` keep their ``NEUTRAL`` values and are no rollout settings, and its
    ``augment_strides`` (declared by the config, with its default) names at least one stride.
    Listed before the config's other bases."""

    #: why the policy has no curve, the start of the error a curve gets
    NO_CURVE: ClassVar[str]

    def __post_init__(self):
        super().__post_init__()
        if not self.augment_strides:
            raise ValueError("augment_strides must name at least one stride (1 = the demos' own rate)")
        neutral = self.neutral()
        for name in SOURCE_RATE_EXECUTION:
            if getattr(self, name) != neutral[name]:
                raise ValueError(f"{name}={getattr(self, name)!r}: {self.NO_CURVE}, it has no source-rate chunk "
                                 "to join, thin or ensemble")

    def rollout_fields(self) -> tuple[str, ...]:
        return tuple(f for f in super().rollout_fields() if f not in SOURCE_RATE_EXECUTION)


@dataclass
class HorizonConfig(ChunkConfig):
    """A chunk of ``horizon`` actions predicted from the oldest observed step on (the diffusion
    policies, PF-DAG); the executed part must fit after the observed steps."""

    #: actions per predicted chunk at the source rate, from the oldest observed step (Diffusion Policy's T_p = 16)
    horizon: int = 16

    LIMITS: ClassVar[dict[str, str]] = {"horizon": "positive"}

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} must fit in the horizon after the observed steps "
                f"(1..{self.horizon - self.n_obs_steps + 1})"
            )


class ChunkPolicy(LearnedPolicy):
    config_class = ChunkConfig

    def __init__(self, config: ChunkConfig | None = None):
        super().__init__(config)
        self._generators: dict[int, torch.Generator] = {}
        self._anchors: dict[int, np.ndarray | None] = {}
        self._pasts: dict[int, np.ndarray | None] = {}
        self._ensembles: dict[int, KnotEnsemble] = {}

    # ---------------------------------------------------------------- training
    def window_tensors(self, dataset, windows) -> dict[str, torch.Tensor]:
        """Training tensors of some windows, in the policy's frame; fills in the config's dims."""
        c = self.config
        obs = windows.observations
        state = state_of(obs)
        c.obs_dim, c.action_dim = state.shape[-1], windows.actions.shape[-1]
        c.views = tuple(obs["pixels"]) if isinstance(obs, dict) else ()
        c.state_layout = dataset.state_layout.to_dict()
        frame = Frame(c.frame, c.state_layout, state[:, -1])
        data = {"state": torch.as_tensor(frame.states(state), dtype=torch.float32),
                "actions": torch.as_tensor(frame.poses(windows.actions), dtype=torch.float32)}
        for view in c.views:
            data[f"pixels.{view}"] = torch.as_tensor(obs["pixels"][view])
        return data

    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Diffusion Policy's windows: ``n_obs_steps`` observations and the ``horizon`` actions
        from the oldest of them on (configs with a horizon; DiSPo makes its own)."""
        c = self.config
        return self.window_tensors(dataset, dataset.windows(c.n_obs_steps, c.horizon))

    def initialise(self, data: dict[str, torch.Tensor]) -> None:
        self.model.obs_encoder.state_normalizer.fit(data["state"])
        self.model.action_normalizer.fit(data["actions"])

    def _observations(self, batch: dict[str, torch.Tensor]):
        if not self.config.views:
            return batch["state"]
        return {"state": batch["state"], "pixels": {v: batch[f"pixels.{v}"] for v in self.config.views}}

    # ----------------------------------------------------------------- rollout
    def encode(self, obs_history) -> tuple[torch.Tensor, Frame]:
        """Observation features (B, n_obs_steps, feature_dim) of a rollout history, and the frame
        the network's actions are expressed in."""
        c, device = self.config, self.device
        state = np.asarray(state_of(obs_history), dtype=np.float64)
        frame = Frame(c.frame, c.state_layout, state[:, -1])
        batch = {"state": torch.as_tensor(frame.states(state), dtype=torch.float32, device=device)}
        for view in c.views:
            batch[f"pixels.{view}"] = torch.as_tensor(np.asarray(obs_history["pixels"][view]), device=device)
        return self.model.obs_encoder(self._observations(batch)), frame

    def reset(self, slot: int, context: EpisodeContext) -> None:
        """Per-slot noise generator seeded by the episode: rollouts do not depend on batching."""
        self._generators[slot] = torch.Generator().manual_seed(mix_seed(self.config.seed, context.seed))
        self._anchors[slot] = None
        self._pasts[slot] = None
        self._ensembles[slot] = KnotEnsemble()

    def chunk_noise(self, slots: list[int], n_actions: int, width: int | None = None) -> torch.Tensor:
        """Gaussian noise (B, n_actions, width), each row from its slot's episode generator
        (width: action_dim, or E0's one-hot width)."""
        width = width or self.config.action_dim
        return torch.stack([torch.randn((n_actions, width), generator=self._generators[s]) for s in slots])

    @abstractmethod
    def predict_chunk(self, obs_history, slots: list[int]) -> np.ndarray:
        """Absolute poses (B, n >= n_action_steps, action_dim) at the source rate, from the action
        of the latest observed step (the first to execute) on. Randomness from the slots'
        generators only."""

    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float) -> np.ndarray:
        """The next ``n_action_steps`` of the predicted chunk at the target rate. The curve runs
        from the last executed action (the agent's pose at the start) and, for a smooth one,
        through the one before it (the start pose held, as in the demos' padding) and the rest
        of the chunk, so its heading carries across chunks."""
        c = self.config
        self.check_started(slots, self._generators)
        chunk = self.predict_chunk(obs_history, slots)[:, c.keep_every - 1 :: c.keep_every]
        n, reference_hz = c.n_action_steps // c.keep_every, reference_hz / c.keep_every
        state = np.asarray(state_of(obs_history))
        anchors = np.stack([
            self._anchors[s] if self._anchors[s] is not None else state[i, -1, : c.action_dim]
            for i, s in enumerate(slots)
        ])
        if c.ensemble_knots:
            return self.ensembled(anchors, chunk, slots, reference_hz, target_hz)
        pasts = np.stack([self._pasts[s] if self._pasts[s] is not None else anchors[i] for i, s in enumerate(slots)])
        for i, s in enumerate(slots):
            self._anchors[s], self._pasts[s] = chunk[i, n - 1], (chunk[i, n - 2] if n > 1 else anchors[i])
        return upsample(anchors, chunk, reference_hz, target_hz, c.interpolation, n_steps=n, past=pasts,
                        **angle_settings(c.state_layout, c.action_dim))

    def ensembled(self, anchors: np.ndarray, chunk: np.ndarray, slots: list[int], reference_hz: float,
                  target_hz: float) -> np.ndarray:
        """One action per slot (B, 1, action_dim): the mean of the knots due at the next control
        step, after this chunk's first ``ensemble_knots`` are placed at theirs."""
        c = self.config
        per_step = rate_multiple(reference_hz, target_hz, "ensemble_knots (its knots are due at control steps)")
        angles = angle_settings(c.state_layout, c.action_dim)
        actions = []
        for i, slot in enumerate(slots):
            ensemble = self._ensembles[slot]
            if ensemble.start is None:
                ensemble.start = upsample(anchors[i], chunk[i], reference_hz, target_hz, c.interpolation, n_steps=1,
                                          past=anchors[i], **angles)
            for j, knot in enumerate(chunk[i, : c.ensemble_knots]):
                ensemble.knots.setdefault(ensemble.step + (j + 1) * per_step, []).append(knot)
            ensemble.step += 1
            due = ensemble.knots.pop(ensemble.step, None)
            actions.append(mean_pose(due, **angles) if due else ensemble.start[ensemble.step - 1])
        return np.stack(actions)[:, None]


@dataclass
class KnotEnsemble:
    """A slot's temporal ensemble: control steps taken, the knots placed at later control steps
    (step -> poses) and the first chunk's curve, run until the first knots are due."""

    step: int = 0
    knots: dict[int, list[np.ndarray]] = field(default_factory=dict)
    start: np.ndarray | None = None


def angle_settings(layout: dict, pose_dim: int) -> dict[str, Any]:
    """``upsample``'s angle arguments for poses of an env with this ``StateLayout``: the yaw
    (pose entry 2, when the layout lists it among its angles) and its period."""
    if pose_dim > 2 and 2 in layout.get("angles", ()):
        return {"angle_dims": (2,), "angle_period": layout.get("angle_period", 2 * np.pi)}
    return {}
