"""Environment throughput: steps/s per env in state and pixels mode, single and vectorised, and
each env side by side with gym-pusht's PushT (the reference env of the field).

Actions are the expert's own 20 Hz plan (realistic contacts and episode resets included).
Single-env numbers use one core; the vectorised rows use Gymnasium's SyncVectorEnv (one
process) and AsyncVectorEnv (one worker process per core).

The PushT comparison: PushT (state mode, 10 sub-steps a step as ours, 300-step episodes) runs
in a child process of its own Python, since gym-pusht needs pymunk 6 and cfbench pymunk 7,
driven by a seeded random walk of target positions. It takes turns with our envs (never both
at once), each ``--steps`` steps on one core, for ``--rounds`` rounds; the best rate of each is
kept (the least disturbed on a shared machine) and the ratio printed. Only the ratio means
anything: absolute rates depend on the machine and whatever else runs on it.

    python benchmarks/env_speed.py [--steps 3000]
    python3 -m venv ~/pusht-venv && ~/pusht-venv/bin/pip install gym-pusht
    python benchmarks/env_speed.py --pusht-python ~/pusht-venv/bin/python --compare-only [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np

#: PushT's random walk: the target moves this far (normal, per axis) each step, inside the world
WALK_STEP = 10.0
PUSHT_WORLD = 512.0


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
    from cfbench.evaluate import make_vector_env

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


def pusht_rate(env, steps: int, seed: int) -> float:
    """PushT steps/s over ``steps`` steps of a random walk drawn (untimed) from ``seed``."""
    rng = np.random.default_rng(seed)
    actions = np.empty((steps, 2), dtype=np.float32)
    target = np.full(2, PUSHT_WORLD / 2)
    for i, move in enumerate(rng.normal(0.0, WALK_STEP, (steps, 2))):
        target = actions[i] = np.clip(target + move, 0.0, PUSHT_WORLD)
    done, elapsed = 0, 0.0
    env.reset(seed=seed)
    while done < steps:
        t0 = time.perf_counter()
        for action in actions[done:]:
            _, _, terminated, truncated, _ = env.step(action)
            done += 1
            if terminated or truncated:
                break
        elapsed += time.perf_counter() - t0
        env.reset(seed=seed + done)
    return steps / elapsed


def pusht_child() -> None:
    """PushT's side, in gym-pusht's Python: each line "steps seed" read -> one rate written."""
    import gym_pusht  # noqa: F401  (registers PushT)

    env = gym.make("gym_pusht/PushT-v0", obs_type="state")
    print("ready", flush=True)
    for line in sys.stdin:
        steps, seed = map(int, line.split())
        print(pusht_rate(env, steps, seed), flush=True)


def compare_with_pusht(python: str, steps: int, rounds: int) -> None:
    """Our envs and PushT in turns, one core each; the ratio of the best rates."""
    import cfbench

    child = subprocess.Popen([python, __file__, "--pusht-child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if child.stdout.readline() != "ready\n":
        child.wait()
        raise RuntimeError(f"PushT's process did not start: does {python} have gym-pusht installed?")
    ours = {name: 0.0 for name in cfbench.ENV_IDS}
    pusht = 0.0
    load = [os.getloadavg()[0]]
    try:
        for round_ in range(rounds):
            for name, env_id in cfbench.ENV_IDS.items():
                ours[name] = max(ours[name], single_env_rate(env_id, "state", steps))
                child.stdin.write(f"{steps} {round_}\n")
                child.stdin.flush()
                pusht = max(pusht, float(child.stdout.readline()))
            load.append(os.getloadavg()[0])
    finally:
        child.stdin.close()
        child.wait()
    print(f"\nside by side with gym-pusht's PushT (state mode, one core, {steps} steps a turn, best of {rounds} "
          f"rounds; 1-minute load average {min(load):.2f}-{max(load):.2f} on {os.cpu_count()} cores)")
    for name, rate in ours.items():
        print(f"{name:15s} {rate / pusht:5.2f}x PushT's steps/s")


def throughput_table(steps: int, num_envs: int) -> None:
    import pandas as pd

    import cfbench

    rows = []
    for name, env_id in cfbench.ENV_IDS.items():
        for mode in ("state", "pixels"):
            rows.append({
                "env": name,
                "obs": mode,
                "single (1 core)": single_env_rate(env_id, mode, steps),
                f"sync x{num_envs}": vector_rate(env_id, mode, steps, num_envs, "sync"),
                f"async x{os.cpu_count()}": vector_rate(env_id, mode, steps, os.cpu_count() or 1, "async"),
            })
    table = pd.DataFrame(rows)
    print("env steps per second (higher is better); aim: >= 5000 state and >= 500 pixels on one core")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.0f}"))
    single = table.set_index(["env", "obs"])["single (1 core)"]
    for (name, mode), rate in single.items():
        aim = 5000 if mode == "state" else 500
        print(f"{name:15s} {mode:7s} {rate / aim:5.2f}x the aim of {aim}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--pusht-python", default=os.environ.get("CFBENCH_PUSHT_PYTHON"),
                        help="a Python with gym-pusht installed (default: $CFBENCH_PUSHT_PYTHON)")
    parser.add_argument("--rounds", type=int, default=5, help="turns of the PushT comparison")
    parser.add_argument("--compare-only", action="store_true", help="only the PushT comparison")
    parser.add_argument("--pusht-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pusht_child:
        return pusht_child()
    if not args.compare_only:
        throughput_table(args.steps, args.num_envs)
    if args.pusht_python:
        compare_with_pusht(args.pusht_python, args.steps, args.rounds)
    else:
        print("\nno PushT comparison: give --pusht-python (a venv with `pip install gym-pusht`)")


if __name__ == "__main__":
    main()
