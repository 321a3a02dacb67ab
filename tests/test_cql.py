"""Offline learners: the functional CQL losses, the four paradigms (jaxrrm.algos.cql), the QMIX
mixer (jaxrrm.networks.QMixer) and BC.

Tiny configuration (2 APs, 2 candidates + idle: A = 3 actions per AP, 9 joint actions) and tiny
networks; every jitted update is compiled once per module (:func:`jitted_update`).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, env
from jaxrrm.algos import bc, cql
from jaxrrm.algos.netconfig import NetConfig
from jaxrrm.baselines import decode_joint_action, encode_joint_action, joint_action_table
from jaxrrm.data import Transitions, sample
from jaxrrm.env import Observation
from jaxrrm.networks import QMixer, masked_log_softmax

TINY = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
I, A, D = TINY.num_aps, TINY.num_actions, TINY.obs_dim  # 2, 3, 4
NET = NetConfig(hidden=(16,), shared=False)
SHARED_NET = NetConfig(hidden=(16,), shared=True)


def config(paradigm="ctde", backbone="sac", **kw):
    return cql.CQLConfig(paradigm=paradigm, backbone=backbone, critic_net=NET, actor_net=NET,
                         **kw)


def make_batch(seed, b=16, p_valid=0.6, terminated=False, truncated=False, valid_mask=False):
    """Random transitions (NumPy: no compilation): random masks (idle always valid), valid random
    actions."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(b, I, D)).astype(np.float32)
    nobs = rng.normal(size=(b, I, D)).astype(np.float32)
    if valid_mask:
        mask = nmask = np.ones((b, I, A), bool)
    else:
        mask, nmask = rng.random((2, b, I, A)) < p_valid
        mask[..., -1] = nmask[..., -1] = True
    acts = np.argmax(np.where(mask, rng.random((b, I, A)), -1.0), axis=-1).astype(np.int32)
    tr = Transitions(
        obs=obs, state=obs.reshape(b, -1), action_mask=mask, actions=acts,
        reward=rng.normal(size=(b,)).astype(np.float32), next_obs=nobs,
        next_state=nobs.reshape(b, -1), next_action_mask=nmask,
        terminated=np.full((b,), terminated), truncated=np.full((b,), truncated),
        rates_mbps=np.zeros((b, TINY.num_ues), np.float32), episode=np.zeros((b,), np.int32),
        t=np.zeros((b,), np.int32))
    return jax.tree.map(jnp.asarray, tr)


_JIT = {}


@pytest.fixture(scope="module")
def env_obs():
    """A real observation of the environment (jitted reset: compiles faster than eager)."""
    params = EnvParams.create(TINY)
    obs, st = jax.jit(env.reset, static_argnums=2)(jax.random.key(15), params, TINY)
    return obs, st, params


def jitted_update(paradigm, backbone):
    """One jitted update per (paradigm, backbone) for the whole module. The CTDE-SAC one is
    wrapped in ``chex.assert_max_traces(n=1)``: every test that calls it (different batches,
    keys and states) must reuse its single trace."""
    k = (paradigm, backbone)
    if k not in _JIT:
        fn = cql.make_learner(TINY, config(paradigm, backbone)).update
        if k == ("ctde", "sac"):
            fn = chex.assert_max_traces(fn, n=1)
        _JIT[k] = jax.jit(fn)
    return _JIT[k]


_INIT = {}


def init_state(learner, key):
    """``learner.init(key)``, jitted once per paradigm and backbone (compiles faster than eager;
    the other hyperparameters do not change the initial state's structure)."""
    k = (learner.config.paradigm, learner.config.backbone)
    if k not in _INIT:
        _INIT[k] = jax.jit(learner.init)
    return _INIT[k](key)


