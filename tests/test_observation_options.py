"""The observation options of EnvConfig (obs_interference, obs_clock, obs_share) and the
reward-greedy baseline: shapes, values by hand on a two-AP case, and what they let an AP compute."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, data, env, radio
from jaxrrm.algos.netconfig import NetConfig
from jaxrrm.units import dbm_to_w

L10 = math.log10


def _hand_state(cfg: EnvConfig, params: EnvParams, time: int = 3):
    """Two APs, three UEs (0, 1 at AP 0; 2 at AP 1), |h|^2 = 1, gains in units of N0 B / P.

    With ``c[i, j] = P g[i, j] / N0 B`` (the received SNR/INR):
      c = [[100, 10, 1], [10, 1, 1000]];  PF averages 1, 2, 4 Mbit/s -> weights 1, 0.5, 0.25.
    AP 0's candidates (N = 2): UE 0 (w = 1), UE 1 (w = 0.5); AP 1's: UE 2, and none.
    All-active SINR estimates: UE 0 100 / (1 + 10) = 9.0909, UE 1 10 / (1 + 1) = 5,
    UE 2 1000 / (1 + 1) = 500.
    """
    _, st = env.reset(jax.random.key(0), params, cfg)
    unit = float(env.noise_w(params)) / float(dbm_to_w(params.tx_power_dbm))
    c = np.array([[100.0, 10.0, 1.0], [10.0, 1.0, 1000.0]])
    fading = np.zeros((2, 2, 3), np.float32)
    fading[0] = 1.0
    return st.replace(time=jnp.int32(time), large_gain=jnp.asarray(c * unit, jnp.float32),
                      fading=jnp.asarray(fading), association=jnp.array([0, 0, 1], jnp.int32),
                      avg_rate_mbps=jnp.array([1.0, 2.0, 4.0], jnp.float32))


BASE = EnvConfig(num_aps=2, num_ues=3, num_candidates=2, horizon=10)
# own features by hand (see _hand_state)
LOCAL0 = [L10(100 / 11), L10(1.0), L10(5.0), L10(0.5)]
LOCAL1 = [L10(500.0), L10(0.25), 0.0, 0.0]
INR0 = [L10(10.0), L10(1.0)]       # INR of AP 1 at UE 0 and UE 1
INR1 = [L10(1.0), 0.0]             # INR of AP 0 at UE 2; the missing candidate is zero
CLOCK_T3 = [0.0, 1.0]              # 3 mod 2 = 1


@pytest.mark.parametrize("kw,row0,row1,state", [
    ({}, LOCAL0, LOCAL1, LOCAL0 + LOCAL1),
    (dict(obs_interference=True), LOCAL0 + INR0, LOCAL1 + INR1, LOCAL0 + INR0 + LOCAL1 + INR1),
    (dict(obs_clock=True), LOCAL0 + CLOCK_T3, LOCAL1 + CLOCK_T3, LOCAL0 + LOCAL1 + CLOCK_T3),
    (dict(obs_share="global"), LOCAL0 + LOCAL1, LOCAL1 + LOCAL0, LOCAL0 + LOCAL1),
    (dict(obs_interference=True, obs_clock=True, obs_share="global"),
     LOCAL0 + INR0 + CLOCK_T3 + LOCAL1 + INR1, LOCAL1 + INR1 + CLOCK_T3 + LOCAL0 + INR0,
     LOCAL0 + INR0 + LOCAL1 + INR1 + CLOCK_T3),
], ids=["local", "interference", "clock", "global", "all"])
def test_two_ap_values_by_hand(kw, row0, row1, state):
    cfg = BASE.replace(**kw)
    params = EnvParams.create(cfg)
    obs, cand = env.observe(_hand_state(cfg, params), params, cfg)
    np.testing.assert_array_equal(cand, [[0, 1], [2, -1]])
    assert obs.agents.shape == (2, cfg.obs_dim) and obs.global_state.shape == (cfg.state_dim,)
    np.testing.assert_allclose(obs.agents[0], row0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs.agents[1], row1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs.global_state, state, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(obs.action_mask, [[True, True, True], [True, False, True]])


def test_dims():
    cfg = EnvConfig()  # I = 4, N = 3
    assert (cfg.obs_dim, cfg.state_dim, cfg.local_obs) == (6, 24, True)
    full = cfg.replace(obs_interference=True, obs_clock=True, obs_share="global")
    assert full.own_dim == 6 + 3 * 3 and full.clock_dim == 4
    assert full.obs_dim == 15 + 4 + 3 * 15 and full.state_dim == 4 * 15 + 4
    assert not full.local_obs
    np.testing.assert_array_equal(env.other_aps(4), [[1, 2, 3], [2, 3, 0], [3, 0, 1], [0, 1, 2]])
    with pytest.raises(ValueError, match="obs_share"):
        EnvConfig(obs_share="neighbours")
    with pytest.raises(ValueError, match="obs_clock"):
        EnvConfig(obs_clock=1)
    with pytest.raises(ValueError, match="obs_interference"):
        EnvConfig(obs_interference="yes")


CFG = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20, obs_interference=True,
                obs_clock=True, obs_share="global")


def _states(cfg, n=64, seed=0):
    params = EnvParams.create(cfg)
    keys = jax.random.split(jax.random.key(seed), n)
    obs, st = jax.vmap(lambda k: env.reset(k, params, cfg))(keys)
    return params, obs, st


def test_interference_features_give_the_sinr_of_any_silence_set():
    """From the observation alone, an AP can compute its candidate's SINR when any subset of the
    other APs is silent: SNR = SINR_est (1 + sum INR), SINR_S = SNR / (1 + sum_{k in S} INR)."""
    cfg = CFG
    params, obs, st = _states(cfg)
    n, i_n = cfg.num_candidates, cfg.num_aps
    own = np.asarray(obs.agents[..., : cfg.own_dim], np.float64)
    sinr_est = 10.0 ** own[..., 0:2 * n:2]                            # [E, I, N]
    inr = 10.0 ** own[..., 2 * n:].reshape(-1, i_n, n, i_n - 1)       # [E, I, N, I-1]
    snr = sinr_est * (1.0 + inr.sum(-1))
    others = np.asarray(env.other_aps(i_n))
    rng = np.random.default_rng(0)
    checked = 0
    for e in range(16):
        gain = env.channel_gain(jax.tree.map(lambda x, e=e: x[e], st))
        cand = np.asarray(st.candidates[e])
        for i in range(i_n):
            for c in range(n):
                if cand[i, c] < 0:
                    continue
                active = rng.random(i_n - 1) < 0.5                    # which others transmit
                serving = -np.ones(i_n, np.int32)
                serving[i] = cand[i, c]
                for m, k in enumerate(others[i]):
                    if active[m]:  # an active AP serves any of its UEs: interference is the same
                        other_ue = (int(cand[i, c]) + 1) % cfg.num_ues
                        serving[k] = cand[k, 0] if cand[k, 0] >= 0 else other_ue
                true = np.asarray(radio.sinr(gain, jnp.asarray(serving), env.tx_power_w(params),
                                             env.noise_w(params)))[cand[i, c]]
                pred = snr[e, i, c] / (1.0 + np.sum(inr[e, i, c][active]))
                assert pred == pytest.approx(true, rel=2e-4), (e, i, c)
                checked += 1
    assert checked > 100


def test_clock_and_shared_rows_through_an_episode():
    cfg = CFG
    params = EnvParams.create(cfg)
    res = env.rollout(jax.random.key(3), baselines.make("reward_greedy", cfg), params, cfg, 4,
                      return_trajectory=True)
    obs = res.trajectory["obs"]                                      # [E, T, I, D]
    d, i_n = cfg.own_dim, cfg.num_aps
    t = np.arange(cfg.horizon)
    clock = np.asarray(obs.agents[..., d:d + i_n])
    np.testing.assert_array_equal(clock, np.broadcast_to(
        (t[:, None] % i_n == np.arange(i_n))[None, :, None, :], clock.shape))
    own = np.asarray(obs.agents[..., :d])
    shared = np.asarray(obs.agents[..., d + i_n:]).reshape(*own.shape[:-1], i_n - 1, d)
    for i in range(i_n):
        for m, k in enumerate(np.asarray(env.other_aps(i_n))[i]):
            np.testing.assert_array_equal(shared[:, :, i, m], own[:, :, k])
    np.testing.assert_array_equal(obs.global_state[..., : i_n * d],
                                  own.reshape(*own.shape[:2], -1))


def test_baselines_and_physics_ignore_the_options():
    """The options change what is observed, never the dynamics or the baselines' decisions."""
    base = CFG.replace(obs_interference=False, obs_clock=False, obs_share="local")
    params = EnvParams.create(base)
    for name in ("full_reuse", "reward_greedy", "tdm", "exhaustive"):
        a = env.rollout(jax.random.key(1), baselines.make(name, base), params, base, 3)
        b = env.rollout(jax.random.key(1), baselines.make(name, CFG), params, CFG, 3)
        np.testing.assert_array_equal(a.ue_rates_mbps, b.ue_rates_mbps)


