"""Validation of EnvConfig / EnvParams, and property tests (hypothesis) of the radio layer and
of short rollouts over random valid physical parameters."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrrm import EnvConfig, EnvParams, baselines, env, radio
from jaxrrm.config import default_config

# ---------------------------------------------------------------------------------------------
# EnvConfig
# ---------------------------------------------------------------------------------------------


class TestEnvConfig:
    @pytest.mark.parametrize("field", ["num_aps", "num_ues", "num_candidates", "horizon",
                                       "reassociation_slots", "min_drop_tries"])
    @pytest.mark.parametrize("value", [0, -1, -7])
    def test_non_positive_counts(self, field, value):
        with pytest.raises(ValueError, match=field):
            EnvConfig(**{field: value})

    @pytest.mark.parametrize("value", [2.0, True, "3", None])
    def test_counts_must_be_integers(self, value):
        with pytest.raises(ValueError, match="num_aps"):
            EnvConfig(num_aps=value)

    def test_numpy_integers_accepted(self):
        cfg = EnvConfig(num_aps=np.int64(2), num_ues=np.int32(5))
        assert cfg.num_aps == 2 and cfg.num_ues == 5

    def test_more_candidates_than_ues(self):
        with pytest.raises(ValueError, match="num_candidates"):
            EnvConfig(num_ues=2, num_candidates=3)
        assert EnvConfig(num_ues=3, num_candidates=3).num_candidates == 3

    def test_joint_action_space_too_large(self):
        # (3 + 1)^16 = 2^32 > 2^31 - 1 (int32 joint-action encoding)
        with pytest.raises(ValueError, match="num_candidates"):
            EnvConfig(num_aps=16, num_ues=48)
        assert EnvConfig(num_aps=15, num_ues=45).num_joint_actions == 4**15

    @pytest.mark.parametrize("field, value", [
        ("pathloss_model", "uma"), ("pathloss_model", "UMI"), ("reward", "sum_rate"),
        ("reward", None), ("ap_layout", "hexagonal"), ("allow_idle", 1), ("mobility", "yes")])
    def test_unknown_choices(self, field, value):
        with pytest.raises(ValueError, match=field):
            EnvConfig(**{field: value})

    @pytest.mark.parametrize("positions", [
        ((0.0, 0.0),),  # one pair for two APs
        ((0.0, 0.0), (1.0, 1.0), (2.0, 2.0)),  # three
        ((0.0, 0.0), (1.0,)),  # not a pair
        ((0.0, 0.0), (1.0, float("nan"))),  # not finite
        ((0.0, float("inf")), (1.0, 1.0)),
    ])
    def test_ap_positions(self, positions):
        with pytest.raises(ValueError, match="ap_positions_m"):
            EnvConfig(num_aps=2, num_ues=4, ap_positions_m=positions)

    def test_ap_positions_normalised_to_float_tuples(self):
        cfg = EnvConfig(num_aps=2, num_ues=4, ap_positions_m=[[0, 1], np.array([2.5, 3])])
        assert cfg.ap_positions_m == ((0.0, 1.0), (2.5, 3.0))
        assert cfg == EnvConfig(num_aps=2, num_ues=4, ap_positions_m=((0, 1), (2.5, 3)))
        hash(cfg)

    def test_hashable_and_equal(self):
        a, b = EnvConfig(num_aps=3, num_ues=12), EnvConfig(num_aps=3, num_ues=12)
        assert a == b and hash(a) == hash(b) and a is not b
        assert len({a, b, EnvConfig()}) == 2
        assert a != a.replace(horizon=21)
        assert a.replace(horizon=21) == EnvConfig(num_aps=3, num_ues=12, horizon=21)
        with pytest.raises(Exception):  # frozen
            a.num_aps = 4
        # equal configs are the same static argument: no recompilation
        f = jax.jit(lambda x, cfg: x * cfg.num_aps, static_argnums=(1,))
        f(1.0, a)
        f(2.0, b)
        assert f._cache_size() == 1

    def test_replace_validates(self):
        with pytest.raises(ValueError, match="horizon"):
            EnvConfig().replace(horizon=0)

    def test_derived_sizes(self):
        cfg = default_config()
        assert cfg == EnvConfig()
        assert (cfg.num_aps, cfg.num_ues, cfg.num_candidates, cfg.horizon) == (4, 24, 3, 200)
        assert cfg.num_actions == 4 and cfg.idle_action == 3
        assert cfg.obs_dim == 6 and cfg.state_dim == 24 and cfg.num_joint_actions == 256
        no_idle = cfg.replace(allow_idle=False)
        assert no_idle.num_actions == 3 and no_idle.num_joint_actions == 81


# ---------------------------------------------------------------------------------------------
# EnvParams
# ---------------------------------------------------------------------------------------------


class TestEnvParams:
    @pytest.mark.parametrize("field, value", [
        ("bandwidth_hz", 0.0), ("bandwidth_hz", -1e6), ("slot_s", 0.0), ("slot_s", -0.01),
        ("pf_beta", 0.0), ("pf_beta", 1.5), ("pf_beta", -0.1),
        ("pf_lambda", -0.01), ("pf_lambda", 1.01),
        ("shadowing_std_los_db", -1.0), ("shadowing_std_nlos_db", -0.5),
        ("area_side_m", 0.0), ("min_distance_m", -1.0), ("carrier_hz", 0.0),
        ("ap_height_m", 0.0), ("ue_height_m", -1.5), ("noise_figure_db", -1.0),
        ("pathloss_exponent", 0.0), ("ue_speed_mps", -1.0), ("score_mu", -1.0),
        ("min_avg_rate_mbps", 0.0),
        ("tx_power_dbm", float("nan")), ("tx_power_dbm", float("inf")),
        ("pf_lambda", float("nan")), ("bandwidth_hz", float("inf")),
        ("noise_psd_dbm_hz", float("-inf")),
    ])
    def test_bad_values_name_the_field(self, field, value):
        with pytest.raises(ValueError, match=field):
            EnvParams(**{field: value})
        with pytest.raises(ValueError, match=field):
            EnvParams().replace(**{field: value})

    def test_boundaries_are_allowed(self):
        p = EnvParams(pf_beta=1.0, pf_lambda=0.0, shadowing_std_los_db=0.0, ue_speed_mps=0.0,
                      score_mu=0.0, noise_figure_db=0.0)
        assert p.pf_beta == 1.0
        EnvParams(pf_lambda=1.0, tx_power_dbm=-30.0)

    def test_arrays_are_checked_elementwise(self):
        EnvParams(pf_lambda=jnp.array([0.0, 0.5, 1.0]), tx_power_dbm=np.array([20.0, 30.0]))
        with pytest.raises(ValueError, match="pf_lambda"):
            EnvParams(pf_lambda=jnp.array([0.5, 1.5]))
        with pytest.raises(ValueError, match="bandwidth_hz"):
            EnvParams(bandwidth_hz=np.array([1e6, np.nan]))
        with pytest.raises(ValueError, match="pf_beta"):
            EnvParams(pf_beta=np.float32(0.0))

    def test_create_matches_config(self):
        p = EnvParams.create(EnvConfig(num_aps=3, num_ues=12))
        assert p.score_mu == 12.0
        assert (p.shadowing_std_los_db, p.shadowing_std_nlos_db) == (4.0, 7.82)
        p = EnvParams.create(EnvConfig(num_ues=7, num_candidates=2, pathloss_model="inh_office"))
        assert p.score_mu == 7.0
        assert (p.shadowing_std_los_db, p.shadowing_std_nlos_db) == (3.0, 8.03)
        p = EnvParams.create(EnvConfig(pathloss_model="free_space"))
        assert (p.shadowing_std_los_db, p.shadowing_std_nlos_db) == (0.0, 0.0)
        p = EnvParams.create(EnvConfig(pathloss_model="log_distance"))
        assert (p.shadowing_std_los_db, p.shadowing_std_nlos_db) == (8.0, 8.0)
        # overrides win, and are validated
        p = EnvParams.create(EnvConfig(), score_mu=0.0, shadowing_std_los_db=5.0, pf_lambda=1.0)
        assert (p.score_mu, p.shadowing_std_los_db, p.pf_lambda) == (0.0, 5.0, 1.0)
        with pytest.raises(ValueError, match="pf_beta"):
            EnvParams.create(EnvConfig(), pf_beta=2.0)

    def test_create_unknown_override(self):
        with pytest.raises(ValueError, match="tx_power_dB"):
            EnvParams.create(EnvConfig(), tx_power_dB=30.0)

    def test_defaults_are_design_values(self):
        p = EnvParams()
        assert (p.area_side_m, p.ap_height_m, p.ue_height_m, p.min_distance_m) == (500, 10, 1.5, 10)
        assert (p.carrier_hz, p.bandwidth_hz, p.tx_power_dbm) == (3.5e9, 10e6, 30.0)
        assert (p.noise_psd_dbm_hz, p.noise_figure_db) == (-174.0, 7.0)
        assert (p.ue_speed_mps, p.slot_s, p.pf_beta, p.pf_lambda) == (1.0, 0.01, 0.05, 0.8)

    def test_is_a_pytree(self):
        p = EnvParams()
        leaves, tree = jax.tree.flatten(p)
        assert len(leaves) == len(dataclasses.fields(EnvParams))
        assert jax.tree.unflatten(tree, leaves) == p

    def test_traced_params_are_not_validated(self):
        # Inside jit the values are unknown: building EnvParams from tracers must not raise
        # (even though 1.5 would be rejected as a concrete pf_beta).
        @jax.jit
        def f(beta, lam):
            p = EnvParams(pf_beta=beta, pf_lambda=lam)
            return p.replace(bandwidth_hz=-beta).validate().pf_beta * 2

        assert float(f(1.5, -3.0)) == 3.0
        # vmap too
        out = jax.vmap(lambda b: EnvParams(pf_beta=b).pf_beta)(jnp.array([0.0, 2.0]))
        np.testing.assert_array_equal(out, [0.0, 2.0])

    def test_traced_params_through_reset(self, small_cfg, jit_reset):
        # The environment itself does not raise on traced out-of-range parameters either.
        cfg = small_cfg

        @jax.jit
        def g(key, bad_beta):
            p = EnvParams.create(cfg, pf_beta=bad_beta)
            return env.reset(key, p, cfg)[1].avg_rate_mbps

        assert g(jax.random.key(0), 7.0).shape == (cfg.num_ues,)


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------

PROP_CFG = EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20)  # == conftest SMALL_CFG
PROP_CFG_LOG = PROP_CFG.replace(reward="log_utility", num_ues=8, horizon=10)

_params_strategy = st.fixed_dictionaries({
    "tx_power_dbm": st.floats(-10.0, 46.0),
    "bandwidth_hz": st.floats(1e5, 1e8),
    "pf_lambda": st.floats(0.0, 1.0),
    "pf_beta": st.floats(0.0, 1.0, exclude_min=True),
    "shadowing_std_los_db": st.floats(0.0, 12.0),
    "shadowing_std_nlos_db": st.floats(0.0, 12.0),
    "ue_speed_mps": st.floats(0.0, 30.0),
    "area_side_m": st.floats(60.0, 2000.0),
    "noise_figure_db": st.floats(0.0, 15.0),
    "min_distance_m": st.floats(1.0, 20.0),
})


def _check_rollout(cfg, policy_name, kw, seed):
    from hypothesis import assume

    try:
        params = EnvParams.create(cfg, **kw)
    except ValueError as e:   # a geometry refused as infeasible (tests/test_faults_inputs.py)
        assert "infeasible" in str(e), e
        assume(False)
    res = env.rollout_jit(jax.random.key(seed), baselines.make(policy_name, cfg), params, cfg, 8,
                          False)  # same call signature as test_radio_env: shared compilation
    rates = np.asarray(res.ue_rates_mbps)
    rewards = np.asarray(res.rewards)
    assert rates.shape == (8, cfg.num_ues) and rewards.shape == (8, cfg.horizon)
    assert np.all(np.isfinite(rates)) and np.all(rates >= 0), kw
    assert np.all(np.isfinite(rewards)), kw
    # nobody gets more than the interference-free Shannon rate of a very good link
    assert rates.max() <= kw["bandwidth_hz"] / 1e6 * 60, kw


@settings(max_examples=15, deadline=None)
@given(kw=_params_strategy, seed=st.integers(0, 2**31 - 1))
def test_rollout_finite_for_random_params_pf(kw, seed):
    _check_rollout(PROP_CFG, "full_reuse", kw, seed)


@settings(max_examples=10, deadline=None)
@given(kw=_params_strategy, seed=st.integers(0, 2**31 - 1))
def test_rollout_finite_for_random_params_log_utility(kw, seed):
    _check_rollout(PROP_CFG_LOG, "random", kw, seed)


_I, _K = 3, 6
_sinr_jit = jax.jit(radio.sinr)


@st.composite
def _snapshot(draw):
    log_gain = draw(st.lists(st.floats(-15.0, -5.0), min_size=_I * _K, max_size=_I * _K))
    perm = draw(st.permutations(range(_K)))
    silent = draw(st.lists(st.booleans(), min_size=_I, max_size=_I))
    serving = [-1 if s else perm[i] for i, s in enumerate(silent)]
    power = draw(st.lists(st.floats(1e-3, 100.0), min_size=_I, max_size=_I))
    noise = draw(st.floats(1e-15, 1e-9))
    return (np.power(10.0, np.array(log_gain)).reshape(_I, _K), np.array(serving, np.int32),
            np.array(power), noise)


@settings(max_examples=20, deadline=None)
@given(snap=_snapshot())
def test_sinr_properties(snap):
    gain, serving, power, noise = snap
    s = np.asarray(_sinr_jit(jnp.asarray(gain, jnp.float32), jnp.asarray(serving),
                             jnp.asarray(power, jnp.float32), jnp.float32(noise)), np.float64)
    assert s.shape == (_K,)
    assert np.all(s >= 0) and np.all(np.isfinite(s))
    served = set(int(j) for j in serving if j >= 0)
    for j in range(_K):
        if j not in served:
            assert s[j] == 0.0, f"unserved UE {j} has SINR {s[j]}"
            continue
        i = int(np.flatnonzero(serving == j)[0])
        interf = sum(power[k] * gain[k, j] for k in range(_I) if k != i and serving[k] >= 0)
        expected = power[i] * gain[i, j] / (interf + noise)
        np.testing.assert_allclose(s[j], expected, rtol=1e-4)
        assert s[j] > 0


_rate_jit = jax.jit(radio.rate_mbps)


@settings(max_examples=20, deadline=None)
@given(sinr=st.lists(st.floats(0.0, 1e9), min_size=2, max_size=16),
       bandwidth=st.floats(1e5, 1e8))
def test_rate_is_monotone_in_sinr(sinr, bandwidth):
    x = np.sort(np.array(sinr, np.float32))
    r = np.asarray(_rate_jit(jnp.asarray(x), jnp.float32(bandwidth)), np.float64)
    assert np.all(np.isfinite(r)) and np.all(r >= 0)
    assert np.all(np.diff(r) >= 0), (x, r)
    np.testing.assert_allclose(r, bandwidth * np.log2(1.0 + x.astype(np.float64)) / 1e6,
                               rtol=1e-5, atol=1e-9 * bandwidth)
    assert float(_rate_jit(jnp.float32(0.0), jnp.float32(bandwidth))) == 0.0


def test_rate_small_sinr_keeps_relative_precision():
    # log2(1 + x) ~ x / ln 2 for small x: at -60 dB, 10 MHz gives 1e-6 * 10 / ln 2 Mbit/s
    r = float(_rate_jit(jnp.float32(1e-6), jnp.float32(10e6)))
    assert math.isclose(r, 1e-6 * 10 / math.log(2), rel_tol=1e-3)


def test_in_axes_maps_only_named_fields():
    import dataclasses

    import jax.numpy as jnp

    from jaxrrm import env

    axes = EnvParams.in_axes("tx_power_dbm", "pf_lambda")
    for f in dataclasses.fields(EnvParams):
        assert getattr(axes, f.name) == (0 if f.name in ("tx_power_dbm", "pf_lambda") else None)
    with pytest.raises(ValueError, match="bogus"):
        EnvParams.in_axes("bogus")
    cfg = EnvConfig(num_aps=2, num_ues=5, num_candidates=2, horizon=5)
    powers = jnp.array([10.0, 20.0, 30.0])
    batched = EnvParams.create(cfg, tx_power_dbm=powers, pf_lambda=jnp.array([0.2, 0.5, 0.9]))
    key = jax.random.key(0)
    _, states = jax.vmap(lambda p: env.reset(key, p, cfg), in_axes=(axes,))(batched)
    for i, p_dbm in enumerate([10.0, 20.0, 30.0]):
        _, s = env.reset(key, EnvParams.create(cfg, tx_power_dbm=p_dbm), cfg)
        np.testing.assert_allclose(states.avg_rate_mbps[i], s.avg_rate_mbps, rtol=1e-5)
    # More power, more rate (same drop, noise-limited part grows).
    assert float(states.avg_rate_mbps[2].sum()) > float(states.avg_rate_mbps[0].sum())
