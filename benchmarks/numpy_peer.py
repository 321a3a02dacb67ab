"""A lean NumPy model of the simulator: the fast peer the JAX rollouts are measured against.

:mod:`jaxrrm.testing.reference` is the cross-check oracle: float64, general (every policy, option
and model), written for clarity. It is a slow peer. This module is what a researcher who wants
speed from NumPy would write for one scenario: float32, every episode of the batch in one array
(``[E, I, K]``, episodes first: NumPy's element-wise loops are contiguous either way), no Python
loop but the one over slots, the channel state of an episode precomputed where it does not
change (the association mask), the candidates found with ``argpartition`` and the policy and the
SINR evaluated for the served UEs only. It runs the ``full_reuse`` policy (every AP serves its
candidate of largest PF metric :math:`w_j \\log_2(1 + \\widehat{\\mathrm{SINR}}_j)`, all APs
transmit) on the paper's local observation, without mobility, with the ``pf`` reward: the
workload of ``benchmarks/env_throughput.py``.

Per slot it computes what :func:`jaxrrm.env.step` computes: the observation (the candidates'
features ``log10 SINR_est`` and ``log10 w``, sorted by PF weight), the served UEs, their SINR
and rates, the PF reward, the PF averages and the next fading. Episodes start from
:func:`jaxrrm.testing.reference.reset` (the one-off draws of an episode, vectorized; cast to
float32), timed with the rest. ``tests/test_numpy_peer.py`` checks one slot against the
reference's :func:`~jaxrrm.testing.reference.transition` on the same innovation.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrrm import EnvConfig, EnvParams
from jaxrrm.testing import reference


class LeanState:
    """The per-episode arrays of a batch of ``E`` episodes (float32 / int64, episodes first).

    Attributes:
      large_gain: ``[E, I, K]`` linear.  own: ``[E, I, K]`` bool, UE ``j`` associated with AP
      ``i`` (float32 0/1; ``other`` its complement).  fading_re, fading_im: ``[E, I, K]``, real/imaginary parts of ``h(t)``.
      avg_rate_mbps: ``[E, K]``, the PF average of the previous slot.
    """

    def __init__(self, large_gain, association, fading, avg_rate_mbps, num_aps: int):
        self.large_gain = np.ascontiguousarray(large_gain, np.float32)
        assoc = np.asarray(association)
        self.own = (assoc[:, None, :] == np.arange(num_aps)[None, :, None]).astype(np.float32)
        self.other = np.float32(1) - self.own
        self.fading_re = np.ascontiguousarray(fading[:, 0], np.float32)
        self.fading_im = np.ascontiguousarray(fading[:, 1], np.float32)
        self.avg_rate_mbps = np.ascontiguousarray(avg_rate_mbps, np.float32)


def _constants(params: EnvParams, cfg: EnvConfig):
    f = lambda name: np.float32(np.asarray(getattr(params, name)))  # noqa: E731
    rho = np.float32(reference.fading_correlation(
        float(params.ue_speed_mps), float(params.carrier_hz), float(params.slot_s)))
    return dict(
        p_w=np.broadcast_to(np.asarray(reference.tx_power_w(params), np.float32),
                            (cfg.num_aps,))[None, :, None],
        n_w=np.float32(reference.noise_w(params)), b_mhz=f("bandwidth_hz") / np.float32(1e6),
        floor=f("min_avg_rate_mbps"), beta=f("pf_beta"), lam=f("pf_lambda"), rho=rho,
        off_diag=np.float32(1) - np.eye(cfg.num_aps, dtype=np.float32),
        innov_std=np.float32(math.sqrt(max(1.0 - float(rho) ** 2, 0.0)) * math.sqrt(0.5)))


def check_supported(cfg: EnvConfig) -> None:
    """The peer models the benchmark's scenario family only."""
    if cfg.mobility or not cfg.local_obs or cfg.reward != "pf":
        raise ValueError("numpy_peer models the local observation, no mobility and the pf reward")


