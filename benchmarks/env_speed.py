"""Environment throughput: steps/s per env in state and pixels mode, single and vectorised.

Actions are the expert's own 20 Hz plan (realistic contacts and episode resets included).
Single-env numbers use one core; the vectorised rows use Gymnasium's SyncVectorEnv (one
process) and AsyncVectorEnv (one worker process per core).

    python benchmarks/env_speed.py [--steps 3000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np
import pandas as pd

import cfbench
from cfbench.evaluate import make_vector_env


def single_env_rate(env_id: str, obs_mode: str, steps: int) -> float:
    env = gym.make(env_id, obs_mode=obs_mode)
    done, seed, elapsed = steps, 0, 0.0
    while done > 0:
        env.reset(seed=seed)
        plan = env.unwrapped.expert_trajectory().sample(env.unwrapped.control_hz)[1:]
        t0 = time.perf_counter()
        for action in plan[:done]:
            _, _, terminated, truncated, _ = env.step(action)
            done -= 1
            if terminated or truncated:
                break
        elapsed += time.perf_counter() - t0
        seed += 1
    env.close()
    return steps / elapsed


def vector_rate(env_id: str, obs_mode: str, steps: int, num_envs: int, vector: str) -> float:
    """Steps/s summed over sub-envs; each slot holds its start pose until the time limit resets it."""
    envs = make_vector_env(env_id, num_envs, obs_mode, 20.0, vector)
    seeds = list(range(num_envs))
    _, info = envs.reset(seed=seeds)
    hold = np.array(info["agent_pose"])
    iterations = max(1, steps // num_envs)
    t0 = time.perf_counter()
    for _ in range(iterations):
        _, _, terminated, truncated, _ = envs.step(hold)
        done = terminated | truncated
        if done.any():
            envs.reset(seed=seeds, options={"reset_mask": done})
    elapsed = time.perf_counter() - t0
    envs.close()
    return iterations * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--num-envs", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for name, env_id in cfbench.ENV_IDS.items():
        for mode in ("state", "pixels"):
            rows.append({
                "env": name,
                "obs": mode,
                "single (1 core)": single_env_rate(env_id, mode, args.steps),
                f"sync x{args.num_envs}": vector_rate(env_id, mode, args.steps, args.num_envs, "sync"),
                f"async x{os.cpu_count()}": vector_rate(env_id, mode, args.steps, os.cpu_count() or 1, "async"),
            })
    table = pd.DataFrame(rows)
    print("env steps per second (higher is better); aim: >= 5000 state and >= 500 pixels on one core")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.0f}"))
    single = table.set_index(["env", "obs"])["single (1 core)"]
    for (name, mode), rate in single.items():
        aim = 5000 if mode == "state" else 500
        print(f"{name:15s} {mode:7s} {rate / aim:5.2f}x the aim of {aim}")


if __name__ == "__main__":
    main()
