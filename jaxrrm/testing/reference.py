"""A plain NumPy (float64) reference implementation of the simulator.

This module re-implements, independently of the JAX code, the system model of docs/design.md §1–3:
units, 3GPP TR 38.901 path loss and LOS probabilities, large-scale gains, association, SINR,
rates, proportional-fair (PF) averages, weights and rewards, observations, the episode's
``init_state`` / ``transition`` (mirroring :func:`jaxrrm.env.init_state` and
:func:`jaxrrm.env.transition` input for input), ``reset`` / ``step`` with NumPy random
generators, the metrics and the heuristic baselines. It does not import JAX and never calls
jaxrrm's JAX functions; it reads :class:`jaxrrm.EnvConfig` (static) and the fields of
:class:`jaxrrm.EnvParams` (as float64). It serves two purposes:

* **Cross-checking** the JAX code (``tests/test_reference.py``): the same draws fed to both sides
  must give the same states, observations, rewards and rates up to float32 rounding.
* **Benchmarking**: :func:`rollout` runs either one episode at a time in a Python loop
  (``batched=False``) or all episodes at once with NumPy broadcasting (``batched=True``).

Batching convention: every function accepts optional *leading* batch axes (written ``...``) on its
array arguments and broadcasts over them, e.g. a state of ``E`` episodes has ``large_gain``
``[E, I, K]``, ``fading`` ``[E, 2, I, K]``, ``time`` ``[E]``. Notation: ``I`` APs, ``K`` UEs,
``N`` candidates per AP, ``A`` actions per AP (``N + 1`` with idle).

Random streams: ``reset``, ``step`` and the ``random`` policy take ``rng``, either one
:class:`numpy.random.Generator` (draws for the whole batch in one call) or a sequence of
Generators, one per episode (each episode's draws come from its own stream, in the same order as
an unbatched run with that Generator; this makes batched and episode-by-episode runs identical).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Optional, Sequence, Union

import numpy as np

from ..config import EnvConfig, EnvParams

#: Thermal noise power spectral density at 290 K, dBm/Hz.
THERMAL_NOISE_DBM_PER_HZ = -174.0
#: Speed of light, m/s.
SPEED_OF_LIGHT_MPS = 299_792_458.0
#: SINR floor used before taking the log of the SINR feature (as the JAX observation does).
TINY_SINR = 1e-30

POLICIES = ("random", "full_reuse", "tdm", "max_sinr", "reward_greedy", "exhaustive")

Rng = Union[np.random.Generator, Sequence[np.random.Generator]]


def _f(x):
    return np.asarray(x, dtype=np.float64)


def _param(params: EnvParams, name: str):
    """A field of ``params`` as float64 (a Python float for scalar fields, else an array)."""
    v = np.asarray(getattr(params, name), dtype=np.float64)
    return float(v) if v.ndim == 0 else v


# ============================================================================================
# Units
# ============================================================================================

def db_to_linear(x_db):
    """Power ratio dB -> linear, ``10**(x/10)``. Any shape, float64."""
    return 10.0 ** (_f(x_db) / 10.0)


def linear_to_db(x):
    """Power ratio linear -> dB, ``10 log10 x``. Any shape, float64 (``-inf`` at 0)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(_f(x))


def dbm_to_w(p_dbm):
    """Power dBm -> W: ``1 mW * 10**(P/10)``. Any shape, float64, W."""
    return 1e-3 * db_to_linear(p_dbm)


def w_to_dbm(p_w):
    """Power W -> dBm: ``10 log10(P / 1 mW)``. Any shape, float64, dBm."""
    return linear_to_db(_f(p_w) / 1e-3)


def thermal_noise_dbm(bandwidth_hz, noise_figure_db=0.0, psd_dbm_hz=THERMAL_NOISE_DBM_PER_HZ):
    """Noise power ``N0 + 10 log10(B) + F`` in dBm (broadcast shape, float64).

    Args:
      bandwidth_hz: Hz.  noise_figure_db: dB.  psd_dbm_hz: dBm/Hz (-174 by default).
    """
    return _f(psd_dbm_hz) + linear_to_db(bandwidth_hz) + _f(noise_figure_db)


def thermal_noise_w(bandwidth_hz, noise_figure_db=0.0, psd_dbm_hz=THERMAL_NOISE_DBM_PER_HZ):
    """Noise power in W: :func:`thermal_noise_dbm` converted to watts (float64)."""
    return dbm_to_w(thermal_noise_dbm(bandwidth_hz, noise_figure_db, psd_dbm_hz))


def tx_power_w(params: EnvParams):
    """AP transmit power of ``params`` in W: a float, or ``[I]`` float64 for per-AP powers."""
    p = dbm_to_w(_param(params, "tx_power_dbm"))
    return float(p) if np.ndim(p) == 0 else p


def noise_w(params: EnvParams) -> float:
    """Receiver noise power of ``params`` in W (-97 dBm = 2.0e-13 W by default)."""
    return float(thermal_noise_w(_param(params, "bandwidth_hz"), _param(params, "noise_figure_db"),
                                 _param(params, "noise_psd_dbm_hz")))


# ============================================================================================
# Channel: path loss, LOS probability, fading
# ============================================================================================

def los_probability_umi(distance_2d_m):
    """38.901 UMi-Street Canyon LOS probability: 1 up to 18 m, else
    ``18/d + exp(-d/36) (1 - 18/d)``. Any shape (m) -> same shape, probability."""
    d = _f(distance_2d_m)
    ds = np.where(d > 18.0, d, 18.0)
    return np.where(d <= 18.0, 1.0, 18.0 / ds + np.exp(-ds / 36.0) * (1.0 - 18.0 / ds))


def los_probability_inh(distance_2d_m):
    """38.901 InH-Office (mixed) LOS probability: 1 up to 1.2 m, ``exp(-(d-1.2)/4.7)`` below
    6.5 m, ``0.32 exp(-(d-6.5)/32.6)`` from 6.5 m. Any shape (m) -> probability."""
    d = _f(distance_2d_m)
    out = np.ones_like(d)
    mid = (d > 1.2) & (d < 6.5)
    far = d >= 6.5
    out = np.where(mid, np.exp(-(d - 1.2) / 4.7), out)
    return np.where(far, 0.32 * np.exp(-(d - 6.5) / 32.6), out)


