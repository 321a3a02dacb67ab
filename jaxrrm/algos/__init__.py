"""Learners.

* online behaviour learners (:mod:`.dqn`, :mod:`.sac`) and their shared pieces (:mod:`.common`:
  replay buffer, parallel environments, evaluation of network parameters);
* the discrete-SAC losses both SAC learners call (:mod:`.losses`);
* offline learners: conservative Q-learning in four paradigms (:mod:`.cql`) and behaviour
  cloning (:mod:`.bc`).
"""

from . import bc, common, cql, dqn, losses, sac
from .dqn import DQNConfig
from .sac import SACConfig

#: Online learners usable as behaviour policies, by name: module with ``make_train`` and config.
ONLINE_LEARNERS = {"sac": (sac, SACConfig), "dqn": (dqn, DQNConfig)}

__all__ = ["bc", "common", "cql", "dqn", "losses", "sac", "DQNConfig", "SACConfig",
           "ONLINE_LEARNERS"]