def leaves_close(a, b, **kw):
    return all(np.allclose(x, y, **kw) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------------------
# The generic losses, by hand
# ------------------------------------------------------------------------------------------

def test_cql_penalty_two_actions_by_hand():
    # Q = [1, 3]: logsumexp = log(e^1 + e^3) = 3 + log(1 + e^-2) = 3 + 0.126928 = 3.126928.
    # a_data = 0: penalty = 3.126928 - 1 = 2.126928;  a_data = 1: 3.126928 - 3 = 0.126928.
    q = jnp.array([[1.0, 3.0], [1.0, 3.0]])
    mask = jnp.ones((2, 2), bool)
    pen = cql.cql_penalty(q, mask, jnp.array([0, 1]))
    np.testing.assert_allclose(pen, [2.126928, 0.126928], atol=1e-5)
    # A third, masked action with a huge Q changes nothing.
    q3 = jnp.array([[1.0, 3.0, 100.0]])
    m3 = jnp.array([[True, True, False]])
    np.testing.assert_allclose(cql.cql_penalty(q3, m3, jnp.array([0])), [2.126928], atol=1e-5)


def test_cql_penalty_equal_q_is_log_num_valid():
    # All Q equal to c: logsumexp over n valid actions = c + log n, penalty = log n.
    q = jnp.full((2, 5), 0.7)
    mask = jnp.array([[True] * 5, [True, False, True, False, True]])
    pen = cql.cql_penalty(q, mask, jnp.array([3, 4]))
    np.testing.assert_allclose(pen, [math.log(5), math.log(3)], atol=1e-6)  # 1.609438, 1.098612


def test_critic_loss_by_hand():
    # One row, one decision, K = 1 critic, Q = [1, 3], a_data = 0, target y = 2, alpha = 1:
    # TD (1 - 2)^2 = 1, penalty 2.126928  ->  loss 3.126928.  Two critics: twice the sum.
    q = jnp.array([1.0, 3.0]).reshape(1, 1, 1, 2)
    loss, aux = cql.cql_critic_loss(q, jnp.array([[0]]), jnp.ones((1, 1, 2), bool),
                                    jnp.array([[2.0]]), 1.0)
    np.testing.assert_allclose(loss, 3.126928, atol=1e-5)
    np.testing.assert_allclose(aux["td_loss"], 1.0)
    np.testing.assert_allclose(aux["cql_penalty"], 2.126928, atol=1e-5)
    np.testing.assert_allclose(aux["q_gap"], 1.0 - 2.0)  # Q(a_data) - mean(Q) = 1 - (1 + 3) / 2
    q2 = jnp.concatenate([q, q], axis=0)
    loss2, _ = cql.cql_critic_loss(q2, jnp.array([[0]]), jnp.ones((1, 1, 2), bool),
                                   jnp.array([[2.0]]), 1.0)
    np.testing.assert_allclose(loss2, 2 * 3.126928, atol=1e-5)
    # cql_alpha = 0 is the plain TD loss.
    loss0, _ = cql.cql_critic_loss(q, jnp.array([[0]]), jnp.ones((1, 1, 2), bool),
                                   jnp.array([[2.0]]), 0.0)
    np.testing.assert_allclose(loss0, 1.0)


def test_soft_and_greedy_values_by_hand():
    # pi = softmax([0, ln 3]) = [1/4, 3/4]; log pi = [ln 1/4, ln 3/4]; Q = [2, 4], alpha = 0.5:
    # V = 1/4 (2 - 0.5 ln 0.25) + 3/4 (4 - 0.5 ln 0.75) = 0.5 + 0.173287 + 3 + 0.107881 = 3.781168
    logp = masked_log_softmax(jnp.array([0.0, math.log(3.0)]), jnp.array([True, True]))
    v = cql.soft_value(jnp.array([2.0, 4.0]), logp, jnp.array([True, True]), 0.5)
    np.testing.assert_allclose(v, 3.781168, atol=1e-5)
    # Greedy: max of target = 5 (action 1); double DQN: online argmax is action 0 -> target 1.
    qt, qo = jnp.array([1.0, 5.0, 9.0]), jnp.array([3.0, 2.0, 7.0])
    mask = jnp.array([True, True, False])
    np.testing.assert_allclose(cql.greedy_value(qt, mask), 5.0)
    np.testing.assert_allclose(cql.greedy_value(qt, mask, qo), 1.0)


def test_truncation_bootstraps_and_termination_stops():
    # terminated [F, F, T], truncated [F, T, F]: bootstrap through truncation -> 1 - done = [1,1,0];
    # treating truncation as terminal -> [1, 0, 0].
    term, trunc = jnp.array([False, False, True]), jnp.array([False, True, False])
    np.testing.assert_array_equal(cql.not_done(term, trunc), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(cql.not_done(term, trunc, False), [1.0, 0.0, 0.0])
    # y = r + gamma (1 - done) V = 1 + 0.9 * [1, 1, 0] * 2 = [2.8, 2.8, 1]
    y = cql.td_target(jnp.ones(3), 2.0, 0.9 * cql.not_done(term, trunc))
    np.testing.assert_allclose(y, [2.8, 2.8, 1.0], atol=1e-6)


def test_masked_actions_never_counted():
    """Changing the Q-values / logits of masked actions changes no loss term and no gradient."""
    key = jax.random.key(0)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    q = jax.random.normal(k1, (64, A))
    logits = jax.random.normal(k2, (64, A))
    mask = jax.random.bernoulli(k3, 0.5, (64, A)).at[:, -1].set(True)
    a_data = jax.random.categorical(k4, jnp.where(mask, 0.0, -1e9))
    assert not bool(jnp.all(mask))
    alpha = 0.3

    def terms(q, logits):
        logp = masked_log_softmax(logits, mask)
        actor, ent = cql.sac_actor_loss(logits, q, mask, alpha)
        return dict(lse=cql.masked_logsumexp(q, mask), pen=cql.cql_penalty(q, mask, a_data),
                    soft=cql.soft_value(q, logp, mask, alpha), greedy=cql.greedy_value(q, mask),
                    double=cql.greedy_value(q, mask, logits), actor=actor, ent=ent)

    terms = jax.jit(terms)
    base = terms(q, logits)
    for poke in (1e6, -1e6, 50.0):
        t = terms(jnp.where(mask, q, poke), jnp.where(mask, logits, poke))
        for name in base:
            np.testing.assert_array_equal(t[name], base[name], err_msg=f"{name}, poke {poke}")
    # ... and they get exactly zero gradient.
    g_q = jax.jit(jax.grad(lambda q: jnp.sum(
        cql.cql_penalty(q, mask, a_data)
        + cql.soft_value(q, masked_log_softmax(logits, mask), mask, alpha))))(q)
    g_l = jax.jit(jax.grad(lambda lg: jnp.sum(cql.sac_actor_loss(lg, q, mask, alpha)[0])))(logits)
    assert np.all(np.asarray(g_q)[~np.asarray(mask)] == 0.0)
    assert np.all(np.asarray(g_l)[~np.asarray(mask)] == 0.0)
    assert np.any(np.asarray(g_q)[np.asarray(mask)] != 0.0)


# ------------------------------------------------------------------------------------------
# Joint actions (centralized)
# ------------------------------------------------------------------------------------------

def test_joint_action_round_trip_and_mask():
    table = joint_action_table(TINY)  # [9, 2]
    idx = jnp.arange(TINY.num_joint_actions)
    np.testing.assert_array_equal(encode_joint_action(decode_joint_action(idx, I, A), A), idx)
    np.testing.assert_array_equal(decode_joint_action(idx, I, A), table)
    # AP 0 valid {0, 2}, AP 1 valid {0, 1}: j = 3 a0 + a1 valid for j in {0, 1, 6, 7}.
    mask = jnp.array([[True, False, True], [True, True, False]])
    jm = cql.joint_action_mask(mask, TINY)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(jm)), [0, 1, 6, 7])
    # Random masks against a loop.
    masks = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.6, (20, I, A)))
    jms = np.asarray(cql.joint_action_mask(jnp.asarray(masks), TINY))
    for b in range(20):
        for j, row in enumerate(table):
            assert jms[b, j] == all(masks[b, i, row[i]] for i in range(I))
    # The centralized learner's decisions: encoded data actions, valid under the joint mask.
    learner = cql.make_learner(TINY, config("centralized"))
    batch = make_batch(2)
    x, jmask, a, nx, _ = jax.jit(learner.decisions)(batch)
    assert x.shape == (16, TINY.state_dim) and jmask.shape == (16, 1, 9) and a.shape == (16, 1)
    np.testing.assert_array_equal(a[:, 0], encode_joint_action(batch.actions, A))
    assert bool(jnp.all(cql.q_at(jmask, a)))


def test_centralized_guard_and_config_validation():
    with pytest.raises(ValueError, match="max_joint_actions"):
        cql.make_learner(TINY, config("centralized", max_joint_actions=8))  # 9 joint actions
    cql.make_learner(TINY, config("ctde", max_joint_actions=8))  # only the centralized one cares
    with pytest.raises(ValueError, match="critic_net.shared"):
        cql.CQLConfig(paradigm="independent", critic_net=SHARED_NET, actor_net=NET)
    cql.CQLConfig(paradigm="ctde", critic_net=SHARED_NET, actor_net=SHARED_NET)  # allowed
    for kw, field in [(dict(paradigm="vdn"), "paradigm"), (dict(backbone="ppo"), "backbone"),
                      (dict(gamma=1.0), "gamma"), (dict(cql_alpha=-1.0), "cql_alpha"),
                      (dict(tau=0.0), "tau"), (dict(critic_lr=0.0), "critic_lr"),
                      (dict(target_entropy_frac=1.0), "target_entropy_frac"),
                      (dict(num_critics=0), "num_critics"),
                      (dict(mixer_embed=0), "mixer_embed"),
                      (dict(mixer_hyper_hidden=1.5), "mixer_hyper_hidden"),
                      (dict(bootstrap_truncated=1), "bootstrap_truncated")]:
        with pytest.raises(ValueError, match=field):
            cql.CQLConfig(**kw)


