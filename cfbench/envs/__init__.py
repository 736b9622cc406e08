"""Environment registry: ``import cfbench`` registers the three benchmark ids."""

from __future__ import annotations

import gymnasium as gym

#: short name (used on the command line and in file names) -> Gymnasium id
ENV_IDS = {
    "ClampPassing": "cfbench/ClampPassing-v1",  # v0 (round 1) is no longer registered
    "PassagePassing": "cfbench/PassagePassing-v0",
    "ButtonTouch": "cfbench/ButtonTouch-v0",
}
_ENTRY_POINTS = {
    "ClampPassing": "cfbench.envs.clamp_passing:ClampPassingEnv",
    "PassagePassing": "cfbench.envs.passage_passing:PassagePassingEnv",
    "ButtonTouch": "cfbench.envs.button_touch:ButtonTouchEnv",
}


def register_envs() -> None:
    """Register every cfbench env once (the env enforces its own time limit in seconds)."""
    for name, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=_ENTRY_POINTS[name])


def resolve_env(name: str) -> str:
    """Map a short name or a Gymnasium id to the Gymnasium id, with a clear error otherwise."""
    if name in ENV_IDS:
        return ENV_IDS[name]
    if name in ENV_IDS.values():
        return name
    raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(ENV_IDS)}")


def state_layout(env: str):
    """The env's ``StateLayout`` (what its state entries are), without making the env."""
    import importlib

    module, _, name = _ENTRY_POINTS[short_name(resolve_env(env))].partition(":")
    return getattr(importlib.import_module(module), name).state_layout


def short_name(env_id: str) -> str:
    for name, known in ENV_IDS.items():
        if known == env_id:
            return name
    raise ValueError(f"unknown environment id {env_id!r}")
