"""The runner: train (through a checkpoint cache), evaluate, record; ``cfbench-train`` and ``cfbench-eval``.

``cfbench-eval --policy tracker --env PassagePassing --source-hz 2.5`` evaluates over the 100
test envs at 20 Hz, prints a table, writes one JSON record per (env, source rates) to
``results/`` and redraws the leaderboard and that env's plot. Learned policies are first
trained on the demos of the source rates, or loaded from the cache.

The cache: a run is identified by the policy's config and the exact demo files it learns from;
its folder ``checkpoints/<Env>/<policy>/<rates>hz/<key>/`` holds the resumable training state,
the best validated weights and, once finished, ``policy/`` (config.json + model.safetensors)
and ``summary.json`` (learning and validation curves). Asking again for a finished run loads
it; an interrupted run resumes where its last evaluation left it. A policy whose first phase
can be shared by runs differing only in later settings (DiSPo's pretraining) trains it in a
``pretraining-<key>`` folder beside the run folders, which the runner names and passes to it.

Layers: this module is the only one of ``cfbench`` that knows the policy zoo; the evaluator
talks to one policy object, and the policies know nothing of the runner.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import cfbench  # noqa: F401  (registers the envs)
import policies
from cfbench.datasets import DemoDataset, load_demos
from cfbench.demos import DEFAULT_DEMOS_DIR, dataset_id, manifest_entry
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.evaluate import evaluate
from cfbench.io import atomic_write_text
from cfbench.protocol import (
    N_DEMOS,
    TARGET_HZ,
    TEST_SEEDS,
    VALIDATION_SEEDS,
    parse_rates,
    rates_label,
    seed_list,
)
from cfbench.results import DEFAULT_RESULTS_DIR, make_record, write_record
from cfbench.tree import state_of

DEFAULT_CHECKPOINTS_DIR = Path("checkpoints")
SUMMARY = "summary.json"
POLICY_DIR = "policy"


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """How a learned policy is built and trained, and where its demos and runs are kept: the
    options cfbench-train and cfbench-eval share."""

    #: policy config overrides (``--set``), applied over the profile
    overrides: dict = dataclasses.field(default_factory=dict)
    #: named config profile: "cpu" (the defaults) or "gpu" (anchor sizes)
    profile: str = "cpu"
    #: training demos per dataset
    n_demos: int = N_DEMOS
    #: validation envs for checkpoint selection, the first of the validation seeds
    validation_episodes: int = VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0]
    demos_dir: Path = DEFAULT_DEMOS_DIR
    checkpoints_dir: Path = DEFAULT_CHECKPOINTS_DIR

    def make_policy(self, policy_name: str) -> policies.Policy:
        return policies.make(policy_name, profile=self.profile, **self.overrides)


#: what a record keeps of a training run's summary
TRAINING_FIELDS = ("run_dir", "best_step", "best_score", "validation", "losses", "train_seconds",
                   "validation_seeds", "phases")


# ------------------------------------------------------------------- the cache
def run_dir(checkpoints_dir: Path, policy: policies.Policy, env_id: str, rates: tuple[float, ...],
            demo_files: dict) -> Path:
    """The run's folder, keyed by the (unfitted) config and the demo files' checksums."""
    identity = json.dumps({"config": policy.config.to_dict(), "demos": demo_files}, sort_keys=True, default=list)
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(checkpoints_dir) / short_name(env_id) / policy.name / f"{rates_label(rates)}hz" / key


def pretraining_dir(work: Path, identity: dict, dataset: DemoDataset) -> Path:
    """The shared first phase's folder beside ``work``: keyed by the settings that phase reads
    and the demos' states, actions, rates and seeds."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode())
    for episode in dataset.episodes:
        for array in (state_of(episode.observations), episode.actions, np.array([episode.source_hz, episode.seed])):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return Path(work).parent / f"pretraining-{digest.hexdigest()[:12]}"


def train_or_load(policy_name: str, env: str, rates: tuple[float, ...], setup: TrainingSetup = TrainingSetup(),
                  progress: bool = True) -> tuple[policies.Policy, dict]:
    """The trained policy for (policy, config, env, demo rates), training it only if needed."""
    env_id = resolve_env(env)
    policy = setup.make_policy(policy_name)
    demos_dir = setup.demos_dir
    dataset = load_demos(env_id, rates, obs_mode=policy.config.obs_mode, n=setup.n_demos, demos_dir=demos_dir)
    demo_files = manifest_entry(demos_dir, dataset_id(env_id, rates, policy.config.obs_mode))["files"]
    work = run_dir(setup.checkpoints_dir, policy, env_id, rates, demo_files)
    if (work / SUMMARY).exists():
        return policies.load(work / POLICY_DIR), json.loads((work / SUMMARY).read_text())

    seeds = seed_list(VALIDATION_SEEDS)[: setup.validation_episodes]

    def validate(candidate: policies.Policy) -> float:
        return evaluate(candidate, env_id, rates, seeds=seeds, progress=False)["metrics"]["success_rate"]

    shared = {}
    identity = policy.pretraining_identity()
    if identity is not None:
        shared["pretraining_dir"] = pretraining_dir(work, identity, dataset)
    work.mkdir(parents=True, exist_ok=True)
    history = policy.fit(dataset, work_dir=work, validate=validate if seeds else None, progress=progress, **shared)
    policy.save(work / POLICY_DIR)
    summary = {"run_dir": str(work), "validation_seeds": [seeds[0], seeds[-1] + 1] if seeds else [], **history}
    atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    return policy, summary