# ------------------------------------------------------------------------------------------
# Paradigms
# ------------------------------------------------------------------------------------------

def test_ctde_q_tot_and_team_target():
    # Q_tot by hand: Q_0 = [1, 2, 3], Q_1 = [10, 20, 30], actions (2, 0): 3 + 10 = 13.
    q = jnp.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    np.testing.assert_allclose(cql.q_tot(q, jnp.array([2, 0])), 13.0)

    cfg = config("ctde", gamma=0.9)
    learner = cql.make_learner(TINY, cfg)
    state = init_state(learner, jax.random.key(3))
    p = state.params
    # Perturb the targets so that they differ from the online critics.
    p = dict(p, critic_target=jax.tree.map(lambda x: x + 0.05, p["critic_target"]))
    batch = make_batch(4, truncated=True)  # truncation still bootstraps
    @jax.jit
    def evaluate(p, batch):
        loss, (aux, _) = learner.critic_loss(p["critic"], p, batch)
        return (loss, aux, learner.apply_critic(p["critic"], batch.obs),
                learner.apply_critic(p["critic_target"], batch.next_obs),
                masked_log_softmax(learner.apply_actor(p["actor"], batch.next_obs),
                                   batch.next_action_mask))

    loss, aux, q, qt, logp = evaluate(p, batch)
    q = np.asarray(q)                                                       # [K, B, I, A]
    acts = np.asarray(batch.actions)
    q_a = np.take_along_axis(q, acts[None, :, :, None], -1)[..., 0]         # [K, B, I]
    qtot = q_a.sum(-1)                                                      # [K, B]
    np.testing.assert_allclose(aux["q"], qtot.mean(), rtol=1e-5)
    # Team target: r + gamma * sum_i sum_a pi_i(a|o_i') [min_k Qt_i(o_i', a) - alpha_i log pi_i].
    qt, logp = np.asarray(qt).min(0), np.asarray(logp)
    nm = np.asarray(batch.next_action_mask)
    alpha = np.exp(np.asarray(p["log_alpha"]))[None, :, None]
    v_i = np.where(nm, np.exp(logp) * (qt - alpha * logp), 0.0).sum(-1)     # [B, I]
    y = np.asarray(batch.reward) + 0.9 * v_i.sum(-1)                         # [B]
    np.testing.assert_allclose(aux["target"], y.mean(), rtol=1e-5, atol=1e-6)
    # Loss: sum_k mean_b [(Q_tot - y)^2 + sum_i (lse_i - Q_i(a_i))].
    m = np.asarray(batch.action_mask)[None]
    lse = np.log(np.where(m, np.exp(q), 0.0).sum(-1))                       # [K, B, I]
    expect = ((qtot - y[None]) ** 2 + (lse - q_a).sum(-1)).mean(1).sum()
    np.testing.assert_allclose(loss, expect, rtol=1e-5)


def test_masked_next_actions_not_bootstrapped():
    """Only idle is valid at s': every target uses the idle action's value alone."""
    learner = cql.make_learner(TINY, config("independent", gamma=0.5))
    p = init_state(learner, jax.random.key(5)).params
    batch = make_batch(6)
    only_idle = jnp.zeros((16, I, A), bool).at[..., -1].set(True)
    batch = batch.replace(next_action_mask=only_idle)
    loss_fn = jax.jit(learner.critic_loss)
    _, (aux, _) = loss_fn(p["critic"], p, batch)
    qt = jax.jit(learner.apply_critic)(p["critic_target"], batch.next_obs).min(0)[..., -1]
    # pi(idle) = 1, log pi = 0  ->  V_i = min_k Qt_i(o_i', idle)
    y = batch.reward[:, None] + 0.5 * qt
    np.testing.assert_allclose(aux["target"], jnp.mean(y), rtol=1e-5, atol=1e-6)
    # Terminal rows: y = r, whatever the successor.
    _, (aux_t, _) = loss_fn(p["critic"], p, batch.replace(
        terminated=jnp.ones((16,), bool)))
    np.testing.assert_allclose(aux_t["target"], jnp.mean(batch.reward), rtol=1e-6)
    # bootstrap_truncated=False: a truncated row is terminal too.
    nob = cql.make_learner(TINY, config("independent", gamma=0.5, bootstrap_truncated=False))
    _, (aux_n, _) = jax.jit(nob.critic_loss)(p["critic"], p,
                                             batch.replace(truncated=jnp.ones((16,), bool)))
    np.testing.assert_allclose(aux_n["target"], jnp.mean(batch.reward), rtol=1e-6)


@pytest.mark.parametrize("backbone", cql.BACKBONES)
def test_independent_gradients_do_not_cross_agents(backbone):
    learner = cql.make_learner(TINY, config("independent", backbone))
    state = init_state(learner, jax.random.key(7))
    p = state.params
    batch = make_batch(8)

    # Jacobian of the per-AP losses [I] w.r.t. the critics: leaves [I (loss), K, I (params), ...]
    jac = jax.jit(jax.jacrev(lambda cp: learner.critic_loss(cp, p, batch)[1][0]
                             ["loss_per_decision"]))(p["critic"])
    for i, j in ((0, 1), (1, 0)):
        assert all(np.all(np.asarray(x)[i, :, j] == 0.0) for x in jax.tree.leaves(jac))
        assert any(np.any(np.asarray(x)[i, :, i] != 0.0) for x in jax.tree.leaves(jac))
    if backbone == "sac":
        @jax.jit
        def actor_jac(ap):
            q_min = learner.critic_loss(p["critic"], p, batch)[1][1]
            return jax.jacrev(lambda ap: learner.actor_loss(ap, p, batch, q_min)[1]
                              ["loss_per_decision"])(ap)  # leaves [I (loss), I (params), ...]

        jac = actor_jac(p["actor"])
        for i, j in ((0, 1), (1, 0)):
            assert all(np.all(np.asarray(x)[i, j] == 0.0) for x in jax.tree.leaves(jac))
            assert any(np.any(np.asarray(x)[i, i] != 0.0) for x in jax.tree.leaves(jac))
    # Whole update: changing AP 1's data leaves AP 0's new parameters exactly as they were.
    upd = jitted_update("independent", backbone)
    s1, _ = upd(state, batch, jax.random.key(0))
    other = make_batch(9)
    batch2 = batch.replace(obs=batch.obs.at[:, 1].set(other.obs[:, 1]),
                           next_obs=batch.next_obs.at[:, 1].set(other.next_obs[:, 1]),
                           actions=batch.actions.at[:, 1].set(other.actions[:, 1]),
                           action_mask=batch.action_mask.at[:, 1].set(other.action_mask[:, 1]))
    s2, _ = upd(state, batch2, jax.random.key(0))
    for x, y in zip(jax.tree.leaves(s1.params["critic"]), jax.tree.leaves(s2.params["critic"])):
        np.testing.assert_array_equal(np.asarray(x)[:, 0], np.asarray(y)[:, 0])
        assert not np.array_equal(np.asarray(x)[:, 1], np.asarray(y)[:, 1])


