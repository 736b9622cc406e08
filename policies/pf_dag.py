"""PF-DAG (Lei et al., ICLR 2026, "Primary-Fine Decoupling for Action Generation"): a discrete
*primary mode* says which way to go, a one-step MeanFlow generates exactly where.

Only the paper's abstract is public and no code exists, so the design is ours, built from it:

1. **Primary modes.** The normalised task-frame action chunks (``horizon`` x action_dim, the
   chunk DP-C predicts) are compressed into ``n_modes`` discrete modes by a
   ``vector_quantize_pytorch`` codebook over the flattened chunks, k-means-initialised and then
   refined by its codebook loss (online k-means) in the first training phase; the phase
   records how many modes the training chunks use.
2. **Mode selector.** An MLP over the observation history's features picks the mode, trained
   with cross-entropy on each window's own mode. At rollout it takes the most probable mode, but
   keeps the previous chunk's mode unless another one is more probable by ``mode_margin``: the
   paper's "consistent coarse modes, no mode bouncing" as a rule.
3. **Mode-conditioned MeanFlow** (``policies/meanflow.py``): DP-C's 1-D U-Net predicts the
   average velocity u(z, r, t | observation, mode); the flow time t enters as its step
   embedding, the interval t - r and the mode as embeddings added to its FiLM condition.
   Trained on the window's own mode (teacher forcing), sampled in ``sampling_steps`` (2 by
   default: one step lost 14 points of validation success at the CPU budget; the paper's is 1)
   from the selector's mode, with (r, t) drawn uniformly (the paper's logit-normal pairs
   rarely trained the one-step jump here).

Both parts of step 2 and 3 train together in the second phase of the shared loop (validation
and checkpoint selection there), the codebook frozen. Departures we chose: modes from k-means
on the action chunks themselves (no encoder: with 16 x 2-3 numbers per chunk one is not
needed), the hysteresis rule, and the U-Net sizes of DP-C (the comparison the issue asks for:
same backbone, one sampler step instead of ten). The ``no-modes`` variant (K = 1) is the
decoupling's ablation: the same MeanFlow with nothing for the selector to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from policies.base import register
from policies.chunking import ChunkPolicy, HorizonConfig
from policies.dp_c import ConditionalUnet1D, UNetConfig
from policies.learning import append_phase, phase_summary, set_trainable
from policies.meanflow import TIME_SAMPLERS, meanflow_loss, meanflow_sample
from policies.modules import TIME_SCALE, MinMaxNormalizer, ObservationEncoder, StepEncoder


@dataclass
class PFDAGConfig(UNetConfig, HorizonConfig):
    #: number of primary modes K (the abstract: "a small set"). Chosen on the validation seeds
    #: (PassagePassing 20 Hz, uniform times, 2 steps, 5000 flow steps): K = 4 / 8 / 16 gave
    #: 70 / 64 / 56 % success, waypoint error 1.48 / 1.56 / 1.80 (success within about one
    #: standard error of 50 episodes; the waypoint error falls the same way)
    n_modes: int = 4
    #: optimiser steps of the mode phase (the codebook's online k-means)
    mode_steps: int = 500
    #: learning rate of the mode phase
    mode_lr: float = 1e-2
    #: keep the previous chunk's mode unless another mode's probability exceeds it by this much
    mode_margin: float = 0.1
    #: hidden width of the mode selector's MLP
    selector_hidden_dim: int = 256
    #: weight of the selector's cross-entropy beside the MeanFlow loss
    selector_loss_weight: float = 1.0
    #: size of the mode and interval embeddings added to the U-Net's condition
    mode_embed_dim: int = 64
    #: share of training samples with r < t (MeanFlow's ablation: 25 %; the rest are r = t)
    flow_distinct_share: float = 0.25
    #: power p of MeanFlow's adaptive loss weight 1 / (||error||^2 + 1e-3)^p (the paper's: 1)
    flow_weight_power: float = 1.0
    #: how MeanFlow's (r, t) pairs are drawn: "uniform" (the paper's ablation's other sampler;
    #: more pairs near the one-step jump r = 0, t = 1) or "logit-normal" (the paper's default).
    #: Chosen on the validation seeds (PassagePassing 20 Hz, K = 8, 5000 flow steps): uniform
    #: 64 % success, waypoint error 1.56 in 2 steps and 50 %, 1.92 in one; logit-normal 62 %,
    #: 1.59 in 2 steps but 0 %, 19.2 in one (it rarely trains the whole jump)
    flow_time_sampler: str = "uniform"
    #: MeanFlow jumps from noise to a chunk at rollout (the paper's: 1). Chosen on the validation
    #: seeds (the runs above): 2 steps 64 % against one step's 50 %
    sampling_steps: int = 2
    #: optimiser steps of the selector + MeanFlow phase
    train_steps: int = 5000

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        **HorizonConfig.variants,
        "no-modes": {"n_modes": 1},  # one mode for every chunk: the MeanFlow alone, without the decoupling
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"flow_time_sampler": TIME_SAMPLERS}
    LIMITS: ClassVar[dict[str, str]] = {
        "mode_steps": "positive", "mode_lr": "positive", "mode_margin": "non-negative",
        "selector_hidden_dim": "positive", "selector_loss_weight": "non-negative", "mode_embed_dim": "positive",
        "flow_distinct_share": "fraction", "flow_weight_power": "non-negative", "sampling_steps": "positive"}

    def __post_init__(self):
        super().__post_init__()
        if self.n_modes < 1:
            raise ValueError(f"n_modes={self.n_modes} must be 1 (no decoupling) or more")


class MeanFlowNet(nn.Module):
    """u(z, r, t | features, mode): DP-C's U-Net with the interval t - r and the mode embedded
    into its condition (no in-place operations: forward-mode AD goes through it)."""

    def __init__(self, c: PFDAGConfig, feature_dim: int):
        super().__init__()
        self.mode_embedding = nn.Embedding(c.n_modes, c.mode_embed_dim)
        self.interval_encoder = StepEncoder(c.mode_embed_dim)
        self.unet = ConditionalUnet1D(c.action_dim, feature_dim * c.n_obs_steps + 2 * c.mode_embed_dim, c.down_dims,
                                      c.kernel_size, c.n_groups, c.step_embed_dim)

    def forward(self, z, r, t, features, modes):
        cond = torch.cat([features.flatten(1), self.mode_embedding(modes),
                          self.interval_encoder(TIME_SCALE * (t - r))], dim=-1)
        return self.unet(z, TIME_SCALE * t, cond)


class PFDAGModel(nn.Module):
    def __init__(self, c: PFDAGConfig, obs_encoder: ObservationEncoder):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.action_normalizer = MinMaxNormalizer(c.action_dim)
        self.modes = VectorQuantize(dim=c.horizon * c.action_dim, codebook_size=c.n_modes, kmeans_init=True,
                                    kmeans_iters=10, learnable_codebook=True, ema_update=False)
        flat = obs_encoder.feature_dim * c.n_obs_steps
        self.selector = nn.Sequential(nn.Linear(flat, c.selector_hidden_dim), nn.Mish(),
                                      nn.Linear(c.selector_hidden_dim, c.selector_hidden_dim), nn.Mish(),
                                      nn.Linear(c.selector_hidden_dim, c.n_modes))
        self.flow = MeanFlowNet(c, obs_encoder.feature_dim)


def choose_modes(probabilities: torch.Tensor, previous: list[int | None], margin: float) -> list[int]:
    """The most probable mode of each row, unless the row's previous mode is within ``margin`` of it."""
    best = probabilities.argmax(dim=1).tolist()
    chosen = []
    for row, (top, kept) in enumerate(zip(best, previous)):
        stay = kept is not None and probabilities[row, top] - probabilities[row, kept] <= margin
        chosen.append(kept if stay else top)
    return chosen


