"""Cross-checks of the JAX simulator against the NumPy float64 reference (jaxrrm.testing.reference).

The same random draws go into both implementations; results must agree up to float32 rounding.
JAX functions are jitted once per configuration (module-level caches) and horizons are short, so
the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, channel, env, metrics, radio, topology, units
from jaxrrm.testing import reference as ref

RTOL = 1e-4
# Absolute slack for quantities that can be ~0 (rates of weak UEs, log features near 0, rewards).
ATOL_RATE = 2e-5  # Mbit/s: float32 log2(1 + sinr) loses ~1e-7 absolute in the log
ATOL_FEAT = 2e-5

# ---------------------------------------------------------------------------------------------
# Jitted JAX entry points (one compile per configuration / parameter structure).
# ---------------------------------------------------------------------------------------------

_init_jit = jax.jit(env.init_state, static_argnums=(7,))
_transition_jit = jax.jit(env.transition, static_argnums=(4,))
_observe_jit = jax.jit(env.observe, static_argnums=(2,))


def f32(x):
    """Round through float32 (what JAX sees) and back to float64 (what the reference sees)."""
    return np.asarray(np.asarray(x, np.float32), np.float64)


def draws(seed, params, cfg, *, empty_ap=None, near_border=False):
    """One episode's draws (from the reference's own reset) rounded to float32.

    ``empty_ap``: make that AP's links 60 dB weaker so that no UE associates with it.
    ``near_border``: put a few UEs close to the area's borders heading outwards (mobility).
    """
    _, st = ref.reset(np.random.default_rng(seed), params, cfg)
    ap, ue, head = st.ap_pos_m, st.ue_pos_m.copy(), st.heading_rad.copy()
    los, sh, fad = st.los, st.shadowing_db.copy(), st.fading
    side = float(params.area_side_m)
    if near_border:
        ue[0], head[0] = (0.7, 240.0), math.pi * 0.97  # left border, heading left
        ue[1], head[1] = (260.0, side - 1.3), math.pi * 0.45  # top border, heading up
        ue[2], head[2] = (side - 2.0, 3.0), -math.pi * 0.2  # corner, heading right-down
        # UE 3 crosses the midline between the APs at (125, 125) and (375, 125) heading right,
        # with no shadowing and NLOS everywhere, so a refresh re-associates it.
        ue[3], head[3] = (0.497 * side, 0.25 * side), 0.0
        los = los.copy()
        los[:, 3] = False
        sh[:, 3] = 0.0
    if empty_ap is not None:
        sh[empty_ap] -= 60.0
    return tuple(f32(a) if a.dtype != bool else a for a in (ap, ue, head, los, sh, fad))


def close(a, b, rtol=RTOL, atol=0.0, what=""):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                               atol=atol, err_msg=what)


def equal(a, b, what=""):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)


def compare_obs(obs_j, obs_r, cand_j, cand_r, what=""):
    close(obs_j.agents, obs_r.agents, rtol=1e-5, atol=ATOL_FEAT, what=f"{what} agents")
    close(obs_j.global_state, obs_r.global_state, rtol=1e-5, atol=ATOL_FEAT, what=f"{what} gs")
    equal(obs_j.action_mask, obs_r.action_mask, what=f"{what} mask")
    equal(cand_j, cand_r, what=f"{what} candidates")


def compare_state(st_j, st_r, what=""):
    equal(st_j.time, st_r.time, f"{what} time")
    close(st_j.ue_pos_m, st_r.ue_pos_m, rtol=1e-5, atol=1e-3, what=f"{what} ue_pos")
    close(np.cos(st_j.heading_rad), np.cos(st_r.heading_rad), rtol=0, atol=1e-5, what=what)
    close(np.sin(st_j.heading_rad), np.sin(st_r.heading_rad), rtol=0, atol=1e-5, what=what)
    equal(st_j.los, st_r.los, f"{what} los")
    close(st_j.large_gain, st_r.large_gain, what=f"{what} large_gain")
    equal(st_j.association, st_r.association, f"{what} association")
    close(st_j.fading, st_r.fading, rtol=1e-5, atol=1e-5, what=f"{what} fading")
    close(st_j.avg_rate_mbps, st_r.avg_rate_mbps, what=f"{what} avg_rate")
    equal(st_j.candidates, st_r.candidates, f"{what} candidates")


# ---------------------------------------------------------------------------------------------
# Units and channel
# ---------------------------------------------------------------------------------------------

def test_units():
    x = np.linspace(-150.0, 60.0, 57)
    close(units.db_to_linear(x), ref.db_to_linear(x), rtol=2e-6)
    lin = ref.db_to_linear(x)
    close(units.linear_to_db(lin.astype(np.float32)), ref.linear_to_db(lin), rtol=0, atol=1e-4)
    close(units.dbm_to_w(x), ref.dbm_to_w(x), rtol=2e-6)
    close(units.w_to_dbm(ref.dbm_to_w(x).astype(np.float32)), x, rtol=0, atol=1e-4)
    b = np.array([1e5, 1e6, 10e6, 20e6, 100e6])
    close(units.thermal_noise_dbm(b, 7.0), ref.thermal_noise_dbm(b, 7.0), rtol=1e-6)
    close(units.thermal_noise_w(b, 9.0, -170.0), ref.thermal_noise_w(b, 9.0, -170.0), rtol=2e-6)
    assert ref.thermal_noise_dbm(10e6, 7.0) == pytest.approx(-97.0)
    assert ref.noise_w(EnvParams()) == pytest.approx(10 ** (-12.7), rel=1e-12)


@pytest.mark.parametrize("heights", [(10.0, 1.5), (25.0, 2.5), (6.0, 1.2)])
@pytest.mark.parametrize("fc", [2.0e9, 3.5e9, 28e9])
def test_pathloss_umi(heights, fc):
    h_bs, h_ut = heights
    d2 = np.concatenate([np.linspace(1.0, 30.0, 30), np.geomspace(31.0, 5000.0, 80)])
    d3 = np.hypot(d2, h_bs - h_ut)
    for los in (True, False):
        got = channel.pathloss_umi_db(d2, d3, los, fc, h_bs, h_ut)
        close(got, ref.pathloss_umi_db(d2, d3, los, fc, h_bs, h_ut), rtol=2e-6, what=f"los={los}")
    los = np.random.default_rng(0).random(d2.shape) < 0.5
    close(channel.pathloss_umi_db(d2, d3, los, fc, h_bs, h_ut),
          ref.pathloss_umi_db(d2, d3, los, fc, h_bs, h_ut), rtol=2e-6)
    # NLOS is never below LOS; both increase with distance.
    nl = ref.pathloss_umi_db(d2, d3, False, fc, h_bs, h_ut)
    lo = ref.pathloss_umi_db(d2, d3, True, fc, h_bs, h_ut)
    assert np.all(nl >= lo) and np.all(np.diff(lo) > 0) and np.all(np.diff(nl) > 0)


def test_pathloss_other_models_and_los_probability():
    d = np.concatenate([np.linspace(0.0, 20.0, 81), np.geomspace(20.0, 3000.0, 60)])
    dp = np.maximum(d, 0.5)
    for fc in (2.4e9, 3.5e9, 60e9):
        for los in (True, False):
            close(channel.pathloss_inh_db(dp, los, fc), ref.pathloss_inh_db(dp, los, fc),
                  rtol=2e-6)
        close(channel.pathloss_free_space_db(dp, fc), ref.pathloss_free_space_db(dp, fc),
              rtol=2e-6, atol=1e-5)
        for n in (2.0, 3.5, 4.2):
            close(channel.pathloss_log_distance_db(dp, fc, n),
                  ref.pathloss_log_distance_db(dp, fc, n), rtol=2e-6, atol=1e-5)
    close(channel.los_probability_umi(d), ref.los_probability_umi(d), rtol=1e-6, atol=1e-7)
    close(channel.los_probability_inh(d), ref.los_probability_inh(d), rtol=1e-6, atol=1e-7)
    assert ref.los_probability_umi(18.0) == 1.0 and ref.los_probability_inh(1.2) == 1.0
    assert ref.los_probability_inh(6.5) == pytest.approx(0.32)
    # Friis at 1 m, 3.5 GHz: 20 log10(4 pi fc / c) = 43.3 dB.
    assert ref.pathloss_free_space_db(1.0, 3.5e9) == pytest.approx(43.3, abs=0.05)
    # The model dispatchers with EnvParams.
    p = EnvParams(ap_height_m=12.0, ue_height_m=1.7, pathloss_exponent=3.1)
    d3 = np.hypot(dp, 10.3)
    los = np.random.default_rng(1).random(d.shape) < 0.4
    for model in ("umi", "inh_office", "free_space", "log_distance"):
        close(channel.pathloss_db(model, dp, d3, los, p), ref.pathloss_db(model, dp, d3, los, p),
              rtol=2e-6, atol=1e-5, what=model)
        close(channel.los_probability(model, d), ref.los_probability(model, d), rtol=1e-6,
              atol=1e-7, what=model)
    close(channel.shadowing_std_db(los, p), ref.shadowing_std_db(los, p))


def test_fading_process():
    x = np.linspace(0.0, 300.0, 3001)
    close(jax.jit(channel.bessel_j0)(x), ref.bessel_j0(x), rtol=0, atol=2e-6)
    try:
        from scipy.special import j0
    except ImportError:  # scipy is a dev extra
        pass
    else:
        close(ref.bessel_j0(x), j0(x), rtol=0, atol=1e-13)
    for v, fc, ts in [(1.0, 3.5e9, 0.01), (3.0, 2e9, 1e-3), (300.0, 3.5e9, 0.01)]:
        close(channel.fading_correlation(v, fc, ts), ref.fading_correlation(v, fc, ts),
              rtol=0, atol=2e-6)
    assert float(ref.fading_correlation(1.0, 3.5e9, 0.01)) == pytest.approx(0.870, abs=1e-3)
    rng = np.random.default_rng(3)
    h, e = f32(rng.normal(size=(2, 3, 7))), f32(rng.normal(size=(2, 3, 7)))
    close(channel.advance_fading(h, e, 0.87), ref.advance_fading(h, e, 0.87), rtol=1e-5,
          atol=1e-6)
    close(channel.fading_power(h), ref.fading_power(h), rtol=1e-6)


def test_geometry():
    rng = np.random.default_rng(4)
    for i in (1, 2, 3, 4, 5, 7, 9):
        close(topology.grid_positions(i, 500.0), ref.grid_positions(i, 500.0), rtol=1e-6)
    ap, ue = f32(rng.uniform(0, 500, (4, 2))), f32(rng.uniform(0, 500, (24, 2)))
    close(topology.distances_2d_m(ap, ue), ref.distances_2d_m(ap, ue), rtol=1e-5)
    head = f32(rng.uniform(0, 2 * np.pi, 24))
    ue[:3] = [[0.2, 100.0], [499.9, 3.0], [250.0, 499.5]]
    for dist in (1.0, 3.7):
        pj, hj = topology.move_ues(ue, head, dist, 500.0)
        pr, hr = ref.move_ues(ue, head, dist, 500.0)
        close(pj, pr, rtol=1e-5, atol=1e-3)
        close(np.cos(hj), np.cos(hr), rtol=0, atol=1e-5)
        close(np.sin(hj), np.sin(hr), rtol=0, atol=1e-5)
        assert np.all((pr >= 0) & (pr <= 500))


# ---------------------------------------------------------------------------------------------
# Radio layer on random snapshots
# ---------------------------------------------------------------------------------------------

def _random_snapshot(rng, i, k):
    gain = f32(10.0 ** rng.uniform(-14.0, -8.0, (i, k)))
    serving = np.full(i, -1, np.int32)
    picks = rng.choice(k, size=i, replace=False)
    active = rng.random(i) < 0.75
    serving[active] = picks[active]
    assoc = rng.integers(0, i, k).astype(np.int32)
    return gain, serving, assoc


@jax.jit
def _radio_jax(gain, serving, assoc, power, noise, avg, rate, w, a0, a1, floor, lam):
    """Every radio function in one jitted call (one compile per shape)."""
    num_aps = gain.shape[0]
    return dict(
        sinr=radio.sinr(gain, serving, power, noise),
        sinr_all=radio.sinr_all_active(gain, assoc, power, noise),
        init_avg=radio.initial_average(gain, assoc, power, noise, 10e6, num_aps),
        rate=radio.rate_mbps(rate, 20e6),  # ``rate`` holds SINRs here
        update=radio.update_average(avg, w, 0.05),  # ``w`` holds rates here
        weights=radio.pf_weights(avg, floor),
        pf=radio.pf_reward(w, jnp.broadcast_to(1.0 / jnp.maximum(avg, floor), avg.shape), lam),
        log_utility=radio.log_utility_reward(a1, a0),
    )


@pytest.mark.parametrize("shape", [(3, 10), (4, 24), (1, 5), (7, 40)])
def test_radio_functions(shape):
    i, k = shape
    noise = ref.noise_w(EnvParams())
    for seed in range(4):
        rng = np.random.default_rng(seed)
        gain, serving, assoc = _random_snapshot(rng, i, k)
        power = 1.0 if seed % 2 == 0 else f32(rng.uniform(0.2, 2.0, i))
        s_r = ref.sinr(gain, serving, power, noise)
        r_r = ref.rate_mbps(s_r, 20e6)
        avg = f32(rng.uniform(0.0, 30.0, k))
        avg[0], avg[-1] = 0.0, 1e-9  # below both floors
        a0 = f32(rng.uniform(0.5, 30.0, k))
        a1 = f32(a0 * rng.uniform(0.9, 1.1, k))
        floor = (1e-6, 0.5)[seed // 2]
        lam = (0.0, 0.5, 0.8, 1.0)[seed]
        out = _radio_jax(jnp.asarray(gain, jnp.float32), jnp.asarray(serving), jnp.asarray(assoc),
                         jnp.asarray(power, jnp.float32), noise, avg, f32(s_r), f32(r_r), a0, a1,
                         floor, lam)
        what = f"shape={shape} seed={seed}"
        close(out["sinr"], s_r, rtol=1e-5, what=f"{what} sinr")
        assert np.all(s_r[np.setdiff1d(np.arange(k), serving)] == 0)
        close(out["sinr_all"], ref.sinr_all_active(gain, assoc, power, noise), rtol=1e-5,
              what=f"{what} sinr_all_active")
        close(out["init_avg"], ref.initial_average(gain, assoc, power, noise, 10e6, i), rtol=1e-5,
              what=f"{what} initial_average")
        close(out["rate"], r_r, rtol=1e-5, what=f"{what} rate")
        close(out["update"], ref.update_average(avg, r_r, 0.05), rtol=1e-5, atol=1e-6,
              what=f"{what} update_average")
        w_r = ref.pf_weights(avg, floor)
        assert w_r[0] == w_r[-1] == 1.0 / floor
        close(out["weights"], w_r, rtol=1e-6, what=f"{what} pf_weights")
        close(out["pf"], ref.pf_reward(r_r, w_r, lam), rtol=1e-5, atol=1e-6, what=f"{what} pf")
        close(out["log_utility"], ref.log_utility_reward(a1, a0), rtol=1e-4, atol=1e-6,
              what=f"{what} log_utility")
    # Batched reference == per-row reference.
    g2 = np.stack([gain, gain[:, ::-1]])
    s2 = np.stack([serving, serving])
    for b in range(2):
        close(ref.sinr(g2, s2, 1.0, noise)[b], ref.sinr(g2[b], s2[b], 1.0, noise), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Environment: init_state and multi-step transitions
# ---------------------------------------------------------------------------------------------

CFG_SMALL = EnvConfig(num_aps=3, num_ues=10, num_candidates=3, horizon=5)
CFG_SMALL_LOG = CFG_SMALL.replace(reward="log_utility")
CFG_DEFAULT = EnvConfig(horizon=5)
CFG_MOBILE = EnvConfig(num_aps=4, num_ues=16, num_candidates=3, horizon=5, mobility=True,
                       reassociation_slots=2)
CFG_NO_IDLE = EnvConfig(num_aps=3, num_ues=10, num_candidates=2, horizon=5, allow_idle=False)
CFG_SPARSE = EnvConfig(num_aps=3, num_ues=5, num_candidates=3, horizon=5)

# (name, cfg, params overrides, draw options)
SCENARIOS = [
    ("small", CFG_SMALL, {}, {}),
    ("small_log_utility", CFG_SMALL_LOG, dict(pf_beta=0.2), {}),
    ("default", CFG_DEFAULT, {}, {}),
    ("mobile", CFG_MOBILE, dict(ue_speed_mps=300.0), dict(near_border=True)),
    ("no_idle_empty_ap", CFG_NO_IDLE, {}, dict(empty_ap=1)),
    ("idle_empty_ap", CFG_SMALL, {}, dict(empty_ap=2)),
    ("sparse_floor_per_ap_power", CFG_SPARSE,
     dict(min_avg_rate_mbps=3.0, pf_lambda=1.0,
          tx_power_dbm=np.array([30.0, 24.0, 33.0], np.float32)), {}),
    ("inh_office", EnvConfig(num_aps=3, num_ues=10, horizon=5, pathloss_model="inh_office",
                             ap_layout="random"), dict(area_side_m=60.0, carrier_hz=28e9), {}),
    ("log_distance", CFG_SMALL.replace(pathloss_model="log_distance"), {}, {}),
    ("free_space", CFG_SMALL.replace(pathloss_model="free_space"), {}, {}),
]


@pytest.mark.parametrize("name,cfg,overrides,opts", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_env_init_and_transition(name, cfg, overrides, opts):
    params = EnvParams.create(cfg, **overrides)
    # The path-loss variants only change the large-scale gain: init_state covers them.
    num_steps = {"inh_office": 0, "log_distance": 0, "free_space": 0}.get(name, 6)
    for seed in (11, 12):
        rng = np.random.default_rng(seed + 100)
        d = draws(seed, params, cfg, **opts)
        obs_j, st_j = _init_jit(*d, params, cfg)
        obs_r, st_r = ref.init_state(*d, params, cfg)
        compare_state(st_j, st_r, f"{name} init")
        compare_obs(obs_j, obs_r, st_j.candidates, st_r.candidates, f"{name} init")
        if "empty_ap" in opts:
            assert not np.any(st_r.association == opts["empty_ap"])
            assert np.all(st_r.candidates[opts["empty_ap"]] == -1)
        assoc0 = st_r.association.copy()

        n_masked = 0
        for t in range(num_steps):
            acts = rng.integers(-1, cfg.num_actions + 1, cfg.num_aps).astype(np.int32)
            innov = f32(rng.standard_normal((2, cfg.num_aps, cfg.num_ues)) * math.sqrt(0.5))
            out_j = _transition_jit(st_j, jnp.asarray(acts), innov, params, cfg)
            out_r = ref.transition(st_r, acts, innov, params, cfg)
            obs_j, st_j, rew_j, term_j, trunc_j, info_j = out_j
            obs_r, st_r, rew_r, term_r, trunc_r, info_r = out_r
            what = f"{name} seed={seed} t={t} actions={acts}"
            compare_state(st_j, st_r, what)
            compare_obs(obs_j, obs_r, st_j.candidates, st_r.candidates, what)
            close(rew_j, rew_r, rtol=RTOL, atol=1e-5, what=f"{what} reward")
            assert bool(term_j) is bool(term_r) is False
            assert bool(trunc_j) == bool(trunc_r) == (t + 1 >= cfg.horizon)
            equal(info_j["serving"], info_r["serving"], f"{what} serving")
            equal(info_j["masked"], info_r["masked"], f"{what} masked")
            close(info_j["rates_mbps"], info_r["rates_mbps"], atol=ATOL_RATE, what=f"{what} rate")
            close(info_j["sinr"], info_r["sinr"], rtol=RTOL, what=f"{what} sinr")
            close(info_j["pf_weights"], info_r["pf_weights"], what=f"{what} weights")
            n_masked += int(np.sum(info_r["masked"]))
            # Structural checks: unserved UEs get nothing; an AP without candidates and without
            # idle has no valid action, so nothing it does is flagged as masked.
            served = info_r["serving"][info_r["serving"] >= 0]
            assert np.all(info_r["rates_mbps"][np.setdiff1d(np.arange(cfg.num_ues), served)] == 0)
            if not cfg.allow_idle and "empty_ap" in opts:
                assert not info_r["masked"][opts["empty_ap"]]
        assert n_masked > 0 or num_steps == 0  # the random actions include masked ones
        if opts.get("near_border"):
            assert assoc0[3] == 0 and st_r.association[3] == 1  # re-associated on a refresh


def test_masking_rules():
    """Masked / serving rules on hand-made candidates, JAX vs reference."""
    cand = np.array([[4, 7, -1], [-1, -1, -1], [1, 2, 3]], np.int32)
    for cfg in (EnvConfig(num_aps=3, num_ues=10, num_candidates=3),
                EnvConfig(num_aps=3, num_ues=10, num_candidates=3, allow_idle=False)):
        for acts in ([0, 0, 0], [2, 3, 3], [3, 2, 1], [-1, 4, 5], [1, 0, 2]):
            sj, mj = env.actions_to_serving(jnp.asarray(acts), jnp.asarray(cand), cfg)
            sr, mr = ref.actions_to_serving(np.array(acts), cand, cfg)
            equal(sj, sr, f"{cfg.allow_idle} {acts}")
            equal(mj, mr, f"{cfg.allow_idle} {acts}")
    sr, mr = ref.actions_to_serving(np.array([2, 3, 3]), cand, EnvConfig(num_aps=3, num_ues=10))
    equal(sr, [-1, -1, -1])
    equal(mr, [True, False, False])
    sr, mr = ref.actions_to_serving(np.array([2, 0, 3]), cand,
                                    EnvConfig(num_aps=3, num_ues=10, allow_idle=False))
    equal(sr, [-1, -1, -1])
    equal(mr, [True, False, True])


def test_candidate_ties_lower_index_first():
    cfg = EnvConfig(num_aps=2, num_ues=8, num_candidates=3, horizon=5)
    params = EnvParams.create(cfg)
    d = draws(5, params, cfg)
    _, st_j = _init_jit(*d, params, cfg)
    assoc = np.asarray(st_j.association)
    avg = np.full(cfg.num_ues, 4.0, np.float32)  # every weight tied
    st_j = st_j.replace(avg_rate_mbps=jnp.asarray(avg))
    obs_j, cand_j = _observe_jit(st_j, params, cfg)
    obs_r, cand_r = ref.observe(ref.as_ref_state(st_j), params, cfg)
    equal(cand_j, cand_r)
    for i in range(cfg.num_aps):
        own = np.nonzero(assoc == i)[0][: cfg.num_candidates]
        equal(cand_r[i][: own.size], own)
    # Ties among some UEs, larger weight of another.
    avg = np.where(np.arange(cfg.num_ues) % 3 == 0, 2.0, 5.0).astype(np.float32)
    st_j = st_j.replace(avg_rate_mbps=jnp.asarray(avg))
    obs_j, cand_j = _observe_jit(st_j, params, cfg)
    obs_r, cand_r = ref.observe(ref.as_ref_state(st_j), params, cfg)
    equal(cand_j, cand_r)
    close(obs_j.agents, obs_r.agents, rtol=1e-5, atol=ATOL_FEAT)


def test_reference_batched_env_matches_per_episode():
    cfg = CFG_MOBILE
    params = EnvParams.create(cfg, ue_speed_mps=50.0)
    gens = [np.random.default_rng(s) for s in (1, 2, 3)]
    obs_b, st_b = ref.reset([np.random.default_rng(s) for s in (1, 2, 3)], params, cfg)
    singles = [ref.reset(g, params, cfg) for g in gens]
    rng = np.random.default_rng(9)
    for _ in range(4):
        acts = rng.integers(0, cfg.num_actions, (3, cfg.num_aps))
        innov = rng.standard_normal((3, 2, cfg.num_aps, cfg.num_ues)) * math.sqrt(0.5)
        obs_b, st_b, rew_b, _, trunc_b, info_b = ref.transition(st_b, acts, innov, params, cfg)
        for e in range(3):
            o, s, r, _, tr, info = ref.transition(singles[e][1], acts[e], innov[e], params, cfg)
            singles[e] = (o, s)
            close(obs_b.agents[e], o.agents, rtol=1e-12, atol=1e-12)
            close(st_b.large_gain[e], s.large_gain, rtol=1e-12)
            close(st_b.avg_rate_mbps[e], s.avg_rate_mbps, rtol=1e-12)
            equal(st_b.candidates[e], s.candidates)
            close(rew_b[e], r, rtol=1e-12)
            close(info_b["rates_mbps"][e], info["rates_mbps"], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 24), (5, 24), (16, 10), (3, 7)])
def test_metrics(shape):
    rng = np.random.default_rng(sum(shape))
    x = f32(rng.gamma(2.0, 3.0, shape))
    assert float(metrics.sum_rate(x)) == pytest.approx(ref.sum_rate(x), rel=1e-5)
    assert ref.sum_rate(x) == pytest.approx(np.sum(x) / shape[0], rel=1e-12)
    for q in (0.0, 5.0, 10.0, 50.0, 97.5, 100.0):
        assert float(metrics.percentile_rate(x, q)) == pytest.approx(
            ref.percentile_rate(x, q), rel=1e-5, abs=1e-6)
        assert ref.percentile_rate(x, q) == pytest.approx(np.percentile(x, q), rel=1e-12)
    for mu in (0.0, 1.0, float(shape[1])):
        assert float(metrics.score(x, mu)) == pytest.approx(ref.score(x, mu), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Baselines on the same observations
# ---------------------------------------------------------------------------------------------

_POLICY_JIT = {}


def _jax_policy(name, cfg):
    if (name, cfg) not in _POLICY_JIT:
        _POLICY_JIT[name, cfg] = jax.jit(baselines.make(name, cfg))
    return _POLICY_JIT[name, cfg]


@pytest.mark.parametrize("cfg,opts", [(CFG_SMALL, {}), (CFG_DEFAULT, {}), (CFG_SPARSE, {}),
                                      (CFG_NO_IDLE, dict(empty_ap=1))],
                         ids=["small", "default", "sparse", "no_idle_empty_ap"])
def test_baselines_match(cfg, opts):
    params = EnvParams.create(cfg)
    key = jax.random.key(0)
    rng = np.random.default_rng(7)
    for seed in (21, 22):
        obs_j, st_j = _init_jit(*draws(seed, params, cfg, **opts), params, cfg)
        for t in range(4):
            obs_r, st_r = ref.as_ref_obs(obs_j), ref.as_ref_state(st_j)
            a_fr = ref.policy_full_reuse(obs_r, cfg)
            equal(_jax_policy("full_reuse", cfg)(key, obs_j, st_j, params), a_fr, "full_reuse")
            equal(_jax_policy("max_sinr", cfg)(key, obs_j, st_j, params),
                  ref.policy_max_sinr(obs_r, cfg), "max_sinr")
            equal(_jax_policy("reward_greedy", cfg)(key, obs_j, st_j, params),
                  ref.policy_reward_greedy(obs_r, params, cfg), "reward_greedy")
            for lam in (0.0, 0.5, 1.0):  # lambda = 0 is max_sinr's metric, 1 full_reuse's
                p_lam = params.replace(pf_lambda=lam)
                equal(_jax_policy("reward_greedy", cfg)(key, obs_j, st_j, p_lam),
                      ref.policy_reward_greedy(obs_r, p_lam, cfg), f"reward_greedy({lam})")
            equal(_jax_policy("reward_greedy", cfg)(key, obs_j, st_j, params.replace(
                pf_lambda=1.0)), a_fr, "reward_greedy(1) == full_reuse")
            if cfg.allow_idle:
                a_tdm = ref.policy_tdm(obs_r, st_r.time, cfg)
                equal(_jax_policy("tdm", cfg)(key, obs_j, st_j, params), a_tdm, "tdm")
                assert np.sum(a_tdm != cfg.idle_action) <= 1
            # random: valid candidates, both sides
            valid = obs_r.action_mask[:, : cfg.num_candidates]
            for a in (np.asarray(_jax_policy("random", cfg)(jax.random.key(t), obs_j, st_j,
                                                            params)),
                      ref.policy_random(rng, obs_r, cfg)):
                for i in range(cfg.num_aps):
                    assert valid[i, a[i]] if valid[i].any() else a[i] == (
                        cfg.idle_action if cfg.allow_idle else 0)
            # exhaustive: JAX's pick attains the reference's best value
            if cfg.num_joint_actions <= 256:
                vals = ref.joint_action_values(st_r, params, cfg)
                a_ex = np.asarray(_jax_policy("exhaustive", cfg)(key, obs_j, st_j, params))
                idx = int(np.sum(a_ex * cfg.num_actions ** np.arange(cfg.num_aps - 1, -1, -1)))
                assert vals[idx] == pytest.approx(vals.max(), rel=1e-5, abs=1e-7)
                a_ex_r = ref.policy_exhaustive(st_r, params, cfg)
                assert vals[idx] == pytest.approx(ref.joint_action_values(st_r, params, cfg)[
                    int(np.sum(a_ex_r * cfg.num_actions ** np.arange(cfg.num_aps - 1, -1, -1)))],
                    rel=1e-5, abs=1e-7)
            acts = a_fr if t % 2 == 0 else rng.integers(0, cfg.num_actions, cfg.num_aps)
            innov = f32(rng.standard_normal((2, cfg.num_aps, cfg.num_ues)) * math.sqrt(0.5))
            obs_j, st_j, *_ = _transition_jit(st_j, jnp.asarray(acts, jnp.int32), innov, params,
                                              cfg)
    assert np.array_equal(ref.joint_action_table(CFG_SMALL),
                          baselines.joint_action_table(CFG_SMALL))


# ---------------------------------------------------------------------------------------------
# Rollouts: reference batched == reference per episode; reference vs JAX statistically
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ref.POLICIES)
def test_reference_rollout_batched_equals_looped(policy):
    cfg = EnvConfig(num_aps=3, num_ues=8, num_candidates=3, horizon=8, mobility=True,
                    reassociation_slots=3, ap_layout="random")
    params = EnvParams.create(cfg, ue_speed_mps=20.0)
    a = ref.rollout(np.random.default_rng(5), policy, params, cfg, 4, batched=False)
    b = ref.rollout(np.random.default_rng(5), policy, params, cfg, 4, batched=True)
    assert a.shape == (4, cfg.num_ues)
    close(a, b, rtol=1e-12, atol=1e-12)
    c = ref.rollout(np.random.default_rng(5), policy, params, cfg, 4, batched=True,
                    streams="shared")
    d = ref.rollout(np.random.default_rng(5), policy, params, cfg, 4, batched=False,
                    streams="shared")
    for x in (c, d):
        assert x.shape == (4, cfg.num_ues) and np.all(np.isfinite(x)) and np.all(x >= 0)
        assert 0 < x.sum(axis=1).mean() < 2000


def test_drop_fallback_both_sides():
    """One try per UE, ~28% fail: those are pushed radially out to exactly the minimum distance."""
    ap = np.array([[50.0, 50.0]])
    d_min = 30.0
    ue_j = np.asarray(topology.drop_ues(jax.random.key(0), ap, 200, 100.0, d_min, 1), np.float64)
    ue_r = ref.drop_ues(np.random.default_rng(0), ap, 200, 100.0, d_min, 1)
    ue_rb = ref.drop_ues(np.random.default_rng(0), np.stack([ap, ap]), 200, 100.0, d_min, 1,
                         batch=2)
    assert ue_rb.shape == (2, 200, 2)
    for ue in (ue_j, ue_r, ue_rb[0], ue_rb[1]):
        assert np.all(np.isfinite(ue)) and np.all((ue >= 0) & (ue <= 100.0))
        dist = ref.distances_2d_m(ap, ue)[0]
        assert np.all(dist >= d_min * (1 - 1e-5))
        pushed = np.isclose(dist, d_min, rtol=1e-5)
        assert 20 < pushed.sum() < 100


def test_reset_distribution_matches_jax():
    """The reference's reset draws the same kinds of randomness as env.reset (statistically)."""
    cfg = EnvConfig(horizon=5)
    params = EnvParams.create(cfg)
    e = 400
    _, sj = jax.jit(jax.vmap(lambda k: env.reset(k, params, cfg)))(
        jax.random.split(jax.random.key(0), e))
    _, sr = ref.reset(np.random.default_rng(0), params, cfg, batch=e)
    sj = ref.as_ref_state(sj)
    for s in (sj, sr):
        d2 = ref.distances_2d_m(s.ap_pos_m, s.ue_pos_m)
        assert np.all(d2 >= params.min_distance_m - 1e-3)
        assert np.all((s.ue_pos_m >= 0) & (s.ue_pos_m <= params.area_side_m))
    stats = {}
    for tag, s in (("jax", sj), ("ref", sr)):
        serve_gain = np.take_along_axis(s.large_gain, s.association[:, None, :], axis=1)
        stats[tag] = dict(
            los=s.los.mean(),
            sh_los=s.shadowing_db[s.los].std(),
            sh_nlos=s.shadowing_db[~s.los].std(),
            fad=ref.fading_power(s.fading).mean(),
            serve_db=ref.linear_to_db(serve_gain).mean(),
            log_avg=np.log(s.avg_rate_mbps).mean(),
            heading=np.cos(s.heading_rad).mean(),
        )
    j, r = stats["jax"], stats["ref"]
    assert abs(j["los"] - r["los"]) < 0.02
    assert j["sh_los"] == pytest.approx(4.0, rel=0.1) and r["sh_los"] == pytest.approx(4.0, rel=0.1)
    assert j["sh_nlos"] == pytest.approx(7.82, rel=0.05)
    assert r["sh_nlos"] == pytest.approx(7.82, rel=0.05)
    assert j["fad"] == pytest.approx(1.0, abs=0.05) and r["fad"] == pytest.approx(1.0, abs=0.05)
    assert abs(j["serve_db"] - r["serve_db"]) < 1.0
    assert abs(j["log_avg"] - r["log_avg"]) < 0.1
    assert abs(j["heading"]) < 0.05 and abs(r["heading"]) < 0.05


def test_rollout_sum_rate_matches_jax_statistically():
    cfg = EnvConfig(num_aps=3, num_ues=10, num_candidates=3, horizon=20)
    params = EnvParams.create(cfg)
    e = 128
    res = env.rollout_jit(jax.random.key(1), baselines.make("full_reuse", cfg), params, cfg, e)
    rj = np.asarray(res.ue_rates_mbps, np.float64)
    rr = ref.rollout(np.random.default_rng(1), "full_reuse", params, cfg, e, batched=True,
                     streams="shared")
    assert rr.shape == rj.shape == (e, cfg.num_ues)
    sj, sr = rj.sum(1), rr.sum(1)
    se = math.sqrt(sj.var() / e + sr.var() / e)
    assert abs(sj.mean() - sr.mean()) < 5 * se, (sj.mean(), sr.mean(), se)
