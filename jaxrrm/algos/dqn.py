"""Online multi-agent (independent) double DQN on the shared team reward: a behaviour learner.

Every AP is a learner on its own observation ``o_i`` with its own action ``a_i``; all of them
regress on the *team* reward (docs/design.md §4: independent learners, shared reward):

.. math::
   y_i = r + \\gamma (1 - d)\\, Q^-_i(o'_i, \\arg\\max_{a \\,\\mathrm{valid}} Q_i(o'_i, a)),\\qquad
   L = \\mathrm{Huber}(Q_i(o_i, a_i) - y_i)

(double DQN: online argmax, target evaluation), averaged over APs and the minibatch. ``d`` is the
true termination only: the game ends by time limit (``truncated``), which keeps bootstrapping from
the episode's own last observation (``info["final_obs"]``). The per-AP network is a
:class:`jaxrrm.networks.AgentNet`, shared across APs with a one-hot AP id by default
(``NetConfig(shared=False)`` gives separate parameters per AP). Masked actions get
:data:`jaxrrm.networks.MASK_VALUE` before every argmax, so they are never chosen, explored or
bootstrapped from.

Training runs ``num_envs`` episodes in parallel (``vmap`` of :func:`jaxrrm.env.step_auto_reset`),
``lax.scan`` over environment steps, with an on-device circular replay buffer; every vectorised
environment step is followed by ``updates_per_step`` gradient updates. One call of the
learner's ``chunk`` (pure; jitted, the whole chunk is one XLA program) runs ``steps_per_chunk``
such steps and returns the chunk's learning-curve metrics and, in time order, every transition
it generated
(:class:`jaxrrm.data.Transitions`, ``[steps_per_chunk * num_envs]`` step-major) for the dataset
code. Exploration is epsilon-greedy, epsilon decaying linearly per AP; before ``learning_starts``
transitions are in the buffer the actions are uniformly random over valid actions.

**Discount.** The reward is the PF-weighted rate of one 10 ms slot; the PF averages forget with
``beta = 0.05`` (a time constant of ~20 slots), so the effect of a scheduling decision on future
rewards (through the PF weights) fades within a few tens of slots, and interference couples the
APs only within the slot. ``gamma = 0.9`` (an effective horizon of ~10 slots) covers most of that
while keeping the TD targets short-sighted and well conditioned (Q ~ r / (1 - gamma) ~ 18). In
our runs on the default scenario (256 K transitions, 1024 held-out episodes) ``gamma`` = 0, 0.9
and 0.99 reached the same score within noise (~272 Mbit/s, like ``full_reuse``). Note that the
paper's PF return and the score disagree: bursty service inflates the weight ``1 / avg`` at the
moment of service, so TDM has the *largest* PF return of the baselines (~465 per episode vs ~347
for ``full_reuse``) and the lowest score; the learners end near ~350. The return is therefore a
poor proxy of a behaviour policy's quality; evaluate the score.

API (:mod:`jaxrrm.algos.online`: a single-seed pure learner; seeds, the non-finite guard and
checkpoints are :mod:`jaxrrm.train_online`'s)::

    learner = make_learner(env_cfg, env_params, DQNConfig())
    ts = learner.init(jax.random.key(0))                     # pure: jit / vmap it
    ts, metrics, transitions = learner.chunk(ts)             # pure: jit / vmap it; repeat
    pol = learner.policy(ts.params, greedy=True)             # a jaxrrm Policy
    trainer = make_train(env_cfg, env_params, DQNConfig())   # the same, jitted (one seed)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from .. import env as envlib
from ..config import EnvConfig, EnvParams, is_int, is_num, require
from ..networks import masked_argmax, random_valid_actions
from . import online, optim, vec_env
from . import replay as replay_lib
from .netconfig import BEHAVIOUR_NET, NetConfig
from .online import OnlineLearner, OnlineRunConfig, OnlineState, Trainer  # noqa: F401


@dataclasses.dataclass(frozen=True)
class DQNConfig(OnlineRunConfig):
    """Hyperparameters of independent double DQN (frozen, hashable; validated on construction).

    Attributes:
      num_envs: parallel episodes ``E``.
      steps_per_chunk: vectorised environment steps per ``chunk`` call (each gives ``E``
        transitions).
      updates_per_step: gradient updates after each vectorised environment step.
      batch_size: minibatch of joint transitions per update.
      buffer_size: replay capacity in joint transitions (>= ``num_envs``).
      learning_starts: transitions collected (uniformly random actions) before learning starts.
      gamma: discount in [0, 1) (see the module docstring).
      lr: Adam learning rate.
      max_grad_norm: global gradient-norm clip (> 0).
      tau: target Polyak rate in (0, 1]; 1 with ``target_period > 1`` gives periodic hard copies.
      target_period: updates between target updates (>= 1).
      eps_start, eps_end: epsilon-greedy exploration, linear from start to end ...
      eps_decay_steps: ... over this many transitions after ``learning_starts``.
      huber_delta: Huber loss threshold (> 0).
      double: double DQN target (online argmax, target value); False = max over the target.
      reward_scale: the team reward is multiplied by this in the TD target (> 0).
      net: the per-AP Q network (:class:`NetConfig`; ``shared=None`` resolves to a network
        shared across APs).
      return_transitions: ``chunk`` also returns the chunk's transitions (else None).
    """

    num_envs: int = 32
    steps_per_chunk: int = 200
    updates_per_step: int = 2
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    gamma: float = 0.9
    lr: float = 3e-4
    max_grad_norm: float = 10.0
    tau: float = 0.005
    target_period: int = 1
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 30_000
    huber_delta: float = 1.0
    double: bool = True
    reward_scale: float = 1.0
    net: NetConfig = BEHAVIOUR_NET
    return_transitions: bool = True

    def __post_init__(self):
        self._validate_run()
        for name in ("target_period", "eps_decay_steps"):
            v = getattr(self, name)
            require(is_int(v) and v >= 1, name, "an integer >= 1", v)
        require(is_num(self.lr) and self.lr > 0, "lr", "> 0", self.lr)
        for name in ("eps_start", "eps_end"):
            v = getattr(self, name)
            require(is_num(v) and 0.0 <= v <= 1.0, name, "[0, 1]", v)
        require(is_num(self.huber_delta) and self.huber_delta > 0, "huber_delta", "> 0",
                self.huber_delta)
        self._resolve_nets("net")
        require(isinstance(self.double, bool), "double", "True or False", self.double)


#: The DQN training state: :class:`jaxrrm.algos.online.OnlineState` with ``params = {"q": online
#: params, "q_target": target params}`` and ``opt_state`` the online Q network's optax state.
DQNState = OnlineState


@dataclasses.dataclass(frozen=True)
class QPolicy:
    """``apply_fn`` of a Q network's policy (hashable: one compilation per network and mode).

    ``QPolicy(net, greedy, epsilon)(q_params, key, obs, state, env_params) -> [I] int32``: the
    masked argmax of Q (``greedy``) or epsilon-greedy over the valid actions.
    """

    net: Any
    greedy: bool = True
    epsilon: float = 0.05

    def __call__(self, q_params, key, obs, state, env_params):
        a = masked_argmax(self.net.apply(q_params, obs.agents), obs.action_mask)
        if self.greedy:
            return a
        k1, k2 = jax.random.split(key)
        rnd = random_valid_actions(k1, obs.action_mask)
        return jnp.where(jax.random.uniform(k2, a.shape) < self.epsilon, rnd, a).astype(jnp.int32)


def make_policy(net, env_cfg: EnvConfig, params, greedy: bool = True,
                epsilon: Optional[float] = None):
    """A jaxrrm Policy ``(key, obs, state, env_params) -> [I] int32`` of the Q network.

    ``greedy``: masked argmax of Q. Otherwise epsilon-greedy with ``epsilon`` (default 0.05):
    each AP independently takes a uniformly random *valid* action with probability epsilon.
    ``params`` is the trainer's ``state.params`` dict (or the Q network's parameters alone).
    The policy is :func:`jaxrrm.env.policy_with_params` of a :class:`QPolicy`: a jitted rollout
    or evaluation compiles once for every parameter set.
    """
    q_params = params["q"] if isinstance(params, dict) and "q" in params else params
    eps = 0.05 if epsilon is None else float(epsilon)
    return envlib.policy_with_params(QPolicy(net, bool(greedy), eps), q_params)


def make_learner(env_cfg: EnvConfig, env_params: EnvParams,
                 cfg: DQNConfig = DQNConfig()) -> OnlineLearner:
    """The single-seed pure DQN learner for one environment (:class:`OnlineLearner`).

    ``init(key)`` splits ``key`` into ``(k_net, k_env, k_run)``: the Q network's initialisation,
    the reset of the ``E`` environments and the run key of the state. Every step of ``chunk``
    explores epsilon-greedily (``k_act1``: the random actions, ``k_act2``: the coin flips; epsilon
    1 while the replay is warming up). Chunk metrics (:func:`jaxrrm.algos.online.make_chunk`):
    ``loss``, ``q`` (mean Q of the taken actions), ``target`` (mean TD target), ``grad_norm``,
    the common ones, and ``epsilon`` (at the chunk's end).
    """
    net = cfg.net.agent_net(env_cfg)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    eps_fn = optim.linear_schedule(cfg.eps_start, cfg.eps_end, cfg.eps_decay_steps)

    def init(key) -> OnlineState:
        k_net, k_env, k_run = jax.random.split(key, 3)
        runner = vec_env.runner_init(k_env, cfg.num_envs, env_params, env_cfg)
        q_params = net.init(k_net, online.first_obs(runner).agents)
        return online.init_state(runner, {"q": q_params, "q_target": q_params},
                                 tx.init(q_params), cfg.buffer_size, k_run, env_cfg.num_aps)

    def loss_fn(q_params, target_params, batch):
        q = net.apply(q_params, batch.obs)  # [B, I, A]
        q_a = jnp.take_along_axis(q, batch.actions[..., None], axis=-1)[..., 0]  # [B, I]
        q_next_t = net.apply(target_params, batch.next_obs)
        if cfg.double:
            a_star = masked_argmax(net.apply(q_params, batch.next_obs), batch.next_action_mask)
        else:
            a_star = masked_argmax(q_next_t, batch.next_action_mask)
        v = jnp.take_along_axis(q_next_t, a_star[..., None], axis=-1)[..., 0]  # [B, I]
        not_done = 1.0 - batch.terminated.astype(jnp.float32)
        y = cfg.reward_scale * batch.reward[:, None] + cfg.gamma * not_done[:, None] * v
        y = jax.lax.stop_gradient(y)
        loss = jnp.mean(optax.huber_loss(q_a, y, delta=cfg.huber_delta))
        return loss, {"q": jnp.mean(q_a), "target": jnp.mean(y)}

    def update(carry, key, replay):
        params, opt_state, updates = carry
        batch = replay_lib.replay_sample(key, replay, cfg.batch_size)
        q_params, opt_state, loss, aux, grads = optim.gradient_step(
            loss_fn, params["q"], opt_state, tx, params["q_target"], batch)
        updates = updates + 1
        sync = (updates % cfg.target_period) == 0
        tgt = optim.polyak(params["q_target"], q_params, cfg.tau)
        tgt = jax.tree.map(lambda new, old: jnp.where(sync, new, old), tgt, params["q_target"])
        m = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return ({"q": q_params, "q_target": tgt}, opt_state, updates), m

    def act(ts: OnlineState, warm, k_rand, k_eps):
        obs = ts.runner.obs
        eps = jnp.where(warm, 1.0, eps_fn(jnp.maximum(ts.env_steps - cfg.learning_starts, 0)))
        q = net.apply(ts.params["q"], obs.agents)  # [E, I, A]
        greedy = masked_argmax(q, obs.action_mask)
        rnd = random_valid_actions(k_rand, obs.action_mask)
        explore = jax.random.uniform(k_eps, greedy.shape) < eps
        return jnp.where(explore, rnd, greedy).astype(jnp.int32), {"epsilon": eps}

    chunk = online.make_chunk(cfg, env_cfg, env_params, act=act, update=update,
                              loss_names=("loss", "grad_norm", "q", "target"),
                              summary=lambda ts, out: {"epsilon": out["epsilon"][-1]})

    def policy(params, greedy: bool = True, epsilon: Optional[float] = None):
        return make_policy(net, env_cfg, params, greedy, epsilon)

    return OnlineLearner(init=init, chunk=chunk, policy=policy, nets={"q": net}, config=cfg,
                         env_cfg=env_cfg, env_params=env_params)


def make_train(env_cfg: EnvConfig, env_params: EnvParams, cfg: DQNConfig = DQNConfig(),
               eval_episodes: int = 64) -> Trainer:
    """The jitted single-seed :class:`jaxrrm.algos.online.Trainer` of :func:`make_learner`
    (``evaluate`` on ``eval_episodes`` episodes per key)."""
    return online.make_trainer(make_learner(env_cfg, env_params, cfg), eval_episodes)
