"""Policy names and where each policy lives, without importing any of them (or torch).

Listing the zoo (``--help``, error messages) costs nothing; a policy's module is imported the
first time its class is asked for. Policies outside this package register themselves with
``@register(name)`` when their module is imported: a module named on the command line
(``--policy-module``, ``import_policy_module``) or one an installed package names under the
``cfbench.policies`` entry-point group (``NAME = "package.module"``), imported the first time
``NAME`` is asked for.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

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
#: what the zoo needs beyond the core (pyproject.toml's "zoo" extra), by import name
ZOO_PACKAGES = ("torch", "safetensors", "diffusers", "vector_quantize_pytorch")
#: the entry-point group through which installed packages add policies
ENTRY_POINT_GROUP = "cfbench.policies"


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
    return sorted(set(BUILTIN) | set(_REGISTRY) | set(_installed()))


def policy_class(name: str) -> type:
    if name not in _REGISTRY and name in BUILTIN:
        try:
            importlib.import_module(BUILTIN[name])
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in ZOO_PACKAGES:
                raise
            raise ValueError(f"policy {name!r} is part of the policy zoo, which needs {error.name} (not installed): "
                             "pip install torch==2.13.0 && pip install \"cfbench[zoo]\"") from None
    elif name not in _REGISTRY and name in _installed():
        module = _installed()[name]
        if name not in import_policy_module(module, f"entry point {name} = {module} ({ENTRY_POINT_GROUP})"):
            raise ValueError(f"entry point {name} = {module} ({ENTRY_POINT_GROUP}) registers no policy named {name!r}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def import_policy_module(module: str, source: str = "") -> list[str]:
    """Import a module whose policies register themselves, searching the current folder first (as
    ``python -m`` does); returns the names its classes are registered under. ``source`` says in
    errors where the module was named (default: ``--policy-module``)."""
    source = source or f"--policy-module {module}"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and (module == error.name or module.startswith(error.name + ".")):
            raise ValueError(f"{source}: no module {error.name!r} in the current folder or the installed "
                             "packages (name it as you would import it, e.g. mypkg.mypolicy)") from None
        raise
    names = sorted(name for name, cls in _REGISTRY.items() if cls.__module__ == module)
    if not names:
        raise ValueError(f"{source} registers no policy: decorate its Policy subclass with "
                         "@policies.register(NAME)")
    return names


def _installed() -> dict[str, str]:
    """Policy name -> module, from the installed packages' ``cfbench.policies`` entry points."""
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