def test_episodes_last_layout_computes_the_options():
    # The options once ran in the vmap layout only; the physics is now written once for both
    # layouts, so the episodes-last rollout (the default from 32 episodes on) must give the
    # vmap layout's trajectory, observations included.
    assert env.resolve_layout(CFG, 64, "auto")[0] == "episodes_last"
    params = EnvParams.create(CFG)
    pol = baselines.make("reward_greedy", CFG)
    out = {lay: jax.device_get(env.rollout_jit(jax.random.key(5), pol, params, CFG, 4,
                                               return_trajectory=True, layout=lay))
           for lay in ("vmap", "episodes_last")}
    a, b = out["vmap"], out["episodes_last"]
    for name in ("agents", "global_state"):
        np.testing.assert_allclose(getattr(b.trajectory["obs"], name),
                                   getattr(a.trajectory["obs"], name), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.trajectory["obs"].action_mask,
                                  a.trajectory["obs"].action_mask)
    np.testing.assert_array_equal(b.trajectory["actions"], a.trajectory["actions"])
    np.testing.assert_allclose(b.ue_rates_mbps, a.ue_rates_mbps, rtol=2e-5, atol=1e-5)


def test_datasets_carry_the_option_shapes():
    params = EnvParams.create(CFG)
    ds = data.collect_policy(jax.random.key(0), baselines.make("reward_greedy", CFG), params, CFG,
                             100)
    assert ds.obs.shape == (100, CFG.num_aps, CFG.obs_dim)
    assert ds.state.shape == (100, CFG.state_dim)
    data.check_shapes(ds, CFG)
    with pytest.raises(ValueError, match="Transitions.obs"):
        data.check_shapes(ds, CFG.replace(obs_clock=False))


