"""D-Ma: the decoder-only Mamba diffusion policy of MaIL (Jia et al. 2024).

One sequence [diffusion-step token, observation tokens (T_o), noisy action tokens (T_p)] with
learned positions runs through a stack of Mamba blocks (policies/ssm/mamba.py, on cfbench's
selective scan); the outputs at the action tokens predict the noise (epsilon prediction, as in
MaIL). Being causal, each action token sees the step, every observation and the earlier actions.
Anchor sizes (MaIL's LIBERO config) are d_model 128, 6 layers, d_state 16, d_conv 4, expand 2,
Adam at lr 5e-4; the CPU default is narrower and shallower (the "gpu" profile restores the anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from policies.base import register
from policies.diffusion import DiffusionPolicy
from policies.modules import StepEncoder
from policies.ssm.mamba import MambaBlock, MambaDiffusionConfig, rescale_residual_projections


@dataclass
class DMaConfig(MambaDiffusionConfig):
    #: width of Mamba's causal depthwise convolution (MaIL's)
    d_conv: int = 4
    #: MaIL predicts the noise ("epsilon"); "sample" learns faster on the CPU budget
    prediction_type: str = "epsilon"

    LIMITS: ClassVar[dict[str, str]] = {"d_conv": "positive"}


class MambaDenoiser(nn.Module):
    def __init__(self, action_dim: int, obs_dim: int, horizon: int, n_obs_steps: int, d_model: int, n_layer: int,
                 d_state: int, d_conv: int, expand: int):
        super().__init__()
        self.step_embedding = StepEncoder(d_model, hidden_factor=2)
        self.obs_embedding = nn.Linear(obs_dim, d_model)
        self.action_embedding = nn.Linear(action_dim, d_model)
        self.position = nn.Parameter(torch.zeros(1, 1 + n_obs_steps + horizon, d_model))
        self.blocks = nn.ModuleList(
            MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)
        nn.init.normal_(self.position, std=0.02)
        rescale_residual_projections(self, n_layer)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.step_embedding(timesteps)[:, None], self.obs_embedding(obs_features),
                            self.action_embedding(sample)], dim=1) + self.position
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, -sample.shape[1]:]))


@register("d-ma")
class DMa(DiffusionPolicy):
    config_class = DMaConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return MambaDenoiser(c.action_dim, feature_dim, c.horizon, c.n_obs_steps, c.d_model, c.n_layer, c.d_state,
                             c.d_conv, c.expand)