def los_probability(model: str, distance_2d_m):
    """LOS probability of the named path-loss model (``free_space`` 1, ``log_distance`` 0)."""
    d = _f(distance_2d_m)
    if model == "umi":
        return los_probability_umi(d)
    if model == "inh_office":
        return los_probability_inh(d)
    if model == "free_space":
        return np.ones_like(d)
    if model == "log_distance":
        return np.zeros_like(d)
    raise ValueError(f"unknown path-loss model {model!r}")


def pathloss_umi_db(distance_2d_m, distance_3d_m, los, carrier_hz, ap_height_m=10.0,
                    ue_height_m=1.5):
    """38.901 UMi-Street Canyon path loss in dB (Table 7.4.1-1).

    LOS: ``32.4 + 21 log10 d3 + 20 log10 fc`` up to the breakpoint
    ``d'BP = 4 (hBS-1)(hUT-1) fc/c`` (fc in Hz), beyond it
    ``32.4 + 40 log10 d3 + 20 log10 fc - 9.5 log10(d'BP^2 + (hBS-hUT)^2)``; NLOS:
    ``max(PL_LOS, 35.3 log10 d3 + 22.4 + 21.3 log10 fc - 0.3 (hUT - 1.5))`` (fc in GHz).

    Args:
      distance_2d_m, distance_3d_m: broadcastable, m.  los: broadcastable bool.
      carrier_hz: Hz.  ap_height_m, ue_height_m: m.

    Returns:
      Broadcast shape, float64, dB.
    """
    d2, d3 = _f(distance_2d_m), _f(distance_3d_m)
    f_ghz = _f(carrier_hz) / 1e9
    h_bs, h_ut = _f(ap_height_m), _f(ue_height_m)
    d_bp = 4.0 * (h_bs - 1.0) * (h_ut - 1.0) * _f(carrier_hz) / SPEED_OF_LIGHT_MPS
    before = 32.4 + 21.0 * np.log10(d3) + 20.0 * np.log10(f_ghz)
    after = (32.4 + 40.0 * np.log10(d3) + 20.0 * np.log10(f_ghz)
             - 9.5 * np.log10(d_bp**2 + (h_bs - h_ut) ** 2))
    pl_los = np.where(d2 <= d_bp, before, after)
    pl_nlos = 35.3 * np.log10(d3) + 22.4 + 21.3 * np.log10(f_ghz) - 0.3 * (h_ut - 1.5)
    return np.where(los, pl_los, np.maximum(pl_los, pl_nlos))


def pathloss_inh_db(distance_3d_m, los, carrier_hz):
    """38.901 InH-Office path loss in dB: LOS ``32.4 + 17.3 log10 d3 + 20 log10 fc``; NLOS
    ``max(PL_LOS, 38.3 log10 d3 + 17.30 + 24.9 log10 fc)`` (fc in GHz, d3 in m)."""
    d3 = _f(distance_3d_m)
    f_ghz = _f(carrier_hz) / 1e9
    pl_los = 32.4 + 17.3 * np.log10(d3) + 20.0 * np.log10(f_ghz)
    pl_nlos = 38.3 * np.log10(d3) + 17.30 + 24.9 * np.log10(f_ghz)
    return np.where(los, pl_los, np.maximum(pl_los, pl_nlos))


def pathloss_free_space_db(distance_3d_m, carrier_hz):
    """Friis free-space loss ``20 log10(4 pi d fc / c)`` in dB (d in m, fc in Hz)."""
    wavelength = SPEED_OF_LIGHT_MPS / _f(carrier_hz)
    return 20.0 * np.log10(4.0 * math.pi * _f(distance_3d_m) / wavelength)


def pathloss_log_distance_db(distance_3d_m, carrier_hz, exponent=3.5, reference_m=1.0):
    """Log-distance loss ``PL_FS(d0) + 10 n log10(d / d0)`` in dB (d, d0 in m)."""
    return (pathloss_free_space_db(reference_m, carrier_hz)
            + 10.0 * _f(exponent) * np.log10(_f(distance_3d_m) / _f(reference_m)))


def pathloss_db(model: str, distance_2d_m, distance_3d_m, los, params: EnvParams):
    """Path loss of ``model`` (an ``EnvConfig.pathloss_model`` name) with ``params``, dB."""
    fc = _param(params, "carrier_hz")
    if model == "umi":
        return pathloss_umi_db(distance_2d_m, distance_3d_m, los, fc,
                               _param(params, "ap_height_m"), _param(params, "ue_height_m"))
    if model == "inh_office":
        return pathloss_inh_db(distance_3d_m, los, fc)
    if model == "free_space":
        return pathloss_free_space_db(distance_3d_m, fc) + 0.0 * _f(distance_2d_m)
    if model == "log_distance":
        return pathloss_log_distance_db(distance_3d_m, fc, _param(params, "pathloss_exponent"))
    raise ValueError(f"unknown path-loss model {model!r}")


def shadowing_std_db(los, params: EnvParams):
    """Shadowing standard deviation per link from its LOS state: ``los``'s shape, dB."""
    return np.where(los, _param(params, "shadowing_std_los_db"),
                    _param(params, "shadowing_std_nlos_db"))


def bessel_j0(x):
    """Bessel ``J0(x)`` from its integral ``(1/pi) int_0^pi cos(x sin t) dt``.

    The integrand is smooth and pi-periodic, so the midpoint rule over one period converges
    exponentially; the number of nodes grows with ``max|x|`` (error ~1e-15). Any shape, float64.
    """
    x = _f(x)
    m = int(64 + 2 * math.ceil(float(np.max(np.abs(x), initial=0.0))))
    t = (np.arange(m) + 0.5) * (math.pi / m)
    return np.mean(np.cos(x[..., None] * np.sin(t)), axis=-1)


