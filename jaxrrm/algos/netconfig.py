"""Network settings of the learners: :class:`NetConfig` (width, depth, activation, parameter
sharing of the per-agent networks of :mod:`jaxrrm.networks`) and the online learners' default,
:data:`BEHAVIOUR_NET`."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from ..config import EnvConfig, is_int, require
from ..networks import ACTIVATIONS, AgentNet


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Per-agent network settings (see :class:`jaxrrm.networks.AgentNet`).

    Attributes:
      hidden: hidden layer widths, e.g. ``(256, 256)`` (depth = length, each >= 1).
      activation: one of :data:`jaxrrm.networks.ACTIVATIONS`.
      layer_norm: LayerNorm after each hidden layer.
      shared: ``True``: one network for all APs (with ``agent_id``); ``False``: separate
        parameters per AP; ``None`` (default): the learner's natural choice, filled in by the
        learner's config (:meth:`resolve`): separate per-AP parameters for the offline learners
        (:class:`~jaxrrm.algos.cql.CQLConfig` in every paradigm, the paper's per-AP networks,
        and :class:`~jaxrrm.algos.bc.BCConfig`), one shared network for the online behaviour
        learners (:class:`~jaxrrm.algos.dqn.DQNConfig`, :class:`~jaxrrm.algos.sac.SACConfig`,
        as :data:`BEHAVIOUR_NET`). An explicit choice is kept, and one the paradigm cannot
        honour is a ``ValueError`` (``shared=True`` with ``paradigm="independent"``).
      agent_id: append a one-hot AP index to the input of the shared network.
    """

    hidden: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    shared: Optional[bool] = None
    agent_id: bool = True

    def __post_init__(self):
        hidden = tuple(self.hidden) if isinstance(self.hidden, (list, tuple)) else self.hidden
        require(isinstance(hidden, tuple) and all(is_int(h) and h >= 1 for h in hidden),
                "hidden", "a tuple of integers >= 1", self.hidden)
        object.__setattr__(self, "hidden", hidden)
        require(self.activation in ACTIVATIONS, "activation", f"one of {tuple(ACTIVATIONS)}",
                self.activation)
        for name in ("layer_norm", "agent_id"):
            require(isinstance(getattr(self, name), bool), name, "True or False",
                    getattr(self, name))
        require(self.shared is None or isinstance(self.shared, bool), "shared",
                "True, False or None (the learner's natural choice)", self.shared)

    def resolve(self, shared: bool) -> "NetConfig":
        """This config with ``shared`` filled in where it is ``None`` (an explicit choice is
        kept); what the learners' configs do with their natural choice."""
        return self if self.shared is not None else dataclasses.replace(self, shared=shared)

    def agent_net(self, cfg: EnvConfig, out_scale: float = 1.0) -> AgentNet:
        """The :class:`AgentNet` for environment ``cfg`` (``shared`` must be resolved)."""
        if self.shared is None:
            raise ValueError("NetConfig.shared is None: the learner's config chooses it "
                             "(NetConfig.resolve); pass shared=True or False to build a "
                             "network directly")
        return AgentNet.for_env(cfg, hidden=self.hidden, activation=self.activation,
                                layer_norm=self.layer_norm, shared=self.shared,
                                agent_id=self.agent_id, out_scale=out_scale)


#: Default network of the online behaviour learners: two hidden layers of 128 (ReLU), shared across
#: APs with a one-hot AP id. On the default scenario it reached the same scores as (256, 256) in
#: our (short) comparison runs, at ~3x less compute per update, which matters on CPU.
BEHAVIOUR_NET = NetConfig(hidden=(128, 128), shared=True)

#: ``NetConfig.shared=None`` of the online behaviour learners resolves to this: one network shared
#: across APs (with a one-hot AP id), as :data:`BEHAVIOUR_NET`.
ONLINE_SHARED = True
