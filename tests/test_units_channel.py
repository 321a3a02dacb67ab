"""Closed forms and statistics of jaxrrm.units, jaxrrm.channel and jaxrrm.topology.

Expected values are worked out by hand (the arithmetic is in the comments, with
log10(3.5) = 0.544068, c = 299 792 458 m/s); statistical checks use fixed keys and tolerances of
several standard errors, so they are deterministic and fail only if the distribution is wrong.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxrrm import EnvConfig, EnvParams, channel, env, topology, units

FC = 3.5e9  # Hz


def assert_close(actual, expected, atol, what=""):
    actual = float(actual)
    assert abs(actual - expected) <= atol, f"{what}: got {actual!r}, expected {expected!r}+-{atol}"


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------

class TestUnits:
    def test_dbm_watt_known_points(self):
        assert_close(units.dbm_to_w(30.0), 1.0, 1e-6, "30 dBm")
        assert_close(units.dbm_to_w(0.0), 1e-3, 1e-9, "0 dBm")
        assert_close(units.dbm_to_w(-30.0), 1e-6, 1e-12, "-30 dBm")
        assert_close(units.dbm_to_w(46.0), 39.810717, 1e-4, "46 dBm")  # 10^(1.6)
        assert_close(units.w_to_dbm(1.0), 30.0, 1e-5, "1 W")
        assert_close(units.w_to_dbm(1e-3), 0.0, 1e-5, "1 mW")
        assert_close(units.w_to_dbm(2.0), 33.0103, 1e-4, "2 W")

    def test_db_linear_known_points(self):
        assert_close(units.db_to_linear(0.0), 1.0, 1e-7)
        assert_close(units.db_to_linear(10.0), 10.0, 1e-5)
        assert_close(units.db_to_linear(-20.0), 0.01, 1e-8)
        assert_close(units.db_to_linear(3.0103), 2.0, 1e-5, "3.0103 dB = 2x")
        assert_close(units.linear_to_db(2.0), 3.0103, 1e-4, "2x = 3.0103 dB")
        assert_close(units.linear_to_db(1000.0), 30.0, 1e-5)
        assert float(units.linear_to_db(0.0)) == -math.inf

    def test_round_trips_and_shapes(self):
        x = jnp.linspace(-120.0, 60.0, 37).reshape(37, 1) * jnp.ones((1, 3))
        np.testing.assert_allclose(units.linear_to_db(units.db_to_linear(x)), x, atol=2e-4)
        np.testing.assert_allclose(units.w_to_dbm(units.dbm_to_w(x)), x, atol=2e-4)
        assert units.db_to_linear(x).shape == (37, 3)
        assert units.db_to_linear(x).dtype == jnp.float32

    def test_thermal_noise(self):
        # -174 dBm/Hz + 10 log10(1e7) + 7 dB = -174 + 70 + 7 = -97 dBm
        assert_close(units.thermal_noise_dbm(10e6, 7.0), -97.0, 1e-4, "10 MHz, NF 7")
        # 1 Hz, no noise figure: the PSD itself
        assert_close(units.thermal_noise_dbm(1.0), -174.0, 1e-5, "1 Hz")
        # 20 MHz, NF 9: -174 + 73.0103 + 9 = -91.9897 dBm
        assert_close(units.thermal_noise_dbm(20e6, 9.0), -91.9897, 1e-4, "20 MHz, NF 9")
        # -97 dBm = 10^(-12.7) W = 1.99526e-13 W
        np.testing.assert_allclose(float(units.thermal_noise_w(10e6, 7.0)), 1.99526e-13, rtol=1e-5)
        # and what the environment uses for its default parameters
        np.testing.assert_allclose(float(env.noise_w(EnvParams())), 1.99526e-13, rtol=1e-5)
        np.testing.assert_allclose(float(env.tx_power_w(EnvParams())), 1.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# path loss
# ---------------------------------------------------------------------------------------------

class TestPathLoss:
    def test_umi_breakpoint(self):
        # d'_BP = 4 (10 - 1)(1.5 - 1) 3.5e9 / c = 18 * 3.5e9 / 299792458 = 210.1454 m
        assert_close(channel.breakpoint_distance_umi_m(FC, 10.0, 1.5), 210.1454, 1e-3)

    @pytest.mark.parametrize("d2, los, expected", [
        # d2 = 50 m: d3 = sqrt(50^2 + 8.5^2) = 50.7174, log10 d3 = 1.705157 (d2 < d'_BP: PL1)
        #   PL1  = 32.4 + 21 * 1.705157 + 20 * 0.544068 = 32.4 + 35.8083 + 10.8814 = 79.0896
        #   PL'N = 35.3 * 1.705157 + 22.4 + 21.3 * 0.544068 = 60.1920 + 22.4 + 11.5886 = 94.1807
        (50.0, True, 79.0896),
        (50.0, False, 94.1807),
        # d2 = 100 m: d3 = 100.3606, log10 d3 = 2.001563
        #   PL1  = 32.4 + 42.0328 + 10.8814 = 85.3142
        #   PL'N = 70.6552 + 22.4 + 11.5886 = 104.6438
        (100.0, True, 85.3142),
        (100.0, False, 104.6438),
        # d2 = 300 m > d'_BP: d3 = 300.1204, log10 d3 = 2.477296
        #   PL2  = 32.4 + 40 * 2.477296 + 10.8814 - 9.5 log10(210.1454^2 + 8.5^2)
        #        = 32.4 + 99.0918 + 10.8814 - 9.5 * 4.645749 = 142.3732 - 44.1346 = 98.2386
        #   (PL1 there would be 95.3046: the LOS branch must switch at the breakpoint)
        #   PL'N = 35.3 * 2.477296 + 22.4 + 11.5886 = 87.4485 + 33.9886 = 121.4372
        (300.0, True, 98.2386),
        (300.0, False, 121.4372),
        # d2 = 10 m (the validity bound): d3 = sqrt(100 + 72.25) = 13.1244, log10 = 1.118080
        #   PL1  = 32.4 + 23.4797 + 10.8814 = 66.7610
        #   PL'N = 39.4682 + 33.9886 = 73.4569
        (10.0, True, 66.7610),
        (10.0, False, 73.4569),
    ])
    def test_umi(self, d2, los, expected):
        d3 = math.hypot(d2, 8.5)
        assert_close(channel.pathloss_umi_db(d2, d3, los, FC, 10.0, 1.5), expected, 2e-3,
                     f"UMi d2={d2} los={los}")

    def test_umi_nearly_continuous_at_breakpoint(self):
        # 38.901 chooses d'_BP so that PL1 and PL2 meet there: at d2 = d'_BP both give
        # 32.4 + 21 * 2.32289 + 10.8814 = 92.0621 (PL1) and 32.4 + 92.9157 + 10.8814 - 44.1346
        # = 92.0625 (PL2).
        bp = 210.1453799748358
        below = channel.pathloss_umi_db(bp - 1e-3, math.hypot(bp - 1e-3, 8.5), True, FC)
        above = channel.pathloss_umi_db(bp + 1e-3, math.hypot(bp + 1e-3, 8.5), True, FC)
        assert_close(below, 92.0621, 2e-3, "PL1 at d'_BP")
        assert_close(above, 92.0625, 2e-3, "PL2 at d'_BP")

    def test_umi_nlos_never_below_los(self):
        d2 = jnp.linspace(1.0, 2000.0, 500)
        d3 = jnp.sqrt(d2**2 + 8.5**2)
        los = channel.pathloss_umi_db(d2, d3, True, FC)
        nlos = channel.pathloss_umi_db(d2, d3, False, FC)
        assert bool(jnp.all(nlos >= los))
        assert bool(jnp.all(jnp.diff(los) > 0)) and bool(jnp.all(jnp.diff(nlos) > 0))

    @pytest.mark.parametrize("d3, los, expected", [
        # d3 = 10 m: LOS = 32.4 + 17.3 * 1 + 20 * 0.544068 = 32.4 + 17.3 + 10.8814 = 60.5814
        #            NLOS' = 38.3 * 1 + 17.30 + 24.9 * 0.544068 = 38.3 + 17.3 + 13.5473 = 69.1473
        (10.0, True, 60.5814),
        (10.0, False, 69.1473),
        # d3 = 50 m (log10 = 1.698970): LOS = 32.4 + 29.3922 + 10.8814 = 72.6736
        #            NLOS' = 65.0706 + 17.3 + 13.5473 = 95.9179
        (50.0, True, 72.6736),
        (50.0, False, 95.9179),
        # d3 = 1 m: LOS = 32.4 + 0 + 10.8814 = 43.2814; NLOS' = 0 + 17.3 + 13.5473 = 30.8473,
        # so NLOS = max(LOS, NLOS') = 43.2814 (the max() matters here)
        (1.0, True, 43.2814),
        (1.0, False, 43.2814),
    ])
    def test_inh(self, d3, los, expected):
        assert_close(channel.pathloss_inh_db(d3, los, FC), expected, 2e-3, f"InH d3={d3}")

    def test_free_space_and_log_distance(self):
        # 20 log10(4 pi * 1 m * 3.5e9 / c) = 20 log10(146.7092) = 43.3291 dB
        assert_close(channel.pathloss_free_space_db(1.0, FC), 43.3291, 1e-3, "FSPL 1 m")
        # +20 dB per decade: 100 m -> 83.3291 dB
        assert_close(channel.pathloss_free_space_db(100.0, FC), 83.3291, 1e-3, "FSPL 100 m")
        # log-distance n = 3.5 anchored at 1 m: 43.3291 + 35 * 2 = 113.3291 dB at 100 m
        assert_close(channel.pathloss_log_distance_db(100.0, FC, 3.5), 113.3291, 1e-3)
        assert_close(channel.pathloss_log_distance_db(1.0, FC, 3.5), 43.3291, 1e-3)

    def test_pathloss_dispatch(self):
        p = EnvParams()
        d2, d3 = 100.0, math.hypot(100.0, 8.5)
        assert_close(channel.pathloss_db("umi", d2, d3, False, p), 104.6438, 2e-3)
        assert_close(channel.pathloss_db("inh_office", d2, 10.0, True, p), 60.5814, 2e-3)
        assert_close(channel.pathloss_db("free_space", d2, 1.0, True, p), 43.3291, 1e-3)
        assert_close(channel.pathloss_db("log_distance", d2, 100.0, False, p), 113.3291, 1e-3)
        with pytest.raises(ValueError, match="model"):
            channel.pathloss_db("two_ray", d2, d3, True, p)


# ---------------------------------------------------------------------------------------------
# LOS probability
# ---------------------------------------------------------------------------------------------

class TestLosProbability:
    @pytest.mark.parametrize("d, expected", [
        (0.0, 1.0), (10.0, 1.0), (18.0, 1.0),
        # 18/36 + e^-1 (1 - 18/36) = 0.5 + 0.367879 * 0.5 = 0.683940
        (36.0, 0.683940),
        # 18/100 + e^(-100/36) (1 - 0.18) = 0.18 + 0.0621765 * 0.82 = 0.230985
        (100.0, 0.230985),
        # 18/1000 + e^(-27.78) * 0.982 = 0.018 (+ 8e-13)
        (1000.0, 0.018),
    ])
    def test_umi(self, d, expected):
        assert_close(channel.los_probability_umi(d), expected, 1e-5, f"UMi P_LOS({d})")

    @pytest.mark.parametrize("d, expected", [
        (0.5, 1.0), (1.2, 1.0),
        # e^(-(3 - 1.2)/4.7) = e^(-0.382979) = 0.681827
        (3.0, 0.681827),
        # d >= 6.5: 0.32 e^0 = 0.32 (the middle branch would give 0.3238: a branch test)
        (6.5, 0.32),
        # 0.32 e^(-(20 - 6.5)/32.6) = 0.32 * 0.660928 = 0.211497
        (20.0, 0.211497),
    ])
    def test_inh(self, d, expected):
        assert_close(channel.los_probability_inh(d), expected, 1e-5, f"InH P_LOS({d})")

    def test_dispatch(self):
        d = jnp.array([5.0, 36.0, 300.0])
        np.testing.assert_allclose(channel.los_probability("umi", d),
                                   channel.los_probability_umi(d))
        np.testing.assert_allclose(channel.los_probability("free_space", d), 1.0)
        np.testing.assert_allclose(channel.los_probability("log_distance", d), 0.0)
        with pytest.raises(ValueError):
            channel.los_probability("nope", d)

    @pytest.mark.parametrize("model, d, p", [
        # UMi at 300 m: 18/300 + e^(-300/36) (1 - 0.06) = 0.06 + 2.4037e-4 * 0.94 = 0.060226
        ("umi", 36.0, 0.683940), ("umi", 100.0, 0.230985), ("umi", 300.0, 0.060226),
        ("inh_office", 3.0, 0.681827), ("inh_office", 20.0, 0.211497),
    ])
    def test_los_frequency_matches_probability(self, model, d, p):
        n = 40_000
        los = topology.draw_los(jax.random.key(7), jnp.full((n,), d), model)
        freq = float(jnp.mean(los))
        se = math.sqrt(p * (1 - p) / n)
        assert abs(freq - p) < 5 * se, f"{model} d={d}: LOS frequency {freq} vs probability {p}"


# ---------------------------------------------------------------------------------------------
# Bessel J0 and fading
# ---------------------------------------------------------------------------------------------

class TestBessel:
    def test_against_scipy_on_grid(self):
        x = np.linspace(0.0, 30.0, 3001)
        ours = np.asarray(channel.bessel_j0(jnp.asarray(x)), np.float64)
        err = np.abs(ours - scipy.special.j0(x))
        assert err.max() < 1e-6, f"max |J0 - scipy| = {err.max()} at x = {x[err.argmax()]}"

    def test_known_values(self):
        assert_close(channel.bessel_j0(0.0), 1.0, 1e-7, "J0(0)")
        assert_close(channel.bessel_j0(2.404826), 0.0, 1e-6, "first zero")
        assert_close(channel.bessel_j0(5.520078), 0.0, 1e-6, "second zero")
        assert_close(channel.bessel_j0(1.0), 0.7651977, 1e-6, "J0(1)")
        assert_close(channel.bessel_j0(3.8317), -0.4027594, 1e-6, "minimum near 3.8317")
        # even function, both branches
        np.testing.assert_allclose(channel.bessel_j0(jnp.array([-1.0, -7.0])),
                                   channel.bessel_j0(jnp.array([1.0, 7.0])), atol=0)

    def test_fading_correlation_default(self):
        # f_D = v f_c / c = 1 * 3.5e9 / 299792458 = 11.6747 Hz;
        # rho = J0(2 pi * 11.6747 * 0.01) = J0(0.733546) = 0.869935
        assert_close(channel.doppler_hz(1.0, FC), 11.674743, 1e-4, "Doppler")
        rho = channel.fading_correlation(1.0, FC, 0.01)
        assert_close(rho, scipy.special.j0(2 * math.pi * 11.674743 * 0.01), 1e-6, "rho")
        assert_close(rho, 0.869935, 1e-5, "rho")
        # a static UE has a constant channel
        assert_close(channel.fading_correlation(0.0, FC, 0.01), 1.0, 1e-7, "rho(v=0)")


@jax.jit
def _gauss_markov(key, h0, rho):
    """``T = 60`` Gauss-Markov steps from ``h0`` ([2, n]); returns h(T-1) and h(T)."""
    def body(h, k):  # the innovation the environment's step draws
        h_next = channel.advance_fading(h, channel.fading_innovation(k, h.shape[1:]), rho)
        return h_next, None

    h, _ = jax.lax.scan(body, h0, jax.random.split(key, 59))
    e = channel.fading_innovation(jax.random.fold_in(key, 1), h.shape[1:])
    return h, channel.advance_fading(h, e, rho)


class TestFadingStatistics:
    N = 20_000  # independent links

    @pytest.mark.parametrize("draw", [channel.init_fading, channel.fading_innovation])
    def test_draws_are_cn01(self, draw):
        h = draw(jax.random.key(0), (self.N,))
        assert h.shape == (2, self.N)
        se = 1.0 / math.sqrt(self.N)  # std of |h|^2 ~ Exp(1) is 1
        assert_close(jnp.mean(channel.fading_power(h)), 1.0, 5 * se, "E|h|^2")
        assert_close(jnp.var(h[0]), 0.5, 5 * 0.5 * math.sqrt(2 / self.N), "var Re h")
        assert_close(jnp.var(h[1]), 0.5, 5 * 0.5 * math.sqrt(2 / self.N), "var Im h")
        assert_close(jnp.mean(h[0] * h[1]), 0.0, 5 * 0.5 / math.sqrt(self.N), "E Re Im")

    @pytest.mark.parametrize("rho", [0.869935, 0.3])
    def test_power_converges_to_one(self, rho):
        # Started from h = 0, E|h(t)|^2 = 1 - rho^(2t): 1 - 6e-8 after 60 steps.
        h0 = jnp.zeros((2, self.N))
        _, h = _gauss_markov(jax.random.key(1), h0, rho)
        se = 1.0 / math.sqrt(self.N)
        assert_close(jnp.mean(channel.fading_power(h)), 1.0, 5 * se, f"E|h|^2, rho={rho}")
        # and from a large start (|h|^2 = 8 everywhere): also forgotten
        _, h = _gauss_markov(jax.random.key(2), jnp.full((2, self.N), 2.0), rho)
        assert_close(jnp.mean(channel.fading_power(h)), 1.0, 5 * se, f"E|h|^2 from 8, rho={rho}")

    @pytest.mark.parametrize("rho", [0.869935, 0.3, -0.2])
    def test_lag_one_correlation(self, rho):
        h0 = channel.init_fading(jax.random.key(3), (self.N,))
        h_prev, h_next = _gauss_markov(jax.random.key(4), h0, rho)
        a = np.asarray(h_prev[0] + 1j * h_prev[1], np.complex128)
        b = np.asarray(h_next[0] + 1j * h_next[1], np.complex128)
        corr = np.mean(b * np.conj(a))  # E[h(t+1) h(t)^*] = rho (E|h|^2 = 1)
        se = 1.0 / math.sqrt(self.N)  # Var of the real part of one product is (1 + rho^2)/2 <= 1
        assert abs(corr.real - rho) < 5 * se, f"lag-1 correlation {corr} vs rho={rho}"
        assert abs(corr.imag) < 5 * se
        assert_close(np.mean(np.abs(b) ** 2), 1.0, 5 * se, "stationary power")

    def test_advance_fading_deterministic_formula(self):
        # h(t+1) = rho h + sqrt(1 - rho^2) e: rho = 0.6 -> 0.6 h + 0.8 e
        h = jnp.array([[1.0, -2.0], [0.5, 0.0]])
        e = jnp.array([[0.25, 1.0], [-1.0, 2.0]])
        np.testing.assert_allclose(channel.advance_fading(h, e, 0.6),
                                   [[0.8, -0.4], [-0.5, 1.6]], atol=1e-6)
        # |h|^2 from real/imag: 1 + 0.25, 4 + 0
        np.testing.assert_allclose(channel.fading_power(h), [1.25, 4.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Shadowing of a reset, UE drops, AP grid
# ---------------------------------------------------------------------------------------------

_DEFAULT_CFG = EnvConfig()  # 4 APs, 24 UEs: the default scenario matters here
_reset_batch = jax.jit(jax.vmap(env.reset, in_axes=(0, None, None)), static_argnums=(2,))


@pytest.fixture(scope="module")
def states():
    """400 resets of the default scenario (4 APs, 24 UEs: 38 400 links)."""
    params = EnvParams.create(_DEFAULT_CFG)
    return _reset_batch(jax.random.split(jax.random.key(11), 400), params, _DEFAULT_CFG)[1]


class TestResetDraws:

    def test_shadowing_std_per_los_state(self, states):
        los = np.asarray(states.los).ravel()
        sh = np.asarray(states.shadowing_db, np.float64).ravel()
        for sel, sigma, name in [(los, 4.0, "LOS"), (~los, 7.82, "NLOS")]:
            x = sh[sel]
            n = x.size
            assert n > 1000, f"too few {name} links ({n})"
            # std of the sample std of a normal sample ~ sigma / sqrt(2 n)
            assert abs(x.std(ddof=1) - sigma) < 5 * sigma / math.sqrt(2 * n), \
                f"{name} shadowing std {x.std()} vs {sigma} (n={n})"
            assert abs(x.mean()) < 5 * sigma / math.sqrt(n), f"{name} shadowing mean {x.mean()}"

    def test_los_fraction_matches_distance_law(self, states):
        # Pooled over links, mean LOS indicator = mean P_LOS(d): a check that LOS is drawn with
        # the link's own distance (se of a mean of Bernoullis <= 0.5 / sqrt(n)).
        d = jax.vmap(topology.distances_2d_m)(states.ap_pos_m, states.ue_pos_m)
        p = np.asarray(channel.los_probability_umi(d)).ravel()
        los = np.asarray(states.los).ravel()
        se = math.sqrt(np.mean(p * (1 - p)) / los.size)
        assert abs(los.mean() - p.mean()) < 5 * se
        # and near links are LOS more often than far ones
        near, far = p > 0.5, p < 0.1
        assert los[near].mean() > 0.5 and los[far].mean() < 0.1

    def test_ues_respect_min_distance_and_area(self, states):
        d = np.asarray(jax.vmap(topology.distances_2d_m)(states.ap_pos_m, states.ue_pos_m))
        assert d.min() >= 10.0 - 1e-3, f"a UE at {d.min()} m from an AP"
        pos = np.asarray(states.ue_pos_m)
        assert pos.min() >= 0.0 and pos.max() <= 500.0
        # uniform: mean coordinate 250 m, std 500 / sqrt(12) = 144.3 m
        se = 144.3 / math.sqrt(pos[..., 0].size)
        assert abs(pos[..., 0].mean() - 250.0) < 5 * se
        assert abs(pos[..., 1].mean() - 250.0) < 5 * se
        assert abs(pos[..., 0].std() - 144.3) < 3.0

    def test_association_is_argmax_large_gain(self, states):
        assoc = np.asarray(states.association)
        np.testing.assert_array_equal(assoc, np.argmax(np.asarray(states.large_gain), axis=1))

    def test_grid_aps_in_reset(self, states):
        np.testing.assert_allclose(np.asarray(states.ap_pos_m[0]),
                                   [[125, 125], [375, 125], [125, 375], [375, 375]])
        assert bool(jnp.all(states.ap_pos_m == states.ap_pos_m[0]))

    @pytest.mark.parametrize("model, los_db, nlos_db", [
        ("umi", 4.0, 7.82), ("inh_office", 3.0, 8.03), ("log_distance", 8.0, 8.0),
        ("free_space", 0.0, 0.0)])
    def test_shadowing_std_of_each_model(self, model, los_db, nlos_db):
        p = EnvParams.create(EnvConfig(num_aps=2, num_ues=4, pathloss_model=model))
        np.testing.assert_allclose(channel.shadowing_std_db(jnp.array([True, False]), p),
                                   [los_db, nlos_db], rtol=1e-6)


class TestTopology:
    def test_grid_four_aps(self):
        np.testing.assert_allclose(topology.grid_positions(4, 500.0),
                                   [[125, 125], [375, 125], [125, 375], [375, 375]])

    def test_grid_other_counts(self):
        np.testing.assert_allclose(topology.grid_positions(1, 500.0), [[250, 250]])
        # 3 APs: 2 columns x 2 rows, filled row by row
        np.testing.assert_allclose(topology.grid_positions(3, 100.0),
                                   [[25, 25], [75, 25], [25, 75]])
        # 9 APs: 3 x 3, cell centres at 1/6, 3/6, 5/6 of 600 m
        g = np.asarray(topology.grid_positions(9, 600.0))
        np.testing.assert_allclose(sorted(set(g[:, 0])), [100, 300, 500])

    def test_fixed_and_random_positions(self):
        cfg = EnvConfig(num_aps=2, num_ues=4, ap_positions_m=((1, 2), (3.5, 4)))
        np.testing.assert_allclose(topology.ap_positions(jax.random.key(0), EnvParams(), cfg),
                                   [[1, 2], [3.5, 4]])
        cfg = EnvConfig(num_aps=5, num_ues=6, ap_layout="random")
        pos = topology.ap_positions(jax.random.key(0), EnvParams(area_side_m=80.0), cfg)
        assert pos.shape == (5, 2) and float(pos.min()) >= 0 and float(pos.max()) <= 80.0

    def test_distances(self):
        ap = jnp.array([[0.0, 0.0], [30.0, 40.0]])
        ue = jnp.array([[3.0, 4.0], [30.0, 0.0], [30.0, 40.0]])
        np.testing.assert_allclose(topology.distances_2d_m(ap, ue), [[5, 30, 50], [45, 40, 0]],
                                   atol=1e-5)
        # sqrt(40^2 + 8.5^2) = 40.8932
        assert_close(topology.distances_3d_m(40.0, 10.0, 1.5), 40.8932, 1e-4)

    def test_drop_min_distance_many_keys(self):
        # crowded: 4 APs 30 m apart in a 60 m square, their 12 m discs exclude half of the area
        ap = topology.grid_positions(4, 60.0)
        drop = jax.jit(jax.vmap(lambda k: topology.drop_ues(k, ap, 32, 60.0, 12.0, 16)))
        ue = drop(jax.random.split(jax.random.key(3), 64))
        d = jax.vmap(topology.distances_2d_m, in_axes=(None, 0))(ap, ue)
        assert float(d.min()) >= 12.0 - 1e-4
        assert float(ue.min()) >= 0.0 and float(ue.max()) <= 60.0

    def test_drop_fallback_stays_in_area_and_finite(self):
        # No point of a 20 m square is 20 m from its centre: every try fails, the fallback pushes
        # the UE out to the disc edge and clips it into the area.
        ap = jnp.array([[10.0, 10.0]])
        ue = jax.jit(topology.drop_ues, static_argnums=(2, 5))(jax.random.key(0), ap, 50, 20.0,
                                                               20.0, 4)
        assert bool(jnp.all(jnp.isfinite(ue)))
        assert float(ue.min()) >= 0.0 and float(ue.max()) <= 20.0
        # pushed to the border: at least one coordinate is on the area's edge
        on_edge = jnp.any((ue == 0.0) | (ue == 20.0), axis=-1)
        assert bool(jnp.all(on_edge))

    def test_move_ues_reflects(self):
        pos = jnp.array([[1.0, 50.0], [99.0, 99.5], [50.0, 50.0]])
        heading = jnp.array([math.pi, math.pi / 4, math.pi / 2])
        new, head = topology.move_ues(pos, heading, 3.0, 100.0)
        # UE 0: x = 1 - 3 = -2 -> reflected to 2, heading now 0
        # UE 1: (99 + 2.1213, 99.5 + 2.1213) -> (98.8787, 98.3787), heading 225 deg
        # UE 2: straight up, no border
        np.testing.assert_allclose(new, [[2.0, 50.0], [98.87868, 98.37868], [50.0, 53.0]],
                                   atol=1e-4)
        np.testing.assert_allclose(np.cos(head[:2]), [1.0, -math.sqrt(0.5)], atol=1e-5)
        np.testing.assert_allclose(np.sin(head[:2]), [0.0, -math.sqrt(0.5)], atol=1e-5)
