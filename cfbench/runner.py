"""The runner: train (through a checkpoint cache), evaluate, record, verify; ``cfbench-train``,
``cfbench-eval`` and ``cfbench-leaderboard`` (which can re-run a record: ``--verify``).

``cfbench-eval --policy tracker --env PassagePassing --source-hz 2.5`` evaluates over the 100
test envs at 20 Hz, prints a table, writes one JSON record per (env, source rates) and redraws
a leaderboard and that env's plot beside it: by default in the scratch area ``runs/`` (see
``cfbench.paths``), so trying the benchmark never touches the published ``results/``. Learned
policies are first trained on the demos of the source rates, or loaded from the cache.

The cache: a run is identified by the policy's config and the exact demo files it learns from;
its folder ``checkpoints/<Env>/<policy>/<rates>hz/<key>/`` holds the resumable training state,
the best validated weights and, once finished, ``policy/`` (config.json + model.safetensors)
and ``summary.json`` (learning and validation curves, the weights' SHA-256). Asking again for a
finished run checks and loads it; an interrupted run resumes where its last evaluation left it.
A policy whose first phase can be shared by runs differing only in later settings (DiSPo's
pretraining) trains it in a ``pretraining-<key>`` folder beside the run folders, which the
runner names and passes to it.

Layers: this module is the only one of ``cfbench`` that knows the policy zoo; the evaluator
talks to one policy object, and the policies know nothing of the runner. torch and the policy
modules are imported only when a policy is built, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import policies
from cfbench import paths
from cfbench.cli import Interrupted, Parser, command, non_negative_int, positive_int
from cfbench.datasets import DemoDataset, load_demos, seed_span
from cfbench.demos import dataset_id, manifest_entry
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.files import CheckpointError, atomic_write_text, exclusive
from cfbench.protocol import (
    MAX_RATE_HZ,
    N_DEMOS,
    PROTOCOL,
    TARGET_HZ,
    TEST_SEEDS,
    TRAIN_SEED_START,
    TRAINING_PROTOCOL,
    VALIDATION_SEEDS,
    check_name,
    parse_rates,
    rates_label,
    seed_list,
)
from cfbench.results import (
    VERIFIED_FILE,
    VIDEOS,
    RecordError,
    check_replaceable,
    check_writable,
    format_label,
    make_record,
    parse_label,
    provenance,
    read_all,
    read_record,
    read_verified,
    record_stem,
    write_record,
)
from cfbench.tree import state_of
from policies.rollout import chosen_rollout

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
    demos_dir: Path = dataclasses.field(default_factory=paths.demos_dir)
    checkpoints_dir: Path = dataclasses.field(default_factory=paths.checkpoints_dir)
    #: train again even if the cache holds a finished (or corrupt) run of this config
    retrain: bool = False
    #: the results' label for this configuration; a variant the policy's config declares (e.g.
    #: DiSPo's "paper") also applies its overrides, under ``overrides``
    variant: str = ""
    #: train on demos recorded on validation or test seeds (refused otherwise)
    allow_seed_overlap: bool = False

    def demos(self, env_id: str, rates: tuple[float, ...], obs_mode: str = "state") -> DemoDataset:
        """The training demos of these options (made if missing, checked)."""
        return load_demos(env_id, rates, obs_mode=obs_mode, n=self.n_demos, demos_dir=self.demos_dir,
                          allow_seed_overlap=self.allow_seed_overlap)

    def make_policy(self, policy_name: str, env_id: str | None = None, rates: tuple[float, ...] | None = None
                    ) -> policies.Policy:
        """The policy as configured; for a given env and rates, with the rollout settings the
        validation seeds chose for that cell (``policies/rollout.py``) under the user's overrides."""
        chosen = chosen_rollout(policy_name, self.variant, short_name(env_id), rates) if env_id else {}
        return policies.make(policy_name, profile=self.profile, variant=self.variant, **{**chosen, **self.overrides})


#: what a record keeps of a training run's summary
TRAINING_FIELDS = ("run_dir", "best_step", "best_score", "validation", "losses", "train_seconds",
                   "validation_seeds", "demo_seeds", "phases", "weights_sha256", "config_sha256")


