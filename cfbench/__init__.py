"""cfbench: a Gymnasium benchmark for coarse-to-fine imitation learning."""

from cfbench.envs import ENV_IDS, register_envs

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "register_envs", "__version__"]

register_envs()
