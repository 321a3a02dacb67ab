"""Online multi-agent (independent) discrete soft actor-critic on the shared team reward.

Discrete SAC (Christodoulou, arXiv 1910.07207) per AP, every AP a learner on its own observation
``o_i`` and all of them on the *team* reward (docs/design.md §4). With the categorical actor
``pi_i(. | o_i)`` (masked softmax), twin critics ``Q^1_i, Q^2_i`` and their Polyak targets:

.. math::
   V_i(o') = \\sum_{a\\,\\mathrm{valid}} \\pi_i(a|o')
             [\\min_k Q^{k-}_i(o', a) - \\alpha_i \\log\\pi_i(a|o')]

   y_i = r + \\gamma (1 - d) V_i(o'),\\qquad
   L_Q = \\sum_k \\frac1B \\sum_b \\sum_i (Q^k_i(o_b, a_{b,i}) - y_{b,i})^2

   L_\\pi = \\sum_i \\frac1B \\sum_b \\sum_{a\\,\\mathrm{valid}} \\pi_i(a|o_b)
             [\\alpha_i \\log\\pi_i(a|o_b) - \\min_k Q^k_i(o_b, a)]

   L_\\alpha = \\log\\alpha_i \\cdot (\\mathcal H[\\pi_i(.|o)] - \\bar{\\mathcal H}(o))
   \\text{ (mean over the batch and the APs)}

(the expectations over actions are exact sums, the discrete-SAC trick). The losses are
:mod:`jaxrrm.algos.losses`', shared with offline CQL's SAC backbone (:mod:`jaxrrm.algos.cql`),
and follow its convention: squared TD error without 1/2, summed over critics and APs, averaged
over the minibatch (CQL needs that scale, it weighs the TD term against ``cql_alpha`` times its
penalty). Until this learner adopted it, its critic loss was ``sum_k mean_{b,i} 1/2 (Q - y)^2``
(``2 I`` times smaller) and its actor loss a mean over APs (``I`` times smaller). Adam makes the
update invariant to a constant loss scale (up to its ``eps``); the gradient-norm clip
``max_grad_norm`` is not, and now acts on the larger gradients. The temperature
``alpha_i`` (one per AP) is tuned towards the target entropy ``target_entropy_frac * log(number
of valid actions)``, per state. Masked actions get probability exactly 0 (finite
:data:`jaxrrm.networks.MASK_VALUE` logits, entropies summed over valid actions only), so they are
never sampled nor bootstrapped from. ``d`` is the true termination only (the game ends by time
limit, ``truncated``, and keeps bootstrapping from ``info["final_obs"]``).

Training is :mod:`jaxrrm.algos.dqn`'s: ``num_envs`` parallel episodes, ``lax.scan`` over
environment steps, on-device replay, ``updates_per_step`` updates per vectorised step, the whole
chunk one jitted program that returns the chunk's learning-curve metrics and its transitions in
time order. The behaviour is the stochastic actor (uniform random before ``learning_starts``);
the greedy policy is the actor's masked argmax.

**Discount**: see :mod:`jaxrrm.algos.dqn` (``gamma = 0.9`` by default: the PF averages forget in
~20 slots; the PF return is a poor proxy of the score, evaluate the score).

API::

    trainer = make_train(env_cfg, env_params, SACConfig())
    ts = trainer.init(jax.random.key(0))
    ts, metrics, transitions = trainer.train_chunk(ts)      # jitted; repeat
    pol = trainer.policy(ts.params, greedy=True)             # a jaxrrm Policy
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from .. import env as envlib
from ..config import EnvConfig, EnvParams
from ..evaluate import rollout_seeds
from ..networks import (ensemble_apply, ensemble_init, masked_argmax, masked_log_softmax,
                        sample_masked)
from . import common, losses
from .common import BEHAVIOUR_NET, NetConfig, OnlineRunConfig, ReplayItem, is_num, require


@dataclasses.dataclass(frozen=True)
class SACConfig(OnlineRunConfig):
    """Hyperparameters of independent discrete SAC (frozen, hashable; validated on construction).

    Attributes:
      num_envs, steps_per_chunk, updates_per_step, batch_size, buffer_size, learning_starts,
        gamma, max_grad_norm, reward_scale, return_transitions: as in
        :class:`jaxrrm.algos.dqn.DQNConfig`.
      actor_lr, critic_lr, alpha_lr: Adam learning rates.
      tau: Polyak rate of the target critics, (0, 1].
      init_alpha: initial temperature (> 0).
      target_entropy_frac: target entropy as a fraction of ``log(valid actions)``, in [0, 1).
      autotune_alpha: tune the temperature (else it stays at ``init_alpha``).
      actor_net, critic_net: :class:`NetConfig` of the categorical actor and of each critic
        (``shared=None`` resolves to a network shared across APs).
    """

    num_envs: int = 32
    steps_per_chunk: int = 200
    updates_per_step: int = 2
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    gamma: float = 0.9
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    max_grad_norm: float = 10.0
    tau: float = 0.005
    init_alpha: float = 0.1
    target_entropy_frac: float = 0.3
    autotune_alpha: bool = True
    reward_scale: float = 1.0
    actor_net: NetConfig = BEHAVIOUR_NET
    critic_net: NetConfig = BEHAVIOUR_NET
    return_transitions: bool = True

    def __post_init__(self):
        self._validate_run()
        for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha"):
            v = getattr(self, name)
            require(is_num(v) and v > 0, name, "> 0", v)
        require(is_num(self.target_entropy_frac) and 0.0 <= self.target_entropy_frac < 1.0,
                "target_entropy_frac", "[0, 1)", self.target_entropy_frac)
        self._resolve_nets("actor_net", "critic_net")
        require(isinstance(self.autotune_alpha, bool), "autotune_alpha", "True or False",
                self.autotune_alpha)


@struct.dataclass
class SACState:
    """Everything that changes during training (a pytree; lives on the device).

    Attributes:
      params: ``{"actor", "critic" (twin, stacked on axis 0), "critic_target", "log_alpha" [I]}``.
      opt_state: ``{"actor", "critic", "alpha"}`` optax states.
      replay, runner, key, env_steps, updates: as in :class:`jaxrrm.algos.dqn.DQNState`.
    """

    params: Any
    opt_state: Any
    replay: Any
    runner: Any
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array


class Trainer(NamedTuple):
    """What :func:`make_train` returns (see :class:`jaxrrm.algos.dqn.Trainer`).

    ``policy(params, greedy=True)``: masked argmax of the actor if greedy, else a sample.
    ``critic_loss(critic_params, params, batch: ReplayItem) -> (loss, (aux, q_min))`` and
    ``actor_loss(actor_params, params, batch, q_min) -> (loss, entropy)``: the losses of one
    update (pure; as :class:`jaxrrm.algos.cql.Learner`'s).
    """

    init: Callable
    train_chunk: Callable
    policy: Callable
    evaluate: Callable
    actor: Any
    critic: Any
    config: SACConfig
    env_cfg: EnvConfig
    env_params: EnvParams
    critic_loss: Optional[Callable] = None
    actor_loss: Optional[Callable] = None


@dataclasses.dataclass(frozen=True)
class ActorPolicy:
    """``apply_fn`` of a categorical actor's policy (hashable: one compilation per network and
    mode): ``ActorPolicy(actor, greedy)(actor_params, key, obs, state, env_params) -> [I] int32``,
    the masked argmax of the logits (``greedy``) or a sample of the masked categorical."""

    actor: Any
    greedy: bool = True

    def __call__(self, a_params, key, obs, state, env_params):
        logits = self.actor.apply(a_params, obs.agents)
        if self.greedy:
            return masked_argmax(logits, obs.action_mask)
        return sample_masked(key, logits, obs.action_mask)


def make_policy(actor, env_cfg: EnvConfig, params, greedy: bool = True):
    """A jaxrrm Policy ``(key, obs, state, env_params) -> [I] int32`` of the categorical actor:
    :func:`jaxrrm.env.policy_with_params` of an :class:`ActorPolicy` (one compilation for every
    parameter set). ``params`` is the trainer's ``state.params`` dict (or the actor's parameters
    alone).
    """
    a_params = params["actor"] if isinstance(params, dict) and "actor" in params else params
    return envlib.policy_with_params(ActorPolicy(actor, bool(greedy)), a_params)


#: Target entropy per row of a mask (:func:`jaxrrm.algos.losses.target_entropy`).
target_entropy = losses.target_entropy


def make_train(env_cfg: EnvConfig, env_params: EnvParams, cfg: SACConfig = SACConfig(),
               eval_episodes: int = 64) -> Trainer:
    """Build the discrete-SAC trainer for one environment configuration.

    Chunk metrics (means over the chunk): ``reward``, ``episode_return``, ``episodes``,
    ``idle_frac``, ``learning``, ``env_steps``, ``updates`` as in DQN, and ``critic_loss``,
    ``actor_loss``, ``alpha_loss``, ``q`` (mean Q of taken actions), ``target`` (mean TD target),
    ``entropy`` (mean policy entropy on the minibatch), ``alpha`` (mean over APs, at the end).
    """
    actor = cfg.actor_net.agent_net(env_cfg, out_scale=0.01)
    critic = cfg.critic_net.agent_net(env_cfg)
    num_aps = env_cfg.num_aps

    def opt(lr):
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr))

    tx_actor, tx_critic, tx_alpha = opt(cfg.actor_lr), opt(cfg.critic_lr), optax.adam(cfg.alpha_lr)
    num_envs = cfg.num_envs
    idle = env_cfg.idle_action if env_cfg.allow_idle else -1

    @jax.jit
    def init(key) -> SACState:
        k_a, k_c, k_env, k_run = jax.random.split(key, 4)
        runner = common.runner_init(k_env, num_envs, env_params, env_cfg)
        obs0 = jax.tree.map(lambda x: x[0], runner.obs)
        a_params = actor.init(k_a, obs0.agents)
        c_params = ensemble_init(critic, k_c, obs0.agents, 2)
        log_alpha = jnp.full((num_aps,), math.log(cfg.init_alpha), jnp.float32)
        params = {"actor": a_params, "critic": c_params, "critic_target": c_params,
                  "log_alpha": log_alpha}
        opt_state = {"actor": tx_actor.init(a_params), "critic": tx_critic.init(c_params),
                     "alpha": tx_alpha.init(log_alpha)}
        example = ReplayItem(obs=obs0.agents, action_mask=obs0.action_mask,
                             actions=jnp.zeros((num_aps,), jnp.int32),
                             reward=jnp.zeros((), jnp.float32), next_obs=obs0.agents,
                             next_action_mask=obs0.action_mask, terminated=jnp.zeros((), bool))
        return SACState(params=params, opt_state=opt_state,
                        replay=common.replay_init(example, cfg.buffer_size), runner=runner,
                        key=k_run, env_steps=jnp.zeros((), jnp.int32),
                        updates=jnp.zeros((), jnp.int32))

    def critic_loss(c_params, params, batch: ReplayItem):
        """Soft TD loss (:func:`jaxrrm.algos.losses.td_loss`) of the twin critics on ``batch``
        ``[B]``: ``(loss, (aux, q_min [B, I, A]))``."""
        alpha = jnp.exp(params["log_alpha"])  # [I]
        logp_next = masked_log_softmax(actor.apply(params["actor"], batch.next_obs),
                                       batch.next_action_mask)  # [B, I, A]
        q_next = jnp.min(ensemble_apply(critic, params["critic_target"], batch.next_obs), axis=0)
        v = losses.soft_value(q_next, logp_next, batch.next_action_mask, alpha)  # [B, I]
        disc = cfg.gamma * losses.not_done(batch.terminated)
        y = losses.td_target(cfg.reward_scale * batch.reward[:, None], v, disc[:, None])
        y = jax.lax.stop_gradient(y)
        q = ensemble_apply(critic, c_params, batch.obs)  # [2, B, I, A]
        q_a = losses.q_at(q, batch.actions[None])  # [2, B, I]
        loss, _, _ = losses.td_loss(q_a, y)
        q_min = jax.lax.stop_gradient(jnp.min(q, axis=0))  # [B, I, A], reused by the actor
        return loss, ({"q": jnp.mean(q_a), "target": jnp.mean(y)}, q_min)

    def actor_loss(a_params, params, batch: ReplayItem, q):
        """Actor loss (:func:`jaxrrm.algos.losses.actor_loss`): ``(loss, entropy [B, I])``.

        ``q [B, I, A]``: min of the twin critics on ``batch.obs`` (computed in the critic step,
        before its update: saves two critic passes per update; the one-step lag is
        immaterial)."""
        alpha = jnp.exp(params["log_alpha"])
        loss, _, ent = losses.actor_loss(actor.apply(a_params, batch.obs), q,
                                         batch.action_mask, alpha)
        return loss, ent

    def update(carry, key, replay):
        params, opt_state, updates = carry
        batch = common.replay_sample(key, replay, cfg.batch_size)
        c_params, c_opt, c_loss, (aux, q_min), _ = common.gradient_step(
            critic_loss, params["critic"], opt_state["critic"], tx_critic, params, batch)
        params = dict(params, critic=c_params)

        a_params, a_opt, a_loss, ent, _ = common.gradient_step(
            actor_loss, params["actor"], opt_state["actor"], tx_actor, params, batch, q_min)

        t_args = (ent, batch.action_mask, cfg.target_entropy_frac)
        if cfg.autotune_alpha:
            log_alpha, al_opt, al_loss, _, _ = common.gradient_step(
                losses.temperature_loss, params["log_alpha"], opt_state["alpha"], tx_alpha,
                *t_args, has_aux=False)
        else:
            al_opt, log_alpha = opt_state["alpha"], params["log_alpha"]
            al_loss = losses.temperature_loss(params["log_alpha"], *t_args)

        tgt = common.polyak(params["critic_target"], c_params, cfg.tau)
        params = {"actor": a_params, "critic": c_params, "critic_target": tgt,
                  "log_alpha": log_alpha}
        opt_state = {"actor": a_opt, "critic": c_opt, "alpha": al_opt}
        m = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": al_loss,
             "entropy": jnp.mean(ent), **aux}
        return (params, opt_state, updates + 1), m

    loss_names = ("critic_loss", "actor_loss", "alpha_loss", "entropy", "q", "target")

    def step(ts: SACState, _):
        key, k_act, k_rand, k_env, k_upd = jax.random.split(ts.key, 5)
        obs = ts.runner.obs
        warm = ts.replay.size < cfg.learning_starts
        logits = actor.apply(ts.params["actor"], obs.agents)  # [E, I, A]
        sampled = sample_masked(k_act, logits, obs.action_mask)
        rnd = common.random_valid_actions(k_rand, obs.action_mask)
        actions = jnp.where(warm, rnd, sampled).astype(jnp.int32)
        runner, tr, ended_ret, done = common.runner_step(k_env, ts.runner, actions, env_params,
                                                         env_cfg)
        replay = common.replay_add(ts.replay, ReplayItem.from_transitions(tr))
        learn = replay.size >= cfg.learning_starts

        def do(_):
            (params, opt_state, updates), m = jax.lax.scan(
                lambda c, k: update(c, k, replay), (ts.params, ts.opt_state, ts.updates),
                jax.random.split(k_upd, cfg.updates_per_step))
            return params, opt_state, updates, jax.tree.map(jnp.mean, m)

        def skip(_):
            zeros = {k: jnp.zeros((), jnp.float32) for k in loss_names}
            return ts.params, ts.opt_state, ts.updates, zeros

        params, opt_state, updates, m = jax.lax.cond(learn, do, skip, None)
        ts = SACState(params=params, opt_state=opt_state, replay=replay, runner=runner, key=key,
                      env_steps=ts.env_steps + num_envs, updates=updates)
        out = dict(m, reward=jnp.mean(tr.reward), ended_return=jnp.sum(ended_ret),
                   episodes=jnp.sum(done).astype(jnp.float32),
                   idle_frac=jnp.mean((actions == idle).astype(jnp.float32)),
                   learning=learn.astype(jnp.float32))
        return ts, (out, tr if cfg.return_transitions else None)

    @jax.jit
    def train_chunk(ts: SACState):
        ts, (out, trs) = jax.lax.scan(step, ts, None, length=cfg.steps_per_chunk)
        learn = out["learning"]
        n_learn = jnp.maximum(jnp.sum(learn), 1.0)
        metrics = {k: jnp.sum(out[k] * learn) / n_learn for k in loss_names}
        n_ep = jnp.sum(out["episodes"])
        metrics.update(
            reward=jnp.mean(out["reward"]),
            episode_return=jnp.where(n_ep > 0, jnp.sum(out["ended_return"]) / n_ep, jnp.nan),
            episodes=n_ep, alpha=jnp.mean(jnp.exp(ts.params["log_alpha"])),
            idle_frac=jnp.mean(out["idle_frac"]), learning=jnp.mean(learn),
            env_steps=ts.env_steps, updates=ts.updates)
        trs = common.flatten_time_env(trs) if cfg.return_transitions else None
        return ts, metrics, trs

    def policy(params, greedy: bool = True):
        return make_policy(actor, env_cfg, params, greedy)

    def evaluate(keys, params):
        return rollout_seeds(keys, make_policy(actor, env_cfg, params, True), env_params,
                             env_cfg, eval_episodes)
    return Trainer(init=init, train_chunk=train_chunk, policy=policy, evaluate=evaluate,
                   actor=actor, critic=critic, config=cfg, env_cfg=env_cfg, env_params=env_params,
                   critic_loss=critic_loss, actor_loss=actor_loss)
