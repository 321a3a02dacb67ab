"""Evaluation metrics (docs/design.md §3) and the statistics over seeds.

The metrics take ``ue_rates``: ``[E, K]`` per-UE average rates :math:`R_j` in Mbit/s over ``E``
evaluation episodes (what :func:`jaxrrm.env.rollout` returns as ``ue_rates_mbps``). The
statistics take per-seed values ``[S]`` (one number per independent evaluation): the Student-t
interval of the mean, rliable's IQM, bootstrap intervals and probability of improvement, and the
paired comparisons of two methods evaluated on the same test episodes seed by seed
(:func:`paired_difference`, :func:`headroom_fraction`).
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
    """Every docs/design.md §3 metric of one set of episodes as Python floats.

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


def student_t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (``0 < p < 1``),
    ``scipy.stats.t.ppf``; e.g. ``student_t_quantile(0.975, 15) = 2.1314``."""
    from scipy import stats

    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r} is invalid: allowed range is (0, 1)")
    if df < 1:
        raise ValueError(f"df={df!r} is invalid: allowed range is >= 1")
    return float(stats.t.ppf(p, df))


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


# --------------------------------------------------------------------------------------------
# Robust aggregates and bootstrap intervals (the definitions of rliable, Agarwal et al. 2021,
# "Deep RL at the edge of the statistical precipice", NeurIPS; arXiv 2108.13264)
# --------------------------------------------------------------------------------------------

#: Bootstrap resamples of :func:`bootstrap_ci` (rliable's default is 50 000 for figures; 10 000
#: give the 2.5% / 97.5% percentiles to about +-0.5% of the interval's width here).
BOOTSTRAP_REPS = 10_000


def _runs_by_tasks(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with >= 1 of each, got shape "
                         f"{np.shape(scores)}")
    return x


def iqm(scores) -> float:
    r"""Interquartile mean: the mean of the middle 50% of all scores (runs x tasks pooled),
    ``scipy.stats.trim_mean(scores, 0.25, axis=None)`` as rliable's ``aggregate_iqm``.

    .. math::
        \mathrm{IQM}(x) = \frac{1}{n - 2g} \sum_{i=g+1}^{n-g} x_{(i)},\qquad
        g = \lfloor n / 4 \rfloor

    with :math:`x_{(i)}` the sorted values. Robust to an outlying seed, less noisy than the
    median.

    Args:
      scores: ``[runs]`` or ``[runs, tasks]`` floats (e.g. one score per seed).
    """
    from scipy import stats

    return float(stats.trim_mean(_runs_by_tasks(scores), 0.25, axis=None))


def _iqm_rows(x: np.ndarray) -> np.ndarray:
    """IQM of each row of ``x [R, n]`` (the same trimming as :func:`iqm`)."""
    n = x.shape[1]
    g = n // 4
    return np.sort(x, axis=1)[:, g:n - g].mean(axis=1)


def bootstrap_ci(scores, statistic: str = "mean", confidence: float = 0.95,
                 reps: int = BOOTSTRAP_REPS, seed: int = 0) -> tuple:
    """Stratified-bootstrap percentile confidence interval of an aggregate of the scores
    (rliable's ``get_interval_estimates`` with ``method="percentile"``).

    Each of ``reps`` resamples draws, within every task separately (the strata), as many runs
    with replacement as that task has; the aggregate of the resampled ``[runs, tasks]``
    matrix is computed and the interval is its ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles. With one task this is the ordinary percentile
    bootstrap over runs (``scipy.stats.bootstrap(..., method="percentile")``).

    Args:
      scores: ``[runs]`` or ``[runs, tasks]`` floats.
      statistic: ``"mean"`` or ``"iqm"`` (of all scores of a resample).
      confidence: the interval's coverage in (0, 1).
      reps: number of resamples (>= 100).
      seed: seed of the NumPy generator (the same scores and seed give the same interval).

    Returns:
      ``(low, high)`` floats; ``(x, x)`` for a single run.
    """
    x = _runs_by_tasks(scores)
    if statistic not in ("mean", "iqm"):
        raise ValueError(f"statistic={statistic!r} is invalid: allowed are 'mean', 'iqm'")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is invalid: allowed range is (0, 1)")
    if int(reps) < 100:
        raise ValueError(f"reps={reps!r} is invalid: allowed range is >= 100")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, runs, size=(int(reps), runs, tasks))          # within each task
    res = np.take_along_axis(x[None], idx, axis=1).reshape(int(reps), runs * tasks)
    agg = res.mean(axis=1) if statistic == "mean" else _iqm_rows(res)
    lo, hi = np.percentile(agg, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def probability_of_improvement(scores_x, scores_y) -> float:
    r""":math:`P(X > Y)`: the probability that a run of ``X`` scores above a run of ``Y`` on the
    same task, ties counting one half, averaged over tasks (rliable's
    ``probability_of_improvement``: the Mann-Whitney U statistic over :math:`n_x n_y`).

    .. math::
        P(X > Y) = \frac{1}{M} \sum_{m=1}^{M} \frac{1}{n_x n_y} \sum_{i, j}
        \Big( \mathbb 1[x_{im} > y_{jm}] + \tfrac12 \mathbb 1[x_{im} = y_{jm}] \Big)

    It compares runs, not their pairing: it says how often X beats Y, not by how much (pair it
    with the paired score difference).

    Args:
      scores_x, scores_y: ``[runs_x(, tasks)]`` and ``[runs_y(, tasks)]`` floats, the same
        number of tasks.
    """
    x, y = _runs_by_tasks(scores_x), _runs_by_tasks(scores_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} tasks, scores_y {y.shape[1]}")
    d = x[:, None, :] - y[None, :, :]                                   # [nx, ny, M]
    per_task = ((d > 0).sum(axis=(0, 1)) + 0.5 * (d == 0).sum(axis=(0, 1))) / (
        x.shape[0] * y.shape[0])
    return float(per_task.mean())


def robust_stats(values, seed: int = 0) -> dict:
    """The robust companions of :func:`mean_ci95` for one metric over seeds:
    ``{"iqm", "iqm_ci95": [low, high], "mean_boot_ci95": [low, high]}`` (stratified-bootstrap
    percentile intervals, :func:`bootstrap_ci`, ``seed`` fixed so that a summary repeats)."""
    x = np.asarray(values, np.float64).reshape(-1)
    return {"iqm": iqm(x), "iqm_ci95": list(bootstrap_ci(x, "iqm", seed=seed)),
            "mean_boot_ci95": list(bootstrap_ci(x, "mean", seed=seed))}


def paired_difference(a, b) -> dict:
    """Mean and 95% CI half-width over seeds of ``a - b`` (per-seed values ``[S]`` of two methods
    on the same test episodes, so the difference is paired), and whether the interval excludes
    0: ``{"mean", "ci95", "sign"}`` with ``sign`` +1 above, -1 below, 0 inconclusive (a NaN
    half-width, one seed, is inconclusive)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean, ci = mean_ci95(d)
    ci_ = ci if np.isfinite(ci) else np.inf
    sign = 1 if mean - ci_ > 0 else (-1 if mean + ci_ < 0 else 0)
    return {"mean": float(mean), "ci95": float(ci), "sign": sign}


def headroom_fraction(score, heuristic, oracle) -> dict:
    """Fraction of the oracle's headroom a method captures, paired per seed:

    .. math:: f_s = \\frac{x_s - h_s}{o_s - h_s}

    with ``x`` the method's, ``h`` the reference heuristic's and ``o`` the oracle's score on
    seed ``s`` (same test episodes, ``[S]`` each); ``{"mean", "ci95"}`` of ``f`` over seeds
    (Student-t). 0 is the heuristic, 1 the oracle.

    The fraction is defined only where the oracle is above the heuristic: if ``o_s <= h_s`` on
    any seed, mean and CI are ``None`` and ``"undefined_seeds"`` counts those seeds, instead of
    a ratio whose sign flips.
    """
    x, h, o = (np.asarray(v, np.float64) for v in (score, heuristic, oracle))
    bad = int(np.sum(~(o > h)))
    if bad:
        return {"mean": None, "ci95": None, "undefined_seeds": bad}
    mean, ci = mean_ci95((x - h) / (o - h))
    return {"mean": float(mean), "ci95": float(ci)}
