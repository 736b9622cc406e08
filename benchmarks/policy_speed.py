"""Learned-policy speed: training steps/s and inference latency per action chunk.

For each diffusion policy (default CPU profile, PassagePassing state observations; DiSPo also
as its ``paper`` variant, causal scan and zero-order hold) it times
training steps on real demo windows and the rollout latency of one action chunk for a single
env with DDPM (100 denoising steps) and DDIM (10 steps), side by side, and prints the ratio.

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
from cfbench.datasets import load_demos
from cfbench.runner import set_threads
from policies.base import EpisodeContext

#: (policy, declared variant)
LEARNED = (("dp-c", ""), ("dp-t", ""), ("d-ma", ""), ("dispo", ""), ("dispo", "paper"))


def train_rate(name: str, variant: str, dataset, steps: int) -> tuple[float, policies.Policy]:
    policy = policies.make(name, variant=variant, train_steps=steps, eval_every=steps, warmup_steps=1)
    policy.fit(dataset, progress=False)  # includes set-up; time a second, identical run below
    start = time.perf_counter()
    policy.fit(dataset, progress=False)
    return steps / (time.perf_counter() - start), policy


def chunk_latency_ms(policy: policies.Policy, obs_history: np.ndarray, sampler: str, repeats: int) -> float:
    policy.config.sampler = sampler
    fresh = type(policy)(policy.config)  # rebuild the schedulers for this sampler
    fresh.load_state_dict(policy.state_dict())
    fresh.reset(0, EpisodeContext("cfbench/PassagePassing-v0", 0, 20.0))
    fresh.act(obs_history, slots=[0], source_hz=20.0, target_hz=20.0)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fresh.act(obs_history, slots=[0], source_hz=20.0, target_hz=20.0)
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
    rows = []
    for name, variant in LEARNED:
        rate, policy = train_rate(name, variant, dataset, args.steps)
        history = np.stack([dataset.episodes[0].observations[:1]] * policy.config.n_obs_steps, axis=1)
        ddpm = chunk_latency_ms(policy, history, "ddpm", args.repeats)
        ddim = chunk_latency_ms(policy, history, "ddim", args.repeats)
        label = f"{name} ({variant})" if variant else name
        rows.append({"policy": label, "params": sum(p.numel() for p in policy.model.parameters()),
                     "batch": policy.config.batch_size, "train steps/s": rate,
                     "DDPM-100 ms/chunk": ddpm, "DDIM-10 ms/chunk": ddim, "DDPM/DDIM": ddpm / ddim})
    print(f"torch {torch.__version__}, {threads} threads, PassagePassing state obs, default CPU profiles")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.1f}"))


if __name__ == "__main__":
    main()
