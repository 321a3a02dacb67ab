"""Methods compared on the same test episodes: fixed policies and trained learners evaluated seed
by seed, their summaries over seeds, and every method against the best heuristic
(docs/design.md §3).

Evaluation protocol
-------------------
Every method is evaluated on the *test keys* of a run (:func:`jaxrrm.evaluate.seed_keys`): seed
``s`` of every method sees the same ``E`` episodes, so per-seed comparisons are paired and the
relative score (TDM = 1) is computed seed by seed. Learned policies are greedy. The learning
curves recorded during training use other, salted keys (:func:`jaxrrm.train.eval_keys_for`), and
nothing is selected on the test episodes: the reported learner is the one after the last update.

* :func:`evaluate_policy` (a fixed policy), :func:`train_and_evaluate` (train ``S`` seeds of a
  learner, evaluate seed ``s`` on ``test_keys[s]``) and :func:`train_and_evaluate_envs` (the
  same learners evaluated under several environments) return a :class:`MethodResult`;
* :func:`summarize` gives mean ± 95% CI (and rliable's robust statistics) of every method,
  with the paired relative score; :func:`paired` is the paired difference of two methods;
* :func:`best_heuristic` and :func:`versus_best_heuristic` compare every method with the
  non-oracle baseline of largest mean score (paired difference, probability of improvement,
  fraction of the oracle's headroom: :mod:`jaxrrm.metrics`).
"""

from __future__ import annotations

import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import numpy as np

from . import baselines, distributed, evaluate, metrics, train
from .config import EnvConfig, EnvParams


class MethodResult(NamedTuple):
    """One method's results on the test keys.

    Attributes:
      per_seed: ``{"sum_rate", "p5_rate", "score", "return"} -> [S]`` float64
        (:func:`jaxrrm.evaluate.seed_metrics`; ``relative_score`` added by :func:`summarize`).
      ue_rates: ``[S, E, K]`` float32, per-UE average rates [Mbit/s] of every test episode.
      history: the trainer's history (learning curves; :class:`jaxrrm.train.TrainResult`), or
        ``None`` for fixed policies.
      train_seconds: wall time of training (0 for fixed policies), compile time included.
      eval_seconds: wall time of the test evaluation.
    """

    per_seed: Dict[str, np.ndarray]
    ue_rates: np.ndarray
    history: Optional[Dict[str, Any]]
    train_seconds: float
    eval_seconds: float


def evaluate_policy(policy, test_keys, cfg: EnvConfig, params: EnvParams,
                    num_episodes: int, mesh=None) -> MethodResult:
    """A fixed policy (a baseline or the behaviour policy) on the test keys ``[S]``: seed ``s``
    runs ``num_episodes`` episodes from ``test_keys[s]``. With a ``mesh``
    (:func:`jaxrrm.distributed.make_mesh`) the seeds are split over its devices (padded when
    they do not divide) and gathered."""
    t0 = time.perf_counter()
    if mesh is None:
        rates, ret = evaluate.rollout_seeds(test_keys, policy, params, cfg, num_episodes)
    else:
        rates, ret = distributed.gather(distributed.rollout_seeds(
            test_keys, policy, params, cfg, num_episodes, mesh, pad=True))
    rates = np.asarray(jax.block_until_ready(rates))
    return MethodResult(evaluate.seed_metrics(rates, params.score_mu, ret), rates, None, 0.0,
                        time.perf_counter() - t0)


def check_same_shapes(cfg: EnvConfig, other: EnvConfig) -> None:
    """Raise ``ValueError`` unless a policy learned under ``cfg`` can act under ``other``: the
    same number of APs, candidates per AP and actions (observation, state and action shapes)."""
    for name in ("num_aps", "num_candidates", "allow_idle"):
        if getattr(cfg, name) != getattr(other, name):
            raise ValueError(f"test environment has {name}={getattr(other, name)!r}, the "
                             f"training environment {getattr(cfg, name)!r}: the learned "
                             "networks' shapes would not fit")


def train_and_evaluate_envs(train_key, dataset, cfg: EnvConfig, params: EnvParams, learner_cfg,
                            train_cfg: train.TrainConfig, test_keys, num_episodes: int,
                            test_envs: Dict[str, Tuple[EnvConfig, EnvParams]],
                            callback=None, progress: bool = False,
                            progress_desc: str = "training",
                            mesh=None) -> Dict[str, MethodResult]:
    """Train ``train_cfg.num_seeds`` seeds of ``learner_cfg`` on ``dataset`` once under ``(cfg,
    params)`` in one vmapped run (:func:`jaxrrm.train.train`, learning curves on salted keys),
    then evaluate seed ``s``'s greedy policy on ``test_keys[s]`` for ``num_episodes`` episodes
    under every test environment of ``test_envs`` (``{name: (cfg, params)}``, e.g. the training
    environment with UE mobility on, or with another reward to read the returns under it). With
    a ``mesh`` the seeds are split over its devices (:func:`jaxrrm.train.make_train`).

    Returns:
      ``{name: MethodResult}`` in the order of ``test_envs``; all share the training history
      and ``train_seconds``.

    Raises:
      ValueError: a test environment's shapes differ from ``cfg``'s (:func:`check_same_shapes`)
        or ``test_keys`` has not ``train_cfg.num_seeds`` keys.
      jaxrrm.train.NonFiniteLossError: a loss became non-finite (see :func:`jaxrrm.train.train`).
    """
    s = train_cfg.num_seeds
    if len(test_keys) != s:
        raise ValueError(f"test_keys has {len(test_keys)} keys; train_cfg.num_seeds is {s}")
    for tcfg, _ in test_envs.values():
        check_same_shapes(cfg, tcfg)
    trainer = train.make_train(cfg, params, learner_cfg, train_cfg, mesh=mesh)
    t0 = time.perf_counter()
    res = trainer.train(train_key, dataset, callback=callback, progress=progress,
                        progress_desc=progress_desc)
    jax.block_until_ready(res.state)
    train_seconds = time.perf_counter() - t0
    out = {}
    for name, (tcfg, tparams) in test_envs.items():
        t1 = time.perf_counter()
        tester = (trainer if tcfg is cfg and tparams is params else
                  train.make_train(tcfg, tparams, learner_cfg, train_cfg, mesh=mesh))
        rates, ret = tester.evaluate_rates(res.state.learner, test_keys, num_episodes)
        rates = np.asarray(jax.block_until_ready(rates))
        out[name] = MethodResult(evaluate.seed_metrics(rates, tparams.score_mu, ret), rates,
                                 res.history, train_seconds, time.perf_counter() - t1)
    return out


