"""The online host loop (jaxrrm.train_online.fit, the single-seed run of jaxrrm.loop.run_chunks):
its non-finite guard."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from _train_setup import poison_rewards_from

from jaxrrm import EnvConfig, EnvParams, loop, train, train_online
from jaxrrm.algos import dqn
from jaxrrm.algos.netconfig import NetConfig

TINY = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
NUM_ENVS, STEPS = 8, 10  # chunk 0: slots 0-9 of the first episodes, chunk 1: slots 10-19
CFG = dqn.DQNConfig(num_envs=NUM_ENVS, steps_per_chunk=STEPS, updates_per_step=1, batch_size=32,
                    buffer_size=1_000, learning_starts=2 * NUM_ENVS, lr=1e-3,
                    net=NetConfig(hidden=(16,)))


def test_fit_stops_on_a_nan_reward_and_keeps_the_last_good_state(monkeypatch):
    """A NaN team reward from slot 10 on (the second chunk) poisons the TD targets: fit raises
    train.NonFiniteLossError naming chunk 1 and the bad losses, with the state after chunk 0
    (bitwise that of a run of one chunk), before calling log / on_chunk for chunk 1."""
    poison_rewards_from(monkeypatch, STEPS)
    trainer = dqn.make_train(TINY, EnvParams.create(TINY), CFG, eval_episodes=1)
    logged, seen = [], []
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss in chunk 1, updates "
                       r"\d+\.\.\d+ \(the chunk's means\), seed 0: .*loss=nan") as info:
        train_online.fit(trainer, jax.random.key(0), 3, log=logged.append,
                   on_chunk=lambda c, ts, m, trs: seen.append(c))
    err = info.value
    assert isinstance(err, loop.NonFiniteLossError) and isinstance(err, FloatingPointError)
    assert err.chunk == 1 and err.seed == 0
    assert "loss" in err.losses and not np.isfinite(err.losses["loss"])
    assert "reward" in err.losses
    assert "episode_return" not in err.losses  # NaN by design (no episode ended): not a loss
    assert seen == [0] and len(logged) == 1 and len(err.history) == 1
    assert np.isnan(err.history[0]["episode_return"])   # chunk 0 passed the guard with it
    assert np.isfinite(err.history[0]["loss"]) and err.history[0]["learning"] > 0
    # err.state is the state after chunk 0, and err.update its update count (chunk 1's first)
    ts1, _, _ = trainer.train_chunk(trainer.init(jax.random.key(0)))
    assert err.update == int(ts1.updates) > 0
    assert f"after {err.update} updates" in str(err)
    for a, b in zip(jax.tree.leaves(err.state.params), jax.tree.leaves(ts1.params)):
        np.testing.assert_array_equal(a, b)


def test_offline_and_online_guards_share_the_error():
    assert train.NonFiniteLossError is loop.NonFiniteLossError
    assert train_online.NonFiniteLossError is loop.NonFiniteLossError
    err = loop.nonfinite_loss_error({"critic_loss": float("nan")}, chunk=3, update=31,
                                      where="update 31 (update 1 of the chunk)", seed=2, done=30,
                                      state="S", history=["h"])
    assert str(err) == ("non-finite loss in chunk 3, update 31 (update 1 of the chunk), seed 2: "
                        "critic_loss=nan; training stopped, the last good state (after 30 "
                        "updates) is kept in err.state")
    assert (err.chunk, err.update, err.seed, err.state, err.history) == (3, 31, 2, "S", ["h"])


def test_fit_twice_on_one_trainer_compiles_once():
    """Repeated fit calls on the same trainer reuse its compiled chunk: the learner's chunk is
    traced once (a trace-time counter), and the two runs of the same key agree bitwise."""
    from jaxrrm.algos import online

    base = dqn.make_train(TINY, EnvParams.create(TINY), CFG, eval_episodes=1)
    traces = []

    def chunk(ts):
        traces.append(1)
        return base.learner.chunk(ts)

    trainer = base._replace(learner=base.learner._replace(chunk=chunk))
    assert isinstance(trainer, online.Trainer)
    a, _ = train_online.fit(trainer, jax.random.key(3), 2)
    b, _ = train_online.fit(trainer, jax.random.key(3), 1)
    c, _ = train_online.fit(trainer, jax.random.key(3), 2)
    assert len(traces) == 1
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params)):
        np.testing.assert_array_equal(x, y)
