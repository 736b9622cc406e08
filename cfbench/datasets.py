"""Loading demo datasets and cutting them into training windows.

``load_demos`` checks the files against the manifest's checksums (a truncated or corrupted
file is named in the error), generating the dataset first if it does not exist yet.
``DemoDataset.windows`` cuts every episode into (observation history, action horizon) pairs
the way diffusion_policy's sequence sampler does: windows start at every step, histories and
horizons that run past an episode's ends are padded with its first/last entry.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cfbench import paths
from cfbench.demos import dataset_id, manifest_entry, verify, write_dataset
from cfbench.envs import resolve_env, short_name
from cfbench.protocol import N_DEMOS, TEST_SEEDS, VALIDATION_SEEDS, rates_label
from cfbench.tree import state_of, tree_concat, tree_index


@dataclass
class Episode:
    observations: np.ndarray | dict  # (K + 1, ...) observations at the sample times
    actions: np.ndarray  # (K, pose_dim): target pose of the next sample
    source_hz: float
    seed: int


@dataclass
class Windows:
    """Training windows; ``observations`` is an array or a dict of arrays (pixel modes)."""

    observations: np.ndarray | dict  # (N, n_obs_steps, ...)
    actions: np.ndarray  # (N, horizon, pose_dim)
    source_hz: np.ndarray  # (N,) rate of the episode each window came from
    episode: np.ndarray  # (N,) index of that episode

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, index: np.ndarray) -> Windows:
        return Windows(tree_index(self.observations, index), self.actions[index], self.source_hz[index],
                       self.episode[index])


@dataclass
class DemoDataset:
    env_id: str
    rates: tuple[float, ...]
    obs_mode: str
    episodes: list[Episode]
    #: file name -> SHA-256 of the files it was read from, as verified against the manifest
    files: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return rates_label(self.rates)

    @property
    def reference_hz(self) -> float:
        """The rate of the most frequent step over all demo samples (ties: the finer rate): the
        paper's reference step. A policy trained on these demos observes and replans at it; for
        alternating 2.5 + 5 Hz episodes it is 5 Hz (twice as many samples)."""
        samples: dict[float, int] = {}
        for episode in self.episodes:
            samples[episode.source_hz] = samples.get(episode.source_hz, 0) + len(episode.actions)
        return max(samples, key=lambda hz: (samples[hz], hz))

    @property
    def state_layout(self):
        """The env's ``StateLayout`` (what each state entry is), read from its registered class."""
        import gymnasium as gym
        from gymnasium.envs.registration import load_env_creator

        return load_env_creator(gym.spec(self.env_id).entry_point).state_layout

    def windows(self, n_obs_steps: int, horizon: int, stride: int = 1, action_stride: int | None = None) -> Windows:
        """Windows of ``n_obs_steps`` observations ending at step t and ``horizon`` actions
        starting at the first of those steps (diffusion_policy's layout).

        With ``stride`` k > 1 the windows take every k-th sample: the demos resampled to
        1/k of their rate, at every phase (DiSPo's sample-rate augmentation). An action then
        targets the pose k samples ahead, and ``source_hz`` reports the resampled rate.

        With ``action_stride`` k_a < k (k a multiple of it) the actions from step t on are
        k / k_a times denser than the observations (DiSPo's r_a < r_o with real targets): the
        n_obs_steps - 1 past actions stay k apart, then come (horizon - n_obs_steps + 1) * k / k_a
        actions k_a samples apart, covering the same time as the k-strided window.

        Padding (protocol v1): before its first sample the agent holds its start pose, so the
        actions of steps before the start are that pose (the agent pose of the first
        observation), never a target already on the way; observations before the start repeat
        the first one; actions past the end repeat the last target.
        """
        action_stride = stride if action_stride is None else action_stride
        if n_obs_steps < 1 or horizon < n_obs_steps or stride < 1 or action_stride < 1:
            raise ValueError(f"need n_obs_steps >= 1, horizon >= n_obs_steps and strides >= 1, got "
                             f"{n_obs_steps}, {horizon}, {stride}, {action_stride}")
        if stride % action_stride:
            raise ValueError(f"stride {stride} must be a multiple of action_stride {action_stride}")
        n_past, n_future = n_obs_steps - 1, (horizon - n_obs_steps + 1) * (stride // action_stride)
        obs_parts, act_parts, rates, owners = [], [], [], []
        for index, episode in enumerate(self.episodes):
            steps = len(episode.actions)
            start_pose = start_pose_of(episode.observations, episode.actions.shape[-1])
            starts = np.arange(steps) - stride * n_past  # first step of each window
            obs_index = np.clip(starts[:, None] + stride * np.arange(n_obs_steps), 0, steps - 1)
            past = starts[:, None] + stride * np.arange(n_past)
            future = np.arange(steps)[:, None] + action_stride * np.arange(n_future)
            actions = np.concatenate([_strided_actions(episode.actions, past, stride, start_pose),
                                      _strided_actions(episode.actions, future, action_stride, start_pose)], axis=1)
            obs_parts.append(tree_index(episode.observations, obs_index))
            act_parts.append(actions)
            rates.append(np.full(steps, episode.source_hz / stride))
            owners.append(np.full(steps, index))
        return Windows(tree_concat(obs_parts), np.concatenate(act_parts), np.concatenate(rates),
                       np.concatenate(owners))


def start_pose_of(observations, pose_dim: int) -> np.ndarray:
    """The agent's pose at the first observation: a state vector starts with the agent pose, in
    the same coordinates as an action (cfbench.envs.core)."""
    return np.asarray(state_of(observations)[0][:pose_dim], dtype=np.float32)


def _strided_actions(actions: np.ndarray, steps: np.ndarray, stride: int, start_pose: np.ndarray) -> np.ndarray:
    """Actions of ``steps`` at 1/stride of the rate: the target pose ``stride`` samples ahead
    (the episode's last target once that runs past its end); the start pose before the start."""
    ahead = actions[np.clip(steps + stride - 1, 0, len(actions) - 1)]
    return np.where(steps[..., None] < 0, start_pose, ahead)


def load_demos(
    env: str,
    rates: tuple[float, ...],
    *,
    obs_mode: str = "state",
    n: int = N_DEMOS,
    demos_dir: str | Path | None = None,
    generate: bool = True,
    allow_seed_overlap: bool = False,
) -> DemoDataset:
    """The dataset for ``env`` at ``rates``, verified against the manifest (made if missing).
    Demos recorded on validation or test seeds are refused unless ``allow_seed_overlap``: a
    policy trained on them would be selected or tested on scenes it has seen."""
    from minari import MinariDataset

    env_id = resolve_env(env)
    demos_dir = Path(demos_dir) if demos_dir is not None else paths.demos_dir()
    ds_id = dataset_id(env_id, rates, obs_mode)
    entry = manifest_entry(demos_dir, ds_id)
    if entry is None or entry["episodes"] != n:
        if not generate:
            raise FileNotFoundError(f"no demo dataset {ds_id!r} with {n} episodes in {demos_dir}; run cfbench-demos")
        print(f"generating {n} expert demos of {short_name(env_id)} at {rates_label(rates)} Hz in {demos_dir} ...",
              file=sys.stderr)
        write_dataset(env_id, rates, n, obs_mode=obs_mode, demos_dir=demos_dir)
    root = verify(demos_dir, ds_id)
    files = manifest_entry(demos_dir, ds_id)["files"]
    try:
        dataset = MinariDataset(root / "data")
        recorded = dataset.spec.env_spec.id if dataset.spec.env_spec is not None else None
        episodes = [
            Episode(
                observations=episode.observations,
                actions=np.asarray(episode.actions, dtype=np.float32),
                source_hz=float(episode.infos["source_hz"][0]),
                seed=int(seed),
            )
            for episode, seed in zip(dataset.iterate_episodes(), _seeds(dataset))
        ]
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"demo dataset {root} cannot be read ({error}); regenerate it with cfbench-demos") from error
    if recorded != env_id:
        raise ValueError(f"demo dataset {root} was recorded in {recorded}, not {env_id}: it is stored under another "
                         "env's id; regenerate it with cfbench-demos")
    if not allow_seed_overlap:
        check_demo_seeds(ds_id, [episode.seed for episode in episodes])
    return DemoDataset(env_id=env_id, rates=tuple(rates), obs_mode=obs_mode, episodes=episodes, files=files)


def check_demo_seeds(name: str, seeds: list[int]) -> None:
    """Training demos must come from scenes no policy is selected or tested on."""
    for what, (start, end) in (("validation", VALIDATION_SEEDS), ("test", TEST_SEEDS)):
        inside = [seed for seed in seeds if start <= seed < end]
        if inside:
            raise ValueError(f"demo dataset {name} holds demos on the {what} seeds ({len(inside)}, from {min(inside)}; "
                             f"{what} seeds are {start}:{end}): a policy trained on them would be judged on scenes "
                             "it has seen. Regenerate it (cfbench-demos, --first-seed 0) or pass --allow-seed-overlap")


def seed_span(seeds: list[int]) -> dict:
    """How a record names its demos' seeds: first, last and how many."""
    return {"first": min(seeds), "last": max(seeds), "count": len(seeds)}


def _seeds(dataset) -> list[int]:
    return [int(meta["seed"]) for meta in dataset.storage.get_episode_metadata(range(dataset.total_episodes))]
