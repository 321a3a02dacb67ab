"""Online behaviour learners (jaxrrm.algos.dqn / sac), their networks, replay buffer and parallel
environments.

Compilation dominates: each trainer is built once per module (fixtures) on a tiny configuration
and its ``train_chunk`` compiled once; the stream test reads the first chunk the learning test
then continues from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, env, evaluate
from jaxrrm.algos import dqn, optim, replay, sac, vec_env
from jaxrrm.algos.netconfig import NetConfig
from jaxrrm.networks import (MASK_VALUE, AgentNet, masked_argmax, masked_entropy,
                             masked_log_softmax, sample_masked)

TINY = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
TINY_NET = NetConfig(hidden=(64, 64))
NUM_ENVS, STEPS = 8, 25  # a chunk crosses an episode boundary (horizon 20)

DQN_CFG = dqn.DQNConfig(num_envs=NUM_ENVS, steps_per_chunk=STEPS, updates_per_step=2,
                        batch_size=128, buffer_size=20_000, learning_starts=400, gamma=0.5,
                        lr=1e-3, tau=0.02, eps_decay_steps=2_000, net=TINY_NET)
SAC_CFG = sac.SACConfig(num_envs=NUM_ENVS, steps_per_chunk=STEPS, updates_per_step=2,
                        batch_size=128, buffer_size=20_000, learning_starts=400, gamma=0.5,
                        actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, tau=0.02,
                        actor_net=TINY_NET, critic_net=TINY_NET)


@pytest.fixture(scope="module")
def tiny_params():
    return EnvParams.create(TINY)


@pytest.fixture(scope="module")
def dqn_trainer(tiny_params):
    return dqn.make_train(TINY, tiny_params, DQN_CFG, eval_episodes=64)


@pytest.fixture(scope="module")
def sac_trainer(tiny_params):
    return sac.make_train(TINY, tiny_params, SAC_CFG, eval_episodes=64)


@pytest.fixture(scope="module")
def dqn_first_chunk(dqn_trainer):
    ts0 = dqn_trainer.init(jax.random.key(0))
    ts1, metrics, trs = dqn_trainer.train_chunk(ts0)
    return ts0, ts1, metrics, trs


# ------------------------------------------------------------------------------------------
# Configuration validation
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kw,field", [
    (dqn.DQNConfig, dict(gamma=1.0), "gamma"),
    (dqn.DQNConfig, dict(gamma=-0.1), "gamma"),
    (dqn.DQNConfig, dict(num_envs=0), "num_envs"),
    (dqn.DQNConfig, dict(batch_size=2.5), "batch_size"),
    (dqn.DQNConfig, dict(num_envs=64, buffer_size=32), "buffer_size"),
    (dqn.DQNConfig, dict(tau=0.0), "tau"),
    (dqn.DQNConfig, dict(eps_end=1.5), "eps_end"),
    (dqn.DQNConfig, dict(lr=0.0), "lr"),
    (dqn.DQNConfig, dict(learning_starts=-1), "learning_starts"),
    (dqn.DQNConfig, dict(double="yes"), "double"),
    (dqn.DQNConfig, dict(net=(256, 256)), "net"),
    (sac.SACConfig, dict(target_entropy_frac=1.0), "target_entropy_frac"),
    (sac.SACConfig, dict(init_alpha=0.0), "init_alpha"),
    (sac.SACConfig, dict(critic_lr=-1e-3), "critic_lr"),
    (sac.SACConfig, dict(updates_per_step=0), "updates_per_step"),
    (sac.SACConfig, dict(gamma=1.0), "gamma"),
    (NetConfig, dict(activation="sigmoidish"), "activation"),
    (NetConfig, dict(hidden=(64, 0)), "hidden"),
    (NetConfig, dict(shared=1), "shared"),
])
def test_config_validation(cls, kw, field):
    with pytest.raises(ValueError, match=field):
        cls(**kw)


def test_configs_hashable_and_defaults_valid():
    assert hash(dqn.DQNConfig()) == hash(dqn.DQNConfig())
    assert hash(sac.SACConfig()) == hash(sac.SACConfig())
    assert NetConfig(hidden=[32, 32]).hidden == (32, 32)


# ------------------------------------------------------------------------------------------
# Replay buffer
# ------------------------------------------------------------------------------------------

def test_replay_insert_and_wrap_around():
    example = {"x": jnp.zeros((2,), jnp.float32), "i": jnp.zeros((), jnp.int32)}
    buf = replay.replay_init(example, 5)
    assert buf.capacity == 5 and int(buf.size) == 0 and int(buf.ptr) == 0

    def batch(start, n):
        i = jnp.arange(start, start + n, dtype=jnp.int32)
        return {"x": jnp.stack([i, -i], -1).astype(jnp.float32), "i": i}

    buf = replay.replay_add(buf, batch(0, 3))
    assert int(buf.size) == 3 and int(buf.ptr) == 3
    np.testing.assert_array_equal(buf.data["i"][:3], [0, 1, 2])
    # Only the filled part is ever sampled.
    s = replay.replay_sample(jax.random.key(0), buf, 500)
    assert set(np.asarray(s["i"]).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(np.asarray(s["x"][:, 0]), np.asarray(s["i"]))

    buf = replay.replay_add(buf, batch(3, 4))  # records 3..6: 5, 6 wrap to slots 0, 1
    assert int(buf.size) == 5 and int(buf.ptr) == 2
    np.testing.assert_array_equal(buf.data["i"], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.data["x"][:, 1], [-5, -6, -2, -3, -4])
    buf = replay.replay_add(buf, batch(7, 5))  # a full lap
    assert int(buf.size) == 5 and int(buf.ptr) == 2
    np.testing.assert_array_equal(buf.data["i"], [10, 11, 7, 8, 9])
    with pytest.raises(ValueError, match="capacity"):
        replay.replay_add(buf, batch(0, 6))


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared,agent_id", [(True, True), (True, False), (False, True)])
def test_agent_net_shapes(shared, agent_id):
    cfg = EnvConfig()  # I = 4, D = 6, A = 4
    net = AgentNet.for_env(cfg, hidden=(16, 8, 8), activation="gelu", shared=shared,
                           agent_id=agent_id)
    params = net.init(jax.random.key(0), jnp.zeros((cfg.num_aps, cfg.obs_dim)))
    for batch in [(), (3,), (2, 5)]:
        x = jax.random.normal(jax.random.key(1), batch + (cfg.num_aps, cfg.obs_dim))
        assert net.apply(params, x).shape == batch + (cfg.num_aps, cfg.num_actions)
    kernel0 = params["params"]["mlp"]["Dense_0"]["kernel"]
    d_in = cfg.obs_dim + (cfg.num_aps if shared and agent_id else 0)
    if shared:
        assert kernel0.shape == (d_in, 16)
    else:
        assert kernel0.shape == (cfg.num_aps, cfg.obs_dim, 16)
    assert len(params["params"]["mlp"]) == 4  # depth 3 + output layer


def test_per_agent_params_are_independent():
    cfg = EnvConfig(num_aps=3)
    net = AgentNet.for_env(cfg, hidden=(16, 16), shared=False)
    x = jax.random.normal(jax.random.key(0), (7, cfg.num_aps, cfg.obs_dim))
    params = net.init(jax.random.key(1), x[0])
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, x)[:, 0, :] ** 2))(params)
    for leaf in jax.tree.leaves(grads):
        assert float(jnp.abs(leaf[0]).sum()) > 0.0  # agent 0's own parameters
        assert float(jnp.abs(leaf[1:]).sum()) == 0.0  # agents 1, 2: exactly zero
    # ... and agent 1's output does not change when agent 0's parameters do.
    bumped = jax.tree.map(lambda p: p.at[0].add(1.0), params)
    np.testing.assert_array_equal(net.apply(params, x)[:, 1:], net.apply(bumped, x)[:, 1:])
    # The shared variant: agent 0's output depends on the (shared) parameters all agents use,
    # and the agent id changes the output for identical observations.
    shared = AgentNet.for_env(cfg, hidden=(16, 16), shared=True, agent_id=True)
    sp = shared.init(jax.random.key(2), x[0])
    same = jnp.broadcast_to(x[:, :1], x.shape)
    out = shared.apply(sp, same)
    assert not np.allclose(out[:, 0], out[:, 1])


def test_masking_helpers():
    key = jax.random.key(3)
    logits = jax.random.normal(key, (2000, 4, 5)) * 5.0
    mask = jax.random.bernoulli(jax.random.key(4), 0.5, logits.shape).at[..., -1].set(True)
    a = masked_argmax(logits, mask)
    assert bool(jnp.all(jnp.take_along_axis(mask, a[..., None], -1)))
    s = sample_masked(jax.random.key(5), logits, mask)
    assert bool(jnp.all(jnp.take_along_axis(mask, s[..., None], -1)))
    logp = masked_log_softmax(logits, mask)
    assert bool(jnp.all(jnp.isfinite(logp)))
    np.testing.assert_allclose(jnp.sum(jnp.exp(logp), -1), 1.0, rtol=1e-5)
    assert float(jnp.max(jnp.where(mask, 0.0, jnp.exp(logp)))) == 0.0
    ent = masked_entropy(logp, mask)
    assert bool(jnp.all(ent >= -1e-6)) and bool(jnp.all(ent <= jnp.log(mask.sum(-1)) + 1e-5))
    # Uniform logits: entropy = log(#valid).
    np.testing.assert_allclose(masked_entropy(masked_log_softmax(jnp.zeros_like(logits), mask),
                                              mask), jnp.log(mask.sum(-1)), rtol=1e-5)
    g = jax.grad(lambda z: jnp.sum(masked_entropy(masked_log_softmax(z, mask), mask)))(logits)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert MASK_VALUE < -1e6


def _masked_obs(key, cfg: EnvConfig, n: int):
    """``n`` observations with random features and random masks (idle always valid)."""
    k1, k2 = jax.random.split(key)
    agents = jax.random.normal(k1, (n, cfg.num_aps, cfg.obs_dim))
    mask = jax.random.bernoulli(k2, 0.4, (n, cfg.num_aps, cfg.num_actions))
    mask = mask.at[..., cfg.idle_action].set(True)
    return env.Observation(agents=agents, global_state=agents.reshape(n, -1), action_mask=mask)


def test_policies_never_choose_masked_actions(dqn_trainer, sac_trainer):
    obs = _masked_obs(jax.random.key(6), TINY, 400)
    keys = jax.random.split(jax.random.key(7), 400)
    dqn_ts = dqn_trainer.init(jax.random.key(8))
    sac_ts = sac_trainer.init(jax.random.key(9))
    # Make the candidate actions (the ones that get masked) by far the most attractive, so that
    # masking is what keeps the masked ones out.
    def favour(params, name):
        def bump(path, x):
            last = path[-2].key == "Dense_2" and path[-1].key == "bias"
            return x.at[..., : TINY.num_candidates].add(100.0) if last else x
        return dict(params, **{name: jax.tree_util.tree_map_with_path(bump, params[name])})

    dqn_p, sac_p = favour(dqn_ts.params, "q"), favour(sac_ts.params, "actor")
    policies = [dqn_trainer.policy(dqn_p, greedy=True),
                dqn_trainer.policy(dqn_p, greedy=False, epsilon=0.5),
                sac_trainer.policy(sac_p, greedy=True),
                sac_trainer.policy(sac_p, greedy=False)]
    @jax.jit
    def act_all(keys, obs):
        return [jax.vmap(lambda k, o: pol(k, o, None, None))(keys, obs) for pol in policies]

    for acts in act_all(keys, obs):
        assert acts.shape == (400, TINY.num_aps) and acts.dtype == jnp.int32
        assert bool(jnp.all(jnp.take_along_axis(obs.action_mask, acts[..., None], -1)))


# ------------------------------------------------------------------------------------------
# Transition stream
# ------------------------------------------------------------------------------------------

def test_transition_stream_shapes_order_and_boundaries(dqn_first_chunk):
    ts0, ts1, metrics, trs = dqn_first_chunk
    n = NUM_ENVS * STEPS
    i, d, a, k = TINY.num_aps, TINY.obs_dim, TINY.num_actions, TINY.num_ues
    assert trs.obs.shape == (n, i, d) and trs.next_obs.shape == (n, i, d)
    assert trs.state.shape == (n, i * d) and trs.action_mask.shape == (n, i, a)
    assert trs.actions.shape == (n, i) and trs.reward.shape == (n,)
    assert trs.rates_mbps.shape == (n, k) and trs.episode.shape == (n,)
    assert int(ts1.env_steps) == n and int(metrics["env_steps"]) == n
    assert bool(jnp.all(jnp.take_along_axis(trs.action_mask, trs.actions[..., None], -1)))

    # Step-major order: row s * E + e is step s of environment e.
    t = np.asarray(trs.t).reshape(STEPS, NUM_ENVS)
    ep = np.asarray(trs.episode).reshape(STEPS, NUM_ENVS)
    trunc = np.asarray(trs.truncated).reshape(STEPS, NUM_ENVS)
    h = TINY.horizon
    np.testing.assert_array_equal(t, np.tile((np.arange(STEPS) % h)[:, None], (1, NUM_ENVS)))
    expected_ep = np.arange(NUM_ENVS)[None, :] + NUM_ENVS * (np.arange(STEPS) // h)[:, None]
    np.testing.assert_array_equal(ep, expected_ep)  # unique per (env, episode)
    np.testing.assert_array_equal(trunc, t == h - 1)
    assert not bool(jnp.any(trs.terminated))

    obs = np.asarray(trs.obs).reshape(STEPS, NUM_ENVS, i, d)
    nxt = np.asarray(trs.next_obs).reshape(STEPS, NUM_ENVS, i, d)
    # Within an episode next_obs is the following step's obs; across the boundary it is not
    # (the next step's obs is the new episode's first observation).
    np.testing.assert_array_equal(nxt[: h - 1], obs[1:h])
    assert not np.allclose(nxt[h - 1], obs[h])
    np.testing.assert_array_equal(np.asarray(trs.state).reshape(STEPS, NUM_ENVS, -1),
                                  obs.reshape(STEPS, NUM_ENVS, -1))


def test_truncated_next_obs_is_the_final_observation(tiny_params):
    """At the last slot of an episode, next_obs is what env.step returned, not the reset obs."""
    h = 3
    cfg = TINY.replace(horizon=h)
    runner = jax.jit(vec_env.runner_init, static_argnums=(1, 3))(jax.random.key(0), 2,
                                                                tiny_params, cfg)
    run_step = jax.jit(vec_env.runner_step, static_argnums=(4,))
    step = jax.jit(env.step, static_argnums=(4,))
    acts = jnp.full((2, cfg.num_aps), cfg.idle_action, jnp.int32)
    for s in range(h - 1):
        runner, _, _, _ = run_step(jax.random.key(10 + s), runner, acts, tiny_params, cfg)
    before = runner
    key = jax.random.key(99)
    runner, tr, ended, done = run_step(key, before, acts, tiny_params, cfg)
    assert bool(jnp.all(done)) and bool(jnp.all(tr.truncated))
    np.testing.assert_array_equal(tr.t, [h - 1, h - 1])
    np.testing.assert_array_equal(runner.episode, [2, 3])
    np.testing.assert_array_equal(runner.t, [0, 0])
    for e, k_env in enumerate(jax.random.split(key, 2)):
        k_step, _ = jax.random.split(k_env)
        state_e = jax.tree.map(lambda x: x[e], before.state)
        obs_final, *_ = step(k_step, state_e, acts[e], tiny_params, cfg)
        np.testing.assert_allclose(tr.next_obs[e], obs_final.agents, rtol=1e-6)
        assert not np.allclose(tr.next_obs[e], runner.obs.agents[e])  # the reset obs
    np.testing.assert_allclose(ended, tr.reward + before.ep_return, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Learning on a tiny configuration
# ------------------------------------------------------------------------------------------

def _score(trainer, params, keys):
    rates, ret = trainer.evaluate(keys, params)
    m = evaluate.seed_metrics(rates, trainer.env_params.score_mu)
    return float(np.mean(m["score"])), float(np.mean(ret))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dqn", "sac"])
def test_learners_improve_on_tiny_config(algo, request, tiny_params):
    trainer = request.getfixturevalue(f"{algo}_trainer")
    keys = evaluate.seed_keys(123, 2)
    ts = trainer.init(jax.random.key(1))
    score0, ret0 = _score(trainer, ts.params, keys)
    for _ in range(24):  # 24 * 200 = 4800 transitions, ~880 updates
        ts, metrics, _ = trainer.train_chunk(ts)
    assert all(np.isfinite(float(v)) for k, v in metrics.items() if k != "episode_return")
    score1, ret1 = _score(trainer, ts.params, keys)
    rnd_rates, rnd_ret = evaluate.rollout_seeds(keys, baselines.make("random", TINY),
                                                tiny_params, TINY, 64)
    rnd_score = float(np.mean(evaluate.seed_metrics(rnd_rates, tiny_params.score_mu)["score"]))
    rnd_ret = float(np.mean(rnd_ret))
    msg = (f"{algo}: score {score0:.1f} -> {score1:.1f} (random {rnd_score:.1f}); "
           f"return {ret0:.2f} -> {ret1:.2f} (random {rnd_ret:.2f})")
    print(msg)
    assert ret1 > ret0 + 1.0, msg
    assert ret1 > rnd_ret + 2.0, msg
    assert score1 > rnd_score, msg


# ------------------------------------------------------------------------------------------
# The gradient step every learner uses
# ------------------------------------------------------------------------------------------

def test_gradient_step_by_hand():
    import optax

    # loss = sum (w * x)^2 with x = 3: dL/dw = 18 w; SGD lr 0.01: w <- w - 0.18 w = 0.82 w.
    params = {"w": jnp.array([1.0, -2.0])}
    tx = optax.sgd(0.01)

    def loss(p, x):
        return jnp.sum((p["w"] * x) ** 2), {"x": x}

    new, opt_state, val, aux, grads = optim.gradient_step(loss, params, tx.init(params), tx, 3.0)
    np.testing.assert_allclose(val, 9.0 + 36.0)
    np.testing.assert_allclose(grads["w"], [18.0, -36.0])
    np.testing.assert_allclose(new["w"], [0.82, -1.64], rtol=1e-6)
    assert float(aux["x"]) == 3.0
    # without aux; Adam's state advances (count 1)
    tx = optax.adam(0.1)
    new, st, val, aux, _ = optim.gradient_step(lambda p: jnp.sum(p["w"]), params,
                                                tx.init(params), tx, has_aux=False)
    assert aux is None and float(val) == -1.0
    np.testing.assert_allclose(new["w"], [0.9, -2.1], rtol=1e-5)  # Adam's first step: lr * sign
    assert int(st[0].count) == 1
