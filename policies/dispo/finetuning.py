"""DiSPo's fine-tuning with pseudo demonstrations (paper section IV-B), in rounds.

Each round doubles the rate, from the reference rate up to ``target_hz`` (2x, 4x, 8x for
2.5 -> 20 Hz). In a round the model generates every demo window at the finer rate while the
demo's own actions, noised to the current level, are written over their places after every
denoising step (inpainting, through the shared sampler's ``after_step`` hook); the overlapping
chunks of an episode are merged by ACT's temporal ensemble. The model is then co-fine-tuned on
the pseudo and the original windows, with the loss on the demo actions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfbench.datasets import DemoDataset, Windows
from cfbench.protocol import mix_seed
from cfbench.tree import state_of
from policies.dispo.config import finetune_rounds
from policies.dispo.step_scales import window_step_scales
from policies.frames import Frame
from policies.learning import append_phase


class PseudoDemoFinetuning:
    """The fine-tuning rounds, a part of the ``DiSPo`` policy class (its windows, sampler and
    training loop), kept beside their own description."""

    def finetune(self, dataset, history: dict[str, Any], *, work_dir, validate, progress: bool) -> dict[str, Any]:
        """Every round after pretraining, each a training phase resumable in ``work_dir/finetune-<k>x``;
        returns ``history`` extended by the rounds (the final weights are the last round's best)."""
        rounds = finetune_rounds(self.config)
        if not rounds:
            return history
        originals = {k: v.to(self.device) for k, v in self.training_windows(dataset).items()}
        for phase, finer in enumerate(rounds, start=1):
            data = concat_window_tensors([originals, self.pseudo_demonstrations(dataset, finer)])
            phase_dir = Path(work_dir) / f"finetune-{finer}x" if work_dir is not None else None
            result = self.optimise(data, self.config.finetune_steps, work_dir=phase_dir, validate=validate,
                                   progress=progress, phase=phase)
            name = f"fine-tuning at {finer}x ({finer * self.config.reference_hz:g} Hz)"
            history = append_phase(history, result, name)
        return history

    @torch.no_grad()
    def pseudo_windows(self, dataset, finer: int) -> tuple[DemoDataset, Windows, np.ndarray]:
        """The pseudo demonstrations in world coordinates: the reference-rate episodes' windows with
        their future actions ``finer`` times denser than the demos' (the demo's own actions stay at
        every ``finer``-th slot), and those slots. Only episodes at the reference rate are densified
        (a mixed-rate dataset keeps its other episodes as they are, in the original windows)."""
        c = self.config
        episodes = [e for e in dataset.episodes if e.source_hz == c.reference_hz]
        subset = DemoDataset(dataset.env_id, dataset.rates, dataset.obs_mode, episodes)
        windows = subset.windows(c.n_obs_steps, c.horizon)
        n_past, n_future = c.n_obs_steps - 1, c.horizon - c.n_obs_steps + 1
        demo_slots = np.concatenate([np.arange(n_past), n_past + finer * np.arange(1, n_future + 1) - 1])
        step_scale = window_step_scales(c, windows, finer)
        self.model.eval()
        batches = np.array_split(np.arange(len(windows)), max(1, len(windows) // c.generation_batch))
        fine = np.concatenate([self._inpaint(subset, windows.subset(index), finer, demo_slots, step_scale[index])
                               for index in batches])  # (N, n_past + n_future * finer, pose), world coordinates
        dense = temporal_ensemble(windows, fine[:, n_past:], finer, c.ensemble_decay)
        actions = np.concatenate([windows.actions[:, :n_past], dense], axis=1)
        return subset, Windows(windows.observations, actions, windows.source_hz, windows.episode), demo_slots

    def pseudo_demonstrations(self, dataset, finer: int) -> dict[str, torch.Tensor]:
        """Fine-tuning tensors of the pseudo demonstrations: the loss mask keeps the demo's own
        actions, the past ones and every ``finer``-th future one."""
        subset, pseudo, demo_slots = self.pseudo_windows(dataset, finer)
        data = self.window_tensors(subset, pseudo)
        data["step_scale"] = window_step_scales(self.config, pseudo, finer)
        mask = torch.zeros(len(pseudo), pseudo.actions.shape[1])
        mask[:, demo_slots] = 1.0
        data["loss_mask"] = mask
        if self.config.adaptive:  # φ_r learns from the original windows only
            data["straightness_target"] = data["straightness_mask"] = torch.zeros(len(pseudo))
        return {k: v.to(self.device) for k, v in data.items()}

    def _inpaint(self, dataset, windows: Windows, finer: int, demo_slots: np.ndarray,
                 step_scale: torch.Tensor) -> np.ndarray:
        """Denoise the fine sequences of some windows (their step scales given) with the demo
        actions, noised to the sample's level, written over their slots after every step."""
        c, device = self.config, self.device
        batch = {k: v.to(device) for k, v in self.window_tensors(dataset, windows).items()}
        features = self.model.obs_encoder(self._observations(batch))
        known = self.model.action_normalizer.normalize(batch["actions"])  # (B, horizon, pose) demo actions
        step_scale = step_scale.to(device)
        n_actions = step_scale.shape[1] - c.n_obs_steps
        generator = torch.Generator().manual_seed(mix_seed(c.seed, finer))
        noise = torch.randn((len(windows), n_actions, c.action_dim), generator=generator).to(device)

        def write_demo_actions(x: torch.Tensor, next_timestep) -> torch.Tensor:
            if next_timestep is None:
                x[:, demo_slots] = known
            else:
                level = torch.randn(known.shape, generator=generator).to(device)
                x[:, demo_slots] = self.train_scheduler.add_noise(known, level, next_timestep.expand(len(x)))
            return x

        x = self.denoise(noise, features, generator, after_step=write_demo_actions, step_scale=step_scale)
        frame = Frame(c.frame, c.state_layout, state_of(windows.observations)[:, -1])
        return frame.poses_to_world(self.model.action_normalizer.unnormalize(x).cpu().numpy())


def temporal_ensemble(windows: Windows, fine: np.ndarray, finer: int, decay: float) -> np.ndarray:
    """Merge the overlapping fine chunks of each episode with ACT's weights exp(-decay i) (i = 0
    for the oldest prediction of an action) and cut every window's future back out of the
    merged sequence, padded with the episode's last pose."""
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
            weight = np.exp(-decay * counts[span])  # earlier predictions weigh more
            sums[span] += weight[:, None] * fine[row, : len(span)]
            weights[span] += weight
            counts[span] += 1
        merged = sums / weights[:, None]
        for step, row in enumerate(rows):
            dense[row] = merged[np.minimum(step * finer + np.arange(length), total - 1)]
    return dense


def concat_window_tensors(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate window tensors whose action sequences differ in length (pseudo windows are
    longer): shorter ones are padded at the end with their last entry, masked out of the loss,
    at step scale 0, so that no time passes over them: they change no state, in either scan
    direction, and the real tokens' outputs are those of the unpadded window."""
    n_actions = max(part["actions"].shape[1] for part in parts)

    def pad(x: torch.Tensor, extra: int, value: float | None = None) -> torch.Tensor:
        if extra == 0:
            return x
        tail = x[:, -1:].expand(-1, extra, *x.shape[2:]) if value is None else x.new_full((len(x), extra), value)
        return torch.cat([x, tail], dim=1)

    padded = []
    for part in parts:
        extra = n_actions - part["actions"].shape[1]
        padded.append({**part, "actions": pad(part["actions"], extra),
                       "step_scale": pad(part["step_scale"], extra, 0.0),
                       "loss_mask": pad(part["loss_mask"], extra, 0.0)})
    return {key: torch.cat([part[key] for part in padded]) for key in padded[0]}
