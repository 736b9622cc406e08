"""One experiment, named once: ``RunSpec`` (what to train and test, how the record is named and
the checkpoint cache keys it, the ``cfbench-eval`` command line that makes it, and the rules it
must obey) and ``Workspace`` (where demos and checkpoints are kept, which is not part of an
experiment: the same spec gives the same record anywhere).

Every command builds its runs as specs: ``cfbench-eval`` one per (env, source rates, training
seed) of its command line, ``cfbench-sweep`` one per cell of its grid (and ships it to a worker
as JSON), ``cfbench-train`` one without a test. A spec that breaks a rule is refused when it is
made, so a sweep's grid is checked whole before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

import policies
from cfbench import paths
from cfbench.datasets import DemoDataset, load_demos
from cfbench.envs import resolve_env, short_name
from cfbench.protocol import (
    MAX_RATE_HZ,
    N_DEMOS,
    TARGET_HZ,
    TEST_SEEDS,
    TRAIN_SEED_START,
    TRAINING_PROTOCOL,
    VALIDATION_SEEDS,
    check_name,
    rates_label,
)
from cfbench.results import record_stem
from cfbench.tree import state_of
from policies.base import plain
from policies.rollout import chosen_rollout

VALIDATION_EPISODES = VALIDATION_SEEDS[1] - VALIDATION_SEEDS[0]
#: RunSpec field -> the cfbench-eval option that sets it (beyond policy, env and rates)
OPTIONS = {"variant": "--variant", "profile": "--profile", "target_hz": "--target-hz", "test_seeds": "--test-seeds",
           "episodes": "--episodes", "train_seed": "--train-seeds", "n_demos": "--n-demos",
           "val_episodes": "--val-episodes"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a policy and its record: trained (if it learns) on ``n_demos`` demos of ``env``
    at ``rates`` with ``train_seed``, selected on ``val_episodes`` validation seeds, tested on
    ``test_seeds`` (the first ``episodes`` of them) at ``target_hz``."""

    policy: str
    env: str = "PassagePassing"
    #: demo rates; several make a mixed dataset
    rates: tuple[float, ...] = (2.5,)
    #: the results' label for this configuration; a variant the policy's config declares (e.g.
    #: DiSPo's "paper") also applies its overrides, under ``overrides``
    variant: str = ""
    #: policy config overrides (``--set``), applied over the profile and the variant
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: named config profile: "cpu" (the defaults) or "gpu" (anchor sizes)
    profile: str = "cpu"
    target_hz: float = TARGET_HZ
    test_seeds: tuple[int, int] = TEST_SEEDS
    #: test only the first N test seeds
    episodes: int | None = None
    train_seed: int = 0
    n_demos: int = N_DEMOS
    #: validation envs for checkpoint selection, the first of the validation seeds
    val_episodes: int = VALIDATION_EPISODES
    #: train on demos recorded on validation or test seeds, or test on seeds trained or selected on
    allow_seed_overlap: bool = False

    def __post_init__(self):
        set_field = object.__setattr__  # frozen: normalised once, here
        set_field(self, "env", short_name(resolve_env(self.env)))
        set_field(self, "rates", tuple(float(rate) for rate in self.rates))
        set_field(self, "test_seeds", tuple(int(seed) for seed in self.test_seeds))
        set_field(self, "target_hz", float(self.target_hz))
        set_field(self, "overrides", dict(self.overrides))
        self._check()

    # ------------------------------------------------------------------ names
    @property
    def env_id(self) -> str:
        return resolve_env(self.env)

    @property
    def tested_seeds(self) -> tuple[int, int]:
        """The test seeds actually run: ``test_seeds`` cut to ``episodes``."""
        first, end = self.test_seeds
        return first, end if self.episodes is None else min(end, first + self.episodes)

    @property
    def stem(self) -> str:
        """The record's file name without ``.json`` (also its videos' folder and a sweep log's name)."""
        return record_stem(self.policy, self.variant, self.env_id, self.rates, self.target_hz, self.tested_seeds,
                           self.train_seed)

    def record_path(self, results_dir: Path) -> Path:
        return Path(results_dir) / f"{self.stem}.json"

    def command(self, threads: int | None = None) -> list[str]:
        """The ``cfbench-eval`` command line that makes this run's record (defaults left out)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        words = ["cfbench-eval", "--policy", self.policy, "--env", self.env, "--source-hz", rates_label(self.rates)]
        for name, flag in OPTIONS.items():
            value = getattr(self, name)
            if value != defaults[name]:
                words += [flag, f"{value:g}" if isinstance(value, float) else
                          "{}:{}".format(*value) if isinstance(value, tuple) else str(value)]
        if self.allow_seed_overlap:
            words.append("--allow-seed-overlap")
        if threads is not None:
            words += ["--threads", str(threads)]
        if self.overrides:
            words += ["--set", *override_items(self.overrides)]
        return words

    @classmethod
    def from_record(cls, record: dict) -> RunSpec:
        """The run that made a record: its cell, seeds and demo count, and its policy config as
        the overrides of the profile that needs the fewest (the fields training fills in aside)."""
        training = record.get("training") or {}
        validation = training.get("validation_seeds")
        fields = {"policy": record["policy"], "env": record["env_id"], "rates": record["source_hz"],
                  "variant": record["variant"], "target_hz": record["target_hz"],
                  "test_seeds": record["provenance"]["test_seeds"], "train_seed": record["train_seed"],
                  **({"n_demos": training["demo_seeds"]["count"]} if "demo_seeds" in training else {}),
                  **({"val_episodes": validation[1] - validation[0] if validation else 0}
                     if validation is not None else {})}
        config_class = policies.policy_class(record["policy"]).config_class
        recorded = plain(config_class.from_saved(record["provenance"]["config"]).to_dict())
        fitted = {"policy", *policies.declared(config_class, "FITTED")}
        candidates = []
        for profile in getattr(config_class, "profiles", None) or ["cpu"]:
            made = plain(cls(profile=profile, **fields).make_policy().config.to_dict())
            overrides = {key: value for key, value in recorded.items() if key not in fitted and made[key] != value}
            candidates.append((len(overrides), profile, overrides))
        _, profile, overrides = min(candidates, key=lambda candidate: candidate[0])
        return cls(profile=profile, overrides=overrides, **fields)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=list)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    # ------------------------------------------------------------ the policy
    def make_policy(self) -> policies.Policy:
        """The policy as this run builds it: profile, variant, the rollout settings the validation
        seeds chose for its cell (``policies/rollout.py``), then the user's overrides. A policy
        that trains toward the control rate (DiSPo's fine-tuning, its ``target_hz``) trains
        toward the run's unless ``--set`` says otherwise; a seeded one uses the training seed."""
        fields = {f.name for f in dataclasses.fields(policies.policy_class(self.policy).config_class)}
        run_settings = {**({"target_hz": self.target_hz} if "target_hz" in fields else {}),
                        **({"seed": self.train_seed} if "seed" in fields else {})}
        chosen = chosen_rollout(self.policy, self.variant, self.env, self.rates)
        return policies.make(self.policy, profile=self.profile, variant=self.variant,
                             **{**chosen, **run_settings, **self.overrides})

    @property
    def trainable(self) -> bool:
        return policies.policy_class(self.policy).trainable

    def check_device(self) -> None:
        """A device this machine lacks is named before any demo is made (a sweep's cells are not
        asked: they may run on another machine)."""
        policy = self.make_policy()
        if policy.trainable:
            policy.device  # noqa: B018  (the property checks it)

    # ------------------------------------------------------------------ rules
    def _check(self) -> None:
        """The rules every command applies, with the option a user would change in each message."""
        cls = policies.policy_class(self.policy)  # an unknown policy is named with the known ones
        if self.variant:
            check_name(self.variant, "variant")
        if not self.rates or any(not 0 < rate <= MAX_RATE_HZ for rate in self.rates):
            raise ValueError(f"source rates must lie in (0, {MAX_RATE_HZ:g}] Hz, got {rates_label(self.rates)}")
        if not 0 < self.target_hz <= MAX_RATE_HZ:
            raise ValueError(f"--target-hz must lie in (0, {MAX_RATE_HZ:g}] Hz, got {self.target_hz:g}")
        if max(self.rates) > self.target_hz:
            raise ValueError(f"source rate {rates_label(self.rates)} Hz is above the target rate "
                             f"{self.target_hz:g} Hz: coarse-to-fine means demos no finer than the control")
        if not _positive_int(self.n_demos):
            raise ValueError(f"--n-demos must be a positive integer, got {self.n_demos!r}")
        if self.episodes is not None and not _positive_int(self.episodes):
            raise ValueError(f"--episodes must be a positive integer, got {self.episodes!r}")
        if not 0 <= self.val_episodes <= VALIDATION_EPISODES:
            raise ValueError(f"--val-episodes {self.val_episodes}: there are {VALIDATION_EPISODES} validation seeds")
        start, end = self.test_seeds
        if start < 0 or end <= start:
            raise ValueError(f"bad test seeds {start}:{end}: START >= 0 and END (exclusive) above it")
        used = {"training": (TRAIN_SEED_START, TRAIN_SEED_START + self.n_demos), "validation": VALIDATION_SEEDS}
        for name, (first, last) in used.items():
            if start < last and first < end and not self.allow_seed_overlap:
                raise ValueError(f"test seeds {start}:{end} overlap the {name} seeds {first}:{last}, so they measure "
                                 "nothing unseen; pass --allow-seed-overlap to run anyway")
        if isinstance(self.train_seed, bool) or not isinstance(self.train_seed, int) or self.train_seed < 0:
            raise ValueError(f"--train-seeds must be 0 or more, got {self.train_seed!r}")
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if self.train_seed != 0 and not cls.trainable:
            raise ValueError(f"policy {self.policy!r} is not trained: its only training seed is 0")
        if self.train_seed != 0 and "seed" not in fields:
            raise ValueError(f"policy {self.policy!r} has no seed setting: its only training seed is 0")
        if "seed" in self.overrides:
            raise ValueError("give the training seed with --train-seeds, not --set seed=...")
        fitted = sorted(set(self.overrides) & set(policies.declared(cls.config_class, "FITTED")))
        if fitted:
            raise ValueError(f"{', '.join(fitted)} {'is' if len(fitted) == 1 else 'are'} filled in from the demos by "
                             "training; it cannot be set")
        self.make_policy()  # a bad config value is named now, not after the demos are made


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Where demos and trained runs are kept."""

    demos_dir: Path = dataclasses.field(default_factory=paths.demos_dir)
    checkpoints_dir: Path = dataclasses.field(default_factory=paths.checkpoints_dir)

    def demos(self, spec: RunSpec, obs_mode: str = "state") -> DemoDataset:
        """A run's training demos (made if missing, checked)."""
        return load_demos(spec.env_id, spec.rates, obs_mode=obs_mode, n=spec.n_demos, demos_dir=self.demos_dir,
                          allow_seed_overlap=spec.allow_seed_overlap)


# ------------------------------------------------------------ cache keys
def run_dir(checkpoints_dir: Path, policy: policies.Policy, env_id: str, rates: tuple[float, ...],
            demo_files: dict, protocol: int = TRAINING_PROTOCOL) -> Path:
    """A trained run's folder, keyed by the (unfitted) config without its rollout settings, the
    demo files' checksums and the protocol that cuts them into windows (protocol 0 keys had no
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


# ------------------------------------------------------------ text forms
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