@pytest.mark.parametrize("paradigm", cql.PARADIGMS)
@pytest.mark.parametrize("backbone", cql.BACKBONES)
def test_update_runs_and_policies_never_choose_masked(paradigm, backbone, env_obs):
    upd = jitted_update(paradigm, backbone)
    learner = cql.make_learner(TINY, config(paradigm, backbone))
    s0 = init_state(learner, jax.random.key(10))
    s1, m1 = upd(s0, make_batch(11), jax.random.key(12))
    s2, m2 = upd(s1, make_batch(13), jax.random.key(14))
    assert set(m2) == set(cql.METRIC_NAMES)
    assert all(np.isfinite(float(v)) for v in m2.values()), m2
    assert int(s2.step) == 2
    assert float(m2["cql_penalty"]) >= 0.0
    if backbone == "sac":
        assert float(m2["alpha"]) > 0 and float(m2["entropy"]) > 0
    # Polyak targets: moved towards the critics.
    c0, t2 = jax.tree.leaves(s0.params["critic"])[0], jax.tree.leaves(s2.params["critic_target"])[0]
    assert not np.array_equal(c0, t2)

    # Policies (greedy and sampled; DQN: epsilon-greedy) on many observations with random masks,
    # and on a real observation of the environment: [I] int32, never a masked action.
    n = 512
    b = make_batch(17, b=n, p_valid=0.4)
    real, st, env_params = env_obs
    obs = Observation(agents=jnp.concatenate([b.obs, real.agents[None]]),
                      global_state=jnp.concatenate([b.state, real.global_state[None]]),
                      action_mask=jnp.concatenate([b.action_mask, real.action_mask[None]]))
    pols = [cql.policy(s2.params, learner.config, TINY, greedy=g, epsilon=0.5)
            for g in (True, False)]
    keys = jax.random.split(jax.random.key(18), n + 1)
    acts = jax.jit(jax.vmap(lambda k, o: jnp.stack([p(k, o, st, env_params) for p in pols])))(
        keys, obs)                                                       # [n + 1, 2, I]
    assert acts.shape == (n + 1, 2, I) and acts.dtype == jnp.int32
    assert bool(jnp.all(cql.q_at(obs.action_mask[:, None], acts)))
    # Sanity of the test: the unmasked greedy choice is often a masked action.
    x = b.state if paradigm == "centralized" else b.obs
    p = s2.params
    raw = (jax.jit(learner.apply_actor)(p["actor"], x) if backbone == "sac"
           else jax.jit(learner.apply_critic)(p["critic"], x)[0])
    raw_a = jnp.argmax(raw, -1)
    if paradigm == "centralized":
        raw_a = decode_joint_action(raw_a[:, 0], I, A)
    assert not bool(jnp.all(cql.q_at(b.action_mask, raw_a)))


def test_update_traced_once():
    upd = jitted_update("ctde", "sac")  # wrapped in chex.assert_max_traces(n=1)
    s = init_state(cql.make_learner(TINY, config("ctde", "sac")), jax.random.key(20))
    for i in range(4):
        s, m = upd(s, make_batch(100 + i), jax.random.key(200 + i))
    assert int(s.step) == 4 and np.isfinite(float(m["critic_loss"]))
    # A batch of another size is another trace: the wrapper must notice.
    with pytest.raises(AssertionError, match="traced > 1"):
        upd(s, make_batch(0, b=8), jax.random.key(0))


def test_update_vmaps_over_seeds():
    learner = cql.make_learner(TINY, config("ctde", "sac"))
    keys = jax.random.split(jax.random.key(21), 2)
    states = jax.jit(jax.vmap(learner.init))(keys)
    batches = jax.tree.map(lambda *x: jnp.stack(x), make_batch(22), make_batch(23))
    ukeys = jax.random.split(jax.random.key(24), 2)
    vs, vm = jax.jit(jax.vmap(learner.update))(states, batches, ukeys)
    upd = jitted_update("ctde", "sac")
    for s in range(2):
        take = lambda t: jax.tree.map(lambda x: x[s], t)  # noqa: E731
        ss, sm = upd(take(states), take(batches), ukeys[s])
        assert leaves_close(take(vs), ss, rtol=1e-5, atol=1e-6)
        assert leaves_close(take(vm), sm, rtol=1e-5, atol=1e-6)
    # Two seeds, two different learners.
    leaf = np.asarray(jax.tree.leaves(vs.params["critic"])[0])  # [seed, K, I, ...]
    assert not np.allclose(leaf[0], leaf[1])


# ------------------------------------------------------------------------------------------
# A tiny learning check
# ------------------------------------------------------------------------------------------

def bandit_dataset(seed, n=512):
    """One-step bandit (every row terminal): AP 0's best action is 1, AP 1's is 0.

    r = [a_0 == 1] + [a_1 == 0] - 3; the data take actions 0 and 1 uniformly, never idle (2).
    The offset makes the seen actions' values negative (Q_tot in [-3, -1]), so an unconstrained
    critic would leave the unseen idle action near its initial ~0, above them: without the CQL
    penalty the greedy actor would pick idle.
    """
    b = make_batch(seed, b=n, valid_mask=True, terminated=True)
    acts = np.random.default_rng(seed + 1).integers(0, 2, (n, I)).astype(np.int32)
    r = (acts[:, 0] == 1).astype(np.float32) + (acts[:, 1] == 0).astype(np.float32) - 3.0
    return b.replace(actions=jnp.asarray(acts), reward=jnp.asarray(r))