def fading_correlation(speed_mps, carrier_hz, slot_s):
    """Lag-one Jakes correlation ``rho = J0(2 pi f_D T_s)``, ``f_D = v f_c / c`` (float64)."""
    f_d = _f(speed_mps) * _f(carrier_hz) / SPEED_OF_LIGHT_MPS
    return bessel_j0(2.0 * math.pi * f_d * _f(slot_s))


def advance_fading(fading, innovation, rho):
    """Gauss-Markov step ``h(t+1) = rho h(t) + sqrt(1 - rho^2) e(t)`` on real/imag parts.

    Args:
      fading, innovation: ``[..., 2, I, K]`` float (each part N(0, 1/2)).  rho: scalar.

    Returns:
      ``[..., 2, I, K]`` float64.
    """
    rho = _f(rho)
    return rho * _f(fading) + np.sqrt(max(1.0 - float(rho) ** 2, 0.0)) * _f(innovation)


def fading_power(fading):
    """``|h|^2`` from real/imag parts: ``[..., 2, I, K] -> [..., I, K]`` float64."""
    fading = _f(fading)
    return fading[..., 0, :, :] ** 2 + fading[..., 1, :, :] ** 2


# ============================================================================================
# Geometry
# ============================================================================================

def grid_positions(num_aps: int, area_side_m) -> np.ndarray:
    """Centres of a ``ceil(sqrt(I))``-column grid filled row by row: ``[I, 2]`` float64, m."""
    cols = math.ceil(math.sqrt(num_aps))
    rows = math.ceil(num_aps / cols)
    side = float(area_side_m)
    return np.array([[(i % cols + 0.5) * side / cols, (i // cols + 0.5) * side / rows]
                     for i in range(num_aps)], dtype=np.float64)


def distances_2d_m(ap_pos_m, ue_pos_m):
    """Horizontal AP-UE distances: ``[..., I, 2], [..., K, 2] -> [..., I, K]`` float64, m."""
    ap, ue = _f(ap_pos_m), _f(ue_pos_m)
    dx = ap[..., :, None, 0] - ue[..., None, :, 0]
    dy = ap[..., :, None, 1] - ue[..., None, :, 1]
    return np.hypot(dx, dy)


def distances_3d_m(distance_2d_m, ap_height_m, ue_height_m):
    """``sqrt(d2^2 + (h_AP - h_UE)^2)``, m."""
    return np.hypot(_f(distance_2d_m), _f(ap_height_m) - _f(ue_height_m))


def large_scale_gain(ap_pos_m, ue_pos_m, los, shadowing_db, params: EnvParams, cfg: EnvConfig):
    """Large-scale power gain ``10**((S - PL)/10)``: ``[..., I, K]`` float64, linear.

    As in the JAX code, the 2-D distance is floored at 1 m before the path loss (and the 3-D
    distance is computed from the floored value).

    Args:
      ap_pos_m: ``[..., I, 2]`` m.  ue_pos_m: ``[..., K, 2]`` m.  los: ``[..., I, K]`` bool.
      shadowing_db: ``[..., I, K]`` dB.  params, cfg: environment parameters and configuration.
    """
    d2 = np.maximum(distances_2d_m(ap_pos_m, ue_pos_m), 1.0)
    d3 = distances_3d_m(d2, _param(params, "ap_height_m"), _param(params, "ue_height_m"))
    pl = pathloss_db(cfg.pathloss_model, d2, d3, np.asarray(los, bool), params)
    return db_to_linear(_f(shadowing_db) - pl)


def associate(large_gain):
    """Each UE's AP of largest large-scale gain (lowest index on ties).

    ``[..., I, K]`` linear -> ``[..., K]`` int64 AP index.
    """
    return np.argmax(_f(large_gain), axis=-2).astype(np.int64)


def move_ues(ue_pos_m, heading_rad, distance_m, area_side_m):
    """Move UEs ``distance_m`` along their headings with specular reflection at the borders.

    Args:
      ue_pos_m: ``[..., K, 2]`` m.  heading_rad: ``[..., K]`` rad.  distance_m, area_side_m: m.

    Returns:
      (``[..., K, 2]`` positions, m; ``[..., K]`` headings in (-pi, pi], rad).
    """
    h = _f(heading_rad)
    vx, vy = np.cos(h), np.sin(h)
    x = _f(ue_pos_m)[..., 0] + vx * distance_m
    y = _f(ue_pos_m)[..., 1] + vy * distance_m
    side = float(area_side_m)

    def reflect(p, v):  # one coordinate: mirror the position, flip the velocity
        below, above = p < 0.0, p > side
        p = np.where(below, -p, np.where(above, 2.0 * side - p, p))
        v = np.where(below | above, -v, v)
        return p, v

    x, vx = reflect(x, vx)
    y, vy = reflect(y, vy)
    return np.stack([x, y], axis=-1), np.arctan2(vy, vx)


# ============================================================================================
# Radio
# ============================================================================================

def _received_power(gain, tx_power_w):
    """``P_i g[i, j]``: ``[..., I, K]`` from gains and a scalar or ``[I]`` power."""
    gain = _f(gain)
    p = _f(tx_power_w)
    return p * gain if p.ndim == 0 else p[..., :, None] * gain


def sinr(gain, serving, tx_power_w, noise_w):
    """SINR of every UE for a serving decision; 0 for UEs nobody serves.

    ``SINR_j = P_s g[s, j] / (sum_{i != s, i active} P_i g[i, j] + N)`` for the AP ``s`` serving
    ``j``; AP ``i`` is active iff ``serving[i] >= 0``.

    Args:
      gain: ``[..., I, K]`` linear.  serving: ``[..., I]`` int, UE served per AP, -1 = silent.
      tx_power_w: scalar or ``[I]``, W.  noise_w: scalar, W.

    Returns:
      ``[..., K]`` float64, linear.
    """
    rx = _received_power(gain, tx_power_w)
    k = rx.shape[-1]
    serving = np.asarray(serving)
    serves = serving[..., :, None] == np.arange(k)  # [..., I, K]
    active = (serving >= 0)[..., :, None]
    signal = np.sum(np.where(serves, rx, 0.0), axis=-2)
    interference = np.sum(np.where(active & ~serves, rx, 0.0), axis=-2)
    served = np.any(serves, axis=-2)
    return np.where(served, signal / (interference + noise_w), 0.0)


def sinr_all_active(gain, association, tx_power_w, noise_w):
    """Each UE's SINR from its own AP ``a(j)`` when every AP transmits (CQI estimate).

    Args:
      gain: ``[..., I, K]`` linear.  association: ``[..., K]`` int.  tx_power_w: scalar or
      ``[I]`` W.  noise_w: scalar W.

    Returns:
      ``[..., K]`` float64, linear.
    """
    rx = _received_power(gain, tx_power_w)
    a = np.asarray(association)
    own = a[..., None, :] == np.arange(rx.shape[-2])[:, None]  # [..., I, K]
    signal = np.sum(np.where(own, rx, 0.0), axis=-2)
    interference = np.sum(np.where(own, 0.0, rx), axis=-2)
    return signal / (interference + noise_w)


def rate_mbps(sinr, bandwidth_hz):
    """Shannon rate ``B log2(1 + SINR)`` in Mbit/s (any shape, float64)."""
    return _f(bandwidth_hz) * np.log1p(_f(sinr)) / math.log(2.0) * 1e-6


def update_average(avg, rate, beta):
    """PF average ``(1 - beta) avg + beta rate`` (``[..., K]``, Mbit/s)."""
    return (1.0 - beta) * _f(avg) + beta * _f(rate)


def pf_weights(avg, floor_mbps=1e-6):
    """PF weights ``1 / max(avg, floor)``: ``[..., K]`` 1/(Mbit/s)."""
    return 1.0 / np.maximum(_f(avg), floor_mbps)


def pf_reward(rate, weights, lam):
    """PF-weighted reward ``(1/K) sum_j w_j**lam C_j``: ``[..., K], [..., K] -> [...]``."""
    return np.mean(_f(weights) ** lam * _f(rate), axis=-1)


def log_utility_reward(avg_new, avg_old):
    """``(1/K) sum_j [log avg_new_j - log avg_old_j]`` (nats): ``[..., K] -> [...]``."""
    return np.mean(np.log(_f(avg_new) / _f(avg_old)), axis=-1)


def initial_average(large_gain, association, tx_power_w, noise_w, bandwidth_hz, num_aps: int):
    """Fair-share start of the PF averages, Mbit/s: the rate at the large-scale all-active SINR
    divided by the number of UEs of the UE's AP.

    Args:
      large_gain: ``[..., I, K]`` linear.  association: ``[..., K]`` int.  tx_power_w: W.
      noise_w: W.  bandwidth_hz: Hz.  num_aps: ``I``.

    Returns:
      ``[..., K]`` float64, Mbit/s.
    """
    a = np.asarray(association)
    ls_rate = rate_mbps(sinr_all_active(large_gain, a, tx_power_w, noise_w), bandwidth_hz)
    same_ap = a[..., :, None] == a[..., None, :]  # [..., K, K]
    return ls_rate / np.sum(same_ap, axis=-1)


# ============================================================================================
# Environment
# ============================================================================================

@dataclasses.dataclass
class RefObservation:
    """Reference observation (float64); optional leading batch axes ``...``.

    Attributes:
      agents: ``[..., I, 2N]``: per candidate ``n`` the pair ``(log10 SINR_est, log10 w)`` at
        ``2n, 2n+1``; zeros where masked.
      global_state: ``[..., 2NI]``, the rows of ``agents`` concatenated.
      action_mask: ``[..., I, A]`` bool (idle column last when ``allow_idle``).
    """

    agents: np.ndarray
    global_state: np.ndarray
    action_mask: np.ndarray


@dataclasses.dataclass
class RefState:
    """Reference episode state, field for field :class:`jaxrrm.env.EnvState` (float64/int64).

    Attributes (optional leading batch axes ``...``):
      time ``[...]`` slot index; ap_pos_m ``[..., I, 2]`` m; ue_pos_m ``[..., K, 2]`` m;
      heading_rad ``[..., K]``; los ``[..., I, K]`` bool; shadowing_db ``[..., I, K]`` dB;
      large_gain ``[..., I, K]`` linear; association ``[..., K]``; fading ``[..., 2, I, K]``;
      avg_rate_mbps ``[..., K]`` Mbit/s (the PF average of the previous slot);
      candidates ``[..., I, N]`` (-1 = none).
    """

    time: np.ndarray
    ap_pos_m: np.ndarray
    ue_pos_m: np.ndarray
    heading_rad: np.ndarray
    los: np.ndarray
    shadowing_db: np.ndarray
    large_gain: np.ndarray
    association: np.ndarray
    fading: np.ndarray
    avg_rate_mbps: np.ndarray
    candidates: np.ndarray

    def replace(self, **kw) -> "RefState":
        """A copy with the given fields replaced."""
        return dataclasses.replace(self, **kw)


_INT_FIELDS = ("time", "association", "candidates")


def as_ref_state(state) -> RefState:
    """Any object with :class:`RefState`'s attributes (e.g. a JAX ``EnvState``) as a RefState
    of NumPy float64 / int64 / bool arrays."""
    kw = {}
    for f in dataclasses.fields(RefState):
        v = np.asarray(getattr(state, f.name))
        if f.name in _INT_FIELDS:
            v = v.astype(np.int64)
        elif f.name == "los":
            v = v.astype(bool)
        else:
            v = v.astype(np.float64)
        kw[f.name] = v
    return RefState(**kw)


def as_ref_obs(obs) -> RefObservation:
    """Any object with ``agents``, ``global_state`` and ``action_mask`` as a RefObservation."""
    return RefObservation(agents=_f(obs.agents), global_state=_f(obs.global_state),
                          action_mask=np.asarray(obs.action_mask, bool))


def channel_gain(state: RefState):
    """Instantaneous gain ``large_gain * |h|^2``: ``[..., I, K]`` float64, linear."""
    return _f(state.large_gain) * fading_power(state.fading)


def observe(state: RefState, params: EnvParams, cfg: EnvConfig):
    """Observation of the state's slot and the candidates behind each AP's actions.

    Candidates of AP ``i``: its associated UEs sorted by PF weight ``1/max(avg, floor)``,
    descending, ties by lower UE index, the first ``N`` (-1 where the AP has fewer). Features per
    candidate: ``log10`` of its all-APs-active SINR on this slot's channel (floored at
    :data:`TINY_SINR`) and ``log10`` of its PF weight.

    Returns:
      (:class:`RefObservation`, ``[..., I, N]`` int64 candidates).
    """
    num_aps, n = cfg.num_aps, cfg.num_candidates
    gain = channel_gain(state)
    assoc = np.asarray(state.association)
    est = sinr_all_active(gain, assoc, tx_power_w(params), noise_w(params))  # [..., K]
    w = pf_weights(state.avg_rate_mbps, _param(params, "min_avg_rate_mbps"))  # [..., K]
    own = assoc[..., None, :] == np.arange(num_aps)[:, None]  # [..., I, K]
    sort_key = np.where(own, -w[..., None, :], np.inf)  # ascending = weight descending
    order = np.argsort(sort_key, axis=-1, kind="stable")[..., :n]  # [..., I, N]
    valid = np.take_along_axis(own, order, axis=-1)
    cands = np.where(valid, order, -1).astype(np.int64)
    shape = own.shape
    est_c = np.take_along_axis(np.broadcast_to(est[..., None, :], shape), order, axis=-1)
    w_c = np.take_along_axis(np.broadcast_to(w[..., None, :], shape), order, axis=-1)
    f_sinr = np.where(valid, np.log10(np.maximum(est_c, TINY_SINR)), 0.0)
    f_w = np.where(valid, np.log10(w_c), 0.0)
    agents = np.stack([f_sinr, f_w], axis=-1).reshape(*shape[:-1], 2 * n)
    mask = valid
    if cfg.allow_idle:
        mask = np.concatenate([valid, np.ones(valid.shape[:-1] + (1,), bool)], axis=-1)
    glob = agents.reshape(*agents.shape[:-2], num_aps * 2 * n)
    return RefObservation(agents=agents, global_state=glob, action_mask=mask), cands


def init_state(ap_pos_m, ue_pos_m, heading_rad, los, shadowing_db, fading, params: EnvParams,
               cfg: EnvConfig):
    """An episode's first state and observation from its draws (mirrors ``jaxrrm.env.init_state``).

    Large-scale gain from path loss and shadowing, association to the largest gain, PF averages
    at the fair share of :func:`initial_average` (floored at ``min_avg_rate_mbps``), time 0.

    Args:
      ap_pos_m: ``[..., I, 2]`` m.  ue_pos_m: ``[..., K, 2]`` m.  heading_rad: ``[..., K]`` rad.
      los: ``[..., I, K]`` bool.  shadowing_db: ``[..., I, K]`` dB (already times the std).
      fading: ``[..., 2, I, K]`` real/imag parts of h(0).  params, cfg: parameters, config.

    Returns:
      (:class:`RefObservation`, :class:`RefState`).
    """
    los = np.asarray(los, bool)
    large = large_scale_gain(ap_pos_m, ue_pos_m, los, shadowing_db, params, cfg)
    assoc = associate(large)
    avg0 = initial_average(large, assoc, tx_power_w(params), noise_w(params),
                           _param(params, "bandwidth_hz"), cfg.num_aps)
    avg0 = np.maximum(avg0, _param(params, "min_avg_rate_mbps"))
    batch = large.shape[:-2]
    state = RefState(
        time=np.zeros(batch, np.int64),
        ap_pos_m=np.broadcast_to(_f(ap_pos_m), batch + (cfg.num_aps, 2)).copy(),
        ue_pos_m=_f(ue_pos_m).copy(),
        heading_rad=_f(heading_rad).copy(),
        los=los.copy(),
        shadowing_db=_f(shadowing_db).copy(),
        large_gain=large,
        association=assoc,
        fading=_f(fading).copy(),
        avg_rate_mbps=avg0,
        candidates=np.full(batch + (cfg.num_aps, cfg.num_candidates), -1, np.int64),
    )
    obs, cands = observe(state, params, cfg)
    return obs, state.replace(candidates=cands)


def actions_to_serving(actions, candidates, cfg: EnvConfig):
    """Served UE per AP and which actions were masked.

    Action ``n < N`` serves candidate ``n`` if it exists; ``N`` with ``allow_idle`` is silence.
    Any other action (a missing candidate, out of range) is *masked*: executed as silence and
    flagged, except on an AP that has no valid action at all (no candidates and no idle).

    Args:
      actions: ``[..., I]`` int.  candidates: ``[..., I, N]`` int (-1 = none).  cfg: config.

    Returns:
      (``[..., I]`` int64 served UE or -1, ``[..., I]`` bool masked).
    """
    n = cfg.num_candidates
    a = np.asarray(actions).astype(np.int64)
    cand = np.asarray(candidates)
    a, cand = np.broadcast_arrays(a[..., None], cand)
    a = a[..., 0]
    in_range = (a >= 0) & (a < n)
    picked = np.take_along_axis(cand, np.clip(a, 0, n - 1)[..., None], axis=-1)[..., 0]
    serving = np.where(in_range & (picked >= 0), picked, -1)
    is_idle = (a == n) if cfg.allow_idle else np.zeros(a.shape, bool)
    valid_action = (serving >= 0) | is_idle
    any_valid = np.any(cand >= 0, axis=-1) | cfg.allow_idle
    return serving.astype(np.int64), ~valid_action & any_valid


def transition(state: RefState, actions, innovation, params: EnvParams, cfg: EnvConfig):
    """One slot given the fading innovation (mirrors ``jaxrrm.env.transition``).

    Rates on the current channel from the actions; PF weights of the slot from the current
    averages; averages updated (floored at ``min_avg_rate_mbps``); reward (``pf`` or
    ``log_utility``); fading advanced with ``rho = J0(2 pi f_D T_s)``; time + 1; with mobility the
    UEs move ``v T_s`` (reflecting), the large-scale gain is recomputed with the episode's LOS and
    shadowing, and the association refreshed when the new time is a multiple of
    ``reassociation_slots``; then the next observation.

    Args:
      state: :class:`RefState` at slot ``t``.  actions: ``[..., I]`` int.
      innovation: ``[..., 2, I, K]`` real/imag parts of ``e(t)``.  params, cfg.

    Returns:
      ``(obs, state, reward [...], terminated [...] bool, truncated [...] bool, info)`` with
      ``info`` = ``rates_mbps`` ``[..., K]``, ``serving`` ``[..., I]``, ``masked`` ``[..., I]``,
      ``sinr`` ``[..., K]``, ``pf_weights`` ``[..., K]`` of slot ``t``.
    """
    p_w, n_w = tx_power_w(params), noise_w(params)
    floor = _param(params, "min_avg_rate_mbps")
    serving, masked = actions_to_serving(actions, state.candidates, cfg)
    s = sinr(channel_gain(state), serving, p_w, n_w)
    rates = rate_mbps(s, _param(params, "bandwidth_hz"))
    w = pf_weights(state.avg_rate_mbps, floor)
    avg_new = np.maximum(update_average(state.avg_rate_mbps, rates, _param(params, "pf_beta")),
                         floor)
    if cfg.reward == "pf":
        reward = pf_reward(rates, w, _param(params, "pf_lambda"))
    else:
        reward = log_utility_reward(avg_new, state.avg_rate_mbps)
    rho = fading_correlation(_param(params, "ue_speed_mps"), _param(params, "carrier_hz"),
                             _param(params, "slot_s"))
    time = np.asarray(state.time) + 1
    new = state.replace(time=time, fading=advance_fading(state.fading, innovation, rho),
                        avg_rate_mbps=avg_new)
    if cfg.mobility:
        step_m = _param(params, "ue_speed_mps") * _param(params, "slot_s")
        pos, heading = move_ues(state.ue_pos_m, state.heading_rad, step_m,
                                _param(params, "area_side_m"))
        large = large_scale_gain(state.ap_pos_m, pos, state.los, state.shadowing_db, params, cfg)
        refresh = (time % cfg.reassociation_slots) == 0
        assoc = np.where(np.asarray(refresh)[..., None], associate(large), state.association)
        new = new.replace(ue_pos_m=pos, heading_rad=heading, large_gain=large, association=assoc)
    obs, cands = observe(new, params, cfg)
    new = new.replace(candidates=cands)
    terminated = np.zeros(np.shape(time), bool)
    truncated = time >= cfg.horizon
    info = {"rates_mbps": rates, "serving": serving, "masked": masked, "sinr": s,
            "pf_weights": w}
    return obs, new, reward, terminated, truncated, info


# --------------------------------------------------------------------------------------------
# Random draws: reset and step
# --------------------------------------------------------------------------------------------

def _is_stream_list(rng) -> bool:
    return not isinstance(rng, np.random.Generator)


def _batch_of(rng, batch):
    if _is_stream_list(rng):
        if batch is not None and batch != len(rng):
            raise ValueError(f"batch={batch} but {len(rng)} random streams were given")
        return len(rng)
    return batch


def _draw(rng: Rng, method: str, shape: tuple, batch: Optional[int]):
    """``rng.<method>(size=...)`` for one episode (``batch=None``), a batch from one Generator,
    or one draw per stream of a sequence of Generators, stacked."""
    if _is_stream_list(rng):
        return np.stack([getattr(g, method)(size=shape) for g in rng])
    size = shape if batch is None else (batch, *shape)
    return getattr(rng, method)(size=size)


def drop_ues(rng: Rng, ap_pos_m, num_ues: int, area_side_m, min_distance_m, num_tries: int = 16,
             batch: Optional[int] = None):
    """Uniform UE drop, each UE at least ``min_distance_m`` (2-D) from every AP.

    ``num_tries`` uniform candidate positions per UE, the first far enough is kept; if none is,
    the last is pushed radially from its nearest AP to ``min_distance_m`` and clipped to the area
    (the JAX fallback).

    Args:
      rng: Generator or per-episode Generators.  ap_pos_m: ``[..., I, 2]`` m.  num_ues: ``K``.
      area_side_m, min_distance_m: m.  num_tries: candidates per UE.  batch: episodes or None.

    Returns:
      ``[..., K, 2]`` float64, m.
    """
    side = float(area_side_m)
    cand = _draw(rng, "random", (num_tries, num_ues, 2), batch) * side  # [..., M, K, 2]
    ap = _f(ap_pos_m)
    d = np.hypot(cand[..., :, :, None, 0] - ap[..., None, None, :, 0],
                 cand[..., :, :, None, 1] - ap[..., None, None, :, 1])  # [..., M, K, I]
    ok = np.all(d >= min_distance_m, axis=-1)  # [..., M, K]
    first = np.argmax(ok, axis=-2)  # [..., K]
    chosen = np.take_along_axis(cand, first[..., None, :, None], axis=-3)[..., 0, :, :]
    last = cand[..., -1, :, :]  # [..., K, 2]
    nearest = np.argmin(d[..., -1, :, :], axis=-1)  # [..., K]
    ap_b = np.broadcast_to(ap, last.shape[:-2] + ap.shape[-2:])
    near_pos = np.take_along_axis(ap_b, nearest[..., None], axis=-2)  # [..., K, 2]
    vec = last - near_pos
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    unit = np.where(norm > 1e-6, vec / np.maximum(norm, 1e-6), np.array([1.0, 0.0]))
    pushed = np.clip(near_pos + unit * min_distance_m, 0.0, side)
    return np.where(np.any(ok, axis=-2)[..., None], chosen, pushed)


def reset(rng: Rng, params: EnvParams, cfg: EnvConfig, batch: Optional[int] = None):
    """Start one episode (``batch=None``) or ``batch`` episodes with NumPy randomness.

    Draws, in this order, the same kinds of randomness as ``jaxrrm.env.reset``: AP positions
    (only for ``ap_layout="random"`` without fixed positions), the UE drop (``min_drop_tries``
    uniform candidates per UE), headings uniform in [0, 2 pi), each link's LOS state from the
    model's LOS probability, shadowing ``N(0, std(LOS)^2)`` dB and ``h(0) ~ CN(0, 1)``.

    Args:
      rng: a Generator, or a sequence of Generators (one per episode; ``batch`` = its length).
      params, cfg: parameters and configuration.  batch: number of episodes or None.

    Returns:
      (:class:`RefObservation`, :class:`RefState`), with a leading ``[E]`` axis when batched.
    """
    batch = _batch_of(rng, batch)
    i, k = cfg.num_aps, cfg.num_ues
    side = _param(params, "area_side_m")
    lead = () if batch is None else (batch,)
    if cfg.ap_positions_m is not None:
        ap = np.broadcast_to(np.asarray(cfg.ap_positions_m, np.float64), lead + (i, 2)).copy()
    elif cfg.ap_layout == "grid":
        ap = np.broadcast_to(grid_positions(i, side), lead + (i, 2)).copy()
    else:
        ap = _draw(rng, "random", (i, 2), batch) * side
    ue = drop_ues(rng, ap, k, side, _param(params, "min_distance_m"), cfg.min_drop_tries, batch)
    heading = _draw(rng, "random", (k,), batch) * (2.0 * math.pi)
    d2 = distances_2d_m(ap, ue)
    los = _draw(rng, "random", (i, k), batch) < los_probability(cfg.pathloss_model, d2)
    shadowing = shadowing_std_db(los, params) * _draw(rng, "standard_normal", (i, k), batch)
    fading = _draw(rng, "standard_normal", (2, i, k), batch) * math.sqrt(0.5)
    return init_state(ap, ue, heading, los, shadowing, fading, params, cfg)


def step(rng: Rng, state: RefState, actions, params: EnvParams, cfg: EnvConfig):
    """One slot: draw the fading innovation ``e(t) ~ CN(0, 1)`` and call :func:`transition`.

    Args:
      rng: Generator, or one Generator per episode of a batched state.
      state: :class:`RefState` (batched or not).  actions: ``[..., I]`` int.  params, cfg.

    Returns:
      As :func:`transition`.
    """
    t = np.asarray(state.time)
    batch = None if t.ndim == 0 else t.shape[0]
    batch = _batch_of(rng, batch)
    innovation = _draw(rng, "standard_normal", (2, cfg.num_aps, cfg.num_ues), batch)
    return transition(state, actions, innovation * math.sqrt(0.5), params, cfg)


# ============================================================================================
# Metrics
# ============================================================================================

def sum_rate(ue_rates) -> float:
    """Mean over episodes of the sum over UEs of ``[E, K]`` per-UE rates, Mbit/s."""
    x = _f(ue_rates)
    return float(np.mean(np.sum(x, axis=-1)))


def percentile_rate(ue_rates, q: float = 5.0) -> float:
    """``q``-th percentile of all per-UE rates pooled, linear interpolation between order
    statistics at rank ``q/100 (n-1)`` (numpy's default), Mbit/s."""
    x = np.sort(_f(ue_rates).reshape(-1))
    pos = q / 100.0 * (x.size - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, x.size - 1)
    return float(x[lo] + (pos - lo) * (x[hi] - x[lo]))


def score(ue_rates, mu) -> float:
    """``sum_rate + mu * percentile_rate(q=5)``, Mbit/s."""
    return sum_rate(ue_rates) + float(mu) * percentile_rate(ue_rates, 5.0)


# ============================================================================================
# Baseline policies (on the reference observation)
# ============================================================================================

def _features(obs: RefObservation, cfg: EnvConfig):
    f = _f(obs.agents).reshape(*np.shape(obs.agents)[:-1], cfg.num_candidates, 2)
    valid = np.asarray(obs.action_mask)[..., : cfg.num_candidates]
    return 10.0 ** f[..., 0], 10.0 ** f[..., 1], valid


def _best_valid(values, valid, cfg: EnvConfig):
    """Per AP the first valid candidate of largest value; idle (or 0) without any."""
    best = np.argmax(np.where(valid, values, -np.inf), axis=-1)
    fallback = cfg.idle_action if cfg.allow_idle else 0
    return np.where(np.any(valid, axis=-1), best, fallback).astype(np.int64)


def policy_full_reuse(obs: RefObservation, cfg: EnvConfig):
    """Every AP serves its valid candidate of largest ``w log2(1 + SINR_est)``: ``[..., I]``."""
    s, w, valid = _features(obs, cfg)
    return _best_valid(w * np.log2(1.0 + s), valid, cfg)


def policy_reward_greedy(obs: RefObservation, params: EnvParams, cfg: EnvConfig):
    """Every AP serves its valid candidate of largest ``w**lambda log2(1 + SINR_est)``: ``[..., I]``."""
    s, w, valid = _features(obs, cfg)
    return _best_valid(w ** _param(params, "pf_lambda") * np.log2(1.0 + s), valid, cfg)


def policy_max_sinr(obs: RefObservation, cfg: EnvConfig):
    """Every AP serves its valid candidate of largest SINR estimate: ``[..., I]``."""
    s, _, valid = _features(obs, cfg)
    return _best_valid(s, valid, cfg)


def policy_tdm(obs: RefObservation, time, cfg: EnvConfig):
    """Only AP ``time mod I`` transmits (its largest-PF-metric candidate), others idle.

    Args:
      obs: observation.  time: ``[...]`` int slot index.  cfg: needs ``allow_idle``.

    Returns:
      ``[..., I]`` int64.
    """
    if not cfg.allow_idle:
        raise ValueError("tdm needs EnvConfig.allow_idle=True")
    best = policy_full_reuse(obs, cfg)
    turn = np.arange(cfg.num_aps) == (np.asarray(time)[..., None] % cfg.num_aps)
    return np.where(turn, best, cfg.idle_action).astype(np.int64)


def policy_random(rng: Rng, obs: RefObservation, cfg: EnvConfig):
    """Every AP serves a uniformly random valid candidate (idle or 0 if it has none).

    Args:
      rng: Generator, or one per episode of a batched observation.  obs, cfg.

    Returns:
      ``[..., I]`` int64.
    """
    valid = np.asarray(obs.action_mask)[..., : cfg.num_candidates]
    batch = None if valid.ndim == 2 else valid.shape[0]
    u = _draw(rng, "random", (cfg.num_aps, cfg.num_candidates), _batch_of(rng, batch))
    return _best_valid(u, valid, cfg)


def joint_action_table(cfg: EnvConfig) -> np.ndarray:
    """All joint actions ``[A**I, I]`` in lexicographic order (AP 0 most significant)."""
    return np.array(list(itertools.product(range(cfg.num_actions), repeat=cfg.num_aps)),
                    dtype=np.int64)


def joint_action_values(state: RefState, params: EnvParams, cfg: EnvConfig):
    """Instantaneous reward of every joint action on the true channel: ``[A**I, ...]``, with
    ``-inf`` for joint actions that contain a masked component."""
    table = joint_action_table(cfg)  # [J, I]
    lead = np.shape(state.time)
    acts = table.reshape((table.shape[0],) + (1,) * len(lead) + (cfg.num_aps,))
    serving, masked = actions_to_serving(acts, np.asarray(state.candidates)[None], cfg)
    s = sinr(channel_gain(state)[None], serving, tx_power_w(params), noise_w(params))
    rates = rate_mbps(s, _param(params, "bandwidth_hz"))
    avg = _f(state.avg_rate_mbps)[None]
    floor = _param(params, "min_avg_rate_mbps")
    if cfg.reward == "pf":
        value = pf_reward(rates, pf_weights(avg, floor), _param(params, "pf_lambda"))
    else:
        new = np.maximum(update_average(avg, rates, _param(params, "pf_beta")), floor)
        value = log_utility_reward(new, avg)
    return np.where(np.any(masked, axis=-1), -np.inf, value)


def policy_exhaustive(state: RefState, params: EnvParams, cfg: EnvConfig):
    """The joint action of largest instantaneous reward (first on ties): ``[..., I]`` int64."""
    values = joint_action_values(state, params, cfg)
    return joint_action_table(cfg)[np.argmax(values, axis=0)]


def policy_actions(name: str, rng: Rng, obs: RefObservation, state: RefState,
                   params: EnvParams, cfg: EnvConfig):
    """Actions ``[..., I]`` of the baseline ``name`` (one of :data:`POLICIES`)."""
    if name == "random":
        return policy_random(rng, obs, cfg)
    if name == "full_reuse":
        return policy_full_reuse(obs, cfg)
    if name == "max_sinr":
        return policy_max_sinr(obs, cfg)
    if name == "reward_greedy":
        return policy_reward_greedy(obs, params, cfg)
    if name == "tdm":
        return policy_tdm(obs, state.time, cfg)
    if name == "exhaustive":
        return policy_exhaustive(state, params, cfg)
    raise ValueError(f"unknown policy {name!r}: allowed are {POLICIES}")


# ============================================================================================
# Rollouts
# ============================================================================================

def rollout(rng: np.random.Generator, policy_name: str, params: EnvParams, cfg: EnvConfig,
            num_episodes: int, batched: bool = False, streams: str = "episode") -> np.ndarray:
    """Per-UE average rates ``R_j = (1/T) sum_t C_j(t)`` of ``num_episodes`` episodes.

    Args:
      rng: Generator.
      policy_name: one of :data:`POLICIES`.
      params, cfg: parameters and configuration (``cfg.horizon`` slots per episode).
      num_episodes: ``E``.
      batched: False steps one episode at a time in a Python loop; True steps all ``E``
        episodes at once (NumPy broadcasting over a leading ``[E]`` axis).
      streams: ``"episode"`` (default): episode ``e`` draws everything from
        ``rng.spawn(E)[e]``, so batched and unbatched runs give identical results (in batched
        mode the per-step draws then loop over the ``E`` streams); ``"shared"``: all draws come
        from ``rng`` itself (batched: one call per draw for the whole batch; fastest).

    Returns:
      ``[E, K]`` float64, Mbit/s.
    """
    if streams not in ("episode", "shared"):
        raise ValueError(f"streams={streams!r}: allowed are 'episode' and 'shared'")
    if policy_name not in POLICIES:
        raise ValueError(f"unknown policy {policy_name!r}: allowed are {POLICIES}")
    e, horizon = int(num_episodes), cfg.horizon
    gens = rng.spawn(e) if streams == "episode" else None
    if batched:
        r = gens if gens is not None else rng
        obs, state = reset(r, params, cfg, batch=e)
        total = np.zeros((e, cfg.num_ues))
        for _ in range(horizon):
            acts = policy_actions(policy_name, r, obs, state, params, cfg)
            obs, state, _, _, _, info = step(r, state, acts, params, cfg)
            total += info["rates_mbps"]
        return total / horizon
    out = np.zeros((e, cfg.num_ues))
    for ep in range(e):
        r = gens[ep] if gens is not None else rng
        obs, state = reset(r, params, cfg)
        total = np.zeros(cfg.num_ues)
        for _ in range(horizon):
            acts = policy_actions(policy_name, r, obs, state, params, cfg)
            obs, state, _, _, _, info = step(r, state, acts, params, cfg)
            total += info["rates_mbps"]
        out[ep] = total / horizon
    return out
