"""The policy base class, its config, the registry and the factory (LeRobot-style config +
model split).

Every policy is a dataclass config (registered under a name) plus a ``Policy`` subclass. The
evaluator drives a policy only through the core's interface (``cfbench.interface.Agent``:
``reset`` and ``act``) and never by name; here it also gets:

- ``fit(dataset)`` trains (learned policies only);
- ``set_rollout(settings)`` changes how a trained model is executed;
- ``save(dir)`` / ``load(dir)`` write and read ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import math
import textwrap
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cfbench.files import CheckpointError, atomic_write_bytes, atomic_write_text
from cfbench.interface import EpisodeContext
from policies.registry import available, policy_class, register  # noqa: F401  (the factory's registry)

if TYPE_CHECKING:  # torch and safetensors are imported where weights are: a policy without any needs neither
    import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OBS_MODES = ("state", "pixels", "pixels_state")
LIMIT_CHECKS = {
    "positive": lambda value: all(v > 0 for v in _numbers(value)),
    "non-negative": lambda value: all(v >= 0 for v in _numbers(value)),
    "fraction": lambda value: all(0 <= v < 1 for v in _numbers(value)),
}


def declared(config_class: type, attribute: str):
    """A class-level declaration (``LIMITS``, ``CHOICES``, ``NEUTRAL``, ``RETIRED``: dicts;
    ``ROLLOUT``, ``FITTED``: tuples) merged over every class of a config, the base's first."""
    parts = [vars(cls)[attribute] for cls in reversed(config_class.__mro__) if attribute in vars(cls)]
    if parts and isinstance(parts[0], dict):
        return {key: value for part in parts for key, value in part.items()}
    return tuple(dict.fromkeys(name for part in parts for name in part))


