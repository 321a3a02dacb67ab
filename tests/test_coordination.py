"""A small learning run where coordination must win: two APs 20 m apart (40 m area), so close
that serving both at once drowns each other's UEs; one must fall silent in every slot.

The per-AP rule ``reward_greedy`` serves on both APs (score ~84 Mbit/s on these episodes); TDM,
which mutes by the clock, scores ~300; the exhaustive oracle ~320. Centralized BC on the
oracle's data, with the interference reports shared between the APs and executed *replicated*
(each AP runs the joint policy on the global state rebuilt from its own observation), must beat
``reward_greedy`` by far; plain CTDE-MARL-CQL (per-AP utilities summed), trained on the same data
with the same budget, does not get there.
"""

import jax
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, compare, evaluate, behaviour_data, train
from jaxrrm.algos import bc, cql
from jaxrrm.algos.netconfig import NetConfig

CFG = EnvConfig(num_aps=2, num_ues=6, num_candidates=2, horizon=20, obs_interference=True,
                obs_clock=True, obs_share="global")
PARAMS = EnvParams.create(CFG, area_side_m=40.0, min_distance_m=5.0)
NET = NetConfig(hidden=(32, 32), shared=False)
TC = train.TrainConfig(num_updates=600, batch_size=64, chunk_size=300, num_seeds=2,
                       eval_every_chunks=2, eval_episodes=4)


@pytest.mark.slow
def test_replicated_centralized_bc_mutes_where_reward_greedy_and_ctde_do_not():
    keys = evaluate.seed_keys(3, 2)
    score = {n: compare.evaluate_policy(baselines.make(n, CFG), keys, CFG, PARAMS, 16
                                        ).per_seed["score"]
             for n in ("reward_greedy", "tdm", "exhaustive")}
    assert np.all(score["tdm"] > 2.0 * score["reward_greedy"])  # the geometry needs muting
    expert = behaviour_data.build_dataset(behaviour_data.DatasetSpec(behaviour="exhaustive", size=3000,
                                                         seed=1), CFG, PARAMS)[0]
    learners = {
        "C-BC": bc.BCConfig(lr=1e-3, net=NET, paradigm="centralized", execution="replicated"),
        "CTDE": cql.CQLConfig(paradigm="ctde", critic_net=NET, actor_net=NET),
    }
    for name, lc in learners.items():
        score[name] = compare.train_and_evaluate(jax.random.key(4), expert, CFG, PARAMS, lc,
                                                 TC, keys, 16).per_seed["score"]
    msg = {k: np.round(v, 1).tolist() for k, v in score.items()}
    # the coordinated learner beats the per-AP rule on every seed, by far, and nears TDM
    assert np.all(score["C-BC"] > 2.0 * score["reward_greedy"]), msg
    assert np.all(score["C-BC"] > 0.9 * score["tdm"]), msg
    # plain CTDE on the same data and budget stays far below it
    assert np.all(score["CTDE"] < 0.8 * score["C-BC"]), msg