def train_and_evaluate(train_key, dataset, cfg: EnvConfig, params: EnvParams, learner_cfg,
                       train_cfg: train.TrainConfig, test_keys, num_episodes: int,
                       callback=None, progress: bool = False,
                       progress_desc: str = "training", mesh=None) -> MethodResult:
    """:func:`train_and_evaluate_envs` with the training environment as the one test
    environment: train ``train_cfg.num_seeds`` seeds of ``learner_cfg`` on ``dataset``, then
    evaluate seed ``s``'s greedy policy on ``test_keys[s]``.

    Raises:
      ValueError: ``test_keys`` has not ``train_cfg.num_seeds`` keys.
      jaxrrm.train.NonFiniteLossError: a loss became non-finite (see :func:`jaxrrm.train.train`).
    """
    return train_and_evaluate_envs(train_key, dataset, cfg, params, learner_cfg, train_cfg,
                                   test_keys, num_episodes, {"train": (cfg, params)},
                                   callback=callback, progress=progress,
                                   progress_desc=progress_desc, mesh=mesh)["train"]


def summarize(results: Dict[str, MethodResult], reference: str = "tdm") -> Dict[str, dict]:
    """``{method: {metric: {"mean", "ci95", ...}}}`` over seeds
    (:func:`jaxrrm.evaluate.summarize`) of ``sum_rate``, ``p5_rate``, ``score``, the paired
    ``relative_score`` (``reference`` = 1 seed by seed; skipped when ``reference`` is absent)
    and ``return``.

    Adds ``relative_score`` to each result's ``per_seed`` in place."""
    per_seed = {n: r.per_seed for n, r in results.items()}
    if reference in per_seed:
        evaluate.add_relative(per_seed, reference)
    return {name: evaluate.summarize(m, (*evaluate.METRIC_NAMES, "return"))
            for name, m in per_seed.items()}


def paired(results: Dict[str, MethodResult], a: str, b: str, metric: str = "score") -> dict:
    """Paired per-seed difference ``a - b`` of ``metric`` between two of ``results``
    (:func:`jaxrrm.metrics.paired_difference`)."""
    return metrics.paired_difference(results[a].per_seed[metric], results[b].per_seed[metric])


def best_heuristic(per_seed: Dict[str, Dict[str, np.ndarray]], metric: str = "score"):
    """The name of the non-oracle baseline (:data:`jaxrrm.baselines.HEURISTICS`) of largest mean
    ``metric`` among ``per_seed``'s methods (the first in ``HEURISTICS`` order on a tie), or
    None if there is none."""
    names = [n for n in baselines.HEURISTICS if n in per_seed]
    if not names:
        return None
    return max(names, key=lambda n: float(np.mean(per_seed[n][metric])))


def versus_best_heuristic(per_seed: Dict[str, Dict[str, np.ndarray]],
                          oracle: str = "exhaustive") -> Optional[dict]:
    """Every method against the best heuristic (:func:`best_heuristic`), paired per seed.

    Returns ``{"best_heuristic": name, "oracle": name or None, "methods": {method: {"minus":
    paired score difference in Mbit/s, "percent": the same relative to the heuristic's score in
    %, "probability_of_improvement": P(a seed of the method scores above a seed of the
    heuristic), :func:`jaxrrm.metrics.probability_of_improvement`, "headroom":
    :func:`jaxrrm.metrics.headroom_fraction` (only with the oracle)}}}``, or None without any
    heuristic.
    """
    best = best_heuristic(per_seed)
    if best is None:
        return None
    h = np.asarray(per_seed[best]["score"], np.float64)
    has_oracle = oracle in per_seed
    out = {}
    for name, m in per_seed.items():
        if name == best:
            continue
        x = np.asarray(m["score"], np.float64)
        entry = {"minus": metrics.paired_difference(x, h),
                 "percent": metrics.paired_difference(100.0 * x / h, np.full_like(h, 100.0)),
                 "probability_of_improvement": metrics.probability_of_improvement(x, h)}
        if has_oracle and name != oracle:
            entry["headroom"] = metrics.headroom_fraction(x, h, per_seed[oracle]["score"])
        out[name] = entry
    return {"best_heuristic": best, "oracle": oracle if has_oracle else None, "methods": out}
