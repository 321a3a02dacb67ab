"""Tests of jaxrrm.compare: learners trained and evaluated seed by seed on the test keys, the
paired summaries, and every method against the best heuristic."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, compare, data, evaluate, metrics, train

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=12)


@pytest.fixture(scope="module")
def params():
    return EnvParams.create(CFG)


def test_train_and_evaluate_pairs_seeds_with_test_keys(params, monkeypatch):
    from jaxrrm.algos import bc
    from jaxrrm.algos.netconfig import NetConfig

    dataset, _ = data.collect(0, "full_reuse", params, CFG, 400, 0.3)
    lc = bc.BCConfig(net=NetConfig(hidden=(16, 16), shared=False))
    tc = train.TrainConfig(num_updates=20, batch_size=16, chunk_size=10, num_seeds=2,
                           eval_every_chunks=1, eval_episodes=2)
    keys = evaluate.seed_keys(5, 2)
    res = compare.train_and_evaluate(jax.random.key(0), dataset, CFG, params, lc, tc, keys, 3)
    assert res.ue_rates.shape == (2, 3, CFG.num_ues)
    assert res.history["eval"]["score"].shape == (2, 2) and res.train_seconds > 0
    with pytest.raises(ValueError, match="test_keys"):
        compare.train_and_evaluate(jax.random.key(0), dataset, CFG, params, lc, tc,
                                   keys[:1], 3)
    fixed = {"tdm": compare.evaluate_policy(baselines.make("tdm", CFG), keys, CFG, params, 3),
             "bc": res}
    summary = compare.summarize(fixed, "tdm")
    np.testing.assert_allclose(fixed["bc"].per_seed["relative_score"],
                               res.per_seed["score"] / fixed["tdm"].per_seed["score"])
    assert summary["tdm"]["relative_score"]["mean"] == pytest.approx(1.0)
    assert set(summary["bc"]) == {"sum_rate", "p5_rate", "score", "relative_score", "return"}
    # the same training evaluated under several environments: the training one gives the same
    # result as train_and_evaluate, another one other episodes' rates
    mobile = dataclasses.replace(CFG, mobility=True)
    envs = compare.train_and_evaluate_envs(jax.random.key(0), dataset, CFG, params, lc, tc, keys,
                                           3, {"same": (CFG, params), "mobile": (mobile, params)})
    assert list(envs) == ["same", "mobile"]
    np.testing.assert_array_equal(envs["same"].ue_rates, res.ue_rates)
    assert envs["mobile"].ue_rates.shape == res.ue_rates.shape
    assert not np.array_equal(envs["mobile"].ue_rates, res.ue_rates)
    monkeypatch.setattr(compare.train, "make_train",
                        lambda *a, **k: pytest.fail("trained before the shapes were checked"))
    with pytest.raises(ValueError, match="num_aps"):   # refused before any training
        compare.train_and_evaluate_envs(
            jax.random.key(0), dataset, CFG, params, lc, tc, keys, 3,
            {"other": (dataclasses.replace(CFG, num_aps=3), params)})


def test_versus_best_heuristic_by_hand():
    """Seeds 0, 1: reward_greedy 8 / 10, full_reuse 7 / 11 (mean 9 = 9: ties go to the first of
    HEURISTICS, full_reuse), oracle 12 / 16, learner 10 / 12. Best heuristic full_reuse (first
    of the tie in HEURISTICS order); learner - full_reuse = 3 / 1 (mean 2); headroom
    (10 - 7) / (12 - 7) = 0.6 and (12 - 11) / (16 - 11) = 0.2, mean 0.4; CI = t(0.975, 1) *
    sd / sqrt(2) = 12.706 * 0.2828 / 1.414 = 2.541."""
    per_seed = {"reward_greedy": {"score": np.array([8.0, 10.0])},
                "full_reuse": {"score": np.array([7.0, 11.0])},
                "exhaustive": {"score": np.array([12.0, 16.0])},
                "learner": {"score": np.array([10.0, 12.0])}}
    assert compare.best_heuristic(per_seed) == "full_reuse"
    vs = compare.versus_best_heuristic(per_seed)
    assert vs["best_heuristic"] == "full_reuse" and vs["oracle"] == "exhaustive"
    e = vs["methods"]["learner"]
    assert e["minus"]["mean"] == pytest.approx(2.0)
    assert e["headroom"]["mean"] == pytest.approx(0.4)
    assert e["headroom"]["ci95"] == pytest.approx(12.706 * 0.28284 / 1.41421, rel=1e-3)
    # percent: 10/7 = +42.86%, 12/11 = +9.09%: mean 25.97
    assert e["percent"]["mean"] == pytest.approx((300 / 7 + 100 / 11) / 2, rel=1e-9)
    per_seed["reward_greedy"]["score"] = np.array([9.0, 10.0])
    assert compare.best_heuristic(per_seed) == "reward_greedy"
    assert compare.versus_best_heuristic({"learner": per_seed["learner"]}) is None
    # the oracle below the heuristic on one seed: the fraction is undefined, not a flipped ratio
    h = metrics.headroom_fraction(np.array([10.0, 12.0]), np.array([8.0, 13.0]),
                                  np.array([12.0, 12.5]))
    assert h == {"mean": None, "ci95": None, "undefined_seeds": 1}
