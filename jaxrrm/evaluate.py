"""Evaluation of any policy over many episodes and seeds (docs/design.md §3).

A *seed* is one independent evaluation: its own set of ``E`` episodes (new UE drops, shadowing,
fading). Metrics are computed per seed and then summarized across seeds as mean and 95% CI.
Every seed of a method is rolled out in one compiled call (``vmap`` over seed keys of ``vmap``
over episodes of ``scan`` over slots).
"""

from __future__ import annotations

import functools
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import metrics
from .config import EnvConfig, EnvParams
from .env import Policy, as_pytree_policy, rollout

METRIC_NAMES = ("sum_rate", "p5_rate", "score", "relative_score")


def seed_keys(seed: int, num_seeds: int):
    """Evaluation keys ``[S]`` for seeds ``0..S-1`` of run seed ``seed`` (``fold_in`` of each)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(num_seeds))


@functools.partial(jax.jit, static_argnames=("cfg", "num_episodes", "layout"))
def _rollout_seeds(keys, policy: Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
                   layout: str):
    def one(key):
        res = rollout(key, policy, params, cfg, num_episodes, layout=layout)
        return res.ue_rates_mbps, jnp.mean(jnp.sum(res.rewards, axis=-1))

    return jax.vmap(one)(keys)


def rollout_seeds(keys, policy: Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
                  layout: str = "auto"):
    """Per-UE average rates of ``num_episodes`` episodes for each seed key: the one evaluation.

    Seed ``s`` runs :func:`jaxrrm.env.rollout` ``(keys[s], ...)``. Jitted with the policy as a
    pytree argument (:func:`jaxrrm.env.as_pytree_policy`): a policy of
    :func:`jaxrrm.env.policy_with_params` is compiled once per ``apply_fn`` and its parameters
    are traced (evaluate a learner at every budget with one compilation); a plain policy
    function once per function object. Works inside ``jit`` / ``vmap`` too (over ``params`` or
    the policy's parameters).

    Args:
      keys: ``[S]`` PRNG keys, one per seed.
      policy: a :data:`jaxrrm.env.Policy`.
      params, cfg: environment.
      num_episodes: ``E`` per seed.
      layout: :func:`jaxrrm.env.rollout`'s batch layout (``"auto"``: the faster one).

    Returns:
      ``ue_rates_mbps`` ``[S, E, K]`` float32 and mean episode return ``[S]`` float32.
    """
    return _rollout_seeds(keys, as_pytree_policy(policy), params, cfg, num_episodes, layout)


def rollout_per_seed(keys, policies: Policy, params: EnvParams, cfg: EnvConfig,
                     num_episodes: int, layout: str = "auto"):
    """Seed ``s`` runs its own policy on ``keys[s]``: the evaluation of ``S`` trained seeds.

    ``policies`` is one :func:`jaxrrm.env.policy_with_params` pytree whose parameter leaves
    carry a leading ``[S]`` axis (e.g. a learner's ``policy(state.params)`` of a vmapped train
    state); seed ``s`` is :func:`rollout_seeds` ``(keys[s:s+1], policies[s], ...)``.

    Returns:
      ``ue_rates_mbps`` ``[S, E, K]`` float32 and mean episode return ``[S]`` float32.
    """
    def one(policy, key):
        rates, ret = _rollout_seeds(key[None], policy, params, cfg, num_episodes, layout)
        return rates[0], ret[0]

    return jax.vmap(one)(as_pytree_policy(policies), keys)


def seed_metrics(ue_rates, mu, returns=None) -> Dict[str, np.ndarray]:
    """Sum rate, 5th-percentile rate and score of each seed (and its mean episode return).

    Args:
      ue_rates: ``[S, E, K]`` float, Mbit/s.
      mu: scalar float, the score's tail weight (``K`` in the experiments).
      returns: optional ``[S]`` mean episode returns (:func:`rollout_seeds`' second output).

    Returns:
      ``{"sum_rate", "p5_rate", "score"}`` (Mbit/s; and ``"return"`` when ``returns`` is
      given) -> ``[S]`` float64 NumPy arrays.
    """
    sr = jax.vmap(metrics.sum_rate)(ue_rates)
    p5 = jax.vmap(lambda r: metrics.percentile_rate(r, 5.0))(ue_rates)
    sr, p5 = np.asarray(sr, np.float64), np.asarray(p5, np.float64)
    out = {"sum_rate": sr, "p5_rate": p5, "score": sr + float(mu) * p5}
    if returns is not None:
        out["return"] = np.asarray(returns, np.float64)
    return out


def add_relative(per_seed: Dict[str, Dict[str, np.ndarray]], reference: str = "tdm"):
    """Add ``relative_score`` = score / reference's score, seed by seed (same episodes)."""
    ref = per_seed[reference]["score"]
    for m in per_seed.values():
        m["relative_score"] = m["score"] / ref
    return per_seed


def summarize(per_seed: Dict[str, np.ndarray], names: Sequence[str] = METRIC_NAMES) -> dict:
    """``{metric: {"mean": x, "ci95": half_width, "iqm", "iqm_ci95": [lo, hi],
    "mean_boot_ci95": [lo, hi]}}`` across seeds: the Student-t interval of the mean
    (:func:`jaxrrm.metrics.mean_ci95`) and rliable's robust companions, the interquartile mean
    with stratified-bootstrap percentile intervals (:func:`jaxrrm.metrics.robust_stats`)."""
    out = {}
    for name in names:
        if name in per_seed:
            mean, ci = metrics.mean_ci95(per_seed[name])
            out[name] = {"mean": mean, "ci95": ci, **metrics.robust_stats(per_seed[name])}
    return out
