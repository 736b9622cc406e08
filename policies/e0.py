"""E0 ("Tweedie discrete diffusion" for action generation, ../shared/docs/papers/e0-*.md), without
the VLM: actions quantised into bins, Gaussian noise on their (scaled) one-hot vectors, and a
denoiser that answers with a categorical distribution per action position.

The paper's pipeline (sections 3.2, A.1), on the shared chunking machinery:

- **Quantisation.** Per action dimension of the normalised task-frame chunk, ``bins`` bins
  between the 1st and 99th percentiles of the training actions (the paper's quantile
  normalisation, Eq. 21), evenly spaced (``bin_spacing="uniform"``, the paper's) or at
  equal-mass quantiles (``"quantile"``); values outside fall in the end bins. Detokenising
  takes the probability-weighted mean of the bin centres (``detokenize="mean"``, chosen on the
  validation seeds), or the chosen bins' centres (``"centre"``, the paper's).
- **Forward process.** x_t = t · s · onehot + (1 - t) · ε (π0's convention: t = 1 is data),
  s = ``onehot_scale`` (the paper's "smooth factor", best at 0.1 in its Tab. 6), t = 0.999 (1 - u)
  with u ~ Beta(``time_beta``, 1) (π0's schedule: biased towards high noise).
- **Denoiser.** DP-T's transformer decoder (``policies/dp_t.py``) over the ``horizon`` time steps,
  each token the concatenated noisy one-hots of its ``action_dim`` positions (``action_dim · bins``
  inputs), logits for every position out; observation tokens and t in its memory. Loss:
  cross-entropy to the true bins. (The other layout, one token per time step and dimension, is
  measured in ``benchmarks/policy_speed.py``.)
- **Inference.** From noise at t = 0, ``refinement_steps`` steps at t_k = k / N: predict the
  categorical, take its argmax (or sample at ``temperature``), re-noise that one-hot to t_{k+1};
  detokenise the last prediction. Observation features are computed once per chunk.

**The released hybrid** (``--variant hybrid``; the authors' code, ``Doo-mon/e0``, differs from
the paper): a flow-matching velocity head (``policies/meanflow.py``'s flow, t = 1 is noise) next to
the Tweedie head on the same denoiser, each token also carrying the noisy continuous action and
answering with its velocity; loss 0.5 · MSE + 0.5 · cross-entropy; both processes at one time
t = 0.001 + 0.999 u (the schedule above, mirrored), the one-hots unscaled in training; at rollout
``refinement_steps`` Euler steps, each re-noising the argmax one-hot as s · onehot + ε; the action
executed is the average of the two heads' (``hybrid_output`` picks one head alone). The release
has one token per (step, dimension) and decodes bins to their lower edges; here the tokens stay
per time step and bins decode to centres (``detokenize="lower-edge"`` is the release's).

Our choices where the text is silent: the denoiser and its sizes (DP-T's, so the two compare
directly), the step embedding of t (the diffusion policies' sinusoidal one over 0-100), and
noise drawn from each slot's episode generator (rollouts do not depend on batching).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.base import register
from policies.chunking import ChunkPolicy, HorizonConfig
from policies.dp_t import TransformerConfig, TransformerDenoiser
from policies.meanflow import flow_point, flow_step
from policies.modules import TIME_SCALE, MinMaxNormalizer, ObservationEncoder

BIN_SPACINGS = ("uniform", "quantile")
DETOKENIZERS = ("centre", "mean", "lower-edge")
HEADS = ("discrete", "hybrid")
HYBRID_OUTPUTS = ("average", "flow", "discrete")
RENOISINGS = ("released", "schedule")
#: the share of the training actions' range the bins cover: from this quantile to 1 minus it
OUTLIER_QUANTILE = 0.01
#: t never reaches 1 in training (π0's 0.999): the network always sees some noise
MAX_TRAIN_TIME = 0.999

#: logits (B, P, bins) of the clean bins from noisy one-hots (B, P, bins) and times (B,)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: the hybrid's (velocities (B, H, dim), logits (B, P, bins)) from the noisy chunk (B, H, dim),
#: the noisy one-hots (B, P, bins) and the times (B,), t = 1 being noise
HybridDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class E0Config(TransformerConfig, HorizonConfig):
    #: bins per action dimension. PassagePassing 20 Hz, validation seeds, 10k steps: 64 bins 44 %
    #: success, waypoint error 2.19; 256 bins 38 %, 1.77; 1024 bins 8 %, 2.54 (the paper saturates
    #: near 2048 on LIBERO, with far more training; here a larger vocabulary learns too slowly).
    #: Released code: 2048
    bins: int = 256
    #: "uniform" bins between the 1st and 99th percentiles (the paper's), or equal-mass "quantile" bins
    bin_spacing: str = "uniform"
    #: amplitude s of the one-hot before noise (the paper's smooth factor; its best: 0.1). Released
    #: code: 0.1 when re-noising at rollout only, the training one-hots unscaled
    onehot_scale: float = 0.1
    #: t = 0.999 (1 - u), u ~ Beta(time_beta, 1): π0's schedule, biased towards high noise (paper
    #: and released code: 1.5)
    time_beta: float = 1.5
    #: refinement steps at rollout (the paper: "a few"; released code: 10)
    refinement_steps: int = 8
    #: 0: argmax at every refinement step (released code); above 0: sample the categorical at this temperature
    temperature: float = 0.0
    #: "centre": the chosen bins' centres; "mean": the last categorical's mean over bin centres.
    #: "mean" had the lower waypoint error at every bin count (64 / 256 / 1024 bins: 1.98 / 1.62 /
    #: 2.31 against 2.19 / 1.77 / 2.54) and 46 % validation success at 256 bins against 38 %.
    #: "lower-edge": the chosen bins' lower edges (released code's decoding)
    detokenize: str = "mean"
    #: "discrete": the paper's Tweedie head alone; "hybrid": the released code's flow + Tweedie heads.
    #: Validation (docs/e0-hybrid.md): discrete 58 % / 22 % at 20 Hz (PassagePassing / ButtonTouch)
    #: against the released hybrid's 0 % / 0 %, both 0-2 % from 5 Hz demos
    heads: str = "discrete"
    #: the hybrid's loss: this weight on the flow head's MSE, 1 minus it on the cross-entropy
    #: (released code: 0.5)
    flow_loss_weight: float = 0.5
    #: the hybrid's action: the "average" of its heads' (released code), or one head alone (a
    #: rollout setting: the heads alone re-evaluate the trained hybrid)
    hybrid_output: str = "average"
    #: how the hybrid's sampler re-noises its argmax one-hots: "released" (released code: s · onehot
    #: + ε, off the training process's path), or "schedule": (1 - t) · onehot + t · ε at the next t,
    #: the training process's own mix (on a toy mixture, the flow head's spread 0.78 against 0.41)
    renoise: str = "released"

    #: the authors' released configuration (released code: 2048 bins, 10 steps, argmax one-hots
    #: re-noised at scale 0.1; it decodes to lower edges, we keep bin centres), and its heads alone
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        **HorizonConfig.variants,
        "hybrid": (hybrid := {"heads": "hybrid", "bins": 2048, "refinement_steps": 10, "onehot_scale": 0.1,
                              "time_beta": 1.5, "temperature": 0.0, "detokenize": "centre"}),
        "hybrid-flow": {**hybrid, "hybrid_output": "flow"},
        "hybrid-discrete": {**hybrid, "hybrid_output": "discrete"},
    }
    NEUTRAL: ClassVar[dict[str, Any]] = {"heads": "discrete", "flow_loss_weight": 0.5, "hybrid_output": "average",
                                         "renoise": "released"}
    ROLLOUT: ClassVar[tuple[str, ...]] = ("hybrid_output",)
    LIMITS: ClassVar[dict[str, str]] = {"onehot_scale": "positive", "time_beta": "positive",
                                        "refinement_steps": "positive", "temperature": "non-negative",
                                        "flow_loss_weight": "fraction"}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"bin_spacing": BIN_SPACINGS, "detokenize": DETOKENIZERS,
                                                        "heads": HEADS, "hybrid_output": HYBRID_OUTPUTS,
                                                        "renoise": RENOISINGS}

    def __post_init__(self):
        super().__post_init__()
        if self.bins < 2:
            raise ValueError(f"bins={self.bins} must be 2 or more")


class ActionBins(nn.Module):
    """Per-dimension bin edges (a buffer: saved with the model), fitted to training actions."""

    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.register_buffer("edges", torch.linspace(-1, 1, bins + 1).repeat(dim, 1))

    @property
    def bins(self) -> int:
        return self.edges.shape[1] - 1

    @torch.no_grad()
    def fit(self, values: torch.Tensor, spacing: str = "uniform") -> ActionBins:
        """Edges from the 1st to the 99th percentile of ``values`` (N, dim): even, or at quantiles."""
        values = values.reshape(-1, self.edges.shape[0]).double()
        levels = torch.linspace(OUTLIER_QUANTILE, 1 - OUTLIER_QUANTILE, self.bins + 1, dtype=torch.float64)
        for d, column in enumerate(values.T):
            low, high = torch.quantile(column, OUTLIER_QUANTILE), torch.quantile(column, 1 - OUTLIER_QUANTILE)
            constant = high - low < 1e-6
            if constant:  # bins of a small width around the value
                low, high = low - 1e-3, high + 1e-3
            if spacing == "quantile" and not constant:
                # equal-mass edges repeat where values do: a tiny ramp keeps them strictly increasing
                ramp = 1e-6 * (high - low) * torch.arange(self.bins + 1, dtype=torch.float64)
                edges = torch.cummax(torch.quantile(column, levels), 0).values + ramp
            else:
                edges = torch.linspace(low, high, self.bins + 1, dtype=torch.float64)
            self.edges[d] = edges.float()
        return self

    def centres(self) -> torch.Tensor:
        return (self.edges[:, :-1] + self.edges[:, 1:]) / 2

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) values -> (..., dim) bin indices (out-of-range values to the end bins)."""
        flat = x.reshape(-1, x.shape[-1]).T.contiguous()
        indices = torch.searchsorted(self.edges[:, 1:-1].contiguous(), flat, right=True)
        return indices.T.reshape(x.shape)

    def detokenize(self, indices: torch.Tensor, lower_edges: bool = False) -> torch.Tensor:
        """(..., dim) bin indices -> their centres, or their lower edges (the released code's)."""
        points = self.edges[:, :-1] if lower_edges else self.centres()
        return torch.stack([points[d][indices[..., d]] for d in range(points.shape[0])], dim=-1)

    def expected(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(..., dim, bins) categoricals -> (..., dim) means over the bin centres."""
        return (probabilities * self.centres()).sum(-1)


# ------------------------------------------------------ the discrete diffusion
def sample_times(n: int, beta: float, generator: torch.Generator) -> torch.Tensor:
    """t = 0.999 (1 - u), u ~ Beta(beta, 1), by inverting its CDF u^beta (seeded generator)."""
    u = torch.rand(n, generator=generator) ** (1.0 / beta)
    return MAX_TRAIN_TIME * (1.0 - u)


def noised_onehot(indices: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, scale: float) -> torch.Tensor:
    """The forward process at times t (B,): t · s · onehot(indices) + (1 - t) · noise, (B, P, bins)."""
    onehot = F.one_hot(indices, noise.shape[-1]).to(noise.dtype)
    t = t.reshape(-1, *([1] * (noise.dim() - 1)))
    return t * scale * onehot + (1 - t) * noise


def tweedie_loss(denoiser: Denoiser, indices: torch.Tensor, bins: int, scale: float, beta: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the denoiser's categoricals to the true bins (B, P) at random noise levels."""
    t = sample_times(len(indices), beta, generator).to(indices.device)
    noise = torch.randn((*indices.shape, bins), generator=generator).to(indices.device)
    logits = denoiser(noised_onehot(indices, t, noise, scale), t)
    return F.cross_entropy(logits.reshape(-1, bins), indices.reshape(-1))


def pick_bins(logits: torch.Tensor, temperature: float, generators: list[torch.Generator] | None) -> torch.Tensor:
    """(B, P) bins from logits (B, P, bins): the argmax, or samples at ``temperature`` (one generator per row)."""
    if temperature == 0:
        return logits.argmax(-1)
    probabilities = torch.softmax(logits / temperature, dim=-1).cpu()
    return torch.stack([torch.multinomial(row, 1, generator=g).squeeze(-1)
                        for row, g in zip(probabilities, generators)]).to(logits.device)


def tweedie_sample(denoiser: Denoiser, noise: Callable[[], torch.Tensor], steps: int, scale: float,
                   temperature: float = 0.0, generators: list[torch.Generator] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative refinement from noise: the final bins (B, P) and the last logits (B, P, bins).
    ``noise()`` gives a fresh (B, P, bins) draw for each step; sampling at ``temperature`` uses
    one generator per row."""
    x = noise()
    for k in range(steps):
        logits = denoiser(x, torch.full((len(x),), k / steps, device=x.device))
        indices = pick_bins(logits, temperature, generators)
        if k + 1 < steps:
            t_next = torch.full((len(x),), (k + 1) / steps, device=x.device)
            x = noised_onehot(indices, t_next, noise().to(x.device), scale)
    return indices, logits


# ------------------------------------------------------ the released hybrid
def hybrid_loss(denoiser: HybridDenoiser, actions: torch.Tensor, indices: torch.Tensor, bins: int,
                flow_weight: float, beta: float, generator: torch.Generator) -> torch.Tensor:
    """flow_weight · MSE of the velocities + (1 - flow_weight) · cross-entropy of the bins, both
    processes at one time t = 1 - (E0's t) per sample, the one-hots unscaled (as released)."""
    t = (1 - sample_times(len(actions), beta, generator)).to(actions.device)
    z, velocity = flow_point(actions, torch.randn(actions.shape, generator=generator).to(actions.device), t)
    noise = torch.randn((*indices.shape, bins), generator=generator).to(indices.device)
    v, logits = denoiser(z, noised_onehot(indices, 1 - t, noise, 1.0), t)
    cross_entropy = F.cross_entropy(logits.reshape(-1, bins), indices.reshape(-1))
    return flow_weight * F.mse_loss(v, velocity) + (1 - flow_weight) * cross_entropy


def hybrid_sample(denoiser: HybridDenoiser, z: torch.Tensor, noise: Callable[[], torch.Tensor], steps: int,
                  scale: float, temperature: float = 0.0, generators: list[torch.Generator] | None = None,
                  renoise: str = "released") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both heads from t = 1 to 0 in ``steps`` steps: Euler on the chunk ``z`` (noise in), and
    the bins re-noised after each step, as scale · onehot + noise() (the released sampler) or
    along the training schedule. Returns the chunk, the final bins (B, P) and the last logits."""
    x = noise()
    for k in range(steps):
        t, r = 1 - k / steps, 1 - (k + 1) / steps
        v, logits = denoiser(z, x, torch.full((len(z),), t, device=z.device))
        indices = pick_bins(logits, temperature, generators)
        z = flow_step(z, v, r, t)
        if k + 1 < steps and renoise == "schedule":
            x = noised_onehot(indices, torch.full((len(z),), 1 - r, device=z.device), noise().to(x.device), 1.0)
        elif k + 1 < steps:
            x = scale * F.one_hot(indices, x.shape[-1]).to(x.dtype) + noise().to(x.device)
    return z, indices, logits


# --------------------------------------------------------------------- policy
class E0Model(nn.Module):
    def __init__(self, c: E0Config, obs_encoder: ObservationEncoder):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.action_normalizer = MinMaxNormalizer(c.action_dim)
        self.bins = ActionBins(c.action_dim, c.bins)
        width = c.action_dim * c.bins + (c.action_dim if c.heads == "hybrid" else 0)  # + the flow's action
        self.net = TransformerDenoiser(width, obs_encoder.feature_dim, c.horizon, c.n_obs_steps,
                                       c.n_layer, c.n_head, c.n_emb, c.p_drop_emb, c.p_drop_attn)


@register("e0")
class E0(ChunkPolicy):
    config_class = E0Config

    def build_model(self) -> nn.Module:
        c = self.config
        return E0Model(c, ObservationEncoder(c.obs_dim, c.views, c.resnet_width))

    def initialise(self, data: dict[str, torch.Tensor]) -> None:
        super().initialise(data)
        normalised = self.model.action_normalizer.normalize(data["actions"])
        self.model.bins.fit(normalised.reshape(-1, self.config.action_dim), self.config.bin_spacing)

    def denoiser(self, features: torch.Tensor) -> Denoiser:
        """The network as a function of (noisy one-hots (B, horizon·dim, bins), t), features bound."""
        c = self.config

        def logits(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tokens = x.reshape(len(x), c.horizon, c.action_dim * c.bins)
            return self.model.net(tokens, TIME_SCALE * t, features).reshape(len(x), -1, c.bins)

        return logits

    def hybrid_denoiser(self, features: torch.Tensor) -> HybridDenoiser:
        """The network as a function of (noisy chunk, noisy one-hots, t): each time step's token
        the chunk's action then its one-hots; the output split the same way."""
        c = self.config

        def heads(z: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tokens = torch.cat([z, x.reshape(len(x), c.horizon, c.action_dim * c.bins)], dim=-1)
            out = self.model.net(tokens, TIME_SCALE * t, features)
            return out[..., : c.action_dim], out[..., c.action_dim :].reshape(len(x), -1, c.bins)

        return heads

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        c = self.config
        features = self.model.obs_encoder(self._observations(batch))
        actions = self.model.action_normalizer.normalize(batch["actions"])
        indices = self.model.bins.tokenize(actions)
        if c.heads == "hybrid":
            return hybrid_loss(self.hybrid_denoiser(features), actions, indices.reshape(len(indices), -1), c.bins,
                               c.flow_loss_weight, c.time_beta, generator)
        return tweedie_loss(self.denoiser(features), indices.reshape(len(indices), -1), c.bins, c.onehot_scale,
                            c.time_beta, generator)

    @torch.no_grad()
    def predict_chunk(self, obs_history, slots: list[int]) -> np.ndarray:
        c = self.config
        features, frame = self.encode(obs_history)
        generators = [self._generators[s] for s in slots]

        def noise() -> torch.Tensor:  # one draw per refinement step, from each slot's generator
            return self.chunk_noise(slots, c.horizon * c.action_dim, c.bins).to(features.device)

        shape = (len(slots), c.horizon, c.action_dim)
        if c.heads == "hybrid":
            flow = self.chunk_noise(slots, c.horizon).to(features.device)
            flow, indices, logits = hybrid_sample(self.hybrid_denoiser(features), flow, noise, c.refinement_steps,
                                                  c.onehot_scale, c.temperature, generators, c.renoise)
        else:
            indices, logits = tweedie_sample(self.denoiser(features), noise, c.refinement_steps, c.onehot_scale,
                                             c.temperature, generators)
        if c.detokenize == "mean":
            chunk = self.model.bins.expected(torch.softmax(logits, -1).reshape(*shape, c.bins))
        else:
            chunk = self.model.bins.detokenize(indices.reshape(shape), lower_edges=c.detokenize == "lower-edge")
        if c.heads == "hybrid" and c.hybrid_output != "discrete":
            chunk = flow if c.hybrid_output == "flow" else (flow + chunk) / 2
        poses = frame.poses_to_world(self.model.action_normalizer.unnormalize(chunk).cpu().numpy())
        return poses[:, c.n_obs_steps - 1 :]  # past actions dropped