def lean_step(st: LeanState, z_re, z_im, c: dict, cfg: EnvConfig):
    """One slot of the ``full_reuse`` policy, given the fading innovation's standard normals.

    Args:
      st: :class:`LeanState` at slot ``t`` (updated in place to slot ``t + 1``).
      z_re, z_im: ``[E, I, K]`` float32 standard normals (the innovation is
        ``sqrt(1/2) (z_re + i z_im)``).
      c: :func:`_constants`.  cfg: the configuration.

    Returns:
      (rates ``[E, K]`` Mbit/s, reward ``[E]``, observation features ``[E, I, 2N]``).
    """
    num_ep, num_aps, num_ues = st.large_gain.shape
    n = cfg.num_candidates
    ep = np.arange(num_ep)[:, None]
    # Observation: all-APs-active SINR estimate and the N largest PF weights among own UEs.
    rx = c["p_w"] * (st.large_gain * (st.fading_re * st.fading_re + st.fading_im * st.fading_im))
    # Interference as a masked sum, never total minus own (float32 cancellation at high SINR).
    signal = np.einsum("eik,eik->ek", rx, st.own, dtype=np.float32)
    est = signal / (np.einsum("eik,eik->ek", rx, st.other, dtype=np.float32) + c["n_w"])
    w = np.float32(1.0) / np.maximum(st.avg_rate_mbps, c["floor"])  # [E, K]
    score = np.where(st.own > 0, w[:, None, :], np.float32(-np.inf))  # [E, I, K]
    top = np.argpartition(score, num_ues - n, axis=-1)[..., num_ues - n:]  # [E, I, N] unordered
    top_w = np.take_along_axis(score, top, axis=-1)
    order = np.argsort(-top_w, axis=-1, kind="stable")  # largest weight first
    cand = np.take_along_axis(top, order, axis=-1)
    w_c = np.take_along_axis(top_w, order, axis=-1)
    valid = w_c > -np.inf
    est_c = est[ep[:, :, None], cand]  # [E, I, N]
    feats = np.stack([np.where(valid, np.log10(np.maximum(est_c, np.float32(1e-30))), 0),
                      np.where(valid, np.log10(np.where(valid, w_c, 1)), 0)], axis=-1)
    # Policy: the valid candidate of largest PF metric; an AP without candidates stays silent.
    metric = np.where(valid, w_c * np.log2(np.float32(1.0) + est_c), -np.inf)
    pick = np.argmax(metric, axis=-1)  # [E, I]
    active = valid.any(axis=-1)  # [E, I]
    served = np.take_along_axis(cand, pick[..., None], axis=-1)[..., 0]  # [E, I]
    # SINR of the served UEs: power from every AP (rows) at each AP's served UE (columns).
    rx_at = np.take_along_axis(rx, np.broadcast_to(served[:, None, :], (num_ep, num_aps,
                                                                        num_aps)), axis=2)
    sig = np.einsum("eii->ei", rx_at)
    interference = np.einsum("eki,ek,ki->ei", rx_at, active, c["off_diag"], dtype=np.float32)
    sinr = sig / (interference + c["n_w"])
    rate = c["b_mhz"] * np.log2(np.float32(1.0) + sinr) * active  # [E, I]
    rates = np.zeros((num_ep, num_ues + 1), np.float32)  # column K: the silent APs' nothing
    np.put_along_axis(rates, np.where(active, served, num_ues), rate, axis=1)
    rates = rates[:, :num_ues]
    reward = np.einsum("ei,ei->e", np.take_along_axis(w, served, axis=1) ** c["lam"],
                       rate) / np.float32(num_ues)
    # PF averages and fading of the next slot.
    st.avg_rate_mbps = np.maximum((1 - c["beta"]) * st.avg_rate_mbps + c["beta"] * rates,
                                  c["floor"])
    st.fading_re = c["rho"] * st.fading_re + c["innov_std"] * z_re
    st.fading_im = c["rho"] * st.fading_im + c["innov_std"] * z_im
    return rates, reward, feats.reshape(num_ep, num_aps, 2 * n)


def rollout(rng: np.random.Generator, params: EnvParams, cfg: EnvConfig, num_episodes: int
            ) -> np.ndarray:
    """Per-UE average rates ``[E, K]`` float32 (Mbit/s) of ``num_episodes`` ``full_reuse``
    episodes of ``cfg.horizon`` slots, all episodes at once."""
    check_supported(cfg)
    _, ref_state = reference.reset(rng, params, cfg, batch=num_episodes)
    st = LeanState(ref_state.large_gain, ref_state.association, ref_state.fading,
                   ref_state.avg_rate_mbps, cfg.num_aps)
    c = _constants(params, cfg)
    shape = st.large_gain.shape
    total = np.zeros((num_episodes, cfg.num_ues), np.float32)
    for _ in range(cfg.horizon):
        z = rng.standard_normal((2,) + shape, dtype=np.float32)
        rates, _, _ = lean_step(st, z[0], z[1], c, cfg)
        total += rates
    return total / np.float32(cfg.horizon)
