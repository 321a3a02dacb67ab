"""Offline datasets of joint transitions: the in-memory format, collection, disk format, sampling.

A dataset is a :class:`Transitions` pytree whose leaves all share a leading axis of ``n``
transitions (time steps of the multi-agent game). With ``I`` APs, ``N`` candidates, ``A`` actions
per AP and ``K`` UEs:

====================  ===================  =============================================
field                 shape, dtype         meaning
====================  ===================  =============================================
obs                   [n, I, 2N] float32   per-agent observations at slot t
state                 [n, 2NI] float32     global state at slot t
action_mask           [n, I, A] bool       valid actions at slot t
actions               [n, I] int32         joint action taken at slot t
reward                [n] float32          team reward of slot t
next_obs              [n, I, 2N] float32   observations at slot t+1 (of the same episode)
next_state            [n, 2NI] float32     global state at slot t+1
next_action_mask      [n, I, A] bool       valid actions at slot t+1
terminated            [n] bool             always False in this game (time limit only)
truncated             [n] bool             True on an episode's last slot (t + 1 = T)
rates_mbps            [n, K] float32       per-UE rates of slot t, Mbit/s
episode               [n] int32            episode index within the dataset (boundaries)
t                     [n] int32            slot index within the episode
====================  ===================  =============================================

Where the leaves live. Functions that build datasets on the host (:func:`collect_policy`,
:func:`mixture`, :func:`concatenate`, :func:`load`) return NumPy-backed leaves (:func:`load`:
read-only memory maps of the files); :func:`to_device` (or ``jax.device_put``) moves a dataset to
an accelerator once, after which :func:`sample` draws minibatches there inside jitted code.

Two ways to make a dataset (docs/design.md §4):

* rollouts of a finished policy, :func:`collect_policy` (any :data:`jaxrrm.env.Policy`, with
  optional epsilon-exploration, :func:`epsilon_greedy`; the random walk is :func:`uniform_policy`;
  :func:`collect` does it by behaviour name and also returns the metadata);
* a contiguous slice of the stream of transitions an online behaviour learner produced,
  :func:`slice_stream`. **Stream convention**: a behaviour run with ``E`` parallel environments
  that ran ``S`` steps emits a :class:`Transitions` of leading size ``S * E``, flattened
  *step-major* (row ``s * E + e`` is environment ``e`` at step ``s``, i.e. the ``[S, E, ...]``
  arrays of a ``lax.scan`` over steps of a ``vmap`` over environments, reshaped with
  :func:`flatten_stream`), with ``episode`` ids unique per (environment, episode) over the whole
  run and ``next_obs`` of an episode's last slot its own final observation (``info["final_obs"]``
  of :func:`jaxrrm.env.step_auto_reset`).

Datasets combine with :func:`mixture` (given proportions) and :func:`concatenate`.

On disk (:func:`save` / :func:`load`), a dataset is a directory::

    NAME/
      meta.json            schema version, jaxrrm version, EnvConfig, EnvParams, behaviour, seeds,
                           n, per-field file/shape/dtype/SHA-256, creation time, fingerprint,
                           meta_sha256 (the SHA-256 of meta.json's own entries)
      obs.npy ... t.npy    one NumPy .npy file per field above (no pickles)

written atomically (a temporary sibling directory, fsynced, then renamed), and checked on load;
every problem found on load raises :class:`DatasetError` naming the file and what is wrong.
Matching checksums do not make a dataset sound (a buggy writer computes them too), so the values
are checked as well, by :func:`check_content` (finite floats, actions in range and allowed by
their masks, every AP with a valid action, slot and episode indices): :func:`save` refuses to
write a dataset that fails it, :func:`load` (with ``verify``) to return one.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import files
from .config import EnvConfig, EnvParams, check_feasible, check_seed
from .env import Observation, Policy, rollout

#: Version of the on-disk layout written by :func:`save`; :func:`load` refuses any other.
#: 2: ``meta.json`` carries ``meta_sha256``, the checksum of its own content (schema 1 did not).
SCHEMA_VERSION = 2

#: Name of the metadata file inside a dataset directory.
META_FILE = "meta.json"

#: Arrays at least this large (bytes) are memory-mapped by :func:`load` (``mmap=True``).
MMAP_MIN_BYTES = 1 << 20

#: Behaviour names :func:`behaviour_policy` and :func:`collect` know (the online learners'
#: behaviours, ``sac`` and ``dqn``, make datasets with :func:`slice_stream` instead).
BEHAVIOURS = ("random_walk", "random", "full_reuse", "tdm", "max_sinr", "exhaustive")


class DatasetError(Exception):
    """A dataset is missing, incomplete, corrupt, of another schema or of another config, or
    holds values the environment cannot produce (:func:`check_content`).

    The message names the file (or directory) and the entry, or the field and index, and what is
    wrong with it.
    """


class DatasetExistsError(DatasetError, FileExistsError):
    """:func:`save` was asked to write where something already exists (without ``overwrite``)."""


@struct.dataclass
class Transitions:
    """A batch of joint transitions (see the module docstring for shapes and meaning)."""

    obs: jax.Array
    state: jax.Array
    action_mask: jax.Array
    actions: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    next_state: jax.Array
    next_action_mask: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    rates_mbps: jax.Array
    episode: jax.Array
    t: jax.Array

    @property
    def size(self) -> int:
        """Number of transitions ``n``."""
        return int(self.reward.shape[0])


#: Field names of :class:`Transitions`, in declaration (and file) order.
FIELDS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Transitions))


def from_step(obs: Observation, actions, reward, next_obs: Observation, terminated, truncated,
              info, episode, t) -> Transitions:
    """One transition (or a batch, leaves with any leading axes) from the values of an env step.

    ``obs`` is the observation the actions were taken on; ``next_obs`` the one the step returned
    (for :func:`jaxrrm.env.step_auto_reset`, pass ``info["final_obs"]`` so that the last slot of
    an episode bootstraps from its own episode, not the next one's first observation).
    """
    return Transitions(
        obs=obs.agents, state=obs.global_state, action_mask=obs.action_mask,
        actions=jnp.asarray(actions, jnp.int32), reward=jnp.asarray(reward, jnp.float32),
        next_obs=next_obs.agents, next_state=next_obs.global_state,
        next_action_mask=next_obs.action_mask, terminated=jnp.asarray(terminated, bool),
        truncated=jnp.asarray(truncated, bool), rates_mbps=info["rates_mbps"],
        episode=jnp.asarray(episode, jnp.int32), t=jnp.asarray(t, jnp.int32))


def field_specs(cfg: EnvConfig, n: int) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """The shape and dtype of every field of an ``n``-transition dataset for ``cfg``.

    Returns:
      ``{field: (shape, dtype)}`` in :data:`FIELDS` order (shapes as in the module docstring).
    """
    i, a, k = cfg.num_aps, cfg.num_actions, cfg.num_ues
    f32, b, i32 = np.dtype(np.float32), np.dtype(bool), np.dtype(np.int32)
    specs = {
        "obs": ((n, i, cfg.obs_dim), f32), "state": ((n, cfg.state_dim), f32),
        "action_mask": ((n, i, a), b), "actions": ((n, i), i32), "reward": ((n,), f32),
        "next_obs": ((n, i, cfg.obs_dim), f32), "next_state": ((n, cfg.state_dim), f32),
        "next_action_mask": ((n, i, a), b), "terminated": ((n,), b), "truncated": ((n,), b),
        "rates_mbps": ((n, k), f32), "episode": ((n,), i32), "t": ((n,), i32),
    }
    assert tuple(specs) == FIELDS
    return specs


#: Rows per chunk of :func:`check_content` (bounds its host memory on memory-mapped or device
#: datasets: one chunk of every field at a time).
CHECK_CHUNK_ROWS = 1 << 16

_FINITE_FIELDS = ("obs", "state", "reward", "next_obs", "next_state", "rates_mbps")
_INT_FIELDS = ("actions", "episode", "t")
_MASK_FIELDS = ("action_mask", "next_action_mask")
_INT32_MAX = int(np.iinfo(np.int32).max)


def _host_chunk(x, lo: int, hi: int) -> np.ndarray:
    """Rows ``[lo, hi)`` of a NumPy / memory-mapped / JAX leaf, as a NumPy array on the host."""
    return np.asarray(jax.device_get(x[lo:hi]))


def _first_index(bad: np.ndarray) -> Tuple[int, ...]:
    """The first True position (C order) of the bool array ``bad``."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.reshape(-1))), bad.shape))


def check_content(dataset: Transitions, cfg: EnvConfig, where: str = "") -> None:
    """Raise :class:`DatasetError` if ``dataset``'s values cannot come from the environment ``cfg``.

    Checked, after the shapes (:func:`check_shapes`) and the dtype kinds (integer for
    ``actions``, ``episode``, ``t``; numeric for the float fields):

    * ``obs``, ``state``, ``reward``, ``next_obs``, ``next_state``, ``rates_mbps`` are finite
      once cast to float32 (the dtype :func:`save` writes; NaN, ±inf and float32 overflow are
      refused);
    * ``rates_mbps`` are not negative; the dataset has at least one row;
    * ``actions`` lie in ``[0, cfg.num_actions)``;
    * with ``cfg.allow_idle``, every row of ``action_mask`` and ``next_action_mask`` has a valid
      action (the idle action always is); without idle an all-False row is the environment's
      AP without any UE (:func:`jaxrrm.env.actions_to_serving` executes any action as silence)
      and is accepted;
    * every action is allowed by its own ``action_mask`` row (rows with no valid action aside);
    * ``t`` lies in ``[0, cfg.horizon)`` and ``episode`` in ``[0, 2**31 - 1]``.

    The rows are processed in chunks of :data:`CHECK_CHUNK_ROWS` on the host with NumPy (one
    chunk of every field at a time: a memory-mapped dataset is never read whole, a device one is
    copied chunk by chunk), vectorized within a chunk.

    Args:
      dataset: :class:`Transitions` with NumPy, memory-mapped or JAX leaves.
      cfg: the configuration the data claim to come from.
      where: prefix of the error message (e.g. the dataset directory).

    Raises:
      DatasetError: the first problem found, naming the field, the first offending index (e.g.
        ``reward[17]``, ``action_mask[3, 1]``) and what is wrong.
    """
    pre = f"{where}: " if where else ""
    if not isinstance(dataset, Transitions):
        raise DatasetError(f"{pre}a Transitions dataset is required, got "
                           f"{type(dataset).__name__}")
    if dataset.size < 1:
        raise DatasetError(f"{pre}the dataset is empty: at least one transition is needed")
    try:
        check_shapes(dataset, cfg)
    except ValueError as e:
        raise DatasetError(f"{pre}{e}") from None
    for name in FIELDS:
        kind = np.dtype(getattr(dataset, name).dtype).kind
        allowed = "iu" if name in _INT_FIELDS else ("fiu" if name in _FINITE_FIELDS else "biu")
        if kind not in allowed:
            need = {"iu": "an integer", "fiu": "a real number", "biu": "a bool"}[allowed]
            raise DatasetError(f"{pre}Transitions.{name} has dtype "
                               f"{np.dtype(getattr(dataset, name).dtype)}; {need} dtype is "
                               "needed")
    n, num_actions, horizon = dataset.size, cfg.num_actions, cfg.horizon

    def fail(name, values, bad, lo, problem):
        """Raise for the first True of the chunk mask ``bad`` (chunk rows start at ``lo``):
        the field, its index in the dataset, its value in ``values`` and ``problem``."""
        local = _first_index(bad)
        where_in = ", ".join(map(str, (local[0] + lo,) + local[1:]))
        shown = "" if values is None else f"= {values[local].item()!r} "
        raise DatasetError(f"{pre}Transitions.{name}[{where_in}] {shown}{problem}")

    for lo in range(0, n, CHECK_CHUNK_ROWS):
        hi = min(n, lo + CHECK_CHUNK_ROWS)
        for name in _FINITE_FIELDS:
            x = _host_chunk(getattr(dataset, name), lo, hi)
            with np.errstate(over="ignore", invalid="ignore"):
                bad = ~np.isfinite(x.astype(np.float32, copy=False))
            if bad.any():
                fail(name, x, bad, lo, "is not finite (as float32)")
            if name == "rates_mbps" and (x < 0).any():
                fail(name, x, x < 0, lo, "is negative (a rate in Mbit/s)")
        acts = _host_chunk(dataset.actions, lo, hi)
        bad = (acts < 0) | (acts >= num_actions)
        if bad.any():
            fail("actions", acts, bad, lo, f"is outside [0, {num_actions}) (num_actions of the "
                 "EnvConfig)")
        masks = {}
        for name in _MASK_FIELDS:
            mask = masks[name] = _host_chunk(getattr(dataset, name), lo, hi).astype(bool,
                                                                                    copy=False)
            if cfg.allow_idle:
                bad = ~mask.any(axis=-1)
                if bad.any():
                    fail(name, None, bad, lo, "has no valid action (all False; with allow_idle "
                         "the idle action is always valid)")
        mask = masks["action_mask"]
        taken = np.take_along_axis(mask, acts[..., None].astype(np.intp), axis=-1)[..., 0]
        bad = ~taken & mask.any(axis=-1)
        if bad.any():
            row = mask[_first_index(bad)]
            fail("actions", acts, bad, lo, "is forbidden by its own action_mask (valid "
                 f"actions: {np.flatnonzero(row).tolist()})")
        ep = _host_chunk(dataset.episode, lo, hi)
        bad = (ep < 0) | (ep > _INT32_MAX)
        if bad.any():
            fail("episode", ep, bad, lo, f"is not an episode id (allowed: [0, {_INT32_MAX}])")
        t = _host_chunk(dataset.t, lo, hi)
        bad = (t < 0) | (t >= horizon)
        if bad.any():
            fail("t", t, bad, lo, f"is outside [0, {horizon}) (the slots of an episode, horizon "
                 "of the EnvConfig)")


def check_shapes(dataset: Transitions, cfg: EnvConfig) -> None:
    """Raise ``ValueError`` naming the field if ``dataset``'s shapes do not fit ``cfg``.

    Only shapes are checked (dtypes are cast where needed by :func:`save`).
    """
    n = dataset.size
    for name, (shape, _) in field_specs(cfg, n).items():
        got = tuple(np.shape(getattr(dataset, name)))
        if got != shape:
            raise ValueError(f"Transitions.{name} has shape {got}; the configuration "
                             f"(num_aps={cfg.num_aps}, num_ues={cfg.num_ues}, num_candidates="
                             f"{cfg.num_candidates}, allow_idle={cfg.allow_idle}) and n={n} "
                             f"need {shape}")


# --------------------------------------------------------------------------------------------
# From rollouts and streams
# --------------------------------------------------------------------------------------------

_TRAJ_KEYS = ("obs", "actions", "rewards", "next_obs", "truncated", "info")


def from_rollout(traj: Mapping[str, Any], cfg: EnvConfig, episode_offset: int = 0) -> Transitions:
    """Flatten a rollout trajectory into transitions, episode-major.

    Args:
      traj: ``rollout(..., return_trajectory=True).trajectory``: a dict of ``[E, T, ...]`` arrays,
        ``obs`` / ``next_obs`` (:class:`jaxrrm.env.Observation`), ``actions`` ``[E, T, I]``,
        ``rewards`` ``[E, T]``, ``truncated`` ``[E, T]`` and ``info`` (``rates_mbps``
        ``[E, T, K]`` Mbit/s is kept). JAX or NumPy arrays.
      cfg: the configuration the rollout ran with (``T`` must equal ``cfg.horizon``).
      episode_offset: added to the episode ids (``episode[e * T + t] = e + episode_offset``).

    Returns:
      :class:`Transitions` with ``n = E * T``: row ``e * T + t`` is slot ``t`` of episode ``e``;
      ``t`` filled, ``terminated`` all False, ``truncated`` as the environment reported it (True
      at ``t = T - 1`` only). NumPy leaves if ``traj`` holds NumPy arrays, else JAX arrays.
    """
    missing = [k for k in _TRAJ_KEYS if k not in traj]
    if missing:
        raise ValueError(f"trajectory is missing {missing}; pass rollout(..., "
                         "return_trajectory=True).trajectory")
    rewards = traj["rewards"]
    if np.ndim(rewards) != 2:
        raise ValueError(f"trajectory rewards must be [E, T]; got shape {np.shape(rewards)}")
    num_ep, horizon = np.shape(rewards)
    if horizon != cfg.horizon:
        raise ValueError(f"trajectory has T={horizon} slots per episode; cfg.horizon="
                         f"{cfg.horizon}")
    xp = np if isinstance(rewards, np.ndarray) else jnp
    n = num_ep * horizon

    def flat(x, dtype):
        x = xp.asarray(x, dtype)
        return x.reshape((n,) + tuple(x.shape[2:]))

    obs, nxt = traj["obs"], traj["next_obs"]
    episode = xp.repeat(xp.arange(num_ep, dtype=np.int32) + np.int32(episode_offset), horizon)
    t = xp.tile(xp.arange(horizon, dtype=np.int32), num_ep)
    return Transitions(
        obs=flat(obs.agents, np.float32), state=flat(obs.global_state, np.float32),
        action_mask=flat(obs.action_mask, bool), actions=flat(traj["actions"], np.int32),
        reward=flat(rewards, np.float32), next_obs=flat(nxt.agents, np.float32),
        next_state=flat(nxt.global_state, np.float32),
        next_action_mask=flat(nxt.action_mask, bool), terminated=xp.zeros((n,), bool),
        truncated=flat(traj["truncated"], bool),
        rates_mbps=flat(traj["info"]["rates_mbps"], np.float32),
        episode=episode.astype(np.int32), t=t.astype(np.int32))


def flatten_stream(steps: Transitions) -> Transitions:
    """Flatten ``[S, E, ...]`` transitions (scan over steps of a vmap over envs) step-major.

    Returns:
      :class:`Transitions` of leading size ``S * E``, row ``s * E + e`` (the stream convention of
      the module docstring). Works on JAX and NumPy leaves.
    """
    return jax.tree.map(lambda x: x.reshape((-1,) + tuple(x.shape[2:])), steps)


def episode_order(dataset: Transitions) -> np.ndarray:
    """The row permutation that regroups a dataset episode by episode, each in slot order.

    Rows of a stream slice interleave the parallel environments step-major (module docstring),
    so consecutive rows are usually *not* consecutive slots of one episode; an episode-based
    library (d3rlpy's ``MDPDataset``, a sequence model, OG-MARL's time-major vaults) that reads
    rows in file order would pair a state with another environment's successor. ``dataset[order]``
    (e.g. ``jax.tree.map(lambda x: x[order], dataset)``) lists each episode's rows contiguously,
    in increasing ``t``, episodes in the order of their first row; within an episode the rows are
    consecutive slots (``t`` increases by one; the first may be ``> 0`` where a slice cut the
    episode, and its last row has ``truncated`` only if the episode ended inside the data).

    Returns:
      ``[n]`` int64 indices (a stable sort: ties keep their order).

    Raises:
      DatasetError: an episode whose slots are not consecutive (a gap or a repeated ``t``).
    """
    ep = np.asarray(dataset.episode, np.int64)
    t = np.asarray(dataset.t, np.int64)
    _, first, inverse = np.unique(ep, return_index=True, return_inverse=True)
    rank = first[inverse.reshape(-1)]            # each row's episode: the row it first appears at
    order = np.lexsort((t, rank))
    ep_s, t_s = ep[order], t[order]
    same = ep_s[1:] == ep_s[:-1]
    bad = np.flatnonzero(same & (t_s[1:] != t_s[:-1] + 1))
    if bad.size:
        i = int(order[bad[0] + 1])
        raise DatasetError(f"episode {int(ep[i])}: slot {int(t[i])} does not follow slot "
                           f"{int(t_s[bad[0]])} (a gap or a repeated slot at row {i})")
    return order


def slice_stream(stream: Transitions, start_fraction: float, size: int,
                 num_envs: int = 1) -> Transitions:
    """A contiguous slice of a behaviour run's transition stream.

    The stream is ``[S steps, E envs]`` flattened step-major (module docstring), so a slice is
    the transitions of a window of the run's training time. The slice starts at step
    ``floor(start_fraction * S)`` (row ``that * E``, a whole step) and holds ``size`` rows
    (transitions, i.e. time steps of one environment each; the last step may be partial if
    ``size`` is not a multiple of ``E``). Episodes may be cut at either end; ``episode`` and
    ``t`` keep the stream's values.

    Args:
      stream: :class:`Transitions` with ``n = S * E`` rows.
      start_fraction: float in ``[0, 1)``, where in the run the slice starts (0 = first step).
      size: number of transitions, ``>= 1``.
      num_envs: ``E``, the parallel environments of the run (1: plain row arithmetic).

    Returns:
      :class:`Transitions` of ``size`` rows (views for NumPy leaves).

    Raises:
      ValueError: ``start_fraction`` outside ``[0, 1]``, ``size < 1``, ``n`` not a multiple of
        ``num_envs``, or the slice running past the end of the stream (the message gives the
        largest ``start_fraction`` that fits).
    """
    n = stream.size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r} is invalid: allowed is an integer >= 1")
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r} is invalid: allowed is an integer >= 1")
    if not (isinstance(start_fraction, (int, float, np.floating, np.integer))
            and 0.0 <= float(start_fraction) <= 1.0):
        raise ValueError(f"start_fraction={start_fraction!r} is invalid: allowed is [0, 1]")
    if n % num_envs:
        raise ValueError(f"stream of {n} transitions is not a whole number of steps of "
                         f"num_envs={num_envs} environments")
    num_steps = n // num_envs
    start = int(math.floor(float(start_fraction) * num_steps + 1e-9)) * num_envs
    if size > n:
        raise ValueError(f"size={size} is larger than the stream ({n} transitions)")
    if start + size > n:
        latest = ((n - size) // num_envs) / num_steps
        raise ValueError(
            f"slice [{start}, {start + size}) runs past the end of a stream of {n} transitions "
            f"(start_fraction={start_fraction}, size={size}); the largest start_fraction for "
            f"this size is {latest:.6g}")
    return jax.tree.map(lambda x: x[start:start + size], stream)


# --------------------------------------------------------------------------------------------
# Behaviour policies and collection
# --------------------------------------------------------------------------------------------


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
    from . import baselines
    return baselines.make(name, cfg)


@functools.partial(jax.jit, static_argnames=("policy", "cfg"))
def _rollout_chunk(keys, policy, params, cfg):
    """Trajectories of one episode per key: dict of ``[C, T, ...]`` arrays."""
    def one(k):
        traj = rollout(k, policy, params, cfg, 1, return_trajectory=True).trajectory
        traj = {k2: traj[k2] for k2 in _TRAJ_KEYS if k2 != "info"} | {
            "info": {"rates_mbps": traj["info"]["rates_mbps"]}}
        return jax.tree.map(lambda x: x[0], traj)
    return jax.vmap(one)(keys)


#: Default upper bound on the transitions rolled out per compiled call of :func:`collect_policy`.
CHUNK_STEPS = 1 << 16


def collect_policy(key, policy: Policy, params: EnvParams, cfg: EnvConfig, num_steps: int,
                   epsilon: float = 0.0, *, episodes_per_chunk: Optional[int] = None,
                   progress: Optional[Callable[[int], None]] = None, mesh=None) -> Transitions:
    """Roll out a finished policy (with optional epsilon-exploration) into a dataset.

    ``E = ceil(num_steps / T)`` whole episodes are run and the result is cut to exactly
    ``num_steps`` transitions, episode-major (:func:`from_rollout` order): **the last episode is
    partial** when ``T`` does not divide ``num_steps`` (its rows keep ``truncated`` False, as the
    environment reported them; its transitions are still exact). Episode ``e`` (id ``e``) runs
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
      mesh: optional :func:`jaxrrm.distributed.make_mesh` mesh: each chunk's episodes are split
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
        from . import distributed
        chunk = distributed.padded_size(chunk, mesh)
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
        traj = jax.device_get(_rollout_chunk(keys, pol, params, cfg) if mesh is None
                              else distributed.rollout_chunk(keys, pol, params, cfg, mesh))
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
    """The caller's part of a dataset's metadata, for :func:`save`.

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
      (:class:`Transitions` with NumPy leaves, :func:`make_meta` dict for :func:`save`).
    """
    check_seed(seed)
    pol = behaviour_policy(behaviour, cfg)
    data = collect_policy(jax.random.key(seed), pol, params, cfg, num_steps, epsilon, **kwargs)
    meta = make_meta(cfg, params, behaviour, {"epsilon": float(epsilon), "num_steps": num_steps,
                                              "source": "collect_policy"}, {"collect": int(seed)})
    return data, meta


# --------------------------------------------------------------------------------------------
# Combining datasets
# --------------------------------------------------------------------------------------------


def _as_numpy(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else np.asarray(jax.device_get(x))


def to_numpy(dataset: Transitions) -> Transitions:
    """``dataset`` with NumPy leaves (copied from the device where needed)."""
    return jax.tree.map(_as_numpy, dataset)


def concatenate(datasets: Sequence[Transitions], renumber_episodes: bool = True) -> Transitions:
    """The rows of several datasets, one after the other, in one dataset (NumPy leaves).

    Args:
      datasets: non-empty sequence of :class:`Transitions` of one configuration (same trailing
        shapes per field).
      renumber_episodes: shift each source's ``episode`` ids so that they stay unique: source
        ``i``'s ids become ``id - min_i + offset_i``, the offsets packing the sources' id ranges
        one after the other from 0 (within a source, ids keep their differences). With False
        the ids are kept as they are (e.g. for adjacent slices of one stream).

    Returns:
      :class:`Transitions` with ``sum(n_i)`` rows.
    """
    if len(datasets) == 0:
        raise ValueError("concatenate needs at least one dataset")
    for name in FIELDS:
        tails = {tuple(np.shape(getattr(d, name))[1:]) for d in datasets}
        if len(tails) > 1:
            raise ValueError(f"datasets disagree on the shape of {name!r}: {sorted(tails)} "
                             "(different configurations?)")
    parts = {name: [_as_numpy(getattr(d, name)) for d in datasets] for name in FIELDS}
    if renumber_episodes:
        offset, eps = 0, []
        for ep in parts["episode"]:
            if ep.size:
                lo, hi = int(ep.min()), int(ep.max())
                eps.append((ep.astype(np.int64) - lo + offset).astype(np.int32))
                offset += hi - lo + 1
            else:
                eps.append(ep.astype(np.int32))
        parts["episode"] = eps
    return Transitions(**{name: np.concatenate(v, axis=0) for name, v in parts.items()})


def mixture_counts(weights: Sequence[float], size: int) -> np.ndarray:
    """Rows per source for a mixture of ``size`` rows in proportions ``weights``.

    Largest-remainder rounding of ``size * w_i / sum(w)``: the counts sum to ``size`` exactly and
    each is within 1 of its exact share (remainder ties go to the lower index).

    Returns:
      ``[len(weights)]`` int64.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights={list(np.atleast_1d(w))} are invalid: allowed are finite, "
                         ">= 0, not all 0")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r} is invalid: allowed is an integer >= 1")
    exact = w / w.sum() * size
    counts = np.floor(exact).astype(np.int64)
    short = int(size - counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def mixture(key, datasets: Sequence[Transitions], weights: Sequence[float],
            size: int) -> Transitions:
    """A dataset of ``size`` rows drawn from several datasets in the given proportions.

    Source ``i`` contributes exactly ``mixture_counts(weights, size)[i] = c_i`` rows. Within a
    source rows are drawn **without replacement** when ``c_i <= n_i`` (a uniformly random subset);
    when ``c_i > n_i`` every row is taken ``c_i // n_i`` times plus a random subset of
    ``c_i % n_i`` rows (as even as possible). Each source's rows keep their original order, and
    the sources follow one another (source 0 first) with episode ids renumbered as
    :func:`concatenate` does. Whole transitions are sampled, so episodes are generally cut.

    Args:
      key: PRNG key (source ``i``'s rows are a ``numpy.random.default_rng`` permutation seeded
        with ``jax.random.bits(key, (len(datasets), 4), uint32)[i]``).
      datasets: the sources (same configuration).
      weights: non-negative proportions, one per source (need not sum to 1).
      size: rows of the mixture, ``>= 1``.

    Returns:
      :class:`Transitions` of ``size`` rows, NumPy leaves.
    """
    if len(datasets) != len(weights):
        raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
    counts = mixture_counts(weights, size)
    # NumPy permutations seeded from the key's bits: no compilation per source size.
    seeds = np.asarray(jax.random.bits(key, (len(datasets), 4), jnp.uint32))
    parts = []
    for d, c, seed in zip(datasets, counts, seeds):
        n = d.size
        if c > 0 and n == 0:
            raise ValueError("a source with positive weight is empty")
        if c == 0:
            idx = np.zeros((0,), np.int64)
        else:
            perm = np.random.default_rng(seed).permutation(n)
            idx = np.concatenate([np.tile(np.arange(n), c // n), perm[: c % n]])
            idx.sort(kind="stable")
        parts.append(jax.tree.map(lambda x: _as_numpy(x)[idx], d))
    return concatenate(parts)


# --------------------------------------------------------------------------------------------
# Sampling and device placement
# --------------------------------------------------------------------------------------------


def to_device(dataset: Transitions, device=None) -> Transitions:
    """Copy a dataset (e.g. the memory maps of :func:`load`) to a device, once.

    Args:
      dataset: :class:`Transitions` with NumPy or JAX leaves.
      device: a ``jax.Device`` or ``jax.sharding.Sharding``; default the default device.

    Returns:
      :class:`Transitions` with ``jax.Array`` leaves (same shapes and dtypes).
    """
    host = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), dataset)
    return jax.device_put(host, device)


def sample(key, dataset: Transitions, batch_size: int) -> Transitions:
    """A minibatch drawn uniformly with replacement from the rows of ``dataset``.

    jit-compatible with ``batch_size`` static (``jax.jit(sample, static_argnames="batch_size")``,
    or call it inside a jitted update); ``n`` is the (static) leading size of the leaves. Put
    the dataset on the device first (:func:`to_device`): NumPy leaves passed into a jitted call
    are copied to the device on every call.

    Args:
      key: PRNG key.
      dataset: :class:`Transitions` with ``n >= 1`` rows.
      batch_size: rows to draw (static int >= 1).

    Returns:
      :class:`Transitions` with ``batch_size`` rows (JAX arrays); row ``b`` is dataset row
      ``randint(key, [batch_size], 0, n)[b]``.
    """
    n = dataset.size
    if n < 1:
        raise ValueError("cannot sample from an empty dataset")
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], dataset)