# ------------------------------------------------------------------- the cache
def run_dir(checkpoints_dir: Path, policy: policies.Policy, env_id: str, rates: tuple[float, ...],
            demo_files: dict, protocol: int = TRAINING_PROTOCOL) -> Path:
    """The run's folder, keyed by the (unfitted) config without its rollout settings, the demo
    files' checksums and the protocol that cuts them into windows (protocol 0 keys had no
    protocol entry)."""
    identity = {"config": policy.config.identity(), "demos": demo_files, **({"protocol": protocol} if protocol else {})}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return Path(checkpoints_dir) / short_name(env_id) / policy.name / f"{rates_label(rates)}hz" / key


def pretraining_dir(work: Path, identity: dict, dataset: DemoDataset, protocol: int = TRAINING_PROTOCOL) -> Path:
    """The shared first phase's folder beside ``work``: keyed by the settings that phase reads,
    the protocol and the demos' states, actions, rates and seeds."""
    identity = {**identity, **({"protocol": protocol} if protocol else {})}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode())
    for episode in dataset.episodes:
        for array in (state_of(episode.observations), episode.actions, np.array([episode.source_hz, episode.seed])):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return Path(work).parent / f"pretraining-{digest.hexdigest()[:12]}"


def train_or_load(policy_name: str, env: str, rates: tuple[float, ...], setup: TrainingSetup | None = None,
                  progress: bool = True) -> tuple[policies.Policy, dict]:
    """The trained policy for (policy, config, env, demo rates), training it only if needed.
    It is trained, and its checkpoint selected, with its rollout settings at their defaults (so
    the cache holds one model whatever they are), then set to run with the requested ones."""
    from cfbench.evaluate import evaluate
    from policies.base import CONFIG_FILE, WEIGHTS_FILE

    setup = setup or TrainingSetup()
    env_id = resolve_env(env)
    policy = setup.make_policy(policy_name, env_id, rates)
    rollout = policy.config.rollout()
    policy.set_rollout(policy.config.training_rollout())
    dataset = setup.demos(env_id, rates, policy.config.obs_mode)
    demo_files = manifest_entry(setup.demos_dir, dataset_id(env_id, rates, policy.config.obs_mode))["files"]
    work = run_dir(setup.checkpoints_dir, policy, env_id, rates, demo_files)
    if setup.retrain and work.exists():
        shutil.rmtree(work)
    demo_seeds = seed_span([episode.seed for episode in dataset.episodes])
    if (work / SUMMARY).exists():
        policy, summary = load_finished(work)
        policy.set_rollout(rollout)
        return policy, {**summary, "demo_seeds": demo_seeds}  # runs cached before summaries named them

    seeds = seed_list(VALIDATION_SEEDS)[: setup.validation_episodes]

    # checkpoints are selected at the protocol's control rate, or at the one the policy trains toward
    control_hz = getattr(policy.config, "target_hz", TARGET_HZ)

    def validate(candidate: policies.Policy) -> float:
        outcome = evaluate(candidate, env_id, dataset.reference_hz, target_hz=control_hz, seeds=seeds,
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
               **history, "weights_sha256": _sha256(work / POLICY_DIR / WEIGHTS_FILE),
               "config_sha256": _sha256(work / POLICY_DIR / CONFIG_FILE)}
    atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    policy.set_rollout(rollout)
    return policy, summary


