"""Open-loop fidelity: how far a policy's actions are from the expert's, along the expert's path.

Closed-loop success says *that* a policy cut a corner; these numbers say by how much. The
expert is executed in the env at the target rate on the validation seeds (teacher forcing:
the policy's actions are never executed). Whenever the policy would replan (its previous chunk
used up) until the expert's motion is over, it is asked for a chunk from the observation
history it would see there, spaced as in the evaluator, and its target-rate actions are
compared with the expert's poses at the same times:

- ``waypoint_error``: distance at the source-rate slots (every ``target_hz / reference_hz``-th
  action), the part coarse demos supervise; ``waypoint_error_by_step``: its mean at 1, 2, ...
  source steps after the query (which horizon breaks);
- ``inbetween_error``: distance at the slots in between, what coarse-to-fine learning is about
  (none from 20 Hz demos: there are no slots in between);
- ``zigzag``: distance of the in-between actions from the straight line through the policy's
  own neighbouring waypoint actions (the agent's pose before the first), minus the same for the
  expert's poses: positive when the policy is more jagged than the expert.

Distances are in the x-y plane, world units; means and 90th percentiles over all actions that
fall within the expert's duration. The probe talks to the policy interface only.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from cfbench.envs import resolve_env
from cfbench.evaluate import observation_history
from cfbench.interface import Agent, EpisodeContext
from cfbench.protocol import TARGET_HZ, VALIDATION_SEEDS, seed_list
from cfbench.tree import tree_stack


def probe(policy: Agent, env: str, reference_hz: float, *, target_hz: float = TARGET_HZ,
          seeds: list[int] | None = None) -> dict:
    """The fidelity block of a record (see the module docstring)."""
    env_id = resolve_env(env)
    seeds = seed_list(VALIDATION_SEEDS) if seeds is None else list(seeds)
    stride = max(1, round(target_hz / reference_hz))
    errors: dict[str, list[np.ndarray]] = {"waypoint": [], "waypoint_step": [], "inbetween": [], "zig_policy": [],
                                           "zig_expert": []}
    queries = 0
    env_ = gym.make(env_id, obs_mode=policy.config.obs_mode, control_hz=target_hz)
    try:
        for seed in seeds:
            obs, info = env_.reset(seed=seed)
            expert = env_.unwrapped.expert_trajectory()
            policy.reset(0, EpisodeContext(env_id, seed, target_hz, expert if policy.privileged else None))
            observations, left, asked = [obs], 0, 0
            for step in range(env_.unwrapped.max_episode_steps):
                if left == 0:
                    if step / target_hz >= expert.duration:  # a policy replanning often is probed throughout
                        break
                    history = tree_stack([observation_history(observations, policy.config.n_obs_steps, stride)])
                    chunk = policy.act(history, slots=[0], reference_hz=reference_hz, target_hz=target_hz)[0]
                    chunk = np.asarray(chunk)
                    _compare(chunk, step / target_hz, info["agent_pose"], expert, stride, target_hz, errors)
                    left, asked = len(chunk), asked + 1
                left -= 1
                obs, _, terminated, truncated, info = env_.step(expert((step + 1) / target_hz))
                observations.append(obs)
                if terminated or truncated:
                    break
            queries += asked
    finally:
        env_.close()
    values = {key: np.concatenate(parts) if parts else np.empty(0) for key, parts in errors.items()}
    zig = None
    if len(values["zig_policy"]):
        policy_zig, expert_zig = values["zig_policy"], values["zig_expert"]
        zig = {"mean": float(policy_zig.mean() - expert_zig.mean()),
               "p90": float(np.percentile(policy_zig, 90) - np.percentile(expert_zig, 90))}
    steps = values["waypoint_step"].astype(int)
    by_step = [float(values["waypoint"][steps == k].mean()) for k in range(1, steps.max(initial=0) + 1)]
    return {"waypoint_error": _spread(values["waypoint"]), "waypoint_error_by_step": by_step,
            "inbetween_error": _spread(values["inbetween"]),
            "zigzag": zig, "queries": queries, "actions": len(values["waypoint"]) + len(values["inbetween"]),
            "seeds": [seeds[0], seeds[-1] + 1]}


def _compare(chunk: np.ndarray, t0: float, pose: np.ndarray, expert, stride: int, target_hz: float,
             errors: dict[str, list[np.ndarray]]) -> None:
    """Add one chunk's distances to ``errors``; action j targets time t0 + (j + 1) / target_hz."""
    times = t0 + np.arange(1, len(chunk) + 1) / target_hz
    inside = times <= expert.duration + 1e-9
    actions, truth = chunk[inside, :2], expert(times[inside])[:, :2]
    slot = np.arange(1, len(actions) + 1)
    waypoint = slot % stride == 0
    distance = np.linalg.norm(actions - truth, axis=1)
    errors["waypoint"].append(distance[waypoint])
    errors["waypoint_step"].append(slot[waypoint] // stride)
    errors["inbetween"].append(distance[~waypoint])
    last_waypoint = slot[waypoint].max(initial=0)
    between = ~waypoint & (slot < last_waypoint)  # in-between actions with a waypoint after them
    for points, start, key in ((actions, pose[:2], "zig_policy"), (truth, expert(t0)[:2], "zig_expert")):
        knots = np.concatenate([start[None], points[waypoint]])
        segment = slot[between] // stride  # the knot before each in-between slot
        errors[key].append(_to_segment(points[between], knots[segment], knots[segment + 1]))


def _to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point from the segment [a, b] (row by row)."""
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", points - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _spread(values: np.ndarray) -> dict | None:
    return {"mean": float(values.mean()), "p90": float(np.percentile(values, 90))} if len(values) else None