# ---------------------------------------------------------------------------------------------
# reward_greedy by hand
# ---------------------------------------------------------------------------------------------

def test_reward_greedy_by_hand():
    """AP 0's candidates (see _hand_state): UE 0 w = 1, SINR 9.09 -> 1 * log2(10.09) = 3.34;
    UE 1 w = 0.5, SINR 5 -> 0.5^lam * log2(6) = 2.585 * 0.5^lam. UE 0 wins for every lam in
    [0, 1] (at lam = 0: 3.34 vs 2.585). Swap the weights (UE 0 w = 0.25): lam = 1 gives
    0.25 * 3.34 = 0.835 < 2.585 * 0.5 = 1.29 (UE 1), lam = 0 gives 3.34 > 2.585 (UE 0); the
    switch is where 0.25^lam 3.34 = 0.5^lam 2.585, lam = log2(3.34 / 2.585) = 0.369."""
    cfg = BASE
    params = EnvParams.create(cfg)
    st = _hand_state(cfg, params)
    pol = baselines.make("reward_greedy", cfg)
    obs, _ = env.observe(st, params, cfg)
    assert list(np.asarray(pol(None, obs, st, params))) == [0, 0]
    st = st.replace(avg_rate_mbps=jnp.array([4.0, 2.0, 4.0], jnp.float32))
    obs, cand = env.observe(st, params, cfg)
    np.testing.assert_array_equal(cand[0], [1, 0])  # UE 1 (w = 0.5) is now the first candidate
    for lam, pick in ((1.0, 0), (0.8, 0), (0.4, 0), (0.3, 1), (0.0, 1)):
        a = np.asarray(pol(None, obs, st, params.replace(pf_lambda=lam)))
        assert a[0] == pick, (lam, a)


