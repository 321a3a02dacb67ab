"""The tiny offline-training set-up shared by tests/test_train.py, tests/test_checkpoint.py and
tests/test_faults_checkpoint.py: configurations, data and bitwise comparison helpers (the
``params`` / ``dataset`` fixtures of tests/conftest.py build on them); and the online tests'
(tests/test_fit.py, tests/test_train_online.py) poisoned environment."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrrm import EnvConfig, EnvParams, baselines, data, train
from jaxrrm.algos import cql
from jaxrrm.algos.netconfig import NetConfig

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
NET = NetConfig(hidden=(64, 64), shared=False)
LC = cql.CQLConfig(paradigm="ctde", critic_net=NET, actor_net=NET)


#: The checkpoint tests' trainer settings: 4 chunks of 10 updates, evaluated after chunks 2 and 4.
CKPT_TC = train.TrainConfig(num_updates=40, batch_size=32, chunk_size=10, num_seeds=2,
                            eval_every_chunks=2, eval_episodes=2)


def make_params():
    return EnvParams.create(CFG)


def make_dataset(params):
    """6000 transitions of full_reuse with epsilon 0.3 exploration (host NumPy)."""
    return data.collect_policy(jax.random.key(123), baselines.make("full_reuse", CFG), params,
                               CFG, 6000, epsilon=0.3)


def raw(x):
    """The bits of an array (a typed PRNG key's key data) as NumPy."""
    x = jnp.asarray(x)
    return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else x)


def assert_trees_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(raw(x), raw(y))


def kill_at(chunk):
    """A trainer callback that raises KeyboardInterrupt after chunk ``chunk`` (a simulated kill)."""
    def cb(c, _):
        if c == chunk:
            raise KeyboardInterrupt(f"simulated kill after chunk {c}")
    return cb


def poison_rewards_from(monkeypatch, slot):
    """Make the online learners' environments (:func:`jaxrrm.algos.vec_env.runner_step`, read
    when a chunk is traced) emit a NaN team reward from slot ``slot`` of every episode on."""
    from jaxrrm.algos import vec_env

    real_step = vec_env.runner_step

    def poisoned(key, runner, actions, params, cfg):
        new, tr, ended, done = real_step(key, runner, actions, params, cfg)
        return new, tr.replace(reward=jnp.where(runner.t >= slot, jnp.nan, tr.reward)), \
            ended, done

    monkeypatch.setattr(vec_env, "runner_step", poisoned)