# --------------------------------------------------------------------------------------------
# Metadata helpers and fingerprints
# --------------------------------------------------------------------------------------------


def config_to_json(cfg: EnvConfig) -> Dict[str, Any]:
    """``dataclasses.asdict(cfg)`` in JSON form (tuples as lists)."""
    if isinstance(cfg, Mapping):  # already serialized (e.g. a loaded meta)
        cfg = config_from_json(cfg)
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_json(d: Mapping[str, Any]) -> EnvConfig:
    """Inverse of :func:`config_to_json` (validated by :class:`EnvConfig`).

    Raises:
      ValueError: unknown fields or invalid values.
    """
    names = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown EnvConfig field(s) {sorted(unknown)}")
    kw = dict(d)
    if kw.get("ap_positions_m") is not None:
        kw["ap_positions_m"] = tuple(tuple(p) for p in kw["ap_positions_m"])
    return EnvConfig(**kw)


def params_to_json(params: EnvParams) -> Dict[str, Any]:
    """Every :class:`EnvParams` field as a float (scalar) or a (nested) list of floats."""
    if isinstance(params, Mapping):
        params = params_from_json(params)
    out = {}
    for f in dataclasses.fields(EnvParams):
        v = np.asarray(jax.device_get(getattr(params, f.name)), np.float64)
        out[f.name] = float(v) if v.ndim == 0 else v.tolist()
    return out


