"""Tests of jaxrrm.behaviour_data: dataset specs and their cache, behaviour parameters kept beside the
data (the evaluation of methods is tests/test_compare.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, compare, data, evaluate, behaviour_data

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
        behaviour_data.DatasetSpec(**{field: value})


def test_cache_name_tracks_the_full_configuration(params):
    spec = behaviour_data.DatasetSpec("full_reuse", size=400)
    name = behaviour_data.cache_name(spec, CFG, params)
    assert name.startswith("full_reuse-400-")
    assert behaviour_data.cache_name(spec, CFG, EnvParams.create(CFG)) == name  # stable
    others = {behaviour_data.cache_name(spec.replace(seed=1), CFG, params),
              behaviour_data.cache_name(spec.replace(epsilon=0.1), CFG, params),
              behaviour_data.cache_name(spec, CFG, EnvParams.create(CFG, pf_lambda=0.6)),
              behaviour_data.cache_name(spec, dataclasses.replace(CFG, reward="log_utility"),
                                  params)}
    assert name not in others and len(others) == 4


def test_cache_entry_holding_another_dataset_refused(params, tmp_path):
    """A cache entry whose content is not what its name says (e.g. another dataset written
    into it) is refused, not silently reused under the wrong label."""
    spec = behaviour_data.DatasetSpec("tdm", size=50)
    first = behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    other, meta = data.collect(0, "exhaustive", params, CFG, 10)
    data.save(first.path, other, meta, overwrite=True)
    with pytest.raises(data.DatasetError, match="another dataset than its name says"):
        behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    again = behaviour_data.load_or_build(spec, CFG, params, tmp_path, rebuild=True)
    assert again.built and again.dataset.size == 50


def test_load_or_build_makes_once_then_reuses(params, tmp_path):
    spec = behaviour_data.DatasetSpec("full_reuse", size=400, epsilon=0.2)
    calls = []
    first = behaviour_data.load_or_build(spec, CFG, params, tmp_path,
                                   progress=lambda d, t, s: calls.append((d, t)))
    assert first.built and first.dataset.size == 400 and calls and calls[-1] == (400, 400)
    again = behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    assert not again.built and again.path == first.path
    assert data.fingerprint(again.meta) == data.fingerprint(first.meta)
    np.testing.assert_array_equal(np.asarray(again.dataset.actions),
                                  np.asarray(first.dataset.actions))
    assert again.meta["spec"] == dataclasses.asdict(spec)
    # the behaviour policy of a baseline dataset is the baseline itself
    keys = evaluate.seed_keys(0, 2)
    a = compare.evaluate_policy(again.policy, keys, CFG, params, 3)
    b = compare.evaluate_policy(baselines.make("full_reuse", CFG), keys, CFG, params, 3)
    np.testing.assert_array_equal(a.ue_rates, b.ue_rates)
    # random walk has no policy to evaluate
    rw = behaviour_data.load_or_build(behaviour_data.DatasetSpec("random_walk", size=200), CFG, params,
                                tmp_path)
    assert rw.policy is None and rw.built


@pytest.mark.slow
def test_online_behaviour_keeps_its_parameters(params, tmp_path):
    spec = behaviour_data.DatasetSpec("sac", size=3200, train_steps=6400)
    built = behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    assert built.built and built.dataset.size == 3200
    assert built.meta["behaviour_config"]["train_transitions"] == 6400
    reused = behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    assert not reused.built
    keys = evaluate.seed_keys(3, 2)
    a = compare.evaluate_policy(built.policy, keys, CFG, params, 2)
    b = compare.evaluate_policy(reused.policy, keys, CFG, params, 2)
    np.testing.assert_array_equal(a.ue_rates, b.ue_rates)  # the same trained policy
    # a corrupted parameter file is detected, not silently used
    entry = built.path.parent
    blob = bytearray((entry / "behaviour_params.msgpack").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (entry / "behaviour_params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(data.DatasetError, match="SHA-256"):
        behaviour_data.load_or_build(spec, CFG, params, tmp_path)
    # ... and a too-large slice of the training stream is refused
    with pytest.raises(ValueError, match="size"):
        behaviour_data.build_dataset(spec.replace(size=7000, train_steps=6400), CFG, params)