# ---------------------------------------------------------------------------------------------
# Replicated (decentralized) execution of a joint policy under obs_share="global"
# ---------------------------------------------------------------------------------------------

def test_each_ap_rebuilds_the_global_state_exactly():
    for cfg in (CFG, CFG.replace(obs_clock=False), CFG.replace(obs_interference=False),
                BASE.replace(obs_share="global", obs_clock=True)):
        _, obs, _ = _states(cfg, n=16, seed=5)
        table = env.global_state_index(cfg)
        assert table.shape == (cfg.num_aps, cfg.state_dim)
        for i in range(cfg.num_aps):
            np.testing.assert_array_equal(np.asarray(obs.agents)[:, i][:, table[i]],
                                          np.asarray(obs.global_state))
    with pytest.raises(ValueError, match="obs_share='global'"):
        env.global_state_index(CFG.replace(obs_share="local"))


def test_replicated_policy_equals_the_joint_policy():
    """A joint rule of the *global* state (AP i serves candidate (floor(100 |s|_1) + i) mod 2,
    except the AP whose index is the slot's mod I, which is silent): no AP could follow it from
    its own features alone; replicated at every AP it gives the joint rule's actions exactly, and
    it never sees the simulator state."""
    from jaxrrm.algos import bc

    cfg = CFG

    seen = []

    def joint(key, obs, state, params):
        seen.append(state)
        h = jnp.floor(100.0 * jnp.sum(jnp.abs(obs.global_state))).astype(jnp.int32)
        clock = obs.global_state[-cfg.num_aps:]
        a = (h + jnp.arange(cfg.num_aps)) % 2
        return jnp.where(clock > 0.5, cfg.idle_action, a).astype(jnp.int32)

    params = EnvParams.create(cfg)
    traj = env.rollout(jax.random.key(6), baselines.make("reward_greedy", cfg), params, cfg, 2,
                       return_trajectory=True).trajectory
    obs = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), traj["obs"])  # 40 slots
    rep = env.replicated_policy(joint, cfg)
    a_joint = jax.vmap(lambda o: joint(None, o, 0, params))(obs)
    a_rep = jax.jit(jax.vmap(lambda o: rep(None, o, 0, params)))(obs)
    np.testing.assert_array_equal(a_rep, a_joint)
    assert seen[-1] is None  # the replicated calls get no simulator state
    assert len({tuple(x) for x in np.asarray(a_joint).tolist()}) > 2
    # the learners' option, checked where it is set
    with pytest.raises(ValueError, match="replicated"):
        bc.make_learner(cfg.replace(obs_share="local"),
                        bc.BCConfig(paradigm="centralized", execution="replicated"))
    with pytest.raises(ValueError, match="execution"):
        bc.BCConfig(execution="replicated")
    # an untrained centralized BC policy: replicated == joint on every state
    net = NetConfig(hidden=(16,))
    bj = bc.make_learner(cfg, bc.BCConfig(paradigm="centralized", net=net))
    br = bc.make_learner(cfg, bc.BCConfig(paradigm="centralized", execution="replicated",
                                          net=net))
    state = bj.init(jax.random.key(0))
    pj, pr = bj.policy(state), br.policy(state)
    np.testing.assert_array_equal(
        jax.vmap(lambda o: pj(None, o, None, params))(obs),
        jax.jit(jax.vmap(lambda o: pr(None, o, None, params)))(obs))