@register("pf-dag")
class PFDAG(ChunkPolicy):
    config_class = PFDAGConfig

    def __init__(self, config: PFDAGConfig | None = None):
        super().__init__(config)
        self._modes: dict[int, int | None] = {}

    def build_model(self) -> nn.Module:
        c = self.config
        return PFDAGModel(c, ObservationEncoder(c.obs_dim, c.views, c.resnet_width))

    # ---------------------------------------------------------------- training
    def _chunks(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.action_normalizer.normalize(batch["actions"])

    def mode_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Phase 0: the codebook towards its chunks' means (online k-means), plus commitment."""
        flat = self._chunks(batch).flatten(1)
        quantized, _, commitment = self.model.modes(flat)
        return F.mse_loss(quantized, flat) + commitment

    @torch.no_grad()
    def modes_of(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.model.modes(chunks.flatten(1), freeze_codebook=True)[1]

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Phase 1: the selector's cross-entropy and the MeanFlow loss on the window's own mode."""
        c = self.config
        chunks = self._chunks(batch)
        modes = self.modes_of(chunks)
        features = self.model.obs_encoder(self._observations(batch))
        selector = F.cross_entropy(self.model.selector(features.flatten(1)), modes)
        flow = meanflow_loss(lambda z, r, t: self.model.flow(z, r, t, features, modes), chunks, generator,
                             c.flow_distinct_share, c.flow_weight_power, c.flow_time_sampler)
        return flow + c.selector_loss_weight * selector

    def fit(self, dataset, *, work_dir=None, validate=None, progress: bool = True) -> dict[str, Any]:
        """The modes (no validation: they cannot act alone), then selector and MeanFlow on the
        frozen codebook, each phase resumable in its own sub-folder."""
        c = self.config
        data = self.setup(dataset)
        folder = (lambda name: Path(work_dir) / name) if work_dir is not None else (lambda name: None)
        codebook = [self.model.modes]
        rest = [m for name, m in self.model.named_children() if name != "modes"]
        set_trainable(codebook, True)
        set_trainable(rest, False)
        history = self.optimise(data, c.mode_steps, work_dir=folder("modes"), progress=progress, lr=c.mode_lr,
                                loss=self.mode_loss)
        history["phases"] = [{**phase_summary("modes", history, 0), **self.mode_usage(data)}]
        set_trainable(codebook, False)
        set_trainable(rest, True)
        result = self.optimise(data, c.train_steps, work_dir=folder("flow"), validate=validate, progress=progress,
                               phase=1)
        return append_phase(history, result, "selector + MeanFlow")

    @torch.no_grad()
    def mode_usage(self, data: dict[str, torch.Tensor]) -> dict[str, Any]:
        """How many training windows each mode holds, and the codebook's mean squared distance
        to its chunks (normalised units)."""
        self.model.eval()
        chunks = self._chunks(data).flatten(1)
        modes = self.modes_of(chunks)
        centres = self.model.modes.get_output_from_indices(modes)
        counts = torch.bincount(modes, minlength=self.config.n_modes)
        return {"windows_per_mode": counts.tolist(), "modes_used": int((counts > 0).sum()),
                "quantization_mse": float(((centres - chunks) ** 2).mean())}

    # ----------------------------------------------------------------- rollout
    def reset(self, slot: int, context) -> None:
        super().reset(slot, context)
        self._modes[slot] = None

    @torch.no_grad()
    def predict_chunk(self, obs_history, slots: list[int]) -> np.ndarray:
        c = self.config
        features, frame = self.encode(obs_history)
        probabilities = torch.softmax(self.model.selector(features.flatten(1)), dim=-1).cpu()
        chosen = choose_modes(probabilities, [self._modes[s] for s in slots], c.mode_margin)
        for slot, mode in zip(slots, chosen):
            self._modes[slot] = mode
        modes = torch.tensor(chosen, device=features.device)
        noise = self.chunk_noise(slots, c.horizon)
        chunk = meanflow_sample(lambda z, r, t: self.model.flow(z, r, t, features, modes), noise.to(features.device),
                                c.sampling_steps)
        poses = frame.poses_to_world(self.model.action_normalizer.unnormalize(chunk.clamp(-1, 1)).cpu().numpy())
        return poses[:, c.n_obs_steps - 1 :]  # past actions dropped
