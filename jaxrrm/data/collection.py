"""Behaviour policies and dataset collection by rollouts of a finished policy.

:func:`collect_policy` rolls out any :data:`jaxrrm.env.Policy` (with optional per-AP
epsilon-exploration, :func:`epsilon_greedy`; the random walk is :func:`uniform_policy`) into a
:class:`~jaxrrm.data.transitions.Transitions` of NumPy leaves, episode-major
(:func:`~jaxrrm.data.transitions.from_rollout` order); :func:`collect` does it by behaviour name
(:data:`BEHAVIOURS`) and also returns the metadata (:func:`make_meta`) that
:func:`jaxrrm.data.storage.save` writes. The online learners' behaviours (``sac``, ``dqn``) make
datasets from their transition stream instead (:func:`jaxrrm.data.transitions.slice_stream`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding
from ..config import EnvConfig, EnvParams, check_seed
from ..env import Policy, as_pytree_policy, rollout_episodes
from .storage import config_to_json, params_to_json
from .transitions import FIELDS, TRAJ_KEYS, Transitions, field_specs, from_rollout


#: Behaviour names :func:`behaviour_policy` and :func:`collect` know (the online learners'
#: behaviours, ``sac`` and ``dqn``, make datasets with
#: :func:`~jaxrrm.data.transitions.slice_stream` instead).
BEHAVIOURS = ("random_walk", "random", "full_reuse", "tdm", "max_sinr", "reward_greedy",
              "exhaustive")


def random_valid_actions(key, action_mask) -> jax.Array:
    """A uniformly random valid action per agent.

    Args:
      key: PRNG key.
      action_mask: ``[..., A]`` bool, True where valid.

    Returns:
      ``[...]`` int32, uniform over each row's True entries (action 0, which the environment
      executes as silence, if a row has none).
    """
    u = jax.random.uniform(key, action_mask.shape)
    return jnp.argmax(jnp.where(action_mask, u, -1.0), axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=None)
def uniform_policy(cfg: EnvConfig) -> Policy:
    """The random-walk behaviour: each AP takes a uniformly random valid action, idle included.

    (Unlike the ``random`` baseline, which serves a random valid *candidate* and never idles.)
    Cached per ``cfg``: the same function object each call, so rollouts do not recompile.

    Returns:
      A :data:`jaxrrm.env.Policy` ``(key, obs, state, params) -> [I] int32``.
    """
    def policy(key, obs, state, params):
        return random_valid_actions(key, obs.action_mask)
    return policy


@functools.lru_cache(maxsize=None)
def _epsilon_greedy(policy: Policy, epsilon: float) -> Policy:
    def explore(key, obs, state, params):
        k_pol, k_coin, k_rand = jax.random.split(key, 3)
        greedy = jnp.asarray(policy(k_pol, obs, state, params), jnp.int32)
        rand = random_valid_actions(k_rand, obs.action_mask)
        coin = jax.random.uniform(k_coin, greedy.shape) < epsilon
        return jnp.where(coin, rand, greedy)
    return explore


def epsilon_greedy(policy: Policy, epsilon: float, cfg: EnvConfig) -> Policy:
    """``policy`` with epsilon-exploration, independently per AP.

    With probability ``epsilon`` an AP's action is replaced by a uniformly random *valid* action
    (from the observation's action mask, idle included when allowed); otherwise ``policy``'s
    action is kept. ``epsilon = 0`` returns ``policy`` itself. Cached: the same (policy, epsilon)
    gives the same function object (no recompilation).

    Args:
      policy: a :data:`jaxrrm.env.Policy`.
      epsilon: float in ``[0, 1]``.
      cfg: the configuration (validated against; the mask carries the action layout).

    Returns:
      A :data:`jaxrrm.env.Policy` ``(key, obs, state, params) -> [I] int32``.
    """
    epsilon = float(epsilon)
    if not (0.0 <= epsilon <= 1.0):
        raise ValueError(f"epsilon={epsilon!r} is invalid: allowed range is [0, 1]")
    if not isinstance(cfg, EnvConfig):
        raise TypeError(f"cfg must be an EnvConfig, got {type(cfg).__name__}")
    if epsilon == 0.0:
        return policy
    return _epsilon_greedy(policy, epsilon)


def behaviour_policy(name: str, cfg: EnvConfig) -> Policy:
    """The behaviour policy called ``name``: ``random_walk`` (:func:`uniform_policy`) or a baseline.

    Raises:
      ValueError: unknown name (the message lists :data:`BEHAVIOURS`), or the baseline's own
        configuration errors.
    """
    if name == "random_walk":
        return uniform_policy(cfg)
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}: allowed are {BEHAVIOURS} (online learners "
                         "make datasets from their transition stream, see slice_stream)")
    from .. import baselines
    return baselines.make(name, cfg)


def _chunk(keys, policy, params, cfg):
    ep_keys = jax.vmap(lambda k: jax.random.split(k, 1)[0])(keys)
    traj = rollout_episodes(ep_keys, policy, params, cfg, return_trajectory=True).trajectory
    return {k: traj[k] for k in TRAJ_KEYS if k != "info"} | {
        "info": {"rates_mbps": traj["info"]["rates_mbps"]}}


_chunk_jit = jax.jit(_chunk, static_argnames=("cfg",))


def rollout_chunk(keys, policy, params, cfg):
    """The episodes of one compiled call of :func:`collect_policy`: one episode per key.

    Args:
      keys: ``[C]`` PRNG keys (episode ``c`` is ``rollout(keys[c], policy, params, cfg, 1)``'s
        episode: :func:`jaxrrm.env.rollout_episodes` of ``split(keys[c], 1)[0]``).
      policy: a :data:`jaxrrm.env.Policy` (a pytree argument of the compiled call: see
        :func:`jaxrrm.env.as_pytree_policy`).
      params, cfg: the environment (``cfg`` static).

    Returns:
      The :func:`~jaxrrm.data.transitions.from_rollout` trajectory dict of ``[C, T, ...]``
      arrays: ``obs``, ``actions``, ``rewards``, ``next_obs``, ``truncated`` and
      ``info["rates_mbps"]`` (JAX arrays).
    """
    return _chunk_jit(keys, as_pytree_policy(policy), params, cfg)


@functools.lru_cache(maxsize=64)
def _sharded_chunk_fn(cfg: EnvConfig, mesh):
    return sharding.shard_batched(
        lambda keys, policy, params: _chunk(keys, policy, params, cfg),
        mesh, (True, False, False), gather_out=True, what="episodes per chunk")


def sharded_rollout_chunk(keys, policy: Policy, params: EnvParams, cfg: EnvConfig, mesh):
    """:func:`rollout_chunk` with the ``C`` episodes split over the devices of ``mesh``
    (:func:`jaxrrm.sharding.make_mesh`; ``D`` must divide ``C``, ``ValueError`` otherwise).

    Returns:
      The same ``[C, T, ...]`` dict, replicated on every device (the unsharded values up to
      float32 rounding; see :mod:`jaxrrm.distributed`, *Equality*). Compiled once per
      (cfg, mesh) and policy function (the policy is a pytree argument).
    """
    return _sharded_chunk_fn(cfg, mesh)(keys, as_pytree_policy(policy), params)


#: Default upper bound on the transitions rolled out per compiled call of :func:`collect_policy`.
CHUNK_STEPS = 1 << 16


def collect_policy(key, policy: Policy, params: EnvParams, cfg: EnvConfig, num_steps: int,
                   epsilon: float = 0.0, *, episodes_per_chunk: Optional[int] = None,
                   progress: Optional[Callable[[int], None]] = None, mesh=None) -> Transitions:
    """Roll out a finished policy (with optional epsilon-exploration) into a dataset.

    ``E = ceil(num_steps / T)`` whole episodes are run and the result is cut to exactly
    ``num_steps`` transitions, episode-major (:func:`~jaxrrm.data.transitions.from_rollout`
    order): **the last episode is partial** when ``T`` does not divide ``num_steps`` (its rows
    keep ``truncated`` False, as the environment reported them; its transitions are still
    exact). Episode ``e`` (id ``e``) runs
    with key ``jax.random.fold_in(key, e)``, so the data do not depend on the chunking and a
    shorter collection is a prefix of a longer one.

    Episodes are rolled out in chunks of ``episodes_per_chunk`` (one compilation per chunk size;
    the last chunk is padded with discarded episodes to keep the size) and copied to the host
    after each chunk: the peak memory is the dataset plus one chunk.

    Args:
      key: PRNG key.
      policy: a :data:`jaxrrm.env.Policy` (reuse the same object to avoid recompiling).
      params, cfg: the environment.
      num_steps: transitions to collect, ``>= 1``.
      epsilon: per-AP exploration probability in ``[0, 1]`` (:func:`epsilon_greedy`).
      episodes_per_chunk: episodes per compiled call (default: about :data:`CHUNK_STEPS`
        transitions, spread evenly over the chunks).
      progress: optional callback, called with the number of transitions collected so far after
        each chunk (e.g. ``tqdm.update`` of the difference).
      mesh: optional :func:`jaxrrm.sharding.make_mesh` mesh: each chunk's episodes are split
        over its devices (the chunk is rounded up to a multiple of the device count; the same
        data to float32 rounding).

    Returns:
      :class:`Transitions` with ``num_steps`` rows and NumPy leaves (host memory).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid: allowed is an integer >= 1")
    num_steps = int(num_steps)
    pol = epsilon_greedy(policy, epsilon, cfg)
    horizon = cfg.horizon
    num_ep = -(-num_steps // horizon)
    if episodes_per_chunk is None:
        max_chunk = max(1, CHUNK_STEPS // horizon)
        num_chunks = -(-num_ep // max_chunk)
        chunk = -(-num_ep // num_chunks)
    else:
        if int(episodes_per_chunk) < 1:
            raise ValueError(f"episodes_per_chunk={episodes_per_chunk!r}: allowed is >= 1")
        chunk = min(int(episodes_per_chunk), num_ep)
    if mesh is not None:
        chunk = sharding.padded_size(chunk, mesh)
    out = {name: np.empty(shape, dtype) for name, (shape, dtype)
           in field_specs(cfg, num_steps).items()}
    ep_ids = jnp.arange(num_ep, dtype=jnp.uint32)
    done = 0
    for first in range(0, num_ep, chunk):
        ids = ep_ids[first:first + chunk]
        count = int(ids.shape[0])
        if count < chunk:  # pad with discarded episodes: one compilation per chunk size
            ids = jnp.concatenate([ids, jnp.arange(chunk - count, dtype=jnp.uint32) + num_ep])
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(ids)
        traj = jax.device_get(rollout_chunk(keys, pol, params, cfg) if mesh is None
                              else sharded_rollout_chunk(keys, pol, params, cfg, mesh))
        part = from_rollout(traj, cfg, episode_offset=first)
        rows = min(count * horizon, num_steps - done)
        for name in FIELDS:
            out[name][done:done + rows] = getattr(part, name)[:rows]
        done += rows
        if progress is not None:
            progress(done)
    assert done == num_steps
    return Transitions(**out)


def make_meta(cfg: EnvConfig, params: EnvParams, behaviour: str,
              behaviour_config: Optional[Mapping[str, Any]] = None,
              seeds: Optional[Mapping[str, Any]] = None, **extra) -> Dict[str, Any]:
    """The caller's part of a dataset's metadata, for :func:`~jaxrrm.data.storage.save`.

    Args:
      cfg, params: the environment the data come from.
      behaviour: the behaviour policy's name (e.g. ``"full_reuse"``, ``"sac"``).
      behaviour_config: JSON-able settings of the behaviour (epsilon, learner hyper-parameters,
        stream slice ``start_fraction`` / ``size``, ...).
      seeds: JSON-able seeds (e.g. ``{"collect": 0}``).
      **extra: further JSON-able entries kept as they are.

    Returns:
      A JSON-able dict with ``env_config``, ``env_params``, ``behaviour``, ``behaviour_config``,
      ``seeds`` and ``extra``'s keys.
    """
    meta = dict(extra)
    meta.update(env_config=config_to_json(cfg), env_params=params_to_json(params),
                behaviour=str(behaviour), behaviour_config=dict(behaviour_config or {}),
                seeds=dict(seeds or {}))
    return meta


def collect(seed: int, behaviour: str, params: EnvParams, cfg: EnvConfig, num_steps: int,
            epsilon: float = 0.0, **kwargs) -> Tuple[Transitions, Dict[str, Any]]:
    """:func:`collect_policy` by behaviour name (:data:`BEHAVIOURS`), with its metadata.

    Args:
      seed: integer seed; the key is ``jax.random.key(seed)``.
      behaviour: a name of :data:`BEHAVIOURS`.
      params, cfg, num_steps, epsilon: as :func:`collect_policy`.
      **kwargs: passed on to :func:`collect_policy` (``episodes_per_chunk``, ``progress``).

    Returns:
      (:class:`Transitions` with NumPy leaves, :func:`make_meta` dict for
      :func:`~jaxrrm.data.storage.save`).
    """
    check_seed(seed)
    pol = behaviour_policy(behaviour, cfg)
    data = collect_policy(jax.random.key(seed), pol, params, cfg, num_steps, epsilon, **kwargs)
    meta = make_meta(cfg, params, behaviour, {"epsilon": float(epsilon), "num_steps": num_steps,
                                              "source": "collect_policy"}, {"collect": int(seed)})
    return data, meta