def test_ctde_learns_bandit_and_stays_conservative():
    cfg = config("ctde", "sac", critic_lr=3e-3, actor_lr=3e-3, alpha_lr=3e-3, tau=0.05)
    learner = cql.make_learner(TINY, cfg)
    data = bandit_dataset(25)

    @jax.jit
    def train(key):
        def body(s, k):
            k1, k2 = jax.random.split(k)
            return learner.update(s, sample(k1, data, 64), k2)
        s0 = learner.init(jax.random.fold_in(key, 0))
        return jax.lax.scan(body, s0, jax.random.split(key, 200))

    state, metrics = train(jax.random.key(26))
    assert np.all(np.isfinite(np.asarray(metrics["critic_loss"])))
    assert float(metrics["q_gap"][-1]) > 0.0  # data actions valued above the mean of all
    test = make_batch(27, b=128, valid_mask=True)
    obs = Observation(agents=test.obs, global_state=test.state, action_mask=test.action_mask)
    pol = learner.policy(state, greedy=True)
    acts = jax.jit(jax.vmap(lambda o: pol(jax.random.key(0), o, None, None)))(obs)
    assert float(jnp.mean(acts[:, 0] == 1)) > 0.95 and float(jnp.mean(acts[:, 1] == 0)) > 0.95
    # Conservatism: Q of the never-seen idle action stays below both seen actions' Q.
    q = jax.jit(learner.apply_critic)(state.params["critic"], test.obs).min(0)  # [B, I, A]
    qm = np.asarray(q.mean(0))                                          # [I, A]
    assert np.all(qm[:, 2] < qm[:, :2].min(-1) - 0.1), qm
    # The decomposition ranks the seen actions by their reward (the true gaps are 1; the CQL
    # penalty, pulling Q towards the data distribution, which is uniform over them, shrinks them).
    assert qm[0, 1] - qm[0, 0] > 0.3 and qm[1, 0] - qm[1, 1] > 0.3, qm


# ------------------------------------------------------------------------------------------
# Behaviour cloning
# ------------------------------------------------------------------------------------------

def _fit(learner, data, key, steps, batch_size=64):
    """``steps`` updates of ``learner`` on minibatches of ``data`` in one scanned, jitted run."""
    def body(s, k):
        return learner.update(s, sample(k, data, batch_size), k)
    return jax.jit(lambda k: jax.lax.scan(body, learner.init(k), jax.random.split(k, steps)))(key)


def test_bc_cross_entropy_by_hand_and_learns():
    # Uniform logits: 3 valid actions -> CE = log 3 = 1.098612; mask [T, F, T] -> log 2 = 0.693147.
    logits = jnp.zeros((2, A))
    mask = jnp.array([[True, True, True], [True, False, True]])
    np.testing.assert_allclose(bc.masked_cross_entropy(logits, mask, jnp.array([0, 2])),
                               (math.log(3) + math.log(2)) / 2, atol=1e-6)
    np.testing.assert_allclose(bc.masked_cross_entropy(logits, mask, jnp.array([0, 2]),
                                                       jnp.array([0.0, 1.0])), math.log(2),
                               atol=1e-6)
    # A masked data action counts as idle (as the environment executes it).
    np.testing.assert_array_equal(cql.canonical_actions(jnp.array([1, 1]), mask, TINY), [1, 2])

    bcfg = bc.BCConfig(lr=1e-2, net=NET)
    learner = bc.make_learner(TINY, bcfg)
    data = make_batch(28, b=256, p_valid=0.7)
    # The behaviour: AP 0 serves candidate 0, AP 1 stays idle; whatever the masks say.
    data = data.replace(actions=jnp.stack([jnp.zeros(256, jnp.int32),
                                           jnp.full((256,), 2, jnp.int32)], -1),
                        action_mask=data.action_mask.at[:, 0, 0].set(True))

    state, metrics = _fit(learner, data, jax.random.key(29), 150)
    assert float(metrics["loss"][-1]) < 0.1 * float(metrics["loss"][0])
    assert float(metrics["accuracy"][-1]) == 1.0
    obs = Observation(agents=data.obs, global_state=data.state, action_mask=data.action_mask)
    pol = bc.policy(state, bcfg, TINY)
    acts = jax.jit(jax.vmap(lambda o: pol(jax.random.key(0), o, None, None)))(obs)
    np.testing.assert_array_equal(acts[:, 0], 0)
    np.testing.assert_array_equal(acts[:, 1], 2)


def test_centralized_bc_learns_a_coordinated_joint_action():
    """Centralized BC clones a joint rule that no AP can follow from its own observation: AP 0
    serves candidate 0 and AP 1 is silent when the *last* global-state entry (AP 1's feature) is
    positive, else the other way round. Joint code base A = 3: (0, 2) -> 2, (2, 0) -> 6."""
    bcfg = bc.BCConfig(lr=1e-2, net=NetConfig(hidden=(32,)), paradigm="centralized")
    learner = bc.make_learner(TINY, bcfg)
    data = make_batch(31, b=256, p_valid=0.7)
    mask = data.action_mask.at[:, :, 0].set(True)
    pick = data.state[:, -1] > 0
    acts = jnp.where(pick[:, None], jnp.array([0, 2]), jnp.array([2, 0])).astype(jnp.int32)
    data = data.replace(actions=acts, action_mask=mask)
    assert 0.2 < float(jnp.mean(pick)) < 0.8
    jmask = cql.joint_action_mask(mask, TINY)
    np.testing.assert_array_equal(encode_joint_action(acts, A), jnp.where(pick, 2, 6))
    assert bool(jnp.all(jmask[jnp.arange(256), jnp.where(pick, 2, 6)]))

    state, metrics = _fit(learner, data, jax.random.key(32), 300)
    assert float(metrics["loss"][-1]) < 0.2 * float(metrics["loss"][0])
    assert float(metrics["accuracy"][-1]) > 0.95
    obs = Observation(agents=data.obs, global_state=data.state, action_mask=data.action_mask)
    pol = bc.policy(state, bcfg, TINY)
    out = jax.jit(jax.vmap(lambda o: pol(jax.random.key(0), o, None, None)))(obs)
    assert out.shape == (256, I) and out.dtype == jnp.int32
    assert float(jnp.mean(jnp.all(out == acts, axis=-1))) > 0.95
    with pytest.raises(ValueError, match="paradigm"):
        bc.BCConfig(paradigm="ctde")


# ------------------------------------------------------------------------------------------
# QMIX: the monotonic mixer and the qmix paradigm
# ------------------------------------------------------------------------------------------

def random_mixer_params(mixer, key, num, state_dim, scale=2.0):
    """``num`` draws of QMixer parameters with *every* leaf (biases too) ~ N(0, scale^2): far
    from the initialisation, so that many pre-activations of every layer are negative."""
    template = mixer.init(jax.random.key(0), jnp.zeros((mixer.num_agents,)),
                          jnp.zeros((state_dim,)))
    leaves, tree = jax.tree.flatten(template)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, (num,) + x.shape)
                                     for k, x in zip(keys, leaves)])