def _numbers(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _has_type(value, hint) -> bool:
    """Whether a config value fits its declared type (bools are not numbers; lists pass for tuples)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, (tuple, list)) and all(_has_type(v, item) for v in value)
    raise TypeError(f"config fields of type {hint} are not supported")


def _describe(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", dict: "a mapping"}
    if typing.get_origin(hint) is tuple:
        return f"a list of {names[typing.get_args(hint)[0]].split(' ', 1)[1]}s"
    return names.get(hint, names.get(typing.get_origin(hint), str(hint)))


@dataclass
class PolicyConfig:
    """Settings every policy has; subclasses add their own fields (all JSON-serialisable)."""

    #: registry name, set by ``@register``
    name: ClassVar[str] = ""
    #: observations given to ``act``, spaced one source-rate step apart (oldest first)
    n_obs_steps: int = 1
    #: what the policy observes: "state" (vector), "pixels" or "pixels_state" (the env's obs_mode)
    obs_mode: str = "state"

    #: field -> "positive", "non-negative" or "fraction" ([0, 1)); checked at construction with the
    #: other classes' limits, together with every field's type
    LIMITS: ClassVar[dict[str, str]] = {"n_obs_steps": "positive"}
    #: string field -> the values it may take; checked at construction with the other classes' choices
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"obs_mode": OBS_MODES}
    #: named configurations, each a set of overrides of the defaults, run with ``--variant NAME``
    #: (e.g. DiSPo's "paper"); any other variant name is only a label for the results
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    #: fields added after runs were cached, each with the value that behaves as before it existed:
    #: at that value a field is left out of ``identity()``, so cached runs stay valid
    NEUTRAL: ClassVar[dict[str, Any]] = {}
    #: options removed after runs were cached, each with its neutral value: configs saved before
    #: (checkpoints, records) hold it, and at that value it is dropped on reading, as the run never
    #: depended on it; any other value names a model this version cannot run, and is refused
    RETIRED: ClassVar[dict[str, Any]] = {}
    #: rollout settings: fields only the execution of a trained model reads (how many actions run
    #: per prediction, the curve through them). A model is trained, and its checkpoint selected on
    #: the validation seeds, with each at its declared default; changing one re-evaluates a cached
    #: model, never retrains it (``identity()`` names the model by the defaults)
    ROLLOUT: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _has_type(value, hints[field.name]):
                raise ValueError(f"{self.name}: {field.name}={value!r} must be {_describe(hints[field.name])}")
            if isinstance(value, list):
                setattr(self, field.name, tuple(value))  # JSON gives lists where tuples are declared
        for name, limit in declared(type(self), "LIMITS").items():
            value = getattr(self, name)
            if not LIMIT_CHECKS[limit](value):
                raise ValueError(f"{self.name}: {name}={value!r} must be {limit.replace('fraction', 'in [0, 1)')}")
        for name, allowed in declared(type(self), "CHOICES").items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.name}: {name}={getattr(self, name)!r} must be one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> PolicyConfig:
        """A config written by an earlier version (checkpoint, record): a field it does not have
        takes its ``NEUTRAL`` value, what that version ran, not today's default."""
        return cls.from_dict({**cls.neutral(), **values})

    @classmethod
    def neutral(cls) -> dict[str, Any]:
        return declared(cls, "NEUTRAL")

    def identity(self) -> dict[str, Any]:
        """What names a trained model (cache keys, resumption checks): ``to_dict()`` with the
        rollout settings at the values it is trained with, without the fields at their
        ``NEUTRAL`` value."""
        neutral = self.neutral()
        values = {**self.to_dict(), **self.training_rollout()}
        return {k: v for k, v in values.items() if k not in neutral or plain(v) != plain(neutral[k])}

    def rollout_fields(self) -> tuple[str, ...]:
        """The ``ROLLOUT`` fields of every class of this config (a subclass may keep one out where
        training reads it)."""
        return declared(type(self), "ROLLOUT")

    def rollout(self) -> dict[str, Any]:
        """This config's rollout settings."""
        return {name: getattr(self, name) for name in self.rollout_fields()}

    def training_rollout(self) -> dict[str, Any]:
        """The rollout settings a model is trained and selected with: each at its declared default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {name: defaults[name] for name in self.rollout_fields()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PolicyConfig:
        values = cls.without_retired({k: v for k, v in values.items() if k != "policy"})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.name}: unknown config field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def without_retired(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` less the ``RETIRED`` options, each of which must be at its neutral value."""
        retired = declared(cls, "RETIRED")
        for name in sorted(values.keys() & retired.keys()):
            if plain(values[name]) != plain(retired[name]):
                raise ValueError(f"{cls.name}: {name} is a retired option; a saved config may hold it only at "
                                 f"{json.dumps(plain(retired[name]))}, what every run does now, not at "
                                 f"{json.dumps(plain(values[name]))}")
        return {k: v for k, v in values.items() if k not in retired}


def plain(value: Any) -> Any:
    """A value as JSON reads it back (tuples as lists), so saved and built configs compare."""
    return json.loads(json.dumps(value, default=list))


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

    def check_started(self, slots: list[int], episodes: dict) -> None:
        """``act`` for slots whose episode ``reset`` began (``episodes``: the policy's per-slot state)."""
        missing = [slot for slot in slots if slot not in episodes]
        if missing:
            raise ValueError(f"{self.name}: act() for slot {missing[0]} before reset({missing[0]}, context) "
                             "started its episode")

    @abstractmethod
    def act(self, obs_history, *, slots: list[int], reference_hz: float, target_hz: float) -> np.ndarray:
        """Action chunks (len(slots), n_actions, pose_dim) at ``target_hz`` for the given slots, or a
        list of len(slots) chunks (n_actions_i, pose_dim) when their lengths differ."""

    def set_rollout(self, settings: dict[str, Any]) -> None:
        """Change rollout settings of a (trained) policy; anything else is refused."""
        other = sorted(set(settings) - set(self.config.rollout_fields()))
        if other:
            raise ValueError(f"{self.name}: {other} are not rollout settings (these are: "
                             f"{', '.join(self.config.rollout_fields()) or 'none'})")
        self.config = dataclasses.replace(self.config, **settings)  # checked like any config

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
        from safetensors.torch import save as tensors_to_bytes

        atomic_write_bytes(directory / WEIGHTS_FILE, tensors_to_bytes(tensors))
        return directory


def make(name: str, profile: str | None = None, variant: str = "", **overrides) -> Policy:
    """Build a policy from its registered name, an optional named profile, an optional variant
    (its overrides if the config declares it, else only a label) and config overrides, applied
    in that order."""
    cls = policy_class(name)
    profiles = getattr(cls.config_class, "profiles", {})
    if profile is not None and profile not in profiles and not (profile == "cpu" and not profiles):
        raise ValueError(f"policy {name!r} has no profile {profile!r}; profiles: {sorted(profiles) or ['cpu']}")
    declared = cls.config_class.variants
    near = difflib.get_close_matches(variant, list(declared), n=1, cutoff=0.75) if variant not in declared else []
    if near:
        raise ValueError(f"policy {name!r} declares no variant {variant!r}; did you mean {near[0]!r}? (declared: "
                         f"{', '.join(declared)}; a label of your own must not look like one of them)")
    variant_overrides = declared.get(variant, {})
    config = cls.config_class.from_dict({**profiles.get(profile, {}), **variant_overrides, **overrides})
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
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"corrupt checkpoint config {config_path}: {error}") from None
    if not isinstance(values, dict) or "policy" not in values:
        raise CheckpointError(f"checkpoint config {config_path} does not name its policy")
    cls = policy_class(values["policy"])
    policy = cls(cls.config_class.from_saved(values))
    try:
        from safetensors.torch import load as tensors_from_bytes

        tensors = tensors_from_bytes(weights_path.read_bytes())
    except Exception as error:  # noqa: BLE001  (safetensors raises its own error types for bad headers)
        raise CheckpointError(f"corrupt or truncated checkpoint weights {weights_path}: {error}") from None
    policy.load_state_dict(tensors)
    return policy
