"""Hostile physical input (issue 15): wrong types, per-AP arrays of the wrong length, values
that overflow float32, geometry that cannot meet its own constraints and seeds that would wrap
are refused when built, with a ValueError naming the field; every valid extreme rolls out
finite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, data, env
from jaxrrm.config import MAX_SEED, check_feasible, check_seed

CFG = EnvConfig(num_aps=3, num_ues=6, num_candidates=2, horizon=6)


@pytest.mark.parametrize("value", ["30", True, np.bool_(True), 1 + 2j, np.array(["30"]),
                                   np.array([True, False, True]), b"30"])
def test_non_numeric_physics_refused(value):
    with pytest.raises(ValueError, match="tx_power_dbm.*real number"):
        EnvParams.create(CFG, tx_power_dbm=value)
    with pytest.raises(ValueError, match="pf_lambda"):
        EnvParams(pf_lambda=value)


@pytest.mark.parametrize("field, value", [
    ("tx_power_dbm", 400.0), ("tx_power_dbm", -200.0), ("bandwidth_hz", 1e15),
    ("bandwidth_hz", 0.5), ("noise_psd_dbm_hz", -500.0), ("noise_psd_dbm_hz", 0.0),
    ("shadowing_std_nlos_db", 300.0), ("noise_figure_db", 200.0), ("pathloss_exponent", 30.0),
    ("carrier_hz", 1e15), ("area_side_m", 1e9), ("ue_speed_mps", 1e6), ("slot_s", 1e-12),
    ("min_avg_rate_mbps", 0.0), ("score_mu", np.inf), ("pf_lambda", np.nan),
])
def test_values_beyond_float32_safe_ranges_refused(field, value):
    with pytest.raises(ValueError, match=f"{field}=.*allowed range"):
        EnvParams.create(CFG, **{field: value})


def test_per_ap_array_of_wrong_length_refused_even_under_jit():
    good = EnvParams.create(CFG, tx_power_dbm=np.array([30.0, 20.0, 25.0]))
    env.reset(jax.random.key(0), good, CFG)
    bad = EnvParams.create(CFG, tx_power_dbm=np.array([30.0, 20.0]))
    with pytest.raises(ValueError, match=r"tx_power_dbm has shape \(2,\).*\(3,\)"):
        env.reset(jax.random.key(0), bad, CFG)
    with pytest.raises(ValueError, match="tx_power_dbm has shape"):
        jax.jit(env.reset, static_argnums=2)(jax.random.key(0), bad, CFG)
    with pytest.raises(ValueError, match="pf_lambda has shape"):
        env.reset(jax.random.key(0), good.replace(pf_lambda=np.array([0.5, 0.6])), CFG)
    # A batch for vmap is fine: each episode's parameters have the per-AP shape.
    batch = good.replace(tx_power_dbm=np.tile(np.array([30.0, 20.0, 25.0]), (4, 1)))
    axes = EnvParams.in_axes("tx_power_dbm")
    jax.vmap(lambda p: env.reset(jax.random.key(0), p, CFG), in_axes=(axes,))(batch)


@pytest.mark.parametrize("cfg, kw", [
    (CFG.replace(num_aps=4), dict(area_side_m=30.0)),            # 99% of the area excluded
    (CFG.replace(num_aps=4, ap_layout="random"), dict(area_side_m=40.0)),
    (CFG.replace(num_aps=2, ap_positions_m=((10.0, 10.0), (30.0, 30.0))),
     dict(area_side_m=40.0, min_distance_m=25.0)),
])
def test_infeasible_geometry_refused(cfg, kw):
    with pytest.raises(ValueError, match="min_distance_m=.*infeasible.*tries"):
        EnvParams.create(cfg, **kw)


def test_feasible_geometry_accepted_and_drops_keep_the_distance():
    cfg = CFG.replace(num_aps=4, num_ues=64)
    params = EnvParams.create(cfg, area_side_m=60.0, min_distance_m=5.0)
    _, state = jax.jit(env.reset, static_argnums=2)(jax.random.key(1), params, cfg)
    d = np.linalg.norm(np.asarray(state.ue_pos_m)[None] - np.asarray(state.ap_pos_m)[:, None],
                       axis=-1)
    assert d.min() >= 5.0 - 1e-4
    # More tries make a crowded geometry feasible.
    with pytest.raises(ValueError, match="infeasible"):
        EnvParams.create(CFG.replace(num_aps=4), area_side_m=60.0, min_distance_m=14.0)
    EnvParams.create(CFG.replace(num_aps=4, min_drop_tries=64), area_side_m=60.0,
                     min_distance_m=14.0)


def test_mobility_step_beyond_the_area_refused():
    mobile = CFG.replace(mobility=True)
    with pytest.raises(ValueError, match="ue_speed_mps=.*infeasible with mobility"):
        EnvParams.create(mobile, ue_speed_mps=5000.0, slot_s=0.2)
    EnvParams.create(CFG, ue_speed_mps=5000.0, slot_s=0.2)   # no motion: Doppler only
    params = EnvParams.create(mobile, ue_speed_mps=9000.0)      # 90 m a slot in 500 m
    check_feasible(params, mobile)
    res = env.rollout_jit(jax.random.key(0), baselines.make("full_reuse", mobile), params,
                          mobile, 2, False)
    assert np.all(np.isfinite(np.asarray(res.ue_rates_mbps)))


def test_config_refuses_non_numeric_positions_and_bool_counts():
    with pytest.raises(ValueError, match="ap_positions_m"):
        EnvConfig(num_aps=1, ap_positions_m=(("1", "2"),))
    with pytest.raises(ValueError, match="ap_positions_m"):
        EnvConfig(num_aps=1, ap_positions_m=((True, 2.0),))
    with pytest.raises(ValueError, match="num_aps"):
        EnvConfig(num_aps=True)
    with pytest.raises(ValueError, match="horizon"):
        EnvConfig(horizon="200")


def test_seeds_that_would_wrap_refused():
    assert check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 2**32, 1.0, True, "3"):
        with pytest.raises(ValueError, match="seed"):
            check_seed(bad)
    with pytest.raises(ValueError, match="seed"):
        data.collect(2**32, "tdm", EnvParams.create(CFG), CFG, 6)
    from jaxrrm import behaviour_data

    with pytest.raises(ValueError, match="seed"):
        behaviour_data.DatasetSpec(behaviour="tdm", size=10, seed=2**32)


#: Corners of the valid ranges: each field at its extremes, and combinations that push the
#: received power, the noise and the path loss to their limits together.
EXTREMES = [dict(tx_power_dbm=100.0), dict(tx_power_dbm=-100.0), dict(bandwidth_hz=1.0),
            dict(bandwidth_hz=1e12), dict(noise_psd_dbm_hz=-250.0),
            dict(noise_psd_dbm_hz=-100.0), dict(noise_figure_db=50.0),
            dict(shadowing_std_los_db=30.0, shadowing_std_nlos_db=30.0),
            dict(carrier_hz=1e6), dict(carrier_hz=1e12), dict(area_side_m=1e6),
            dict(area_side_m=20.0, min_distance_m=1.0), dict(ap_height_m=1e4),
            dict(ue_speed_mps=1e4), dict(slot_s=1e-9), dict(slot_s=1e3),
            dict(pf_beta=1e-6), dict(pf_lambda=0.0), dict(pf_lambda=1.0),
            dict(min_avg_rate_mbps=1e-30), dict(min_avg_rate_mbps=1e6), dict(score_mu=1e6),
            dict(tx_power_dbm=100.0, noise_psd_dbm_hz=-250.0, bandwidth_hz=1.0,
                 noise_figure_db=0.0, area_side_m=20.0, min_distance_m=1.0,
                 shadowing_std_los_db=30.0, shadowing_std_nlos_db=30.0),
            dict(tx_power_dbm=-100.0, noise_psd_dbm_hz=-100.0, bandwidth_hz=1e12,
                 noise_figure_db=50.0, area_side_m=1e6, carrier_hz=1e12,
                 shadowing_std_los_db=30.0, shadowing_std_nlos_db=30.0)]


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [
    CFG, CFG.replace(obs_interference=True, obs_clock=True, obs_share="global"),
    CFG.replace(pathloss_model="log_distance", mobility=True),
    CFG.replace(pathloss_model="free_space", reward="log_utility")],
    ids=["umi", "umi-full-obs", "log-distance-mobile", "free-space-log-utility"])
def test_every_baseline_finite_at_extreme_valid_settings(cfg):
    """Every output of every baseline's rollout (rates, rewards, and every trajectory leaf:
    observations, states, masks) is finite at each corner of the valid ranges; one compiled
    rollout per baseline serves every parameter set (the parameters are traced)."""
    param_sets = []
    for kw in EXTREMES + [dict(pathloss_exponent=10.0), dict(pathloss_exponent=0.5)]:
        try:
            param_sets.append(EnvParams.create(cfg, **kw))
        except ValueError as e:   # slot_s=1e3 with mobility: 1 km a slot, refused
            assert cfg.mobility and "infeasible with mobility" in str(e), (kw, e)
    assert len(param_sets) >= len(EXTREMES)
    stacked = jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v, jnp.float32) for v in x]),
                           *param_sets)
    for name in baselines.NAMES:
        policy = baselines.make(name, cfg)
        fn = jax.jit(jax.vmap(lambda p: env.rollout(jax.random.key(3), policy, p, cfg, 2,
                                                    return_trajectory=True)))
        res = fn(stacked)
        for path, leaf in jax.tree_util.tree_flatten_with_path(res)[0]:
            leaf = np.asarray(leaf)
            if leaf.dtype.kind == "f":
                bad = ~np.isfinite(leaf).reshape(len(param_sets), -1).all(axis=1)
                assert not bad.any(), (name, jax.tree_util.keystr(path),
                                       [param_sets[i] for i in np.flatnonzero(bad)][:1])


@pytest.mark.parametrize("value", [[500.0, 500.0, 500.0], ["30", "30", "30"], [-500.0], None,
                                   object(), 10**400, [[1.0], [2.0, 3.0]]])
def test_sequences_none_objects_and_huge_ints_refused(value):
    with pytest.raises(ValueError, match="tx_power_dbm"):
        EnvParams.create(CFG, tx_power_dbm=value)


def test_sequences_and_number_types_become_arrays_and_floats():
    from decimal import Decimal
    from fractions import Fraction

    p = EnvParams.create(CFG, tx_power_dbm=[30.0, 20.0, 25.0], pf_lambda=Fraction(1, 2),
                         area_side_m=Decimal("400"))
    assert isinstance(p.tx_power_dbm, np.ndarray) and p.tx_power_dbm.dtype == np.float32
    assert p.pf_lambda == 0.5 and p.area_side_m == 400.0
    env.reset(jax.random.key(0), p, CFG)


@pytest.mark.parametrize("field, value", [("horizon", 3_000_000_000), ("num_aps", 5000),
                                          ("reassociation_slots", 3_000_000_000),
                                          ("min_drop_tries", 100_000_000)])
def test_config_integer_upper_bounds(field, value):
    with pytest.raises(ValueError, match=field):
        EnvConfig(**{field: value})
