"""Online training (jaxrrm.train_online): seeds vmapped over the single-seed pure learner, the
shared host loop's checkpoints (a killed-and-resumed run equals one that ran through, bitwise,
replay buffer included), the non-finite guard keeping the last good checkpoint, refused and
damaged checkpoints, and the resumed transition stream of behaviour_data.

Compilation dominates: one tiny DQN configuration, trainers built once per module."""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
import pytest

from _train_setup import assert_trees_bitwise_equal, kill_at, poison_rewards_from

from jaxrrm import EnvConfig, EnvParams, data, loop, behaviour_data, train, train_online
from jaxrrm import checkpoint as ckpt
from jaxrrm.algos import dqn, sac
from jaxrrm.algos.netconfig import NetConfig

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

TINY = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
NUM_ENVS, STEPS = 4, 10
CFG = dqn.DQNConfig(num_envs=NUM_ENVS, steps_per_chunk=STEPS, updates_per_step=1, batch_size=16,
                    buffer_size=200, learning_starts=2 * NUM_ENVS, lr=1e-3,
                    net=NetConfig(hidden=(16,)))
TC = train_online.OnlineTrainConfig(num_chunks=3, num_seeds=2, eval_every_chunks=2,
                                    eval_episodes=2)
PER_CHUNK = NUM_ENVS * STEPS


@pytest.fixture(scope="module")
def tiny_params():
    return EnvParams.create(TINY)


@pytest.fixture(scope="module")
def online_trainer(tiny_params):
    return train_online.make_train(TINY, tiny_params, CFG, TC)


@pytest.fixture(scope="module")
def streamed(online_trainer):
    """An uninterrupted run from key(5) and the transitions it streamed, by chunk."""
    trs = {}
    res = online_trainer.train(jax.random.key(5),
                               on_chunk=lambda c, st, m, t: trs.setdefault(c, jax.device_get(t)))
    return res, trs


def test_config_and_learner_type_checked(tiny_params):
    with pytest.raises(ValueError, match="num_chunks"):
        train_online.OnlineTrainConfig(num_chunks=0)
    with pytest.raises(TypeError, match="DQNConfig"):
        train_online.make_train(TINY, tiny_params, object(), TC)
    with pytest.raises(TypeError, match="OnlineTrainConfig"):
        train_online.make_train(TINY, tiny_params, CFG, train.TrainConfig())


def test_seeds_vmapped_match_single_seed_runs(online_trainer, streamed):
    """Seed s of the vmapped run is the single-seed pure learner run from fold_in(key, s): the
    same actions and transitions, the same parameters (to float rounding of batched products)."""
    res, trs = streamed
    single = dqn.make_train(TINY, online_trainer.env_params, CFG)  # jit(init), jit(chunk)
    for s in range(2):
        ts = single.init(jax.random.fold_in(jax.random.key(5), s))
        for c in range(TC.num_chunks):
            ts, _, tr = single.train_chunk(ts)
            np.testing.assert_array_equal(np.asarray(tr.actions), trs[c].actions[s])
            np.testing.assert_allclose(np.asarray(tr.reward), trs[c].reward[s], rtol=1e-6)
        for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(res.state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[s]), rtol=1e-5, atol=1e-6)
        assert int(ts.env_steps) == int(res.state.env_steps[s]) == TC.num_chunks * PER_CHUNK
    # the two seeds differ
    assert not np.array_equal(trs[0].actions[0], trs[0].actions[1])
    h = res.history
    np.testing.assert_array_equal(h["env_steps"], [PER_CHUNK * (c + 1) for c in range(3)])
    np.testing.assert_array_equal(h["eval_env_steps"], [2 * PER_CHUNK, 3 * PER_CHUNK])
    assert h["metrics"]["loss"].shape == (3, 2) and h["eval"]["score"].shape == (2, 2)
    assert res.final["score"].shape == (2,) and np.all(np.isfinite(res.final["score"]))


def test_sac_seeds_vmapped_match_single_seed_runs(tiny_params):
    """The same protocol for SAC: one chunk of two vmapped seeds against the single-seed
    learner."""
    net = NetConfig(hidden=(16,))
    cfg = sac.SACConfig(**{k: getattr(CFG, k) for k in ("num_envs", "steps_per_chunk",
                                                        "updates_per_step", "batch_size",
                                                        "buffer_size", "learning_starts")},
                        actor_net=net, critic_net=net)
    tr = train_online.make_train(TINY, tiny_params, cfg, TC.replace(num_chunks=2))
    keys = jax.random.split(jax.random.key(1), 2)
    state, m, trs = tr.run_chunk(tr.init(keys))
    state, m, trs = tr.run_chunk(state)
    assert m["critic_loss"].shape == (2, 1) and not bool(m["nonfinite"].any())
    single = sac.make_train(TINY, tiny_params, cfg)
    for s in range(2):
        ts, _, _ = single.train_chunk(single.init(keys[s]))
        ts, _, one = single.train_chunk(ts)
        np.testing.assert_array_equal(np.asarray(one.actions), np.asarray(trs.actions[s]))
        for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[s]), rtol=1e-5, atol=1e-6)


