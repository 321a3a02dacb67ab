"""Radio formulas worked by hand, and the environment's contracts (jaxrrm.radio, jaxrrm.env).

Most tests share the small configuration of ``conftest.SMALL_CFG`` (3 APs, 12 UEs, N = 3,
T = 20) and its jitted ``reset`` / ``step`` so that each program compiles once per process.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, channel, env, radio, topology

# ---------------------------------------------------------------------------------------------
# Radio layer by hand
# ---------------------------------------------------------------------------------------------

# Two APs, two UEs (UE j belongs to AP j), P = 1 W, noise N = 1e-12 W.
#            UE 0     UE 1
# AP 0    1e-10    5e-12
# AP 1    2e-12    4e-11
GAIN_2x2 = jnp.array([[1e-10, 5e-12], [2e-12, 4e-11]])
NOISE = 1e-12


class TestSinrByHand:
    def test_both_active(self):
        # UE 0: 1e-10 / (2e-12 + 1e-12) = 33.3333;  UE 1: 4e-11 / (5e-12 + 1e-12) = 6.6667
        s = radio.sinr(GAIN_2x2, jnp.array([0, 1]), 1.0, NOISE)
        np.testing.assert_allclose(s, [100 / 3, 20 / 3], rtol=1e-5)
        # rates at 10 MHz: 10 log2(34.3333) = 51.0154, 10 log2(7.6667) = 29.3860 Mbit/s
        np.testing.assert_allclose(radio.rate_mbps(s, 10e6), [51.0154, 29.3860], rtol=1e-5)

    def test_one_silent(self):
        # AP 1 silent: UE 0 sees no interference, 1e-10 / 1e-12 = 100; UE 1 unserved -> exactly 0
        s = radio.sinr(GAIN_2x2, jnp.array([0, -1]), 1.0, NOISE)
        np.testing.assert_allclose(s, [100.0, 0.0], rtol=1e-5)
        assert float(s[1]) == 0.0
        # 10 log2(101) = 66.5821 Mbit/s; rate of an unserved UE is 0
        np.testing.assert_allclose(radio.rate_mbps(s, 10e6), [66.5821, 0.0], rtol=1e-5)
        # both silent: nobody is served
        assert bool(jnp.all(radio.sinr(GAIN_2x2, jnp.array([-1, -1]), 1.0, NOISE) == 0.0))

    def test_per_ap_power(self):
        # P = [1, 0.5] W. UE 0: 1e-10 / (0.5 * 2e-12 + 1e-12) = 50;
        # UE 1: 0.5 * 4e-11 / (5e-12 + 1e-12) = 3.3333
        s = radio.sinr(GAIN_2x2, jnp.array([0, 1]), jnp.array([1.0, 0.5]), NOISE)
        np.testing.assert_allclose(s, [50.0, 10 / 3], rtol=1e-5)

    def test_crossed_serving(self):
        # AP 0 serves UE 1 and AP 1 serves UE 0 (the SINR follows the serving AP, not a fixed
        # association): UE 1: 5e-12 / (4e-11 + 1e-12) = 0.121951; UE 0: 2e-12 / (1e-10 + 1e-12)
        # = 0.0198020
        s = radio.sinr(GAIN_2x2, jnp.array([1, 0]), 1.0, NOISE)
        np.testing.assert_allclose(s, [0.0198020, 0.121951], rtol=1e-5)

    def test_sinr_all_active_and_initial_average(self):
        # Add UE 2 to AP 0: g[0, 2] = 1e-11, g[1, 2] = 1e-12.
        # All-active SINR: UE 0 33.3333, UE 1 6.6667, UE 2 1e-11 / (1e-12 + 1e-12) = 5.
        gain = jnp.array([[1e-10, 5e-12, 1e-11], [2e-12, 4e-11, 1e-12]])
        assoc = topology.associate(gain)
        np.testing.assert_array_equal(assoc, [0, 1, 0])
        np.testing.assert_allclose(radio.sinr_all_active(gain, assoc, 1.0, NOISE),
                                   [100 / 3, 20 / 3, 5.0], rtol=1e-5)
        # AP 0 has 2 UEs, AP 1 has 1: C(0) = [51.0154 / 2, 29.3860, 10 log2(6) / 2]
        #                                  = [25.5077, 29.3860, 12.9248]
        avg0 = radio.initial_average(gain, assoc, 1.0, NOISE, 10e6, 2)
        np.testing.assert_allclose(avg0, [25.5077, 29.3860, 12.9248], rtol=1e-5)

    def test_serving_matrix(self):
        np.testing.assert_array_equal(radio.serving_matrix(jnp.array([2, -1, 0]), 3),
                                      [[0, 0, 1], [0, 0, 0], [1, 0, 0]])

    def test_rate_known_points(self):
        # B log2(1 + SINR): SINR 1 -> B, SINR 3 -> 2B, SINR 0 -> 0 (Mbit/s)
        np.testing.assert_allclose(radio.rate_mbps(jnp.array([0.0, 1.0, 3.0, 255.0]), 20e6),
                                   [0.0, 20.0, 40.0, 160.0], rtol=1e-6)


class TestPfByHand:
    AVG = jnp.array([10.0, 2.0, 5.0])
    RATE = jnp.array([30.0, 0.0, 5.0])

    def test_update_average(self):
        # 0.95 * 10 + 0.05 * 30 = 11.0; 0.95 * 2 + 0 = 1.9; 0.95 * 5 + 0.05 * 5 = 5.0
        np.testing.assert_allclose(radio.update_average(self.AVG, self.RATE, 0.05),
                                   [11.0, 1.9, 5.0], rtol=1e-6)
        # beta = 1: the average is the last rate
        np.testing.assert_allclose(radio.update_average(self.AVG, self.RATE, 1.0), self.RATE)

    def test_weights(self):
        np.testing.assert_allclose(radio.pf_weights(self.AVG), [0.1, 0.5, 0.2], rtol=1e-6)
        # the floor: 1 / max(0, 1e-6) = 1e6; custom floor 0.01 -> 100
        np.testing.assert_allclose(radio.pf_weights(jnp.array([0.0, 1e-9])), [1e6, 1e6], rtol=1e-6)
        np.testing.assert_allclose(radio.pf_weights(jnp.array([0.0]), 0.01), [100.0], rtol=1e-6)

    def test_pf_reward(self):
        w = radio.pf_weights(self.AVG)  # [0.1, 0.5, 0.2]
        # lambda 0.8: (30 * 0.1^0.8 + 0 + 5 * 0.2^0.8) / 3
        #           = (30 * 0.158489 + 5 * 0.275946) / 3 = (4.75468 + 1.37973) / 3 = 2.044803
        np.testing.assert_allclose(radio.pf_reward(self.RATE, w, 0.8), 2.044803, rtol=1e-5)
        # lambda 0: mean rate (30 + 0 + 5) / 3 = 11.6667; lambda 1: (3 + 0 + 1) / 3 = 1.3333
        np.testing.assert_allclose(radio.pf_reward(self.RATE, w, 0.0), 35 / 3, rtol=1e-6)
        np.testing.assert_allclose(radio.pf_reward(self.RATE, w, 1.0), 4 / 3, rtol=1e-6)
        # batched over a leading axis
        r = radio.pf_reward(jnp.stack([self.RATE, 2 * self.RATE]), w, 1.0)
        np.testing.assert_allclose(r, [4 / 3, 8 / 3], rtol=1e-6)

    def test_log_utility(self):
        new = radio.update_average(self.AVG, self.RATE, 0.05)  # [11, 1.9, 5]
        # (ln 1.1 + ln 0.95 + ln 1) / 3 = (0.0953102 - 0.0512933) / 3 = 0.0146723
        np.testing.assert_allclose(radio.log_utility_reward(new, self.AVG), 0.0146723, rtol=1e-4)
        # telescopes: a sum over steps is the total log change
        a1 = radio.update_average(new, self.RATE, 0.05)
        tot = radio.log_utility_reward(new, self.AVG) + radio.log_utility_reward(a1, new)
        np.testing.assert_allclose(tot, np.mean(np.log(np.asarray(a1) / np.asarray(self.AVG))),
                                   rtol=1e-5)


class TestTrailingBatchAxes:
    """The radio layer's batch convention: AP and UE axes first, trailing batch axes ``*B``
    (the episodes-last layout); slice ``[..., b]`` is the unbatched call on slice ``b``."""

    @staticmethod
    def _draw(seed, num_aps=3, num_ues=7, batch=(5,)):
        rng = np.random.default_rng(seed)
        gain = jnp.asarray(10.0 ** rng.uniform(-13, -8, (num_aps, num_ues) + batch), jnp.float32)
        serving = rng.integers(-1, num_ues, (num_aps,) + batch)
        for b in np.ndindex(*batch):  # at most one AP per UE (the environment's invariant)
            col = serving[(slice(None),) + b]
            seen = set()
            for i, j in enumerate(col):
                if j in seen:
                    col[i] = -1
                seen.add(int(col[i]))
        assoc = rng.integers(0, num_aps, (num_ues,) + batch)
        return gain, jnp.asarray(serving, jnp.int32), jnp.asarray(assoc, jnp.int32)

    @pytest.mark.parametrize("power", [1.0, jnp.array([1.0, 0.5, 2.0])])
    def test_sinr_and_estimate_per_batch_slice(self, power):
        gain, serving, assoc = self._draw(0)
        sinr = radio.sinr(gain, serving, power, NOISE)
        est = radio.sinr_all_active(gain, assoc, power, NOISE)
        assert sinr.shape == est.shape == (7, 5)
        for b in range(5):
            np.testing.assert_allclose(
                sinr[:, b], radio.sinr(gain[..., b], serving[:, b], power, NOISE), rtol=1e-6)
            np.testing.assert_allclose(
                est[:, b], radio.sinr_all_active(gain[..., b], assoc[:, b], power, NOISE),
                rtol=1e-6)
        two = self._draw(1, batch=(2, 3))  # several trailing axes
        out = radio.sinr(two[0], two[1], 1.0, NOISE)
        assert out.shape == (7, 2, 3)
        np.testing.assert_allclose(out[:, 1, 2], radio.sinr(two[0][..., 1, 2], two[1][:, 1, 2],
                                                            1.0, NOISE), rtol=1e-6)

    @pytest.mark.parametrize("lam", [0.0, 0.8, 1.0])
    def test_pf_reward_of_served_ues_equals_the_full_formula(self, lam):
        # With `served`, w**lam is raised for the served UEs only; the value is the paper's
        # (1/K) sum_j w_j**lam C_j, since C_j = 0 for the others.
        gain, serving, _ = self._draw(2)
        rates = radio.rate_mbps(radio.sinr(gain, serving, 1.0, NOISE), 10e6)  # [K, B]
        w = jnp.asarray(np.random.default_rng(3).uniform(0.01, 2.0, rates.shape), jnp.float32)
        fast = radio.pf_reward(rates, w, lam, served=radio.served_by(serving, 7))
        full = radio.pf_reward(rates.T, w.T, lam)  # the UE axis last: the plain formula
        assert fast.shape == (5,)
        np.testing.assert_allclose(fast, full, rtol=1e-5)
        # and the log utility with the UE axis first equals it with the UE axis last
        new = w + rates
        np.testing.assert_allclose(radio.log_utility_reward(new, w, ue_axis=0),
                                   radio.log_utility_reward(new.T, w.T), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# One environment step against a NumPy float64 computation of DESIGN §1-2
# ---------------------------------------------------------------------------------------------

def _np_observation(state, params, cfg):
    """Expected agents' features, mask and candidates from the state, in NumPy."""
    g = np.asarray(state.large_gain, np.float64) * np.asarray(channel.fading_power(state.fading),
                                                              np.float64)
    assoc = np.asarray(state.association)
    p_w = np.broadcast_to(10 ** ((np.asarray(params.tx_power_dbm, np.float64) - 30) / 10),
                          (cfg.num_aps,))[:, None]
    n_w = 10 ** ((-174 + 70 + 7 - 30) / 10)
    own = assoc[None, :] == np.arange(cfg.num_aps)[:, None]
    sig = np.sum(own * p_w * g, axis=0)
    est = sig / (np.sum(~own * p_w * g, axis=0) + n_w)
    w = 1.0 / np.maximum(np.asarray(state.avg_rate_mbps, np.float64), params.min_avg_rate_mbps)
    n = cfg.num_candidates
    feats = np.zeros((cfg.num_aps, n, 2))
    cands = -np.ones((cfg.num_aps, n), int)
    for i in range(cfg.num_aps):
        ues = [j for j in np.argsort(-w, kind="stable") if assoc[j] == i][:n]
        for k, j in enumerate(ues):
            feats[i, k] = (math.log10(est[j]), math.log10(w[j]))
            cands[i, k] = j
    mask = np.concatenate([cands >= 0, np.ones((cfg.num_aps, 1), bool)], axis=1)
    return feats.reshape(cfg.num_aps, 2 * n), mask, cands


