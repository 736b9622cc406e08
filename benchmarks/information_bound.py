"""The information bound: how much 90 coarse demos say about the motion between their samples.

A 2.5 Hz demo holds the expert's pose every 0.4 s, but 90 demos pass each corner of their scenes
at 90 different phases. This script measures what that pool says about the in-between motion
with no network in the way (issue 36, section 1), by non-parametric regression on
(scene, phase) -> pose:

- **Anchors.** Each env names the places where its expert's motion bends (corners, the end),
  as frames computed from the scene features of the first observation: origin, x axis,
  the y axis mirrored so every passage turns the same way, and a descriptor of what changes the
  motion there (passage width, turn angle, the speed limit along the axes: the experts are
  timed per world axis in ButtonTouch and ClampPassing). Nothing privileged.
- **Registration.** Every training demo passes every anchor; its samples in the anchor frame,
  at their times relative to its passage time tau, fall at a phase of its own. tau is unknown
  (the demo has no sample at the corner); it starts at the closest approach of the demo's
  straight-line path to the anchor and is refined, twice over all demos, to the shift that best
  lays the demo's samples on the template of the others.
- **Templates.** The pose at phase s of a passage with descriptor d: local-linear regression
  in s (Gaussian weights, ``bandwidth`` seconds) over the registered samples of every training
  passage, each weighted by its descriptor's likeness to d (Gaussian, ``similarity`` standard
  deviations). Used only where those samples reach (the start is never one: every demo starts at
  rest at t = 0, so the pool holds the same phases there and says nothing in between).
- **The oracle** plans like ``tracker (smooth)`` from the test env's own exact samples (it is
  privileged in the same way), but fills each step between them from an anchor's template (tau
  registered on the exact samples), corrected linearly in time so the plan passes through every
  exact sample: of the anchors within ``window`` of the step, the template that best meets the
  step's two exact samples; where none reaches, the indicator's curve.
- **Predicted waypoints** (the second row of each cell): the unprivileged form, no exact samples
  and no expert read. Each anchor's tau is the descriptor-weighted regression of the training
  passages' tau on their path length from the start; the plan is each anchor's template where
  it reaches, straight lines between (and from the start pose).

It reports, on the validation or test seeds, the in-between error (``cfbench.fidelity``) and
closed-loop success beside ``tracker (smooth)`` and the 20 Hz expert (``tracker`` at 20 Hz), with
the paired test against the indicator. The templates' settings are chosen on the validation
seeds by closed-loop success, then in-between error (``--choose``):

    python benchmarks/information_bound.py --choose                 # validation: settings per env, rate
    python benchmarks/information_bound.py                          # test seeds, the chosen settings
    python benchmarks/information_bound.py --env PassagePassing --source-hz 2.5 --episodes 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from cfbench.app.spec import RunSpec
from cfbench.datasets import load_demos
from cfbench.envs import ENV_IDS, state_layout
from cfbench.evaluate import evaluate
from cfbench.fidelity import probe
from cfbench.files import atomic_write_text
from cfbench.interface import EpisodeContext
from cfbench.protocol import TARGET_HZ, TEST_SEEDS, VALIDATION_SEEDS, seed_list
from cfbench.stats import paired_difference
from policies.base import PolicyConfig, register
from policies.chunking import angle_settings
from policies.frames import wrap_angle
from policies.interpolation import InterpolationConfig, upsample
from policies.tracker import Tracker

#: the settings chosen on the validation seeds, per env and rate (written by --choose)
CHOICES = Path(__file__).resolve().parent / "information_bound.json"
SIMILARITIES = (0.5, 1.0, 2.0)
BANDWIDTHS = (0.02, 0.04, 0.08)
#: a template is used only where its neighbours' samples reach: kernel weight at least this
MIN_SUPPORT = 0.5
#: how far (seconds) a template may slide along its path to meet an exact sample
WARP = 0.1


# ------------------------------------------------------------------------------------ anchors
@dataclass
class Anchor:
    """A frame where the expert's motion bends, and what changes the motion there."""

    kind: str
    origin: np.ndarray
    angle: float
    mirror: float
    descriptor: np.ndarray
    angle_period: float = 2 * np.pi

    def _rotation(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([[c, -s], [s, c]])  # local -> world

    def to_local(self, poses: np.ndarray) -> np.ndarray:
        out = np.array(poses, dtype=np.float64)
        out[:, :2] = (out[:, :2] - self.origin) @ self._rotation()
        out[:, 1] *= self.mirror
        if out.shape[1] > 2:
            out[:, 2] = self.mirror * wrap_angle(out[:, 2] - self.angle, self.angle_period)
        return out

    def to_world(self, local: np.ndarray) -> np.ndarray:
        out = np.array(local, dtype=np.float64)
        out[:, 1] *= self.mirror
        out[:, :2] = out[:, :2] @ self._rotation().T + self.origin
        if out.shape[1] > 2:
            out[:, 2] = self.angle + self.mirror * out[:, 2]
        return out


def _heading(vector) -> float:
    return math.atan2(vector[1], vector[0])


def _unit(vector) -> np.ndarray:
    return np.asarray(vector, dtype=np.float64) / np.linalg.norm(vector)


def _turn_side(incoming, outgoing) -> float:
    return 1.0 if incoming[0] * outgoing[1] - incoming[1] * outgoing[0] >= 0 else -1.0


def _axis_speed(direction) -> float:
    """How much faster than the per-axis limit an expert timed per world axis moves along
    ``direction`` (1 along an axis, sqrt 2 on the diagonal)."""
    return 1.0 / max(abs(direction[0]), abs(direction[1]))


def passage_anchors(state: np.ndarray) -> list[Anchor]:
    """The four turns of the centre line and the exit, timed in the passage frame: the width sets
    the arc, the run-up (from the start, for the first turn) whether the expert is up to speed,
    the run-out when it turns again."""
    state = state.astype(np.float64)
    corners, width = state[2:14].reshape(6, 2), state[14]
    anchors = []
    for i in range(1, 6):
        incoming = corners[i] - corners[i - 1]
        run_up = min(float(np.linalg.norm(corners[i] - (state[:2] if i == 1 else corners[i - 1]))), 100.0)
        if i < 5:
            outgoing = corners[i + 1] - corners[i]
            side, kind, run_out = _turn_side(incoming, outgoing), "corner", min(float(np.linalg.norm(outgoing)), 100.0)
        else:
            side, kind, run_out = 1.0, "exit", 0.0
        anchors.append(Anchor(kind, corners[i], _heading(incoming), side, np.array([width, run_up, run_out])))
    return anchors


def button_anchors(state: np.ndarray) -> list[Anchor]:
    """The slot's mouth (the expert's turn into it), the bend, the button."""
    state = state.astype(np.float64)
    tip, button, inward, side, width, depth, reach = state[:2], state[2:4], state[4:6], state[6], state[7], \
        state[8], state[9]
    along = np.array([-inward[1], inward[0]])
    bend = button - side * reach * along
    mouth = bend - depth * inward
    lateral = float((tip - mouth) @ along)
    return [
        Anchor("mouth", mouth, _heading(inward), -1.0 if lateral >= 0 else 1.0,
               np.array([abs(lateral), float((mouth - tip) @ inward), _axis_speed(inward)])),
        Anchor("bend", bend, _heading(inward), side, np.array([width, _axis_speed(inward)])),
        Anchor("button", button, _heading(side * along), 1.0, np.array([reach, _axis_speed(inward)])),
    ]


def clamp_anchors(state: np.ndarray) -> list[Anchor]:
    """The pipe's near end (the corner onto the axis) and its far end; yaw in each frame."""
    state = state.astype(np.float64)
    ring, centre, axis, length = state[:3], state[3:5], state[5:7], state[7]
    near, far = centre - axis * length / 2, centre + axis * length / 2
    approach = _unit(near - ring[:2])
    lateral = float(axis[0] * (ring[1] - near[1]) - axis[1] * (ring[0] - near[0]))
    start_yaw = wrap_angle(ring[2] - _heading(axis), np.pi)
    turn = math.acos(float(np.clip(approach @ axis, -1, 1)))
    return [
        Anchor("near end", near, _heading(axis), -1.0 if lateral >= 0 else 1.0,
               np.array([turn, start_yaw, _axis_speed(axis), _axis_speed(approach)]), np.pi),
        Anchor("far end", far, _heading(axis), 1.0, np.array([length, _axis_speed(axis)]), np.pi),
    ]


def path_lengths(anchors: list[Anchor]) -> np.ndarray:
    """Each anchor's distance from the first along the polyline through them (the time the
    straights between them take is what predicts their passage times)."""
    return np.cumsum([np.linalg.norm(a.origin - b.origin) for a, b in zip([anchors[0], *anchors], anchors)])


ANCHORS = {"PassagePassing": passage_anchors, "ButtonTouch": button_anchors, "ClampPassing": clamp_anchors}


# ---------------------------------------------------------------------------------- templates
@dataclass
class Passage:
    """One training demo passing one anchor: its samples in the anchor's frame."""

    anchor: Anchor
    times: np.ndarray  # every sample within the window of the passage
    local: np.ndarray
    owned: np.ndarray  # those nearer this passage than any other: the ones that register it
    tau: float
    distance: float  # its anchor's path length from the first (``path_lengths``; the predicted form)


def passage_time(times: np.ndarray, poses: np.ndarray, point: np.ndarray) -> float:
    """A first guess of when the expert passes ``point``: between the two samples around the
    chord nearest it, at constant speed along the detour through it. (The time on the chord
    itself pulls every guess toward the nearer sample: a template registered from there stays
    squeezed toward the corner.)"""
    chords = poses[1:, :2] - poses[:-1, :2]
    along = np.clip(np.einsum("ij,ij->i", point - poses[:-1, :2], chords) / np.maximum((chords**2).sum(1), 1e-12), 0, 1)
    k = int(np.argmin(np.linalg.norm(poses[:-1, :2] + along[:, None] * chords - point, axis=1)))
    before, after = np.linalg.norm(point - poses[k, :2]), np.linalg.norm(poses[k + 1, :2] - point)
    return float(times[k] + (times[k + 1] - times[k]) * before / max(before + after, 1e-12))


class Templates:
    """Registered passages per anchor kind, and the template of a descriptor at any phase."""

    def __init__(self, passages: list[Passage], similarity: float, bandwidth: float, window: float):
        self.similarity, self.bandwidth, self.window = similarity, bandwidth, window
        self.kinds: dict[str, list[Passage]] = {}
        for passage in passages:
            self.kinds.setdefault(passage.anchor.kind, []).append(passage)
        # what never changes as the passages are registered, stacked once per kind
        self.descriptors = {kind: np.stack([p.anchor.descriptor for p in group]) for kind, group in self.kinds.items()}
        self.scale = {kind: descriptors.std(axis=0) + 1e-9 for kind, descriptors in self.descriptors.items()}
        self.samples = {kind: np.array([len(p.times) for p in group]) for kind, group in self.kinds.items()}
        self.local = {kind: np.concatenate([p.local for p in group]) for kind, group in self.kinds.items()}

    def weights(self, kind: str, descriptor: np.ndarray, exclude: int | None = None) -> np.ndarray:
        """Each passage's weight for a template at ``descriptor``: Gaussian in the standardised
        descriptor distance (soft: where similar passages have no sample, less similar ones speak)."""
        gaps = np.linalg.norm((self.descriptors[kind] - descriptor) / self.scale[kind], axis=1)
        weights = np.exp(-0.5 * (gaps / self.similarity) ** 2)
        if exclude is not None:
            weights[exclude] = 0.0
        return weights

    def predict(self, kind: str, descriptor: np.ndarray, phases: np.ndarray, exclude: int | None = None,
                support: bool = False):
        """Local-linear regression of the pose at each phase (seconds after the passage); with
        ``support`` also the kernel weight there (about the similar samples within a bandwidth: a
        phase no similar passage reached has none, and its value is an extrapolation)."""
        s = np.concatenate([p.times - p.tau for p in self.kinds[kind]])  # the passage times move as they register
        y = self.local[kind]
        prior = np.repeat(self.weights(kind, descriptor, exclude), self.samples[kind])
        gap = s[None, :] - np.asarray(phases, dtype=np.float64)[:, None]  # (Q, N)
        w = prior * np.exp(-0.5 * (gap / self.bandwidth) ** 2) + 1e-300
        s0, s1, s2 = w.sum(1), (w * gap).sum(1), (w * gap**2).sum(1)
        t0, t1 = w @ y, (w * gap) @ y
        det = s0 * s2 - s1**2
        stable = det > 1e-9 * np.maximum(s0 * s2, 1e-300)
        linear = (s2[:, None] * t0 - s1[:, None] * t1) / np.where(stable, det, 1.0)[:, None]
        value = np.where(stable[:, None], linear, t0 / s0[:, None])
        return (value, s0) if support else value

    def register(self, kind: str, descriptor: np.ndarray, times: np.ndarray, local: np.ndarray, guess: float,
                 exclude: int | None = None) -> float:
        """The passage time that best lays these samples on the template (grid, then a parabola)."""
        keep = np.abs(times - guess) <= self.window
        if not keep.any():
            return guess
        times, local = times[keep], local[keep]
        step = 0.0025
        shifts = guess + step * np.arange(-80, 81)
        phases = (times[None, :] - shifts[:, None]).reshape(-1)
        predicted = self.predict(kind, descriptor, phases, exclude).reshape(len(shifts), len(times), -1)
        cost = ((predicted - local[None]) ** 2)[..., :2].sum(axis=(1, 2))
        best = int(np.argmin(cost))
        if 0 < best < len(shifts) - 1:
            a, b, c = cost[best - 1 : best + 2]
            curvature = a - 2 * b + c
            if curvature > 0:
                return float(shifts[best] + step * 0.5 * (a - c) / curvature)
        return float(shifts[best])


def expert_samples(episode) -> tuple[np.ndarray, np.ndarray]:
    """A demo's exact expert poses and their times: the start pose, then each action (the pose
    due at the next sample)."""
    pose_dim = episode.actions.shape[1]
    poses = np.concatenate([np.asarray(episode.observations[:1, :pose_dim], np.float64), episode.actions])
    return np.arange(len(poses)) / episode.source_hz, poses


def passage_guesses(anchors: list[Anchor], times: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each anchor's first guess of its passage time, and which anchor each sample belongs to:
    the one whose passage is nearest in time (it registers that passage only: a sample past the
    next corner says little about this one's timing)."""
    guesses = np.array([passage_time(times, poses, anchor.origin) for anchor in anchors])
    return guesses, np.argmin(np.abs(times[:, None] - guesses[None]), axis=1)


def fit_templates(env: str, dataset, similarity: float, bandwidth: float, window: float, rounds: int = 2) -> Templates:
    """Every training demo's passages, registered to the others' templates ``rounds`` times."""
    passages = []
    for episode in dataset.episodes:
        times, poses = expert_samples(episode)
        anchors = ANCHORS[env](np.asarray(episode.observations[0], np.float64))
        guesses, owner = passage_guesses(anchors, times, poses)
        travelled = path_lengths(anchors)
        for k, anchor in enumerate(anchors):
            near = np.abs(times - guesses[k]) <= window
            passages.append(Passage(anchor, times[near], anchor.to_local(poses[near]), owner[near] == k, guesses[k],
                                    travelled[k]))
    templates = Templates(passages, similarity, bandwidth, window)
    for _ in range(rounds):
        for group in templates.kinds.values():
            taus = [templates.register(p.anchor.kind, p.anchor.descriptor, p.times[p.owned], p.local[p.owned], p.tau,
                                       exclude=i)
                    for i, p in enumerate(group)]
            for passage, tau in zip(group, taus):
                passage.tau = tau
    return templates


# ------------------------------------------------------------------------------------ oracle
@dataclass
class BoundConfig(InterpolationConfig, PolicyConfig):
    """The oracle's templates; ``interpolation`` is the indicator's curve, used away from anchors."""

    #: how alike two passages' descriptors must be to share a template: the Gaussian width of the
    #: passages' weights, in standard deviations of each descriptor entry
    similarity: float = 0.5
    #: Gaussian width of the template's regression over phase, seconds
    bandwidth: float = 0.02
    #: how far from an anchor's passage (seconds) its samples are pooled and its template used
    window: float = 0.6
    #: no exact samples: each anchor's passage time predicted from the training demos
    predict_waypoints: bool = False

    LIMITS: ClassVar[dict[str, str]] = {"similarity": "positive", "bandwidth": "positive", "window": "positive"}


@register("information-bound")
class InformationBound(Tracker):
    """Plans the whole episode at the first call, as the Tracker does, then holds its last pose."""

    config_class = BoundConfig

    def __init__(self, config: BoundConfig | None = None):
        super().__init__(config)
        self.templates: Templates | None = None
        self.env = ""

    def fit_pool(self, env: str, dataset) -> None:
        c = self.config
        self.env = env
        self.templates = fit_templates(env, dataset, c.similarity, c.bandwidth, c.window)
        self.pose_dim = dataset.episodes[0].actions.shape[1]

    def _predicted_tau(self, anchor: Anchor, travelled: float) -> float:
        """The passage time of alike training passages, locally linear in the path length from the
        start (the time the straights take)."""
        group = self.templates.kinds[anchor.kind]
        weights = np.sqrt(self.templates.weights(anchor.kind, anchor.descriptor))
        design = np.column_stack([np.ones(len(group)), [p.distance - travelled for p in group]])
        taus = np.array([p.tau for p in group])
        coef, *_ = np.linalg.lstsq(design * weights[:, None], taus * weights, rcond=None)
        return float(coef[0])

    def plan(self, context: EpisodeContext, obs_history, reference_hz: float, target_hz: float) -> np.ndarray:
        """Target-rate poses from 1 / target_hz on: to the last exact sample, or with
        ``predict_waypoints`` to the end of the last anchor's template (no expert read)."""
        if self.templates is None:
            raise RuntimeError("fit_pool() the oracle on the training demos first")
        state = np.asarray(obs_history[-1], np.float64)
        anchors = ANCHORS[self.env](state)
        if self.config.predict_waypoints:
            return self._predicted_plan(anchors, state[: self.pose_dim], target_hz)
        c = self.config
        coarse = context.expert.sample(reference_hz)
        coarse_times = np.arange(len(coarse)) / reference_hz
        ratio = round(target_hz / reference_hz)
        fine_times = np.arange(1, (len(coarse) - 1) * ratio + 1) / target_hz
        angles = angle_settings(state_layout(context.env_id).to_dict(), coarse.shape[1])
        guesses, owner = passage_guesses(anchors, coarse_times, coarse)
        taus = [self.templates.register(anchor.kind, anchor.descriptor, coarse_times[owner == k],
                                        anchor.to_local(coarse[owner == k]), guesses[k])
                for k, anchor in enumerate(anchors)]
        plan = upsample(coarse[0], coarse[1:], reference_hz, target_hz, c.interpolation, **angles)
        for m in range(len(coarse) - 1):
            ends, rows = coarse_times[m : m + 2], slice(m * ratio, (m + 1) * ratio)
            fills = [self._fill(anchor, tau, ends, coarse[m : m + 2], fine_times[rows])
                     for anchor, tau in zip(anchors, taus) if abs(ends.mean() - tau) <= c.window]
            _, fill = min(fills, key=lambda fill: fill[0], default=(np.inf, None))
            if fill is not None:  # the template that best meets the exact samples at the step's two ends
                plan[rows] = fill
        return plan

    def _fill(self, anchor: Anchor, tau: float, ends: np.ndarray, exact: np.ndarray, times: np.ndarray):
        """One step's in-betweens from an anchor's template, and how far the template missed the
        step's exact samples. The template is run from the phase where it comes nearest the first
        exact sample to the phase nearest the second (within ``WARP`` s of their times: a passage
        time a little off slides the template along its path, it does not bend it), then shifted
        linearly in time by what it still misses, so the plan passes through both."""
        offsets = np.linspace(-WARP, WARP, 81)
        searched = (ends - tau)[:, None] + offsets[None]
        local, support = self.templates.predict(anchor.kind, anchor.descriptor, searched.ravel(), support=True)
        near = anchor.to_world(local).reshape(2, len(offsets), -1)
        gaps = np.linalg.norm(near[..., :2] - exact[:, None, :2], axis=-1)
        pick = gaps.argmin(axis=1)
        phases, met = searched[[0, 1], pick], near[[0, 1], pick]
        if phases[1] <= phases[0] or support.reshape(2, -1)[[0, 1], pick].min() < MIN_SUPPORT:
            return np.inf, None
        weight = ((times - ends[0]) / (ends[1] - ends[0]))[:, None]
        local, support = self.templates.predict(anchor.kind, anchor.descriptor,
                                                phases[0] + weight[:, 0] * (phases[1] - phases[0]), support=True)
        if support.min() < MIN_SUPPORT:
            return np.inf, None
        residual = exact - met
        if residual.shape[1] > 2:
            residual[:, 2] = wrap_angle(residual[:, 2], anchor.angle_period)
        miss = float(gaps[[0, 1], pick].sum())
        return miss, anchor.to_world(local) + (1 - weight) * residual[0] + weight * residual[1]

    def _predicted_plan(self, anchors: list[Anchor], start: np.ndarray, target_hz: float) -> np.ndarray:
        """Unprivileged: each anchor's template around its predicted passage time where the pool
        reaches, straight lines between (and from the start pose)."""
        travelled = path_lengths(anchors)
        taus = np.array([self._predicted_tau(anchor, distance) for anchor, distance in zip(anchors, travelled)])
        fine_times = np.arange(1, math.ceil((taus.max() + self.config.window) * target_hz) + 1) / target_hz
        nearest = np.argmin(np.abs(fine_times[:, None] - taus[None]), axis=1)
        plan = np.full((len(fine_times), len(start)), np.nan)
        for k, anchor in enumerate(anchors):
            rows = np.flatnonzero((nearest == k) & (np.abs(fine_times - taus[k]) <= self.config.window))
            local, support = self.templates.predict(anchor.kind, anchor.descriptor, fine_times[rows] - taus[k],
                                                    support=True)
            reached = support >= MIN_SUPPORT
            plan[rows[reached]] = anchor.to_world(local[reached])
        known = ~np.isnan(plan[:, 0])
        known_times = np.concatenate([[0.0], fine_times[known]])
        known_poses = np.concatenate([start[None], plan[known]])
        for d in range(plan.shape[1]):
            plan[~known, d] = np.interp(fine_times[~known], known_times, known_poses[:, d])
        return plan


# -------------------------------------------------------------------------------- measuring
#: the oracle's two forms, by ``predict_waypoints``
FORMS = {False: "exact", True: "predicted"}


def choice_key(env: str, hz: float, predict_waypoints: bool) -> str:
    return f"{env} {hz:g}" + (" predicted" if predict_waypoints else "")


def make_oracle(env: str, hz: float, settings: dict, predict_waypoints: bool = False) -> InformationBound:
    curve = RunSpec("tracker", env, (hz,), "smooth").make_policy().config.interpolation
    oracle = InformationBound(BoundConfig(interpolation=curve, predict_waypoints=predict_waypoints, **settings))
    oracle.fit_pool(env, load_demos(env, (hz,)))
    return oracle


def measure(policy, env: str, hz: float, seeds: list[int]) -> dict:
    """Open-loop errors and closed-loop success (per episode) on these seeds."""
    fidelity = probe(policy, env, hz, seeds=seeds)
    result = evaluate(policy, env, hz, seeds=seeds, progress=False)
    return {"waypoint_error": (fidelity["waypoint_error"] or {}).get("mean"),
            "inbetween_error": (fidelity["inbetween_error"] or {}).get("mean"),
            "success": np.array([episode["success"] for episode in result["episodes"]], dtype=float)}


def choose(env: str, hz: float, predict_waypoints: bool) -> dict:
    """The template settings with the highest closed-loop success of one form of the oracle on the
    validation seeds (ties: the lower in-between error). Success, not the in-between error alone:
    a template slid along its own path a few hundredths of a second keeps the geometry that
    matters and still counts as units off."""
    seeds = seed_list(VALIDATION_SEEDS)
    scores = {}
    for similarity, bandwidth in itertools.product(SIMILARITIES, BANDWIDTHS):
        oracle = make_oracle(env, hz, {"similarity": similarity, "bandwidth": bandwidth}, predict_waypoints)
        row = measure(oracle, env, hz, seeds)
        scores[similarity, bandwidth] = (100 * row["success"].mean(), row["inbetween_error"])
        print(f"  {env} {hz:g} Hz, {FORMS[predict_waypoints]} waypoints: similarity {similarity} bandwidth "
              f"{bandwidth}: success {scores[similarity, bandwidth][0]:.0f} %, in-between error "
              f"{row['inbetween_error']:.2f}", file=sys.stderr)
    similarity, bandwidth = max(scores, key=lambda key: (scores[key][0], -scores[key][1]))
    success, error = scores[similarity, bandwidth]
    return {"similarity": similarity, "bandwidth": bandwidth, "validation_success": success,
            "validation_inbetween_error": error}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", nargs="+", default=list(ENV_IDS), choices=list(ENV_IDS))
    parser.add_argument("--source-hz", nargs="+", type=float, default=[2.5, 5.0])
    parser.add_argument("--choose", action="store_true", help="choose the templates' settings on the validation seeds")
    parser.add_argument("--validation", action="store_true", help="report on the validation seeds, not the test seeds")
    parser.add_argument("--episodes", type=int, default=None, help="the first N seeds only")
    parser.add_argument("--form", nargs="+", default=list(FORMS.values()), choices=list(FORMS.values()),
                        help="the oracle's forms to choose or measure")
    args = parser.parse_args()

    start = time.perf_counter()
    forms = [predict for predict, name in FORMS.items() if name in args.form]
    if args.choose:
        chosen = json.loads(CHOICES.read_text()) if CHOICES.exists() else {}
        for env, hz, predict in itertools.product(args.env, args.source_hz, forms):  # saved as each is chosen
            chosen[choice_key(env, hz, predict)] = choose(env, hz, predict)
            atomic_write_text(CHOICES, json.dumps(chosen, indent=1, sort_keys=True) + "\n")
        print(json.dumps(chosen, indent=1, sort_keys=True))
        return 0
    if not CHOICES.exists():
        raise SystemExit(f"no chosen settings in {CHOICES}: run with --choose first (validation seeds)")
    chosen = json.loads(CHOICES.read_text())
    seeds = seed_list(VALIDATION_SEEDS if args.validation else TEST_SEEDS)[: args.episodes]
    rows = []
    for env, hz in itertools.product(args.env, args.source_hz):
        smooth = measure(RunSpec("tracker", env, (hz,), "smooth").make_policy(), env, hz, seeds)
        expert = measure(RunSpec("tracker", env, (TARGET_HZ,)).make_policy(), env, TARGET_HZ, seeds)
        for predict in forms:
            choice = chosen[choice_key(env, hz, predict)]
            settings = {key: choice[key] for key in ("similarity", "bandwidth")}
            oracle = measure(make_oracle(env, hz, settings, predict), env, hz, seeds)
            test = paired_difference([oracle["success"]], [smooth["success"]])
            rows.append({"env": env, "Hz": f"{hz:g}", "bound": f"{FORMS[predict]} waypoints", **settings,
                         "in-between err": oracle["inbetween_error"], "waypoint err": oracle["waypoint_error"],
                         "success %": 100 * oracle["success"].mean(),
                         "smooth in-between err": smooth["inbetween_error"],
                         "smooth success %": 100 * smooth["success"].mean(),
                         "expert (20 Hz) success %": 100 * expert["success"].mean(),
                         "gain over smooth": 100 * test["difference"], "p": f"{test['p']:.2g}"})
            print(rows[-1], file=sys.stderr)
    print(f"Information bound on {len(seeds)} {'validation' if args.validation else 'test'} seeds from {seeds[0]}, "
          f"target {TARGET_HZ:g} Hz ({time.perf_counter() - start:.0f} s):")
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
