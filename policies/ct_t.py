"""CT-T: a continuous-time transformer, the rival hypothesis to DiSPo's step scaling (issue 35).

DiSPo stretches an SSM's step so a model trained on coarse windows emits fine actions. The
obvious rival (RDT's frequency conditioning, VFIL's frequency labels, implicit action functions)
asks a network for the action *at a time*: here DP-T's denoiser (``policies/dp_t.py``,
its sizes and budget) on the shared diffusion machinery, with these changes:

- **Time, not position.** Each action token is a query whose embedding adds the sinusoidal
  features of its time offset in seconds (``time_scale`` radians per second at the fastest
  feature, through the diffusion step's encoder, ``StepEncoder``) where DP-T adds a learned
  position; observation tokens add their own offsets (0 for the latest, -1/ω for the one before)
  to DP-T's memory positions, so the network knows their spacing. A query's offset is the time
  its pose is due: (j + 1)/ω for the j-th action from the current one of a window at rate ω.
- **Independent queries.** A query attends to itself and the memory only (DP-T's causal
  self-attention would make it depend on which other offsets are asked): its output is a
  function of its offset, its noisy value and the observations. So the 20 Hz query sets it
  never trained on (8 times as many, 8 times denser tokens at 2.5 Hz) are not out of
  distribution, and asked at 20 Hz offsets it computes exactly, at the 2.5 Hz ones, what it
  computes asked at 2.5 Hz. The past actions DP-T predicts (they reach later tokens only through
  that self-attention) are not queried.
- **One noise per chunk.** At rollout every query of a chunk starts from the same Gaussian draw
  (from the slot's episode generator): each query only ever sees its own noise, so this is the
  marginal it was trained on, and with DDIM the chunk is one deterministic, smooth function of
  time instead of independent draws per control step. (DDPM's per-step noise is per query.)
- **Sample-rate augmentation.** Training windows at every stride of ``augment_strides`` (the
  demos resampled to 1/k of their rate: ``DemoDataset.windows(stride=k)``, DiSPo's augmentation);
  every window's offsets are its true times (mixed-rate demos included), so the model learns
  offsets up to ``max(augment_strides)`` times further out than the demos' own windows hold.
- **Rollout.** ``act`` asks directly for the target-rate offsets (j + 1)/ω_t covering
  ``n_action_steps`` source steps, with observations one reference step apart: no interpolation.

``horizon`` counts source steps at each window's own rate (DP-T's T_p, from the oldest observed
step): every window has the same ``horizon - n_obs_steps + 1`` queries, spanning k times the time
at stride k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import register
from policies.chunking import TargetRateConfig
from policies.diffusion import DiffusionConfig, DiffusionPolicy
from policies.dp_t import TransformerConfig, TransformerDenoiser
from policies.modules import StepEncoder


@dataclass
class CTTConfig(TargetRateConfig, TransformerConfig, DiffusionConfig):
    #: sample-rate augmentation: training windows at 1/k of the demos' rate for each stride k here
    #: (DiSPo's, DemoDataset.windows(stride=k)); offsets are each window's true times. Validation
    #: (docs/ct-t-validation.md): (1, 2, 4) 64 points summed over PassagePassing / ButtonTouch at
    #: 2.5 / 5 Hz, (1,) 52, (1, 2, 4, 8) 32
    augment_strides: tuple[int, ...] = (1, 2, 4)
    #: radians per second of the fastest sinusoidal time feature (period 2π/time_scale s; the others
    #: down to 1e-4 of it). 5: a 1.26 s period, sampled above Nyquist by 2.5 Hz windows; validated against 2
    #: and 10 from 5 Hz demos (docs/ct-t-validation.md: 10 aliases between samples)
    time_scale: float = 5.0
    #: source steps at each window's own rate from the oldest observed step (DP-T's T_p): a window's
    #: queries are its horizon - n_obs_steps + 1 current and future actions, k times further apart at stride k
    horizon: int = 16
    #: unused: CT-T asks for target-rate offsets directly and has no curve; must stay "linear"
    interpolation: str = "linear"

    LIMITS: ClassVar[dict[str, str]] = {"augment_strides": "positive", "time_scale": "positive"}
    #: "no-aug": the demos' own windows only, separating time-conditioned queries from the augmentation
    variants: ClassVar[dict[str, dict[str, Any]]] = {"no-aug": {"augment_strides": (1,)}}

    NO_CURVE: ClassVar[str] = "CT-T asks for target-rate actions itself"


class TimeQueryDenoiser(TransformerDenoiser):
    """DP-T's denoiser with action tokens placed by their time offsets, each attending only to
    itself and the memory: a query's output does not depend on the other queries."""

    def __init__(self, action_dim: int, obs_dim: int, n_obs_steps: int, n_layer: int, n_head: int, n_emb: int,
                 p_drop_emb: float, p_drop_attn: float, time_scale: float):
        super().__init__(action_dim, obs_dim, None, n_obs_steps, n_layer, n_head, n_emb, p_drop_emb, p_drop_attn)
        self.time_encoder = StepEncoder(n_emb)
        self.time_scale = time_scale

    def encode_time(self, seconds: torch.Tensor) -> torch.Tensor:
        """(B, T) offsets in seconds -> (B, T, n_emb)."""
        return self.time_encoder(self.time_scale * seconds.reshape(-1)).reshape(*seconds.shape, -1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor,
                query_times: torch.Tensor, obs_times: torch.Tensor) -> torch.Tensor:
        """``sample`` (B, Q, action_dim) at ``query_times`` (B, Q), observations at ``obs_times`` (B, T_o)."""
        tokens = self.action_embedding(sample) + self.encode_time(query_times)
        obs_tokens = self.obs_embedding(obs_features) + self.encode_time(obs_times)
        n_queries = sample.shape[1]
        alone = ~torch.eye(n_queries, dtype=torch.bool, device=sample.device)  # True = blocked
        return self.decode(tokens, timesteps, obs_tokens, alone, None)


