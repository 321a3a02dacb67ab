"""Evaluation metrics (DESIGN.md §3) and confidence intervals.

Input everywhere is ``ue_rates``: ``[E, K]`` per-UE average rates :math:`R_j` in Mbit/s over
``E`` evaluation episodes (what :func:`jaxrrm.env.rollout` returns as ``ue_rates_mbps``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def sum_rate(ue_rates):
    """Sum rate :math:`R_\\mathrm{sum} = \\frac1E\\sum_e \\sum_j R_{ej}`, Mbit/s.

    Args:
      ue_rates: ``[E, K]`` float, Mbit/s.

    Returns:
      Scalar float, Mbit/s.
    """
    return jnp.mean(jnp.sum(ue_rates, axis=-1), axis=-1)


def percentile_rate(ue_rates, q=5.0):
    """``q``-th percentile of all per-UE rates pooled over UEs and episodes, Mbit/s.

    Linear interpolation between order statistics, as ``numpy.percentile``'s default.

    Args:
      ue_rates: ``[E, K]`` float, Mbit/s.
      q: percentile in [0, 100].

    Returns:
      Scalar float, Mbit/s.
    """
    return jnp.percentile(jnp.reshape(ue_rates, (-1,)), q)


def score(ue_rates, mu):
    """Score :math:`R_\\mathrm{score} = R_\\mathrm{sum} + \\mu R_{5\\%}`, Mbit/s.

    Experiments use :math:`\\mu = K`, so the 5th-percentile user weighs as much as the average.

    Args:
      ue_rates: ``[E, K]`` float, Mbit/s.
      mu: scalar float, >= 0.

    Returns:
      Scalar float, Mbit/s.
    """
    return sum_rate(ue_rates) + mu * percentile_rate(ue_rates, 5.0)


def relative_score(score_value, tdm_score):
    """Score relative to TDM's, :math:`R_\\mathrm{score} / R_\\mathrm{score}(\\mathrm{TDM})`."""
    return score_value / tdm_score


def all_metrics(ue_rates, mu, tdm_score=None) -> dict:
    """Every DESIGN §3 metric of one set of episodes as Python floats.

    Returns:
      ``{"sum_rate", "p5_rate", "score"}`` and ``"relative_score"`` if ``tdm_score`` is given.
    """
    out = {
        "sum_rate": float(sum_rate(ue_rates)),
        "p5_rate": float(percentile_rate(ue_rates, 5.0)),
        "score": float(score(ue_rates, mu)),
    }
    if tdm_score is not None:
        out["relative_score"] = out["score"] / float(tdm_score)
    return out


def _betainc_np(a, b, x):
    """Regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc_np(b, a, 1.0 - x)
    # Lentz's algorithm
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        m2 = 2 * m
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= d * c
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        f *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return front * f / a


def student_t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (``0 < p < 1``).

    Inverts :math:`F(t) = 1 - \\frac12 I_{df/(df+t^2)}(df/2, 1/2)` (t > 0) by bisection;
    e.g. ``student_t_quantile(0.975, 15) = 2.1314``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r} is invalid: allowed range is (0, 1)")
    if df < 1:
        raise ValueError(f"df={df!r} is invalid: allowed range is >= 1")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)

    def cdf(t):
        return 1.0 - 0.5 * _betainc_np(df / 2.0, 0.5, df / (df + t * t))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_ci95(values):
    """Mean and half-width of the two-sided 95% confidence interval of the mean.

    .. math::
        \\bar x \\pm t_{0.975,\\,S-1}\\,\\frac{s}{\\sqrt S}

    with :math:`s` the sample standard deviation (ddof 1) of the ``S`` values (one per seed).

    Args:
      values: ``[S]`` array-like of floats.

    Returns:
      ``(mean, half_width)`` as Python floats; the half-width is ``nan`` for ``S = 1``.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(np.mean(x))
    if x.size == 1:
        return mean, float("nan")
    sem = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return mean, student_t_quantile(0.975, x.size - 1) * sem
