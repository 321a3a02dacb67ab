"""The tiny offline-training set-up shared by tests/test_train.py and tests/test_checkpoint.py."""

import jax

from jaxrrm import EnvConfig, EnvParams, baselines, data
from jaxrrm.algos import cql
from jaxrrm.algos.common import NetConfig

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20)
NET = NetConfig(hidden=(64, 64), shared=False)
LC = cql.CQLConfig(paradigm="ctde", critic_net=NET, actor_net=NET)


def make_params():
    return EnvParams.create(CFG)


def make_dataset(params):
    """6000 transitions of full_reuse with epsilon 0.3 exploration (host NumPy)."""
    return data.collect_policy(jax.random.key(123), baselines.make("full_reuse", CFG), params,
                               CFG, 6000, epsilon=0.3)