class TestStepByHand:
    def test_reset_observation(self, small_cfg, small_params, jit_reset):
        obs, st = jit_reset(jax.random.key(3), small_params, small_cfg)
        feats, mask, cands = _np_observation(st, small_params, small_cfg)
        np.testing.assert_allclose(obs.agents, feats, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(obs.action_mask, mask)
        np.testing.assert_array_equal(st.candidates, cands)
        np.testing.assert_allclose(obs.global_state, feats.reshape(-1), rtol=1e-4, atol=1e-5)
        # PF averages start at the fair share of the large-scale all-active rate (DESIGN §1)
        lg = np.asarray(st.large_gain, np.float64)
        assoc = np.asarray(st.association)
        own = assoc[None, :] == np.arange(3)[:, None]
        sinr_ls = np.sum(own * lg, 0) / (np.sum(~own * lg, 0) + 10 ** (-12.7))
        count = np.bincount(assoc, minlength=3)[assoc]
        np.testing.assert_allclose(st.avg_rate_mbps, 10 * np.log2(1 + sinr_ls) / count, rtol=1e-4)

    @pytest.mark.parametrize("reward, per_ap_power", [("pf", False), ("log_utility", False),
                                                      ("pf", True)])
    def test_step(self, small_params, jit_reset, jit_step, reward, per_ap_power):
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20, reward=reward)
        params = small_params
        power_w = np.ones(3)
        if per_ap_power:  # 30, 20 and 40 dBm: 1, 0.1 and 10 W
            params = params.replace(tx_power_dbm=jnp.array([30.0, 20.0, 40.0]))
            power_w = np.array([1.0, 0.1, 10.0])
        reset, step = jit_reset, jit_step
        _, st = reset(jax.random.key(5), params, cfg.replace(reward="pf"))  # same state
        # Take a few steps so that the averages are no longer the initial ones.
        for t in range(3):
            _, st, *_ = step(jax.random.key(10 + t), st, jnp.array([0, 1, 3]), params, cfg)
        actions = (jnp.array([1, 0, 0]) if per_ap_power  # all three APs transmit
                   else jnp.array([1, 3, 0]))  # AP 0 its 2nd candidate, AP 1 silent, AP 2 its 1st
        obs2, st2, r, term, trunc, info = step(jax.random.key(99), st, actions, params, cfg)

        g = np.asarray(st.large_gain, np.float64) * np.asarray(
            channel.fading_power(st.fading), np.float64)
        cands = np.asarray(st.candidates)
        serving = np.array([cands[0, 1], cands[1, 0] if per_ap_power else -1, cands[2, 0]])
        np.testing.assert_array_equal(info["serving"], serving)
        n_w = 10 ** (-12.7)
        sinr = np.zeros(12)
        for i, j in enumerate(serving):
            if j >= 0:
                interf = sum(power_w[k] * g[k, j] for k in range(3)
                             if k != i and serving[k] >= 0)
                sinr[j] = power_w[i] * g[i, j] / (interf + n_w)
        rate = 10.0 * np.log2(1 + sinr)
        np.testing.assert_allclose(info["sinr"], sinr, rtol=1e-4)
        np.testing.assert_allclose(info["rates_mbps"], rate, rtol=1e-4, atol=1e-5)
        avg = np.asarray(st.avg_rate_mbps, np.float64)
        w = 1 / avg
        new_avg = 0.95 * avg + 0.05 * rate
        np.testing.assert_allclose(info["pf_weights"], w, rtol=1e-5)
        np.testing.assert_allclose(st2.avg_rate_mbps, new_avg, rtol=1e-5)
        expected = (np.mean(w**0.8 * rate) if reward == "pf"
                    else np.mean(np.log(new_avg) - np.log(avg)))
        np.testing.assert_allclose(float(r), expected, rtol=1e-4, atol=1e-7)
        assert not bool(term) and not bool(trunc) and int(st2.time) == 4
        # fading advanced: h(t+1) = rho h(t) + sqrt(1 - rho^2) e(t), with e(t) from the key
        rho = 0.8699347
        e = channel.fading_innovation(jax.random.key(99), (3, 12))
        np.testing.assert_allclose(st2.fading, rho * st.fading + math.sqrt(1 - rho**2) * e,
                                   rtol=1e-4, atol=1e-6)
        # next observation is made on the new channel and new weights
        feats, mask, cands2 = _np_observation(st2, params, cfg)
        np.testing.assert_allclose(obs2.agents, feats, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(st2.candidates, cands2)


# ---------------------------------------------------------------------------------------------
# Compilation, determinism and batching contracts
# ---------------------------------------------------------------------------------------------

def _trees_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class TestContracts:
    def test_step_and_reset_trace_once(self, small_cfg, small_params):
        cfg = small_cfg

        @jax.jit
        @chex.assert_max_traces(n=1)
        def reset(key, params):
            return env.reset(key, params, cfg)

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(key, state, actions, params):
            return env.step(key, state, actions, params, cfg)

        params = [small_params, small_params.replace(pf_lambda=0.3, tx_power_dbm=20.0),
                  EnvParams.create(cfg, pf_beta=0.5, bandwidth_hz=20e6)]
        for s, p in enumerate(params):
            _, st = reset(jax.random.key(s), p)
            for t in range(3):
                _, st, r, *_ = step(jax.random.key(100 * s + t), st,
                                    jnp.array([t % 4, (t + 1) % 4, 3], jnp.int32), p)
        assert np.isfinite(float(r))

    def test_rollout_does_not_recompile_over_keys_and_params(self, small_cfg):
        pol = baselines.make("full_reuse", small_cfg)
        _rollout(jax.random.key(0), pol, EnvParams.create(small_cfg), small_cfg)
        n = env.rollout_jit.jitted._cache_size()
        for lam in (0.0, 0.5, 1.0):
            _rollout(jax.random.key(int(lam * 10)), pol,
                     EnvParams.create(small_cfg, pf_lambda=lam), small_cfg)
        assert env.rollout_jit.jitted._cache_size() == n

    def test_policy_with_params_compiles_once_for_every_parameter_set(self, small_cfg):
        # A policy as (apply_fn, params): new parameters are traced, not a new program.
        params = EnvParams.create(small_cfg)

        def apply_fn(w, key, obs, state, env_params):  # a linear scorer of the features
            f = obs.agents[:, : 2 * small_cfg.num_candidates].reshape(
                small_cfg.num_aps, small_cfg.num_candidates, 2)
            return jnp.argmax(f @ w, axis=-1).astype(jnp.int32)

        runs = []
        for w in ([1.0, 1.0], [1.0, 0.0], [0.0, 1.0]):
            pol = env.policy_with_params(apply_fn, jnp.asarray(w))
            runs.append(env.rollout_jit(jax.random.key(0), pol, params, small_cfg, 4))
            if len(runs) == 1:
                n = env.rollout_jit.jitted._cache_size()
        assert env.rollout_jit.jitted._cache_size() == n
        # the parameters are used: the max-weight-only scorer differs from the others
        assert not np.array_equal(runs[0].ue_rates_mbps, runs[2].ue_rates_mbps) or \
            not np.array_equal(runs[1].ue_rates_mbps, runs[2].ue_rates_mbps)
        # and the same parameters give what the plain closure gives
        w = jnp.asarray([1.0, 1.0])
        closure = lambda k, o, s, p: apply_fn(w, k, o, s, p)  # noqa: E731
        ref = env.rollout_jit(jax.random.key(0), closure, params, small_cfg, 4)
        np.testing.assert_array_equal(ref.ue_rates_mbps, runs[0].ue_rates_mbps)

    def test_jit_equals_eager(self, small_cfg, small_params, jit_reset, jit_step):
        key = jax.random.key(21)
        obs_j, st_j = jit_reset(key, small_params, small_cfg)
        obs_e, st_e = env.reset(key, small_params, small_cfg)
        chex.assert_trees_all_close(obs_j, obs_e, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(st_j, st_e, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(st_j.association, st_e.association)
        np.testing.assert_array_equal(st_j.candidates, st_e.candidates)
        a = jnp.array([0, 3, 2], jnp.int32)
        out_j = jit_step(jax.random.key(22), st_j, a, small_params, small_cfg)
        out_e = env.step(jax.random.key(22), st_e, a, small_params, small_cfg)
        chex.assert_trees_all_close(out_j, out_e, rtol=1e-5, atol=1e-6)

    def test_vmap_over_episodes_equals_loop(self, small_cfg, small_params, jit_reset, jit_step):
        cfg, p = small_cfg, small_params
        keys = jax.random.split(jax.random.key(8), 4)
        skeys = jax.random.split(jax.random.key(9), 4)
        actions = jnp.array([[0, 1, 2], [3, 3, 0], [1, 0, 3], [2, 2, 2]], jnp.int32)
        vreset = jax.jit(jax.vmap(lambda k: env.reset(k, p, cfg)))
        vstep = jax.jit(jax.vmap(lambda k, s, a: env.step(k, s, a, p, cfg)))
        obs_b, st_b = vreset(keys)
        out_b = vstep(skeys, st_b, actions)
        for e in range(4):
            obs, st = jit_reset(keys[e], p, cfg)
            out = jit_step(skeys[e], st, actions[e], p, cfg)
            pick = functools.partial(jax.tree.map, lambda x: x[e])
            chex.assert_trees_all_close(pick(obs_b), obs, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(pick(st_b), st, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(pick(out_b), out, rtol=1e-5, atol=1e-6)

    def test_same_key_same_result_different_key_different(self, small_cfg, small_params,
                                                         jit_reset, jit_step):
        cfg, p = small_cfg, small_params
        a = jnp.array([0, 1, 0], jnp.int32)
        o1, s1 = jit_reset(jax.random.key(4), p, cfg)
        o2, s2 = jit_reset(jax.random.key(4), p, cfg)
        assert _trees_equal((o1, s1), (o2, s2))
        _, s3 = jit_reset(jax.random.key(5), p, cfg)
        assert not bool(jnp.array_equal(s1.ue_pos_m, s3.ue_pos_m))
        assert not bool(jnp.array_equal(s1.shadowing_db, s3.shadowing_db))
        assert not bool(jnp.array_equal(s1.fading, s3.fading))
        r1 = jit_step(jax.random.key(6), s1, a, p, cfg)
        r2 = jit_step(jax.random.key(6), s1, a, p, cfg)
        assert _trees_equal(r1, r2)
        r3 = jit_step(jax.random.key(7), s1, a, p, cfg)
        # same slot, same actions: this slot's reward and rates are the same, the next fading not
        np.testing.assert_array_equal(r1[2], r3[2])
        assert not bool(jnp.array_equal(r1[1].fading, r3[1].fading))
        # rollouts
        pol = baselines.make("full_reuse", cfg)
        ra = _rollout(jax.random.key(1), pol, p, cfg)
        rb = _rollout(jax.random.key(1), pol, p, cfg)
        rc = _rollout(jax.random.key(2), pol, p, cfg)
        assert _trees_equal(ra, rb)
        assert not bool(jnp.array_equal(ra.ue_rates_mbps, rc.ue_rates_mbps))
        # the E episodes of one call differ from each other
        assert len({float(x) for x in ra.ue_rates_mbps.sum(axis=1)}) == ra.ue_rates_mbps.shape[0]

    def test_vmap_over_params_equals_separate_calls(self, small_cfg):
        cfg = small_cfg
        pol = baselines.make("full_reuse", cfg)
        plist = [EnvParams.create(cfg, tx_power_dbm=tx, pf_lambda=lam)
                 for tx, lam in ((20.0, 0.0), (30.0, 0.5), (40.0, 1.0))]
        batched = jax.tree.map(lambda *x: jnp.stack([jnp.float32(v) for v in x]), *plist)
        key = jax.random.key(31)
        swept = jax.jit(jax.vmap(lambda p: env.rollout(key, pol, p, cfg, E_ROLL)))(batched)
        assert swept.ue_rates_mbps.shape == (3, E_ROLL, cfg.num_ues)
        assert swept.rewards.shape == (3, E_ROLL, cfg.horizon)
        for b, p in enumerate(plist):
            single = _rollout(key, pol, p, cfg)
            chex.assert_trees_all_close(jax.tree.map(lambda x: x[b], swept), single,
                                        rtol=2e-5, atol=1e-5)
        # the sweep does something: more power, more rate (same drops and fading)
        s = np.asarray(swept.ue_rates_mbps.sum(axis=-1).mean(axis=-1))
        assert s[0] < s[1] < s[2]


E_ROLL = 8


def _rollout(key, policy, params, cfg, num_episodes=E_ROLL, traj=False):
    return env.rollout_jit(key, policy, params, cfg, num_episodes, traj)


# ---------------------------------------------------------------------------------------------
# Observation, episode end, auto-reset, masking
# ---------------------------------------------------------------------------------------------

class TestEpisode:
    def test_observation_shapes(self, small_cfg, small_params, jit_reset):
        obs, st = jit_reset(jax.random.key(0), small_params, small_cfg)
        i, n, k = 3, 3, 12
        assert obs.agents.shape == (i, 2 * n) and obs.agents.dtype == jnp.float32
        assert obs.global_state.shape == (2 * n * i,) and obs.global_state.dtype == jnp.float32
        assert obs.action_mask.shape == (i, n + 1) and obs.action_mask.dtype == jnp.bool_
        assert bool(jnp.all(obs.action_mask[:, -1]))  # idle always valid
        assert st.candidates.shape == (i, n) and st.fading.shape == (2, i, k)
        assert small_cfg.obs_dim == 2 * n and small_cfg.state_dim == 2 * n * i
        # without idle: N actions per AP
        cfg = small_cfg.replace(allow_idle=False)
        obs2, _ = env.observe(st, small_params, cfg)
        assert obs2.action_mask.shape == (i, n) and cfg.num_actions == n

    def test_truncated_exactly_at_horizon_never_terminated(self, small_cfg, small_params,
                                                          jit_reset, jit_step):
        _, st = jit_reset(jax.random.key(1), small_params, small_cfg)
        a = jnp.array([0, 0, 0], jnp.int32)
        for t in range(small_cfg.horizon + 3):
            _, st, r, term, trunc, _ = jit_step(jax.random.key(t), st, a, small_params, small_cfg)
            assert int(st.time) == t + 1
            assert not bool(term)
            assert bool(trunc) == (t + 1 >= small_cfg.horizon), f"slot {t}"
            assert np.isfinite(float(r))

    def test_auto_reset_keeps_final_obs(self, small_cfg, small_params, jit_reset, jit_step):
        cfg, p = small_cfg, small_params
        auto = jax.jit(env.step_auto_reset, static_argnums=(4,))
        _, st = jit_reset(jax.random.key(2), p, cfg)
        a = jnp.array([1, 0, 3], jnp.int32)
        for t in range(cfg.horizon + 5):
            key = jax.random.fold_in(jax.random.key(3), t)
            obs, st_new, r, term, trunc, info = auto(key, st, a, p, cfg)
            k_step, k_reset = jax.random.split(key)
            obs_p, st_p, r_p, _, trunc_p, _ = jit_step(k_step, st, a, p, cfg)
            chex.assert_trees_all_close(info["final_obs"], obs_p, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(float(r), float(r_p), rtol=1e-6)
            assert not bool(term) and bool(trunc) == bool(trunc_p)
            if t == cfg.horizon - 1:
                assert bool(trunc)
                obs_r, st_r = jit_reset(k_reset, p, cfg)
                chex.assert_trees_all_close((obs, st_new), (obs_r, st_r), rtol=1e-6, atol=1e-6)
                assert int(st_new.time) == 0
                assert not _trees_equal(obs, info["final_obs"])
            else:
                assert not bool(trunc)
                chex.assert_trees_all_close((obs, st_new), (obs_p, st_p), rtol=1e-6, atol=1e-6)
                expected_time = t + 1 if t < cfg.horizon else t + 1 - cfg.horizon
                assert int(st_new.time) == expected_time
            st = st_new

    def test_masked_actions_execute_as_silent(self, small_cfg, small_params, jit_reset, jit_step):
        cfg, p = small_cfg, small_params
        _, st = jit_reset(jax.random.key(4), p, cfg)
        # AP 1 loses its last candidate (as if it had only 2 UEs)
        st = st.replace(candidates=st.candidates.at[1, 2].set(-1))
        key = jax.random.key(5)
        _, _, r_m, _, _, info_m = jit_step(key, st, jnp.array([0, 2, 1], jnp.int32), p, cfg)
        _, _, r_i, _, _, info_i = jit_step(key, st, jnp.array([0, 3, 1], jnp.int32), p, cfg)
        np.testing.assert_array_equal(info_m["masked"], [False, True, False])
        np.testing.assert_array_equal(info_i["masked"], [False, False, False])
        assert int(info_m["serving"][1]) == -1
        np.testing.assert_array_equal(info_m["serving"], info_i["serving"])
        np.testing.assert_array_equal(info_m["rates_mbps"], info_i["rates_mbps"])
        assert float(r_m) == float(r_i)
        # out-of-range actions (negative, or past idle) are masked too
        _, _, _, _, _, info_o = jit_step(key, st, jnp.array([-1, 0, 7], jnp.int32), p, cfg)
        np.testing.assert_array_equal(info_o["masked"], [True, False, True])
        np.testing.assert_array_equal(info_o["serving"], [-1, st.candidates[1, 0], -1])

    def test_actions_to_serving_without_idle(self):
        cfg = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, allow_idle=False)
        cands = jnp.array([[3, -1], [-1, -1]], jnp.int32)  # AP 1 has no UE at all
        serving, masked = env.actions_to_serving(jnp.array([1, 0]), cands, cfg)
        np.testing.assert_array_equal(serving, [-1, -1])
        # AP 0 picked a missing candidate (masked); AP 1 had no valid action at all (not masked)
        np.testing.assert_array_equal(masked, [True, False])
        serving, masked = env.actions_to_serving(jnp.array([0, 1]), cands, cfg)
        np.testing.assert_array_equal(serving, [3, -1])
        np.testing.assert_array_equal(masked, [False, False])

    def test_rollout_shapes_and_trajectory(self, small_cfg, small_params):
        cfg, e = small_cfg, 4
        res = _rollout(jax.random.key(6), _wild_policy, small_params, cfg, num_episodes=e,
                       traj=True)
        t, i, k, n = cfg.horizon, 3, 12, 3
        assert res.ue_rates_mbps.shape == (e, k) and res.rewards.shape == (e, t)
        assert res.masked_actions.shape == (e,)
        tr = res.trajectory
        assert tr["obs"].agents.shape == (e, t, i, 2 * n)
        assert tr["obs"].global_state.shape == (e, t, 2 * n * i)
        assert tr["obs"].action_mask.shape == (e, t, i, n + 1)
        assert tr["next_obs"].agents.shape == (e, t, i, 2 * n)
        assert tr["actions"].shape == (e, t, i) and tr["actions"].dtype == jnp.int32
        assert tr["rewards"].shape == (e, t) and tr["truncated"].shape == (e, t)
        assert tr["info"]["rates_mbps"].shape == (e, t, k)
        assert tr["info"]["serving"].shape == (e, t, i)
        # consistency: per-UE averages are the time means of the per-slot rates
        np.testing.assert_allclose(res.ue_rates_mbps, tr["info"]["rates_mbps"].mean(axis=1),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res.rewards, tr["rewards"])
        np.testing.assert_array_equal(tr["truncated"][:, -1], True)
        np.testing.assert_array_equal(tr["truncated"][:, :-1], False)
        # next_obs of slot t is obs of slot t + 1
        np.testing.assert_array_equal(tr["next_obs"].agents[:, :-1], tr["obs"].agents[:, 1:])
        # masked actions (-1, 4 = past idle, or a missing candidate) are counted, executed as
        # silent
        acts = np.asarray(tr["actions"])
        mask = np.asarray(tr["obs"].action_mask)
        in_range = (acts >= 0) & (acts <= 3)
        valid = np.take_along_axis(mask, np.clip(acts, 0, 3)[..., None], axis=-1)[..., 0]
        wild = ~(in_range & valid)
        assert wild.any() and not wild.all()
        np.testing.assert_array_equal(tr["info"]["masked"], wild)
        np.testing.assert_array_equal(res.masked_actions, wild.sum(axis=(1, 2)))
        np.testing.assert_array_equal(np.asarray(tr["info"]["serving"])[wild], -1)
        assert _rollout(jax.random.key(6), baselines.make("full_reuse", cfg), small_params,
                        cfg).trajectory is None


# ---------------------------------------------------------------------------------------------
# Extreme geometry and long episodes: finite numbers everywhere
# ---------------------------------------------------------------------------------------------

def _wild_policy(key, obs, state, params):
    """Uniform over -1..4: valid candidates (0-2), idle (3) and two out-of-range actions."""
    return jax.random.randint(key, (obs.agents.shape[0],), -1, 5)


def _idle_then_serve(key, obs, state, params, *, cfg):
    """Every AP silent, except in the very last slot where each serves its first candidate."""
    last = state.time == cfg.horizon - 1
    return jnp.where(last, 0, cfg.idle_action) * jnp.ones((cfg.num_aps,), jnp.int32)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _run_from(key, state, params, policy, cfg):
    """Run ``cfg.horizon`` slots of ``policy`` from ``state``; stacked per-slot outputs."""
    obs, _ = env.observe(state, params, cfg)

    def body(carry, k):
        obs, st = carry
        k1, k2 = jax.random.split(k)
        a = policy(k1, obs, st, params)
        obs2, st2, r, term, trunc, info = env.step(k2, st, a, params, cfg)
        out = dict(reward=r, rates=info["rates_mbps"], obs=obs.agents, truncated=trunc,
                   serving=info["serving"], masked=info["masked"], avg=st.avg_rate_mbps,
                   weights=info["pf_weights"])
        return (obs2, st2), out

    (obs, st), out = jax.lax.scan(body, (obs, state), jax.random.split(key, cfg.horizon))
    return obs, st, out


def _assert_all_finite(tree, what=""):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.all(np.isfinite(leaf)), f"{what}{jax.tree_util.keystr(path)} not finite"


class TestExtremes:
    def test_ue_at_min_distance_on_top_of_ap_and_in_corners(self, small_cfg, small_params,
                                                            jit_step):
        cfg, p = small_cfg, small_params  # APs at (125, 125), (375, 125), (125, 375)
        ap = topology.grid_positions(3, 500.0)
        ue = jnp.array([[135.0, 125.0],  # exactly min_distance (10 m) from AP 0
                        [125.0, 125.0],  # on top of AP 0 (only reachable by custom geometry)
                        [375.0, 115.0],  # 10 m from AP 1
                        [0.0, 0.0], [500.0, 0.0], [0.0, 500.0], [500.0, 500.0],  # corners
                        [500.0, 250.0], [250.0, 500.0], [0.0, 250.0], [250.0, 0.0],
                        [499.99, 0.01]])
        d = topology.distances_2d_m(ap, ue)
        assert float(d[0, 0]) == 10.0 and float(d[1, 2]) == 10.0
        k = jax.random.split(jax.random.key(0), 3)
        los = topology.draw_los(k[0], d, "umi")
        sh = channel.shadowing_std_db(los, p) * jax.random.normal(k[1], d.shape)
        fad = channel.init_fading(k[2], d.shape)
        obs, st = env.init_state(ap, ue, jnp.zeros(12), los, sh, fad, p, cfg)
        _assert_all_finite((obs, st), "init ")
        assert bool(jnp.all(st.large_gain > 0))
        # on top of the AP: the distance floor of 1 m gives a finite, strongest gain
        assert int(st.association[1]) == 0
        policy = jax.jit(baselines.make("full_reuse", cfg))
        rates = []
        for t in range(cfg.horizon):
            a = policy(None, obs, st, p)
            obs, st, r, _, _, info = jit_step(jax.random.key(t), st, a, p, cfg)
            _assert_all_finite((obs, st, r, info), f"slot {t} ")
            rates.append(np.asarray(info["rates_mbps"]))
        rates = np.stack(rates)
        assert np.all(rates >= 0)
        # the UE 10 m from its AP gets served at some point, with a high rate
        assert rates[:, 0].max() > 10.0

    def test_all_ues_near_one_ap(self):
        # AP 0 in the middle of a 100 m area, APs 1 and 2 kilometres away: every UE associates
        # with AP 0, APs 1 and 2 have no candidates (only idle is valid). Eager: same shapes as
        # the jit == eager test, so its operations are compiled already.
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20,
                        ap_positions_m=((50.0, 50.0), (5000.0, 5000.0), (-5000.0, 50.0)))
        p = EnvParams.create(cfg, area_side_m=100.0)
        obs, st = env.reset(jax.random.key(2), p, cfg)
        np.testing.assert_array_equal(st.association, 0)
        served = np.zeros(12, int)
        for t in range(cfg.horizon):
            mask = np.asarray(obs.action_mask)
            assert not mask[1:, :3].any() and mask[:, 3].all() and mask[0].all()
            np.testing.assert_array_equal(obs.agents[1:], 0.0)
            obs, st, r, _, _, info = env.step(jax.random.key(t), st, jnp.zeros(3, jnp.int32), p,
                                              cfg)
            _assert_all_finite((obs, st, r, info), f"slot {t} ")
            # APs 1 and 2 were asked for a missing candidate: masked, executed as silent
            np.testing.assert_array_equal(info["masked"], [False, True, True])
            assert int(info["serving"][0]) >= 0 and bool(jnp.all(info["serving"][1:] == -1))
            # AP 0 serves one UE per slot without interference
            assert int(jnp.sum(info["rates_mbps"] > 0)) == 1
            served[int(info["serving"][0])] += 1
        # PF candidate order makes AP 0 cycle through its 12 UEs
        assert served.min() >= 1

    def test_long_starved_episode(self, jit_reset):
        reward = "pf"  # the log-utility reward at the floor: test_each_model_and_reward_eager
        # 3000 slots of silence: every PF average decays as 0.95^t (0.95^3000 ~ 1e-67, far below
        # float32's range) and must stop at the floor of 1e-6 Mbit/s, weights at 1e6.
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=3000, reward=reward)
        p = EnvParams.create(cfg)
        _, st0 = jit_reset(jax.random.key(3), p, cfg.replace(horizon=20))  # same first state
        pol = functools.partial(_idle_then_serve, cfg=cfg)
        obs, st, out = _run_from(jax.random.key(4), st0, p, pol, cfg)
        _assert_all_finite((obs, st, out), "long ")
        avg_last = np.asarray(out["avg"][-1])  # averages in force in the last slot
        np.testing.assert_allclose(avg_last, 1e-6, rtol=1e-6)
        np.testing.assert_allclose(out["weights"][-1], 1e6, rtol=1e-5)
        # observation: log10 of the weight is 6 for every valid candidate
        logw = np.asarray(out["obs"][-1]).reshape(3, 3, 2)[..., 1]
        valid = np.asarray(st0.candidates) >= 0
        np.testing.assert_allclose(logw[valid], 6.0, atol=1e-5)
        rewards = np.asarray(out["reward"])
        rate = np.asarray(out["rates"][-1], np.float64)
        assert (rate > 0).sum() == valid[:, 0].sum()
        if reward == "pf":
            assert np.all(rewards[:-1] == 0.0)  # (1e6)^0.8 = 63095.73 times the mean rate
            np.testing.assert_allclose(rewards[-1], 63095.73 * rate.mean(), rtol=1e-4)
        else:
            # silence costs log(0.95) per slot until the averages hit the floor, then nothing
            np.testing.assert_allclose(rewards[:10], math.log(0.95), rtol=1e-4)
            assert np.all(rewards[:-1] <= 0.0) and np.all(rewards[-1000:-1] == 0.0)
            # last slot: mean of log(max(0.95e-6 + 0.05 C, 1e-6) / 1e-6)
            new = np.maximum(0.95e-6 + 0.05 * rate, 1e-6)
            np.testing.assert_allclose(rewards[-1], np.mean(np.log(new / 1e-6)), rtol=1e-4)
        assert bool(out["truncated"][-1]) and not bool(out["truncated"][:-1].any())

    @pytest.mark.parametrize("model, reward, area", [
        ("umi", "log_utility", 500.0), ("inh_office", "pf", 50.0),
        ("inh_office", "log_utility", 120.0), ("log_distance", "pf", 500.0),
        ("log_distance", "log_utility", 300.0), ("free_space", "pf", 500.0),
        ("free_space", "log_utility", 40.0)])
    def test_each_model_and_reward_eager(self, model, reward, area):
        # Eager (op-by-op) on purpose: same shapes as the jit == eager test, so cheap.
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20,
                        pathloss_model=model, reward=reward)
        p = EnvParams.create(cfg, area_side_m=area, min_distance_m=min(10.0, area / 10))
        obs, st = env.reset(jax.random.key(7), p, cfg)
        _assert_all_finite((obs, st), f"{model} reset ")
        assert bool(jnp.all(st.large_gain > 0)) and bool(jnp.all(st.avg_rate_mbps > 0))
        if model == "free_space":
            assert bool(jnp.all(st.los)) and bool(jnp.all(st.shadowing_db == 0))
        if model == "log_distance":
            assert not bool(jnp.any(st.los))
        for t, a in enumerate(([0, 0, 0], [1, 3, 0], [3, 3, 3])):
            obs, st, r, term, trunc, info = env.step(jax.random.key(t), st,
                                                     jnp.array(a, jnp.int32), p, cfg)
            _assert_all_finite((obs, st, r, info), f"{model} step {t} ")
            assert bool(jnp.all(info["rates_mbps"] >= 0))
        # all silent: no rate; the log utility loses log(0.95) per slot (averages decay by 1 - beta)
        expected = 0.0 if reward == "pf" else math.log(0.95)
        np.testing.assert_allclose(float(r), expected, atol=1e-6)
        # a long-starved network: averages at the floor (1e-6 Mbit/s); silence changes nothing,
        # then serving gives a finite reward (pf: (1e6)^0.8 C / K; log: log(max(.05 C, ..)/1e-6))
        st = st.replace(avg_rate_mbps=jnp.full((12,), 1e-6))
        obs, st1, r, *_ = env.step(jax.random.key(5), st, jnp.array([3, 3, 3]), p, cfg)
        assert float(r) == 0.0 and bool(jnp.all(st1.avg_rate_mbps == jnp.float32(1e-6)))
        np.testing.assert_allclose(obs.agents.reshape(3, 3, 2)[..., 1][st1.candidates >= 0], 6.0,
                                   atol=1e-5)
        _, _, r, _, _, info = env.step(jax.random.key(6), st1, jnp.array([0, 0, 0]), p, cfg)
        rate = np.asarray(info["rates_mbps"], np.float64)
        expected = (np.mean(1e6**0.8 * rate) if reward == "pf"
                    else np.mean(np.log(np.maximum(0.95e-6 + 0.05 * rate, 1e-6) / 1e-6)))
        assert np.isfinite(float(r)) and float(r) > 0
        np.testing.assert_allclose(float(r), expected, rtol=1e-4)

    def test_mobility(self, small_cfg, small_params, jit_reset, jit_step):
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20, mobility=True,
                        reassociation_slots=5)
        # 500 m/s * 10 ms = 5 m per slot in a 100 m area: borders are hit, association changes
        p = small_params.replace(area_side_m=100.0, ue_speed_mps=500.0)
        _, st = jit_reset(jax.random.key(8), p, small_cfg)  # same state as with mobility
        los0, sh0 = st.los, st.shadowing_db
        assoc_changed = False
        reflected = False
        for t in range(cfg.horizon):
            _, new, r, _, _, info = jit_step(jax.random.key(t), st, jnp.array([0, 0, 0]), p, cfg)
            pos = np.asarray(new.ue_pos_m)
            assert pos.min() >= 0.0 and pos.max() <= 100.0, f"slot {t}: left the area"
            moved = np.linalg.norm(pos - np.asarray(st.ue_pos_m), axis=-1)
            assert np.all(moved <= 5.0 + 1e-3)
            reflected |= bool(np.any(moved < 5.0 - 1e-3))
            np.testing.assert_allclose(moved[moved > 5.0 - 1e-3], 5.0, atol=1e-3)
            np.testing.assert_array_equal(new.los, los0)
            np.testing.assert_array_equal(new.shadowing_db, sh0)
            lg = topology.large_scale_gain(new.ap_pos_m, new.ue_pos_m, los0, sh0, p, cfg)
            np.testing.assert_allclose(new.large_gain, lg, rtol=1e-4)
            if int(new.time) % 5 == 0:
                np.testing.assert_array_equal(new.association, np.argmax(np.asarray(lg), axis=0))
                assoc_changed |= not bool(jnp.array_equal(new.association, st.association))
            else:
                np.testing.assert_array_equal(new.association, st.association)
            # the observation's candidates follow the refreshed association
            assert bool(jnp.all((new.candidates < 0) | (
                new.association[jnp.maximum(new.candidates, 0)] == jnp.arange(3)[:, None])))
            _assert_all_finite((new, r, info))
            st = new
        assert reflected and assoc_changed

    def test_no_mobility_keeps_positions(self, small_cfg, small_params, jit_reset, jit_step):
        _, st0 = jit_reset(jax.random.key(9), small_params, small_cfg)
        _, st, *_ = jit_step(jax.random.key(1), st0, jnp.array([0, 1, 2]), small_params,
                             small_cfg)
        np.testing.assert_array_equal(st.ue_pos_m, st0.ue_pos_m)
        np.testing.assert_array_equal(st.large_gain, st0.large_gain)
        np.testing.assert_array_equal(st.association, st0.association)
