"""Policy names and where each policy lives, without importing any of them (or torch).

Listing the zoo (``--help``, error messages) costs nothing; a policy's module is imported the
first time its class is asked for. Policies outside this package register themselves with
``@register(name)`` when their module is imported.
"""

from __future__ import annotations

import importlib

from cfbench.protocol import check_name

#: the zoo: registry name -> module that registers it
BUILTIN = {
    "tracker": "policies.tracker",
    "dp-c": "policies.dp_c",
    "dp-t": "policies.dp_t",
    "d-ma": "policies.d_ma",
    "dispo": "policies.dispo.policy",
    "vq-bet": "policies.vq_bet",
    "pf-dag": "policies.pf_dag",
    "e0": "policies.e0",
    "ct-t": "policies.ct_t",
}
_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: register a Policy subclass (and its config) under ``name``."""
    check_name(name, "policy")

    def wrap(policy_class: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"policy name {name!r} is already registered")
        policy_class.config_class.name = name
        _REGISTRY[name] = policy_class
        return policy_class

    return wrap


def available() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTRY))


def policy_class(name: str) -> type:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]
