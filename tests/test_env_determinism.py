"""Bit-exact episodes: the Tracker's episodes on ten test seeds hash to the committed values.

A change that only makes an env faster must not move one bit of what it returns: the
calibration and every published record rest on these trajectories. Each case plays the
Tracker (straight lines through the expert's samples) to the episode's end and hashes every
observation, reward, flag, ``info`` entry and ``sim_state()``; the actions get a hash of their
own, so a failure says whether the env's step or the plan (the expert, the Tracker's
interpolation) moved. The hashes hold for the platform and library versions recorded with
them (floating point in numpy, pymunk, pybullet and toppra may round differently elsewhere);
on another one the test is skipped.

Regenerate only from a commit whose trajectories are the trusted ones:

    python tests/test_env_determinism.py --write
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import cfbench
import policies
from cfbench.interface import EpisodeContext
from cfbench.protocol import TEST_SEEDS, seed_list

HASHES = Path(__file__).with_name("env_determinism.json")
SEEDS = seed_list(TEST_SEEDS)[:10]
#: (Tracker source rate, env control rate): the failing and the succeeding indicator at the
#: target rate, and a coarse control rate (80 physics sub-steps a step, cut short by contacts)
CASES = ((2.5, 20.0), (20.0, 20.0), (2.5, 2.5))


def fingerprint() -> dict[str, str]:
    """What the hashes depend on besides cfbench's own code."""
    return {"platform": f"{platform.system()}-{platform.machine()}",
            **{name: version(name) for name in ("numpy", "pymunk", "pybullet", "toppra")}}


def episode_hashes(env_name: str, source_hz: float, control_hz: float) -> dict[str, str]:
    """sha256 of the Tracker's actions and of everything the env returned, over ``SEEDS``."""
    env = gym.make(cfbench.ENV_IDS[env_name], control_hz=control_hz)
    tracker = policies.make("tracker")
    actions, steps = hashlib.sha256(), hashlib.sha256()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        context = EpisodeContext(cfbench.ENV_IDS[env_name], seed, control_hz, env.unwrapped.expert_trajectory())
        tracker.reset(0, context)
        plan = list(tracker.act(None, slots=[0], reference_hz=source_hz, target_hz=control_hz)[0])
        _update(steps, obs, info, env.unwrapped.sim_state())
        terminated = truncated = False
        while not (terminated or truncated):
            action = plan.pop(0) if len(plan) > 1 else plan[0]  # the Tracker holds its last pose
            actions.update(np.asarray(action).tobytes())
            obs, reward, terminated, truncated, info = env.step(action)
            _update(steps, obs, info, env.unwrapped.sim_state(), reward, terminated, truncated)
    env.close()
    return {"actions": actions.hexdigest(), "steps": steps.hexdigest()}


def _update(digest, obs, info: dict, sim_state, *outcome) -> None:
    for value in (obs, sim_state, *outcome, *(info[key] for key in sorted(info))):
        value = np.asarray(value)
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    digest.update(",".join(sorted(info)).encode())


def case_name(env_name: str, source_hz: float, control_hz: float) -> str:
    return f"{env_name} tracker {source_hz:g} Hz at {control_hz:g} Hz"


@pytest.fixture(scope="module")
def committed() -> dict:
    recorded = json.loads(HASHES.read_text())
    if recorded["fingerprint"] != fingerprint():
        pytest.skip(f"hashes recorded on {recorded['fingerprint']}, this is {fingerprint()}")
    return recorded["cases"]


@pytest.mark.parametrize("source_hz, control_hz", CASES)
def test_tracker_episodes_reproduce_bit_for_bit(env_name, source_hz, control_hz, committed):
    want = committed[case_name(env_name, source_hz, control_hz)]
    got = episode_hashes(env_name, source_hz, control_hz)
    assert got["actions"] == want["actions"], "the Tracker's plan moved (the expert or the interpolation)"
    assert got["steps"] == want["steps"], "the env returns different bits for the same actions"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    cases = {case_name(env, *case): episode_hashes(env, *case) for env in cfbench.ENV_IDS for case in CASES}
    HASHES.write_text(json.dumps({"fingerprint": fingerprint(), "cases": cases}, indent=1) + "\n")
    print(f"wrote {HASHES}")
