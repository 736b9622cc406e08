"""The checkpoint cache: a run is trained once per config and demo files, then loaded.

A run is identified by the policy's config and the exact demo files it learns from; its folder
``checkpoints/<Env>/<policy>/<rates>hz/<key>/`` (``spec.run_dir``) holds the resumable training
state, the best validated weights and, once finished, ``policy/`` (config.json +
model.safetensors) and ``summary.json`` (learning and validation curves, the SHA-256 of the
weights and the config, the commit that trained it). Asking again for a finished run checks and loads it; an interrupted
run resumes where its last evaluation left it. A policy whose first phase can be shared by runs
differing only in later settings (DiSPo's pretraining) trains it in a ``pretraining-<key>``
folder beside the run folders, which the cache names and passes to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import policies
from cfbench import paths
from cfbench.app.spec import RunSpec, Workspace, pretraining_dir, run_dir
from cfbench.cli import Interrupted
from cfbench.datasets import DemoDataset, seed_span
from cfbench.evaluate import evaluate
from cfbench.files import CheckpointError, atomic_write_text
from cfbench.protocol import TARGET_HZ, VALIDATION_SEEDS, seed_list
from cfbench.results import code_version
from policies.base import CONFIG_FILE, WEIGHTS_FILE

SUMMARY = "summary.json"
POLICY_DIR = "policy"
#: what a record keeps of a training run's summary
TRAINING_FIELDS = ("run_dir", "best_step", "best_score", "validation", "losses", "train_seconds",
                   "validation_seeds", "demo_seeds", "phases", "weights_sha256", "config_sha256", "trained_at")


def train_or_load(spec: RunSpec, workspace: Workspace | None = None, *, dataset: DemoDataset | None = None,
                  retrain: bool = False, progress: bool = True) -> tuple[policies.Policy, dict]:
    """The trained policy of a run, training it only if the cache holds no finished run of it
    (``retrain``: train again anyway), on ``dataset`` if the caller has loaded the demos. It is
    trained, and its checkpoint selected, with its rollout settings at their defaults (so the
    cache holds one model whatever they are), then set to run with the requested ones."""
    workspace = workspace or Workspace()
    policy = spec.make_policy()
    rollout = policy.config.rollout()
    policy.set_rollout(policy.config.training_rollout())
    dataset = dataset or workspace.demos(spec, policy.config.obs_mode)
    work = run_dir(workspace.checkpoints_dir, policy, spec.env_id, spec.rates, dataset.files)
    if retrain and work.exists():
        shutil.rmtree(work)
    demo_seeds = seed_span([episode.seed for episode in dataset.episodes])
    if (work / SUMMARY).exists():
        policy, summary = load_finished(work)
        policy.set_rollout(rollout)
        return policy, {**summary, "demo_seeds": demo_seeds}  # runs cached before summaries named them

    seeds = seed_list(VALIDATION_SEEDS)[: spec.val_episodes]
    # checkpoints are selected at the protocol's control rate, or at the one the policy trains
    # toward (part of its config, so of the cache key)
    control_hz = getattr(policy.config, "target_hz", TARGET_HZ)

    def validate(candidate: policies.Policy) -> float:
        outcome = evaluate(candidate, spec.env_id, dataset.reference_hz, target_hz=control_hz, seeds=seeds,
                           progress=progress, desc="validation")
        return outcome["metrics"]["success_rate"]

    shared = {}
    identity = policy.pretraining_identity()
    if identity is not None:
        shared["pretraining_dir"] = pretraining_dir(work, identity, dataset)
    work.mkdir(parents=True, exist_ok=True)
    try:
        history = policy.fit(dataset, work_dir=work, validate=validate if seeds else None, progress=progress,
                             **shared)
    except KeyboardInterrupt:
        raise Interrupted(f"training state is saved at every validation in {paths.shown(work)}; "
                          "the same command resumes from there") from None
    policy.save(work / POLICY_DIR)
    for phase in history.get("phases", []):
        if "dir" in phase:
            phase["dir"] = paths.shown(phase["dir"])
    summary = {"run_dir": paths.shown(work), "validation_seeds": [seeds[0], seeds[-1] + 1] if seeds else [],
               "demo_seeds": demo_seeds,
               **history, "weights_sha256": sha256(work / POLICY_DIR / WEIGHTS_FILE),
               "config_sha256": sha256(work / POLICY_DIR / CONFIG_FILE),
               "trained_at": code_version()}  # a record tested later, at another commit, says where its model came from
    atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    policy.set_rollout(rollout)
    return policy, summary


def load_finished(work: Path) -> tuple[policies.Policy, dict]:
    """A finished run's policy and summary, after checking the weights and the config are the ones
    trained (SHA-256s in the summary; a run finished before summaries held the config's has it
    pinned the first time it is loaded)."""
    redo = f"delete {work} (or pass --retrain) to train it again"
    summary = read_summary(work / SUMMARY, redo)
    config = work / POLICY_DIR / CONFIG_FILE
    if config.is_file() and "config_sha256" not in summary:
        summary["config_sha256"] = sha256(config)
        atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    return load_checked(work / POLICY_DIR, summary, redo), summary


def read_summary(path: Path, redo: str) -> dict:
    """A training summary that names the SHA-256 of the weights it trained; ``redo`` says how to
    make it again."""
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is corrupt ({error}); {redo}") from None
    if not isinstance(summary, dict) or "weights_sha256" not in summary:
        raise CheckpointError(f"{path} records no weights checksum; {redo}")
    return summary


def load_checked(directory: Path, summary: dict, redo: str) -> policies.Policy:
    """The policy saved in ``directory`` (config.json + model.safetensors), after checking both
    files are the ones ``summary`` names by SHA-256."""
    for name, what in ((WEIGHTS_FILE, "weights"), (CONFIG_FILE, "config")):
        path = directory / name
        if not path.is_file() or sha256(path) != summary.get(f"{what}_sha256"):
            raise CheckpointError(f"{path} is missing or not the {what} this run trained (SHA-256 differs from its "
                                  f"training summary); {redo}")
    try:
        return policies.load(directory)
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{error}; {redo}") from None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
