"""The evaluator: run a policy on unseen envs at the target control rate and measure it.

``evaluate`` plays one episode per seed (the test seeds 20000-20099 by default) with Gymnasium
vector envs and returns the metrics and one row per episode. It knows no policy by name: it
talks to the interface of ``cfbench.interface`` only. Training, records and the command lines
live in the application package ``cfbench.app``.

Observation histories: a policy asking for ``n_obs_steps`` observations gets them spaced one
step of the reference rate apart (the rate of the most frequent step in its demos; for a
mixed-rate dataset the paper's rule, docs/design.md section 6), oldest first, the first
observation repeated before enough history exists — the spacing its training windows had.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from tqdm import tqdm

import cfbench  # noqa: F401  (registers the envs)
from cfbench.envs import resolve_env, short_name
from cfbench.interface import Agent, EpisodeContext
from cfbench.protocol import TARGET_HZ, TEST_SEEDS, seed_list
from cfbench.tree import tree_index, tree_stack

#: what ``evaluate(traces=True)`` adds to an episode's row
TRACE_KEYS = ("actions", "chunks", "final_pose")


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
        self.actions: list[np.ndarray] = []
        self.chunks: list[tuple[int, np.ndarray]] = []  # (first step, chunk) of every chunk executed

    def deviation(self, agent_pose: np.ndarray) -> float:
        return float(np.min(np.linalg.norm(self.expert_xy - agent_pose[:2], axis=1)))

    def trace(self, final_pose: np.ndarray) -> dict:
        return {"actions": np.array(self.actions), "chunks": self.chunks,
                "final_pose": np.asarray(final_pose, dtype=np.float64)}


def evaluate(
    policy: Agent,
    env: str,
    reference_hz: float,
    *,
    target_hz: float = TARGET_HZ,
    seeds: list[int] | None = None,
    num_envs: int = 10,
    vector: str = "sync",
    progress: bool = True,
    desc: str | None = None,
    traces: bool = False,
) -> dict:
    """Run one episode per seed of a policy that observes and replans at ``reference_hz`` (the
    reference rate of its demos, ``DemoDataset.reference_hz``); returns the metrics
    (``eval_wall_s`` included; training is the runner's) and the per-episode rows. With
    ``traces`` each row also holds what replays and explains the episode (records leave it
    out): the executed targets ``actions``, the ``chunks`` as (first step, targets) and the
    agent's ``final_pose``."""
    env_id = resolve_env(env)
    seeds = seed_list(TEST_SEEDS) if seeds is None else list(seeds)
    if not seeds:
        raise ValueError("no test seeds to evaluate on")
    stride = max(1, round(target_hz / reference_hz))
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
        bar = tqdm(total=len(seeds), desc=desc or f"{policy.name} {short_name(env_id)} {reference_hz:g} Hz",
                   unit="ep", disable=not progress, leave=False)
        while any(slot is not None for slot in slots):
            need = [i for i, slot in enumerate(slots) if slot is not None and not slot.queue]
            if need:
                history = tree_stack([observation_history(slots[i].observations, n_obs, stride) for i in need])
                t0 = time.perf_counter()
                chunks = policy.act(history, slots=need, reference_hz=reference_hz, target_hz=target_hz)
                act_seconds += time.perf_counter() - t0
                act_calls += 1
                act_batch += len(need)
                _check_chunks(policy, chunks, len(need), hold.shape[1])
                for i, chunk in zip(need, chunks):
                    slots[i].queue = list(chunk)
                    slots[i].chunks.append((len(slots[i].actions), np.asarray(chunk, dtype=np.float64)))
            actions = np.stack([slot.queue.pop(0) if slot is not None else hold[i] for i, slot in enumerate(slots)])
            obs, _, terminated, truncated, infos = envs.step(actions)
            finished = []
            for i, slot in enumerate(slots):
                done = bool(terminated[i] or truncated[i])
                if slot is not None:
                    slot.observations.append(tree_index(obs, i))
                    slot.deviations.append(slot.deviation(infos["agent_pose"][i]))
                    slot.actions.append(np.asarray(actions[i], dtype=np.float64))
                    if done:
                        rows.append({
                            "seed": slot.seed,
                            "success": bool(infos["is_success"][i]),
                            "collision": bool(infos["is_collision"][i]),
                            "steps": len(slot.deviations),
                            "path_deviation": float(np.mean(slot.deviations)),
                            **(slot.trace(infos["agent_pose"][i]) if traces else {}),
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
        slots[i] = _Slot(seeds[i], experts[i], tree_index(obs, i))
        expert = experts[i] if policy.privileged else None
        policy.reset(i, EpisodeContext(env_id=env_id, seed=seeds[i], control_hz=control_hz, expert=expert))


def observation_history(observations: list, n_obs: int, stride: int):
    """The ``n_obs`` observations a policy sees now, ``stride`` control steps apart, oldest first,
    the first observation repeated before enough exist: (n_obs, ...) arrays (a dict of them)."""
    last = len(observations) - 1
    return tree_stack([observations[max(0, last - stride * (n_obs - 1 - k))] for k in range(n_obs)])


def _check_chunks(policy: Agent, chunks, batch: int, pose_dim: int) -> None:
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
