"""The gymnax-style object API (jaxrrm.rrm_env.RRMEnv) against the pure functions, and outside
policies on the evaluation's episodes (episode_keys, evaluate_outside)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, env, evaluate
from jaxrrm.rrm_env import Box, Discrete, RRMEnv, episode_keys, evaluate_outside

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=5)


def _same(a, b):
    """Equal pytrees: integers and masks exactly, floats to float32 rounding (jit and eager
    fuse differently)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)


def test_reset_and_step_equal_the_pure_functions():
    rrm = RRMEnv(CFG)
    params = rrm.default_params
    assert params == EnvParams.create(CFG)
    key = jax.random.key(0)
    obs, state = rrm.reset(key, params)
    _same((obs, state), env.reset(key, params, CFG))
    actions = jnp.array([1, 0], jnp.int32)
    k = jax.random.key(1)
    o, s, r, done, info = jax.jit(rrm.step)(k, state, actions, params)
    o2, s2, r2, term, trunc, info2 = env.step_auto_reset(k, state, actions, params, CFG)
    _same((o, s, r), (o2, s2, r2))
    assert bool(done) == bool(term | trunc) and not bool(done)
    _same(info["final_observation"], info2["final_obs"])
    np.testing.assert_allclose(info["rates_mbps"], info2["rates_mbps"], rtol=1e-5)


def test_auto_reset_at_the_horizon_keeps_the_final_observation():
    rrm = RRMEnv(CFG)
    params = rrm.default_params
    obs, state = rrm.reset(jax.random.key(0), params)
    step = jax.jit(rrm.step)
    for t in range(CFG.horizon):
        k = jax.random.key(10 + t)
        obs, state, reward, done, info = step(k, state, jnp.array([0, 0]), params)
        assert bool(done) == (t == CFG.horizon - 1)
        assert bool(info["truncated"]) == (t == CFG.horizon - 1) and not info["terminated"]
    assert int(state.time) == 0                       # a new episode
    k_step, k_reset = jax.random.split(k)
    _same(obs, env.reset(k_reset, params, CFG)[0])    # its first observation
    assert not np.array_equal(np.asarray(info["final_observation"].agents),
                              np.asarray(obs.agents))


def test_vmap_over_episodes_and_params():
    rrm = RRMEnv(CFG)
    keys = jax.random.split(jax.random.key(2), 3)
    obs, state = jax.vmap(rrm.reset, in_axes=(0, None))(keys, rrm.default_params)
    assert obs.agents.shape == (3, CFG.num_aps, CFG.obs_dim)
    batch = rrm.default_params.replace(pf_lambda=jnp.array([0.2, 0.5, 0.9]))
    axes = EnvParams.in_axes("pf_lambda")
    out = jax.vmap(rrm.step, in_axes=(0, 0, None, axes))(keys, state, jnp.array([0, 1]), batch)
    assert out[2].shape == (3,)
    assert len({float(x) for x in out[2]}) == 3        # the exponent changed the reward


def test_spaces():
    rrm = RRMEnv(CFG.replace(obs_clock=True))
    a = rrm.action_space()
    assert isinstance(a, Discrete) and a.n == 3 and a.shape == (2,)
    x = a.sample(jax.random.key(0))
    assert x.shape == (2,) and x.dtype == jnp.int32 and bool(a.contains(x))
    assert not bool(a.contains(jnp.array([0, 3])))
    o = rrm.observation_space()
    assert isinstance(o, Box) and o.shape == (rrm.cfg.obs_dim,) == (4 + 2,)
    obs, _ = rrm.reset(jax.random.key(0))
    assert bool(o.contains(obs.agents[0])) and rrm.state_space().shape == (rrm.cfg.state_dim,)
    assert RRMEnv(CFG) == RRMEnv(CFG) and hash(RRMEnv(CFG)) == hash(RRMEnv(CFG))
    with pytest.raises(TypeError):
        RRMEnv({"num_aps": 2})