def test_killed_run_resumes_bitwise_equal(online_trainer, streamed, tmp_path):
    """Killed after chunk 0 (checkpoint of chunk 0 saved), resumed: the remaining chunks only,
    the same transitions, and a final state (replay buffer, environments, keys, optimizer
    states) and history bitwise those of the uninterrupted run."""
    ref, ref_trs = streamed
    d = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        online_trainer.train(jax.random.key(5), callback=kill_at(0), checkpoint_dir=d)
    assert ckpt.latest_step(d) == PER_CHUNK
    stored, _ = ckpt.restore_meta(d)
    assert stored["kind"] == "online" and "dataset_fingerprint" not in stored
    seen, trs = [], {}
    res = online_trainer.train(jax.random.key(5), callback=lambda c, m: seen.append(c),
                               checkpoint_dir=d,
                               on_chunk=lambda c, st, m, t: trs.setdefault(c, jax.device_get(t)))
    assert seen == [1, 2] and sorted(trs) == [1, 2]
    for c in (1, 2):
        assert_trees_bitwise_equal(trs[c], ref_trs[c])
    assert_trees_bitwise_equal(res.state, ref.state)
    assert_trees_bitwise_equal(res.history, ref.history)
    assert_trees_bitwise_equal(res.final, ref.final)
    assert ckpt.latest_step(d) == 3 * PER_CHUNK

    # refused: another learner configuration, another key, an offline trainer's resume
    other = train_online.make_train(TINY, online_trainer.env_params, CFG.replace(lr=2e-3), TC)
    with pytest.raises(ckpt.CheckpointError, match=r"learner_config\.lr"):
        other.train(jax.random.key(5), checkpoint_dir=d)
    with pytest.raises(ckpt.CheckpointError, match=r"train_key"):
        online_trainer.train(jax.random.key(6), checkpoint_dir=d)
    like = online_trainer.init(jax.random.split(jax.random.key(0), 2))
    offline_meta = ckpt.make_meta(TINY, CFG, TC, "f" * 16, env_params=online_trainer.env_params)
    with pytest.raises(ckpt.CheckpointError, match=r"dataset_fingerprint|kind"):
        ckpt.restore(d, like, offline_meta)

    # a damaged newest step: the resume falls back to the one before, and redoes the last chunk
    newest = os.path.join(d, str(3 * PER_CHUNK), "state")
    victims = [os.path.join(r, f) for r, _, fs in os.walk(newest) for f in fs
               if os.path.basename(r) == "d"]
    assert victims
    for victim in victims:  # every data file of the state item cut in half
        os.truncate(victim, os.path.getsize(victim) // 2)
    seen.clear()
    with pytest.warns(ckpt.CheckpointWarning) as record:
        again = online_trainer.train(jax.random.key(5), callback=lambda c, m: seen.append(c),
                                     checkpoint_dir=d)
    said = " ".join(str(w.message) for w in record)
    assert "skipped damaged" in said and "moved it aside" in said   # the redone step replaced
    assert seen == [2]
    assert_trees_bitwise_equal(again.state, ref.state)


def test_nonfinite_guard_keeps_last_good_checkpoint(tiny_params, tmp_path, monkeypatch):
    """A NaN team reward from slot 10 on (the second chunk): the run stops in chunk 1 with the
    state after chunk 0 of every seed, which is checkpointed although no checkpoint was due."""
    poison_rewards_from(monkeypatch, STEPS)
    tr = train_online.make_train(TINY, tiny_params, CFG, TC.replace(eval_every_chunks=0))
    seen = []
    with pytest.raises(loop.NonFiniteLossError, match=r"chunk 1, updates \d+\.\.\d+ \(the "
                       r"chunk's means\), seed 0: .*loss=nan") as info:
        tr.train(jax.random.key(0), callback=lambda c, m: seen.append(c), checkpoint_dir=tmp_path,
                 checkpoint_every_chunks=1000)
    err = info.value
    assert err.chunk == 1 and seen == [0] and "episode_return" not in err.losses
    np.testing.assert_array_equal(np.asarray(err.state.env_steps), [PER_CHUNK] * 2)
    assert err.history["metrics"]["loss"].shape == (1, 2)
    assert ckpt.latest_step(tmp_path) == PER_CHUNK
    restored, _, _ = ckpt.restore(tmp_path, err.state)
    assert_trees_bitwise_equal(restored, err.state)


def _tiny_dqn_behaviour(monkeypatch):
    """Make behaviour_data's "dqn" behaviour this file's tiny DQN (a few seconds a chunk)."""
    monkeypatch.setitem(behaviour_data.ONLINE_LEARNERS, "dqn",
                        (dqn, functools.partial(dqn.DQNConfig, **{
                            k: getattr(CFG, k) for k in ("num_envs", "steps_per_chunk",
                                                         "updates_per_step", "batch_size",
                                                         "buffer_size", "learning_starts",
                                                         "net")})))


def test_build_dataset_stream_resumes_at_the_saved_chunk(tiny_params, tmp_path, monkeypatch):
    """build_dataset with a checkpoint directory, killed while reporting chunk 2 (its stream
    chunk written, its checkpoint not): called again it resumes from chunk 2's start, and the
    dataset is bitwise that of an uninterrupted build."""
    _tiny_dqn_behaviour(monkeypatch)
    spec = behaviour_data.DatasetSpec("dqn", size=3 * PER_CHUNK, train_steps=4 * PER_CHUNK)
    ref, _, ref_params = behaviour_data.build_dataset(spec, TINY, tiny_params, eval_every=0,
                                                eval_episodes=1)

    def kill(done, total, post):
        if done == 3:
            raise KeyboardInterrupt("simulated kill while reporting chunk 2")

    d = tmp_path / "build"
    with pytest.raises(KeyboardInterrupt):
        behaviour_data.build_dataset(spec, TINY, tiny_params, kill, eval_every=0, eval_episodes=1,
                               checkpoint_dir=d)
    assert ckpt.latest_step(d / "state") == 2 * PER_CHUNK
    assert max(os.listdir(d / "stream")) == "000002.sha256"
    got, meta, params_ = behaviour_data.build_dataset(spec, TINY, tiny_params, eval_every=0,
                                                eval_episodes=1, checkpoint_dir=d)
    assert_trees_bitwise_equal(got, ref)
    assert_trees_bitwise_equal(params_, ref_params)
    assert len(meta["behaviour_config"]["learning_curve"]) == 4
    # a damaged stream chunk is detected
    (d / "stream" / "000001.npz").write_bytes(b"x")
    with pytest.raises(data.DatasetError, match="000001.*SHA-256"):
        behaviour_data.load_stream_chunk(d / "stream", 1)


def test_load_or_build_resumable_resumes_and_cleans_up(tiny_params, tmp_path, monkeypatch):
    """The cache's resumable build (what the experiment CLIs use): killed while reporting chunk
    2, it leaves <entry>.partial with the checkpoint and stream; called again it resumes, the
    entry's dataset is bitwise that of an uninterrupted, non-resumable build, and .partial is
    removed. A .partial holding a file the build did not write is left in place."""
    _tiny_dqn_behaviour(monkeypatch)
    spec = behaviour_data.DatasetSpec("dqn", size=3 * PER_CHUNK, train_steps=4 * PER_CHUNK)
    ref = behaviour_data.load_or_build(spec, TINY, tiny_params, tmp_path / "plain")
    assert not behaviour_data.partial_dir(spec, TINY, tiny_params, tmp_path / "plain").exists()

    def kill(done, total, post):
        if done == 3:
            raise KeyboardInterrupt("simulated kill while reporting chunk 2")

    cache = tmp_path / "cache"
    partial = behaviour_data.partial_dir(spec, TINY, tiny_params, cache)
    with pytest.raises(KeyboardInterrupt):
        behaviour_data.load_or_build(spec, TINY, tiny_params, cache, kill, resumable=True,
                               checkpoint_every_chunks=1)
    assert sorted(os.listdir(partial)) == ["state", "stream"]
    assert ckpt.latest_step(partial / "state") == 2 * PER_CHUNK
    got = behaviour_data.load_or_build(spec, TINY, tiny_params, cache, resumable=True,
                                 checkpoint_every_chunks=1)
    assert got.built and not partial.exists()
    assert_trees_bitwise_equal(got.dataset, ref.dataset)
    again = behaviour_data.load_or_build(spec, TINY, tiny_params, cache, resumable=True)
    assert not again.built
    assert_trees_bitwise_equal(again.dataset, ref.dataset)
    # a rebuild never resumes a killed build's parts: it trains from chunk 0
    with pytest.raises(KeyboardInterrupt):
        behaviour_data.load_or_build(spec, TINY, tiny_params, cache, kill, rebuild=True,
                                     resumable=True, checkpoint_every_chunks=1)
    assert ckpt.latest_step(partial / "state") == 2 * PER_CHUNK
    done = []
    rebuilt = behaviour_data.load_or_build(spec, TINY, tiny_params, cache,
                                           lambda d, t, p: done.append(d), rebuild=True,
                                           resumable=True)
    assert done[0] == 1 and not partial.exists()
    assert_trees_bitwise_equal(rebuilt.dataset, ref.dataset)
    # a foreign file in .partial stays; the build's own parts are removed
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    behaviour_data.load_or_build(spec, TINY, tiny_params, cache, rebuild=True, resumable=True)
    assert (partial / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(partial)) == ["notes.txt"]
