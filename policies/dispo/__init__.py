"""DiSPo: diffusion policy on step-scaled Mamba blocks (paper sections III-IV).

The sequence is [observation tokens (T_o), action tokens (T_o - 1 past, then the current and
future ones)], each embedded linearly plus a learned type encoding; no positions: the SSM's
step sizes carry time. Every DiSPo block is adaLN (scale, shift and gate from the diffusion
step embedding) around a Mamba mixer *without* conv1d whose step sizes are stretched per token,
Δ = r · softplus(f_Δ(u)) (``policies/ssm``). r = 1 is the step of the reference rate (the most
frequent step over the demo samples); tokens at ω get r = ω_ref / ω. So a model trained at
2.5 Hz emits 20 Hz actions by giving the current and future action tokens r / 8 and asking for
8 times as many of them: no interpolation.

Training (paper section IV) has two parts:

- pretraining with sample-rate augmentation: every window is also taken at 1/k of its rate
  (r multiplied by k). The loss is the MSE of the denoiser's prediction on the actions plus λ
  times the MSE of reconstructing the (normalised) observation states from the observation tokens;
- fine-tuning with pseudo demonstrations, in rounds of doubling rate up to ``target_hz``
  (``finetuning.py``).

Runs that differ only in their fine-tuning settings share one pretraining: the runner names
its folder (``pretraining_identity``) and passes it to ``fit``, which trains it under a lock.

Our defaults depart from the paper where the validation seeds chose otherwise; each departure
is a config field, and ``--variant paper`` restores the paper's choices (the measurements, their
commands and what they decided: ``docs/dispo-ablation.md``):

- ``prediction_type="sample"`` (paper: ε, as MaIL): ε learns too slowly on the CPU budget;
- ``scan_direction="bidirectional"`` (paper: causal): a second mixer scans the tokens in
  reverse, so later tokens (an inpainted waypoint, the end of the chunk) inform earlier ones.

The scan's discretisation is the paper's zero-order hold (Eq. 1), under which eight steps of
Δ/8 are one step of Δ; ``discretization="euler"`` is mamba-ssm's B̄ = ΔB.

Step scales (``step_scales.py``) come in three kinds: relative to one source step, of training
windows, and at rollout; with ``step_scale_mode="adaptive"`` φ_r predicts the action tokens' r_a.

φ_r (adaptive granularity): an MLP from the observation history to the predicted straightness
s in [0, 1] of the path about to be executed; the action tokens' step scale is then
r_a = (ω_ref / ω_target) · max_speedup^s, between the target rate's own and ``max_speedup``
times coarser. The paper gives φ_r no training target; ours is read off the demos
(``DiSPo.straightness_targets``: straight: coarse steps, a faster traverse at the same control
rate; turning or stopping: the target rate's own). Each chunk is emitted at the step φ_r picks,
rounded so each source step gets a whole number of actions; coarser chunks reach the goal in
fewer control steps.

Modules: ``config`` (settings, the paper's, the retired ones), ``network`` (the denoiser and
φ_r), ``step_scales``, ``finetuning`` and ``policy`` (the ``DiSPo`` class, registered as "dispo").
"""