def _is_number(v) -> bool:
    """A real number that is not a bool (Python or NumPy scalar)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool,
                                                                                      np.bool_))


def _numeric_tree(v) -> bool:
    """``v`` is a number or a (nested) list / tuple of numbers; bools and strings are not."""
    if isinstance(v, (list, tuple)):
        return all(_numeric_tree(x) for x in v)
    return _is_number(v)


def params_from_json(d: Mapping[str, Any]) -> EnvParams:
    """Inverse of :func:`params_to_json` (validated by :class:`EnvParams`).

    Every value must be a number, a (nested) list of numbers or a numeric array; missing fields
    take :class:`EnvParams`'s defaults.

    Raises:
      ValueError: ``d`` not a mapping, unknown fields, a bool, string, ``None`` or other
        non-numeric value (``"30"`` and ``True`` are refused, not converted), a ragged list, or
        a value out of its range (:meth:`EnvParams.validate`).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"EnvParams JSON must be an object of fields, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(EnvParams)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown EnvParams field(s) {sorted(map(str, unknown))}")
    kw = {}
    for k, v in d.items():
        if _is_number(v):
            kw[k] = float(v)
            continue
        ok = _numeric_tree(v) if isinstance(v, (list, tuple)) else (
            isinstance(v, (np.ndarray, jax.Array)) and np.dtype(v.dtype).kind in "iuf")
        if not ok:
            raise ValueError(f"EnvParams.{k}={v!r} is invalid: allowed are numbers or (nested) "
                             "lists of numbers (no bools, strings or nulls)")
        kw[k] = np.asarray(v, np.float32)
    return EnvParams(**kw)


