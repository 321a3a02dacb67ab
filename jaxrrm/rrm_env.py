"""A gymnax-style object API over the pure environment, and outside policies on our episodes.

:class:`RRMEnv` is a thin layer over :mod:`jaxrrm.env` for code written against gymnax's
``Environment`` interface (``env.default_params``, ``env.reset(key, params)``,
``env.step(key, state, action, params)``, ``env.observation_space(params)``,
``env.action_space(params)``): it holds the static :class:`~jaxrrm.EnvConfig` and calls the pure
functions, so it is as jittable and vmappable as they are and gives the same numbers for the same
keys. Its ``step`` resets finished episodes automatically; the last observation of the finished
episode is ``info["final_observation"]`` (the convention of gymnasium's vector environments,
what a bootstrapped target needs), and ``done`` is ``terminated | truncated`` (the game has a time
limit only: ``info["truncated"]`` says so).

:func:`episode_keys` exposes the key schedule of :func:`jaxrrm.env.rollout` (the episodes of
:mod:`jaxrrm.evaluate` and of every result this project reports), and :func:`evaluate_outside`
runs any policy (a PyTorch model, a d3rlpy learner, a hand-written rule, called from Python once
per slot with NumPy arrays) on exactly those episodes, returning the metrics of
:func:`jaxrrm.evaluate.seed_metrics`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import env as env_lib
from .config import EnvConfig, EnvParams


# --------------------------------------------------------------------------------------------
# Spaces (gymnax's attribute names: n / shape / dtype / low / high, sample(key), contains(x))
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Discrete:
    """``num_categories`` actions ``0..n-1`` for each of ``shape`` agents (``[I]`` int32 here:
    one action per AP). ``sample`` draws uniformly, ignoring the action mask (use
    :func:`jaxrrm.data.random_valid_actions` for valid ones)."""

    n: int
    shape: Tuple[int, ...] = ()
    dtype: Any = jnp.int32

    def sample(self, key) -> jax.Array:
        return jax.random.randint(key, self.shape, 0, self.n, dtype=self.dtype)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.all((x >= 0) & (x < self.n)) & (x.shape == self.shape)


@dataclasses.dataclass(frozen=True)
class Box:
    """Real arrays of ``shape`` in ``[low, high]`` (``-inf``/``inf`` for unbounded features)."""

    low: float
    high: float
    shape: Tuple[int, ...]
    dtype: Any = jnp.float32

    def sample(self, key) -> jax.Array:
        lo = jnp.maximum(self.low, -1e3)
        hi = jnp.minimum(self.high, 1e3)
        return jax.random.uniform(key, self.shape, self.dtype, lo, hi)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.all((x >= self.low) & (x <= self.high)) & (x.shape == self.shape)


# --------------------------------------------------------------------------------------------
# The object API
# --------------------------------------------------------------------------------------------

class RRMEnv:
    """The multi-AP scheduling game behind gymnax's ``Environment`` interface.

    Args:
      cfg: the static :class:`EnvConfig` (default: the default scenario).

    ``action`` is the joint action ``[I]`` int32 (one per AP: ``n < N`` serves candidate ``n``,
    ``N`` with ``allow_idle`` is silence); observations are :class:`jaxrrm.env.Observation`
    pytrees (``agents [I, D]``, ``global_state [S]``, ``action_mask [I, A]``); the reward is the
    team reward ``[]`` float32 of the slot (:func:`jaxrrm.env.step`).

    Example::

        rrm = RRMEnv(EnvConfig(num_aps=2, num_ues=6, num_candidates=2))
        params = rrm.default_params
        obs, state = rrm.reset(key, params)
        obs, state, reward, done, info = jax.jit(rrm.step)(key, state, actions, params)
    """

    def __init__(self, cfg: Optional[EnvConfig] = None):
        self.cfg = EnvConfig() if cfg is None else cfg
        if not isinstance(self.cfg, EnvConfig):
            raise TypeError(f"cfg must be an EnvConfig, got {type(self.cfg).__name__}")

    # hashable by configuration: jit(static_argnums) over a bound method is safe
    def __hash__(self):
        return hash((RRMEnv, self.cfg))

    def __eq__(self, other):
        return isinstance(other, RRMEnv) and other.cfg == self.cfg

    @property
    def name(self) -> str:
        return "jaxrrm-multi-ap-scheduling"

    @property
    def num_agents(self) -> int:
        return self.cfg.num_aps

    @property
    def num_actions(self) -> int:
        return self.cfg.num_actions

    @functools.cached_property
    def default_params(self) -> EnvParams:
        """``EnvParams.create(cfg)``: the defaults that match the configuration (built and
        checked once per environment object)."""
        return EnvParams.create(self.cfg)

    def reset(self, key, params: Optional[EnvParams] = None):
        """``(obs, state)`` of a new episode: :func:`jaxrrm.env.reset`."""
        params = self.default_params if params is None else params
        return env_lib.reset(key, params, self.cfg)

    def step(self, key, state, action, params: Optional[EnvParams] = None):
        """One slot with automatic reset: ``(obs, state, reward, done, info)``.

        :func:`jaxrrm.env.step_auto_reset` with ``done = terminated | truncated``; ``info``
        holds the step's ``rates_mbps [K]``, ``serving [I]``, ``masked [I]``, ``sinr [K]``,
        ``pf_weights [K]``, ``terminated`` / ``truncated`` ``[]`` bool and
        ``final_observation`` (the finished episode's last observation where ``done``, else
        the same as ``obs``).
        """
        params = self.default_params if params is None else params
        obs, state, reward, term, trunc, info = env_lib.step_auto_reset(
            key, state, jnp.asarray(action, jnp.int32), params, self.cfg)
        info = dict(info)
        info["final_observation"] = info.pop("final_obs")
        info["terminated"], info["truncated"] = term, trunc
        return obs, state, reward, term | trunc, info

    def observation_space(self, params: Optional[EnvParams] = None) -> Box:
        """Each AP's observation row: ``Box(-inf, inf, (obs_dim,))`` (features in dB / 10 and
        log10 units, see :func:`jaxrrm.env.observe`)."""
        return Box(-jnp.inf, jnp.inf, (self.cfg.obs_dim,))

    def state_space(self, params: Optional[EnvParams] = None) -> Box:
        """The global state ``Observation.global_state``: ``Box(-inf, inf, (state_dim,))``."""
        return Box(-jnp.inf, jnp.inf, (self.cfg.state_dim,))

    def action_space(self, params: Optional[EnvParams] = None) -> Discrete:
        """The joint action: ``Discrete(num_actions, shape=(num_aps,))``."""
        return Discrete(self.cfg.num_actions, (self.cfg.num_aps,))


# --------------------------------------------------------------------------------------------
# The episodes of our evaluation, for outside policies
# --------------------------------------------------------------------------------------------

class EpisodeKeys(NamedTuple):
    """The PRNG keys of ``E`` episodes of ``T`` slots as :func:`jaxrrm.env.rollout` uses them.

    Attributes:
      reset: ``[E]`` keys of :func:`jaxrrm.env.reset`.
      policy: ``[E, T]`` keys handed to the policy at each slot.
      step: ``[E, T]`` keys of :func:`jaxrrm.env.step` (the fading innovation).
    """

    reset: jax.Array
    policy: jax.Array
    step: jax.Array


def episode_keys(key, num_episodes: int, horizon: int) -> EpisodeKeys:
    """The key schedule of ``rollout(key, policy, params, cfg, num_episodes)``.

    Episode ``e`` has ``k_e = split(key, E)[e]``; ``(k_reset, k_run) = split(k_e)``; slot ``t``
    uses ``split(k_run, (T, 2))[t]`` as ``(policy key, step key)``. Seed ``s`` of an evaluation
    (:func:`jaxrrm.evaluate.rollout_seeds` with the test keys of
    :func:`jaxrrm.evaluate.seed_keys`) runs ``rollout(test_keys[s], ...)``.
    """
    return EpisodeKeys(*env_lib.episode_key_schedule(jax.random.split(key, num_episodes),
                                                     horizon))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _reset_batch(keys, params: EnvParams, cfg: EnvConfig):
    """:func:`jaxrrm.env.reset` of a batch of episodes (one compilation per config and batch
    shape; the parameters are traced)."""
    return jax.vmap(lambda k: env_lib.reset(k, params, cfg))(keys)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _step_batch(keys, state, actions, params: EnvParams, cfg: EnvConfig):
    """:func:`jaxrrm.env.step` of a batch of episodes (as :func:`_reset_batch`)."""
    return jax.vmap(lambda k, st, a: env_lib.step(k, st, a, params, cfg))(keys, state, actions)


OutsidePolicy = Callable[[Dict[str, np.ndarray], int], Any]
"""An outside policy: ``act(obs, t) -> actions``, called from Python once per slot with NumPy
arrays for a batch of ``B`` episodes: ``obs["agents"] [B, I, D]`` float32,
``obs["global_state"] [B, S]`` float32, ``obs["action_mask"] [B, I, A]`` bool, and ``t`` the slot
index; it returns ``[B, I]`` integer actions (anything ``np.asarray`` accepts: a NumPy array, a
PyTorch tensor's ``.numpy()``, a list)."""


def evaluate_outside(act: OutsidePolicy, test_keys, params: EnvParams, cfg: EnvConfig,
                     num_episodes: int) -> Dict[str, np.ndarray]:
    """Run an outside policy on the test episodes of an evaluation, slot by slot from Python.

    Every seed ``s`` (``test_keys [S]``, e.g. :func:`jaxrrm.evaluate.seed_keys`) plays the
    ``num_episodes`` episodes that :func:`jaxrrm.evaluate.rollout_seeds` plays for it (the same
    drops, channels and fading: :func:`episode_keys`), all ``S E`` episodes as one batch; the
    environment steps are jitted, the policy is called ``T`` times.

    Returns:
      ``{"sum_rate", "p5_rate", "score", "return"}`` -> ``[S]`` float64 (as
      :func:`jaxrrm.compare.evaluate_policy`'s ``per_seed``) and ``"ue_rates"`` ``[S, E, K]``
      float32, Mbit/s: comparable seed by seed with every method of a run with these keys.

    Raises:
      ValueError: the policy returned actions of another shape or outside ``[0, A)``.
    """
    from . import evaluate

    test_keys = jnp.asarray(test_keys)
    s, e, t_max = test_keys.shape[0], int(num_episodes), cfg.horizon
    ks = jax.vmap(lambda k: episode_keys(k, e, t_max))(test_keys)      # leaves [S, E, ...]
    flat = jax.tree.map(lambda x: x.reshape((s * e,) + x.shape[2:]), ks)
    obs, state = _reset_batch(flat.reset, params, cfg)
    # Sums stay on the device (only the observation goes to the host each slot).
    rate_sum = jnp.zeros((s * e, cfg.num_ues), jnp.float32)
    ret = jnp.zeros((s * e,), jnp.float32)
    for t in range(t_max):
        o = {"agents": np.asarray(obs.agents), "global_state": np.asarray(obs.global_state),
             "action_mask": np.asarray(obs.action_mask)}
        a = np.asarray(act(o, t))
        if a.shape != (s * e, cfg.num_aps) or not np.issubdtype(a.dtype, np.integer) \
                or a.min() < 0 or a.max() >= cfg.num_actions:
            values = f"values {a.min()}..{a.max()}" if a.size else "no values"
            raise ValueError(f"the outside policy returned actions of shape {a.shape}, dtype "
                             f"{a.dtype} ({values}) at slot {t}: expected "
                             f"[{s * e}, {cfg.num_aps}] integers in [0, {cfg.num_actions})")
        obs, state, reward, _, _, info = _step_batch(flat.step[:, t], state,
                                                     jnp.asarray(a, jnp.int32), params, cfg)
        rate_sum = rate_sum + info["rates_mbps"]
        ret = ret + reward
    rate_sum, ret = np.asarray(rate_sum), np.asarray(ret)
    rates = (rate_sum / t_max).reshape(s, e, cfg.num_ues)
    out = evaluate.seed_metrics(rates, params.score_mu, ret.reshape(s, e).mean(axis=1))
    out["ue_rates"] = rates
    return out
