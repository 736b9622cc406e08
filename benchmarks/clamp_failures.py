"""ClampPassing failure breakdown: where a policy's episodes fail, and how precise its actions
are at the moment the ring meets the pipe. Validation seeds only: this is for calibrating the
env, and the test seeds are for reporting.

Closed loop (the evaluator, 20 Hz control): every failed episode is put in the phase where it
ended, from the ring's pose in the pipe frame (front = the ring's front face, measured from the
pipe's near end along the axis):

- approach: the ring is not yet around the pipe, away from the rounded corner;
- corner: the same, within the corner's tangent points;
- insertion: the ring is around the pipe (its walls either side of it), the front past the near
  end, the rear not yet (a 2.5 Hz chord that cuts the corner touches here, off the axis);
- sliding: the whole ring is over the pipe body;
- exit: the front is past the far end;
- timeout: no contact and no success before the time limit;

with the ring's lateral offset from the axis and its yaw error (modulo pi: the ring is
symmetric) where it ended.

Open loop (teacher forcing, as in ``cfbench.fidelity``): the expert is executed and, at every
control step in the last ``QUERY_WINDOW`` before the ring meets the pipe, the policy is asked for a chunk;
its action for that moment is compared
(a privileged policy, the Tracker, plans the whole episode at its first query: it is asked once,
at the start) with the expert's pose there. ``margin`` is how much of
the clearance that action pose leaves when the ring sits over the pipe: the inner walls' nearest
point to the pipe, ``(w + c) cos(yaw) - depth / 2 |sin(yaw)| - |lateral| - w`` (w the pipe's
half thickness, c the clearance); negative means the pose touches. At zero offset the yaw it
tolerates is where that reaches 0.

    python benchmarks/clamp_failures.py --policy dp-t --source-hz 20 --threads 1
    python benchmarks/clamp_failures.py --policy tracker --source-hz 2.5 --out runs/clamp.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd

from cfbench.app.commands import add_training_arguments, spec_options
from cfbench.app.run import trained_policy
from cfbench.app.spec import RunSpec, Workspace
from cfbench.cli import set_threads
from cfbench.envs import clamp_passing as clamp
from cfbench.envs import resolve_env
from cfbench.evaluate import evaluate, observation_history
from cfbench.files import atomic_write_text
from cfbench.interface import EpisodeContext
from cfbench.protocol import TARGET_HZ, VALIDATION_SEEDS, seed_list
from cfbench.tree import tree_stack

#: control steps before the insertion moment at which the policy is asked (a chunk's reach)
QUERY_WINDOW = 16
PHASES = ("approach", "corner", "insertion", "sliding", "exit", "timeout")


def yaw_error(yaw: float, pipe_yaw: float) -> float:
    """Signed yaw misalignment modulo pi, in (-pi/2, pi/2]."""
    return -((pipe_yaw - yaw + np.pi / 2) % np.pi - np.pi / 2)


def margin(lateral: float, yaw_err: float, half_thickness: float) -> float:
    """Clearance left by a ring pose over the pipe body (see the module docstring)."""
    inner = half_thickness + clamp.CLEARANCE
    return (inner * math.cos(yaw_err) - clamp.RING_DEPTH / 2 * abs(math.sin(yaw_err)) - abs(lateral)
            - half_thickness)


def ring_in_pipe_frame(env, pose) -> tuple[float, float, float]:
    """(front, lateral, yaw error): the ring's front face from the near end, offset, misalignment."""
    axial, lateral = env._pipe_frame(pose[0], pose[1])
    front = axial + env._pipe_length / 2 + clamp.RING_DEPTH / 2
    return front, lateral, yaw_error(pose[2], math.atan2(env._axis[1], env._axis[0]))


def around_pipe(env, lateral: float) -> bool:
    """Whether a ring centred this far off the axis would have its walls around the pipe."""
    return abs(lateral) <= env._pipe_thickness / 2 + clamp.CLEARANCE + clamp.RING_WALL


def phase_of(env, row: dict) -> str:
    if not row["collision"]:
        return "timeout"
    pose = row["final_pose"]
    front, lateral, _ = ring_in_pipe_frame(env, pose)
    if around_pipe(env, lateral) and front >= 0:
        return "exit" if front >= env._pipe_length else "sliding" if front >= clamp.RING_DEPTH else "insertion"
    start = env._start_pose[:2]
    leg = env._corner - start
    turn = math.acos(np.clip(np.dot(leg, env._axis) / np.linalg.norm(leg), -1.0, 1.0))
    tangent = clamp.CORNER_RADIUS * math.tan(turn / 2)  # corner vertex to each tangent point
    return "corner" if np.linalg.norm(np.asarray(pose[:2]) - env._corner) <= tangent else "approach"


def closed_loop(policy, env_id: str, reference_hz: float, seeds: list[int]) -> tuple[pd.DataFrame, float]:
    outcome = evaluate(policy, env_id, reference_hz, seeds=seeds, progress=False, traces=True)
    env = gym.make(env_id).unwrapped
    rows = []
    for row in outcome["episodes"]:
        if row["success"]:
            continue
        env.reset(seed=row["seed"])
        _, lateral, yaw_err = ring_in_pipe_frame(env, row["final_pose"])
        rows.append({"seed": row["seed"], "phase": phase_of(env, row), "lateral": abs(lateral),
                     "yaw_deg": abs(math.degrees(yaw_err))})
    env.close()
    return pd.DataFrame(rows, columns=["seed", "phase", "lateral", "yaw_deg"]), outcome["metrics"]["success_rate"]