def config_from_meta(meta: Mapping[str, Any]) -> EnvConfig:
    """The :class:`EnvConfig` a dataset was made with (from :func:`load`'s meta)."""
    return config_from_json(meta["env_config"])


def params_from_meta(meta: Mapping[str, Any]) -> EnvParams:
    """The :class:`EnvParams` a dataset was made with (from :func:`load`'s meta)."""
    return params_from_json(meta["env_params"])


class _HashWriter:
    """A write-only file object that hashes what passes through (and writes it on, if given)."""

    def __init__(self, fh=None):
        self.fh, self.sha, self.nbytes = fh, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.nbytes += len(b)
        if self.fh is not None:
            self.fh.write(b)
        return len(b)


def _canonical(x, dtype) -> np.ndarray:
    return np.ascontiguousarray(_as_numpy(x), dtype=dtype)


def array_sha256(x, dtype=None) -> str:
    """SHA-256 (hex) of the ``.npy`` serialization of ``x`` (as :func:`save` writes it)."""
    x = _canonical(x, dtype)
    w = _HashWriter()
    np.lib.format.write_array(w, x, allow_pickle=False)
    return w.sha.hexdigest()


def _fingerprint_from(checksums: Mapping[str, str], env_config: Mapping[str, Any]) -> str:
    payload = {"schema_version": SCHEMA_VERSION, "env_config": env_config,
               "arrays": {name: checksums[name] for name in FIELDS}}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def fingerprint(dataset_or_meta, cfg: Optional[EnvConfig] = None) -> str:
    """A SHA-256 (hex) identifying a dataset's content and configuration, for checkpoints.

    It hashes the per-field array checksums (SHA-256 of each field's ``.npy`` serialization, the
    ``sha256`` entries of ``meta.json``) together with the ``EnvConfig`` and the schema version.
    The fingerprint of a :func:`load`-ed dataset's meta equals that of the in-memory dataset that
    was saved (computed with the same NumPy ``.npy`` writer, version 1.0 headers).

    Args:
      dataset_or_meta: a meta dict (as :func:`save` returns / :func:`load` gives; cheap, uses the
        stored checksums) or a :class:`Transitions` (hashes every array; needs ``cfg``).
      cfg: the :class:`EnvConfig` of an in-memory dataset.

    Returns:
      64 hex characters.
    """
    if isinstance(dataset_or_meta, Transitions):
        if cfg is None:
            raise ValueError("fingerprint of an in-memory dataset needs its EnvConfig (cfg=...)")
        specs = field_specs(cfg, dataset_or_meta.size)
        sums = {name: array_sha256(getattr(dataset_or_meta, name), specs[name][1])
                for name in FIELDS}
        return _fingerprint_from(sums, config_to_json(cfg))
    meta = dataset_or_meta
    try:
        sums = {name: meta["fields"][name]["sha256"] for name in FIELDS}
        env_config = meta["env_config"]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{META_FILE}: metadata lacks {e} needed for the fingerprint") from e
    return _fingerprint_from(sums, env_config)


