"""Expert demonstrations at any sample rate, stored as Minari datasets under ``demos/``.

A demo at rate ω is recorded from the expert's own execution in the env: the env runs at a
control rate that is a whole multiple of ω (20 Hz for 2.5/5/10/20 Hz), commanded with the
toppra trajectory at every control step, and the episode is sampled every 1/ω seconds:
observation at each sample time, action = the expert's target pose at the *next* sample time
(docs/design.md section 4). One execution serves every rate that divides its control rate.

``cfbench-demos --env all --hz 2.5 5 10 20 --n 90`` writes one dataset per env and rate (a
mixed-rate dataset with ``--hz 2.5+5``, each episode keeping its own rate) and a manifest of
SHA-256 checksums, so a truncated or corrupted file is caught before it is trained on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import cfbench  # noqa: F401  (registers the envs)
from cfbench import paths
from cfbench.cli import Parser, command, non_negative_int, positive_int
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.files import atomic_write_text, exclusive
from cfbench.protocol import N_DEMOS, TRAIN_SEED_START, parse_rates, rates_label
from cfbench.tree import tree_stack

MANIFEST = "manifest.json"
#: demos are executed at a whole multiple of their rate that is at least this fast
MIN_CONTROL_HZ = 20.0


# --------------------------------------------------------------------------- rates
def control_rate_for(hz: float) -> float:
    """Smallest whole multiple of ``hz`` that is at least 20 Hz: samples fall on control steps."""
    return hz * math.ceil(MIN_CONTROL_HZ / hz - 1e-9)


def dataset_id(env: str, rates: tuple[float, ...], obs_mode: str = "state") -> str:
    """Minari id: the dataset's version is its env's, so a new env version gets new demos."""
    env_id = resolve_env(env)
    kebab = "".join("-" + c.lower() if c.isupper() else c for c in short_name(env_id)).lstrip("-")
    rate_part = "-".join(f"{r:g}".replace(".", "p") + "hz" for r in rates)
    mode_part = "" if obs_mode == "state" else "-" + obs_mode.replace("_", "-")
    return f"cfbench/{kebab}/expert-{rate_part}{mode_part}-v{env_id.rsplit('-v', 1)[1]}"


# ------------------------------------------------------------------- expert runs
@dataclass
class ExpertRun:
    """The expert executed at ``control_hz``: every control step's observation and outcome."""

    seed: int
    control_hz: float
    observations: list  # len T + 1 (reset observation first)
    trajectory: object  # ExpertTrajectory
    success: bool
    collision: bool

    @property
    def steps(self) -> int:
        return len(self.observations) - 1


