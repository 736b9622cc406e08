"""DiSPo: diffusion policy on step-scaled Mamba blocks (paper sections III-IV).

The sequence is [observation tokens (T_o), action tokens (T_o - 1 past, then the current and
future ones)], each embedded linearly plus a learned type encoding; no positions: the SSM's
step sizes carry time. Every DiSPo block is adaLN (scale, shift and gate from the diffusion
step embedding) around a Mamba mixer *without* conv1d whose step sizes are stretched per token,
Δ = r · softplus(f_Δ(u)). r = 1 is the step of the reference rate (the most frequent demo rate);
tokens at ω get r = ω_ref / ω. So a model trained at 2.5 Hz emits 20 Hz actions by giving the
current and future action tokens r / 8 and asking for 8 times as many of them: no interpolation.

Training (paper section IV) has two parts:

- pretraining with sample-rate augmentation: every window is also taken at 1/k of its rate
  (r multiplied by k). The loss is epsilon MSE on the actions plus λ times the MSE of
  reconstructing the (normalised) observation states from the observation tokens;
- fine-tuning with pseudo demonstrations, in rounds of doubling rate up to ``target_hz``: the
  model generates every demo window at the finer rate while the demo's own actions, noised to
  the current level, are written over their places at every denoising step (inpainting); the
  overlapping chunks of an episode are merged by ACT's temporal ensemble. The model is then
  co-fine-tuned on the pseudo and the original windows, with the loss on demo actions only.

Sequences of different lengths share a batch by padding at the end: the scan is causal, so
trailing padding (masked out of the loss) changes nothing before it. Runs that differ only in
their fine-tuning settings share one pretraining (a folder beside their own, under a lock).

φ_r (adaptive granularity): an MLP from the observation history to the action tokens' step
scale r_a, between the target rate's own (ω_ref / ω_target) and ``max_speedup`` times that.
The paper gives φ_r no training target; ours is read off the demos: how straight the path of
the chunk about to be executed is (straight: coarse steps, a faster traverse at the same
control rate; turning or stopping: the target rate's own). With ``step_scale_mode="adaptive"``
each chunk is emitted at the step φ_r picks, rounded so each source step gets a whole number
of actions; coarser chunks reach the goal in fewer control steps.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbench.datasets import Windows
from cfbench.io import exclusive
from policies.base import register
from policies.chunking import state_of
from policies.diffusion import DiffusionPolicy
from policies.frames import Frame
from policies.learning import append_phase, phase_summary
from policies.mamba import MambaDiffusionConfig, MambaMixer, rescale_residual_projections
from policies.modules import StepEncoder


@dataclass
class DiSPoConfig(MambaDiffusionConfig):
    #: action tokens at the training rate: T_o - 1 past, the current one and T_a future ones
    horizon: int = 10
    #: λ, weight of the observation reconstruction loss
    obs_loss_weight: float = 0.1
    #: sample-rate augmentation: windows also resampled to 1/k of their rate, for each k here
    augment_strides: tuple[int, ...] = (1, 2)
    #: the rate whose step is r = 1: the most frequent rate in the training demos (set by fit)
    reference_hz: float = 0.0
    #: fine-tuning rounds double the rate from reference_hz up to this one; 0 steps = pretraining only
    target_hz: float = 20.0
    finetune_steps: int = 1000
    #: ACT's temporal-ensemble weights exp(-k i), i = 0 for the oldest prediction of an action
    ensemble_decay: float = 0.01
    #: windows denoised at once when generating pseudo demonstrations
    generation_batch: int = 256
    #: rollout step scale of the action tokens: "fixed" (ω_ref / ω_target) or "adaptive" (φ_r's)
    step_scale_mode: str = "fixed"
    #: φ_r's range: r_a from ω_ref / ω_target up to this many times coarser
    max_speedup: float = 2.0
    #: φ_r's target is 1 for a straight chunk path, falling to 0 where the path's largest distance
    #: from its chord reaches this fraction of its length
    straightness_tolerance: float = 0.1

    #: settings only the fine-tuning rounds read: runs differing in them share their pretraining
    FINETUNE_FIELDS: ClassVar[tuple[str, ...]] = ("target_hz", "finetune_steps", "ensemble_decay", "generation_batch")

    def __post_init__(self):
        super().__post_init__()
        if not self.augment_strides or min(self.augment_strides) < 1:
            raise ValueError(f"augment_strides must be positive integers, got {self.augment_strides}")
        if self.step_scale_mode not in ("fixed", "adaptive"):
            raise ValueError(f"step_scale_mode must be 'fixed' or 'adaptive', got {self.step_scale_mode!r}")
        if not self.max_speedup >= 1:
            raise ValueError(f"max_speedup must be >= 1, got {self.max_speedup}")
        if not self.straightness_tolerance > 0:
            raise ValueError(f"straightness_tolerance must be positive, got {self.straightness_tolerance}")


class DiSPoBlock(nn.Module):
    """adaLN-Zero around a step-scaled Mamba mixer without conv1d: x + g(k) * Mixer(LN(x)(1 + s(k)) + b(k), r)."""

    def __init__(self, d_model: int, d_state: int, expand: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 3 * d_model))
        nn.init.zeros_(self.modulation[1].weight)  # every block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)
        self.mixer = MambaMixer(d_model, d_state=d_state, d_conv=0, expand=expand)

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, step_scale: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(step)[:, None].chunk(3, dim=-1)
        return tokens + gate * self.mixer(self.norm(tokens) * (1 + scale) + shift, step_scale)


class DiSPoNet(nn.Module):
    def __init__(self, action_dim: int, obs_feature_dim: int, obs_dim: int, n_obs_steps: int, d_model: int,
                 n_layer: int, d_state: int, expand: int):
        super().__init__()
        self.step_encoder = StepEncoder(d_model, hidden_factor=2)
        self.obs_embedding = nn.Linear(obs_feature_dim, d_model)
        self.action_embedding = nn.Linear(action_dim, d_model)
        self.type_encoding = nn.Parameter(torch.zeros(2, d_model))  # [observation, action]
        self.blocks = nn.ModuleList(DiSPoBlock(d_model, d_state, expand) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.action_head = nn.Linear(d_model, action_dim)
        self.obs_head = nn.Linear(d_model, obs_dim)
        #: φ_r: observation history -> logit of the action step's speed-up (see DiSPo.step_scales)
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
                        c.expand)

    # ---------------------------------------------------------------- training
    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Windows at every augmentation stride, each token with its step scale and a loss mask, and
        φ_r's target on the reference-rate windows (the rollout's observation spacing)."""
        c = self.config
        rates, counts = np.unique([episode.source_hz for episode in dataset.episodes], return_counts=True)
        c.reference_hz = float(rates[np.argmax(counts)])
        parts = []
        for stride in c.augment_strides:
            windows = dataset.windows(c.n_obs_steps, c.horizon, stride=stride)
            data = self.window_tensors(dataset, windows)
            scale = torch.as_tensor(c.reference_hz / windows.source_hz, dtype=torch.float32)
            data["step_scale"] = scale[:, None].expand(-1, c.n_obs_steps + c.horizon).contiguous()
            data["loss_mask"] = torch.ones(len(windows), c.horizon)
            data["speedup_target"] = torch.as_tensor(self.speedup_targets(windows), dtype=torch.float32)
            data["speedup_mask"] = torch.as_tensor((stride == 1) & (windows.source_hz == c.reference_hz),
                                                   dtype=torch.float32)
            parts.append(data)
        return _concat(parts)

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        c = self.config
        features, noisy, steps, target = self.noised(batch, generator)
        predicted, reconstruction = self.model.net(noisy, steps, features, batch["step_scale"], reconstruct=True)
        mask = batch["loss_mask"][..., None]
        action_loss = ((predicted - target).square() * mask).sum() / (mask.sum() * target.shape[-1])
        states = self.model.obs_encoder.state_normalizer.normalize(batch["state"])
        speedup = torch.sigmoid(self.model.net.step_scale_predictor(features.detach()))
        weight = batch["speedup_mask"]
        speedup_loss = ((speedup - batch["speedup_target"]).square() * weight).sum() / weight.sum().clamp(min=1)
        return action_loss + c.obs_loss_weight * F.mse_loss(reconstruction, states) + speedup_loss

    def speedup_targets(self, windows: Windows) -> np.ndarray:
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

    def fit(self, dataset, *, work_dir=None, validate=None, progress: bool = True) -> dict[str, Any]:
        """Pretraining, then one fine-tuning round per doubling of the rate (each its own phase,
        resumable in its own sub-folder); the final weights are the last round's best."""
        pretraining_dir = self._pretraining_dir(work_dir, dataset)
        if pretraining_dir is None:
            history = super().fit(dataset, validate=validate, progress=progress)
        else:
            with exclusive(pretraining_dir):  # a twin run training it now: wait, then reuse it
                history = super().fit(dataset, work_dir=pretraining_dir, validate=validate, progress=progress)
        history["phases"] = [{**phase_summary("pretraining", history, 0), "dir": str(pretraining_dir)}]
        rounds = self.finetune_rounds()
        if not rounds:
            return history
        originals = {k: v.to(self.device) for k, v in self.prepare(dataset).items()}
        for phase, finer in enumerate(rounds, start=1):
            pseudo = self.pseudo_demonstrations(dataset, finer)
            data = _concat([originals, pseudo])
            phase_dir = Path(work_dir) / f"finetune-{finer}x" if work_dir is not None else None
            result = self.optimise(data, self.config.finetune_steps, work_dir=phase_dir, validate=validate,
                                   progress=progress, phase=phase)
            name = f"fine-tuning at {finer}x ({finer * self.config.reference_hz:g} Hz)"
            history = append_phase(history, result, name)
        return history

    def phase_identity(self, phase: int) -> dict[str, Any]:
        identity = self.config.to_dict()
        return identity if phase else {k: v for k, v in identity.items() if k not in self.config.FINETUNE_FIELDS}

    def _pretraining_dir(self, work_dir, dataset) -> Path | None:
        """Where the pretraining of this configuration on these demos lives: beside ``work_dir``,
        named by everything pretraining reads (not the fine-tuning settings)."""
        if work_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(self.phase_identity(0), sort_keys=True, default=list).encode())
        for episode in dataset.episodes:
            for array in (state_of(episode.observations), episode.actions, np.array([episode.source_hz, episode.seed])):
                digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return Path(work_dir).parent / f"pretraining-{digest.hexdigest()[:12]}"

    def finetune_rounds(self) -> list[int]:
        """Rate multipliers of the fine-tuning rounds: 2, 4, ... up to target_hz / reference_hz."""
        c = self.config
        total = c.target_hz / c.reference_hz
        if c.finetune_steps <= 0 or total < 2:
            return []
        rounds, finer = [], 2
        while finer < total:
            rounds.append(finer)
            finer *= 2
        return rounds + [round(total)]

    @torch.no_grad()
    def pseudo_demonstrations(self, dataset, finer: int) -> dict[str, torch.Tensor]:
        """Fine-tuning windows whose future actions are ``finer`` times denser than the demos'.

        Only episodes at the reference rate are densified (a mixed-rate dataset keeps its other
        episodes as they are, in the original windows). The loss mask keeps the demo's own
        actions: the past ones and every ``finer``-th future one.
        """
        c = self.config
        episodes = [e for e in dataset.episodes if e.source_hz == c.reference_hz]
        subset = type(dataset)(dataset.env_id, dataset.rates, dataset.obs_mode, episodes)
        windows = subset.windows(c.n_obs_steps, c.horizon)
        n_past, n_future = c.n_obs_steps - 1, c.horizon - c.n_obs_steps + 1
        demo_slots = np.concatenate([np.arange(n_past), n_past + finer * np.arange(1, n_future + 1) - 1])
        ratio = (c.reference_hz / windows.source_hz)[:, None]
        step_scale = torch.as_tensor(self.unit_scales(finer)[None] * ratio, dtype=torch.float32)
        self.model.eval()
        chunks = [self._inpaint(subset, windows, index, finer, demo_slots, step_scale[index])
                  for index in np.array_split(np.arange(len(windows)), max(1, len(windows) // c.generation_batch))]
        fine = np.concatenate(chunks)  # (N, n_past + n_future * finer, pose) in world coordinates
        dense = self._temporal_ensemble(windows, fine[:, n_past:], finer)
        actions = np.concatenate([windows.actions[:, :n_past], dense], axis=1)
        pseudo = Windows(windows.observations, actions, windows.source_hz, windows.episode)
        data = self.window_tensors(subset, pseudo)
        data["step_scale"] = step_scale
        mask = torch.zeros(len(windows), actions.shape[1])
        mask[:, demo_slots] = 1.0
        data["loss_mask"] = mask
        data["speedup_target"] = data["speedup_mask"] = torch.zeros(len(windows))  # φ_r learns from the originals
        return {k: v.to(self.device) for k, v in data.items()}

    def _inpaint(self, dataset, windows, index: np.ndarray, finer: int, demo_slots: np.ndarray,
                 step_scale: torch.Tensor) -> np.ndarray:
        """Denoise the fine sequences of some windows (their step scales given) with the demo
        actions written over their slots."""
        c, device = self.config, self.device
        batch = self.window_tensors(dataset, _select(windows, index))
        batch = {k: v.to(device) for k, v in batch.items()}
        features = self.model.obs_encoder(self._observations(batch))
        known = self.model.action_normalizer.normalize(batch["actions"])  # (B, horizon, pose) demo actions
        step_scale = step_scale.to(device)
        n_actions = step_scale.shape[1] - c.n_obs_steps
        generator = torch.Generator().manual_seed(c.seed * 1_000_003 + finer)
        x = torch.randn((len(index), n_actions, c.action_dim), generator=generator).to(device)
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(c.num_inference_steps if c.sampler == "ddim" else c.num_train_timesteps)
        timesteps = list(scheduler.timesteps)
        for i, t in enumerate(timesteps):
            predicted = self.model.net(x, t.expand(len(x)).to(device), features, step_scale)
            x = scheduler.step(predicted, t, x, generator=generator if c.sampler == "ddpm" else None).prev_sample
            if i + 1 < len(timesteps):  # the demo actions, noised to the level x is now at
                noise = torch.randn(known.shape, generator=generator).to(device)
                x[:, demo_slots] = self.train_scheduler.add_noise(known, noise, timesteps[i + 1].expand(len(x)))
            else:
                x[:, demo_slots] = known
        frame = Frame(c.frame, c.state_layout, state_of(windows.observations)[index, -1])
        return frame.poses_to_world(self.model.action_normalizer.unnormalize(x).cpu().numpy())

    def _temporal_ensemble(self, windows, fine: np.ndarray, finer: int) -> np.ndarray:
        """Merge the overlapping fine chunks of each episode (ACT's weights) and cut every window's
        future back out of the merged sequence, padded with the episode's last pose."""
        c = self.config
        length = fine.shape[1]
        dense = np.empty_like(fine)
        for episode in np.unique(windows.episode):
            rows = np.flatnonzero(windows.episode == episode)  # one window per coarse step, in order
            total = len(rows) * finer
            sums = np.zeros((total, fine.shape[2]))
            weights = np.zeros(total)
            counts = np.zeros(total, dtype=int)
            for step, row in enumerate(rows):
                span = np.arange(step * finer, min(step * finer + length, total))
                weight = np.exp(-c.ensemble_decay * counts[span])  # earlier predictions weigh more
                sums[span] += weight[:, None] * fine[row, : len(span)]
                weights[span] += weight
                counts[span] += 1
            merged = sums / weights[:, None]
            for step, row in enumerate(rows):
                dense[row] = merged[np.minimum(step * finer + np.arange(length), total - 1)]
        return dense

    # ----------------------------------------------------------------- rollout
    def unit_scales(self, finer: int) -> np.ndarray:
        """Step scales of a sequence whose observations and past actions are one reference step
        apart (r = 1) and whose current and future actions are ``finer`` times denser (r = 1/finer),
        as many as cover the training-rate chunk: (T_o + T_o - 1 + n_future * finer,)."""
        c = self.config
        n_future = (c.horizon - c.n_obs_steps + 1) * finer
        return np.concatenate([np.ones(2 * c.n_obs_steps - 1), np.full(n_future, 1.0 / finer)])

    def token_scales(self, batch: int, source_hz: float, target_hz: float) -> tuple[torch.Tensor, int]:
        """Step-scale factors of the rollout sequence and its number of action tokens.

        Observations and past actions are ``source_hz`` apart (r_o = ω_ref / ω_source); the
        current and future actions ``target_hz`` apart (r_a = r_o · ω_source / ω_target), as
        many as cover the training-rate chunk.
        """
        c = self.config
        scales = self.unit_scales(_finer(source_hz, target_hz)) * (c.reference_hz / source_hz)
        step_scale = torch.as_tensor(scales, dtype=torch.float32, device=self.device).expand(batch, -1)
        return step_scale, len(scales) - c.n_obs_steps

    @torch.no_grad()
    def step_scales(self, obs_history, source_hz: float, target_hz: float) -> torch.Tensor:
        """φ_r's step scale r_a of the action tokens (B,): from the target rate's own,
        ω_ref / ω_target, up to max_speedup times coarser. Always positive."""
        features, _ = self.encode(obs_history)
        speedup = self.config.max_speedup ** torch.sigmoid(self.model.net.step_scale_predictor(features))
        return self.config.reference_hz / target_hz * speedup

    def actions_per_step(self, obs_history, source_hz: float, target_hz: float) -> np.ndarray:
        """Actions each slot's next chunk gives one source step: target_hz / source_hz with fixed
        step scales; with adaptive ones, φ_r's step rounded to a whole number of actions."""
        finer = _finer(source_hz, target_hz)
        if self.config.step_scale_mode == "fixed":
            return np.full(len(state_of(obs_history)), finer)
        r_source = self.config.reference_hz / source_hz  # the step of one source step
        wanted = np.round(r_source / self.step_scales(obs_history, source_hz, target_hz).cpu().numpy())
        return np.clip(wanted, math.ceil(finer / self.config.max_speedup - 1e-9), finer).astype(int)

    def act(self, obs_history, *, slots: list[int], source_hz: float, target_hz: float):
        """One chunk per slot covering n_action_steps source steps; slots whose chunks have the
        same step size are denoised together. Chunks of different lengths come as a list."""
        c = self.config
        per_step = self.actions_per_step(obs_history, source_hz, target_hz)
        chunks: list[np.ndarray] = [np.empty(0)] * len(slots)
        for count in np.unique(per_step):
            rows = np.flatnonzero(per_step == count)
            step_scale, n_actions = self.token_scales(len(rows), source_hz, count * source_hz)
            actions = self.sample_actions(_rows(obs_history, rows), [slots[i] for i in rows], n_actions=n_actions,
                                          step_scale=step_scale)
            start = c.n_obs_steps - 1  # the current action: the first to apply
            for i, chunk in zip(rows, actions):
                chunks[i] = chunk[start : start + c.n_action_steps * count]
        return np.stack(chunks) if len(np.unique(per_step)) == 1 else chunks


def _finer(source_hz: float, target_hz: float) -> int:
    finer = target_hz / source_hz
    if finer < 1 or abs(finer - round(finer)) > 1e-6:
        raise ValueError(f"DiSPo emits target_hz / source_hz actions per source step; "
                         f"{target_hz} / {source_hz} is not a whole number >= 1")
    return round(finer)


def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate window tensors; shorter action sequences are padded at the end (masked out)."""
    n_actions = max(part["actions"].shape[1] for part in parts)

    def pad(x: torch.Tensor, extra: int, value: float | None = None) -> torch.Tensor:
        if extra == 0:
            return x
        tail = x[:, -1:].expand(-1, extra, *x.shape[2:]) if value is None else x.new_full((len(x), extra), value)
        return torch.cat([x, tail], dim=1)

    padded = []
    for part in parts:
        extra = n_actions - part["actions"].shape[1]
        padded.append({**part, "actions": pad(part["actions"], extra), "step_scale": pad(part["step_scale"], extra),
                       "loss_mask": pad(part["loss_mask"], extra, 0.0)})
    return {key: torch.cat([part[key] for part in padded]) for key in padded[0]}


def _select(windows: Windows, index: np.ndarray) -> Windows:
    return Windows(_rows(windows.observations, index), windows.actions[index], windows.source_hz[index],
                   windows.episode[index])


def _rows(observations, index: np.ndarray):
    """Rows ``index`` of observations: an array, or a (nested) dict of arrays."""
    if isinstance(observations, dict):
        return {key: _rows(value, index) for key, value in observations.items()}
    return np.asarray(observations)[index]
