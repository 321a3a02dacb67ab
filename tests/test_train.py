"""Tests of the offline training loop (jaxrrm.train): config validation, one trace per chunk,
seeds as vmap, the non-finite guard, and a small learning run (CTDE-CQL beats random)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import baselines, data, evaluate, train

from _train_setup import CFG, LC, NET, make_dataset, make_params  # noqa: F401
#: A finite float32 reward whose squared TD error overflows float32 (a non-finite loss from
#: data that pass :func:`jaxrrm.data.check_content`).
HUGE = 3e38

#: The fast tests' trainer settings (all share one compiled chunk: batch 32, chunk 10).
TC = train.TrainConfig(num_updates=30, batch_size=32, chunk_size=10, num_seeds=2,
                       eval_every_chunks=0, eval_episodes=2)


def _all_finite(tree):
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    assert leaves
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in leaves)


# ------------------------------------------------------------------------------------------------
# TrainConfig
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("num_updates", 0), ("num_updates", 1.5), ("batch_size", 0), ("batch_size", True),
    ("chunk_size", 0), ("num_seeds", 0), ("eval_every_chunks", -1), ("eval_episodes", 0),
])
def test_train_config_rejects_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        train.TrainConfig(**{field: value})


def test_train_config_num_updates_multiple_of_chunk():
    with pytest.raises(ValueError, match="num_updates"):
        train.TrainConfig(num_updates=1001, chunk_size=500)
    tc = train.TrainConfig(num_updates=1500, chunk_size=500)
    assert tc.num_chunks == 3
    assert hash(tc) == hash(train.TrainConfig(num_updates=1500, chunk_size=500))


def test_make_train_rejects_unknown_learner_config(params):
    with pytest.raises(TypeError):
        train.make_train(CFG, params, object(), TC)


# ------------------------------------------------------------------------------------------------
# Compilation, seeds
# ------------------------------------------------------------------------------------------------

def test_chunk_traced_once_and_train_loop(params, dataset, capsys):
    tr = train.make_train(CFG, params, LC, TC)
    ds = data.to_device(dataset)
    counted = jax.jit(chex.assert_max_traces(tr.chunk_fn, n=1))
    state = tr.init(jax.random.split(jax.random.key(0), 2))
    for _ in range(3):  # a retrace (e.g. a dtype/weak-type change of the state) would raise
        state, metrics = counted(state, ds)
    assert metrics["critic_loss"].shape == (2, TC.chunk_size)
    assert metrics["nonfinite"].dtype == jnp.bool_ and not bool(jnp.any(metrics["nonfinite"]))
    np.testing.assert_array_equal(np.asarray(state.learner.step), [30, 30])

    # The host loop: progress callback per chunk, evaluation at the end, history shapes.
    reports = []
    res = tr.train(jax.random.key(1), dataset, callback=lambda c, m: reports.append((c, m)),
                   progress=True, progress_desc="tiny-ctde")
    assert [c for c, _ in reports] == [0, 1, 2]
    assert reports[-1][1]["updates"] == 30 and "critic_loss" in reports[0][1]
    assert "eval_score" in reports[-1][1] and "eval_score" not in reports[0][1]
    # What the README's logging example relies on: plain floats, the documented keys.
    assert all(isinstance(v, (int, float)) for _, m in reports for v in m.values())
    assert {"updates", "critic_loss", "q", "eval_score", "eval_sum_rate", "eval_p5_rate",
            "eval_return"} <= set(reports[-1][1])
    h = res.history
    np.testing.assert_array_equal(h["updates"], [10, 20, 30])
    assert h["metrics"]["critic_loss"].shape == (3, 2)
    np.testing.assert_array_equal(h["eval_updates"], [30])
    assert h["eval"]["score"].shape == (1, 2)
    assert res.final["score"].shape == (2,) and np.all(np.isfinite(res.final["score"]))
    assert _all_finite(res.state)

    # The progress bar (stderr) shows the chunks, losses, Q and the evaluated score.
    err = capsys.readouterr().err
    assert "tiny-ctde" in err and "3/3" in err
    assert "critic=" in err and "Q=" in err and "score=" in err

    # Raw evaluation rates reproduce the per-seed metrics of the final evaluation.
    ek = train.eval_keys_for(jax.random.key(1), 2)
    rates, ret = tr.evaluate_rates(res.state.learner, ek, TC.eval_episodes)
    assert rates.shape == (2, TC.eval_episodes, CFG.num_ues) and ret.shape == (2,)
    again = evaluate.seed_metrics(rates, params.score_mu)
    np.testing.assert_allclose(again["score"], res.final["score"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret, np.float64), res.final["return"], rtol=1e-6)
    with pytest.raises(ValueError, match="num_episodes"):
        tr.evaluate_rates(res.state.learner, ek, 0)


def test_seeds_vmapped_match_single_seed_runs(params, dataset):
    tr = train.make_train(CFG, params, LC, TC)
    ds = data.to_device(dataset)
    keys = jax.random.split(jax.random.key(7), 2)
    both, _ = tr.run_chunk(tr.init(keys), ds)
    p0 = jax.tree.leaves(both.learner.params)
    # the two seeds learn different parameters
    assert any(not np.allclose(x[0], x[1]) for x in p0)
    for s in range(2):
        alone, _ = tr.run_chunk(tr.init(keys[s:s + 1]), ds)
        for a, b in zip(jax.tree.leaves(alone.learner), jax.tree.leaves(both.learner)):
            np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[s]), rtol=1e-5,
                                       atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Non-finite guard
# ------------------------------------------------------------------------------------------------

def test_nan_reward_stops_with_last_good_state(params, dataset):
    # A few huge rewards (finite float32, so the data pass the trainer's content check): the
    # first chunk(s) miss them (deterministic for this key), a later one samples one, the squared
    # TD error overflows float32, the critic loss is inf and training must stop there.
    reward = np.array(dataset.reward)
    reward[[11, 2222, 4444]] = HUGE
    bad = dataset.replace(reward=reward)
    tc = TC.replace(num_updates=400)  # same batch/chunk size: shares the compiled chunk
    tr = train.make_train(CFG, params, LC, tc)
    reports = []
    with pytest.raises(train.NonFiniteLossError, match="critic_loss") as info:
        tr.train(jax.random.key(3), bad, callback=lambda c, m: reports.append(c))
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert err.chunk >= 1, "precondition: the first chunk should be clean for this key"
    assert f"chunk {err.chunk}" in str(err) and f"update {err.update}" in str(err)
    assert err.chunk * tc.chunk_size <= err.update < (err.chunk + 1) * tc.chunk_size
    assert "critic_loss" in err.losses and not np.isfinite(err.losses["critic_loss"])
    assert reports == list(range(err.chunk))
    # The kept state is the one before the bad chunk: finite, and equal to rerunning the clean
    # chunks.
    assert _all_finite(err.state)
    np.testing.assert_array_equal(np.asarray(err.state.learner.step),
                                  [err.chunk * tc.chunk_size] * 2)
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(2))
    ref = tr.init(seed_keys)
    ds = data.to_device(bad)
    for _ in range(err.chunk):
        ref, _ = tr.run_chunk(ref, ds)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(err.state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert err.history["metrics"]["critic_loss"].shape == (err.chunk, 2)


def test_nan_data_refused_before_training(params, dataset):
    reward = np.array(dataset.reward)
    reward[2222] = np.nan
    tr = train.make_train(CFG, params, LC, TC)
    with pytest.raises(data.DatasetError, match=r"reward\[2222\].*not finite"):
        tr.train(jax.random.key(3), dataset.replace(reward=reward))


def test_all_huge_fails_in_first_update(params, dataset):
    bad = dataset.replace(reward=np.full_like(np.asarray(dataset.reward), HUGE))
    tr = train.make_train(CFG, params, LC, TC)
    with pytest.raises(train.NonFiniteLossError, match=r"chunk 0, update 0 ") as info:
        tr.train(jax.random.key(0), bad)
    assert _all_finite(info.value.state)
    np.testing.assert_array_equal(np.asarray(info.value.state.learner.step), [0, 0])


# ------------------------------------------------------------------------------------------------
# Learning
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctde_cql_beats_random(params, dataset):
    tc = train.TrainConfig(num_updates=1000, batch_size=128, chunk_size=500, num_seeds=2,
                           eval_every_chunks=1, eval_episodes=16)
    key = jax.random.key(0)
    res = train.train(key, dataset, CFG, params, LC, tc)
    assert res.history["eval"]["score"].shape == (2, 2)
    eval_keys = train.eval_keys_for(key, 2)  # held-out episodes, the same the trainer used
    rates, _ = evaluate.rollout_seeds(eval_keys, baselines.make("random", CFG), params, CFG,
                                      tc.eval_episodes)
    random_score = evaluate.seed_metrics(rates, params.score_mu)["score"]
    learned = res.final["score"]
    # seed by seed on the same held-out episodes: a clear margin (typically ~+40%)
    assert np.all(learned > 1.15 * random_score), (learned, random_score)


def test_on_state_gives_test_metrics_at_every_budget(params, dataset):
    # The one way to evaluate at intermediate budgets: on_state hands over the state after
    # every chunk; the test-episode evaluation compiles once for all budgets (the learner's
    # policy is a policy_with_params pytree) and the last budget's numbers are those of the
    # final state.
    from jaxrrm import evaluate

    tr = train.make_train(CFG, params, LC, TC)
    test_keys = evaluate.seed_keys(123, 2)
    scores, states = {}, {}

    def at(updates, state):
        rates, _ = tr.evaluate_rates(state.learner, test_keys, 3)
        scores[updates] = evaluate.seed_metrics(np.asarray(rates), params.score_mu)["score"]
        states[updates] = state

    res = tr.train(jax.random.key(1), dataset, on_state=at)
    assert sorted(scores) == [10, 20, 30]
    assert all(v.shape == (2,) and np.all(np.isfinite(v)) for v in scores.values())
    last_rates, _ = tr.evaluate_rates(res.state.learner, test_keys, 3)
    np.testing.assert_array_equal(
        evaluate.seed_metrics(np.asarray(last_rates), params.score_mu)["score"], scores[30])
    # the budgets differ: the parameters did change between them
    assert not np.array_equal(np.asarray(jax.tree.leaves(states[10].learner.params)[0]),
                              np.asarray(jax.tree.leaves(states[30].learner.params)[0]))
