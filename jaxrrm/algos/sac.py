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

API (:mod:`jaxrrm.algos.online`: a single-seed pure learner, as :mod:`jaxrrm.algos.dqn`)::

    learner = make_learner(env_cfg, env_params, SACConfig())
    ts = learner.init(jax.random.key(0))                     # pure: jit / vmap it
    ts, metrics, transitions = learner.chunk(ts)             # pure: jit / vmap it; repeat
    pol = learner.policy(ts.params, greedy=True)             # a jaxrrm Policy
    trainer = make_train(env_cfg, env_params, SACConfig())   # the same, jitted (one seed)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .. import env as envlib
from ..config import EnvConfig, EnvParams, is_num, require
from ..networks import (ensemble_apply, ensemble_init, masked_argmax, masked_log_softmax,
                        random_valid_actions, sample_masked)
from . import losses, online, optim, vec_env
from . import replay as replay_lib
from .netconfig import BEHAVIOUR_NET, NetConfig
from .online import OnlineLearner, OnlineRunConfig, OnlineState, Trainer  # noqa: F401
from .replay import ReplayItem


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


#: The SAC training state: :class:`jaxrrm.algos.online.OnlineState` with ``params = {"actor",
#: "critic" (twin, stacked on axis 0), "critic_target", "log_alpha" [I]}`` and ``opt_state =
#: {"actor", "critic", "alpha"}``.
SACState = OnlineState


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


def make_learner(env_cfg: EnvConfig, env_params: EnvParams,
                 cfg: SACConfig = SACConfig()) -> OnlineLearner:
    """The single-seed pure discrete-SAC learner for one environment (:class:`OnlineLearner`).

    ``init(key)`` splits ``key`` into ``(k_actor, k_critic, k_env, k_run)``. Every step of
    ``chunk`` samples the actor (``k_act1``; ``k_act2``: the uniform actions while the replay is
    warming up). Chunk metrics (:func:`jaxrrm.algos.online.make_chunk`): ``critic_loss``,
    ``actor_loss``, ``alpha_loss``, ``q`` (mean Q of taken actions), ``target`` (mean TD target),
    ``entropy`` (mean policy entropy on the minibatch), the common ones, and ``alpha`` (mean over
    APs, at the end). ``losses``: ``critic_loss(critic_params, params, batch: ReplayItem) ->
    (loss, (aux, q_min))`` and ``actor_loss(actor_params, params, batch, q_min) -> (loss,
    entropy)``, the losses of one update (as :class:`jaxrrm.algos.cql.Learner`'s).
    """
    actor = cfg.actor_net.agent_net(env_cfg, out_scale=0.01)
    critic = cfg.critic_net.agent_net(env_cfg)
    num_aps = env_cfg.num_aps

    def opt(lr):
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr))

    tx_actor, tx_critic, tx_alpha = opt(cfg.actor_lr), opt(cfg.critic_lr), optax.adam(cfg.alpha_lr)

    def init(key) -> OnlineState:
        k_a, k_c, k_env, k_run = jax.random.split(key, 4)
        runner = vec_env.runner_init(k_env, cfg.num_envs, env_params, env_cfg)
        obs0 = online.first_obs(runner)
        a_params = actor.init(k_a, obs0.agents)
        c_params = ensemble_init(critic, k_c, obs0.agents, 2)
        log_alpha = jnp.full((num_aps,), math.log(cfg.init_alpha), jnp.float32)
        params = {"actor": a_params, "critic": c_params, "critic_target": c_params,
                  "log_alpha": log_alpha}
        opt_state = {"actor": tx_actor.init(a_params), "critic": tx_critic.init(c_params),
                     "alpha": tx_alpha.init(log_alpha)}
        return online.init_state(runner, params, opt_state, cfg.buffer_size, k_run, num_aps)

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
        batch = replay_lib.replay_sample(key, replay, cfg.batch_size)
        c_params, c_opt, c_loss, (aux, q_min), _ = optim.gradient_step(
            critic_loss, params["critic"], opt_state["critic"], tx_critic, params, batch)
        params = dict(params, critic=c_params)

        a_params, a_opt, a_loss, ent, _ = optim.gradient_step(
            actor_loss, params["actor"], opt_state["actor"], tx_actor, params, batch, q_min)

        t_args = (ent, batch.action_mask, cfg.target_entropy_frac)
        if cfg.autotune_alpha:
            log_alpha, al_opt, al_loss, _, _ = optim.gradient_step(
                losses.temperature_loss, params["log_alpha"], opt_state["alpha"], tx_alpha,
                *t_args, has_aux=False)
        else:
            al_opt, log_alpha = opt_state["alpha"], params["log_alpha"]
            al_loss = losses.temperature_loss(params["log_alpha"], *t_args)

        tgt = optim.polyak(params["critic_target"], c_params, cfg.tau)
        params = {"actor": a_params, "critic": c_params, "critic_target": tgt,
                  "log_alpha": log_alpha}
        opt_state = {"actor": a_opt, "critic": c_opt, "alpha": al_opt}
        m = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": al_loss,
             "entropy": jnp.mean(ent), **aux}
        return (params, opt_state, updates + 1), m

    def act(ts: OnlineState, warm, k_act, k_rand):
        obs = ts.runner.obs
        logits = actor.apply(ts.params["actor"], obs.agents)  # [E, I, A]
        sampled = sample_masked(k_act, logits, obs.action_mask)
        rnd = random_valid_actions(k_rand, obs.action_mask)
        return jnp.where(warm, rnd, sampled).astype(jnp.int32), {}

    chunk = online.make_chunk(
        cfg, env_cfg, env_params, act=act, update=update,
        loss_names=("critic_loss", "actor_loss", "alpha_loss", "entropy", "q", "target"),
        summary=lambda ts, out: {"alpha": jnp.mean(jnp.exp(ts.params["log_alpha"]))})

    def policy(params, greedy: bool = True):
        return make_policy(actor, env_cfg, params, greedy)

    return OnlineLearner(init=init, chunk=chunk, policy=policy,
                         nets={"actor": actor, "critic": critic}, config=cfg, env_cfg=env_cfg,
                         env_params=env_params,
                         losses={"critic_loss": critic_loss, "actor_loss": actor_loss})


def make_train(env_cfg: EnvConfig, env_params: EnvParams, cfg: SACConfig = SACConfig(),
               eval_episodes: int = 64) -> Trainer:
    """The jitted single-seed :class:`jaxrrm.algos.online.Trainer` of :func:`make_learner`
    (``evaluate`` on ``eval_episodes`` episodes per key)."""
    return online.make_trainer(make_learner(env_cfg, env_params, cfg), eval_episodes)
