"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling"): a network learns
the *average* velocity of the flow between two times, so one evaluation jumps from noise to data.

The flow: z_t = (1 - t) x + t e, with data x at t = 0 and Gaussian noise e at t = 1, and
instantaneous velocity v = e - x. The average velocity over [r, t] is
u(z_t, r, t) = 1 / (t - r) * integral_r^t v(z_s, s) ds, so that z_r = z_t - (t - r) u(z_t, r, t).
Differentiating (t - r) u = integral_r^t v in t gives the MeanFlow identity

    u(z_t, r, t) = v - (t - r) d/dt u(z_t, r, t),   d/dt u = v . grad_z u + du/dt,

whose right side is the training target, with a stop-gradient; the total derivative is one
forward-mode product (``torch.func.jvp``) with tangents (v, 0, 1) for (z, r, t). Settings from
the paper's ablations (ImageNet 256): (t, r) from a logit-normal(-0.4, 1) pair with r < t for
25 % of the samples (r = t otherwise: plain flow matching), and the adaptive loss weight
1 / (||error||^2 + 1e-3)^p with p = 1. The ablation's other sampler, uniform times, puts more of
the pairs near the one-step jump (r near 0, t near 1) that logit-normal times rarely reach.
Sampling in one step: x = e - u(e, 0, 1); in n steps, the same jump over each of n equal
intervals.

``velocity(z, r, t)`` is any differentiable function without in-place operations on its inputs
(forward-mode AD must go through it); conditions are bound into it by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


#: how the two times are drawn: the paper's logit-normal(-0.4, 1), or uniform on [0, 1]
TIME_SAMPLERS = ("logit-normal", "uniform")


def sample_times(n: int, generator: torch.Generator, distinct_share: float = 0.25,
                 sampler: str = "logit-normal") -> tuple[torch.Tensor, torch.Tensor]:
    """(r, t), each (n,): two draws from ``sampler``, t the larger; r = t for all but ``distinct_share``."""
    if sampler not in TIME_SAMPLERS:
        raise ValueError(f"unknown time sampler {sampler!r}; known: {', '.join(TIME_SAMPLERS)}")
    if sampler == "uniform":
        draws = torch.rand((n, 2), generator=generator)
    else:
        draws = torch.sigmoid(-0.4 + torch.randn((n, 2), generator=generator))
    t, r = draws.max(dim=1).values, draws.min(dim=1).values
    same = torch.rand(n, generator=generator) >= distinct_share
    return torch.where(same, t, r), t


def flow_point(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow at times t (B,): z_t = (1 - t) x + t e and its velocity v = e - x (plain flow
    matching's regression target; E0's hybrid head learns it)."""
    t = t.view((-1,) + (1,) * (x.dim() - 1))
    return (1 - t) * x + t * noise, noise - x


def flow_step(z: torch.Tensor, u: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_r from z_t along the (average) velocity u: one Euler step when u is instantaneous."""
    return z - (t - r) * u


def total_derivative(velocity: Velocity, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                     v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u(z, r, t) and its total derivative along the flow, v . grad_z u + du/dt (one jvp)."""
    return jvp(velocity, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))


def meanflow_loss(velocity: Velocity, x: torch.Tensor, generator: torch.Generator, distinct_share: float = 0.25,
                  weight_power: float = 1.0, time_sampler: str = "logit-normal") -> torch.Tensor:
    """The MeanFlow objective on data ``x`` (B, ...): mean over the batch of the adaptively
    weighted squared error (summed over a sample's numbers) between u and its stop-gradient
    target. With p = 1 every sample weighs about 1 until its error is near 1e-3."""
    r, t = (value.to(x.device) for value in sample_times(len(x), generator, distinct_share, time_sampler))
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    shape = (-1,) + (1,) * (x.dim() - 1)
    z, v = flow_point(x, noise, t)
    u, du_dt = total_derivative(velocity, z, r, t, v)
    target = (v - (t - r).view(shape) * du_dt).detach()
    error = ((u - target) ** 2).flatten(1).sum(dim=1)
    weight = 1.0 / (error.detach() + 1e-3) ** weight_power
    return (weight * error).mean()


@torch.no_grad()
def meanflow_sample(velocity: Velocity, noise: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Data from noise in ``steps`` equal jumps z_r = z_t - (t - r) u(z_t, r, t), t from 1 to 0."""
    z = noise
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    for t, r in zip(times[:-1], times[1:]):
        z = flow_step(z, velocity(z, r.expand(len(z)), t.expand(len(z))), r, t)
    return z
