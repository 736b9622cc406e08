"""The one policy interface, its registry and the factory (LeRobot-style config + model split).

Every policy is a dataclass config (registered under a name) plus a ``Policy`` subclass. The
evaluator drives policies only through this interface and never by name:

- ``reset(slot, context)`` starts a new episode in vector-env slot ``slot``;
- ``act(obs_history, slots=..., source_hz=..., target_hz=...)`` returns, for each requested
  slot, a chunk of absolute target poses at the *target* rate, executed one per control step
  (an array, or a list when the slots' chunks differ in length);
- ``fit(dataset)`` trains (learned policies only);
- ``save(dir)`` / ``load(dir)`` write and read ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes

from cfbench.expert import ExpertTrajectory
from cfbench.io import atomic_write_bytes, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class PolicyConfig:
    """Settings every policy has; subclasses add their own fields (all JSON-serialisable)."""

    #: registry name, set by ``@register``
    name: ClassVar[str] = ""
    #: observations given to ``act``, spaced one source-rate step apart (oldest first)
    n_obs_steps: int = 1
    #: what the policy observes: "state" (vector), "pixels" or "pixels_state" (the env's obs_mode)
    obs_mode: str = "state"

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PolicyConfig:
        values = {k: v for k, v in values.items() if k != "policy"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.name}: unknown config field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def config_docs(config_class: type[PolicyConfig]) -> dict[str, str]:
    """Each config field's documentation: the ``#:`` comment lines right above its declaration,
    from the most derived class that declares it with one (so ``--show-config`` and the
    documentation test read the same text a reader of the source sees)."""
    docs: dict[str, str] = {}
    for cls in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        source = textwrap.dedent(inspect.getsource(cls))
        lines = source.splitlines()
        for node in ast.parse(source).body[0].body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            comment, row = [], node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            if comment:
                docs[node.target.id] = " ".join(comment)
    return docs


@dataclass(frozen=True)
class EpisodeContext:
    """What the evaluator tells a policy at the start of an episode."""

    env_id: str
    seed: int
    control_hz: float
    #: the test env's own expert trajectory; given only to privileged policies (the Tracker)
    expert: ExpertTrajectory | None = None


class Policy(ABC):
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    #: True for reference policies that read the test env's expert (not imitation learners)
    privileged: ClassVar[bool] = False
    #: False for policies that need no training data
    trainable: ClassVar[bool] = True

    def __init__(self, config: PolicyConfig | None = None):
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")

    @property
    def name(self) -> str:
        return self.config.name

    # -------------------------------------------------------------- behaviour
    def fit(self, dataset, **kwargs) -> dict[str, Any]:
        """Train on a demo dataset. Returns the training history: ``losses`` and ``validation``
        curves ([step, value] pairs), ``best_step``, ``best_score`` and ``train_seconds``."""
        raise NotImplementedError(f"policy {self.name!r} is not trainable")

    def pretraining_identity(self) -> dict[str, Any] | None:
        """The settings of a first training phase that runs differing only in later settings can
        share; the runner then names a folder for it by these and passes it to ``fit`` as
        ``pretraining_dir``. None (the default): nothing is shared."""
        return None

    @abstractmethod
    def reset(self, slot: int, context: EpisodeContext) -> None:
        """A new episode starts in vector-env slot ``slot``."""

    @abstractmethod
    def act(self, obs_history, *, slots: list[int], source_hz: float, target_hz: float) -> np.ndarray:
        """Action chunks (len(slots), n_actions, pose_dim) at ``target_hz`` for the given slots, or a
        list of len(slots) chunks (n_actions_i, pose_dim) when their lengths differ."""

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint; parameter-free policies keep the empty default."""
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise ValueError(f"policy {self.name!r} has no weights, but the checkpoint holds {sorted(tensors)}")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, tensors_to_bytes(tensors))
        return directory


_REGISTRY: dict[str, type[Policy]] = {}


def register(name: str):
    """Class decorator: register a Policy subclass (and its config) under ``name``."""

    def wrap(policy_class: type[Policy]) -> type[Policy]:
        if name in _REGISTRY:
            raise ValueError(f"policy name {name!r} is already registered")
        policy_class.config_class.name = name
        _REGISTRY[name] = policy_class
        return policy_class

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[Policy]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def make(name: str, profile: str | None = None, **overrides) -> Policy:
    """Build a policy from its registered name, an optional named profile and config overrides."""
    cls = policy_class(name)
    profiles = getattr(cls.config_class, "profiles", {})
    if profile is not None and profile not in profiles and not (profile == "cpu" and not profiles):
        raise ValueError(f"policy {name!r} has no profile {profile!r}; profiles: {sorted(profiles) or ['cpu']}")
    config = cls.config_class.from_dict({**profiles.get(profile, {}), **overrides})
    return cls(config)


def load(directory: str | Path) -> Policy:
    """Load a policy saved with ``Policy.save``: config.json + model.safetensors, never pickle."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file missing: {path}")
    try:
        values = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupt checkpoint config {config_path}: {error}") from error
    if not isinstance(values, dict) or "policy" not in values:
        raise ValueError(f"checkpoint config {config_path} does not name its policy")
    cls = policy_class(values["policy"])
    policy = cls(cls.config_class.from_dict(values))
    try:
        tensors = tensors_from_bytes(weights_path.read_bytes())
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise ValueError(f"corrupt or truncated checkpoint weights {weights_path}: {error}") from error
    policy.load_state_dict(tensors)
    return policy