def time_offsets(n_obs_steps: int, obs_hz: torch.Tensor, n_queries: int, query_hz: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """The denoiser's times, per row: observations 1/obs_hz apart ending at 0 (oldest first), and
    queries at (j + 1)/query_hz, j < n_queries, the times their poses are due."""
    obs_steps = torch.arange(1 - n_obs_steps, 1, device=obs_hz.device)
    query_steps = torch.arange(1, n_queries + 1, device=query_hz.device)
    return {"obs_times": obs_steps / obs_hz[:, None], "query_times": query_steps / query_hz[:, None]}


@register("ct-t")
class CTT(DiffusionPolicy):
    config_class = CTTConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return TimeQueryDenoiser(c.action_dim, feature_dim, c.n_obs_steps, c.n_layer, c.n_head, c.n_emb,
                                 c.p_drop_emb, c.p_drop_attn, c.time_scale)

    # ---------------------------------------------------------------- training
    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Windows at every augmentation stride: their current and future actions (the queries)
        and each window's rate."""
        c = self.config
        parts = []
        for stride in c.augment_strides:
            windows = dataset.windows(c.n_obs_steps, c.horizon, stride=stride)
            data = self.window_tensors(dataset, windows)
            data["actions"] = data["actions"][:, c.n_obs_steps - 1 :]
            data["window_hz"] = torch.as_tensor(windows.source_hz, dtype=torch.float32)
            parts.append(data)
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        features, noisy, steps, target = self.noised(batch, generator)
        hz = batch["window_hz"]
        times = time_offsets(self.config.n_obs_steps, hz, noisy.shape[1], hz)
        return F.mse_loss(self.model.net(noisy, steps, features, **times), target)

    # ----------------------------------------------------------------- rollout
    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float) -> np.ndarray:
        """The poses due at (j + 1)/target_hz after the latest observation, over ``n_action_steps``
        reference steps, every query of a slot's chunk from the same noise."""
        c = self.config
        self.check_started(slots, self._generators)
        n_queries = math.floor(c.n_action_steps * target_hz / reference_hz + 1e-9)
        rates = torch.tensor([[reference_hz, target_hz]], dtype=torch.float32, device=self.device)
        obs_hz, query_hz = rates.expand(len(slots), -1).unbind(1)
        noise = self.chunk_noise(slots, 1).expand(-1, n_queries, -1)
        return self.sample_actions(obs_history, slots, noise=noise,
                                   **time_offsets(c.n_obs_steps, obs_hz, n_queries, query_hz))
