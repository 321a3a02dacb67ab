"""Radio layer: SINR, Shannon rates, proportional-fair (PF) averages, weights and rewards.

Pure, shape-documented functions of one network snapshot. Notation (docs/design.md §1): ``I``
APs, ``K`` UEs, ``g[i, j]`` the linear channel power gain from AP ``i`` to UE ``j``, ``P_i`` AP
``i``'s transmit power, ``N`` the noise power (all in W).

Batching: the AP and UE axes come first and any number of *trailing* batch axes ``*B`` may
follow (``gain [I, K, *B]``, ``serving [I, *B]``, results ``[K, *B]``): the simulator runs a
batch of episodes with the episode axis last (:func:`jaxrrm.env.rollout`), where every kernel is
a long contiguous loop over episodes. Without batch axes the shapes are those of one snapshot;
``vmap`` over a leading axis works as well. Sums over APs are written out as additions, first AP
to last, so that a result does not depend on the batch shape (XLA chooses a reduction's order
from the array's shape).
"""

from __future__ import annotations

import jax.numpy as jnp

#: Up to this many UEs a sum over UEs is written out as additions (first to last); beyond, it is
#: XLA's reduction (whose order then depends on the shapes).
UNROLLED_MAX_UES = 64


def sum_first(x):
    """Sum over axis 0, first to last (``x[0] + x[1] + ...``): ``[n, ...] -> [...]``."""
    acc = x[0]
    for i in range(1, x.shape[0]):
        acc = acc + x[i]
    return acc


def mean_ues(x):
    """Mean over the UE axis 0 of ``[K, *B]`` values: ``[*B]`` (:func:`sum_first` up to
    :data:`UNROLLED_MAX_UES` UEs, else XLA's mean)."""
    num_ues = x.shape[0]
    if num_ues <= UNROLLED_MAX_UES:
        return sum_first(x) / num_ues
    return jnp.mean(x, axis=0)


def per_ap(x, extra_dims: int):
    """A scalar or per-AP ``[I]`` quantity (a power, say) broadcastable against ``[I, ...]``
    arrays with ``extra_dims`` axes after the AP axis."""
    x = jnp.asarray(x)
    return x.reshape(x.shape + (1,) * extra_dims) if x.ndim else x


def served_by(serving, num_ues: int):
    """``S[i, j]`` = AP ``i`` serves UE ``j`` this slot: ``[I, *B] int -> [I, K, *B]`` bool.

    Args:
      serving: ``[I, *B]`` int32, UE index served by each AP, ``-1`` = silent.
      num_ues: int ``K`` (static).
    """
    ues = jnp.arange(num_ues, dtype=jnp.int32).reshape((1, num_ues) + (1,) * (serving.ndim - 1))
    return jnp.asarray(serving, jnp.int32)[:, None] == ues


def serving_matrix(serving, num_ues: int):
    """One-hot serving matrix: ``S[i, j] = 1`` iff AP ``i`` serves UE ``j`` this slot.

    Args:
      serving: ``[I, *B]`` int32, UE index served by each AP, ``-1`` = silent.
      num_ues: int ``K`` (static).

    Returns:
      ``[I, K, *B]`` float32 in {0, 1}.
    """
    return served_by(serving, num_ues).astype(jnp.float32)


def sinr(gain, serving, tx_power_w, noise_w):
    """SINR of every UE given which UE each AP serves.

    For a UE ``j`` served by AP ``s``:

    .. math::
        \\mathrm{SINR}_j = \\frac{P_s g_{sj}}{\\sum_{i \\ne s,\\ i\\ \\mathrm{active}} P_i g_{ij} + N}

    An AP is active iff ``serving[i] >= 0``; UEs that no AP serves get 0. The interference sum runs
    over the other active APs only (masked before summing, never as total minus own, so no
    cancellation error). Each UE must be served by at most one AP (true in the environment, where a
    UE belongs to one AP).

    Args:
      gain: ``[I, K, *B]`` float, linear channel power gains.
      serving: ``[I, *B]`` int32, served UE index per AP, ``-1`` = silent.
      tx_power_w: scalar or ``[I]`` float, W.
      noise_w: scalar float, W.

    Returns:
      ``[K, *B]`` float32, linear SINR (0 for UEs not served).
    """
    num_ues = gain.shape[1]
    s_b = served_by(serving, num_ues)
    s = s_b.astype(gain.dtype)  # [I, K, *B]
    active = (serving >= 0).astype(gain.dtype)[:, None]  # [I, 1, *B]
    rx = per_ap(tx_power_w, gain.ndim - 1) * gain
    signal = sum_first(s * rx)
    interference = sum_first((active - s) * rx)
    served = jnp.any(s_b, axis=0)
    return jnp.where(served, signal / (interference + noise_w), 0.0)


def sinr_all_active(gain, association, tx_power_w, noise_w):
    """Each UE's SINR from its own AP when *every* AP transmits (a conservative CQI estimate).

    .. math::
        \\widehat{\\mathrm{SINR}}_j = \\frac{P_{a(j)} g_{a(j)j}}{\\sum_{i \\ne a(j)} P_i g_{ij} + N}

    Args:
      gain: ``[I, K, *B]`` float, linear.
      association: ``[K, *B]`` int32, serving AP ``a(j)`` of each UE.
      tx_power_w: scalar or ``[I]`` float, W.
      noise_w: scalar float, W.

    Returns:
      ``[K, *B]`` float32, linear.
    """
    num_aps = gain.shape[0]
    aps = jnp.arange(num_aps, dtype=association.dtype).reshape((num_aps,) + (1,) * association.ndim)
    own = (association[None] == aps).astype(gain.dtype)  # [I, K, *B]
    rx = per_ap(tx_power_w, gain.ndim - 1) * gain
    signal = sum_first(own * rx)
    interference = sum_first((1.0 - own) * rx)
    return signal / (interference + noise_w)


