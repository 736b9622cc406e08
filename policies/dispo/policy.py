"""The DiSPo policy: its training windows and loss, pretraining then fine-tuning, and rollouts
of target-rate chunks (the method: ``policies/dispo/__init__.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfbench.datasets import Windows
from cfbench.files import exclusive
from cfbench.tree import state_of, tree_index
from policies.base import register
from policies.diffusion import DiffusionPolicy
from policies.dispo.config import DiSPoConfig
from policies.dispo.finetuning import PseudoDemoFinetuning, concat_window_tensors
from policies.dispo.network import DiSPoNet
from policies.dispo.step_scales import DISPO_RATES, rollout_step_scales, whole_actions_per_step, window_step_scales
from policies.interpolation import rate_multiple
from policies.learning import phase_summary

#: φ_r's tensors in a checkpoint
STEP_SCALE_PREDICTOR = "net.step_scale_predictor."


@register("dispo")
class DiSPo(PseudoDemoFinetuning, DiffusionPolicy):
    config_class = DiSPoConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return DiSPoNet(c.action_dim, feature_dim, c.obs_dim, c.n_obs_steps, c.d_model, c.n_layer, c.d_state,
                        c.expand, bidirectional=c.scan_direction == "bidirectional", zoh=c.discretization == "zoh",
                        adaptive=c.adaptive)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Checkpoints with fixed step scales saved while every run built φ_r hold its weights,
        which nothing reads: dropped."""
        if not self.config.adaptive:
            tensors = {k: v for k, v in tensors.items() if not k.startswith(STEP_SCALE_PREDICTOR)}
        super().load_state_dict(tensors)

    # ---------------------------------------------------------------- training
    def prepare(self, dataset) -> dict[str, torch.Tensor]:
        """Windows at every augmentation stride, each token with its step scale and a loss mask;
        with adaptive step scales also φ_r's target, learnt on the reference-rate windows (the
        rollout's observation spacing)."""
        c = self.config
        c.reference_hz = dataset.reference_hz
        parts = []
        for stride in c.augment_strides:
            windows = dataset.windows(c.n_obs_steps, c.horizon, stride=stride)
            data = self.window_tensors(dataset, windows)
            data["step_scale"] = window_step_scales(c, windows, finer=1)
            data["loss_mask"] = torch.ones(len(windows), windows.actions.shape[1])
            if c.adaptive:
                data["straightness_target"] = torch.as_tensor(self.straightness_targets(windows),
                                                              dtype=torch.float32)
                data["straightness_mask"] = torch.as_tensor((stride == 1) & (windows.source_hz == c.reference_hz),
                                                            dtype=torch.float32)
            parts.append(data)
        return concat_window_tensors(parts)

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Denoising MSE on the unmasked action tokens + λ · observation reconstruction (+ φ_r's loss).
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
        loss = action_loss + c.obs_loss_weight * reconstruction_loss
        return loss + self.straightness_loss(features, batch) if c.adaptive else loss

    def straightness_loss(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """φ_r's MSE on the windows it learns from, on detached features: it shapes no other part."""
        straightness = torch.sigmoid(self.model.net.step_scale_predictor(features.detach()))
        weight = batch["straightness_mask"]
        return ((straightness - batch["straightness_target"]).square() * weight).sum() / weight.sum().clamp(min=1)

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
        return self.finetune(dataset, history, work_dir=work_dir, validate=validate, progress=progress)

    def pretraining_identity(self) -> dict[str, Any]:
        return self.phase_identity(0)

    def phase_identity(self, phase: int) -> dict[str, Any]:
        identity = self.config.identity()
        return identity if phase else {k: v for k, v in identity.items() if k not in self.config.FINETUNE_FIELDS}

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def predicted_action_scale(self, obs_history, target_hz: float) -> torch.Tensor:
        """φ_r's step scale r_a of the action tokens (B,): from the target rate's own,
        ω_ref / ω_target, up to max_speedup times coarser. Always positive."""
        features, _ = self.encode(obs_history)
        straightness = torch.sigmoid(self.model.net.step_scale_predictor(features))
        return self.config.reference_hz / target_hz * self.config.max_speedup ** straightness

    def actions_per_step(self, obs_history, source_hz: float, target_hz: float) -> np.ndarray:
        """Actions each slot's next chunk gives one source step: target_hz / source_hz with fixed
        step scales; with adaptive ones, φ_r's step rounded to a whole number of actions."""
        c = self.config
        finer = rate_multiple(source_hz, target_hz, DISPO_RATES)
        if not c.adaptive:
            return np.full(len(state_of(obs_history)), finer)
        action_scales = self.predicted_action_scale(obs_history, target_hz).cpu().numpy()
        return whole_actions_per_step(c.reference_hz / source_hz, action_scales, finer, c.max_speedup)

    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float):
        """One chunk per slot covering n_action_steps source steps; slots whose chunks have the
        same step size are denoised together. Chunks of different lengths come as a list."""
        c = self.config
        self.check_started(slots, self._generators)
        per_step = self.actions_per_step(obs_history, reference_hz, target_hz)
        chunks: list[np.ndarray] = [np.empty(0)] * len(slots)
        for count in np.unique(per_step):
            rows = np.flatnonzero(per_step == count)
            step_scale = rollout_step_scales(c, reference_hz, count * reference_hz).to(self.device)
            actions = self.sample_actions(tree_index(obs_history, rows), [slots[i] for i in rows],
                                          n_actions=len(step_scale) - c.n_obs_steps,
                                          step_scale=step_scale.expand(len(rows), -1))
            start = c.n_obs_steps - 1  # the current action: the first to apply
            for i, chunk in zip(rows, actions):
                chunks[i] = chunk[start : start + c.n_action_steps * count]
        return np.stack(chunks) if len(np.unique(per_step)) == 1 else chunks
