"""Training with a checkpoint cache: ``cfbench-train`` and the training half of ``cfbench-eval``.

A run is identified by the policy's config and the exact demo files it learns from; its
folder ``checkpoints/<Env>/<policy>/<rates>hz/<key>/`` holds the resumable training state, the
best validated weights and, once finished, ``policy/`` (config.json + model.safetensors) and
``summary.json`` (learning and validation curves). Asking again for a finished run loads it;
an interrupted run resumes where its last evaluation left it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch

import cfbench  # noqa: F401  (registers the envs)
import policies
from cfbench.datasets import load_demos
from cfbench.demos import DEFAULT_DEMOS_DIR, dataset_id, manifest_entry, parse_rates, rates_label
from cfbench.envs import resolve_env, short_name
from cfbench.io import atomic_write_text

DEFAULT_CHECKPOINTS_DIR = Path("checkpoints")
VALIDATION_SEEDS = (10000, 10050)
SUMMARY = "summary.json"
POLICY_DIR = "policy"


def run_dir(checkpoints_dir: Path, policy: policies.Policy, env_id: str, rates: tuple[float, ...],
            demo_files: dict) -> Path:
    identity = json.dumps({"config": policy.config.to_dict(), "demos": demo_files}, sort_keys=True, default=list)
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(checkpoints_dir) / short_name(env_id) / policy.name / f"{rates_label(rates)}hz" / key


def train_or_load(
    policy_name: str,
    env: str,
    rates: tuple[float, ...],
    *,
    overrides: dict | None = None,
    profile: str = "cpu",
    n_demos: int = 90,
    validation_episodes: int = VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
    demos_dir: Path = DEFAULT_DEMOS_DIR,
    checkpoints_dir: Path = DEFAULT_CHECKPOINTS_DIR,
    progress: bool = True,
) -> tuple[policies.Policy, dict]:
    """The trained policy for (policy, config, env, demo rates), training it only if needed."""
    from cfbench.evaluate import evaluate

    env_id = resolve_env(env)
    policy = policies.make(policy_name, profile=profile, **(overrides or {}))
    dataset = load_demos(env_id, rates, obs_mode=policy.config.obs_mode, n=n_demos, demos_dir=demos_dir)
    demo_files = manifest_entry(demos_dir, dataset_id(env_id, rates, policy.config.obs_mode))["files"]
    work = run_dir(checkpoints_dir, policy, env_id, rates, demo_files)
    if (work / SUMMARY).exists():
        return policies.load(work / POLICY_DIR), json.loads((work / SUMMARY).read_text())

    seeds = list(range(VALIDATION_SEEDS[0], VALIDATION_SEEDS[0] + validation_episodes))

    def validate(candidate: policies.Policy) -> float:
        outcome = evaluate(candidate, env_id, rates, seeds=seeds, progress=False)
        return outcome["metrics"]["success_rate"]

    work.mkdir(parents=True, exist_ok=True)
    history = policy.fit(dataset, work_dir=work, validate=validate if seeds else None, progress=progress)
    policy.save(work / POLICY_DIR)
    summary = {"run_dir": str(work), "validation_seeds": [seeds[0], seeds[-1] + 1] if seeds else [], **history}
    atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    return policy, summary


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


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by cfbench-train and cfbench-eval: what to train, where, on what."""
    parser.add_argument("--policy", required=True, help="registered policy: " + ", ".join(policies.available()))
    parser.add_argument("--profile", default="cpu", help="named policy config profile: cpu (default) or gpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="policy config overrides")
    parser.add_argument("--device", default=None, help="torch device for learned policies, e.g. cuda")
    parser.add_argument("--n-demos", type=int, default=90, help="training demos per dataset")
    parser.add_argument("--val-episodes", type=int, default=VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
                        help="validation envs (seeds from 10000) for checkpoint selection")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--demos-dir", type=Path, default=DEFAULT_DEMOS_DIR)
    parser.add_argument("--checkpoints-dir", type=Path, default=DEFAULT_CHECKPOINTS_DIR)


def training_overrides(args: argparse.Namespace) -> dict:
    """Checks the policy name and returns its config overrides (``--set``, then ``--device``)."""
    policies.policy_class(args.policy)
    overrides = parse_overrides(args.overrides)
    if args.device:
        overrides["device"] = args.device
    return overrides


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: all cores by default (small ops suffer from oversubscription)."""
    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cfbench-train", description="Train a policy on cfbench demos (cached).")
    add_training_arguments(parser)
    parser.add_argument("--env", default="PassagePassing")
    parser.add_argument("--source-hz", default="2.5", help="demo rate; '2.5+5' = mixed dataset")
    args = parser.parse_args(argv)
    try:
        overrides = training_overrides(args)
        env_id = resolve_env(args.env)
        rates = parse_rates(args.source_hz)
    except ValueError as error:
        parser.error(str(error))
    set_threads(args.threads)
    policy, summary = train_or_load(args.policy, env_id, rates, overrides=overrides, profile=args.profile,
                                    n_demos=args.n_demos, validation_episodes=args.val_episodes,
                                    demos_dir=args.demos_dir, checkpoints_dir=args.checkpoints_dir)
    print(f"{policy.name} on {short_name(env_id)} {rates_label(rates)} Hz: {summary['run_dir']}")
    print(f"train time {summary['train_seconds']:.0f} s; best validation success "
          f"{summary['best_score']} at step {summary['best_step']}")