def rate_mbps(sinr, bandwidth_hz):
    """Shannon rate in Mbit/s: :math:`C = B \\log_2(1 + \\mathrm{SINR}) / 10^6`.

    Args:
      sinr: any shape, float, linear, >= 0.
      bandwidth_hz: broadcastable, float, Hz.

    Returns:
      Broadcast shape, float32, Mbit/s.

    Computed as ``log1p(sinr) / ln 2``: ``log2(1 + sinr)`` in float32 loses the relative precision
    of small SINRs (error ~6e-8 / SINR, 1% at -50 dB).
    """
    return bandwidth_hz * (jnp.log1p(sinr) / jnp.log(2.0)) / 1e6


def update_average(avg, rate, beta):
    """Exponentially weighted PF average: :math:`\\bar C(t) = (1-\\beta)\\bar C(t-1) + \\beta C(t)`.

    Args:
      avg: ``[K]`` float, Mbit/s, :math:`\\bar C(t-1)`.
      rate: ``[K]`` float, Mbit/s, :math:`C(t)`.
      beta: scalar float in (0, 1].

    Returns:
      ``[K]`` float, Mbit/s, :math:`\\bar C(t)`.
    """
    return (1.0 - beta) * avg + beta * rate


def pf_weights(avg, floor_mbps=1e-6):
    """PF weights :math:`w_j = 1 / \\max(\\bar C_j, \\epsilon)`, in 1/(Mbit/s).

    The floor :math:`\\epsilon` (``floor_mbps``, 1e-6 Mbit/s by default) only matters for a UE
    starved for thousands of slots, whose average would otherwise underflow to 0.

    Args:
      avg: ``[K]`` float, Mbit/s.
      floor_mbps: scalar float, Mbit/s.

    Returns:
      ``[K]`` float, 1/(Mbit/s).
    """
    return 1.0 / jnp.maximum(avg, floor_mbps)


def pf_reward(rate, weights, lam, served=None):
    """The paper's PF-weighted reward: :math:`r = \\frac{1}{K}\\sum_j w_j^{\\lambda} C_j`.

    :math:`\\lambda = 0` rewards raw throughput (Mbit/s); :math:`\\lambda = 1` is classic PF.

    Args:
      rate: ``[..., K]`` float, Mbit/s, this slot's rates (the UE axis last); with ``served``,
        ``[K, *B]`` (the UE axis first).
      weights: same shape, 1/(Mbit/s), the PF weights in force for this slot.
      lam: scalar float in [0, 1].
      served: ``None``, or the ``[I, K, *B]`` bool :func:`served_by` matrix of the slot: since
        :math:`C_j = 0` for a UE no AP serves, :math:`w^\\lambda` (a libm ``pow``) is then
        evaluated for the ``I`` served UEs only, not all ``K``; same value up to rounding.

    Returns:
      ``[...]`` (``[*B]`` with ``served``) float (units Mbit/s^(1-lambda)).
    """
    if served is None:
        return jnp.mean(jnp.power(weights, lam) * rate, axis=-1)
    w_served = jnp.max(jnp.where(served, weights[None], 0.0), axis=1)  # [I, *B]
    pw_ue = sum_first(jnp.where(served, jnp.power(w_served, lam)[:, None], 0.0))  # [K, *B]
    return mean_ues(pw_ue * rate)


def log_utility_reward(avg_new, avg_old, ue_axis: int = -1):
    """PF-utility increment: :math:`r = \\frac{1}{K}\\sum_j [\\log \\bar C_j(t) - \\log \\bar C_j(t-1)]`.

    Summed over an episode it telescopes to the change of the PF utility
    :math:`\\frac{1}{K}\\sum_j \\log \\bar C_j`, so it cannot be inflated by starving users (an
    option of ours, not the paper's; docs/design.md §1).

    Args:
      avg_new, avg_old: float, Mbit/s, > 0, with the UE axis at ``ue_axis`` (``[..., K]`` by
        default; ``ue_axis=0`` for ``[K, *B]``, the batch-last layout).

    Returns:
      The shape without the UE axis, float, nats.
    """
    d = jnp.log(avg_new) - jnp.log(avg_old)
    if ue_axis == 0:
        return mean_ues(d)
    return jnp.mean(d, axis=ue_axis)


def initial_average(large_gain, association, tx_power_w, noise_w, bandwidth_hz, num_aps: int):
    """Fair-share start of the PF averages, :math:`\\bar C_j(0)`, Mbit/s.

    The UE's rate at its large-scale SINR (no fast fading) with all APs active, divided by the
    number of UEs associated with its AP:

    .. math::
        \\bar C_j(0) = \\frac{B \\log_2(1 + \\widehat{\\mathrm{SINR}}_j^{\\mathrm{LS}})}{|\\{k: a(k) = a(j)\\}|}

    Args:
      large_gain: ``[I, K]`` float, linear (path loss and shadowing only).
      association: ``[K]`` int32.
      tx_power_w: scalar or ``[I]``, W.  noise_w: scalar, W.  bandwidth_hz: scalar, Hz.
      num_aps: int ``I`` (static).

    Returns:
      ``[K]`` float, Mbit/s, > 0.
    """
    ls_sinr = sinr_all_active(large_gain, association, tx_power_w, noise_w)
    counts = jnp.sum(association[None, :] == jnp.arange(num_aps)[:, None], axis=1)  # [I]
    return rate_mbps(ls_sinr, bandwidth_hz) / counts[association]
