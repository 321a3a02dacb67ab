"""Learners.

* online behaviour learners (:mod:`.dqn`, :mod:`.sac`), single-seed pure learners of one
  protocol (:mod:`.online`: ``init``, ``chunk``, ``policy``), and their pieces: the replay
  buffer (:mod:`.replay`) and the parallel environments (:mod:`.vec_env`);
* what every learner uses: network settings (:mod:`.netconfig`), optimisation steps
  (:mod:`.optim`: ``gradient_step``, ``polyak``, schedules) and the discrete-SAC losses both SAC
  learners call (:mod:`.losses`);
* offline learners: conservative Q-learning in four paradigms (:mod:`.cql`) and behaviour
  cloning (:mod:`.bc`).
"""

from . import bc, cql, dqn, losses, netconfig, online, optim, replay, sac, vec_env
from .dqn import DQNConfig
from .sac import SACConfig

#: Online learners usable as behaviour policies, by name: module (with ``make_learner`` and
#: ``make_train``) and config.
ONLINE_LEARNERS = {"sac": (sac, SACConfig), "dqn": (dqn, DQNConfig)}

__all__ = ["bc", "cql", "dqn", "losses", "netconfig", "online", "optim", "replay", "sac",
           "vec_env", "DQNConfig", "SACConfig", "ONLINE_LEARNERS"]
