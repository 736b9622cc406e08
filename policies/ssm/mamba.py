"""Mamba layers on cfbench's selective scan (policies/ssm/scan.py), shared by D-Ma and DiSPo.

``MambaMixer`` is the selective-SSM layer of Mamba (Gu & Dao 2023): in_proj to (x, z),
optional depthwise causal conv1d, x_proj to (dt, B, C), dt_proj, A_log, D, out_proj, with
mamba-ssm's initialisation. Passing ``step_scale`` r stretches each token's step size,
Δ = r · softplus(dt + bias) (DiSPo); without it the layer is plain Mamba.
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


def bidirectional_mix(forward: MambaMixer, reverse: MambaMixer, hidden: torch.Tensor,
                      step_scale: torch.Tensor | None = None) -> torch.Tensor:
    """forward(h, r) + flip(reverse(flip(h), flip(r))): two mixers without conv1d over the two
    time directions, computed as one layer of twice the width. Every projection acts token by
    token, so the reverse mixer's can run on the unflipped tokens; the scan then runs its half
    of the channels backward in time (``selective_scan_bidirectional``). Half the matmuls and
    scan calls of two mixers and no flipped copies; the same parameters, so checkpoints of
    either form load into the other."""
    if forward.conv1d is not None or reverse.conv1d is not None:
        raise ValueError("bidirectional_mix needs mixers without conv1d (d_conv=0)")
    inner = forward.in_proj.out_features // 2
    w_forward, w_reverse = forward.in_proj.weight, reverse.in_proj.weight
    in_weight = torch.cat([w_forward[:inner], w_reverse[:inner], w_forward[inner:], w_reverse[inner:]])
    x, z = nn.functional.linear(hidden, in_weight).split(2 * inner, dim=-1)  # (batch, L, 2 inner): [forward, reverse]
    x = nn.functional.silu(x)
    rank, n = forward.dt_rank, forward.d_state
    parts = [mixer.x_proj(half).split([rank, n, n], dim=-1) for mixer, half in zip((forward, reverse), x.chunk(2, -1))]
    dt = nn.functional.linear(torch.cat([parts[0][0], parts[1][0]], dim=-1),
                              torch.block_diag(forward.dt_proj.weight, reverse.dt_proj.weight))
    B, C = (torch.stack([parts[0][i], parts[1][i]], dim=1) for i in (1, 2))  # (batch, 2, L, N)
    y = selective_scan_bidirectional(
        x, dt, -torch.exp(torch.cat([forward.A_log, reverse.A_log])), B, C, torch.cat([forward.D, reverse.D]), z,
        torch.cat([forward.dt_proj.bias, reverse.dt_proj.bias]), zoh=forward.zoh, step_scale=step_scale)
    return nn.functional.linear(y, torch.cat([forward.out_proj.weight, reverse.out_proj.weight], dim=1))


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
    for name, parameter in module.named_parameters():
        if name.endswith("out_proj.weight"):
            nn.init.kaiming_uniform_(parameter, a=math.sqrt(5))
            with torch.no_grad():
                parameter /= math.sqrt(n_layer)
