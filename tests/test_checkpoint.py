"""Tests of the orbax checkpoints (jaxrrm.checkpoint) and of resuming training (jaxrrm.train):
a killed-and-resumed run equals one that ran through (bitwise), resuming with another
configuration or dataset is refused, a TrainState (with typed PRNG keys) round-trips, an empty or
unfinished checkpoint directory has nothing to restore."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import data, train
from jaxrrm import checkpoint as ckpt

# The tiny set-up of tests/test_train.py (batch 32, chunk 10: shares its compiled chunk).
from _train_setup import CFG, CKPT_TC, LC, assert_trees_bitwise_equal, kill_at
TC = CKPT_TC


# ------------------------------------------------------------------------------------------------
# Kill -> resume
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("every,kill_chunk", [(1, 1), (2, 2)])
def test_killed_run_resumes_bitwise_equal(trainer, dataset, reference, tmp_path, every,
                                          kill_chunk):
    # every=1, kill after chunk index 1: resumes at 2 chunks. every=2, kill after chunk index 2
    # (its checkpoint was not due): resumes at 2 chunks and redoes chunk 2.
    d = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(jax.random.key(5), dataset, callback=kill_at(kill_chunk),
                      checkpoint_dir=d, checkpoint_every_chunks=every)
    assert ckpt.latest_step(d) == 2 * TC.chunk_size
    reports = []
    res = trainer.train(jax.random.key(5), dataset, callback=lambda c, m: reports.append(c),
                        checkpoint_dir=d, checkpoint_every_chunks=every)
    assert reports == [2, 3]  # only the remaining chunks ran
    assert_trees_bitwise_equal(res.state, reference.state)
    assert_trees_bitwise_equal(res.history, reference.history)
    assert_trees_bitwise_equal(res.final, reference.final)
    np.testing.assert_array_equal(np.asarray(res.state.learner.step), [40, 40])
    assert ckpt.latest_step(d) == 40

    # A finished run resumed again does nothing and returns the same result.
    again = trainer.train(jax.random.key(5), dataset, callback=lambda c, m: reports.append(c),
                          checkpoint_dir=d, checkpoint_every_chunks=every)
    assert reports == [2, 3]
    assert_trees_bitwise_equal(again.state, reference.state)
    assert_trees_bitwise_equal(again.history, reference.history)
    assert_trees_bitwise_equal(again.final, reference.final)


def test_keeps_most_recent_checkpoints(trainer, dataset, tmp_path):
    d = tmp_path / "ckpt"
    trainer.train(jax.random.key(5), dataset, checkpoint_dir=d, checkpoint_keep=2)
    assert ckpt.all_steps(d) == [30, 40]


# ------------------------------------------------------------------------------------------------
# Refusals
# ------------------------------------------------------------------------------------------------

def test_resume_with_other_learner_config_refused(params, dataset, killed_dir):
    other = train.make_train(CFG, params, LC.replace(cql_alpha=2.0), TC)
    with pytest.raises(ckpt.CheckpointError, match=r"learner_config\.cql_alpha") as info:
        other.train(jax.random.key(5), dataset, checkpoint_dir=killed_dir)
    assert "dataset_fingerprint" not in str(info.value)


def test_resume_with_other_train_config_or_key_refused(params, dataset, killed_dir):
    other = train.make_train(CFG, params, LC, TC.replace(num_updates=50))
    with pytest.raises(ckpt.CheckpointError, match=r"train_config\.num_updates"):
        other.train(jax.random.key(5), dataset, checkpoint_dir=killed_dir)
    with pytest.raises(ckpt.CheckpointError, match=r"train_key"):
        train.make_train(CFG, params, LC, TC).train(jax.random.key(6), dataset,
                                                    checkpoint_dir=killed_dir)


def test_resume_with_other_dataset_refused(trainer, dataset, killed_dir):
    reward = np.array(dataset.reward)
    reward[0] += 1.0
    other = dataset.replace(reward=reward)
    assert data.fingerprint(other, CFG) != data.fingerprint(dataset, CFG)
    with pytest.raises(ckpt.CheckpointError, match="dataset_fingerprint") as info:
        trainer.train(jax.random.key(5), other, checkpoint_dir=killed_dir)
    assert "learner_config" not in str(info.value)
    assert ckpt.latest_step(killed_dir) == 10  # nothing was written


def test_restore_refuses_other_state_structure(killed_dir, params):
    # e.g. another number of seeds: the stored leaves have other shapes
    tr1 = train.make_train(CFG, params, LC, TC.replace(num_seeds=1))
    like = tr1.init(jax.random.split(jax.random.key(0), 1))
    with pytest.raises(ckpt.CheckpointError, match="structure"):
        ckpt.restore(killed_dir, like)


# ------------------------------------------------------------------------------------------------
# Round trip, empty and unfinished directories
# ------------------------------------------------------------------------------------------------

def test_train_state_round_trip(trainer, dataset, tmp_path):
    state = trainer.init(jax.random.split(jax.random.key(9), 2))
    state, _ = trainer.run_chunk(state, data.to_device(dataset))
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    meta = ckpt.make_meta(CFG, LC, TC, data.fingerprint(dataset, CFG), note="x")
    ckpt.save(tmp_path, 10, state, meta)
    like = trainer.init(jax.random.split(jax.random.key(0), 2))
    restored, step, stored = ckpt.restore(tmp_path, like, meta)
    assert step == 10
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)
    assert_trees_bitwise_equal(restored, state)
    # the restored keys draw the same numbers
    np.testing.assert_array_equal(np.asarray(jax.random.uniform(restored.key[1], (3,))),
                                  np.asarray(jax.random.uniform(state.key[1], (3,))))
    assert stored["note"] == "x" and stored["schema_version"] == ckpt.SCHEMA_VERSION
    assert stored["learner_config"]["cql_alpha"] == LC.cql_alpha
    assert stored["env_config"]["num_aps"] == 2
    assert stored["learner_config"]["critic_net"]["hidden"] == [64, 64]  # tuples as lists
    with pytest.raises(ckpt.CheckpointError, match="already"):
        ckpt.save(tmp_path, 10, state, meta)


def test_empty_or_missing_directory(tmp_path):
    like = {"w": jnp.zeros(3)}
    assert ckpt.latest_step(tmp_path / "nope") is None
    assert ckpt.latest_step(tmp_path) is None
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.restore(tmp_path, like)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.restore(tmp_path / "nope", like)


def test_unfinished_checkpoint_ignored(tmp_path):
    ckpt.save(tmp_path, 1, {"w": jnp.arange(3.0)}, {"a": 1})
    # what an interrupted orbax write leaves behind: a temporary, never-finalized step directory
    tmp = tmp_path / "2.orbax-checkpoint-tmp-1234567890"
    os.makedirs(tmp / "state")
    assert ckpt.latest_step(tmp_path) == 1
    restored, step, meta = ckpt.restore(tmp_path, {"w": jnp.zeros(3)}, {"a": 1})
    assert step == 1 and meta["a"] == 1
    np.testing.assert_array_equal(np.asarray(restored["w"]), [0.0, 1.0, 2.0])
    with pytest.raises(ckpt.CheckpointError, match=r"\ba\b"):
        ckpt.restore(tmp_path, {"w": jnp.zeros(3)}, {"a": 2})


def test_nonfinite_loss_keeps_last_good_checkpoint(params, dataset, tmp_path):
    # The huge rewards of tests/test_train.py: a later chunk goes bad. With checkpoints rarely
    # due, the last good state is still checkpointed when training stops.
    reward = np.array(dataset.reward)
    reward[[11, 2222, 4444]] = 3e38  # finite float32; its squared TD error overflows
    bad = dataset.replace(reward=reward)
    tc = TC.replace(num_updates=400, eval_every_chunks=0)
    tr = train.make_train(CFG, params, LC, tc)
    with pytest.raises(train.NonFiniteLossError) as info:
        tr.train(jax.random.key(3), bad, checkpoint_dir=tmp_path, checkpoint_every_chunks=1000)
    err = info.value
    assert err.chunk >= 1
    assert ckpt.latest_step(tmp_path) == err.chunk * tc.chunk_size
    meta = ckpt.make_meta(CFG, LC, tc, data.fingerprint(bad, CFG))
    restored, step, _ = ckpt.restore(tmp_path, err.state, meta)
    assert_trees_bitwise_equal(restored, err.state)