# -------------------------------------------------------------------- one run
def run(
    policy_name: str,
    env: str,
    rates: tuple[float, ...],
    setup: TrainingSetup = TrainingSetup(),
    *,
    target_hz: float = TARGET_HZ,
    test_seeds: tuple[int, int] = TEST_SEEDS,
    episodes: int | None = None,
    variant: str = "",
    num_envs: int = 10,
    vector: str = "sync",
    results_dir: Path = DEFAULT_RESULTS_DIR,
    command: list[str] | None = None,
    progress: bool = True,
) -> tuple[dict, Path]:
    """Train (if the policy learns and no cached checkpoint matches), evaluate, write the record."""
    env_id = resolve_env(env)
    training = None
    if policies.policy_class(policy_name).trainable:
        policy, summary = train_or_load(policy_name, env_id, rates, setup, progress=progress)
        training = {key: summary[key] for key in TRAINING_FIELDS if key in summary}
    else:
        policy = setup.make_policy(policy_name)
    seeds = seed_list(test_seeds)[:episodes]
    outcome = evaluate(policy, env_id, rates, target_hz=target_hz, seeds=seeds, num_envs=num_envs, vector=vector,
                       progress=progress)
    record = make_record(policy, variant, env_id, rates, target_hz, outcome, training,
                         command=command or sys.argv, test_seeds=(seeds[0], seeds[-1] + 1))
    return record, write_record(record, results_dir)


# ------------------------------------------------------------ command lines
def parse_overrides(items: list[str]) -> dict:
    """['horizon=16', 'lr=1e-4'] -> {'horizon': 16, 'lr': 0.0001} (JSON values, else strings)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad config override {item!r}: use KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def parse_seed_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"bad seed range {text!r}: use START:END (END exclusive), e.g. 20000:20100") from None
    if end <= start:
        raise ValueError(f"empty seed range {text!r}: END must be greater than START")
    return start, end


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by cfbench-train and cfbench-eval: what to train, where, on what."""
    parser.add_argument("--policy", required=True, help="registered policy: " + ", ".join(policies.available()))
    parser.add_argument("--profile", default="cpu", help="named policy config profile: cpu (default) or gpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="policy config overrides (cfbench-train --policy P --show-config lists the keys)")
    parser.add_argument("--device", default=None, help="torch device for learned policies, e.g. cuda")
    parser.add_argument("--n-demos", type=int, default=N_DEMOS, help="training demos per dataset")
    parser.add_argument("--val-episodes", type=int, default=VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
                        help=f"validation envs (seeds from {VALIDATION_SEEDS[0]}) for checkpoint selection")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--demos-dir", type=Path, default=DEFAULT_DEMOS_DIR)
    parser.add_argument("--checkpoints-dir", type=Path, default=DEFAULT_CHECKPOINTS_DIR)


def training_setup(args: argparse.Namespace) -> TrainingSetup:
    """The parsed training options; checks the policy name (overrides: ``--set``, then ``--device``)."""
    policies.policy_class(args.policy)
    overrides = parse_overrides(args.overrides)
    if args.device:
        overrides["device"] = args.device
    return TrainingSetup(overrides, args.profile, args.n_demos, args.val_episodes, args.demos_dir,
                         args.checkpoints_dir)


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: all cores by default (small ops suffer from oversubscription)."""
    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def show_config(policy_name: str, setup: TrainingSetup) -> str:
    """Every config key of a policy (what ``--set`` accepts), its value under the profile and
    overrides, and what it means: one flat table."""
    policy = setup.make_policy(policy_name)
    docs = policies.config_docs(type(policy.config))
    rows = [(f.name, json.dumps(getattr(policy.config, f.name), default=list), docs.get(f.name, ""))
            for f in dataclasses.fields(policy.config)]
    width = max(len(name) for name, _, _ in rows)
    value_width = min(24, max(len(value) for _, value, _ in rows))
    lines = [f"{policy_name} config (profile {setup.profile}); set any key with --set KEY=VALUE", ""]
    for name, value, doc in rows:
        lines.append(f"{name:<{width}}  {value:<{value_width}}  {doc}")
    return "\n".join(lines)


def train_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cfbench-train", description="Train a policy on cfbench demos (cached).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--env", default="PassagePassing")
    parser.add_argument("--source-hz", default="2.5", help="demo rate; '2.5+5' = mixed dataset")
    parser.add_argument("--show-config", action="store_true",
                        help="print every config key of the policy with its value and meaning, then exit")
    args = parser.parse_args(argv)
    try:
        setup = training_setup(args)
        if args.show_config:
            print(show_config(args.policy, setup))
            return
        env_id = resolve_env(args.env)
        rates = parse_rates(args.source_hz)
    except ValueError as error:
        parser.error(str(error))
    set_threads(args.threads)
    policy, summary = train_or_load(args.policy, env_id, rates, setup)
    print(f"{policy.name} on {short_name(env_id)} {rates_label(rates)} Hz: {summary['run_dir']}")
    print(f"train time {summary['train_seconds']:.0f} s; best validation success "
          f"{summary['best_score']} at step {summary['best_step']}")


def eval_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="cfbench-eval",
        description="Train (if needed) and evaluate a policy on cfbench test envs at a fine control rate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(parser)
    parser.add_argument("--env", nargs="+", default=["PassagePassing"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    parser.add_argument("--source-hz", nargs="+", default=["2.5"], help="demo rates; '2.5+5' = mixed dataset")
    parser.add_argument("--target-hz", type=float, default=TARGET_HZ)
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
        setup = training_setup(args)
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
                args.policy, env, rates, setup, target_hz=args.target_hz, test_seeds=test_seeds,
                episodes=args.episodes, variant=args.variant, num_envs=args.num_envs, vector=args.vector,
                results_dir=args.results_dir, command=["cfbench-eval", *(sys.argv[1:] if argv is None else argv)],
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