def load_finished(work: Path) -> tuple[policies.Policy, dict]:
    """A finished run's policy and summary, after checking the weights and the config are the ones
    trained (SHA-256s in the summary; a run finished before summaries held the config's has it
    pinned the first time it is loaded)."""
    from policies.base import CONFIG_FILE, WEIGHTS_FILE

    redo = f"delete {work} (or pass --retrain) to train it again"
    try:
        summary = json.loads((work / SUMMARY).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{work / SUMMARY} is corrupt ({error}); {redo}") from None
    weights = work / POLICY_DIR / WEIGHTS_FILE
    if not isinstance(summary, dict) or "weights_sha256" not in summary:
        raise CheckpointError(f"{work / SUMMARY} records no weights checksum; {redo}")
    if not weights.is_file() or _sha256(weights) != summary["weights_sha256"]:
        raise CheckpointError(f"{weights} is missing or not the weights this run trained (SHA-256 differs "
                              f"from {SUMMARY}); {redo}")
    config = work / POLICY_DIR / CONFIG_FILE
    if config.is_file() and "config_sha256" not in summary:
        summary["config_sha256"] = _sha256(config)
        atomic_write_text(work / SUMMARY, json.dumps(summary, indent=1))
    if not config.is_file() or _sha256(config) != summary["config_sha256"]:
        raise CheckpointError(f"{config} is missing or not the config this run trained (SHA-256 differs "
                              f"from {SUMMARY}); {redo}")
    try:
        return policies.load(work / POLICY_DIR), summary
    except (ValueError, OSError) as error:
        raise CheckpointError(f"{error}; {redo}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------- one run
def reference_rate(env_id: str, rates: tuple[float, ...], setup: TrainingSetup) -> float:
    """The rate a policy trained on demos at ``rates`` observes and replans at: the demos' most
    frequent step (for a mixed set read off the dataset, generated if need be)."""
    if len(rates) == 1:
        return rates[0]
    return setup.demos(env_id, rates).reference_hz


def run(
    policy_name: str,
    env: str,
    rates: tuple[float, ...],
    setup: TrainingSetup | None = None,
    *,
    train_seed: int = 0,
    target_hz: float = TARGET_HZ,
    test_seeds: tuple[int, int] = TEST_SEEDS,
    episodes: int | None = None,
    num_envs: int = 10,
    vector: str = "sync",
    results_dir: Path | None = None,
    command: list[str] | None = None,
    progress: bool = True,
    videos: int = 0,
) -> tuple[dict, Path]:
    """Train (if the policy learns and no cached checkpoint matches) with ``train_seed``, evaluate
    on the test seeds, probe the open-loop fidelity on the validation seeds, write the record (to
    the scratch area ``runs/results`` unless ``results_dir`` says otherwise), with GIFs of
    ``videos`` episodes and as many failures in ``videos/<record name>/`` beside it."""
    from cfbench.evaluate import TRACE_KEYS, evaluate
    from cfbench.fidelity import probe
    from cfbench.videos import write_videos

    setup = setup or TrainingSetup()
    if setup.variant:
        check_name(setup.variant, "variant")
    env_id = resolve_env(env)
    seeds = seed_list(test_seeds)[:episodes]
    results_dir = Path(results_dir or paths.runs_dir())
    check_writable(results_dir)  # before training, not after it
    reference_hz = reference_rate(env_id, rates, setup)
    policy, training = trained_policy(policy_name, env_id, rates, setup, train_seed=train_seed, target_hz=target_hz,
                                      progress=progress)
    test_range = (seeds[0], seeds[-1] + 1)
    stem = record_stem(policy.name, setup.variant, env_id, rates, target_hz, test_range, train_seed)
    # whether the record may be written is decided before anything (a GIF) is written
    check_replaceable(results_dir / f"{stem}.json", policy.config.to_dict())
    outcome = evaluate(policy, env_id, reference_hz, target_hz=target_hz, seeds=seeds, num_envs=num_envs,
                       vector=vector, progress=progress, traces=bool(videos))
    video_files = None
    if videos:
        films = write_videos(env_id, target_hz, outcome["episodes"], videos, results_dir / VIDEOS / stem)
        video_files = [str(path.relative_to(results_dir)) for path in films]
        outcome["episodes"] = [{k: v for k, v in row.items() if k not in TRACE_KEYS} for row in outcome["episodes"]]
    fidelity = probe(policy, env_id, reference_hz, target_hz=target_hz)
    record = make_record(policy, setup.variant, env_id, rates, reference_hz, target_hz, outcome, fidelity, training,
                         train_seed=train_seed, command=command or sys.argv, test_seeds=test_range,
                         videos=video_files)
    return record, write_record(record, results_dir)


def trained_policy(policy_name: str, env_id: str, rates: tuple[float, ...], setup: TrainingSetup, *,
                   train_seed: int = 0, target_hz: float = TARGET_HZ, progress: bool = True
                   ) -> tuple[policies.Policy, dict | None]:
    """The policy to evaluate and what a record keeps of its training (None for a policy that
    does not learn): trained with ``train_seed``, or loaded from the cache. A policy that trains
    toward the control rate (DiSPo's fine-tuning rounds, its ``target_hz``) trains toward the
    run's, unless ``--set`` says otherwise."""
    cls = policies.policy_class(policy_name)
    check_train_seed(policy_name, train_seed)
    if not cls.trainable:
        return setup.make_policy(policy_name, env_id, rates), None
    if "seed" in setup.overrides and setup.overrides["seed"] != train_seed:
        raise ValueError("give the training seed with --train-seeds, not --set seed=...")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    seeded = setup
    if "target_hz" in fields and "target_hz" not in setup.overrides:
        seeded = dataclasses.replace(setup, overrides={**setup.overrides, "target_hz": target_hz})
    if "seed" in fields:
        seeded = dataclasses.replace(seeded, overrides={**seeded.overrides, "seed": train_seed})
    policy, summary = train_or_load(policy_name, env_id, rates, seeded, progress=progress)
    return policy, {key: summary[key] for key in TRAINING_FIELDS if key in summary}


def check_train_seed(policy_name: str, train_seed: int) -> None:
    """A policy that is not trained, or has no seed setting, has training seed 0 only."""
    cls = policies.policy_class(policy_name)
    if train_seed != 0 and not cls.trainable:
        raise ValueError(f"policy {policy_name!r} is not trained: its only training seed is 0")
    if train_seed != 0 and "seed" not in {f.name for f in dataclasses.fields(cls.config_class)}:
        raise ValueError(f"policy {policy_name!r} has no seed setting: its only training seed is 0")


# ------------------------------------------------------------ command lines
def split_label(label: str) -> tuple[str, str]:
    """``cfbench.results.parse_label`` ('dispo (paper)' -> ('dispo', 'paper')), for a registered policy only."""
    policy_name, variant = parse_label(label)
    policies.policy_class(policy_name)  # an unknown policy is named before anything trains
    return policy_name, variant


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


def override_items(overrides: dict) -> list[str]:
    """{'horizon': 16} -> ['horizon=16']: parse_overrides' inverse, for command lines and tables."""
    return [f"{key}={json.dumps(value, default=list)}" for key, value in overrides.items()]


def parse_seed_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"bad seed range {text!r}: use START:END (END exclusive), e.g. 20000:20100") from None
    if start < 0:
        raise ValueError(f"bad seed range {text!r}: seeds are 0 or more")
    if end <= start:
        raise ValueError(f"empty seed range {text!r}: END must be greater than START")
    return start, end


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by cfbench-train and cfbench-eval: what to train, where, on what."""
    parser.add_argument("--policy", required=True, help="registered policy: " + ", ".join(policies.available()))
    parser.add_argument("--profile", default="cpu", help="named policy config profile: cpu or gpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="policy config overrides (cfbench-train --policy P --show-config lists the keys)")
    parser.add_argument("--device", default=None, help="torch device for learned policies, e.g. cuda")
    parser.add_argument("--n-demos", type=positive_int, default=N_DEMOS, help="training demos per dataset")
    parser.add_argument("--val-episodes", type=non_negative_int, default=VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0],
                        help=f"validation envs (seeds from {VALIDATION_SEEDS[0]}) for checkpoint selection")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--demos-dir", type=Path, default=paths.demos_dir())
    parser.add_argument("--checkpoints-dir", type=Path, default=paths.checkpoints_dir())
    parser.add_argument("--retrain", action="store_true",
                        help="train again even if the cache holds a finished (or corrupt) run of this config")
    parser.add_argument("--variant", default="",
                        help="label for this configuration in results and the leaderboard; a variant the policy "
                             "declares (--show-config lists them, e.g. dispo's 'paper') also sets its config")
    parser.add_argument("--allow-seed-overlap", action="store_true",
                        help="allow training demos on validation or test seeds, and test seeds that overlap the "
                             "training or validation seeds")


def training_setup(args: argparse.Namespace) -> TrainingSetup:
    """The parsed training options; checks the policy name (overrides: ``--set``, then ``--device``)."""
    policies.policy_class(args.policy)
    overrides = parse_overrides(args.overrides)
    if args.device:
        overrides["device"] = args.device
    validation = VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0]
    if args.val_episodes > validation:
        raise ValueError(f"--val-episodes {args.val_episodes}: there are {validation} validation seeds")
    setup = TrainingSetup(overrides, args.profile, args.n_demos, args.val_episodes, args.demos_dir,
                          args.checkpoints_dir, args.retrain, args.variant, args.allow_seed_overlap)
    fitted = sorted(set(overrides) & set(policies.declared(policies.policy_class(args.policy).config_class, "FITTED")))
    if fitted:
        raise ValueError(f"{', '.join(fitted)} {'is' if len(fitted) == 1 else 'are'} filled in from the demos by "
                         "training; it cannot be set")
    setup.make_policy(args.policy)  # a bad config value is named now, not after the demos are made
    return setup


def check_device(policy_name: str, setup: TrainingSetup) -> None:
    """A device this machine lacks is named before any demo is made (not by --show-config)."""
    policy = setup.make_policy(policy_name)
    if policy.trainable:
        policy.device  # noqa: B018  (the property checks it)


def set_threads(threads: int | None) -> int:
    """Torch intra-op threads: all cores by default (small ops suffer from oversubscription)."""
    import torch

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
    variant = f", variant {setup.variant}" if setup.variant else ""
    lines = [f"{policy_name} config (profile {setup.profile}{variant}); set any key with --set KEY=VALUE", ""]
    for name, value, doc in rows:
        lines.append(f"{name:<{width}}  {value:<{value_width}}  {doc}")
    declared = type(policy.config).variants
    if declared:
        lines += ["", "declared variants (--variant NAME):"]
        lines += [f"  {name}: " + " ".join(override_items(values)) for name, values in declared.items()]
    return "\n".join(lines)


def check_test_seeds(test_seeds: tuple[int, int], n_demos: int, allow_overlap: bool) -> None:
    """Test seeds must be envs no policy trained or was selected on (unless explicitly allowed)."""
    used = {"training": (TRAIN_SEED_START, TRAIN_SEED_START + n_demos), "validation": VALIDATION_SEEDS}
    for name, (start, end) in used.items():
        if test_seeds[0] < end and start < test_seeds[1] and not allow_overlap:
            raise ValueError(f"test seeds {test_seeds[0]}:{test_seeds[1]} overlap the {name} seeds {start}:{end}, "
                             "so they measure nothing unseen; pass --allow-seed-overlap to run anyway")


def check_target_rate(target_hz: float, rate_sets: list[tuple[float, ...]]) -> None:
    if not 0 < target_hz <= MAX_RATE_HZ:
        raise ValueError(f"--target-hz must lie in (0, {MAX_RATE_HZ:g}] Hz, got {target_hz:g}")
    for rates in rate_sets:
        if max(rates) > target_hz:
            raise ValueError(f"source rate {rates_label(rates)} Hz is above the target rate {target_hz:g} Hz: "
                             "coarse-to-fine means demos no finer than the control")


def _values_may_start_with_a_dash(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``--test-seeds -5:2`` as ``--test-seeds=-5:2``, so our check (not argparse, which takes the
    value for an option) says what is wrong with it."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] in options and index + 1 < len(argv) and argv[index + 1][:2] != "--":
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


@command("cfbench-train")
def train_main(argv: list[str]) -> None:
    parser = Parser("cfbench-train", "Train a policy on cfbench demos (cached).")
    add_training_arguments(parser)
    parser.add_argument("--env", default="PassagePassing")
    parser.add_argument("--source-hz", default="2.5", help="demo rate; '2.5+5' = mixed dataset")
    parser.add_argument("--show-config", action="store_true",
                        help="print every config key of the policy with its value and meaning, then exit")
    args = parser.parse_args(argv)
    setup = training_setup(args)
    if args.show_config:
        print(show_config(args.policy, setup))
        return
    check_device(args.policy, setup)
    env_id = resolve_env(args.env)
    rates = parse_rates(args.source_hz)
    set_threads(args.threads)
    policy, summary = train_or_load(args.policy, env_id, rates, setup)
    print(f"{policy.name} on {short_name(env_id)} {rates_label(rates)} Hz: {summary['run_dir']}")
    print(f"train time {summary['train_seconds']:.0f} s; best validation success "
          f"{summary['best_score']} at step {summary['best_step']}")


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """A cfbench-eval command line, checked: every run it stands for is one the protocol allows."""

    args: argparse.Namespace
    setup: TrainingSetup
    envs: list[str]
    rate_sets: list[tuple[float, ...]]
    test_seeds: tuple[int, int]


class _CheckingParser(Parser):
    """The cfbench-eval parser for checking a command line someone else will run (a sweep's
    cell): a bad argument raises instead of exiting."""

    def error(self, message: str):
        raise ValueError(message)


def eval_request(argv: list[str], checking: bool = False) -> EvalRequest:
    """Parse and check a cfbench-eval command line: the one set of rules cfbench-eval applies and
    cfbench-sweep applies to each of its cells before any runs (``checking``: errors raise)."""
    parser = (_CheckingParser if checking else Parser)(
        "cfbench-eval", "Train (if needed) and evaluate a policy on cfbench test envs at a fine control rate.")
    add_training_arguments(parser)
    parser.add_argument("--env", nargs="+", default=["PassagePassing"], help=f"'all' or any of {', '.join(ENV_IDS)}")
    parser.add_argument("--source-hz", nargs="+", default=["2.5"], help="demo rates; '2.5+5' = mixed dataset")
    parser.add_argument("--target-hz", type=float, default=TARGET_HZ)
    parser.add_argument("--test-seeds", default=f"{TEST_SEEDS[0]}:{TEST_SEEDS[1]}", help="START:END (END exclusive)")
    parser.add_argument("--episodes", type=positive_int, default=None, help="evaluate only the first N test seeds")
    parser.add_argument("--train-seeds", nargs="+", type=non_negative_int, default=[0],
                        help="training seeds: one run (and record) per seed")
    parser.add_argument("--num-envs", type=positive_int, default=10)
    parser.add_argument("--vector", choices=["sync", "async"], default="sync")
    parser.add_argument("--results-dir", type=Path, default=paths.runs_dir(),
                        help="where records go; the published results/ only when named here")
    parser.add_argument("--leaderboard", type=Path, default=None,
                        help="regenerated from --results-dir after the runs, with the per-env plots "
                             "(default: see cfbench.paths.leaderboard_path)")
    parser.add_argument("--no-leaderboard", action="store_true", help="write only the result records")
    parser.add_argument("--videos", type=non_negative_int, default=0, metavar="N",
                        help="GIFs of the first N test episodes and of the first N failures after them, in "
                             "videos/<record name>/ beside each record")
    args = parser.parse_args(_values_may_start_with_a_dash(argv, ("--test-seeds",)))
    setup = training_setup(args)
    if not checking:  # a sweep's cell may run on another machine (Ray), with its own devices
        check_device(args.policy, setup)
    envs = list(ENV_IDS) if args.env == ["all"] else [short_name(resolve_env(e)) for e in args.env]
    rate_sets = [parse_rates(text) for text in args.source_hz]
    for option, values in (("--source-hz", [rates_label(r) for r in rate_sets]), ("--train-seeds", args.train_seeds),
                           ("--env", envs)):
        doubled = sorted({str(v) for v in values if values.count(v) > 1})
        if doubled:
            raise ValueError(f"{option} names {doubled[0]} twice: each run would be made twice")
    check_target_rate(args.target_hz, rate_sets)
    test_seeds = parse_seed_range(args.test_seeds)
    check_test_seeds(test_seeds, args.n_demos, args.allow_seed_overlap)
    for train_seed in args.train_seeds:
        check_train_seed(args.policy, train_seed)
    return EvalRequest(args, setup, envs, rate_sets, test_seeds)


@command("cfbench-eval")
def eval_main(argv: list[str]) -> None:
    request = eval_request(argv)
    args, setup, envs, rate_sets, test_seeds = (request.args, request.setup, request.envs, request.rate_sets,
                                                request.test_seeds)

    import pandas as pd

    from cfbench.leaderboard.plots import PLOTS
    from cfbench.leaderboard.regenerate import regenerate

    set_threads(args.threads)
    rows = []
    for env in envs:
        for rates, train_seed in itertools.product(rate_sets, args.train_seeds):
            record, path = run(
                args.policy, env, rates, setup, train_seed=train_seed, target_hz=args.target_hz, test_seeds=test_seeds,
                episodes=args.episodes, num_envs=args.num_envs, vector=args.vector,
                results_dir=args.results_dir, command=["cfbench-eval", *argv], videos=args.videos,
            )
            m = record["metrics"]
            rows.append({
                "env": env, "source Hz": rates_label(rates), "seed": train_seed, "success %": 100 * m["success_rate"],
                "collision %": 100 * m["collision_rate"], "steps to success": m["mean_steps_to_success"],
                "path dev": m["path_deviation"],
                "in-between err": (record["fidelity"]["inbetween_error"] or {}).get("mean"),
                "episodes": m["episodes"], "train s": m["train_wall_s"],
                "eval s": m["eval_wall_s"], "record": paths.shown(path),
            })
    table = pd.DataFrame(rows)
    print(f"\n{format_label(args.policy, args.variant)} at {args.target_hz:g} Hz")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    if not args.no_leaderboard:
        args.leaderboard = regenerate(args.results_dir, args.leaderboard)
        drawn = [args.results_dir / PLOTS / f"{e}.png" for e in envs]
        plots = ", ".join(paths.shown(p) for p in drawn if p.is_file()) or "none (only full test runs are plotted)"
        print(f"leaderboard: {paths.shown(args.leaderboard)}; plots: {plots}")


# ------------------------------------------------------------- verification
#: path deviations of a re-run may differ by float rounding across machines, never more
DEVIATION_TOLERANCE = 1e-6


def record_threads(record: dict) -> int | None:
    """The torch threads a record was made with: its provenance's, or its command's --threads."""
    provenance = record["provenance"]
    if "torch_threads" in provenance:
        return provenance["torch_threads"]
    words = provenance["command"].split()
    return int(words[words.index("--threads") + 1]) if "--threads" in words[:-1] else None


def verify_record(path: Path, checkpoint: Path | None = None, num_envs: int = 10, progress: bool = True,
                  threads: int | None = None) -> dict:
    """Re-run a record's test episodes with the checkpoint it names by SHA-256 (the privileged
    references need none) and compare them episode by episode, at the torch thread count the
    record was made with (another rounds differently; ``threads`` overrides); a ValueError says
    what differs."""
    from cfbench.evaluate import evaluate
    from policies.base import WEIGHTS_FILE

    record = read_record(path, protocol=None)
    threads = set_threads(threads or record_threads(record))
    config = record["provenance"]["config"]
    cls = policies.policy_class(record["policy"])
    if cls.trainable:
        expected = (record.get("training") or {}).get("weights_sha256")
        if expected is None:
            raise ValueError(f"{path} names no checkpoint by its SHA-256 (records made before they did cannot be "
                             "verified): re-run it")
        if checkpoint is None:
            raise ValueError(f"{path} is of a learned policy: give its checkpoint with --checkpoint DIR (the run's "
                             f"policy/ folder, {record['training']['run_dir']}/{POLICY_DIR})")
        weights = Path(checkpoint) / WEIGHTS_FILE
        if not weights.is_file() or _sha256(weights) != expected:
            raise ValueError(f"{weights} is missing or not the checkpoint {path.name} was evaluated with (SHA-256 "
                             f"{expected[:12]}...)")
        policy = policies.load(checkpoint)
        policy.set_rollout({key: config[key] for key in policy.config.rollout_fields() if key in config})
        loaded = json.loads(json.dumps(policy.config.to_dict(), default=list))
        differs = sorted(key for key in loaded.keys() | config.keys() if loaded.get(key) != config.get(key))
        if differs:
            raise ValueError(f"the checkpoint's config differs from the record's in {', '.join(differs[:3])}")
    else:
        policy = cls(cls.config_class.from_saved(config))
    seeds = seed_list(tuple(record["provenance"]["test_seeds"]))
    outcome = evaluate(policy, record["env_id"], record["reference_hz"], target_hz=record["target_hz"], seeds=seeds,
                       num_envs=num_envs, progress=progress, desc="verification")
    differing = [mine["seed"] for mine, again in zip(record["episodes"], outcome["episodes"])
                 if any(mine[key] != again[key] for key in ("seed", "success", "collision", "steps"))
                 or abs(mine["path_deviation"] - again["path_deviation"]) > DEVIATION_TOLERANCE]
    if differing:
        recorded = record_threads(record) or "an unrecorded number of"
        raise ValueError(f"{path.name} does not reproduce at {threads} torch thread(s): {len(differing)} of "
                         f"{len(seeds)} test episodes differ (seeds {', '.join(map(str, differing[:5]))}"
                         f"{', ...' if len(differing) > 5 else ''}; the record ran at {recorded} thread(s))")
    made = provenance(["cfbench-leaderboard", "--verify", path.name], tuple(record["provenance"]["test_seeds"]), {})
    return {"record": path.name, "episodes": len(seeds), "weights_sha256": (record.get("training") or {}).get(
        "weights_sha256"), "git_commit": made["git_commit"], "git_dirty": made["git_dirty"],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def mark_verified(results_dir: Path, verification: dict) -> Path:
    """Add (or replace) a record's verification in the folder's ``verified.jsonl``, atomically."""
    path = Path(results_dir) / VERIFIED_FILE
    with exclusive(results_dir):
        entries = {entry["record"]: entry for entry in read_verified(results_dir).values()}
        entries[verification["record"]] = verification
        atomic_write_text(path, "".join(json.dumps(entries[name], sort_keys=True) + "\n" for name in sorted(entries)))
    return path


def check_against_registry(record: dict, source: str) -> None:
    """What only the zoo knows: a registered policy's privileged mark is its class's (a learner
    marked privileged, or the Tracker unmarked, would move a row in or out of the indicators)."""
    if record["policy"] in policies.available():
        privileged = policies.policy_class(record["policy"]).privileged
        if record.get("privileged", False) != privileged:
            raise RecordError(f"{source}: {record['policy']} records are {'' if privileged else 'not '}privileged, "
                              f"this one says privileged: {record.get('privileged', False)}")


@command("cfbench-leaderboard")
def leaderboard_main(argv: list[str]) -> None:
    from cfbench.leaderboard.comparison import compare
    from cfbench.leaderboard.plots import PLOTS
    from cfbench.leaderboard.regenerate import regenerate
    from cfbench.leaderboard.submission import submit

    parser = Parser("cfbench-leaderboard", "leaderboard.md and the per-env plots, regenerated from results/ and "
                                           "nothing else.")
    parser.add_argument("--results-dir", type=Path, default=paths.results_dir())
    parser.add_argument("--output", type=Path, default=None,
                        help="the page to write (default: see cfbench.paths.leaderboard_path)")
    parser.add_argument("--submit", type=Path, nargs="*", default=[], metavar="FILE",
                        help="result files to add: all of them, or none if one is bad")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="paired test of two policies (POLICY or 'POLICY (VARIANT)') instead of regenerating; "
                             "needs --env and --source-hz")
    parser.add_argument("--env", default=None, help="with --compare")
    parser.add_argument("--source-hz", default=None, help="with --compare: demo rates, e.g. 2.5 or 2.5+5")
    parser.add_argument("--verify", type=Path, default=None, metavar="RECORD",
                        help="re-run a record's test episodes and compare them episode by episode; a record in "
                             "--results-dir is then marked verified on the leaderboard")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="with --verify: the checkpoint folder (config.json + model.safetensors) of a learned "
                             "policy's record")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="with --verify: torch threads (default: the record's; actions round differently at "
                             "another count)")
    parser.add_argument("--protocol", type=int, default=PROTOCOL,
                        help="the protocol of the folder's records: an archive of an older one "
                             "(e.g. results/archive/protocol1, whose page is kept inside it)")
    args = parser.parse_args(argv)
    if args.compare:
        if not (args.env and args.source_hz):
            raise ValueError("--compare needs --env and --source-hz")
        records = read_all(args.results_dir, protocol=args.protocol)
        print(compare(records, *args.compare, args.env, parse_rates(args.source_hz)))
        return
    if args.verify:
        verification = verify_record(args.verify, args.checkpoint, threads=args.threads)
        print(f"verified {args.verify.name}: all {verification['episodes']} test episodes identical (success, "
              f"collision, steps; path deviation within {DEVIATION_TOLERANCE:g})")
        if args.verify.absolute().parent == args.results_dir.absolute():
            print(f"marked in {paths.shown(mark_verified(args.results_dir, verification))}")
        else:
            return
    if args.submit and args.protocol != PROTOCOL:
        raise ValueError(f"--submit adds protocol v{PROTOCOL} records only")
    for path in args.submit:
        check_against_registry(read_record(path), str(path))
    for path in submit(args.submit, args.results_dir):
        print(f"added {path}")
    output = regenerate(args.results_dir, args.output, args.protocol)
    print(f"wrote {output} and {args.results_dir / PLOTS}/")
