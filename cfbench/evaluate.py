"""The evaluator: run a policy on unseen test envs at the target control rate, record the result.

``cfbench-eval --policy tracker --env PassagePassing --source-hz 2.5`` evaluates over the 100
test envs (seeds 20000-20099) at 20 Hz with Gymnasium vector envs, prints a table, writes one
JSON record per (env, source rate) to ``results/`` and redraws that env's success-vs-source-rate
plot (and ``leaderboard.md``). Learned policies are trained first on the demos of the source rate. The evaluator knows
no policy by name: it talks to ``policies.base.Policy`` only.

Observation histories: a policy asking for ``n_obs_steps`` observations gets them spaced one
source-rate step apart (1/source_hz seconds; the slowest rate of a mixed dataset), oldest
first, the first observation repeated before enough history exists — the spacing its
training windows had.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from tqdm import tqdm

import cfbench  # noqa: F401  (registers the envs)
import policies
from cfbench.demos import DEFAULT_DEMOS_DIR, parse_rates, rates_label
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.results import DEFAULT_RESULTS_DIR, provenance, write_record
from cfbench.train import (
    DEFAULT_CHECKPOINTS_DIR,
    VALIDATION_SEEDS,
    add_training_arguments,
    set_threads,
    train_or_load,
    training_overrides,
)
from policies.base import EpisodeContext, Policy

TEST_SEEDS = (20000, 20100)


def make_vector_env(env_id: str, num_envs: int, obs_mode: str, control_hz: float, vector: str = "sync"):
    """Vector env whose slots the evaluator resets itself, so every episode gets a chosen seed."""
    factories = [lambda: gym.make(env_id, obs_mode=obs_mode, control_hz=control_hz) for _ in range(num_envs)]
    if vector == "sync":
        return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.DISABLED)
    if vector == "async":
        return AsyncVectorEnv(factories, autoreset_mode=AutoresetMode.DISABLED)
    raise ValueError(f"unknown vector mode {vector!r}; choose sync or async")


class _Slot:
    """Book-keeping of the episode running in one vector-env slot."""

    def __init__(self, seed: int, expert, first_obs):
        self.seed = seed
        self.expert_xy = expert.poses[:, :2]
        self.observations = [first_obs]
        self.queue: list[np.ndarray] = []
        self.deviations: list[float] = []

    def deviation(self, agent_pose: np.ndarray) -> float:
        return float(np.min(np.linalg.norm(self.expert_xy - agent_pose[:2], axis=1)))


def evaluate(
    policy: Policy,
    env: str,
    source_hz: tuple[float, ...],
    *,
    target_hz: float = 20.0,
    seeds: list[int] | None = None,
    num_envs: int = 10,
    vector: str = "sync",
    progress: bool = True,
) -> dict:
    """Run one episode per seed; returns metrics and per-episode rows (no provenance)."""
    env_id = resolve_env(env)
    seeds = list(range(*TEST_SEEDS)) if seeds is None else list(seeds)
    if not seeds:
        raise ValueError("no test seeds to evaluate on")
    execution_hz = min(source_hz)
    stride = max(1, round(target_hz / execution_hz))
    n_obs = policy.config.n_obs_steps
    num_envs = max(1, min(num_envs, len(seeds)))
    envs = make_vector_env(env_id, num_envs, policy.config.obs_mode, target_hz, vector)
    rows, act_seconds, act_calls, act_batch = [], 0.0, 0, 0
    start = time.perf_counter()
    try:
        pending = iter(seeds)
        slots: list[_Slot | None] = [None] * num_envs
        first = [next(pending) for _ in range(num_envs)]
        obs, infos = envs.reset(seed=first)
        hold = np.array(infos["agent_pose"])
        _start_episodes(policy, envs, env_id, target_hz, slots, obs, seeds=dict(enumerate(first)))
        bar = tqdm(total=len(seeds), desc=f"{policy.name} {short_name(env_id)} {rates_label(source_hz)} Hz",
                   unit="ep", disable=not progress, leave=False)
        while any(slot is not None for slot in slots):
            need = [i for i, slot in enumerate(slots) if slot is not None and not slot.queue]
            if need:
                history = _stack([_history(slots[i].observations, n_obs, stride) for i in need])
                t0 = time.perf_counter()
                chunks = policy.act(history, slots=need, source_hz=execution_hz, target_hz=target_hz)
                act_seconds += time.perf_counter() - t0
                act_calls += 1
                act_batch += len(need)
                _check_chunks(policy, chunks, len(need), hold.shape[1])
                for i, chunk in zip(need, chunks):
                    slots[i].queue = list(chunk)
            actions = np.stack([slot.queue.pop(0) if slot is not None else hold[i] for i, slot in enumerate(slots)])
            obs, _, terminated, truncated, infos = envs.step(actions)
            finished = []
            for i, slot in enumerate(slots):
                done = bool(terminated[i] or truncated[i])
                if slot is not None:
                    slot.observations.append(_index(obs, i))
                    slot.deviations.append(slot.deviation(infos["agent_pose"][i]))
                    if done:
                        rows.append({
                            "seed": slot.seed,
                            "success": bool(infos["is_success"][i]),
                            "collision": bool(infos["is_collision"][i]),
                            "steps": len(slot.deviations),
                            "path_deviation": float(np.mean(slot.deviations)),
                        })
                        bar.update(1)
                if done:
                    finished.append(i)
            if finished:
                new_seeds = {}
                for i in finished:
                    seed = next(pending, None)
                    new_seeds[i] = seed
                    if seed is None:
                        slots[i] = None
                mask = np.zeros(num_envs, dtype=bool)
                mask[finished] = True
                # Idle slots are reset too (the vector env requires it) and then just hold still.
                reset_seeds = [new_seeds.get(i) if new_seeds.get(i) is not None else 0 for i in range(num_envs)]
                obs, infos = envs.reset(seed=reset_seeds, options={"reset_mask": mask})
                hold[mask] = np.array(infos["agent_pose"])[mask]
                _start_episodes(policy, envs, env_id, target_hz, slots, obs,
                                seeds={i: s for i, s in new_seeds.items() if s is not None})
        bar.close()
    finally:
        envs.close()
    order = {seed: k for k, seed in enumerate(seeds)}
    rows.sort(key=lambda row: order[row["seed"]])
    successes = [row["steps"] for row in rows if row["success"]]
    return {
        "metrics": {
            "episodes": len(rows),
            "success_rate": sum(r["success"] for r in rows) / len(rows),
            "collision_rate": sum(r["collision"] for r in rows) / len(rows),
            "mean_steps_to_success": float(np.mean(successes)) if successes else None,
            "path_deviation": float(np.mean([r["path_deviation"] for r in rows])),
            "inference_ms_per_call": 1000.0 * act_seconds / max(act_calls, 1),
            "mean_batch_per_call": act_batch / max(act_calls, 1),
            "train_wall_s": 0.0,
            "eval_wall_s": time.perf_counter() - start,
        },
        "episodes": rows,
    }


def _start_episodes(policy, envs, env_id, control_hz, slots, obs, seeds: dict[int, int]) -> None:
    """New episodes with the given seeds have just been reset in slots ``seeds.keys()``."""
    if not seeds:
        return
    experts = envs.call("expert_trajectory")
    for i in seeds:
        slots[i] = _Slot(seeds[i], experts[i], _index(obs, i))
        expert = experts[i] if policy.privileged else None
        policy.reset(i, EpisodeContext(env_id=env_id, seed=seeds[i], control_hz=control_hz, expert=expert))


def _history(observations: list, n_obs: int, stride: int) -> list:
    last = len(observations) - 1
    return [observations[max(0, last - stride * (n_obs - 1 - k))] for k in range(n_obs)]


def _index(obs, i: int):
    if isinstance(obs, dict):
        return {key: _index(value, i) for key, value in obs.items()}
    return obs[i]


def _stack(histories: list[list]):
    """Per-slot observation histories -> (B, n_obs, ...) arrays (a dict of them for dict observations)."""
    first = histories[0][0]
    if isinstance(first, dict):
        return {key: _stack([[o[key] for o in h] for h in histories]) for key in first}
    return np.stack([np.stack(h) for h in histories])


def _check_chunks(policy: Policy, chunks, batch: int, pose_dim: int) -> None:
    """An array (batch, n_actions, pose_dim), or a list of ``batch`` chunks (n_i, pose_dim)."""
    ragged = isinstance(chunks, list)
    shapes = [np.shape(chunk) for chunk in chunks] if ragged or np.ndim(chunks) == 3 else None
    if shapes is None or len(shapes) != batch or any(
        len(shape) != 2 or shape[0] < 1 or shape[1] != pose_dim for shape in shapes
    ):
        raise ValueError(
            f"policy {policy.name!r} returned action chunks of shape {shapes if ragged else np.shape(chunks)}; "
            f"expected ({batch}, n_actions >= 1, {pose_dim}) or a list of {batch} (n_actions >= 1, {pose_dim})"
        )
    if not all(np.all(np.isfinite(chunk)) for chunk in chunks):
        raise ValueError(f"policy {policy.name!r} returned NaN or inf actions")


# --------------------------------------------------------------------- runs
def run(
    policy_name: str,
    env: str,
    source_hz: tuple[float, ...],
    *,
    target_hz: float = 20.0,
    test_seeds: tuple[int, int] = TEST_SEEDS,
    episodes: int | None = None,
    overrides: dict | None = None,
    variant: str = "",
    num_envs: int = 10,
    vector: str = "sync",
    profile: str = "cpu",
    n_demos: int = 90,
    validation_episodes: int = VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
    demos_dir: Path = DEFAULT_DEMOS_DIR,
    checkpoints_dir: Path = DEFAULT_CHECKPOINTS_DIR,
    results_dir: Path = DEFAULT_RESULTS_DIR,
    command: list[str] | None = None,
    progress: bool = True,
) -> tuple[dict, Path]:
    """Train (if the policy learns and no cached checkpoint matches), evaluate, write the record."""
    env_id = resolve_env(env)
    training = None
    if policies.policy_class(policy_name).trainable:
        policy, summary = train_or_load(
            policy_name, env_id, source_hz, overrides=overrides, profile=profile, n_demos=n_demos,
            validation_episodes=validation_episodes, demos_dir=demos_dir, checkpoints_dir=checkpoints_dir,
            progress=progress,
        )
        training = {key: summary[key] for key in ("run_dir", "best_step", "best_score", "validation", "losses",
                                                  "train_seconds", "validation_seeds", "phases") if key in summary}
    else:
        policy = policies.make(policy_name, profile=profile, **(overrides or {}))
    seeds = list(range(*test_seeds))[:episodes]
    outcome = evaluate(policy, env_id, source_hz, target_hz=target_hz, seeds=seeds,
                       num_envs=num_envs, vector=vector, progress=progress)
    outcome["metrics"]["train_wall_s"] = training["train_seconds"] if training else 0.0
    used_seeds = (seeds[0], seeds[-1] + 1)
    record = {
        "schema_version": 1,
        "policy": policy.name,
        "variant": variant,
        "privileged": policy.privileged,
        "env_id": env_id,
        "source_hz": list(source_hz),
        "target_hz": target_hz,
        **outcome,
        **({"training": training} if training else {}),
        "provenance": provenance(command or sys.argv, used_seeds, policy.config.to_dict()),
    }
    return record, write_record(record, results_dir)


def parse_seed_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"bad seed range {text!r}: use START:END (END exclusive), e.g. 20000:20100") from None
    if end <= start:
        raise ValueError(f"empty seed range {text!r}: END must be greater than START")
    return start, end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cfbench-eval",
        description="Train (if needed) and evaluate a policy on cfbench test envs at a fine control rate.",
    )
    add_training_arguments(parser)
    parser.add_argument("--env", nargs="+", default=["PassagePassing"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    parser.add_argument("--source-hz", nargs="+", default=["2.5"], help="demo rates; '2.5+5' = mixed dataset")
    parser.add_argument("--target-hz", type=float, default=20.0)
    parser.add_argument("--test-seeds", default=f"{TEST_SEEDS[0]}:{TEST_SEEDS[1]}", help="START:END (END exclusive)")
    parser.add_argument("--episodes", type=int, default=None, help="evaluate only the first N test seeds")
    parser.add_argument("--variant", default="", help="label for this configuration in results and the leaderboard")
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--vector", choices=["sync", "async"], default="sync")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--leaderboard", type=Path, default=None,
                        help="regenerated from --results-dir after the runs, with the per-env plots "
                             "(default: leaderboard.md beside the results folder)")
    parser.add_argument("--no-leaderboard", action="store_true", help="write only the result records")
    args = parser.parse_args(argv)
    try:
        overrides = training_overrides(args)
        envs = list(ENV_IDS) if args.env == ["all"] else [short_name(resolve_env(e)) for e in args.env]
        rate_sets = [parse_rates(text) for text in args.source_hz]
        test_seeds = parse_seed_range(args.test_seeds)
        if args.episodes is not None and args.episodes < 1:
            raise ValueError(f"--episodes must be positive, got {args.episodes}")
        if not args.target_hz > 0:
            raise ValueError(f"--target-hz must be positive, got {args.target_hz}")
    except ValueError as error:
        parser.error(str(error))

    import pandas as pd

    from cfbench.leaderboard import PLOTS, regenerate

    set_threads(args.threads)
    rows = []
    for env in envs:
        for rates in rate_sets:
            record, path = run(
                args.policy, env, rates, target_hz=args.target_hz, test_seeds=test_seeds, episodes=args.episodes,
                overrides=overrides, variant=args.variant, num_envs=args.num_envs, vector=args.vector,
                profile=args.profile, n_demos=args.n_demos, validation_episodes=args.val_episodes,
                demos_dir=args.demos_dir,
                checkpoints_dir=args.checkpoints_dir, results_dir=args.results_dir,
                command=["cfbench-eval", *(sys.argv[1:] if argv is None else argv)],
            )
            m = record["metrics"]
            rows.append({
                "env": env, "source Hz": rates_label(rates), "success %": 100 * m["success_rate"],
                "collision %": 100 * m["collision_rate"], "steps to success": m["mean_steps_to_success"],
                "path dev": m["path_deviation"], "episodes": m["episodes"], "train s": m["train_wall_s"],
                "eval s": m["eval_wall_s"], "record": path.name,
            })
    table = pd.DataFrame(rows)
    print(f"\n{args.policy}{' (' + args.variant + ')' if args.variant else ''} at {args.target_hz:g} Hz")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    if not args.no_leaderboard:
        args.leaderboard = args.leaderboard or args.results_dir.parent / "leaderboard.md"
        regenerate(args.results_dir, args.leaderboard)
        plots = ", ".join(str(args.results_dir / PLOTS / f"{e}.png") for e in envs)
        print(f"leaderboard: {args.leaderboard}; plots: {plots}")