def test_episode_keys_reproduce_rollout():
    params = EnvParams.create(CFG)
    key = jax.random.key(7)
    ks = episode_keys(key, 3, CFG.horizon)
    res = env.rollout(key, baselines.make("random", CFG), params, CFG, 3)
    pol = baselines.make("random", CFG)
    for e in range(3):
        obs, state = env.reset(ks.reset[e], params, CFG)
        rate = jnp.zeros((CFG.num_ues,))
        for t in range(CFG.horizon):
            a = pol(ks.policy[e, t], obs, state, params)
            obs, state, _, _, _, info = env.step(ks.step[e, t], state, a, params, CFG)
            rate = rate + info["rates_mbps"]
        np.testing.assert_allclose(rate / CFG.horizon, res.ue_rates_mbps[e], rtol=1e-5)


@pytest.mark.parametrize("name", ["full_reuse", "reward_greedy"])
def test_outside_policy_reproduces_evaluate(name):
    """A Python-stepped policy (here a baseline rewritten in NumPy-facing form) gets the per-UE
    rates of evaluate.rollout_seeds on the same test keys."""
    params = EnvParams.create(CFG)
    test_keys = evaluate.seed_keys(3, 2)
    pol = baselines.make(name, CFG)
    batched = jax.jit(jax.vmap(lambda o: pol(None, o, None, params)))

    def act(obs, t):
        o = env.Observation(agents=jnp.asarray(obs["agents"]),
                            global_state=jnp.asarray(obs["global_state"]),
                            action_mask=jnp.asarray(obs["action_mask"]))
        return np.asarray(batched(o))

    out = evaluate_outside(act, test_keys, params, CFG, 4)
    rates, ret = evaluate.rollout_seeds(test_keys, pol, params, CFG, 4)
    np.testing.assert_allclose(out["ue_rates"], np.asarray(rates), rtol=1e-5, atol=1e-6)
    ref = evaluate.seed_metrics(rates, params.score_mu)
    np.testing.assert_allclose(out["score"], ref["score"], rtol=1e-5)
    np.testing.assert_allclose(out["return"], np.asarray(ret), rtol=1e-5)


def test_outside_policy_bad_actions_refused():
    params = EnvParams.create(CFG)
    with pytest.raises(ValueError, match="outside policy returned actions of shape"):
        evaluate_outside(lambda o, t: np.zeros((3, 2), np.int64), evaluate.seed_keys(0, 1),
                         params, CFG, 2)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        evaluate_outside(lambda o, t: np.full((2, 2), 5), evaluate.seed_keys(0, 1), params,
                         CFG, 2)


def test_readme_snippets_run():
    """The README's "gymnax-style code and outside policies" snippets, run as written (the
    d3rlpy one needs d3rlpy and a dataset on disk: skipped)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### gymnax-style code and outside policies", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    ns = {}
    for code in blocks:
        if "import d3rlpy" in code:
            continue
        exec(compile(code, "README.md", "exec"), ns)
    assert ns["out"]["score"].shape == (4,)
    assert np.all(np.isfinite(ns["out"]["score"]))


def test_outside_evaluation_compiles_once_per_config():
    """A second evaluation, with other parameter values, reuses the compiled batch reset and
    step (the parameters are traced, the config static)."""
    from jaxrrm import rrm_env

    keys = evaluate.seed_keys(0, 1)
    act = lambda o, t: np.zeros(o["action_mask"].shape[:2], np.int64)  # noqa: E731
    evaluate_outside(act, keys, EnvParams.create(CFG), CFG, 2)
    sizes = rrm_env._reset_batch._cache_size(), rrm_env._step_batch._cache_size()
    evaluate_outside(act, keys, EnvParams.create(CFG, pf_lambda=0.3), CFG, 2)
    assert (rrm_env._reset_batch._cache_size(), rrm_env._step_batch._cache_size()) == sizes


def test_default_params_built_once():
    rrm = RRMEnv(CFG)
    assert rrm.default_params is rrm.default_params
