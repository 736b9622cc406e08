"""Mamba layers on cfbench's selective scan (policies/ssm/scan.py), shared by D-Ma and DiSPo.

``MambaMixer`` is the selective-SSM layer of Mamba (Gu & Dao 2023): in_proj to (x, z),
optional depthwise causal conv1d, x_proj to (dt, B, C), dt_proj, A_log, D, out_proj, with
mamba-ssm's initialisation. Passing ``step_scale`` r stretches each token's step size,
Δ = r · softplus(dt + bias) (DiSPo); without it the layer is plain Mamba. ``BidirectionalMixer``
is two of them, without conv1d, over the two time directions, stored and run as one layer
(DiSPo's bidirectional blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from policies.diffusion import DiffusionConfig
from policies.ssm.scan import selective_scan_bidirectional, selective_scan_fn


@dataclass
class MambaDiffusionConfig(DiffusionConfig):
    """Sizes and CPU budget shared by the Mamba diffusion policies (D-Ma, DiSPo); the "gpu"
    profile restores MaIL's anchor (d_model 128, 6 layers, Adam at lr 5e-4)."""

    #: token width (MaIL: 128)
    d_model: int = 64
    #: Mamba blocks (MaIL: 6)
    n_layer: int = 4
    #: SSM state size N per channel (mamba-ssm's default)
    d_state: int = 16
    #: inner width = expand * d_model (mamba-ssm's default)
    expand: int = 2
    #: windows per optimiser step: small batches, many steps learn the most per CPU second
    batch_size: int = 64
    #: optimiser steps of pretraining
    train_steps: int = 10000
    #: optimiser steps between validations (five per run)
    eval_every: int = 2000

    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "gpu": {"d_model": 128, "n_layer": 6, "batch_size": 256, "lr": 5e-4, "train_steps": 50000,
                "eval_every": 5000, "device": "cuda"},
    }
    LIMITS: ClassVar[dict[str, str]] = {"d_model": "positive", "n_layer": "positive", "d_state": "positive",
                                        "expand": "positive"}


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, zoh: bool = False):
        """``d_conv=0`` leaves out the convolution (DiSPo's blocks have none); ``zoh``: the scan's
        zero-order-hold discretisation instead of mamba-ssm's Euler one (``policies/ssm/scan.py``)."""
        super().__init__()
        self.zoh = zoh
        d_inner = expand * d_model
        self.d_state, self.dt_rank = d_state, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = (nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1) if d_conv > 0
                       else None)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # S4D-real initialisation: A = -(1, 2, ..., N) for every channel; D = 1
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        # initial step sizes log-uniform in [dt_min, dt_max]: the bias is their inverse softplus
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, hidden: torch.Tensor, step_scale: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: (batch, L, d_model); step_scale r: None, a number, (L,) or (batch, L)."""
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (batch, d_inner, L) each
        if self.conv1d is not None:
            x = causal_depthwise_conv(x, self.conv1d.weight, self.conv1d.bias)
        x = nn.functional.silu(x)
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # (batch, d_inner, L); bias added in the scan
        A = -torch.exp(self.A_log)
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (batch, N, L)
        y = selective_scan_fn(x, dt, A, B, C, self.D, z=z, delta_bias=self.dt_proj.bias, delta_softplus=True,
                              zoh=self.zoh, step_scale=step_scale)
        return self.out_proj(y.transpose(1, 2))

    def residual_projections(self) -> tuple[torch.Tensor, ...]:
        """The weights mamba-ssm shrinks by depth (``rescale_residual_projections``)."""
        return (self.out_proj.weight,)


class BidirectionalMixer(nn.Module):
    """Two Mamba mixers without conv1d over the two time directions, stored and computed as one
    layer of twice the width: forward(h, r) + flip(reverse(flip(h), flip(r))). Every projection
    acts token by token, so the reverse mixer's can run on the unflipped tokens; the scan then
    runs its half of the channels backward in time (``selective_scan_bidirectional``). Half the
    matmuls and scan calls of two mixers, no flipped copies, and the two directions' weights kept
    side by side, so no step concatenates them. Initialised as the two mixers it stands for."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, zoh: bool = False):
        super().__init__()
        forward, reverse = (MambaMixer(d_model, d_state=d_state, d_conv=0, expand=expand, zoh=zoh) for _ in range(2))
        self.zoh, self.d_state, self.dt_rank = zoh, d_state, forward.dt_rank
        self.d_inner = expand * d_model
        for name, tensor in self.fuse_state(forward.state_dict(), reverse.state_dict()).items():
            self.register_parameter(name, nn.Parameter(tensor))

    @staticmethod
    def fuse_state(forward: dict[str, torch.Tensor], reverse: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Two ``MambaMixer`` state dicts (no conv1d) as this layer's parameters: in_proj rows
        [x forward, x reverse, z forward, z reverse]; x_proj and dt_proj stacked by direction;
        A_log, D, the step bias and out_proj's input columns [forward, reverse]."""
        x_forward, z_forward = forward["in_proj.weight"].chunk(2)
        x_reverse, z_reverse = reverse["in_proj.weight"].chunk(2)
        both = lambda name, dim=0: torch.cat([forward[name], reverse[name]], dim=dim)  # noqa: E731
        return {
            "in_proj_weight": torch.cat([x_forward, x_reverse, z_forward, z_reverse]),
            "x_proj_weight": torch.stack([forward["x_proj.weight"], reverse["x_proj.weight"]]),
            "dt_proj_weight": torch.stack([forward["dt_proj.weight"], reverse["dt_proj.weight"]]),
            "dt_proj_bias": both("dt_proj.bias"),
            "A_log": both("A_log"),
            "D": both("D"),
            "out_proj_weight": both("out_proj.weight", dim=1),
        }

    def residual_projections(self) -> tuple[torch.Tensor, ...]:
        """out_proj's two directions' columns, each initialised as the mixer it stands for."""
        return self.out_proj_weight.split(self.d_inner, dim=1)

    def forward(self, hidden: torch.Tensor, step_scale: torch.Tensor | None = None) -> torch.Tensor:
        """hidden: (batch, L, d_model); step_scale r: None, a number, (L,) or (batch, L)."""
        batch, length, _ = hidden.shape
        x, z = nn.functional.linear(hidden, self.in_proj_weight).split(2 * self.d_inner, dim=-1)
        x = nn.functional.silu(x)  # (batch, L, 2 inner): [forward, reverse]
        by_direction = x.reshape(batch * length, 2, self.d_inner).transpose(0, 1)  # (2, tokens, inner)
        dt, B, C = torch.bmm(by_direction, self.x_proj_weight.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = torch.bmm(dt, self.dt_proj_weight.transpose(1, 2))  # (2, tokens, inner); bias added in the scan
        dt = dt.transpose(0, 1).reshape(batch, length, 2 * self.d_inner)
        B, C = (m.reshape(2, batch, length, self.d_state).transpose(0, 1) for m in (B, C))  # (batch, 2, L, N)
        y = selective_scan_bidirectional(x, dt, -torch.exp(self.A_log), B, C, self.D, z, self.dt_proj_bias,
                                         zoh=self.zoh, step_scale=step_scale)
        return nn.functional.linear(y, self.out_proj_weight)


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Mamba's causal depthwise conv1d as K shifted multiply-adds. On D-Ma's short sequences
    it is 1.8x faster than ``nn.Conv1d`` forward+backward (2.5 vs 4.4 ms at batch 128, 128
    channels, L = 19), whose depthwise backward was a fifth of D-Ma's training step.
    x: (batch, channels, L); weight: (channels, 1, K)."""
    kernel, length = weight.shape[-1], x.shape[-1]
    padded = nn.functional.pad(x, (kernel - 1, 0))
    out = bias[:, None]
    for k in range(kernel):
        out = out + weight[:, 0, k, None] * padded[..., k : k + length]
    return out


class MambaBlock(nn.Module):
    """Pre-norm residual block: x + Mixer(LayerNorm(x)), as in mamba-ssm's ``Block`` without an MLP."""

    def __init__(self, d_model: int, **mixer_args):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mixer = MambaMixer(d_model, **mixer_args)

    def forward(self, hidden: torch.Tensor, step_scale: torch.Tensor | None = None) -> torch.Tensor:
        return hidden + self.mixer(self.norm(hidden), step_scale)


def rescale_residual_projections(module: nn.Module, n_layer: int) -> None:
    """mamba-ssm's GPT-2-style init: each block's out_proj shrunk by 1/sqrt(n_layer), so the
    residual stream does not grow with depth."""
    for layer in module.modules():
        if isinstance(layer, MambaMixer | BidirectionalMixer):
            for weight in layer.residual_projections():
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                with torch.no_grad():
                    weight /= math.sqrt(n_layer)
