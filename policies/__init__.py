"""The policy zoo: one interface (``policies.base``), a registry and a factory."""

from policies.base import EpisodeContext, Policy, PolicyConfig, available, load, make, policy_class, register
from policies import dp_c, dp_t, tracker  # noqa: F401  (register "dp-c", "dp-t", "tracker")

__all__ = ["EpisodeContext", "Policy", "PolicyConfig", "available", "load", "make", "policy_class", "register"]
