"""DiSPo: diffusion policy on step-scaled Mamba blocks (paper sections III-IV).

The sequence is [observation tokens (T_o), action tokens (T_o - 1 past, then the current and
future ones)], each embedded linearly plus a learned type encoding; no positions: the SSM's
step sizes carry time. Every DiSPo block is adaLN (scale, shift and gate from the diffusion
step embedding) around a Mamba mixer *without* conv1d whose step sizes are stretched per token,
Δ = r · softplus(f_Δ(u)). r = 1 is the step of the reference rate (the most frequent step over the demo samples);
tokens at ω get r = ω_ref / ω. So a model trained at 2.5 Hz emits 20 Hz actions by giving the
current and future action tokens r / 8 and asking for 8 times as many of them: no interpolation.

Training (paper section IV) has two parts:

- pretraining with sample-rate augmentation: every window is also taken at 1/k of its rate
  (r multiplied by k). The loss is the MSE of the denoiser's prediction on the actions plus λ
  times the MSE of reconstructing the (normalised) observation states from the observation tokens;
- fine-tuning with pseudo demonstrations, in rounds of doubling rate up to ``target_hz``
  (``policies/dispo_finetuning.py``).

Runs that differ only in their fine-tuning settings share one pretraining: the runner names
its folder (``pretraining_identity``) and passes it to ``fit``, which trains it under a lock.

Departures from the paper, each a config field; ``--variant paper`` restores the paper's
choices. Chosen on the validation seeds with ``benchmarks/ablation.py`` (PassagePassing,
2.5 Hz demos, open-loop errors of the 20 Hz actions in world units; the table and its commands
are in ``docs/dispo-ablation.md``):

- ``prediction_type="sample"`` (paper: ε, as MaIL): ε learns too slowly on the CPU budget (audit
  cause 1); with fine-tuning the waypoint error fell from 13.8 to 10.5, and from 20 Hz demos
  validation success reached 86 % (DP-T's level) after 20k steps.
- ``scan_direction="bidirectional"`` (paper: causal): a second mixer scans the tokens in
  reverse, so later tokens (an inpainted waypoint, the end of the chunk) inform earlier ones
  (audit cause 2). Pretrained only, the waypoint error at r = 1/8 fell from 24.8 to 11.5; with
  fine-tuning from 10.5 to 7.5 (7.8 with ZOH, the default; validation success 0-6 %, the Tracker's 0 %).
- ``discretization="zoh"`` is the paper's Eq. 1; round 1 ran mamba-ssm's Euler B̄ = ΔB. With
  zero-order hold eight steps of Δ/8 are one step of Δ, and the pretrained model's waypoint
  error at r = 1/8 fell from 24.8 to 12.2 (the audit expected little: Δ·|A| is small on fine
  tokens, but not on the r = 1 tokens the model learned from); beside the bidirectional scan it
  changes little (12.5 pretrained, 7.8 fine-tuned) and is kept as the paper's.

What is still missing at 2.5 Hz is waypoint precision, not in-between shape: given the exact demo
waypoints (pseudo demos), the 20 Hz in-betweens are 3.0 off the expert where the straight chord
is 4.7, but waypoints predicted 0.4 s apart from 90 coarse demos are 6.8 off even at r = 1.

Tried and left off by default (fields kept, measured in the same table): ``fine_noise="shared"``
(zig-zag was already gone with sample prediction), ``augment_action_finer`` (windows with real
r_a < r_o targets: 24.8 -> 14.0 pretrained, at three times the training cost),
``action_units="per_step"`` (dividing each window's poses by its r_o erases the dependence of
the action scale on r that the step scaling relies on: 24.8 -> 60.6), ``replan_every`` (closing
the loop every 4 or 8 target-rate actions: validation success 6 -> 0 and 4 %).

Step scales, three kinds: ``relative_step_scales`` (one per token, relative to one source step:
1 for observations and past actions, 1/finer for the denser future actions),
``rollout_step_scales`` (those times ω_ref / ω_source: the r the network is given at rollout),
and ``predicted_action_scale`` (φ_r's r_a for the action tokens, adaptive mode only).

φ_r (adaptive granularity): an MLP from the observation history to the predicted straightness
s in [0, 1] of the path about to be executed; the action tokens' step scale is then
r_a = (ω_ref / ω_target) · max_speedup^s, between the target rate's own and ``max_speedup``
times coarser. The paper gives φ_r no training target; ours is read off the demos
(``straightness_targets``: straight: coarse steps, a faster traverse at the same control rate;
turning or stopping: the target rate's own). With ``step_scale_mode="adaptive"``
each chunk is emitted at the step φ_r picks, rounded so each source step gets a whole number
of actions; coarser chunks reach the goal in fewer control steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cfbench.datasets import Windows
from cfbench.files import exclusive
from cfbench.tree import state_of, tree_index
from policies.base import register
from policies.diffusion import DiffusionPolicy
from policies.dispo_finetuning import concat_window_tensors, finetune
from policies.learning import phase_summary
from policies.modules import StepEncoder
from policies.ssm.mamba import MambaDiffusionConfig, MambaMixer, rescale_residual_projections

#: the paper's configuration (sections III-IV) where our defaults depart from it
PAPER_SETTINGS = {"prediction_type": "epsilon", "discretization": "zoh", "scan_direction": "causal",
                  "augment_action_finer": (1,), "action_units": "pose", "fine_noise": "independent"}


@dataclass
class DiSPoConfig(MambaDiffusionConfig):
    #: action tokens at the training rate: T_o - 1 past, the current one and T_a future ones
    horizon: int = 10
    #: "sample" (our default: ε learns too slowly on the CPU budget, see the module doc) or
    #: "epsilon" (the paper, MaIL)
    prediction_type: str = "sample"
    #: λ, weight of the observation reconstruction loss
    obs_loss_weight: float = 0.1
    #: sample-rate augmentation: windows also resampled to 1/k of their rate, for each k here
    #: (the paper: any rate below the demos'; (1, 2) is what round 1 trained)
    augment_strides: tuple[int, ...] = (1, 2)
    #: for each stride k and each f here dividing k, also windows whose current and future actions
    #: are f times denser than their observations (k / f samples apart): r_a < r_o trained with
    #: real targets. (1,) = the paper (actions at the observations' rate); our design, audit cause 5
    augment_action_finer: tuple[int, ...] = (1,)
    #: action targets: "pose" (task-frame poses, as every policy) or "per_step" (each window's poses
    #: divided by its observation step scale r_o, so windows of every stride share the normaliser's
    #: range: one normalised unit stays small; our design, audit cause 1). No-op where r_o = 1
    action_units: str = "pose"
    #: target-rate actions executed before replanning; 0 = all n_action_steps source steps of the
    #: chunk (the paper). DiSPo emits target-rate actions, so it can close the loop at any control
    #: step: a model trained on 2.5 Hz demos still replans on fresh observations (our design)
    replan_every: int = 0
    #: scan direction of each block: "bidirectional" (our default, audit cause 2: a second mixer
    #: scans the tokens in reverse, so later tokens, e.g. an inpainted waypoint, inform earlier
    #: ones; outputs summed; twice the scan cost) or "causal" (the paper)
    scan_direction: str = "bidirectional"
    #: the scan's B̄: "zoh" (the paper's Eq. 1, zero-order hold: k steps of Δ/k equal one step of
    #: Δ; the default) or "euler" (B̄ = ΔB, mamba-ssm's kernels; what round 1 trained)
    discretization: str = "zoh"
    #: the rate whose step is r = 1: the most frequent step over the training samples (set by fit)
    reference_hz: float = 0.0
    #: fine-tuning rounds double the rate from reference_hz up to this one
    target_hz: float = 20.0
    #: optimiser steps of each fine-tuning round; 0 = pretraining only (the "no-ft" variant)
    finetune_steps: int = 1000
    #: ACT's temporal-ensemble weights exp(-k i), i = 0 for the oldest prediction of an action
    ensemble_decay: float = 0.01
    #: windows denoised at once when generating pseudo demonstrations
    generation_batch: int = 256
    #: rollout step scale of the action tokens: "fixed" (ω_ref / ω_target) or "adaptive" (φ_r's)
    step_scale_mode: str = "fixed"
    #: φ_r's range: r_a from ω_ref / ω_target up to this many times coarser
    max_speedup: float = 2.0
    #: initial noise of the fine action tokens: "independent" per token (the paper), or "shared" by
    #: the tokens of one source step (our design, audit cause 3: each fine token otherwise carries its
    #: own noise through the skip paths, a zig-zag; the per-token marginal stays N(0, 1))
    fine_noise: str = "independent"
    #: φ_r's target is 1 for a straight chunk path, falling to 0 where the path's largest distance
    #: from its chord reaches this fraction of its length
    straightness_tolerance: float = 0.1

    LIMITS: ClassVar[dict[str, str]] = {
        "obs_loss_weight": "non-negative", "augment_strides": "positive", "augment_action_finer": "positive",
        "reference_hz": "non-negative",
        "target_hz": "positive", "finetune_steps": "non-negative", "ensemble_decay": "non-negative",
        "generation_batch": "positive", "straightness_tolerance": "positive", "replan_every": "non-negative"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": PAPER_SETTINGS,
        "no-ft": {"finetune_steps": 0},  # pretraining only: what the fine-tuning rounds add
        "paper-no-ft": {**PAPER_SETTINGS, "finetune_steps": 0},
        "adaptive-r": {"step_scale_mode": "adaptive"},  # φ_r picks each chunk's step (paper section III-C)
    }
    FITTED: ClassVar[tuple[str, ...]] = ("reference_hz",)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "fine_noise": ("independent", "shared"), "action_units": ("pose", "per_step"),
        "scan_direction": ("causal", "bidirectional"), "discretization": ("euler", "zoh"),
        "step_scale_mode": ("fixed", "adaptive")}
    NEUTRAL: ClassVar[dict[str, Any]] = {
        "fine_noise": "independent", "augment_action_finer": (1,), "action_units": "pose", "replan_every": 0,
        "scan_direction": "causal", "discretization": "euler"}
    #: settings pretraining does not read (the fine-tuning rounds and the rollout do): runs
    #: differing only in them share their pretraining
    FINETUNE_FIELDS: ClassVar[tuple[str, ...]] = ("target_hz", "finetune_steps", "ensemble_decay", "generation_batch",
                                                  "fine_noise", "replan_every")

    def __post_init__(self):
        super().__post_init__()
        if not self.augment_strides:
            raise ValueError("augment_strides must name at least one stride (1 = the demos' own rate)")
        if 1 not in self.augment_action_finer:
            raise ValueError("augment_action_finer must include 1 (windows with actions at the observations' rate)")
        if not self.max_speedup >= 1:
            raise ValueError(f"max_speedup must be >= 1, got {self.max_speedup}")
        if self.interpolation != "linear":
            raise ValueError(f"interpolation={self.interpolation!r}: DiSPo emits target-rate actions itself, "
                             "it has no curve to choose")

    def rollout_fields(self) -> tuple[str, ...]:
        """No curve to choose; and with adaptive step scales φ_r learns from the chunk a rollout
        executes, so n_action_steps is then a training setting."""
        kept_out = ("interpolation", "n_action_steps") if self.step_scale_mode == "adaptive" else ("interpolation",)
        return tuple(f for f in super().rollout_fields() if f not in kept_out)


class DiSPoBlock(nn.Module):
    """adaLN-Zero around a step-scaled Mamba mixer without conv1d: x + g(k) * Mixer(LN(x)(1 + s(k)) + b(k), r);
    bidirectional: Mixer(h, r) + flip(ReverseMixer(flip(h), flip(r)))."""

    def __init__(self, d_model: int, d_state: int, expand: int, bidirectional: bool = False, zoh: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 3 * d_model))
        nn.init.zeros_(self.modulation[1].weight)  # every block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)
        self.mixer = MambaMixer(d_model, d_state=d_state, d_conv=0, expand=expand, zoh=zoh)
        self.reverse_mixer = (MambaMixer(d_model, d_state=d_state, d_conv=0, expand=expand, zoh=zoh)
                              if bidirectional else None)

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, step_scale: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(step)[:, None].chunk(3, dim=-1)
        hidden = self.norm(tokens) * (1 + scale) + shift
        mixed = self.mixer(hidden, step_scale)
        if self.reverse_mixer is not None:
            mixed = mixed + self.reverse_mixer(hidden.flip(1), step_scale.flip(-1)).flip(1)
        return tokens + gate * mixed


class DiSPoNet(nn.Module):
    def __init__(self, action_dim: int, obs_feature_dim: int, obs_dim: int, n_obs_steps: int, d_model: int,
                 n_layer: int, d_state: int, expand: int, bidirectional: bool = False, zoh: bool = False):
        super().__init__()
        self.step_encoder = StepEncoder(d_model, hidden_factor=2)
        self.obs_embedding = nn.Linear(obs_feature_dim, d_model)
        self.action_embedding = nn.Linear(action_dim, d_model)
        self.type_encoding = nn.Parameter(torch.zeros(2, d_model))  # [observation, action]
        self.blocks = nn.ModuleList(DiSPoBlock(d_model, d_state, expand, bidirectional, zoh) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.action_head = nn.Linear(d_model, action_dim)
        self.obs_head = nn.Linear(d_model, obs_dim)
        #: φ_r: observation history -> logit of the straightness of the path ahead (DiSPo.predicted_action_scale)
        self.step_scale_predictor = nn.Sequential(
            nn.Flatten(), nn.Linear(n_obs_steps * obs_feature_dim, 2 * d_model), nn.SiLU(),
            nn.Linear(2 * d_model, 2 * d_model), nn.SiLU(), nn.Linear(2 * d_model, 1), nn.Flatten(0))
        nn.init.normal_(self.type_encoding, std=0.02)
        rescale_residual_projections(self, n_layer)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor,
                step_scale: torch.Tensor, reconstruct: bool = False):
        """Noise (or clean-sample) prediction for the action tokens; with ``reconstruct`` also the
        observation states decoded from the observation tokens. step_scale: (B, T_o + n_actions)."""
        n_obs = obs_features.shape[1]
        tokens = torch.cat([self.obs_embedding(obs_features) + self.type_encoding[0],
                            self.action_embedding(sample) + self.type_encoding[1]], dim=1)
        step = self.step_encoder(timesteps)
        for block in self.blocks:
            tokens = block(tokens, step, step_scale)
        tokens = self.norm(tokens)
        prediction = self.action_head(tokens[:, n_obs:])
        return (prediction, self.obs_head(tokens[:, :n_obs])) if reconstruct else prediction


@register("dispo")
class DiSPo(DiffusionPolicy):
    config_class = DiSPoConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return DiSPoNet(c.action_dim, feature_dim, c.obs_dim, c.n_obs_steps, c.d_model, c.n_layer, c.d_state,
                        c.expand, bidirectional=c.scan_direction == "bidirectional", zoh=c.discretization == "zoh")

    # ---------------------------------------------------------------- training
    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Windows at every augmentation (stride, action density) pair, each token with its step
        scale and a loss mask, and φ_r's target on the reference-rate windows (the rollout's
        observation spacing)."""
        c = self.config
        c.reference_hz = dataset.reference_hz
        parts = []
        for stride in c.augment_strides:
            for finer in (f for f in c.augment_action_finer if stride % f == 0):
                windows = dataset.windows(c.n_obs_steps, c.horizon, stride=stride, action_stride=stride // finer)
                data = self.window_tensors(dataset, windows)
                data["step_scale"] = self.window_step_scales(windows, finer)
                data["loss_mask"] = torch.ones(len(windows), windows.actions.shape[1])
                data["straightness_target"] = torch.as_tensor(self.straightness_targets(windows), dtype=torch.float32)
                data["straightness_mask"] = torch.as_tensor(
                    (stride == 1) & (finer == 1) & (windows.source_hz == c.reference_hz), dtype=torch.float32)
                parts.append(data)
        return concat_window_tensors(parts)

    def window_tensors(self, dataset, windows: Windows) -> dict[str, torch.Tensor]:
        """The chunking policies' tensors; with ``action_units="per_step"`` the actions divided by
        each window's observation step scale r_o (1 for windows at the reference rate)."""
        data = super().window_tensors(dataset, windows)
        if self.config.action_units == "per_step":
            observation_scale = torch.as_tensor(self.observation_step_scales(windows), dtype=torch.float32)
            data["actions"] = data["actions"] / observation_scale[:, None, None]
        return data

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Denoising MSE on the unmasked action tokens + λ · observation reconstruction + φ_r's loss.
        Rows padded to a common length (step scale 0 at the end) run through the network cut to
        their own length, one group per length: the padding changes no real output, so this is
        the padded batch's loss at a fraction of the cost (fine-tuning mixes 12- and 73-token rows)."""
        c = self.config
        features, noisy, steps, target = self.noised(batch, generator)
        states = self.model.obs_encoder.state_normalizer.normalize(batch["state"])
        mask = batch["loss_mask"][..., None]
        lengths = (batch["step_scale"] > 0).sum(dim=1)
        action_error = reconstruction_error = 0.0
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            n_actions = length - features.shape[1]
            predicted, reconstruction = self.model.net(noisy[rows, :n_actions], steps[rows], features[rows],
                                                       batch["step_scale"][rows, :length], reconstruct=True)
            action_error = action_error + ((predicted - target[rows, :n_actions]).square()
                                           * mask[rows, :n_actions]).sum()
            reconstruction_error = reconstruction_error + (reconstruction - states[rows]).square().sum()
        action_loss = action_error / (mask.sum() * target.shape[-1])
        reconstruction_loss = reconstruction_error / states.numel()
        straightness = torch.sigmoid(self.model.net.step_scale_predictor(features.detach()))
        weight = batch["straightness_mask"]
        straightness_loss = (((straightness - batch["straightness_target"]).square() * weight).sum()
                             / weight.sum().clamp(min=1))
        return action_loss + c.obs_loss_weight * reconstruction_loss + straightness_loss

    def straightness_targets(self, windows: Windows) -> np.ndarray:
        """φ_r's target per window, in [0, 1]: 1 where the path of the chunk a rollout executes
        (from the agent's position through the next n_action_steps actions) is straight, falling
        linearly to 0 where its largest distance from its chord is straightness_tolerance of its
        length. A path that barely moves (pressing, holding) gets 0: no speed-up."""
        c = self.config
        state = state_of(windows.observations)
        start = c.n_obs_steps - 1
        path = np.concatenate([state[:, -1:, :2], windows.actions[:, start : start + c.n_action_steps, :2]], axis=1)
        chord = path[:, -1] - path[:, 0]
        chord_length = np.linalg.norm(chord, axis=-1)
        length = np.linalg.norm(np.diff(path, axis=1), axis=-1).sum(axis=1)
        offsets = path - path[:, :1]
        across = np.abs(offsets[..., 0] * chord[:, None, 1] - offsets[..., 1] * chord[:, None, 0])
        distance = np.where(chord_length[:, None] > 1e-9, across / np.maximum(chord_length[:, None], 1e-9),
                            np.linalg.norm(offsets, axis=-1))
        moving = length > 1e-6 * max(1.0, float(np.abs(path).max()))
        bend = distance.max(axis=1) / np.maximum(length, 1e-12)
        return np.where(moving, np.clip(1 - bend / c.straightness_tolerance, 0, 1), 0.0)

    def fit(self, dataset, *, work_dir=None, validate=None, progress: bool = True,
            pretraining_dir=None) -> dict[str, Any]:
        """Pretraining (in ``pretraining_dir``, default ``work_dir/pretraining``; a twin run
        training it now is waited for, then reused), then the fine-tuning rounds."""
        if pretraining_dir is None and work_dir is not None:
            pretraining_dir = Path(work_dir) / "pretraining"
        if pretraining_dir is None:
            history = super().fit(dataset, validate=validate, progress=progress)
        else:
            with exclusive(pretraining_dir):
                history = super().fit(dataset, work_dir=pretraining_dir, validate=validate, progress=progress)
        history["phases"] = [{**phase_summary("pretraining", history, 0), "dir": str(pretraining_dir)}]
        return finetune(self, dataset, history, work_dir=work_dir, validate=validate, progress=progress)

    def pretraining_identity(self) -> dict[str, Any]:
        return self.phase_identity(0)

    def phase_identity(self, phase: int) -> dict[str, Any]:
        identity = self.config.identity()
        return identity if phase else {k: v for k, v in identity.items() if k not in self.config.FINETUNE_FIELDS}

    # ----------------------------------------------------------------- rollout
    def relative_step_scales(self, finer: int) -> np.ndarray:
        """Step scales of a sequence relative to one source step: its observations and past
        actions one source step apart (1) and its current and future actions ``finer`` times
        denser (1/finer), as many as cover the training-rate chunk: (T_o + T_o - 1 + n_future * finer,)."""
        c = self.config
        n_future = (c.horizon - c.n_obs_steps + 1) * finer
        return np.concatenate([np.ones(2 * c.n_obs_steps - 1), np.full(n_future, 1.0 / finer)])

    def observation_step_scales(self, windows: Windows) -> np.ndarray:
        """Each training window's observation step scale r_o = ω_ref / ω (its observations are
        one step of its own rate apart)."""
        return self.config.reference_hz / windows.source_hz

    def window_step_scales(self, windows: Windows, finer: int) -> torch.Tensor:
        """Step scales of training windows whose future actions are ``finer`` per observation
        step, (len(windows), tokens): ``relative_step_scales(finer)`` times each window's r_o."""
        scales = self.observation_step_scales(windows)[:, None] * self.relative_step_scales(finer)[None]
        return torch.as_tensor(scales, dtype=torch.float32)

    def rollout_step_scales(self, batch: int, source_hz: float, target_hz: float) -> tuple[torch.Tensor, int]:
        """The network's step scales r for a rollout, (batch, tokens), and its number of action tokens.

        Observations and past actions are ``source_hz`` apart (r_o = ω_ref / ω_source); the
        current and future actions ``target_hz`` apart (r_a = r_o · ω_source / ω_target), as
        many as cover the training-rate chunk.
        """
        c = self.config
        scales = self.relative_step_scales(_finer(source_hz, target_hz)) * (c.reference_hz / source_hz)
        step_scale = torch.as_tensor(scales, dtype=torch.float32, device=self.device).expand(batch, -1)
        return step_scale, len(scales) - c.n_obs_steps

    @torch.no_grad()
    def predicted_action_scale(self, obs_history, target_hz: float) -> torch.Tensor:
        """φ_r's step scale r_a of the action tokens (B,): from the target rate's own,
        ω_ref / ω_target, up to max_speedup times coarser. Always positive."""
        features, _ = self.encode(obs_history)
        straightness = torch.sigmoid(self.model.net.step_scale_predictor(features))
        return self.config.reference_hz / target_hz * self.config.max_speedup ** straightness

    def initial_noise(self, batch: int, n_actions: int, finer: int, generator: torch.Generator) -> torch.Tensor:
        """Starting noise (batch, n_actions, action_dim) of sequences whose future actions are
        ``finer`` per source step; see ``fine_noise``."""
        c = self.config
        if c.fine_noise == "independent":
            return torch.randn((batch, n_actions, c.action_dim), generator=generator)
        n_past = c.n_obs_steps - 1
        past = torch.randn((batch, n_past, c.action_dim), generator=generator)
        per_step = torch.randn((batch, (n_actions - n_past) // finer, c.action_dim), generator=generator)
        return torch.cat([past, per_step.repeat_interleave(finer, dim=1)], dim=1)

    def action_unit(self, source_hz: float) -> float:
        """What one unit of the network's actions is worth in task-frame poses at rollout: the
        observation step scale r_o with per-step units, else 1."""
        return self.config.reference_hz / source_hz if self.config.action_units == "per_step" else 1.0

    def actions_per_step(self, obs_history, source_hz: float, target_hz: float) -> np.ndarray:
        """Actions each slot's next chunk gives one source step: target_hz / source_hz with fixed
        step scales; with adaptive ones, φ_r's step rounded to a whole number of actions."""
        finer = _finer(source_hz, target_hz)
        if self.config.step_scale_mode == "fixed":
            return np.full(len(state_of(obs_history)), finer)
        r_source = self.config.reference_hz / source_hz  # the step of one source step
        wanted = np.round(r_source / self.predicted_action_scale(obs_history, target_hz).cpu().numpy())
        return np.clip(wanted, math.ceil(finer / self.config.max_speedup - 1e-9), finer).astype(int)

    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float):
        """One chunk per slot covering n_action_steps source steps; slots whose chunks have the
        same step size are denoised together. Chunks of different lengths come as a list."""
        c = self.config
        self.check_started(slots, self._generators)
        per_step = self.actions_per_step(obs_history, reference_hz, target_hz)
        chunks: list[np.ndarray] = [np.empty(0)] * len(slots)
        for count in np.unique(per_step):
            rows = np.flatnonzero(per_step == count)
            step_scale, n_actions = self.rollout_step_scales(len(rows), reference_hz, count * reference_hz)
            noise = torch.cat([self.initial_noise(1, n_actions, count, self._generators[slots[i]]) for i in rows])
            actions = self.sample_actions(tree_index(obs_history, rows), [slots[i] for i in rows],
                                          n_actions=n_actions, noise=noise.to(self.device), step_scale=step_scale,
                                          action_unit=self.action_unit(reference_hz))
            start = c.n_obs_steps - 1  # the current action: the first to apply
            executed = min(c.replan_every, c.n_action_steps * count) if c.replan_every else c.n_action_steps * count
            for i, chunk in zip(rows, actions):
                chunks[i] = chunk[start : start + executed]
        return np.stack(chunks) if len(np.unique(per_step)) == 1 else chunks


def _finer(source_hz: float, target_hz: float) -> int:
    finer = target_hz / source_hz
    if finer < 1 or abs(finer - round(finer)) > 1e-6:
        raise ValueError(f"DiSPo emits target_hz / source_hz actions per source step; "
                         f"{target_hz} / {source_hz} is not a whole number >= 1")
    return round(finer)