def test_mixer_is_monotone_in_every_utility():
    n_agents, s_dim, n_par, n_pts = 3, 5, 16, 128
    mixer = QMixer(num_agents=n_agents, embed=8, hyper_hidden=16)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(30), 4)
    params = random_mixer_params(mixer, k1, n_par, s_dim)
    q = 5.0 * jax.random.normal(k2, (n_par, n_pts, n_agents))      # many negative utilities
    s = 3.0 * jax.random.normal(k3, (n_par, n_pts, s_dim))
    delta = jax.random.uniform(k4, (n_par, n_pts, n_agents), minval=1e-3, maxval=10.0)

    @jax.jit
    def probe(params, q, s, delta):
        def one(p, q, s, d):                                       # one draw, one point
            f = lambda q: mixer.apply(p, q, s)  # noqa: E731
            # Q_tot(q + d_i e_i) - Q_tot(q) for each i
            up = jax.vmap(lambda i: f(q.at[i].add(d[i])))(jnp.arange(n_agents)) - f(q)
            return jax.grad(f)(q), up, f(q)
        per_param = jax.vmap(one, in_axes=(None, 0, 0, 0))
        return jax.vmap(per_param)(params, q, s, delta)

    grad, up, qtot = (np.asarray(x) for x in probe(params, q, s, delta))
    assert grad.shape == (n_par, n_pts, n_agents) and np.all(np.isfinite(grad))
    assert grad.min() >= 0.0, grad.min()
    # Increasing one utility never decreases Q_tot (float32 rounding tolerance only).
    tol = 1e-5 * (1.0 + np.abs(qtot))[..., None]
    assert up.min() >= -tol.max(), up.min()
    assert np.all(up >= -tol)
    # Not vacuous: the gradients are mostly strictly positive and vary with the state.
    assert np.mean(grad > 1e-6) > 0.5
    assert np.std(grad[0, :, 0]) > 1e-3


def test_mixer_forward_matches_numpy():
    # I = 2 agents, E = 2, state S = 3, hypernet hidden H = 4; every parameter drawn below.
    n_agents, e, s_dim, h = 2, 2, 3, 4
    mixer = QMixer(num_agents=n_agents, embed=e, hyper_hidden=h)
    rng = np.random.default_rng(31)

    def dense(d_in, d_out):
        return {"kernel": rng.normal(size=(d_in, d_out)).astype(np.float32),
                "bias": rng.normal(size=(d_out,)).astype(np.float32)}

    P = {"hyper_w1_0": dense(s_dim, h), "hyper_w1_1": dense(h, n_agents * e),
         "hyper_b1": dense(s_dim, e), "hyper_w2_0": dense(s_dim, h), "hyper_w2_1": dense(h, e),
         "V_0": dense(s_dim, e), "V_1": dense(e, 1)}
    init = mixer.init(jax.random.key(0), jnp.zeros((n_agents,)), jnp.zeros((s_dim,)))
    assert jax.tree.structure(init) == jax.tree.structure({"params": P})
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(init),
                                                  jax.tree.leaves({"params": P})))

    def lin(x, name):
        return x @ P[name]["kernel"] + P[name]["bias"]

    def relu(x):
        return np.maximum(x, 0.0)

    def elu(x):
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))

    def reference(q, s):                                           # q [I], s [S]
        # W1: the flat [I * E] output read row-major as [I, E] (entry (i, e) at i * E + e), so
        # Q_tot = sum_e elu(q_0 W1[0, e] + q_1 W1[1, e] + b1[e]) W2[e] + V.
        w1 = np.abs(lin(relu(lin(s, "hyper_w1_0")), "hyper_w1_1")).reshape(n_agents, e)
        b1 = lin(s, "hyper_b1")
        w2 = np.abs(lin(relu(lin(s, "hyper_w2_0")), "hyper_w2_1"))
        v = lin(relu(lin(s, "V_0")), "V_1")[0]
        hidden = elu(q @ w1 + b1)                                  # [E]
        return hidden @ w2 + v

    qs = rng.normal(scale=3.0, size=(2, 5, n_agents)).astype(np.float32)
    ss = rng.normal(scale=2.0, size=(2, 5, s_dim)).astype(np.float32)
    out = np.asarray(jax.jit(mixer.apply)({"params": P}, qs, ss))   # leading axes [2, 5]
    expect = np.array([[reference(qs[a, b], ss[a, b]) for b in range(5)] for a in range(2)])
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="agents"):
        mixer.apply({"params": P}, jnp.zeros((3,)), jnp.zeros((s_dim,)))


def constant_output(net_params, bias):
    """Per-AP network parameters whose output layer is the constant ``bias`` (its kernel 0):
    the network then outputs ``bias`` whatever its input (leading axes as the bias leaf)."""
    mlp = dict(net_params["params"]["mlp"])
    last = f"Dense_{len(mlp) - 1}"
    mlp[last] = {"kernel": jnp.zeros_like(mlp[last]["kernel"]),
                 "bias": jnp.broadcast_to(jnp.asarray(bias, jnp.float32),
                                          mlp[last]["bias"].shape)}
    return {"params": dict(net_params["params"], mlp=mlp)}


def constant_mixer(mixer_params, w1, b1, w2, b2):
    """QMixer parameters (leading critic axis ``K``) with every kernel and every hidden bias 0:
    the hypernetworks then output their last biases whatever the state, so ``W1 = |w1|``
    (``[K, I * E]``, read row-major as ``[I, E]``), ``b1``, ``W2 = |w2|`` and ``V = b2``."""
    z = jax.tree.map(jnp.zeros_like, mixer_params)["params"]
    for name, value in (("hyper_w1_1", w1), ("hyper_b1", b1), ("hyper_w2_1", w2), ("V_1", b2)):
        z[name] = dict(z[name], bias=jnp.asarray(value, jnp.float32).reshape(
            z[name]["bias"].shape))
    return {"params": z}


