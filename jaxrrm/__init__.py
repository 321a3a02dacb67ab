"""jaxrrm: offline multi-agent RL for radio resource management, in JAX.

The simulator (``units``, ``config``, ``topology``, ``channel``, ``radio``, ``env``), evaluation
(``metrics``) and heuristic policies (``baselines``). See docs/design.md for the system model.
"""

from . import baselines, channel, config, env, metrics, radio, rrm_env, topology, units
from .config import EnvConfig, EnvParams
from .rrm_env import RRMEnv

__version__ = "0.1.0"

__all__ = ["EnvConfig", "EnvParams", "RRMEnv", "baselines", "channel", "config", "env",
           "metrics", "radio", "rrm_env", "topology", "units", "__version__"]
