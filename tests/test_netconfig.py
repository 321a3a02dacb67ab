"""NetConfig's default ``shared=None``: each learner's config fills in its natural choice
(per-AP parameters offline, one shared network online); explicit choices are kept and a
conflicting one is a ValueError."""

from __future__ import annotations

import jax
import pytest

from jaxrrm import EnvConfig
from jaxrrm.algos import bc, cql, dqn, sac
from jaxrrm.algos.netconfig import BEHAVIOUR_NET, NetConfig

TINY = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
NET = NetConfig(hidden=(16,))   # what the README's snippet writes: no `shared`


def test_default_is_unresolved_and_cannot_build_a_network():
    assert NetConfig().shared is None and NET.shared is None
    with pytest.raises(ValueError, match="shared"):
        NET.agent_net(TINY)
    assert NET.resolve(True).shared is True and NET.resolve(False).shared is False
    explicit = NetConfig(hidden=(16,), shared=True)
    assert explicit.resolve(False) is explicit   # an explicit choice is kept


@pytest.mark.parametrize("paradigm", cql.PARADIGMS)
def test_offline_default_is_per_ap_in_every_paradigm(paradigm):
    # Before: NetConfig(hidden=...) meant shared=True, and paradigm="independent" raised.
    c = cql.CQLConfig(paradigm=paradigm, critic_net=NET, actor_net=NET)
    assert c.critic_net.shared is False and c.actor_net.shared is False
    explicit = NetConfig(hidden=(16,), shared=False)
    assert c == cql.CQLConfig(paradigm=paradigm, critic_net=explicit, actor_net=explicit)
    assert hash(c) == hash(cql.CQLConfig(paradigm=paradigm, critic_net=explicit,
                                         actor_net=explicit))
    assert bc.BCConfig(net=NET).net.shared is False


def test_offline_default_builds_per_ap_parameters():
    learner = cql.make_learner(TINY, cql.CQLConfig(paradigm="ctde", critic_net=NET,
                                                   actor_net=NET))
    params = learner.init(jax.random.key(0)).params
    # critics [K, I, D, H] and actor [I, D, H]: a leading AP axis, no one-hot AP id in D
    k0 = params["critic"]["params"]["mlp"]["Dense_0"]["kernel"]
    a0 = params["actor"]["params"]["mlp"]["Dense_0"]["kernel"]
    assert k0.shape == (2, TINY.num_aps, TINY.obs_dim, 16)
    assert a0.shape == (TINY.num_aps, TINY.obs_dim, 16)


def test_explicit_choices_are_kept_and_conflicts_raise():
    shared = NetConfig(hidden=(16,), shared=True)
    assert cql.CQLConfig(paradigm="ctde", critic_net=shared).critic_net.shared is True
    with pytest.raises(ValueError, match=r"critic_net.shared.*independent"):
        cql.CQLConfig(paradigm="independent", critic_net=shared, actor_net=NET)
    with pytest.raises(ValueError, match=r"actor_net.shared.*independent"):
        cql.CQLConfig(paradigm="independent", critic_net=NET, actor_net=shared)
    per_ap = NetConfig(hidden=(16,), shared=False)
    assert dqn.DQNConfig(net=per_ap).net.shared is False
    assert sac.SACConfig(actor_net=per_ap).actor_net.shared is False


def test_online_default_is_one_shared_network():
    assert BEHAVIOUR_NET.shared is True
    assert dqn.DQNConfig(net=NET).net.shared is True
    s = sac.SACConfig(actor_net=NET, critic_net=NET)
    assert s.actor_net.shared is True and s.critic_net.shared is True
    assert s == sac.SACConfig(actor_net=NET.resolve(True), critic_net=NET.resolve(True))