def run_expert(env: gym.Env, seed: int) -> ExpertRun:
    """Execute the expert trajectory in ``env`` (the action at step t is its pose at (t+1)/hz)."""
    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    trajectory = base.expert_trajectory()
    observations = [obs]
    for step in range(base.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(trajectory((step + 1) / base.control_hz))
        observations.append(obs)
        if terminated or truncated:
            break
    return ExpertRun(seed, base.control_hz, observations, trajectory, info["is_success"], info["is_collision"])


def subsample(run: ExpertRun, hz: float) -> dict:
    """One demo at rate ``hz`` from an expert run whose control rate is a multiple of ``hz``."""
    stride = run.control_hz / hz
    if abs(stride - round(stride)) > 1e-6:
        raise ValueError(f"control rate {run.control_hz} Hz is not a multiple of {hz} Hz")
    stride = round(stride)
    sample_steps = list(range(0, run.steps, stride))  # sample times before the episode ends
    k = np.arange(1, len(sample_steps) + 1)
    actions = run.trajectory(k / hz).astype(np.float32)  # target pose at the next sample time
    observations = [run.observations[i] for i in sample_steps] + [run.observations[run.steps]]
    return {"observations": observations, "actions": actions, "source_hz": hz, "seed": run.seed}


class ExpertRunner:
    """Executes the expert once per (seed, control rate) and reuses the run for every rate
    that divides that control rate (2.5, 5, 10 and 20 Hz demos share one 20 Hz run)."""

    def __init__(self, env_id: str, obs_mode: str = "state"):
        self.env_id, self.obs_mode = env_id, obs_mode
        self._envs: dict[float, gym.Env] = {}
        self._runs: dict[tuple[int, float], ExpertRun] = {}

    def run(self, seed: int, control_hz: float) -> ExpertRun:
        key = (seed, control_hz)
        if key not in self._runs:
            if control_hz not in self._envs:
                self._envs[control_hz] = gym.make(self.env_id, obs_mode=self.obs_mode, control_hz=control_hz)
            self._runs[key] = run_expert(self._envs[control_hz], seed)
        return self._runs[key]

    def collect(self, rates: tuple[float, ...], n: int, first_seed: int, progress=None):
        """``n`` successful demos; episode i is recorded at ``rates[i % len(rates)]``.

        Seeds are taken in order from ``first_seed``; a seed whose expert run fails (never
        seen on the calibrated envs, but possible with custom settings) is skipped and reported.
        """
        demos, skipped, seed = [], [], first_seed
        while len(demos) < n:
            hz = rates[len(demos) % len(rates)]
            run = self.run(seed, control_rate_for(hz))
            if run.success:
                demos.append(subsample(run, hz))
                if progress is not None:
                    progress.update(1)
            else:
                skipped.append(seed)
                if len(skipped) > n:
                    raise RuntimeError(f"{self.env_id}: the expert failed on {len(skipped)} seeds; the env is broken")
            seed += 1
        return demos, skipped

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._runs.clear()


# ------------------------------------------------------------------ datasets
def write_dataset(
    env: str,
    rates: tuple[float, ...],
    n: int = N_DEMOS,
    *,
    obs_mode: str = "state",
    demos_dir: str | Path | None = None,
    first_seed: int = TRAIN_SEED_START,
    progress=None,
    runner: ExpertRunner | None = None,
) -> str:
    """Generate and store one dataset; returns its Minari id. Re-running rewrites identical bytes.

    Pass a shared ``runner`` to reuse expert runs across datasets of the same env.
    """
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env_id = resolve_env(env)
    if n < 1:
        raise ValueError(f"number of demos must be positive, got {n}")
    own_runner = runner is None
    runner = ExpertRunner(env_id, obs_mode) if own_runner else runner
    if (runner.env_id, runner.obs_mode) != (env_id, obs_mode):
        raise ValueError(f"runner is for {runner.env_id} ({runner.obs_mode}), not {env_id} ({obs_mode})")
    try:
        demos, skipped = runner.collect(rates, n, first_seed, progress)
    finally:
        if own_runner:
            runner.close()
    spec_env = gym.make(env_id, obs_mode=obs_mode)
    buffers = []
    for index, demo in enumerate(demos):
        steps = len(demo["actions"])
        rewards = np.zeros(steps)
        rewards[-1] = 1.0
        buffers.append(
            EpisodeBuffer(
                id=index,
                seed=demo["seed"],
                observations=tree_stack(demo["observations"]),
                actions=demo["actions"],
                rewards=list(rewards),
                terminations=[False] * (steps - 1) + [True],
                truncations=[False] * steps,
                infos={"source_hz": np.full(steps + 1, demo["source_hz"], dtype=np.float64)},
            )
        )
    ds_id = dataset_id(env_id, rates, obs_mode)
    demos_dir = Path(demos_dir) if demos_dir is not None else paths.demos_dir()
    demos_dir.mkdir(parents=True, exist_ok=True)
    # Absolute: Minari mis-joins a relative MINARI_DATASETS_PATH with its own data paths.
    staging = Path(tempfile.mkdtemp(dir=demos_dir.resolve(), prefix=".staging-"))
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(staging)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # minari nags about unset author fields
            minari.create_dataset_from_buffers(
                ds_id,
                buffers,
                env=spec_env.spec,
                algorithm_name="toppra expert executed in the env, sampled at the source rate",
                author="cfbench",
                author_email="cfbench@users.noreply.invalid",
                code_permalink="cfbench/demos.py",
                description=(
                    f"{len(demos)} expert demos of {env_id} at {rates_label(rates)} Hz "
                    f"(seeds from {first_seed}, skipped {skipped}); obs_mode={obs_mode}"
                ),
                data_format="hdf5",
            )
        entry = {
            "env_id": env_id,
            "source_hz": list(rates),
            "obs_mode": obs_mode,
            "episodes": len(demos),
            "seeds": [d["seed"] for d in demos],
            "skipped_seeds": skipped,
            "files": _checksums(staging / ds_id),
        }
        with exclusive(demos_dir):  # another process may be installing a dataset now
            _install(demos_dir, staging / ds_id, ds_id, entry)
    finally:
        spec_env.close()
        shutil.rmtree(staging, ignore_errors=True)
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return ds_id


def _install(demos_dir: Path, staged: Path, ds_id: str, entry: dict) -> None:
    """Move a staged dataset into place and record it in the manifest (the caller holds the
    folder's lock). A dataset already there with the same bytes is left alone: a process
    reading it is never pulled from under."""
    final = demos_dir / ds_id
    if _read_manifest(demos_dir).get(ds_id) == entry and final.exists() and _checksums(final) == entry["files"]:
        return
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    manifest = _read_manifest(demos_dir)
    manifest[ds_id] = entry
    atomic_write_text(demos_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read_manifest(demos_dir: Path) -> dict:
    path = demos_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"demo manifest {path} is corrupt: {error}") from error
    if not isinstance(manifest, dict):
        raise ValueError(f"demo manifest {path} is corrupt: expected an object")
    return manifest


def manifest_entry(demos_dir: str | Path, ds_id: str) -> dict | None:
    """What the manifest records about a dataset (None if it was never generated here)."""
    return _read_manifest(Path(demos_dir)).get(ds_id)


def verify(demos_dir: str | Path, ds_id: str) -> Path:
    """The dataset's folder, after checking every file against the manifest's SHA-256."""
    demos_dir = Path(demos_dir)
    entry = manifest_entry(demos_dir, ds_id)
    if entry is None:
        raise FileNotFoundError(
            f"demo dataset {ds_id!r} is not in {demos_dir / MANIFEST}; generate it with cfbench-demos")
    root = demos_dir / ds_id
    actual = _checksums(root) if root.exists() else {}
    for name, digest in entry["files"].items():
        if name not in actual:
            raise FileNotFoundError(f"demo file {root / name} is missing; regenerate with cfbench-demos")
        if actual[name] != digest:
            raise ValueError(
                f"demo file {root / name} is corrupted or truncated (SHA-256 differs from the manifest); "
                "regenerate it with cfbench-demos"
            )
    return root


# ------------------------------------------------------------------------- CLI
@command("cfbench-demos")
def main(argv: list[str]) -> None:
    parser = Parser("cfbench-demos", "Generate expert demonstration datasets (Minari, under demos/).")
    parser.add_argument("--env", nargs="+", default=["all"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    parser.add_argument("--hz", nargs="+", default=["2.5", "5", "10", "20"], help="rates; '2.5+5' = mixed")
    parser.add_argument("--n", type=positive_int, default=N_DEMOS, help="demos per dataset")
    parser.add_argument("--obs-mode", default="state", choices=["state", "pixels", "pixels_state"])
    parser.add_argument("--first-seed", type=non_negative_int, default=TRAIN_SEED_START)
    parser.add_argument("--demos-dir", type=Path, default=paths.demos_dir())
    args = parser.parse_args(argv)
    envs = list(ENV_IDS) if args.env == ["all"] else [short_name(resolve_env(e)) for e in args.env]
    rate_sets = [parse_rates(text) for text in args.hz]
    start = time.perf_counter()
    with tqdm(total=len(envs) * len(rate_sets) * args.n, desc="expert demos", unit="demo") as bar:
        for env in envs:
            runner = ExpertRunner(resolve_env(env), args.obs_mode)
            for rates in rate_sets:
                ds_id = write_dataset(
                    env, rates, args.n, obs_mode=args.obs_mode, demos_dir=args.demos_dir,
                    first_seed=args.first_seed, progress=bar, runner=runner,
                )
                bar.write(f"wrote {args.demos_dir / ds_id}")
            runner.close()
    print(f"{len(envs) * len(rate_sets)} datasets, {len(envs) * len(rate_sets) * args.n} demos "
          f"in {time.perf_counter() - start:.1f} s")
