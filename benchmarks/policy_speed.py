"""Learned-policy speed: training steps/s and inference latency per action chunk.

For each diffusion policy (default CPU profile, PassagePassing state observations; DiSPo also
as its ``paper`` variant, causal scan and zero-order hold) it times
training steps on real demo windows and the rollout latency of one action chunk for a single
env with DDPM (100 denoising steps) and DDIM (10 steps), side by side, and prints the ratio.
PF-DAG's chunk is one (or two) MeanFlow steps on DP-C's U-Net: its latency is printed beside
DP-C's DDIM-10 with the ratio. E0's chunk is ``refinement_steps`` passes of DP-T's transformer
over one-hot inputs: its training rate and latency are printed beside DP-T's, for a few bin
counts, and its two token layouts (one token per time step with action_dim x bins inputs, the
default, or one token per time step and dimension with bins inputs) are timed on a training
step's forward and backward pass. CT-T's chunk asks DP-T's transformer for every target-rate
action of the chunk (n_action_steps · 20 Hz / source rate queries): its DDIM-10 latency is printed
beside DP-T's (16 actions, then a curve) for each source rate, 20 Hz control.

    python benchmarks/policy_speed.py [--threads 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import policies
from cfbench.cli import set_threads
from cfbench.datasets import load_demos
from cfbench.interface import EpisodeContext
from policies.dp_t import TransformerDenoiser

#: (policy, declared variant)
LEARNED = (("dp-c", ""), ("dp-t", ""), ("ct-t", ""), ("d-ma", ""), ("dispo", ""), ("dispo", "paper"))


def train_rate(name: str, variant: str, dataset, steps: int, **overrides) -> tuple[float, policies.Policy]:
    policy = policies.make(name, variant=variant, train_steps=steps, eval_every=steps, warmup_steps=1, **overrides)
    policy.fit(dataset, progress=False)  # includes set-up; time a second, identical run below
    start = time.perf_counter()
    policy.fit(dataset, progress=False)
    return steps / (time.perf_counter() - start), policy


def start_history(dataset, policy: policies.Policy) -> np.ndarray:
    """One env's observation history at an episode's start (its first observation repeated)."""
    return np.stack([dataset.episodes[0].observations[:1]] * policy.config.n_obs_steps, axis=1)


def chunk_latency_ms(policy: policies.Policy, obs_history: np.ndarray, repeats: int, reference_hz: float = 20.0,
                     **sampling) -> float:
    """Milliseconds per chunk, replanning at ``reference_hz`` for 20 Hz control, with the
    config's sampling settings replaced by ``sampling``."""
    for key, value in sampling.items():
        setattr(policy.config, key, value)
    fresh = type(policy)(policy.config)  # rebuild the schedulers for these settings
    fresh.load_state_dict(policy.state_dict())
    fresh.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0))
    fresh.act(obs_history, slots=[0], reference_hz=reference_hz, target_hz=20.0)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fresh.act(obs_history, slots=[0], reference_hz=reference_hz, target_hz=20.0)
    return 1000 * (time.perf_counter() - start) / repeats


def e0_layout_ms(policy: policies.Policy, tokens_per_step: int, repeats: int) -> float:
    """One forward + backward pass of E0's denoiser on a training batch, with each time step's
    positions as one token (1) or one token per action dimension (action_dim)."""
    c = policy.config
    width = c.action_dim * c.bins // tokens_per_step
    net = TransformerDenoiser(width, policy.model.obs_encoder.feature_dim, c.horizon * tokens_per_step,
                                          c.n_obs_steps, c.n_layer, c.n_head, c.n_emb, c.p_drop_emb, c.p_drop_attn)
    x = torch.randn(c.batch_size, c.horizon * tokens_per_step, width)
    t = torch.rand(c.batch_size) * 100
    features = torch.randn(c.batch_size, c.n_obs_steps, policy.model.obs_encoder.feature_dim)

    def step():
        net(x, t, features).square().mean().backward()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per policy")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as demos:
        dataset = load_demos("PassagePassing", (20.0,), n=10, demos_dir=demos)
    rows, trained = [], {}
    for name, variant in LEARNED:
        rate, policy = train_rate(name, variant, dataset, args.steps)
        trained[name, variant] = policy
        history = start_history(dataset, policy)
        ddpm = chunk_latency_ms(policy, history, args.repeats, sampler="ddpm")
        ddim = chunk_latency_ms(policy, history, args.repeats, sampler="ddim")
        label = f"{name} ({variant})" if variant else name
        rows.append({"policy": label, "params": sum(p.numel() for p in policy.model.parameters()),
                     "batch": policy.config.batch_size, "train steps/s": rate,
                     "DDPM-100 ms/chunk": ddpm, "DDIM-10 ms/chunk": ddim, "DDPM/DDIM": ddpm / ddim})
    pf_dag_rate, pf_dag = train_rate("pf-dag", "", dataset, args.steps)
    one, two = (chunk_latency_ms(pf_dag, start_history(dataset, pf_dag), args.repeats, sampling_steps=n)
                for n in (1, 2))
    dp_c = next(row for row in rows if row["policy"] == "dp-c")
    print(f"torch {torch.__version__}, {threads} threads, PassagePassing state obs, default CPU profiles")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    dp_t = next(row for row in rows if row["policy"] == "dp-t")
    e0_rows = []
    for bins in (64, 256, 1024):
        rate, e0 = train_rate("e0", "", dataset, args.steps, bins=bins)
        latency = chunk_latency_ms(e0, start_history(dataset, e0), args.repeats)
        e0_rows.append({"e0 bins": bins, "params": sum(p.numel() for p in e0.model.parameters()),
                        "train steps/s": rate, f"{e0.config.refinement_steps} refinements ms/chunk": latency,
                        "vs DP-T DDIM-10": latency / dp_t["DDIM-10 ms/chunk"],
                        "layout H tokens ms": e0_layout_ms(e0, 1, args.repeats),
                        "layout H x D tokens ms": e0_layout_ms(e0, e0.config.action_dim, args.repeats)})
    print(pd.DataFrame(e0_rows).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    dp_t_model, ct_t = trained["dp-t", ""], trained["ct-t", ""]
    ct_t_rows = []
    for source_hz in (2.5, 5.0, 10.0, 20.0):
        dp_t_ms, ct_t_ms = (chunk_latency_ms(policy, start_history(dataset, policy), args.repeats, source_hz,
                                             sampler="ddim") for policy in (dp_t_model, ct_t))
        queries = round(ct_t.config.n_action_steps * 20 / source_hz)
        ct_t_rows.append({"source Hz": source_hz, "ct-t queries": queries, "dp-t DDIM-10 ms/chunk": dp_t_ms,
                          "ct-t DDIM-10 ms/chunk": ct_t_ms, "ct-t/dp-t": ct_t_ms / dp_t_ms})
    print(pd.DataFrame(ct_t_rows).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print(f"pf-dag: {sum(p.numel() for p in pf_dag.model.parameters())} params, {pf_dag_rate:.1f} train steps/s; "
          f"MeanFlow 1 step {one:.1f} ms/chunk, 2 steps {two:.1f} ms/chunk; DP-C DDIM-10 "
          f"{dp_c['DDIM-10 ms/chunk']:.1f} ms/chunk = {dp_c['DDIM-10 ms/chunk'] / one:.1f}x PF-DAG's 1 step, "
          f"{dp_c['DDIM-10 ms/chunk'] / two:.1f}x its 2 steps (the default)")


if __name__ == "__main__":
    main()
