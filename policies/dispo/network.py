"""DiSPo's denoiser: adaLN-Zero blocks around step-scaled Mamba mixers without conv1d, and φ_r."""

from __future__ import annotations

import torch
from torch import nn

from policies.modules import StepEncoder
from policies.ssm.mamba import BidirectionalMixer, MambaMixer, rescale_residual_projections


class DiSPoBlock(nn.Module):
    """adaLN-Zero around a step-scaled Mamba mixer without conv1d: x + g(k) * Mixer(LN(x)(1 + s(k)) + b(k), r);
    bidirectional: Mixer(h, r) + flip(ReverseMixer(flip(h), flip(r)))."""

    def __init__(self, d_model: int, d_state: int, expand: int, bidirectional: bool = False, zoh: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 3 * d_model))
        nn.init.zeros_(self.modulation[1].weight)  # every block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)
        self.mixer = (BidirectionalMixer(d_model, d_state=d_state, expand=expand, zoh=zoh) if bidirectional
                      else MambaMixer(d_model, d_state=d_state, d_conv=0, expand=expand, zoh=zoh))

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, step_scale: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(step)[:, None].chunk(3, dim=-1)
        hidden = self.norm(tokens) * (1 + scale) + shift
        return tokens + gate * self.mixer(hidden, step_scale)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        """Checkpoints written before the fused bidirectional layer hold its two directions as
        two mixers, ``mixer`` and ``reverse_mixer``: fused here, so they load unchanged."""
        forward, reverse = f"{prefix}mixer.", f"{prefix}reverse_mixer."
        if any(key.startswith(reverse) for key in state_dict):
            take = lambda start: {key[len(start):]: state_dict.pop(key)  # noqa: E731
                                  for key in list(state_dict) if key.startswith(start)}
            fused = BidirectionalMixer.fuse_state(take(forward), take(reverse))
            state_dict.update({forward + name: tensor for name, tensor in fused.items()})
        super()._load_from_state_dict(state_dict, prefix, *args)


class DiSPoNet(nn.Module):
    def __init__(self, action_dim: int, obs_feature_dim: int, obs_dim: int, n_obs_steps: int, d_model: int,
                 n_layer: int, d_state: int, expand: int, bidirectional: bool = False, zoh: bool = False,
                 adaptive: bool = False):
        """``adaptive``: with φ_r, which only adaptive step scales read."""
        super().__init__()
        self.step_encoder = StepEncoder(d_model, hidden_factor=2)
        self.obs_embedding = nn.Linear(obs_feature_dim, d_model)
        self.action_embedding = nn.Linear(action_dim, d_model)
        self.type_encoding = nn.Parameter(torch.zeros(2, d_model))  # [observation, action]
        self.blocks = nn.ModuleList(DiSPoBlock(d_model, d_state, expand, bidirectional, zoh) for _ in range(n_layer))
        self.norm = nn.LayerNorm(d_model)
        self.action_head = nn.Linear(d_model, action_dim)
        self.obs_head = nn.Linear(d_model, obs_dim)
        #: φ_r: observation history -> logit of the straightness of the path ahead (DiSPo.predicted_action_scale)
        self.step_scale_predictor = nn.Sequential(
            nn.Flatten(), nn.Linear(n_obs_steps * obs_feature_dim, 2 * d_model), nn.SiLU(),
            nn.Linear(2 * d_model, 2 * d_model), nn.SiLU(), nn.Linear(2 * d_model, 1), nn.Flatten(0),
        ) if adaptive else None
        nn.init.normal_(self.type_encoding, std=0.02)
        rescale_residual_projections(self, n_layer)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, obs_features: torch.Tensor,
                step_scale: torch.Tensor, reconstruct: bool = False):
        """Noise (or clean-sample) prediction for the action tokens; with ``reconstruct`` also the
        observation states decoded from the observation tokens. step_scale: (B, T_o + n_actions)."""
        n_obs = obs_features.shape[1]
        tokens = torch.cat([self.obs_embedding(obs_features) + self.type_encoding[0],
                            self.action_embedding(sample) + self.type_encoding[1]], dim=1)
        step = self.step_encoder(timesteps)
        for block in self.blocks:
            tokens = block(tokens, step, step_scale)
        tokens = self.norm(tokens)
        prediction = self.action_head(tokens[:, n_obs:])
        return (prediction, self.obs_head(tokens[:, :n_obs])) if reconstruct else prediction