def test_qmix_critic_loss_by_hand():
    """K = 2 critics, I = 2 APs, A = 3 actions (idle = 2), E = 2; constant networks.

    Online utilities Q^k_i(a): k=0: AP0 [1, 2, 0], AP1 [0, 1, 3]; k=1: AP0 [2, 0, 1], AP1 [1, 1, 1]
    Target utilities:          k=0: AP0 [0, 2, 4], AP1 [1, 3, 0]; k=1: AP0 [-2, 5, 0], AP1 [0, 0, 6]
    Mixers (W1 = |w1|: the signs below test the abs):
      online k=0: w1 [-1, 0, 0, 1] -> W1 = I, b1 = 0, W2 = |[1, -1]| = [1, 1], V = 0:
                  M = elu(q0) + elu(q1)
      online k=1: w1 [2, 0, 0, -1] -> W1 = diag(2, 1), b1 = [-1, 0], W2 = [0.5, 1], V = 1:
                  M = 0.5 elu(2 q0 - 1) + elu(q1) + 1
      target k=0: as online k=0 but V = 1;  target k=1: as online k=1.
    Batch: 2 rows, data actions (1, 2), all actions valid now; rewards [1, 2], row 1 terminal;
    next masks AP0 {0, 2}, AP1 {2}; actors uniform over valid actions; alpha = 0.5; gamma 0.5.

    Q_tot (both rows): k=0: elu(2) + elu(3) = 5;  k=1: 0.5 elu(-1) + elu(1) + 1
                       = 0.5 (e^-1 - 1) + 2 = 1.683940.
    Per-AP soft next values V^k_i (each target critic alone):
      AP0: pi = [1/2, 0, 1/2]: V = (Qt(0) + Qt(2)) / 2 + 0.5 ln 2;  AP1: only idle: V = Qt(2)
      k=0: V = [2 + 0.346574, 0] = [2.346574, 0];  k=1: V = [-1 + 0.346574, 6] = [-0.653426, 6]
    Mixed by each target mixer: k=0: elu(2.346574) + elu(0) + 1 = 3.346574
                                k=1: 0.5 elu(-2.306853) + elu(6) + 1 = 0.5 (-0.900426) + 7
                                     = 6.549787
    y^k (row 0) = 1 + 0.5 M^k = [2.673287, 4.274894];  y = min_k = 2.673287;  row 1 (terminal): 2.
    CQL penalties lse_a Q^k_i - Q^k_i(a_i):
      k=0: AP0 ln(e + e^2 + 1) - 2 = 0.407606, AP1 ln(1 + e + e^3) - 3 = 0.169846 (sum 0.577452)
      k=1: AP0 ln(e^2 + 1 + e) - 0 = 2.407606, AP1 ln 3 = 1.098612             (sum 3.506218)
    Loss = sum_k [mean_b (Q_tot^k - y_b)^2 + sum_i pen^k_i]:
      k=0: ((5 - 2.673287)^2 + (5 - 2)^2) / 2 + 0.577452 = (5.413594 + 9) / 2 + 0.577452
           = 7.784249
      k=1: ((1.683940 - 2.673287)^2 + (1.683940 - 2)^2) / 2 + 3.506218
           = (0.978808 + 0.099894) / 2 + 3.506218 = 4.045569
      total 11.829818.
    """
    learner = cql.make_learner(TINY, config("qmix", "sac", gamma=0.5, cql_alpha=1.0,
                                            mixer_embed=2))
    p = jax.jit(learner.init)(jax.random.key(32)).params
    mix_on = dict(w1=[[-1, 0, 0, 1], [2, 0, 0, -1]], b1=[[0, 0], [-1, 0]],
                  w2=[[1, -1], [0.5, 1]], b2=[0, 1])
    mix_t = dict(mix_on, b2=[1, 1])
    critic = {"agents": constant_output(p["critic"]["agents"], [[[1, 2, 0], [0, 1, 3]],
                                                                 [[2, 0, 1], [1, 1, 1]]]),
              "mixer": constant_mixer(p["critic"]["mixer"], **mix_on)}
    target = {"agents": constant_output(p["critic_target"]["agents"], [[[0, 2, 4], [1, 3, 0]],
                                                                        [[-2, 5, 0], [0, 0, 6]]]),
              "mixer": constant_mixer(p["critic_target"]["mixer"], **mix_t)}
    p = dict(p, critic=critic, critic_target=target, actor=constant_output(p["actor"], 0.0),
             log_alpha=jnp.log(jnp.array([0.5, 0.5])))
    b = make_batch(33, b=2, valid_mask=True)
    batch = b.replace(actions=jnp.array([[1, 2], [1, 2]], jnp.int32),
                      reward=jnp.array([1.0, 2.0]), terminated=jnp.array([False, True]),
                      next_action_mask=jnp.array([[[True, False, True], [False, False, True]]] * 2))

    @jax.jit
    def evaluate(p, batch):
        loss, (aux, q_min) = learner.critic_loss(p["critic"], p, batch)
        q_a = cql.q_at(learner.apply_critic(p["critic"], batch.obs), batch.actions[None])
        return loss, aux, q_min, learner.mix(p["critic"], q_a, batch.state)

    loss, aux, q_min, qtot = evaluate(p, batch)
    e1 = math.exp(1.0)
    qtot_1 = 0.5 * (math.exp(-1.0) - 1.0) + 2.0                                   # 1.683940
    np.testing.assert_allclose(qtot, [[5.0, 5.0], [qtot_1, qtot_1]], rtol=1e-6)
    y0 = 1.0 + 0.5 * (2.0 + 0.5 * math.log(2.0) + 1.0)                            # 2.673287
    pen0 = (math.log(e1 + e1 ** 2 + 1) - 2) + (math.log(1 + e1 + e1 ** 3) - 3)    # 0.577452
    pen1 = math.log(e1 ** 2 + 1 + e1) + math.log(3.0)                             # 3.506218
    expect = (((5 - y0) ** 2 + 9) / 2 + pen0
              + ((qtot_1 - y0) ** 2 + (qtot_1 - 2) ** 2) / 2 + pen1)
    np.testing.assert_allclose(expect, 11.829818, atol=1e-6)
    np.testing.assert_allclose(loss, expect, rtol=1e-5)
    np.testing.assert_allclose(aux["target"], (y0 + 2.0) / 2, rtol=1e-6)           # 2.336643
    np.testing.assert_allclose(aux["q"], (5.0 + qtot_1) / 2, rtol=1e-6)            # 3.341970
    np.testing.assert_allclose(aux["td_loss"], ((5 - y0) ** 2 + 9 + (qtot_1 - y0) ** 2
                                                + (qtot_1 - 2) ** 2) / 4, rtol=1e-5)
    np.testing.assert_allclose(aux["cql_penalty"], (pen0 + pen1) / 4, rtol=1e-5)
    # q_gap: mean over (k, i) of Q(a_data) - mean_a Q = (1 + 5/3 - 1 + 0) / 4 = 5/12
    np.testing.assert_allclose(aux["q_gap"], 5.0 / 12.0, rtol=1e-5)
    # The actor's critic values: min over critics of the per-AP utilities.
    np.testing.assert_allclose(q_min[0], [[1, 0, 0], [0, 1, 1]])


