"""The JaxMARL adapter (jaxrrm.integrations.jaxmarl): equality with the pure functions, JaxMARL's
conventions (dicts, auto-reset, LogWrapper, spaces, avail actions, world state), the README
snippet, and that its IPPO learns. Every test needs JaxMARL (an optional dependency)."""

from __future__ import annotations

import importlib
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jaxmarl")

from jaxmarl.environments import spaces  # noqa: E402
from jaxmarl.environments.multi_agent_env import MultiAgentEnv  # noqa: E402
from jaxmarl.wrappers.baselines import LogWrapper  # noqa: E402

from jaxrrm import EnvConfig, EnvParams, baselines, evaluate  # noqa: E402
from jaxrrm import env as env_lib  # noqa: E402
from jaxrrm.integrations import jaxmarl as jm  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The tiny scenario of these tests (horizon 5: episodes end within a short scan).
CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=5)
ENV = jm.RRMJaxMARLEnv(CFG)
#: Fewer UEs than candidates at some AP (masked candidates), and no idle action.
SPARSE_CFG = EnvConfig(num_aps=3, num_ues=4, num_candidates=3, horizon=4, allow_idle=False)

#: The pure functions with the adapter's parameters closed over, as the adapter holds them
#: (compile-time constants): the same numbers bit for bit. With the parameters traced
#: arguments instead, XLA folds them differently and the results agree to float32 rounding.
reset_ref = jax.jit(lambda key, params, cfg: env_lib.reset(key, ENV.params, CFG),
                    static_argnums=(1, 2))
step_ref = jax.jit(lambda key, state, a, params, cfg: env_lib.step(key, state, a, ENV.params,
                                                                   CFG), static_argnums=(3, 4))
reset_traced = jax.jit(env_lib.reset, static_argnums=(2,))
step_traced = jax.jit(env_lib.step, static_argnums=(4,))