def insertion_queries(policy, env_id: str, reference_hz: float, seeds: list[int]) -> pd.DataFrame:
    """Open-loop actions for the moment the expert's ring meets the pipe (module docstring)."""
    stride = max(1, round(TARGET_HZ / reference_hz))
    env = gym.make(env_id, obs_mode=policy.config.obs_mode, control_hz=TARGET_HZ)
    rows = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            scene = env.unwrapped
            expert = scene.expert_trajectory()
            times = np.arange(0.0, expert.duration, 1e-3)
            frames = [ring_in_pipe_frame(scene, pose) for pose in expert(times)]
            meets = [front >= 0 and around_pipe(scene, lateral) for front, lateral, _ in frames]
            meet = int(np.ceil(times[meets.index(True)] * TARGET_HZ))  # first control step at or past it
            observations, queried = [obs], False
            for step in range(meet):
                if step >= meet - QUERY_WINDOW if not policy.privileged else step == 0:
                    policy.reset(0, EpisodeContext(env_id, seed, TARGET_HZ, expert if policy.privileged else None))
                    history = tree_stack([observation_history(observations, policy.config.n_obs_steps, stride)])
                    chunk = policy.act(history, slots=[0], reference_hz=reference_hz, target_hz=TARGET_HZ)[0]
                    chunk = np.asarray(chunk)
                    ahead = meet - step - 1  # action j targets step + j + 1
                    if ahead < len(chunk):
                        _, lateral, yaw_err = ring_in_pipe_frame(scene, chunk[ahead])
                        rows.append({"seed": seed, "ahead": ahead, "lateral": abs(lateral),
                                     "yaw_deg": abs(math.degrees(yaw_err)),
                                     "margin": margin(lateral, yaw_err, scene._pipe_thickness / 2)})
                        queried = True
                obs, *_ = env.step(expert((step + 1) / TARGET_HZ))
                observations.append(obs)
            if not queried:
                raise RuntimeError(f"seed {seed}: no query reached the insertion moment")
    finally:
        env.close()
    return pd.DataFrame(rows)


def pipe_half_thicknesses(env_id: str, seeds: list[int]) -> list[float]:
    env = gym.make(env_id).unwrapped
    half = []
    for seed in seeds:
        env.reset(seed=seed)
        half.append(env._pipe_thickness / 2)
    env.close()
    return half


def yaw_tolerance(half_thickness: float) -> float:
    """The largest yaw error (degrees) a ring centred on the axis tolerates over the pipe."""
    low, high = 0.0, math.pi / 4
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if margin(0.0, mid, half_thickness) >= 0 else (low, mid)
    return math.degrees(low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--env", default="ClampPassing")
    parser.add_argument("--source-hz", type=float, required=True)
    parser.add_argument("--episodes", type=int, default=VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
                        help="validation seeds from 10000")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    set_threads(args.threads)
    env_id = resolve_env(args.env)
    spec = RunSpec(env=env_id, rates=(args.source_hz,), **spec_options(args))
    policy, _, reference_hz = trained_policy(spec, Workspace(args.demos_dir, args.checkpoints_dir),
                                             retrain=args.retrain)
    seeds = seed_list(VALIDATION_SEEDS)[: args.episodes]

    failures, success = closed_loop(policy, env_id, reference_hz, seeds)
    by_phase = (failures.groupby("phase").agg(episodes=("seed", "size"), lateral=("lateral", "mean"),
                                              yaw_deg=("yaw_deg", "mean"))
                .reindex([p for p in PHASES if p in set(failures["phase"])]))
    queries = insertion_queries(policy, env_id, reference_hz, seeds)
    tolerance = float(np.mean([yaw_tolerance(h) for h in pipe_half_thicknesses(env_id, seeds)]))
    open_loop = {"queries": len(queries),
                 "lateral_mean": queries["lateral"].mean(), "lateral_p90": queries["lateral"].quantile(0.9),
                 "yaw_deg_mean": queries["yaw_deg"].mean(), "yaw_deg_p90": queries["yaw_deg"].quantile(0.9),
                 "touching_share": float((queries["margin"] < 0).mean()), "margin_mean": queries["margin"].mean()}
    print(f"{args.policy} from {args.source_hz:g} Hz demos on {env_id}, validation seeds {seeds[0]}-{seeds[-1]}: "
          f"{100 * success:.0f} % success")
    print("\nfailures by phase (ring pose where the episode ended; lateral in units, yaw in degrees):")
    print(by_phase.to_markdown(floatfmt=".2f"))
    print(f"\nopen-loop action at the insertion moment ({len(queries)} queries; clearance {clamp.CLEARANCE:g}, "
          f"yaw tolerance at zero offset {tolerance:.1f} deg on average):")
    print(pd.Series(open_loop).to_frame("value").to_markdown(floatfmt=".3f"))
    if args.out:
        report = {"command": ["python", *sys.argv], "env_id": env_id, "policy": args.policy,
                  "variant": args.variant, "source_hz": args.source_hz, "seeds": [seeds[0], seeds[-1] + 1],
                  "success_rate": success, "failures_by_phase": json.loads(by_phase.to_json(orient="index")),
                  "open_loop": {k: float(v) for k, v in open_loop.items()}, "yaw_tolerance_deg": tolerance,
                  "clearance": clamp.CLEARANCE, "ring_depth": clamp.RING_DEPTH}
        atomic_write_text(args.out, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