@pytest.mark.parametrize("backbone", cql.BACKBONES)
def test_qmix_with_a_sum_mixer_is_ctde(backbone):
    """With one critic and the mixer W1 = I, b1 = [10, 10], W2 = [1, 1], V = -20, Q_tot =
    elu(q_0 + 10) + elu(q_1 + 10) - 20 = q_0 + q_1 whenever every q_i > -10: qmix's loss, metrics
    and gradient w.r.t. the per-AP critics are ctde's."""
    kw = dict(num_critics=1, gamma=0.9)
    qmix = cql.make_learner(TINY, config("qmix", backbone, mixer_embed=2, **kw))
    ctde = cql.make_learner(TINY, config("ctde", backbone, **kw))
    p = jax.jit(qmix.init)(jax.random.key(34)).params
    sum_mixer = dict(w1=[[1, 0, 0, 1]], b1=[[10, 10]], w2=[[1, 1]], b2=[-20])
    p = dict(p, critic=dict(p["critic"], mixer=constant_mixer(p["critic"]["mixer"], **sum_mixer)),
             critic_target={"agents": jax.tree.map(lambda x: x + 0.05,
                                                   p["critic_target"]["agents"]),
                            "mixer": constant_mixer(p["critic_target"]["mixer"], **sum_mixer)})
    p_ctde = dict(p, critic=p["critic"]["agents"], critic_target=p["critic_target"]["agents"])
    batch = make_batch(35)

    @jax.jit
    def both(p, p_ctde, batch):
        def loss_q(agents):
            return qmix.critic_loss(dict(p["critic"], agents=agents), p, batch)
        (lq, (aq, _)), gq = jax.value_and_grad(loss_q, has_aux=True)(p["critic"]["agents"])
        (lc, (ac, _)), gc = jax.value_and_grad(ctde.critic_loss, has_aux=True)(
            p_ctde["critic"], p_ctde, batch)
        return lq, aq, gq, lc, ac, gc

    lq, aq, gq, lc, ac, gc = both(p, p_ctde, batch)
    np.testing.assert_allclose(lq, lc, rtol=1e-5)
    assert set(aq) == set(ac)
    for name in ac:
        np.testing.assert_allclose(aq[name], ac[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert leaves_close(gq, gc, rtol=1e-4, atol=1e-5)


def test_qmix_mixers_see_the_state_are_trained_and_polyak_averaged():
    learner = cql.make_learner(TINY, config("qmix", "sac"))
    tau = learner.config.tau
    s0 = init_state(learner, jax.random.key(36))
    p, batch, other = s0.params, make_batch(37), make_batch(40)
    # Q_tot = M_s(...) is conditioned on the state s; the target mixes at the next state s'.
    loss_fn = jax.jit(learner.critic_loss)
    aux, aux_s, aux_n = (loss_fn(p["critic"], p, b)[1][0] for b in (
        batch, batch.replace(state=other.state), batch.replace(next_state=other.next_state)))
    assert float(aux_s["q"]) != float(aux["q"]) and float(aux_s["target"]) == float(aux["target"])
    assert float(aux_n["q"]) == float(aux["q"]) and float(aux_n["target"]) != float(aux["target"])

    s1, m = jitted_update("qmix", "sac")(s0, batch, jax.random.key(38))
    assert all(np.isfinite(float(v)) for v in m.values())
    c0, c1 = s0.params["critic"]["mixer"], s1.params["critic"]["mixer"]
    t0, t1 = s0.params["critic_target"]["mixer"], s1.params["critic_target"]["mixer"]
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(c1)))
    expect = jax.tree.map(lambda t, c: (1 - tau) * t + tau * c, t0, c1)
    assert leaves_close(t1, expect, rtol=1e-6, atol=1e-7)
    # Each critic has its own mixer (initialised independently).
    kernel = np.asarray(c0["params"]["hyper_w1_1"]["kernel"])     # [K, H, I * E]
    assert kernel.shape[0] == 2 and not np.allclose(kernel[0], kernel[1])


@pytest.fixture(scope="module")
def train_setup():
    from _train_setup import CFG, make_dataset, make_params

    params = make_params()
    return CFG, params, make_dataset(params)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", cql.BACKBONES)
def test_qmix_trains_and_executes_decentralized(backbone, train_setup):
    from jaxrrm import train

    cfg, params, dataset = train_setup
    net = NetConfig(hidden=(32, 32), shared=False)
    lc = cql.CQLConfig(paradigm="qmix", backbone=backbone, critic_net=net, actor_net=net)
    tc = train.TrainConfig(num_updates=300, batch_size=64, chunk_size=100, num_seeds=2,
                           eval_every_chunks=0, eval_episodes=2)
    res = train.make_train(cfg, params, lc, tc).train(jax.random.key(39), dataset)
    hist = res.history["metrics"]
    assert set(hist) == set(cql.METRIC_NAMES)
    assert all(np.all(np.isfinite(v)) for v in hist.values())
    assert np.all(np.isfinite(res.final["score"])) and res.final["score"].shape == (2,)
    # The critic fits its targets: the TD error falls over the run.
    assert np.all(hist["td_loss"][-1] < hist["td_loss"][0])

    # Decentralized execution: seed 0's greedy policy acts per AP from its own observation:
    # [I] int32, valid; AP 0's action unchanged when AP 1's observation and the global state
    # are replaced (and vice versa).
    ls = train.seed_state(res.state, 0).learner
    pol = cql.policy(ls, lc, cfg)
    n = 256
    obs = Observation(agents=jnp.asarray(dataset.obs[:n]),
                      global_state=jnp.asarray(dataset.state[:n]),
                      action_mask=jnp.asarray(dataset.action_mask[:n]))
    other = jnp.asarray(dataset.obs[n:2 * n])
    act = jax.jit(jax.vmap(lambda o: pol(jax.random.key(0), o, None, params)))
    a = act(obs)
    assert a.shape == (n, cfg.num_aps) and a.dtype == jnp.int32
    assert bool(jnp.all(cql.q_at(obs.action_mask, a)))
    for i in range(cfg.num_aps):
        swapped = obs.replace(agents=obs.agents.at[:, 1 - i].set(other[:, 1 - i]),
                              global_state=jnp.zeros_like(obs.global_state))
        np.testing.assert_array_equal(act(swapped)[:, i], a[:, i])


def test_ctde_cli_offers_qmix_without_running_it_by_default():
    from experiments import ctde, runner

    assert runner.LEARNERS["qmix"] == "QMIX-MARL-CQL"
    parser = ctde.build_parser()
    assert parser.parse_args([]).learners == ["ctde", "independent", "centralized", "bc"]
    args = parser.parse_args(["--learners", "qmix", "--hidden", "16,16", "--env", "num_aps=2",
                              "--env", "num_ues=4", "--env", "num_candidates=2"])
    assert args.learners == ["qmix"]
    lc = runner.resolve(args, "ctde").learner_config("qmix")
    assert isinstance(lc, cql.CQLConfig) and lc.paradigm == "qmix" and lc.decomposed
    assert lc.critic_net.hidden == (16, 16)
