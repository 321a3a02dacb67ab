"""One discrete-SAC loss: online SAC (jaxrrm.algos.sac) and offline CQL's SAC backbone
(jaxrrm.algos.cql, cql_alpha = 0) compute the same critic and actor losses on the same batch
(jaxrrm.algos.losses), in CQL's convention (no 1/2, sums over critics and decisions)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvParams
from jaxrrm.algos import cql, losses, sac
from jaxrrm.algos.replay import ReplayItem

from test_cql import NET, TINY, make_batch  # the CQL tests' scenario and random batches

I, A, D = TINY.num_aps, TINY.num_actions, TINY.obs_dim
GAMMA = 0.8


def random_batch(seed, b=32):
    """:func:`test_cql.make_batch` (random masks, idle always valid, valid actions) with a few
    terminations."""
    tr = make_batch(seed, b)
    return tr.replace(terminated=jnp.asarray(np.random.default_rng(seed).random(b) < 0.25))


@pytest.fixture(scope="module")
def both():
    trainer = sac.make_train(TINY, EnvParams.create(TINY), sac.SACConfig(
        gamma=GAMMA, reward_scale=2.0, actor_net=NET, critic_net=NET), eval_episodes=1)
    learner = cql.make_learner(TINY, cql.CQLConfig(
        paradigm="independent", backbone="sac", cql_alpha=0.0, gamma=GAMMA, reward_scale=2.0,
        num_critics=2, critic_net=NET, actor_net=NET))
    p = trainer.init(jax.random.key(0)).params
    # Targets and temperatures distinct from the online critics / the initial alpha, so every
    # term of the target matters.
    p = dict(p, critic_target=jax.tree.map(lambda x: x + 0.1 * jnp.sin(7.0 * x + 1.0),
                                           p["critic"]),
             log_alpha=jnp.log(jnp.array([0.3, 0.05], jnp.float32)))
    return trainer, learner, p


def test_online_sac_and_cql_backbone_same_critic_loss(both):
    trainer, learner, p = both
    tr = random_batch(1)
    f_sac = lambda c: trainer.critic_loss(c, p, ReplayItem.from_transitions(tr))
    f_cql = lambda c: learner.critic_loss(c, p, tr)
    (l_sac, (aux_s, qmin_s)), g_sac = jax.value_and_grad(f_sac, has_aux=True)(p["critic"])
    (l_cql, (aux_c, qmin_c)), g_cql = jax.value_and_grad(f_cql, has_aux=True)(p["critic"])
    assert float(l_sac) > 0.0
    np.testing.assert_allclose(l_sac, l_cql, rtol=1e-6)
    np.testing.assert_allclose(aux_s["target"], aux_c["target"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux_s["q"], aux_c["q"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(qmin_s, qmin_c, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_sac), jax.tree.leaves(g_cql)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The convention: no 1/2, summed over the K = 2 critics and the I decisions, mean over the
    # batch, i.e. K * I times the mean squared TD error.
    np.testing.assert_allclose(l_sac, 2 * I * aux_c["td_loss"], rtol=1e-6)


def test_online_sac_and_cql_backbone_same_actor_loss(both):
    trainer, learner, p = both
    tr = random_batch(2)
    _, (_, q_min) = learner.critic_loss(p["critic"], p, tr)
    f_sac = lambda a: trainer.actor_loss(a, p, ReplayItem.from_transitions(tr), q_min)
    f_cql = lambda a: learner.actor_loss(a, p, tr, q_min)
    (l_sac, ent_s), g_sac = jax.value_and_grad(f_sac, has_aux=True)(p["actor"])
    (l_cql, aux_c), g_cql = jax.value_and_grad(f_cql, has_aux=True)(p["actor"])
    np.testing.assert_allclose(l_sac, l_cql, rtol=1e-6)
    np.testing.assert_allclose(ent_s, aux_c["entropy"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_sac), jax.tree.leaves(g_cql)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # Summed over the APs (not averaged): the sum of CQL's per-decision losses.
    np.testing.assert_allclose(l_sac, jnp.sum(aux_c["loss_per_decision"]), rtol=1e-6)


def test_shared_losses_by_hand():
    # One row, one decision, K = 2 critics with Q(a) = 1 and 3, target 2: (1-2)^2 + (3-2)^2 = 2.
    q_pred = jnp.array([1.0, 3.0]).reshape(2, 1, 1)
    loss, per, td = losses.td_loss(q_pred, jnp.array([[2.0]]))
    np.testing.assert_allclose(loss, 2.0)
    np.testing.assert_allclose(per, [2.0])
    np.testing.assert_allclose(td, [[[1.0]], [[1.0]]])
    # extra enters the same reduction: + mean_b sum_k e = 0.5 + 1.5.
    extra = jnp.array([0.5, 1.5]).reshape(2, 1, 1)
    loss_e, _, _ = losses.td_loss(q_pred, jnp.array([[2.0]]), extra)
    np.testing.assert_allclose(loss_e, 4.0)
    # Actor: pi = [1/4, 3/4] (logits [0, ln 3]), q = [1, 2], alpha = 0.5, one row, two decisions
    # identical: per decision 1/4 (0.5 ln 1/4 - 1) + 3/4 (0.5 ln 3/4 - 2) = -2.08116..., loss = 2x.
    logits = jnp.tile(jnp.array([0.0, math.log(3.0)]), (1, 2, 1))
    q = jnp.tile(jnp.array([1.0, 2.0]), (1, 2, 1))
    mask = jnp.ones((1, 2, 2), bool)
    want = 0.25 * (0.5 * math.log(0.25) - 1) + 0.75 * (0.5 * math.log(0.75) - 2)
    loss_a, per_a, ent = losses.actor_loss(logits, q, mask, jnp.array([0.5, 0.5]))
    np.testing.assert_allclose(per_a, [want, want], rtol=1e-6)
    np.testing.assert_allclose(loss_a, 2 * want, rtol=1e-6)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(ent, [[h, h]], rtol=1e-6)
    # Temperature: mean_{b,g} log alpha_g (H - f log 2), gradient (H - f log 2) / G per AP.
    la = jnp.log(jnp.array([0.5, 2.0]))
    f = 0.3
    gap = h - f * math.log(2.0)
    np.testing.assert_allclose(losses.temperature_loss(la, ent, mask, f),
                               np.mean(np.asarray(la)) * gap, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(losses.temperature_loss)(la, ent, mask, f),
                               [gap / 2, gap / 2], rtol=1e-6)
