"""Tests of jaxrrm.pipeline: dataset specs and their cache, behaviour parameters kept beside the
data, and the paired evaluation of methods."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, data, evaluate, pipeline, train

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=12)


@pytest.fixture(scope="module")
def params():
    return EnvParams.create(CFG)


@pytest.mark.parametrize("field,value", [
    ("behaviour", "oracle"), ("size", 0), ("size", 1.5), ("seed", -1), ("train_steps", -1),
    ("source", "replay"), ("stream_start", 1.0), ("stream_start", -0.1), ("epsilon", 1.5),
])
def test_dataset_spec_rejects_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        pipeline.DatasetSpec(**{field: value})


def test_cache_name_tracks_the_full_configuration(params):
    spec = pipeline.DatasetSpec("full_reuse", size=400)
    name = pipeline.cache_name(spec, CFG, params)
    assert name.startswith("full_reuse-400-")
    assert pipeline.cache_name(spec, CFG, EnvParams.create(CFG)) == name  # stable
    others = {pipeline.cache_name(spec.replace(seed=1), CFG, params),
              pipeline.cache_name(spec.replace(epsilon=0.1), CFG, params),
              pipeline.cache_name(spec, CFG, EnvParams.create(CFG, pf_lambda=0.6)),
              pipeline.cache_name(spec, dataclasses.replace(CFG, reward="log_utility"),
                                  params)}
    assert name not in others and len(others) == 4


def test_cache_entry_holding_another_dataset_refused(params, tmp_path):
    """A cache entry whose content is not what its name says (e.g. another dataset written
    into it) is refused, not silently reused under the wrong label."""
    spec = pipeline.DatasetSpec("tdm", size=50)
    first = pipeline.load_or_build(spec, CFG, params, tmp_path)
    other, meta = data.collect(0, "exhaustive", params, CFG, 10)
    data.save(first.path, other, meta, overwrite=True)
    with pytest.raises(data.DatasetError, match="another dataset than its name says"):
        pipeline.load_or_build(spec, CFG, params, tmp_path)
    again = pipeline.load_or_build(spec, CFG, params, tmp_path, rebuild=True)
    assert again.built and again.dataset.size == 50


def test_load_or_build_makes_once_then_reuses(params, tmp_path):
    spec = pipeline.DatasetSpec("full_reuse", size=400, epsilon=0.2)
    calls = []
    first = pipeline.load_or_build(spec, CFG, params, tmp_path,
                                   progress=lambda d, t, s: calls.append((d, t)))
    assert first.built and first.dataset.size == 400 and calls and calls[-1] == (400, 400)
    again = pipeline.load_or_build(spec, CFG, params, tmp_path)
    assert not again.built and again.path == first.path
    assert data.fingerprint(again.meta) == data.fingerprint(first.meta)
    np.testing.assert_array_equal(np.asarray(again.dataset.actions),
                                  np.asarray(first.dataset.actions))
    assert again.meta["spec"] == dataclasses.asdict(spec)
    # the behaviour policy of a baseline dataset is the baseline itself
    keys = evaluate.seed_keys(0, 2)
    a = pipeline.evaluate_policy(again.policy, keys, CFG, params, 3)
    b = pipeline.evaluate_policy(baselines.make("full_reuse", CFG), keys, CFG, params, 3)
    np.testing.assert_array_equal(a.ue_rates, b.ue_rates)
    # random walk has no policy to evaluate
    rw = pipeline.load_or_build(pipeline.DatasetSpec("random_walk", size=200), CFG, params,
                                tmp_path)
    assert rw.policy is None and rw.built


@pytest.mark.slow
def test_online_behaviour_keeps_its_parameters(params, tmp_path):
    spec = pipeline.DatasetSpec("sac", size=3200, train_steps=6400)
    built = pipeline.load_or_build(spec, CFG, params, tmp_path)
    assert built.built and built.dataset.size == 3200
    assert built.meta["behaviour_config"]["train_transitions"] == 6400
    reused = pipeline.load_or_build(spec, CFG, params, tmp_path)
    assert not reused.built
    keys = evaluate.seed_keys(3, 2)
    a = pipeline.evaluate_policy(built.policy, keys, CFG, params, 2)
    b = pipeline.evaluate_policy(reused.policy, keys, CFG, params, 2)
    np.testing.assert_array_equal(a.ue_rates, b.ue_rates)  # the same trained policy
    # a corrupted parameter file is detected, not silently used
    entry = built.path.parent
    blob = bytearray((entry / "behaviour_params.msgpack").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (entry / "behaviour_params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(data.DatasetError, match="SHA-256"):
        pipeline.load_or_build(spec, CFG, params, tmp_path)
    # ... and a too-large slice of the training stream is refused
    with pytest.raises(ValueError, match="size"):
        pipeline.build_dataset(spec.replace(size=7000, train_steps=6400), CFG, params)


def test_train_and_evaluate_pairs_seeds_with_test_keys(params, tmp_path):
    from jaxrrm.algos import bc
    from jaxrrm.algos.netconfig import NetConfig

    beh = pipeline.load_or_build(pipeline.DatasetSpec("full_reuse", size=400, epsilon=0.3), CFG,
                                 params, tmp_path)
    lc = bc.BCConfig(net=NetConfig(hidden=(16, 16), shared=False))
    tc = train.TrainConfig(num_updates=20, batch_size=16, chunk_size=10, num_seeds=2,
                           eval_every_chunks=1, eval_episodes=2)
    keys = evaluate.seed_keys(5, 2)
    res = pipeline.train_and_evaluate(jax.random.key(0), beh.dataset, CFG, params, lc, tc, keys,
                                      3)
    assert res.ue_rates.shape == (2, 3, CFG.num_ues)
    assert res.history["eval"]["score"].shape == (2, 2) and res.train_seconds > 0
    with pytest.raises(ValueError, match="test_keys"):
        pipeline.train_and_evaluate(jax.random.key(0), beh.dataset, CFG, params, lc, tc,
                                    keys[:1], 3)
    fixed = {"tdm": pipeline.evaluate_policy(baselines.make("tdm", CFG), keys, CFG, params, 3),
             "bc": res}
    summary = pipeline.summarize(fixed, "tdm")
    np.testing.assert_allclose(fixed["bc"].per_seed["relative_score"],
                               res.per_seed["score"] / fixed["tdm"].per_seed["score"])
    assert summary["tdm"]["relative_score"]["mean"] == pytest.approx(1.0)
    assert set(summary["bc"]) == {"sum_rate", "p5_rate", "score", "relative_score", "return"}


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
    assert pipeline.best_heuristic(per_seed) == "full_reuse"
    vs = pipeline.versus_best_heuristic(per_seed)
    assert vs["best_heuristic"] == "full_reuse" and vs["oracle"] == "exhaustive"
    e = vs["methods"]["learner"]
    assert e["minus"]["mean"] == pytest.approx(2.0)
    assert e["headroom"]["mean"] == pytest.approx(0.4)
    assert e["headroom"]["ci95"] == pytest.approx(12.706 * 0.28284 / 1.41421, rel=1e-3)
    # percent: 10/7 = +42.86%, 12/11 = +9.09%: mean 25.97
    assert e["percent"]["mean"] == pytest.approx((300 / 7 + 100 / 11) / 2, rel=1e-9)
    per_seed["reward_greedy"]["score"] = np.array([9.0, 10.0])
    assert pipeline.best_heuristic(per_seed) == "reward_greedy"
    assert pipeline.versus_best_heuristic({"learner": per_seed["learner"]}) is None
    # the oracle below the heuristic on one seed: the fraction is undefined, not a flipped ratio
    h = pipeline.headroom_fraction(np.array([10.0, 12.0]), np.array([8.0, 13.0]),
                                   np.array([12.0, 12.5]))
    assert h == {"mean": None, "ci95": None, "undefined_seeds": 1}
