"""The multi-AP scheduling game as a JaxMARL ``MultiAgentEnv``, and a short IPPO in JaxMARL's style.

:class:`RRMJaxMARLEnv` wraps the pure functions of :mod:`jaxrrm.env` (``reset``, ``step``,
``observe``) behind JaxMARL's interface (``jaxmarl.environments.multi_agent_env.MultiAgentEnv``,
JaxMARL 0.2): dictionaries keyed by agent name, auto-reset in the base class's ``step``, spaces
from ``jaxmarl.environments.spaces``. Nothing is re-implemented: the same key gives the same
observations, rewards and states as :func:`jaxrrm.env.reset` / :func:`jaxrrm.env.step` (bit for
bit against the pure functions jitted with the same parameters closed over; to float32 rounding
against them jitted with the parameters as traced arguments, which XLA folds differently).

What maps to what, with ``I = cfg.num_aps``, ``N = cfg.num_candidates``, ``A = cfg.num_actions``
(``N + 1`` with idle), ``D = cfg.obs_dim`` (``2N`` by default) and ``S = cfg.state_dim``
(``2 N I`` by default):

========================================  ====================================================
JaxMARL                                   jaxrrm
========================================  ====================================================
agent ``"ap_i"``, ``i = 0..I-1``          AP ``i`` (row ``i`` of every per-AP array)
``obs["ap_i"]``: ``[D]`` float32          ``Observation.agents[i]``: per candidate ``n`` the pair
                                          ``(SINR_dB / 10, log10 w)`` at ``2n, 2n+1`` (all-APs-
                                          active SINR estimate of this slot; PF weight ``w`` in
                                          1/(Mbit/s)), then the :class:`~jaxrrm.EnvConfig`
                                          observation options; zeros where masked
``obs["world_state"]``: ``[S]`` float32   ``Observation.global_state``: every AP's own features,
                                          AP 0 first, then the slot clock if ``obs_clock``
``actions["ap_i"]``: int in ``[0, A)``    component ``i`` of the ``[I]`` int32 action vector:
                                          ``n < N`` serves AP ``i``'s ``n``-th candidate (its
                                          associated UEs sorted by PF weight, largest first),
                                          ``N`` stays silent (with ``allow_idle``)
``rewards["ap_i"]``: ``[]`` float32       the team reward of the slot, the same for every AP
                                          (``pf``: ``(1/K) sum_j w_j^lambda C_j``, units
                                          (Mbit/s)^(1-lambda); ``log_utility``: nats)
``dones["ap_i"]``, ``dones["__all__"]``   ``terminated | truncated``: True after slot
                                          ``horizon - 1`` (the game has a time limit only)
``get_avail_actions(state)["ap_i"]``      ``Observation.action_mask[i]``: ``[A]`` bool, True for an
                                          existing candidate and for idle
state                                     :class:`jaxrrm.env.EnvState` (a pytree; ``time`` is the
                                          slot the next action is taken in)
========================================  ====================================================

Conventions of JaxMARL's baselines this follows (from the JaxMARL sources, v0.2.0 /
``FLAIROx/JaxMARL`` main):

* **Global state for centralized critics**: as SMAX (``jaxmarl/environments/smax/smax_env.py``),
  the environment puts the global state into the observation dict under ``"world_state"``, a flat
  ``[S]`` vector (not repeated per agent), and also offers ``get_world_state(state)`` and its
  length ``state_size``. MAPPO's ``SMAXWorldStateWrapper`` (``baselines/MAPPO/mappo_rnn_smax.py``)
  reads exactly ``obs["world_state"]`` and ``env.state_size`` and repeats it per agent; the
  Q-learning ``CTRolloutManager`` (``jaxmarl/wrappers/baselines.py``) uses ``obs["world_state"]``
  for SMAX only and otherwise concatenates the agents' observations (with the paper's local
  observation that concatenation *is* the global state). Give it SMAX's settings by hand:
  ``wrapped.global_state = lambda obs, state: obs["world_state"]`` and, since the reward is a
  team reward (its default sums the agents' rewards, ``I`` times the team reward),
  ``wrapped.global_reward = lambda r: r["ap_0"]``. Code that iterates ``env.agents``
  (``batchify`` of every baseline) never sees the extra key.
* **Available actions**: ``get_avail_actions(state) -> {agent: [A] bool}`` from the state alone
  (``state.candidates``), as SMAX; the IPPO/MAPPO scripts call
  ``jax.vmap(env.get_avail_actions)(env_state.env_state)`` under ``LogWrapper`` and mask logits
  with ``logits - (1 - avail) * 1e10`` (``1 - bool`` is int32 in JAX, so a bool mask works).
  ``CTRolloutManager`` ignores ``get_avail_actions`` except for SMAX (its default mask is all
  ones): set ``wrapped.get_valid_actions = lambda s: jax.vmap(env.get_avail_actions)(s)``. A
  masked action is not an error here: the AP stays silent and ``infos["masked"]`` flags it.
* **Infos**: every leaf is ``[I]`` (one value per agent), because the IPPO scripts reshape each
  info leaf to ``NUM_ENVS * num_agents``. Per-UE quantities (``[K]``: rates, SINRs) are therefore
  not in ``infos``; the rate each AP delivered is (``served_rate_mbps``, whose sum over APs is the
  slot's sum rate), and the PF averages are ``state.avg_rate_mbps``.
* **Auto-reset** is the base class's ``step``: it calls ``step_env`` with the first half of
  ``jax.random.split(key)`` and ``reset`` with the second and selects the reset where
  ``dones["__all__"]``; the finished episode's last observation is not kept (JaxMARL's
  convention; :func:`jaxrrm.env.step_auto_reset` keeps it for bootstrapped targets).

The adapter holds one :class:`~jaxrrm.EnvParams` (closed over: its values are constants of the
compiled code). To sweep physical parameters with ``vmap``, use the pure functions of
:mod:`jaxrrm.env`, or build one adapter per parameter set.

:func:`make_ippo_train` is independent PPO with parameters shared across the APs (no agent id),
written in the idiom of JaxMARL's ``baselines/IPPO/ippo_ff_mpe.py`` (one jittable
``train(key)``, ``lax.scan`` over updates, ``vmap`` over environments, through ``LogWrapper``),
plus the action masking of its SMAX scripts. :func:`ippo_policy` turns its result into a
:data:`jaxrrm.env.Policy` for :mod:`jaxrrm.evaluate`.

JaxMARL is an optional dependency: ``pip install 'jaxrrm[jaxmarl]'``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

try:
    from jaxmarl.environments import spaces as _spaces
    from jaxmarl.environments.multi_agent_env import MultiAgentEnv
except ImportError as _err:  # pragma: no cover - exercised by a test that hides jaxmarl
    raise ImportError(
        "jaxrrm.integrations.jaxmarl needs JaxMARL, which is not installed: "
        "pip install 'jaxrrm[jaxmarl]'") from _err

import jax
import jax.numpy as jnp
import numpy as np

from .. import env as env_lib
from ..config import EnvConfig, EnvParams, check_feasible
from ..networks import MASK_VALUE

__all__ = ["RRMJaxMARLEnv", "FEATURE_BOUND", "IPPO_DEFAULTS", "ActorCritic", "make_ippo_train",
           "ippo_policy"]

#: Bound of every observation feature: each is ``log10`` of a positive float32 clamped at
#: ``1e-30`` (SINR estimate, PF weight, interference-to-noise ratio), 0 where masked, or a bit of
#: the slot clock, so a finite feature lies in ``[-FEATURE_BOUND, FEATURE_BOUND]``
#: (``log10`` of the largest float32, about 38.5).
FEATURE_BOUND = float(np.log10(np.finfo(np.float32).max))


class RRMJaxMARLEnv(MultiAgentEnv):
    """The multi-AP scheduling Markov game behind JaxMARL's ``MultiAgentEnv`` interface.

    Args:
      cfg: the static :class:`~jaxrrm.EnvConfig` (frozen, hashable; default: docs/design.md §1's
        scenario, 4 APs, 24 UEs, N = 3, T = 200).
      params: one :class:`~jaxrrm.EnvParams` set (scalars, or ``[I]`` for per-AP fields);
        ``None``: ``EnvParams.create(cfg)``. Checked (ranges, shapes, feasibility) here.

    Attributes:
      cfg, params: as given.
      agents: ``["ap_0", ..., "ap_{I-1}"]``; ``num_agents = I``.
      obs_dim: ``D``, the length of one agent's observation.
      num_actions: ``A``.
      state_size: ``S``, the length of ``obs["world_state"]`` (SMAX's attribute name).
      observation_spaces, action_spaces: per agent, ``Box(-FEATURE_BOUND, FEATURE_BOUND, (D,))``
        float32 and ``Discrete(A)`` int32.

    The instance is a static argument of the jitted methods (JaxMARL's convention), hashed by
    identity: reuse one adapter to avoid recompiling.
    """

    def __init__(self, cfg: EnvConfig = EnvConfig(), params: Optional[EnvParams] = None):
        if not isinstance(cfg, EnvConfig):
            raise TypeError(f"cfg must be a jaxrrm.EnvConfig, got {type(cfg).__name__}")
        if params is None:
            params = EnvParams.create(cfg)
        elif not isinstance(params, EnvParams):
            raise TypeError(f"params must be a jaxrrm.EnvParams or None, got "
                            f"{type(params).__name__}")
        else:
            params.validate().check_shapes(cfg)
            check_feasible(params, cfg)
        super().__init__(num_agents=cfg.num_aps)
        self.cfg = cfg
        self.params = params
        self.agents = [f"ap_{i}" for i in range(cfg.num_aps)]
        self.agent_index = {a: i for i, a in enumerate(self.agents)}
        self.obs_dim = cfg.obs_dim
        self.num_actions = cfg.num_actions
        self.state_size = cfg.state_dim
        self.observation_spaces = {
            a: _spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (cfg.obs_dim,), jnp.float32)
            for a in self.agents}
        self.action_spaces = {a: _spaces.Discrete(cfg.num_actions) for a in self.agents}

    # ---------------------------------------------------------------------------------------
    # Conversions between jaxrrm's arrays and JaxMARL's dictionaries
    # ---------------------------------------------------------------------------------------

    def obs_to_dict(self, obs: env_lib.Observation) -> Dict[str, jax.Array]:
        """``{"ap_i": obs.agents[i] [D], "world_state": obs.global_state [S]}`` (float32)."""
        out = {a: obs.agents[i] for i, a in enumerate(self.agents)}
        out["world_state"] = obs.global_state
        return out

    def actions_to_array(self, actions: Dict[str, jax.Array]) -> jax.Array:
        """The ``[I]`` int32 action vector of :func:`jaxrrm.env.step` from ``{"ap_i": a_i}``
        (each ``a_i`` a scalar or a one-element array, as the baselines' ``unbatchify`` gives)."""
        return jnp.stack([jnp.reshape(jnp.asarray(actions[a]), ()).astype(jnp.int32)
                          for a in self.agents])

    def per_agent(self, x) -> Dict[str, jax.Array]:
        """``{"ap_i": x}`` for every agent (the team quantity ``x`` given to each AP)."""
        return {a: x for a in self.agents}

    # ---------------------------------------------------------------------------------------
    # MultiAgentEnv interface
    # ---------------------------------------------------------------------------------------

    @partial(jax.jit, static_argnums=(0,))
    def reset(self, key) -> Tuple[Dict[str, jax.Array], env_lib.EnvState]:
        """A new episode: ``jaxrrm.env.reset(key, self.params, self.cfg)`` as
        ``(obs_dict, state)``."""
        obs, state = env_lib.reset(key, self.params, self.cfg)
        return self.obs_to_dict(obs), state

    def step_env(self, key, state: env_lib.EnvState, actions: Dict[str, jax.Array]):
        """One slot without auto-reset: ``jaxrrm.env.step(key, state, a, params, cfg)``.

        Args:
          key: PRNG key (this slot's fading innovation).
          state: :class:`jaxrrm.env.EnvState` of slot ``t``.
          actions: ``{"ap_i": int}`` in ``[0, A)``.

        Returns:
          ``obs`` (dict of slot ``t + 1``), ``state`` (slot ``t + 1``), ``rewards``
          ``{"ap_i": [] float32}`` (the team reward of slot ``t`` for every AP), ``dones``
          ``{"ap_i", "__all__": [] bool}`` (``t + 1 == horizon``) and ``infos``, each ``[I]``:
          ``serving`` int32 (UE index AP ``i`` served, -1 silent), ``masked`` bool (a masked
          action, executed as silence), ``served_rate_mbps`` float32 (Shannon rate of the UE AP
          ``i`` served, Mbit/s; 0 when silent), ``terminated`` and ``truncated`` bool (the
          step's flags, broadcast).
        """
        obs, state, reward, terminated, truncated, info = env_lib.step(
            key, state, self.actions_to_array(actions), self.params, self.cfg)
        done = terminated | truncated
        dones = self.per_agent(done)
        dones["__all__"] = done
        serving = info["serving"]
        served_rate = jnp.where(serving >= 0,
                                info["rates_mbps"][jnp.maximum(serving, 0)], 0.0)
        shape = (self.num_agents,)
        infos = {"serving": serving, "masked": info["masked"],
                 "served_rate_mbps": served_rate.astype(jnp.float32),
                 "terminated": jnp.broadcast_to(terminated, shape),
                 "truncated": jnp.broadcast_to(truncated, shape)}
        return self.obs_to_dict(obs), state, self.per_agent(reward), dones, infos

    def get_obs(self, state: env_lib.EnvState) -> Dict[str, jax.Array]:
        """The observation dict of ``state`` (:func:`jaxrrm.env.observe`; used by the base
        class's ``step`` when a ``reset_state`` is given)."""
        obs, _ = env_lib.observe(state, self.params, self.cfg)
        return self.obs_to_dict(obs)

    def get_world_state(self, state: env_lib.EnvState) -> jax.Array:
        """``[S]`` float32, the global state of ``state`` (= ``obs["world_state"]``)."""
        obs, _ = env_lib.observe(state, self.params, self.cfg)
        return obs.global_state

    def world_state_space(self):
        """``Box(-FEATURE_BOUND, FEATURE_BOUND, (S,))`` float32, the space of
        ``obs["world_state"]``."""
        return _spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (self.state_size,), jnp.float32)

    @partial(jax.jit, static_argnums=(0,))
    def get_avail_actions(self, state: env_lib.EnvState) -> Dict[str, jax.Array]:
        """``{"ap_i": [A] bool}``, True where action ``n`` is valid in ``state``: candidate ``n``
        exists (``state.candidates[i, n] >= 0``); idle (action ``N``) always. Equal to the
        observation's ``action_mask``."""
        mask = state.candidates >= 0
        if self.cfg.allow_idle:
            mask = jnp.concatenate([mask, jnp.ones((self.num_agents, 1), bool)], axis=-1)
        return {a: mask[i] for i, a in enumerate(self.agents)}

    @property
    def agent_classes(self) -> dict:
        """``{"ap": agents}``: all APs are of one kind (homogeneous, interchangeable)."""
        return {"ap": list(self.agents)}


# ============================================================================================
# IPPO (parameter sharing, no agent id) in JaxMARL's style
# ============================================================================================

import distrax  # noqa: E402
import flax.linen as nn  # noqa: E402
import optax  # noqa: E402
from flax.linen.initializers import constant, orthogonal  # noqa: E402
from flax.training.train_state import TrainState  # noqa: E402

#: Hyperparameters of :func:`make_ippo_train` (JaxMARL's key names; ``ippo_ff_mpe.yaml``'s
#: values except where the RRM game needs others). ``ENV_CONFIG`` / ``ENV_PARAMS`` build the
#: environment when no ``env`` is passed; ``REWARD_SCALE`` multiplies the reward seen by the
#: learner only (logged returns are unscaled); ``HIDDEN`` are the MLP widths.
IPPO_DEFAULTS: Dict[str, Any] = {
    "LR": 2.5e-4,
    "NUM_ENVS": 16,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 1_000_000,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ANNEAL_LR": True,
    "HIDDEN": (64, 64),
    "REWARD_SCALE": 1.0,
    "ENV_CONFIG": None,
    "ENV_PARAMS": None,
}


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over one agent's observation (``ippo_ff_mpe``'s network).

    ``__call__(obs [..., D], avail [..., A] bool) -> (distrax.Categorical over A, value [...])``;
    unavailable actions get logit :data:`jaxrrm.networks.MASK_VALUE` (probability 0).
    """

    action_dim: int
    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x, avail):
        act = nn.relu if self.activation == "relu" else nn.tanh

        def trunk(h):
            for width in self.hidden:
                h = act(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)),
                                 bias_init=constant(0.0))(h))
            return h

        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01),
                          bias_init=constant(0.0))(trunk(x))
        logits = jnp.where(avail, logits, jnp.asarray(MASK_VALUE, logits.dtype))
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(trunk(x))
        return distrax.Categorical(logits=logits), jnp.squeeze(value, axis=-1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    avail: jax.Array
    info: dict


def _batchify(x: dict, agents, num_actors: int):
    """``{agent: [E, ...]}`` -> ``[num_actors, ...]``, agent-major (the baselines' layout)."""
    x = jnp.stack([x[a] for a in agents])
    return x.reshape((num_actors,) + x.shape[2:])


def _unbatchify(x, agents, num_envs: int):
    """``[num_actors, ...]`` -> ``{agent: [E, ...]}`` (inverse of :func:`_batchify`)."""
    x = x.reshape((len(agents), num_envs) + x.shape[1:])
    return {a: x[i] for i, a in enumerate(agents)}


def _network(config: dict, env: RRMJaxMARLEnv) -> ActorCritic:
    return ActorCritic(env.num_actions, tuple(config["HIDDEN"]), config["ACTIVATION"])


def make_ippo_train(config: Optional[dict] = None, env: Optional[RRMJaxMARLEnv] = None):
    """Independent PPO with parameters shared across APs, on :class:`RRMJaxMARLEnv`.

    Each AP acts on its own observation (``[D]``, no agent id) with one shared actor-critic;
    the critic also sees only the local observation (independent learners). Rollouts run
    ``NUM_ENVS`` environments in parallel (``vmap``) for ``NUM_STEPS`` slots through JaxMARL's
    ``LogWrapper``; then ``UPDATE_EPOCHS`` epochs of clipped PPO over ``NUM_MINIBATCHES``
    minibatches, GAE(``GAMMA``, ``GAE_LAMBDA``) with the episode end treated as terminal (the
    JaxMARL baselines' convention), and logits masked with :meth:`RRMJaxMARLEnv.get_avail_actions`.

    Args:
      config: overrides of :data:`IPPO_DEFAULTS`.
      env: the environment (default: ``RRMJaxMARLEnv(config["ENV_CONFIG"] or EnvConfig(),
        config["ENV_PARAMS"])``).

    Returns:
      ``train(key) -> {"runner_state": (train_state, env_state, obs, key), "metrics": {...}}``,
      jittable (``jax.jit(train)``) and vmappable over keys. ``metrics`` has one entry per
      update (``NUM_UPDATES = TOTAL_TIMESTEPS // NUM_STEPS // NUM_ENVS``): ``episode_return``
      (mean unscaled return of the episodes that ended in the update's rollout, NaN if none),
      ``returned_episode_returns`` (``LogWrapper``'s, averaged over the rollout as JaxMARL logs
      it) and the losses. ``train_state.params`` are the network's parameters
      (:func:`ippo_policy`). The network and the resolved config are attached to ``train``
      as ``train.network``, ``train.config``, ``train.env``.
    """
    from jaxmarl.wrappers.baselines import LogWrapper

    config = {**IPPO_DEFAULTS, **(config or {})}
    if env is None:
        env = RRMJaxMARLEnv(config["ENV_CONFIG"] or EnvConfig(), config["ENV_PARAMS"])
    num_envs, num_steps = int(config["NUM_ENVS"]), int(config["NUM_STEPS"])
    num_actors = env.num_agents * num_envs
    num_updates = int(config["TOTAL_TIMESTEPS"]) // num_steps // num_envs
    if num_updates < 1:
        raise ValueError(f"TOTAL_TIMESTEPS={config['TOTAL_TIMESTEPS']} is less than one update "
                         f"of NUM_STEPS * NUM_ENVS = {num_steps * num_envs} slots")
    batch_size = num_actors * num_steps
    if batch_size % int(config["NUM_MINIBATCHES"]):
        raise ValueError(f"NUM_MINIBATCHES={config['NUM_MINIBATCHES']} does not divide the batch "
                         f"of NUM_STEPS * NUM_ENVS * num_agents = {batch_size}")
    config.update(NUM_ACTORS=num_actors, NUM_UPDATES=num_updates,
                  MINIBATCH_SIZE=batch_size // int(config["NUM_MINIBATCHES"]))
    wrapped = LogWrapper(env)
    network = _network(config, env)
    agents = env.agents

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / num_updates
        return config["LR"] * frac

    def train(rng):
        rng, k_init = jax.random.split(rng)
        net_params = network.init(k_init, jnp.zeros((env.obs_dim,)),
                                  jnp.ones((env.num_actions,), bool))
        lr = linear_schedule if config["ANNEAL_LR"] else config["LR"]
        tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
                         optax.adam(learning_rate=lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=net_params, tx=tx)

        rng, k_reset = jax.random.split(rng)
        obsv, env_state = jax.vmap(wrapped.reset)(jax.random.split(k_reset, num_envs))

        def _update_step(runner_state, unused):
            def _env_step(runner_state, unused):
                train_state, env_state, last_obs, rng = runner_state
                avail = jax.vmap(env.get_avail_actions)(env_state.env_state)
                avail_batch = jax.lax.stop_gradient(_batchify(avail, agents, num_actors))
                obs_batch = _batchify(last_obs, agents, num_actors)
                rng, k_act, k_step = jax.random.split(rng, 3)
                pi, value = network.apply(train_state.params, obs_batch, avail_batch)
                action = pi.sample(seed=k_act)
                log_prob = pi.log_prob(action)
                env_act = _unbatchify(action, agents, num_envs)
                obsv, env_state, reward, done, info = jax.vmap(wrapped.step)(
                    jax.random.split(k_step, num_envs), env_state, env_act)
                transition = Transition(
                    _batchify(done, agents, num_actors), action, value,
                    _batchify(reward, agents, num_actors) * config["REWARD_SCALE"],
                    log_prob, obs_batch, avail_batch, info)
                return (train_state, env_state, obsv, rng), transition

            runner_state, traj = jax.lax.scan(_env_step, runner_state, None, num_steps)
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(
                train_state.params, _batchify(last_obs, agents, num_actors),
                _batchify(jax.vmap(env.get_avail_actions)(env_state.env_state), agents,
                          num_actors))

            def _gae(carry, t):
                gae, next_value = carry
                not_done = 1.0 - t.done
                delta = t.reward + config["GAMMA"] * next_value * not_done - t.value
                gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * not_done * gae
                return (gae, t.value), gae

            _, advantages = jax.lax.scan(_gae, (jnp.zeros_like(last_val), last_val), traj,
                                         reverse=True)
            targets = advantages + traj.value

            def _update_epoch(update_state, unused):
                def _update_minibatch(train_state, batch):
                    tr, gae, tgt = batch

                    def _loss(params):
                        pi, value = network.apply(params, tr.obs, tr.avail)
                        log_prob = pi.log_prob(tr.action)
                        v_clip = tr.value + (value - tr.value).clip(-config["CLIP_EPS"],
                                                                    config["CLIP_EPS"])
                        v_loss = 0.5 * jnp.maximum(jnp.square(value - tgt),
                                                   jnp.square(v_clip - tgt)).mean()
                        ratio = jnp.exp(log_prob - tr.log_prob)
                        g = (gae - gae.mean()) / (gae.std() + 1e-8)
                        a_loss = -jnp.minimum(
                            ratio * g,
                            jnp.clip(ratio, 1.0 - config["CLIP_EPS"], 1.0 + config["CLIP_EPS"])
                            * g).mean()
                        entropy = pi.entropy().mean()
                        total = a_loss + config["VF_COEF"] * v_loss - config["ENT_COEF"] * entropy
                        return total, (v_loss, a_loss, entropy)

                    (total, (v_loss, a_loss, ent)), grads = jax.value_and_grad(
                        _loss, has_aux=True)(train_state.params)
                    train_state = train_state.apply_gradients(grads=grads)
                    return train_state, {"total_loss": total, "critic_loss": v_loss,
                                         "actor_loss": a_loss, "entropy": ent}

                train_state, traj, advantages, targets, rng = update_state
                rng, k_perm = jax.random.split(rng)
                perm = jax.random.permutation(k_perm, batch_size)
                batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                                     (traj._replace(info={}), advantages, targets))
                minibatches = jax.tree.map(
                    lambda x: jnp.take(x, perm, axis=0).reshape(
                        (config["NUM_MINIBATCHES"], -1) + x.shape[1:]), batch)
                train_state, losses = jax.lax.scan(_update_minibatch, train_state, minibatches)
                return (train_state, traj, advantages, targets, rng), losses

            update_state = (train_state, traj, advantages, targets, rng)
            update_state, losses = jax.lax.scan(_update_epoch, update_state, None,
                                                config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            ended = traj.info["returned_episode"].astype(jnp.float32)  # [T, E, I]
            n_ended = jnp.sum(ended)
            metric = {
                "episode_return": jnp.where(
                    n_ended > 0,
                    jnp.sum(traj.info["returned_episode_returns"] * ended)
                    / jnp.maximum(n_ended, 1.0), jnp.nan),
                "returned_episode_returns": jnp.mean(traj.info["returned_episode_returns"]),
                **jax.tree.map(jnp.mean, losses),
            }
            return (train_state, env_state, last_obs, rng), metric

        rng, k_run = jax.random.split(rng)
        runner_state, metrics = jax.lax.scan(_update_step, (train_state, env_state, obsv, k_run),
                                             None, num_updates)
        return {"runner_state": runner_state, "metrics": metrics}

    train.network = network
    train.config = config
    train.env = env
    return train


def ippo_policy(net_params, env: RRMJaxMARLEnv, config: Optional[dict] = None,
                greedy: bool = True):
    """A :data:`jaxrrm.env.Policy` ``(key, obs, state, params) -> [I] int32`` from the shared
    actor of :func:`make_ippo_train` (``net_params = out["runner_state"][0].params``).

    Every AP applies the same actor to its own row of ``obs.agents`` with its row of
    ``obs.action_mask``; ``greedy``: the most probable valid action, else a sample (with
    ``key``). Decentralized: reads only the observation. The parameters are closed over
    (constants of the compiled rollout); the returned function is a new object per call, so
    build it once per evaluation (it is a static argument of :mod:`jaxrrm.evaluate`).
    """
    network = _network({**IPPO_DEFAULTS, **(config or {})}, env)

    def policy(key, obs, state, params):
        pi, _ = network.apply(net_params, obs.agents, obs.action_mask)
        a = jnp.argmax(pi.logits, axis=-1) if greedy else pi.sample(seed=key)
        return a.astype(jnp.int32)

    return policy
