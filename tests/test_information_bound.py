"""The information bound's pieces (benchmarks/information_bound.py): frames, passage times,
template registration, and plans that keep the exact samples."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import cfbench  # noqa: F401  (registers the envs)

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "information_bound.py"
spec = importlib.util.spec_from_file_location("information_bound", PATH)
bound = importlib.util.module_from_spec(spec)
sys.modules["information_bound"] = bound
spec.loader.exec_module(bound)

SPEED = 150.0


def corner_path(t: np.ndarray, tau: float) -> np.ndarray:
    """Along +x into the origin at constant speed, then along +y: passing the corner at tau."""
    s = SPEED * (np.asarray(t) - tau)
    return np.stack([np.minimum(s, 0.0), np.maximum(s, 0.0)], axis=-1)


def corner_anchor(descriptor=(1.0,)) -> bound.Anchor:
    return bound.Anchor("corner", np.zeros(2), 0.0, 1.0, np.array(descriptor))


def test_anchor_frames_round_trip_and_mirror():
    anchor = bound.Anchor("corner", np.array([100.0, 50.0]), 0.7, -1.0, np.zeros(1), np.pi)
    poses = np.array([[120.0, 40.0, 0.3], [90.0, 70.0, -1.2]])
    back = anchor.to_world(anchor.to_local(poses))
    np.testing.assert_allclose(back[:, :2], poses[:, :2], atol=1e-9)
    np.testing.assert_allclose(bound.wrap_angle(back[:, 2] - poses[:, 2], np.pi), 0.0, atol=1e-9)
    # a point to the frame's left lands at negative local y when mirrored
    left = anchor.origin + 10 * np.array([-np.sin(0.7), np.cos(0.7)])
    assert anchor.to_local(left[None])[0, 1] == pytest.approx(-10.0)


def test_passage_time_is_exact_for_a_constant_speed_corner():
    times = np.arange(0, 1.21, 0.4)
    for tau in (0.45, 0.53, 0.71):
        assert bound.passage_time(times, corner_path(times, tau), np.zeros(2)) == pytest.approx(tau, abs=1e-9)


def test_passages_at_many_phases_make_a_template_that_registers_a_new_one():
    rng = np.random.default_rng(0)
    times = np.arange(0, 1.61, 0.4)
    true_taus = rng.uniform(0.5, 0.9, size=60)
    passages = [bound.Passage(corner_anchor(), times, corner_path(times, tau), np.ones(len(times), bool),
                              tau + rng.normal(0, 0.03), 0.0)  # first guesses off by ~5 units along the path
                for tau in true_taus]
    templates = bound.Templates(passages, similarity=1.0, bandwidth=0.02, window=0.6)
    before = np.std([p.tau for p in passages] - true_taus)
    for _ in range(2):
        taus = [templates.register("corner", p.anchor.descriptor, p.times, p.local, p.tau, exclude=i)
                for i, p in enumerate(passages)]
        for passage, tau in zip(passages, taus):
            passage.tau = tau
    # registered up to one shift common to all passages, far tighter than the guesses
    errors = np.array([p.tau for p in passages]) - true_taus
    assert errors.std() < before / 3
    true = 0.6123
    found = templates.register("corner", np.ones(1), times, corner_path(times, true), true + 0.05)
    assert found - true == pytest.approx(np.median(errors), abs=0.01)  # the guess was 0.05 off
    # the template between the samples: 0.1 s before the corner, at it, 0.1 s after
    offsets = np.array([-0.1, 0.0, 0.1])
    local, support = templates.predict("corner", np.ones(1), offsets + true - found, support=True)
    assert support.min() > bound.MIN_SUPPORT
    # within 2.5 units (the bandwidth rounds this infinitely sharp corner by ~2)
    np.testing.assert_allclose(local, corner_path(offsets, 0.0), atol=2.5)


def test_exact_waypoint_plan_keeps_every_exact_sample():
    env = gym.make("cfbench/PassagePassing-v0")
    episodes = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        expert = env.unwrapped.expert_trajectory()
        samples = expert.sample(2.5)
        episodes.append(SimpleNamespace(observations=np.asarray(obs)[None].repeat(len(samples), 0),
                                        actions=samples[1:], source_hz=2.5))
    oracle = bound.InformationBound(bound.BoundConfig(interpolation="akima", similarity=2.0, bandwidth=0.04))
    oracle.fit_pool("PassagePassing", SimpleNamespace(episodes=episodes))
    obs, _ = env.reset(seed=5)
    expert = env.unwrapped.expert_trajectory()
    context = SimpleNamespace(expert=expert, env_id="cfbench/PassagePassing-v0")
    plan = oracle.plan(context, np.asarray(obs, np.float64)[None], 2.5, 20.0)
    coarse = expert.sample(2.5)
    assert plan.shape == ((len(coarse) - 1) * 8, 2)
    np.testing.assert_allclose(plan[7::8], coarse[1:], atol=1e-6)
    assert np.isfinite(plan).all()