def assert_tree_equal(a, b, rtol=None):
    """Equal pytrees: bit for bit, or (float leaves) to ``rtol`` of each leaf's largest
    magnitude if given."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if rtol is None or not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            y = np.asarray(y)
            np.testing.assert_allclose(np.asarray(x), y, rtol=rtol,
                                       atol=rtol * float(np.max(np.abs(y), initial=0.0)))


def random_valid_actions(key, env, state):
    """A uniformly random available action per agent (``get_avail_actions``)."""
    avail = env.get_avail_actions(state)
    keys = jax.random.split(key, env.num_agents)
    return {a: jax.random.categorical(k, jnp.where(avail[a], 0.0, -jnp.inf)).astype(jnp.int32)
            for a, k in zip(env.agents, keys)}


def test_import_error_names_the_install_line(monkeypatch):
    """Without JaxMARL the adapter's import fails with the install line; nothing else in jaxrrm
    imports JaxMARL."""
    for name in [n for n in sys.modules if n == "jaxmarl" or n.startswith("jaxmarl.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "jaxrrm.integrations.jaxmarl")
    with pytest.raises(ImportError, match=re.escape("pip install 'jaxrrm[jaxmarl]'")):
        importlib.import_module("jaxrrm.integrations.jaxmarl")
    pattern = re.compile(r"^\s*(import jaxmarl|from jaxmarl)", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "jaxrrm").rglob("*.py")
                 if p != ROOT / "jaxrrm" / "integrations" / "jaxmarl.py"
                 and pattern.search(p.read_text())]
    assert offenders == []


def test_interface_and_spaces():
    assert isinstance(ENV, MultiAgentEnv)
    assert ENV.agents == ["ap_0", "ap_1"] and ENV.num_agents == 2
    assert ENV.agent_classes == {"ap": ["ap_0", "ap_1"]}
    assert ENV.params == EnvParams.create(CFG)
    hash(ENV.cfg)
    obs, state = ENV.reset(jax.random.key(0))
    assert set(obs) == {"ap_0", "ap_1", "world_state"}
    for i, a in enumerate(ENV.agents):
        obs_space, act_space = ENV.observation_space(a), ENV.action_space(a)
        assert isinstance(obs_space, spaces.Box) and obs_space.shape == (CFG.obs_dim,)
        assert isinstance(act_space, spaces.Discrete) and act_space.n == CFG.num_actions
        assert obs[a].shape == (CFG.obs_dim,) and obs[a].dtype == jnp.float32
        assert bool(obs_space.contains(obs[a]))
        samples = jax.vmap(act_space.sample)(jax.random.split(jax.random.key(i), 200))
        assert samples.dtype == jnp.int32
        assert set(np.unique(np.asarray(samples))) == set(range(CFG.num_actions))
        assert bool(jnp.all(jax.vmap(act_space.contains)(samples)))
        assert bool(obs_space.contains(obs_space.sample(jax.random.key(i))))
    assert ENV.world_state_space().shape == (ENV.state_size,) == (CFG.state_dim,)
    assert bool(ENV.world_state_space().contains(obs["world_state"]))
    with pytest.raises(TypeError):
        jm.RRMJaxMARLEnv(params=CFG)
    with pytest.raises(ValueError, match="tx_power_dbm"):
        jm.RRMJaxMARLEnv(CFG, EnvParams.create(CFG).replace(tx_power_dbm=jnp.zeros(3)))


def test_reset_and_step_equal_the_pure_functions():
    """Same key, same numbers: reset, step_env and the base class's step (whose step_env gets
    the first half of ``split(key)``) against jaxrrm.env.reset / step."""
    obs, state = ENV.reset(jax.random.key(3))
    obs_ref, state_ref = reset_ref(jax.random.key(3), ENV.params, CFG)
    assert_tree_equal(state, state_ref)
    assert_tree_equal(obs, ENV.obs_to_dict(obs_ref))
    obs_tr, state_tr = reset_traced(jax.random.key(3), ENV.params, CFG)
    assert_tree_equal((obs, state), (ENV.obs_to_dict(obs_tr), state_tr), rtol=1e-5)
    step_env = jax.jit(ENV.step_env)
    for t in range(3):
        acts = random_valid_actions(jax.random.key(100 + t), ENV, state)
        a_vec = jnp.stack([acts[a] for a in ENV.agents])
        key = jax.random.key(10 + t)
        o1, s1, r1, d1, i1 = step_env(key, state, acts)
        ro, rs, rr, rterm, rtrunc, rinfo = step_ref(key, state, a_vec, ENV.params, CFG)
        assert_tree_equal(s1, rs)
        assert_tree_equal(o1, ENV.obs_to_dict(ro))
        tr = step_traced(key, state, a_vec, ENV.params, CFG)
        assert_tree_equal((o1, s1, r1["ap_0"]), (ENV.obs_to_dict(tr[0]), tr[1], tr[2]), rtol=1e-5)
        for a in ENV.agents:
            np.testing.assert_array_equal(r1[a], rr)
            assert bool(d1[a]) == bool(rterm | rtrunc) == bool(d1["__all__"]) is False
        np.testing.assert_array_equal(i1["serving"], rinfo["serving"])
        np.testing.assert_array_equal(i1["masked"], rinfo["masked"])
        # the rates the APs delivered are all the slot's rates (a UE has one serving AP)
        np.testing.assert_allclose(jnp.sum(i1["served_rate_mbps"]), jnp.sum(rinfo["rates_mbps"]),
                                   rtol=1e-6)
        o2, s2, r2, d2, _ = ENV.step(jax.random.key(20 + t), state, acts)
        ro2, rs2, rr2, _, _, _ = step_ref(jax.random.split(jax.random.key(20 + t))[0], state,
                                          a_vec, ENV.params, CFG)
        assert_tree_equal((o2, s2), (ENV.obs_to_dict(ro2), rs2))
        np.testing.assert_array_equal(r2["ap_1"], rr2)
        state = s1


def test_dones_at_the_horizon_and_auto_reset():
    obs, state = ENV.reset(jax.random.key(4))
    step = ENV.step
    for t in range(CFG.horizon):
        key = jax.random.key(200 + t)
        acts = random_valid_actions(jax.random.key(300 + t), ENV, state)
        obs, new, rew, dones, infos = step(key, state, acts)
        last = t == CFG.horizon - 1
        assert set(dones) == {"ap_0", "ap_1", "__all__"}
        assert all(bool(d) == last for d in dones.values())
        np.testing.assert_array_equal(infos["truncated"], [last, last])
        if not last:
            assert int(new.time) == t + 1
        state = new
    # the last step returned the reset of the second half of its key
    obs_r, state_r = reset_ref(jax.random.split(key)[1], ENV.params, CFG)
    assert int(state.time) == 0
    assert_tree_equal((obs, state), (ENV.obs_to_dict(obs_r), state_r))


def test_jit_and_vmap():
    keys = jax.random.split(jax.random.key(5), 4)
    obs, state = jax.vmap(ENV.reset)(keys)
    assert obs["ap_0"].shape == (4, CFG.obs_dim) and state.fading.shape == (4, 2, 2, 6)
    acts = {a: jnp.array([0, 1, 2, 0], jnp.int32) for a in ENV.agents}
    o, s, r, d, i = jax.jit(jax.vmap(ENV.step))(keys, state, acts)
    assert r["ap_0"].shape == d["__all__"].shape == (4,) and i["serving"].shape == (4, 2)
    for e in range(4):
        pick = lambda x, e=e: x[e]  # noqa: E731
        ref = ENV.step(keys[e], jax.tree.map(pick, state), {a: acts[a][e] for a in ENV.agents})
        assert_tree_equal(jax.tree.map(pick, (o, s, r)), ref[:3], rtol=1e-5)


def test_avail_actions_equal_the_mask_and_world_state():
    """On a scenario with missing candidates and no idle action; and the world state (with the
    slot clock on, so that it is more than the agents' observations)."""
    env = jm.RRMJaxMARLEnv(SPARSE_CFG.replace(obs_clock=True))
    params, cfg = env.params, env.cfg
    obs, state = env.reset(jax.random.key(6))
    seen_masked = False
    for t in range(cfg.horizon - 1):
        ref_obs, _ = env_lib.observe(state, params, cfg)
        avail = env.get_avail_actions(state)
        for i, a in enumerate(env.agents):
            assert avail[a].dtype == jnp.bool_ and avail[a].shape == (cfg.num_actions,)
            np.testing.assert_array_equal(avail[a], ref_obs.action_mask[i])
        seen_masked |= not bool(jnp.all(ref_obs.action_mask))
        np.testing.assert_array_equal(obs["world_state"], ref_obs.global_state)
        np.testing.assert_array_equal(env.get_world_state(state), ref_obs.global_state)
        assert obs["world_state"].shape == (env.state_size,) == (cfg.state_dim,)
        assert_tree_equal(env.get_obs(state), obs)
        # Discrete.sample ignores the mask: an unavailable action is executed as silence and
        # flagged in infos["masked"]
        acts = {a: env.action_space(a).sample(k) for a, k in
                zip(env.agents, jax.random.split(jax.random.key(400 + t), env.num_agents))}
        obs, state, _, _, infos = env.step(jax.random.key(500 + t), state, acts)
        for i, a in enumerate(env.agents):
            has_valid = bool(jnp.any(avail[a]))
            assert bool(infos["masked"][i]) == (has_valid and not bool(avail[a][acts[a]]))
            assert (int(infos["serving"][i]) < 0) == (not bool(avail[a][acts[a]]))
    assert seen_masked
    # with the paper's local observation, concatenating the agents' observations (the default
    # global state of JaxMARL's CTRolloutManager) is the world state
    obs, _ = ENV.reset(jax.random.key(7))
    np.testing.assert_array_equal(jnp.concatenate([obs[a] for a in ENV.agents]),
                                  obs["world_state"])


def test_log_wrapper_logs_episode_returns():
    wrapped = LogWrapper(ENV)
    num_steps = 2 * CFG.horizon

    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs, state = wrapped.reset(k_reset)

        def body(state, key):
            k_act, k_step = jax.random.split(key)
            acts = random_valid_actions(k_act, ENV, state.env_state)
            obs, state, rew, done, info = wrapped.step(k_step, state, acts)
            return state, (rew["ap_0"], done["__all__"], info["returned_episode"],
                           info["returned_episode_returns"], info["returned_episode_lengths"])

        return jax.lax.scan(body, state, jax.random.split(k_run, num_steps))[1]

    rew, done, ended, returns, lengths = jax.jit(jax.vmap(run))(
        jax.random.split(jax.random.key(8), 3))
    ends = np.arange(num_steps) % CFG.horizon == CFG.horizon - 1
    np.testing.assert_array_equal(np.asarray(done), np.broadcast_to(ends, (3, num_steps)))
    np.testing.assert_array_equal(np.asarray(ended)[..., 0], np.asarray(done))
    for k, t in enumerate(np.flatnonzero(ends)):
        episode = np.asarray(rew[:, k * CFG.horizon:(k + 1) * CFG.horizon]).sum(-1)
        np.testing.assert_allclose(np.asarray(returns[:, t]),
                                   np.repeat(episode[:, None], 2, 1), rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(lengths[:, t]), CFG.horizon)
    assert float(jnp.min(rew)) >= 0.0 and float(jnp.max(rew)) > 0.0  # 0: every AP idle


def test_ct_rollout_manager_with_the_documented_overrides():
    """JaxMARL's Q-learning CTRolloutManager over the adapter, with the three overrides the
    module docstring gives (its SMAX settings): world state, team reward, available actions."""
    from jaxmarl.wrappers.baselines import CTRolloutManager

    wrapped = CTRolloutManager(ENV, batch_size=2)
    wrapped.global_state = lambda obs, state: obs["world_state"]
    wrapped.global_reward = lambda rewards: rewards[ENV.agents[0]]
    wrapped.get_valid_actions = lambda state: jax.vmap(ENV.get_avail_actions)(state)
    obs, state = wrapped.batch_reset(jax.random.key(9))
    np.testing.assert_array_equal(obs["__all__"], jax.vmap(ENV.get_world_state)(state))
    assert obs["ap_0"].shape == (2, CFG.obs_dim + ENV.num_agents)  # + the agent one-hot
    valid = wrapped.get_valid_actions(state)
    assert valid["ap_1"].shape == (2, CFG.num_actions) and valid["ap_1"].dtype == jnp.bool_
    acts = {a: jnp.argmax(valid[a], axis=-1) for a in ENV.agents}
    obs, state, rew, done, _ = wrapped.batch_step(jax.random.key(10), state, acts)
    np.testing.assert_array_equal(rew["__all__"], rew["ap_0"])
    np.testing.assert_array_equal(obs["__all__"], jax.vmap(ENV.get_world_state)(state))


#: The README's snippet ("Using jaxrrm with JaxMARL"); test_readme_snippet runs it.
README_SNIPPET = '''\
import jax
import jax.numpy as jnp
from jaxmarl.wrappers.baselines import LogWrapper

from jaxrrm import EnvConfig
from jaxrrm.integrations.jaxmarl import RRMJaxMARLEnv

env = RRMJaxMARLEnv(EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20))
wrapped = LogWrapper(env)  # JaxMARL's episode-return logger, as its IPPO uses it

def random_valid(key, state):
    """A uniformly random available action per AP."""
    avail = env.get_avail_actions(state)  # {"ap_i": [A] bool}
    keys = jax.random.split(key, env.num_agents)
    return {a: jax.random.categorical(k, jnp.where(avail[a], 0.0, -jnp.inf))
            for a, k in zip(env.agents, keys)}

def run(key, num_steps=40):  # two episodes of 20 slots (auto-reset)
    obs, state = wrapped.reset(key)  # obs: {"ap_0": [4], "ap_1": [4], "world_state": [8]}
    def body(state, key):
        k_act, k_step = jax.random.split(key)
        obs, state, rewards, dones, info = wrapped.step(
            k_step, state, random_valid(k_act, state.env_state))
        return state, (dones["__all__"], info["returned_episode_returns"][0])
    return jax.lax.scan(body, state, jax.random.split(key, num_steps))[1]

dones, returns = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 8))  # 8 envs
print(env.agents, env.observation_space("ap_0").shape, env.action_space("ap_0").n)
print("episode returns:", returns[:, dones[0]])  # [8 envs, 2 episodes]
'''


def test_readme_snippet():
    namespace = {"__name__": "readme_snippet"}
    exec(compile(README_SNIPPET, "README_SNIPPET", "exec"), namespace)
    returns, dones = namespace["returns"], namespace["dones"]
    assert returns[:, dones[0]].shape == (8, 2)
    assert bool(jnp.all(returns[:, dones[0]] > 0))
    readme = (ROOT / "README.md").read_text()
    if "Using jaxrrm with JaxMARL" in readme:  # once merged, the README shows this very text
        section = readme.split("Using jaxrrm with JaxMARL", 1)[1]
        block = re.search(r"```python\n(.*?)```", section, re.S)
        assert block is not None and block.group(1) == README_SNIPPET


#: The IPPO of the slow test: ~50k slots of the tiny scenario, seconds of CPU.
IPPO_TEST_CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
IPPO_TEST_CONFIG = {"NUM_ENVS": 16, "NUM_STEPS": 64, "TOTAL_TIMESTEPS": 50_000, "LR": 2.5e-3}


@pytest.mark.slow
def test_ippo_learns_to_beat_random():
    env = jm.RRMJaxMARLEnv(IPPO_TEST_CFG)
    train = jm.make_ippo_train(IPPO_TEST_CONFIG, env)
    out = jax.jit(train)(jax.random.key(0))
    metrics = {k: np.asarray(v) for k, v in out["metrics"].items()}
    num_updates = train.config["NUM_UPDATES"]
    assert num_updates == 48 and metrics["episode_return"].shape == (num_updates,)
    assert all(np.isfinite(v).all() for k, v in metrics.items() if k != "episode_return")
    early, late = metrics["episode_return"][:4], metrics["episode_return"][-8:]
    assert np.nanmean(late) > np.nanmean(early)

    net_params = out["runner_state"][0].params
    keys = evaluate.seed_keys(1, 2)  # 2 seeds x 32 episodes, the same for every policy
    results = {}
    for name, policy in {"greedy": jm.ippo_policy(net_params, env, IPPO_TEST_CONFIG),
                         "sampled": jm.ippo_policy(net_params, env, IPPO_TEST_CONFIG, False),
                         "random": baselines.make("random", IPPO_TEST_CFG)}.items():
        rates, ret = evaluate.rollout_seeds(keys, policy, env.params, IPPO_TEST_CFG, 32)
        results[name] = (evaluate.seed_metrics(rates, env.params.score_mu)["score"],
                         np.asarray(ret))
    for name in ("greedy", "sampled"):
        assert np.all(results[name][0] > results["random"][0]), results  # per seed
        assert np.all(results[name][1] > results["random"][1]), results
