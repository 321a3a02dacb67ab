"""What the online behaviour learners (:mod:`.dqn`, :mod:`.sac`) share: the learner protocol.

An online learner is a *single-seed pure learner*, in the style of PureJaxRL's
``make_train(config) -> train(key)``: :func:`~jaxrrm.algos.dqn.make_learner` /
:func:`~jaxrrm.algos.sac.make_learner` return an :class:`OnlineLearner` whose

* ``init(key) -> OnlineState`` resets ``E`` environments, initialises the networks and an empty
  replay buffer (pure; no jit inside);
* ``chunk(state) -> (state, metrics, transitions)`` runs ``steps_per_chunk`` vectorised
  environment steps, each followed by ``updates_per_step`` gradient updates, as one
  ``lax.scan`` (pure: the key lives in the state), and returns the chunk's learning-curve
  metrics ``{name: [] float32}`` and, step-major, every transition it generated
  (:class:`jaxrrm.data.Transitions` ``[steps_per_chunk * E]``, or ``None``);
* ``policy(params, greedy=True) -> jaxrrm Policy`` acts with its parameters;

so that seeds are ``jax.vmap`` ped outside (:mod:`jaxrrm.train_online`), as the offline learners'
``init`` / ``update`` / ``policy`` (:class:`jaxrrm.algos.cql.Learner`) are by :mod:`jaxrrm.train`.
:func:`make_chunk` builds the ``chunk`` of both learners from their action choice and update.

Shapes: ``E`` parallel environments, ``I`` APs, ``A`` actions per AP.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from ..config import EnvConfig, EnvParams, is_int, is_num, require
from ..evaluate import rollout_seeds
from . import replay as replay_lib
from . import vec_env
from .netconfig import ONLINE_SHARED, NetConfig

#: Chunk metrics that are NaN by design (``episode_return`` of a chunk in which no episode
#: ended); the non-finite guard checks every other one.
MAY_BE_NAN = frozenset({"episode_return"})


class OnlineRunConfig:
    """Mixin of the online learners' configs (:class:`~jaxrrm.algos.dqn.DQNConfig`,
    :class:`~jaxrrm.algos.sac.SACConfig`): validation of the fields they share, ``replace`` and
    ``transitions_per_chunk``. The dataclasses themselves declare the fields."""

    def _validate_run(self) -> None:
        """Check ``num_envs``, ``steps_per_chunk``, ``updates_per_step``, ``batch_size``,
        ``buffer_size`` (>= 1, buffer >= num_envs), ``learning_starts`` (>= 0), ``gamma`` in
        [0, 1), ``max_grad_norm`` and ``reward_scale`` (> 0), ``tau`` in (0, 1] and
        ``return_transitions`` (bool); ``ValueError`` naming the field."""
        for name in ("num_envs", "steps_per_chunk", "updates_per_step", "batch_size",
                     "buffer_size"):
            v = getattr(self, name)
            require(is_int(v) and v >= 1, name, "an integer >= 1", v)
        require(is_int(self.learning_starts) and self.learning_starts >= 0, "learning_starts",
                "an integer >= 0", self.learning_starts)
        require(self.buffer_size >= self.num_envs, "buffer_size",
                f"an integer >= num_envs ({self.num_envs})", self.buffer_size)
        require(is_num(self.gamma) and 0.0 <= self.gamma < 1.0, "gamma", "[0, 1)", self.gamma)
        for name in ("max_grad_norm", "reward_scale"):
            v = getattr(self, name)
            require(is_num(v) and v > 0, name, "> 0", v)
        require(is_num(self.tau) and 0.0 < self.tau <= 1.0, "tau", "(0, 1]", self.tau)
        require(isinstance(self.return_transitions, bool), "return_transitions",
                "True or False", self.return_transitions)

    def _resolve_nets(self, *names: str) -> None:
        """Check that the fields ``names`` are :class:`NetConfig` and fill in their
        ``shared=None`` with :data:`ONLINE_SHARED` (``ValueError`` naming the field)."""
        for name in names:
            net = getattr(self, name)
            require(isinstance(net, NetConfig), name, "a NetConfig", net)
            object.__setattr__(self, name, net.resolve(ONLINE_SHARED))

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)

    @property
    def transitions_per_chunk(self) -> int:
        """Joint transitions generated per ``chunk`` call, ``num_envs * steps_per_chunk``."""
        return self.num_envs * self.steps_per_chunk


@struct.dataclass
class OnlineState:
    """Everything that changes while an online learner trains (a pytree; lives on the device,
    and is what a checkpoint stores, replay buffer included).

    Attributes:
      params: the learner's parameters (DQN ``{"q", "q_target"}``; SAC ``{"actor", "critic",
        "critic_target", "log_alpha"}``).
      opt_state: the optax states of those parameters.
      replay: :class:`jaxrrm.algos.replay.Replay` of :class:`~jaxrrm.algos.replay.ReplayItem`.
      runner: :class:`jaxrrm.algos.vec_env.Runner`, the ``E`` parallel environments.
      key: typed PRNG key, split once per environment step.
      env_steps: ``[]`` int32, transitions collected so far.
      updates: ``[]`` int32, gradient updates so far.
    """

    params: Any
    opt_state: Any
    replay: Any
    runner: Any
    key: jax.Array
    env_steps: jax.Array
    updates: jax.Array


class OnlineLearner(NamedTuple):
    """What :func:`jaxrrm.algos.dqn.make_learner` / :func:`jaxrrm.algos.sac.make_learner` return
    (pure functions; closures over the static configurations; see the module docstring).

    Attributes:
      init: ``init(key) -> OnlineState``.
      chunk: ``chunk(state) -> (state, metrics {name: [] float32}, Transitions | None)``.
      policy: ``policy(params, greedy=True, ...) -> jaxrrm Policy`` (``params``: the state's
        ``params`` dict, seeds batched or not).
      nets: ``{name: flax module}`` (DQN ``{"q"}``; SAC ``{"actor", "critic"}``).
      config: the learner's configuration.  env_cfg, env_params: its environment.
      losses: ``{name: loss function}`` of one update (SAC: ``critic_loss``, ``actor_loss``), for
        tests and diagnostics.
    """

    init: Callable
    chunk: Callable
    policy: Callable
    nets: Dict[str, Any]
    config: Any
    env_cfg: EnvConfig
    env_params: EnvParams
    losses: Dict[str, Callable] = {}


def init_state(runner, params, opt_state, buffer_size: int, key, num_aps: int) -> OnlineState:
    """The :class:`OnlineState` of a fresh run: ``runner`` (reset), the initial ``params`` and
    ``opt_state``, an empty replay of ``buffer_size`` records shaped like the runner's first
    observation, the run key ``key``, zero counters."""
    example = replay_lib.ReplayItem.example(first_obs(runner), num_aps)
    return OnlineState(params=params, opt_state=opt_state,
                       replay=replay_lib.replay_init(example, buffer_size), runner=runner,
                       key=key, env_steps=jnp.zeros((), jnp.int32),
                       updates=jnp.zeros((), jnp.int32))


def first_obs(runner):
    """The first environment's observation (no leading ``E`` axis): the networks' example."""
    return jax.tree.map(lambda x: x[0], runner.obs)


def make_chunk(cfg, env_cfg: EnvConfig, env_params: EnvParams, *, act: Callable,
               update: Callable, loss_names: Sequence[str], summary: Callable) -> Callable:
    """The pure ``chunk(state) -> (state, metrics, transitions)`` of an online learner.

    Each of the ``cfg.steps_per_chunk`` scanned steps splits the state's key into
    ``(key, k_act1, k_act2, k_env, k_upd)``, chooses the actions (uniformly random valid ones
    while the replay holds fewer than ``cfg.learning_starts`` records: ``warm``), steps the
    ``E`` environments (:func:`jaxrrm.algos.vec_env.runner_step`), adds the transitions to the
    replay and, once it holds ``learning_starts``, runs ``cfg.updates_per_step`` updates (a
    ``lax.scan`` over ``split(k_upd, updates_per_step)``).

    Args:
      cfg: the learner's config (an :class:`OnlineRunConfig`).
      env_cfg, env_params: the environment.
      act: ``act(state, warm, k_act1, k_act2) -> (actions [E, I] int32, {name: []} extra
        per-step outputs)``.
      update: ``update((params, opt_state, updates), key, replay) -> ((params, opt_state,
        updates), {name: []} metrics)``, one gradient update.
      loss_names: the names of ``update``'s metrics (0 on steps without updates).
      summary: ``summary(state, out) -> {name: []}`` the learner's own chunk metrics from the
        final state and the per-step outputs ``out`` (``{name: [steps_per_chunk]}``).

    Chunk metrics: the means of ``loss_names`` over the steps with updates, ``reward`` (mean
    team reward per slot), ``episode_return`` (mean return of the episodes that ended in the
    chunk, NaN if none), ``episodes`` (how many ended), ``idle_frac`` (fraction of AP-slots
    silent), ``learning`` (fraction of steps with updates), ``env_steps`` and ``updates``
    (totals at the chunk's end), and ``summary``'s.
    """
    num_envs = cfg.num_envs
    idle = env_cfg.idle_action if env_cfg.allow_idle else -1

    def step(ts: OnlineState, _):
        key, k_a1, k_a2, k_env, k_upd = jax.random.split(ts.key, 5)
        warm = ts.replay.size < cfg.learning_starts
        actions, extra = act(ts, warm, k_a1, k_a2)
        runner, tr, ended_ret, done = vec_env.runner_step(k_env, ts.runner, actions, env_params,
                                                          env_cfg)
        replay = replay_lib.replay_add(ts.replay, replay_lib.ReplayItem.from_transitions(tr))
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
        ts = OnlineState(params=params, opt_state=opt_state, replay=replay, runner=runner,
                         key=key, env_steps=ts.env_steps + num_envs, updates=updates)
        out = dict(m, reward=jnp.mean(tr.reward), ended_return=jnp.sum(ended_ret),
                   episodes=jnp.sum(done).astype(jnp.float32), **extra,
                   idle_frac=jnp.mean((actions == idle).astype(jnp.float32)),
                   learning=learn.astype(jnp.float32))
        return ts, (out, tr if cfg.return_transitions else None)

    def chunk(ts: OnlineState):
        ts, (out, trs) = jax.lax.scan(step, ts, None, length=cfg.steps_per_chunk)
        learn = out["learning"]
        n_learn = jnp.maximum(jnp.sum(learn), 1.0)
        metrics = {k: jnp.sum(out[k] * learn) / n_learn for k in loss_names}
        n_ep = jnp.sum(out["episodes"])
        metrics.update(
            reward=jnp.mean(out["reward"]),
            episode_return=jnp.where(n_ep > 0, jnp.sum(out["ended_return"]) / n_ep, jnp.nan),
            episodes=n_ep, **summary(ts, out), idle_frac=jnp.mean(out["idle_frac"]),
            learning=jnp.mean(learn), env_steps=ts.env_steps, updates=ts.updates)
        trs = vec_env.flatten_time_env(trs) if cfg.return_transitions else None
        return ts, metrics, trs

    return chunk


class Trainer(NamedTuple):
    """The jitted single-seed view of an :class:`OnlineLearner` (what
    :func:`jaxrrm.algos.dqn.make_train` / :func:`jaxrrm.algos.sac.make_train` return), for
    stepping one run by hand; :mod:`jaxrrm.train_online` runs seeds, the guard and checkpoints.

    Attributes:
      init: ``jax.jit(learner.init)``: ``init(key) -> OnlineState``.
      train_chunk: ``jax.jit(learner.chunk)``: ``train_chunk(state) -> (state, metrics,
        transitions | None)``.
      policy: ``learner.policy``.
      evaluate: jitted ``evaluate(keys [S], params) -> (ue_rates [S, E, K] float32 Mbit/s, mean
        return [S] float32)`` of the greedy policy of one parameter set on ``S`` keys of
        ``E = eval_episodes`` episodes each (:func:`jaxrrm.evaluate.rollout_seeds`).
      learner: the :class:`OnlineLearner`.
      config, env_cfg, env_params: the configurations.
      eval_episodes: ``E`` of ``evaluate``.

    ``net`` (DQN), ``actor``, ``critic``, ``critic_loss``, ``actor_loss`` (SAC): the learner's
    networks and losses.
    """

    init: Callable
    train_chunk: Callable
    policy: Callable
    evaluate: Callable
    learner: OnlineLearner
    config: Any
    env_cfg: EnvConfig
    env_params: EnvParams
    eval_episodes: int = 64

    @property
    def net(self):
        return self.learner.nets.get("q")

    @property
    def actor(self):
        return self.learner.nets.get("actor")

    @property
    def critic(self):
        return self.learner.nets.get("critic")

    @property
    def critic_loss(self) -> Optional[Callable]:
        return self.learner.losses.get("critic_loss")

    @property
    def actor_loss(self) -> Optional[Callable]:
        return self.learner.losses.get("actor_loss")


def make_trainer(learner: OnlineLearner, eval_episodes: int = 64) -> Trainer:
    """The :class:`Trainer` of ``learner`` (its greedy policy evaluated on ``eval_episodes``
    episodes per key)."""
    def evaluate(keys, params):
        return rollout_seeds(keys, learner.policy(params, greedy=True), learner.env_params,
                             learner.env_cfg, eval_episodes)

    return Trainer(init=jax.jit(learner.init), train_chunk=jax.jit(learner.chunk),
                   policy=learner.policy, evaluate=evaluate, learner=learner,
                   config=learner.config, env_cfg=learner.env_cfg,
                   env_params=learner.env_params, eval_episodes=eval_episodes)
