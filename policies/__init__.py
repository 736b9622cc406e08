"""The policy zoo: one interface (``policies.base``), a registry and a factory."""

from policies.base import (EpisodeContext, Policy, PolicyConfig, available, config_docs, load, make, policy_class,
                           register)
from policies import d_ma, dispo, dp_c, dp_t, tracker, vq_bet  # noqa: F401  (registers every policy)

__all__ = ["EpisodeContext", "Policy", "PolicyConfig", "available", "config_docs", "load", "make", "policy_class",
           "register"]