# --------------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------------


def is_dataset_dir(path) -> bool:
    """Whether ``path`` is a dataset directory this project wrote: a directory whose
    ``meta.json`` is a JSON object with an integer ``schema_version`` and either a
    ``meta_sha256`` that verifies (schema 2 on) or, for schema 1, a ``fingerprint`` and
    ``fields``. A directory that merely holds some file named ``meta.json`` is not one (it is
    never replaced by ``save(..., overwrite=True)``)."""
    path = Path(path)
    mpath = path / META_FILE
    if path.is_symlink() or not path.is_dir() or not mpath.is_file():
        return False
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(meta, dict) or isinstance(meta.get("schema_version"), bool) \
            or not isinstance(meta.get("schema_version"), int):
        return False
    if META_SHA_KEY in meta:
        return meta[META_SHA_KEY] == meta_sha256(meta)
    return meta["schema_version"] == 1 and "fingerprint" in meta and "fields" in meta


def _looks_like_dataset_or_empty(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (not any(path.iterdir())
                                                         or is_dataset_dir(path))


_RESERVED = ("schema_version", "jaxrrm_version", "created_utc", "n", "fields", "fingerprint",
             "meta_sha256")

#: Name of the ``meta.json`` entry that holds the SHA-256 of the file's own content.
META_SHA_KEY = "meta_sha256"


def meta_sha256(meta: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a dataset's metadata, the value of its ``meta_sha256`` entry.

    It hashes the canonical JSON of every entry but ``meta_sha256`` itself:
    ``json.dumps(meta_without_it, sort_keys=True, separators=(",", ":"))`` (ASCII), so it does
    not depend on the file's indentation or key order, only on the entries' values.
    """
    body = {k: v for k, v in meta.items() if k != META_SHA_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def _is_sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_env_config_json(d, label: str) -> EnvConfig:
    """The :class:`EnvConfig` of a stored ``env_config``; every field present, of its JSON type.

    Types: the integer fields JSON integers, the flags ``true`` / ``false``, the names strings,
    ``ap_positions_m`` ``null`` or a list of ``[x, y]`` numbers; then the values are validated by
    :class:`EnvConfig`. Raises :class:`DatasetError` (``label``: the file) naming the entry.
    """
    if not isinstance(d, dict):
        raise DatasetError(f"{label}: entry 'env_config' is not an object")
    for f in dataclasses.fields(EnvConfig):
        if f.name not in d:
            raise DatasetError(f"{label}: entry 'env_config' lacks {f.name!r}")
        v, default = d[f.name], f.default
        if f.name == "ap_positions_m":
            ok = v is None or (isinstance(v, list) and all(
                isinstance(q, list) and len(q) == 2 and all(_is_number(c) for c in q) for q in v))
            allowed = "null or a list of [x, y] numbers"
        elif isinstance(default, bool):
            ok, allowed = isinstance(v, bool), "true or false"
        elif isinstance(default, int):
            ok, allowed = _is_int(v), "an integer"
        elif isinstance(default, str):
            ok, allowed = isinstance(v, str), "a string"
        else:  # pragma: no cover - a new EnvConfig field of another type
            ok, allowed = True, ""
        if not ok:
            raise DatasetError(f"{label}: entry 'env_config.{f.name}' = {v!r} has the wrong "
                               f"type: allowed is {allowed}")
    try:
        return config_from_json(d)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{label}: entry 'env_config' is invalid ({e})") from e


def _check_env_params_json(d, label: str) -> EnvParams:
    """The :class:`EnvParams` of a stored ``env_params``: every field present, numbers (or lists
    of numbers) in range (:func:`params_from_json`). Raises :class:`DatasetError` naming it."""
    if not isinstance(d, dict):
        raise DatasetError(f"{label}: entry 'env_params' is not an object")
    missing = [f.name for f in dataclasses.fields(EnvParams) if f.name not in d]
    if missing:
        raise DatasetError(f"{label}: entry 'env_params' lacks {missing}")
    try:
        return params_from_json(d)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{label}: entry 'env_params' is invalid ({e})") from e


#: Top-level entries of ``meta.json`` that :func:`load` requires, with their JSON types.
_META_TYPES = {"schema_version": (int, "an integer"), "jaxrrm_version": (str, "a string"),
               "created_utc": (str, "a string"), "n": (int, "an integer"),
               "fields": (dict, "an object"), "env_config": (dict, "an object"),
               "env_params": (dict, "an object"), "behaviour": (str, "a string"),
               "behaviour_config": (dict, "an object"), "seeds": (dict, "an object"),
               "fingerprint": (str, "a string"), META_SHA_KEY: (str, "a string")}


def _check_field_entries(meta: Mapping[str, Any], cfg: EnvConfig, label: str
                         ) -> Dict[str, Dict[str, Any]]:
    """The ``fields`` entries, each checked for type and against the config's shapes/dtypes."""
    n = meta["n"]
    fields = meta["fields"]
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DatasetError(f"{label}: entry 'fields' has unknown fields {unknown}")
    specs = field_specs(cfg, n)
    for name in FIELDS:
        entry = fields.get(name)
        if not isinstance(entry, dict) or not {"file", "shape", "dtype", "sha256",
                                               "bytes"} <= set(entry):
            raise DatasetError(f"{label}: no complete entry for the field {name!r} (an object "
                               "with file, shape, dtype, sha256, bytes)")
        key = f"fields.{name}"
        if entry["file"] != f"{name}.npy":
            raise DatasetError(f"{label}: entry '{key}.file' = {entry['file']!r}; the field "
                               f"{name!r} is stored in {name + '.npy'!r} (entries exchanged?)")
        shape, dtype = specs[name]
        got_shape = entry["shape"]
        if not (isinstance(got_shape, list) and all(_is_int(d) for d in got_shape)):
            raise DatasetError(f"{label}: entry '{key}.shape' = {got_shape!r} is not a list of "
                               "integers")
        try:
            got_dtype = np.dtype(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        except TypeError:
            got_dtype = None
        if got_dtype is None:
            raise DatasetError(f"{label}: entry '{key}.dtype' = {entry['dtype']!r} is not a "
                               "NumPy dtype string")
        if tuple(got_shape) != shape or got_dtype != dtype:
            raise DatasetError(f"{label}: field {name!r} is recorded as {got_shape} "
                               f"{entry['dtype']}, but n={n} and the EnvConfig need "
                               f"{list(shape)} {dtype.str}")
        if not _is_sha256(entry["sha256"]):
            raise DatasetError(f"{label}: entry '{key}.sha256' = {entry['sha256']!r} is not a "
                               "SHA-256 (64 lowercase hex digits)")
        if not _is_int(entry["bytes"]) or entry["bytes"] < 0:
            raise DatasetError(f"{label}: entry '{key}.bytes' = {entry['bytes']!r} is not a "
                               "non-negative integer")
    return {name: fields[name] for name in FIELDS}


def save(path, dataset: Transitions, meta: Mapping[str, Any], overwrite: bool = False
         ) -> Dict[str, Any]:
    """Write a dataset directory atomically.

    Layout: ``path/<field>.npy`` for every field of :class:`Transitions` (NumPy ``.npy``, no
    pickles, dtypes of :func:`field_specs`) and ``path/meta.json``. Before anything is written
    the shapes (:func:`check_shapes`) and the content (:func:`check_content`) are checked. The
    files are written into
    a temporary sibling directory ``.<name>.tmp-<pid>-<random>``, each fsynced, ``meta.json``
    last; then the directory is renamed to ``path`` (and the parent fsynced). A write that fails
    removes the temporary directory; a process killed mid-write leaves at most that hidden
    temporary directory, which has no ``meta.json`` until it is complete, and never anything at
    ``path``. With ``overwrite=True`` an existing dataset (or empty directory) at ``path`` is
    replaced only after the new one is complete.

    Args:
      path: the dataset directory to create (its parent is created if needed).
      dataset: :class:`Transitions` (NumPy or JAX leaves) whose shapes fit the configuration.
      meta: :func:`make_meta`'s dict (``env_config``, ``env_params``, ``behaviour`` required;
        ``behaviour_config``, ``seeds`` and any JSON-able extras kept). ``env_config`` /
        ``env_params`` may be :class:`EnvConfig` / :class:`EnvParams` objects or their JSON
        dicts. The keys ``schema_version, jaxrrm_version, created_utc, n, fields, fingerprint,
        meta_sha256`` are (re)computed here.
      overwrite: replace an existing dataset at ``path``.

    Returns:
      The complete metadata written to ``meta.json`` (what :func:`load` returns): the caller's
      entries plus ``schema_version``, ``jaxrrm_version``, ``created_utc`` (UTC ISO 8601),
      ``n``, ``fields`` (``{field: {file, shape, dtype, sha256, bytes}}``), ``fingerprint`` and
      ``meta_sha256`` (:func:`meta_sha256` of all the others).

    Raises:
      DatasetExistsError: ``path`` exists and ``overwrite`` is False, or it exists and is not a
        dataset directory (never replaced).
      ValueError: missing meta entries, invalid ``env_config`` / ``env_params``, or shapes that
        do not fit ``meta["env_config"]``.
      DatasetError: content that :func:`check_content` refuses (NaN or infinite values, actions
        out of range or forbidden by their mask, ...); nothing is written.
    """
    from . import __version__

    path = Path(path)
    for key in ("env_config", "env_params", "behaviour"):
        if key not in meta:
            raise ValueError(f"meta lacks {key!r} (build it with data.make_meta)")
    cfg = config_from_json(meta["env_config"]) if isinstance(meta["env_config"], Mapping) \
        else meta["env_config"]
    check_shapes(dataset, cfg)
    dataset = to_numpy(dataset)  # one device-to-host copy, for the checks and the files
    check_content(dataset, cfg, where=f"{path} (not written)")

    def refuse_existing():
        if os.path.lexists(path):
            if not overwrite:
                raise DatasetExistsError(f"{path}: already exists; pass overwrite=True to "
                                         "replace it")
            if not _looks_like_dataset_or_empty(path):
                raise DatasetExistsError(f"{path}: exists and is not a dataset directory "
                                         f"written by jaxrrm (no valid {META_FILE}); refusing to "
                                         "replace it")

    refuse_existing()
    n = dataset.size
    specs = field_specs(cfg, n)
    full = {k: v for k, v in meta.items() if k not in _RESERVED}
    full.update(env_config=config_to_json(cfg), env_params=params_to_json(meta["env_params"]),
                behaviour=str(meta["behaviour"]),
                behaviour_config=dict(meta.get("behaviour_config") or {}),
                seeds=dict(meta.get("seeds") or {}))
    # Strict JSON (NaN / inf as null, jaxrrm.files.to_json); fails early, before any file, on
    # entries that are not JSON-able.
    full = files.to_json(full)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fields = {}
        for name in FIELDS:
            arr = _canonical(getattr(dataset, name), specs[name][1])
            fname = f"{name}.npy"
            with open(tmp / fname, "wb") as fh:
                w = _HashWriter(fh)
                np.save(w, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            fields[name] = {"file": fname, "shape": list(arr.shape), "dtype": arr.dtype.str,
                            "sha256": w.sha.hexdigest(), "bytes": w.nbytes}
        full.update(
            schema_version=SCHEMA_VERSION, jaxrrm_version=__version__,
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            n=n, fields=fields)
        full["fingerprint"] = fingerprint(full)
        full = json.loads(json.dumps(full))  # the JSON form load sees (lists, string keys)
        full[META_SHA_KEY] = meta_sha256(full)
        files.write_json(tmp / META_FILE, full, indent=1, sort_keys=True)  # fsynced
        files.fsync_dir(tmp)
        refuse_existing()
        files.replace_dir(tmp, path)  # overwrite: the old one is moved aside only now
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(json.dumps(full))


def _read_header(path: Path):
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        return shape, fortran, dtype, fh.tell()


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name} (strict JSON has no NaN / Infinity)")


def read_meta(path) -> Dict[str, Any]:
    """The parsed ``meta.json`` of the dataset directory ``path`` (no other check).

    Raises:
      DatasetError: missing directory or ``meta.json``, or a ``meta.json`` that is not a JSON
        object (or has an object with a duplicate key, which JSON parsers resolve differently).
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset directory")
    mpath = path / META_FILE
    if not mpath.is_file():
        raise DatasetError(f"{mpath}: missing (an incomplete or interrupted write?)")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"),
                          object_pairs_hook=files.no_duplicate_keys,
                          parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, OSError, RecursionError) as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{mpath}: not a JSON object")
    return meta


def load(path, expected_cfg: Optional[EnvConfig] = None, verify: bool = True,
         mmap: bool = True) -> Tuple[Transitions, Dict[str, Any]]:
    """Read and check a dataset directory written by :func:`save`.

    Checks, in order:

    1. ``meta.json``: present, JSON (no duplicate keys), ``schema_version == SCHEMA_VERSION``;
       with ``verify``, its ``meta_sha256`` against the SHA-256 of its own content
       (:func:`meta_sha256`: an edited or corrupted ``meta.json`` is refused);
    2. the type of every entry :func:`load` and the consumers of the metadata use (``n``,
       ``fields``, ``env_config``, ``env_params``, ``behaviour``, ``behaviour_config``,
       ``seeds``, ``fingerprint``, ...): every field of ``env_config`` and ``env_params``
       present, of its JSON type and valid (:class:`EnvConfig` / :class:`EnvParams` ranges);
    3. the ``EnvConfig`` against ``expected_cfg`` if given;
    4. every ``fields`` entry: stored in ``<field>.npy`` (entries exchanged between fields are
       refused), shape and dtype those of ``n`` and the config, a SHA-256 string, a byte count;
    5. with ``verify``, the stored ``fingerprint`` against the one recomputed from the stored
       checksums and ``env_config`` (:func:`fingerprint`);
    6. every field's file: present, a ``.npy`` whose header's shape and dtype match ``meta.json``
       and whose size matches the header and the recorded ``bytes`` (a truncated file is caught
       even with ``verify=False``); with ``verify``, its SHA-256 against ``meta.json`` (reads
       every byte);
    7. with ``verify``, the content (:func:`check_content`: finite values, actions in range and
       allowed by their masks, slot and episode indices), chunk by chunk.

    ``verify=False`` is the fast path: it skips the checksums (``meta_sha256``, fingerprint,
    array SHA-256) and the content checks, and keeps the structural ones (1-4, 6 without the
    SHA-256), which read only ``meta.json`` and the ``.npy`` headers.

    Args:
      path: dataset directory.
      expected_cfg: the :class:`EnvConfig` (or its :func:`config_to_json` dict) the caller (e.g.
        a trainer) works with; a dataset made for another configuration is refused, naming the
        differing fields.
      verify: check the checksums and the content (see above).
      mmap: memory-map arrays of at least :data:`MMAP_MIN_BYTES` (read-only,
        ``np.load(mmap_mode="r")``); smaller ones, or all with ``mmap=False``, are read into
        memory.

    Returns:
      (:class:`Transitions` with NumPy leaves — memory maps where mapped; move them with
      :func:`to_device` or ``jax.device_put`` —, the metadata dict as written by :func:`save`;
      :func:`config_from_meta` / :func:`params_from_meta` give its configuration).

    Raises:
      DatasetError: anything wrong, with the file (``meta.json`` and the entry, or the field's
        ``.npy``) and the problem in the message.
    """
    path = Path(path)
    meta = read_meta(path)
    mpath = path / META_FILE
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise DatasetError(f"{mpath}: schema_version {version!r} is not supported (this jaxrrm "
                           f"reads schema_version {SCHEMA_VERSION})")
    if verify:
        stored = meta.get(META_SHA_KEY)
        actual = meta_sha256(meta)
        if stored != actual:
            raise DatasetError(f"{mpath}: {META_SHA_KEY} mismatch (meta.json edited or corrupt): "
                               f"its content hashes to {actual}, recorded {stored!r}")
    for key, (typ, allowed) in _META_TYPES.items():
        if key not in meta:
            raise DatasetError(f"{mpath}: lacks the entry {key!r}")
        v = meta[key]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            if key == "n":
                raise DatasetError(f"{mpath}: n={v!r} is not a positive integer")
            raise DatasetError(f"{mpath}: entry {key!r} = {v!r} has the wrong type: allowed is "
                               f"{allowed}")
    n = meta["n"]
    if n < 1:
        raise DatasetError(f"{mpath}: n={n!r}: a dataset holds at least one transition")
    cfg = _check_env_config_json(meta["env_config"], str(mpath))
    stored_params = _check_env_params_json(meta["env_params"], str(mpath))
    try:   # one parameter set that fits the configuration and its geometry
        stored_params.check_shapes(cfg)
        check_feasible(stored_params, cfg)
    except ValueError as e:
        raise DatasetError(f"{mpath}: entry 'env_params' does not fit 'env_config' ({e})") \
            from None
    if expected_cfg is not None:
        if isinstance(expected_cfg, Mapping):
            expected_cfg = config_from_json(expected_cfg)
        diffs = [f"{f.name} (dataset {getattr(cfg, f.name)!r}, expected "
                 f"{getattr(expected_cfg, f.name)!r})" for f in dataclasses.fields(EnvConfig)
                 if getattr(cfg, f.name) != getattr(expected_cfg, f.name)]
        if diffs:
            raise DatasetError(f"{mpath}: dataset was made for another EnvConfig; differing "
                               f"fields: {', '.join(diffs)}")
    fields = _check_field_entries(meta, cfg, str(mpath))
    if verify:
        recomputed = fingerprint(meta)
        if recomputed != meta["fingerprint"]:
            raise DatasetError(f"{mpath}: entry 'fingerprint' = {meta['fingerprint']!r} does not "
                               f"match the stored checksums and env_config ({recomputed})")
    specs = field_specs(cfg, n)
    arrays = {}
    for name in FIELDS:
        entry = fields[name]
        shape, dtype = specs[name]
        fpath = path / entry["file"]
        if not fpath.is_file():
            raise DatasetError(f"{fpath}: missing (field {name!r})")
        try:
            fshape, fortran, fdtype, offset = _read_header(fpath)
        except Exception as e:  # numpy raises ValueError / EOFError / SyntaxError variants
            raise DatasetError(f"{fpath}: not a readable .npy file ({e})") from e
        if tuple(fshape) != shape or fdtype != dtype or fortran:
            raise DatasetError(f"{fpath}: holds {tuple(fshape)} {fdtype.str}"
                               f"{' (Fortran order)' if fortran else ''}; meta.json says "
                               f"{tuple(shape)} {dtype.str}")
        want_size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        got_size = fpath.stat().st_size
        if got_size != want_size:
            kind = "truncated" if got_size < want_size else "has trailing bytes"
            raise DatasetError(f"{fpath}: {kind}: {got_size} bytes, expected {want_size}")
        if entry["bytes"] != got_size:
            raise DatasetError(f"{mpath}: entry 'fields.{name}.bytes' = {entry['bytes']} but "
                               f"{fpath.name} has {got_size} bytes")
        if verify:
            digest = files.sha256_file(fpath)
            if digest != entry["sha256"]:
                raise DatasetError(f"{fpath}: SHA-256 mismatch (corrupt file): {digest} != "
                                   f"{entry['sha256']} recorded in {META_FILE}")
        nbytes = want_size - offset
        try:
            arrays[name] = np.load(fpath, mmap_mode="r" if mmap and nbytes >= MMAP_MIN_BYTES
                                   else None, allow_pickle=False)
        except Exception as e:
            raise DatasetError(f"{fpath}: cannot be read ({e})") from e
    dataset = Transitions(**arrays)
    if verify:
        check_content(dataset, cfg, where=str(path))
    return dataset, meta
