"""DP-C: Diffusion Policy with a 1-D temporal U-Net whose every residual block is FiLM-modulated
by the diffusion step and the observation features (diffusion_policy's ConditionalUnet1D design).

Anchor sizes (low-dim PushT) are ``down_dims=(256, 512, 1024)``; the CPU default is an eighth of
that width, ``(32, 64, 128)``, so a train+evaluate run fits in minutes (the "gpu" profile restores
the anchor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from policies.base import register
from policies.diffusion import DiffusionConfig, DiffusionPolicy
from policies.modules import StepEncoder


@dataclass
class UNetConfig:
    """The 1-D U-Net's sizes (DP-C, and PF-DAG's MeanFlow network). A config lists it as its
    first base, so that its ``profiles`` come before the learned policies' default."""

    #: channels of the U-Net levels; an eighth of the anchor's (256, 512, 1024) fits the CPU budget
    down_dims: tuple[int, ...] = (32, 64, 128)
    #: temporal convolution width (the anchor's)
    kernel_size: int = 5
    #: GroupNorm groups of every conv block (the anchor's)
    n_groups: int = 8
    #: size of the diffusion-step (or flow-time) embedding fed to FiLM (anchor: 256)
    step_embed_dim: int = 64

    LIMITS: ClassVar[dict[str, str]] = {"down_dims": "positive", "kernel_size": "positive", "n_groups": "positive",
                                        "step_embed_dim": "positive"}
    #: the anchor's sizes and budget for a GPU
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "gpu": {"down_dims": (256, 512, 1024), "step_embed_dim": 256, "batch_size": 256, "lr": 1e-4,
                "train_steps": 50000, "eval_every": 5000, "device": "cuda"},
    }


@dataclass
class DPCConfig(UNetConfig, DiffusionConfig):
    pass


class ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length-preserving."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, n_groups: int):
        super().__init__(
            nn.Conv1d(channels_in, channels_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, channels_out),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias between them (FiLM)."""

    def __init__(self, channels_in: int, channels_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.first = ConvBlock(channels_in, channels_out, kernel_size, n_groups)
        self.second = ConvBlock(channels_out, channels_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * channels_out))
        self.skip = nn.Conv1d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        return self.second(scale * self.first(x) + bias) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, global_cond_dim: int, down_dims, kernel_size: int, n_groups: int,
                 step_embed_dim: int):
        super().__init__()
        self.step_encoder = StepEncoder(step_embed_dim)
        cond_dim = step_embed_dim + global_cond_dim
        dims = [action_dim, *down_dims]
        block = lambda a, b: FiLMResidualBlock(a, b, cond_dim, kernel_size, n_groups)  # noqa: E731
        self.down = nn.ModuleList()
        for level, (dim_in, dim_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = level == len(down_dims) - 1
            self.down.append(nn.ModuleList([
                block(dim_in, dim_out), block(dim_out, dim_out),
                nn.Conv1d(dim_out, dim_out, 3, 2, 1) if not last else nn.Identity(),
            ]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for dim_out, dim_in in reversed(list(zip(dims[1:-1], dims[2:]))):
            self.up.append(nn.ModuleList([
                block(2 * dim_in, dim_out), block(dim_out, dim_out),
                nn.ConvTranspose1d(dim_out, dim_out, 4, 2, 1),
            ]))
        self.head = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                  nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.step_encoder(timesteps), obs_features.flatten(1)], dim=-1)
        x = sample.transpose(1, 2)  # (B, action_dim, horizon)
        skips = []
        for first, second, downsample in self.down:
            x = second(first(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, cond)
        for first, second, upsample in self.up:
            x = upsample(second(first(torch.cat([x, skips.pop()], dim=1), cond), cond))
        return self.head(x).transpose(1, 2)


@register("dp-c")
class DPC(DiffusionPolicy):
    config_class = DPCConfig

    def build_net(self, feature_dim: int) -> nn.Module:
        c = self.config
        return ConditionalUnet1D(c.action_dim, feature_dim * c.n_obs_steps, c.down_dims, c.kernel_size,
                                 c.n_groups, c.step_embed_dim)
