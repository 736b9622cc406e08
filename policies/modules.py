"""Neural building blocks shared by the learned policies.

- ``MinMaxNormalizer``: per-dimension affine map of data to [-1, 1] (stats saved with the model);
- ``SinusoidalEmbedding``: the diffusion-step encoding, and ``StepEncoder`` (it + an MLP);
- ``ResNet18`` (GroupNorm, no BatchNorm: EMA and BatchNorm statistics do not mix) with
  ``SpatialSoftmax`` pooling, and ``ObservationEncoder`` that turns an observation history
  (state vector, or pixel views + state) into one feature vector per time step.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MinMaxNormalizer(nn.Module):
    """Maps each dimension's [min, max] over the training data to [-1, 1].

    Constant dimensions (range below ``eps``) are only shifted, so they neither blow up nor
    lose their value. The statistics are buffers: they travel in ``model.safetensors``.
    """

    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.register_buffer("low", torch.full((dim,), -1.0))
        self.register_buffer("high", torch.full((dim,), 1.0))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> MinMaxNormalizer:
        flat = data.reshape(-1, data.shape[-1]).float()
        self.low.copy_(flat.min(dim=0).values)
        self.high.copy_(flat.max(dim=0).values)
        return self

    def _scale_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.high - self.low
        constant = span < self.eps
        scale = torch.where(constant, torch.ones_like(span), 2.0 / span.clamp_min(self.eps))
        offset = torch.where(constant, -self.low, -1.0 - self.low * scale)
        return scale, offset

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._scale_offset()
        return x * scale + offset

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        scale, offset = self._scale_offset()
        return (y - offset) / scale


#: flow and refinement times in [0, 1] are scaled to the step embedding's range (the diffusion
#: policies' steps 0-99) before ``SinusoidalEmbedding`` (PF-DAG, E0)
TIME_SCALE = 100.0


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal encoding of a scalar (the diffusion step)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        frequencies = torch.exp(torch.arange(half, device=x.device) * (-math.log(10000.0) / (half - 1)))
        angles = x.float()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class StepEncoder(nn.Sequential):
    """Diffusion-step embedding: sinusoidal encoding followed by an MLP (Diffusion Policy, MaIL, DiSPo)."""

    def __init__(self, dim: int, hidden_factor: int = 4):
        super().__init__(SinusoidalEmbedding(dim), nn.Linear(dim, hidden_factor * dim), nn.Mish(),
                         nn.Linear(hidden_factor * dim, dim))


def _groups(channels: int) -> int:
    return max(1, channels // 16)


class _BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(channels_out), channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(channels_out), channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                nn.GroupNorm(_groups(channels_out), channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 trunk (no classifier) with GroupNorm; ``width`` scales every stage (64 = standard)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.GroupNorm(_groups(width), width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, channels = [], width
        for stage, multiplier in enumerate((1, 2, 4, 8)):
            out = width * multiplier
            stride = 1 if stage == 0 else 2
            stages += [_BasicBlock(channels, out, stride), _BasicBlock(out, out, 1)]
            channels = out
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class SpatialSoftmax(nn.Module):
    """Expected image coordinates of each of ``keypoints`` learned feature maps (2 numbers each)."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.project = nn.Conv2d(channels, keypoints, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.project(features)
        b, k, h, w = maps.shape
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        weights = torch.softmax(maps.reshape(b, k, h * w), dim=-1)
        x = (weights * grid_x.reshape(1, 1, -1)).sum(-1)
        y = (weights * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.cat([x, y], dim=-1)


class ObservationEncoder(nn.Module):
    """Observation history -> (B, T_o, feature_dim). State is normalised; each pixel view gets
    its own ResNet-18 + spatial-softmax encoder (as in Diffusion Policy) concatenated to it."""

    def __init__(self, state_dim: int, views: tuple[str, ...] = (), resnet_width: int = 64, keypoints: int = 32):
        super().__init__()
        self.views = tuple(views)
        self.state_normalizer = MinMaxNormalizer(state_dim)
        self.image_encoders = nn.ModuleDict(
            {
                view: nn.Sequential(ResNet18(resnet_width), SpatialSoftmax(resnet_width * 8, keypoints))
                for view in self.views
            }
        )
        self.feature_dim = state_dim + 2 * keypoints * len(self.views)

    def forward(self, obs) -> torch.Tensor:
        """``obs``: a state tensor (B, T, D), or {"state": (B, T, D), "pixels": {view: (B, T, H, W, 3) uint8}}."""
        if not self.views:
            return self.state_normalizer.normalize(obs)
        state = self.state_normalizer.normalize(obs["state"])
        features = [state]
        for view, encoder in self.image_encoders.items():
            images = obs["pixels"][view]
            b, t = images.shape[:2]
            x = images.reshape(b * t, *images.shape[2:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            features.append(encoder(x).reshape(b, t, -1))
        return torch.cat(features, dim=-1)
