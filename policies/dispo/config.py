"""DiSPo's settings: the paper's, ours where the validation seeds chose otherwise, and the
options the ablations retired (docs/dispo-ablation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from policies.chunking import TargetRateConfig
from policies.ssm.mamba import MambaDiffusionConfig

#: the paper's configuration (sections III-IV) where our defaults depart from it
PAPER_SETTINGS = {"prediction_type": "epsilon", "discretization": "zoh", "scan_direction": "causal"}


@dataclass
class DiSPoConfig(TargetRateConfig, MambaDiffusionConfig):
    #: action tokens at the training rate: T_o - 1 past, the current one and T_a future ones
    horizon: int = 10
    #: "sample" (our default: ε learns too slowly on the CPU budget, docs/dispo-ablation.md) or
    #: "epsilon" (the paper, MaIL)
    prediction_type: str = "sample"
    #: λ, weight of the observation reconstruction loss
    obs_loss_weight: float = 0.1
    #: sample-rate augmentation: windows also resampled to 1/k of their rate, for each k here
    #: (the paper: any rate below the demos'; (1, 2) is what round 1 trained)
    augment_strides: tuple[int, ...] = (1, 2)
    #: scan direction of each block: "bidirectional" (our default, docs/dispo-ablation.md: a second
    #: mixer scans the tokens in reverse, so later tokens, e.g. an inpainted waypoint, inform earlier
    #: ones; outputs summed; twice the scan cost) or "causal" (the paper)
    scan_direction: str = "bidirectional"
    #: the scan's B̄: "zoh" (the paper's Eq. 1, zero-order hold: k steps of Δ/k equal one step of
    #: Δ; the default) or "euler" (B̄ = ΔB, mamba-ssm's kernels; what round 1 trained)
    discretization: str = "zoh"
    #: the rate whose step is r = 1: the most frequent step over the training samples (set by fit)
    reference_hz: float = 0.0
    #: fine-tuning rounds double the rate from reference_hz up to this one
    target_hz: float = 20.0
    #: optimiser steps of each fine-tuning round; 0 = pretraining only (the "no-ft" variant)
    finetune_steps: int = 1000
    #: ACT's temporal-ensemble weights exp(-k i), i = 0 for the oldest prediction of an action
    ensemble_decay: float = 0.01
    #: windows denoised at once when generating pseudo demonstrations
    generation_batch: int = 256
    #: rollout step scale of the action tokens: "fixed" (ω_ref / ω_target) or "adaptive" (φ_r's;
    #: only this mode builds and trains φ_r)
    step_scale_mode: str = "fixed"
    #: φ_r's range: r_a from ω_ref / ω_target up to this many times coarser
    max_speedup: float = 2.0
    #: φ_r's target is 1 for a straight chunk path, falling to 0 where the path's largest distance
    #: from its chord reaches this fraction of its length
    straightness_tolerance: float = 0.1

    LIMITS: ClassVar[dict[str, str]] = {
        "obs_loss_weight": "non-negative", "augment_strides": "positive", "reference_hz": "non-negative",
        "target_hz": "positive", "finetune_steps": "non-negative", "ensemble_decay": "non-negative",
        "generation_batch": "positive", "straightness_tolerance": "positive"}
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": PAPER_SETTINGS,
        "no-ft": {"finetune_steps": 0},  # pretraining only: what the fine-tuning rounds add
        "paper-no-ft": {**PAPER_SETTINGS, "finetune_steps": 0},
        "adaptive-r": {"step_scale_mode": "adaptive"},  # φ_r picks each chunk's step (paper section III-C)
    }
    FITTED: ClassVar[tuple[str, ...]] = ("reference_hz",)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "scan_direction": ("causal", "bidirectional"), "discretization": ("euler", "zoh"),
        "step_scale_mode": ("fixed", "adaptive")}
    NEUTRAL: ClassVar[dict[str, Any]] = {"scan_direction": "causal", "discretization": "euler"}
    #: rejected by the ablations (docs/dispo-ablation.md): denser real action targets (r_a < r_o),
    #: actions divided by their window's observation step, shared initial noise of the fine tokens,
    #: closing the loop every k target-rate actions
    RETIRED: ClassVar[dict[str, Any]] = {
        "augment_action_finer": (1,), "action_units": "pose", "fine_noise": "independent", "replan_every": 0}
    #: settings pretraining does not read (the fine-tuning rounds and the rollout do): runs
    #: differing only in them share their pretraining
    FINETUNE_FIELDS: ClassVar[tuple[str, ...]] = ("target_hz", "finetune_steps", "ensemble_decay", "generation_batch")
    NO_CURVE: ClassVar[str] = "DiSPo emits target-rate actions itself"

    def __post_init__(self):
        super().__post_init__()
        if not self.max_speedup >= 1:
            raise ValueError(f"max_speedup must be >= 1, got {self.max_speedup}")

    def rollout_fields(self) -> tuple[str, ...]:
        """With adaptive step scales φ_r learns from the chunk a rollout executes, so
        n_action_steps is then a training setting."""
        return tuple(f for f in super().rollout_fields() if not (self.adaptive and f == "n_action_steps"))

    @property
    def adaptive(self) -> bool:
        """Whether φ_r picks the action tokens' step scales: only then is it built and trained."""
        return self.step_scale_mode == "adaptive"


def finetune_rounds(config: DiSPoConfig) -> list[int]:
    """Rate multipliers of the fine-tuning rounds: 2, 4, ... up to target_hz / reference_hz."""
    total = config.target_hz / config.reference_hz
    if config.finetune_steps <= 0 or total < 2:
        return []
    rounds, finer = [], 2
    while finer < total:
        rounds.append(finer)
        finer *= 2
    return rounds + [round(total)]
