"""DP-T: Diffusion Policy with a transformer decoder over the noisy action tokens
(diffusion_policy's TransformerForDiffusion design, observations as condition).

Action tokens self-attend causally; the memory holds a diffusion-step token and one token per
observation step, and action token t may attend to the step token and the observations up to
its own time. Anchor sizes (low-dim PushT) are 8 layers, 4 heads, 256 wide; the CPU default is
4 layers, 64 wide, batch 64 and no attention dropout, which learns the most per CPU second (the
"gpu" profile restores the anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from policies.base import register
from policies.diffusion import DiffusionConfig, DiffusionPolicy
from policies.modules import SinusoidalEmbedding


@dataclass
class TransformerConfig:
    """The transformer denoiser's sizes and the CPU budget measured with it (DP-T, and E0's
    denoiser). A config lists it as its first base, so its values and ``profiles`` win."""

    #: transformer decoder layers (anchor: 8)
    n_layer: int = 4
    #: attention heads (the anchor's)
    n_head: int = 4
    #: token width (anchor: 256)
    n_emb: int = 64
    #: dropout on the token and memory embeddings (anchor: 0)
    p_drop_emb: float = 0.0
    #: PassagePassing 20 Hz: batch 128 with attention dropout 0.1 ran 13.5 steps/s and reached 46 %
    #: validation success in 5,000 steps (22 % at lr 1e-3); batch 64 without dropout runs 37 steps/s
    #: and reaches 82 % in 10,000 steps (281 s)
    p_drop_attn: float = 0.0
    #: windows per optimiser step; see p_drop_attn
    batch_size: int = 64
    #: optimiser steps; see p_drop_attn
    train_steps: int = 10000
    #: optimiser steps between validations (five per run)
    eval_every: int = 2000
    #: Diffusion Policy's transformer value
    weight_decay: float = 1e-3
    #: validation success 22 % at 1e-3 and 46 % at 2e-3 after 5,000 steps (PassagePassing 20 Hz)
    lr: float = 2e-3

    LIMITS: ClassVar[dict[str, str]] = {"n_layer": "positive", "n_head": "positive", "n_emb": "positive",
                                        "p_drop_emb": "fraction", "p_drop_attn": "fraction"}
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "gpu": {"n_layer": 8, "n_emb": 256, "p_drop_attn": 0.3, "batch_size": 256, "lr": 1e-4, "train_steps": 50000,
                "eval_every": 5000, "device": "cuda"},
    }


@dataclass
class DPTConfig(TransformerConfig, DiffusionConfig):
    pass


class TransformerDenoiser(nn.Module):
    """DP-T's denoiser. With ``horizon=None`` it has no learned action positions and no masks: a
    subclass places its action tokens itself and calls ``decode`` (CT-T: by their times)."""

    def __init__(self, action_dim: int, obs_dim: int, horizon: int | None, n_obs_steps: int, n_layer: int,
                 n_head: int, n_emb: int, p_drop_emb: float, p_drop_attn: float):
        super().__init__()
        self.action_embedding = nn.Linear(action_dim, n_emb)
        if horizon is not None:
            self.action_position = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.step_embedding = SinusoidalEmbedding(n_emb)
        self.obs_embedding = nn.Linear(obs_dim, n_emb)
        self.memory_position = nn.Parameter(torch.zeros(1, 1 + n_obs_steps, n_emb))
        self.memory_mlp = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        self.dropout = nn.Dropout(p_drop_emb)
        layer = nn.TransformerDecoderLayer(n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layer)
        self.norm = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, action_dim)
        if horizon is not None:
            t = torch.arange(horizon)[:, None]
            s = torch.arange(1 + n_obs_steps)[None, :]
            # True = blocked. Self-attention: causal. Memory: step token always, observation s-1 from t >= s-1.
            self.register_buffer("causal_mask", torch.triu(torch.ones(horizon, horizon, dtype=torch.bool), 1),
                                 persistent=False)
            self.register_buffer("memory_mask", ~(t >= s - 1), persistent=False)
            nn.init.normal_(self.action_position, std=0.02)
        nn.init.normal_(self.memory_position, std=0.02)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        tokens = self.action_embedding(sample) + self.action_position
        return self.decode(tokens, timesteps, self.obs_embedding(obs_features), self.causal_mask, self.memory_mask)

    def decode(self, tokens: torch.Tensor, timesteps: torch.Tensor, obs_tokens: torch.Tensor,
               tgt_mask: torch.Tensor | None, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """The decoder over embedded action tokens; its memory: the diffusion-step token and the
        embedded observations."""
        tokens = self.dropout(tokens)  # before the memory's: dropout draws in DP-T's order
        memory = torch.cat([self.step_embedding(timesteps)[:, None], obs_tokens], dim=1)
        memory = self.memory_mlp(self.dropout(memory + self.memory_position))
        x = self.decoder(tokens, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.head(self.norm(x))


@register("dp-t")
class DPT(DiffusionPolicy):
    config_class = DPTConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return TransformerDenoiser(c.action_dim, feature_dim, c.horizon, c.n_obs_steps, c.n_layer, c.n_head,
                                   c.n_emb, c.p_drop_emb, c.p_drop_attn)
