"""The policy zoo: one interface (``policies.base``), a registry and a factory.

``import policies`` is light: the registry lists the zoo without importing it (``--help`` stays
fast); the factory and the interface (``make``, ``load``, ``Policy``, ...) import torch and the
policy modules on first use.
"""

from __future__ import annotations

import importlib

from policies.registry import BUILTIN, available, import_policy_module, policy_class, register

_FROM_BASE = ("Policy", "PolicyConfig", "config_docs", "declared", "load", "make")
__all__ = ["BUILTIN", "available", "import_policy_module", "policy_class", "register", *_FROM_BASE]


def __getattr__(name: str):
    if name in _FROM_BASE:
        return getattr(importlib.import_module("policies.base"), name)
    raise AttributeError(f"module 'policies' has no attribute {name!r}")
