"""The in-memory dataset format, its checks, and its conversion from rollouts and streams.

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

:func:`field_specs` gives these shapes and dtypes for a configuration, :func:`check_shapes` and
:func:`check_content` check a dataset against them and against the values the environment can
produce (finite floats, actions in range and allowed by their masks, every AP with a valid
action, slot and episode indices).

Two row orders come from rollouts (docs/design.md §4):

* **episode-major**, :func:`from_rollout`: row ``e * T + t`` is slot ``t`` of episode ``e``
  (the trajectories of :func:`jaxrrm.env.rollout`);
* the **stream convention**: a behaviour run with ``E`` parallel environments that ran ``S``
  steps emits a :class:`Transitions` of leading size ``S * E``, flattened *step-major* (row
  ``s * E + e`` is environment ``e`` at step ``s``, i.e. the ``[S, E, ...]`` arrays of a
  ``lax.scan`` over steps of a ``vmap`` over environments, reshaped with
  :func:`flatten_stream`), with ``episode`` ids unique per (environment, episode) over the whole
  run and ``next_obs`` of an episode's last slot its own final observation (``info["final_obs"]``
  of :func:`jaxrrm.env.step_auto_reset`). :func:`slice_stream` cuts a dataset out of it;
  :func:`episode_order` regroups any dataset episode by episode.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..config import EnvConfig, is_int, require
from ..env import Observation


class DatasetError(Exception):
    """A dataset is missing, incomplete, corrupt, of another schema or of another config, or
    holds values the environment cannot produce (:func:`check_content`).

    The message names the file (or directory) and the entry, or the field and index, and what is
    wrong with it.
    """



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
      once cast to float32 (the dtype :func:`~jaxrrm.data.storage.save` writes; NaN, ±inf and
      float32 overflow are refused);
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

    Only shapes are checked (dtypes are cast where needed by :func:`~jaxrrm.data.storage.save`).
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

TRAJ_KEYS = ("obs", "actions", "rewards", "next_obs", "truncated", "info")


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
    missing = [k for k in TRAJ_KEYS if k not in traj]
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



def last_transitions(dataset: Transitions, n: int) -> Transitions:
    """The last ``n`` transitions (rows) of ``dataset``, as views of its arrays.

    For a dataset sliced from an online learner's training stream (:func:`slice_stream` of the
    run's last transitions), the last ``n`` rows are the last ``n`` transitions that learner
    generated, i.e. the dataset of size ``n`` the same training run would have given: the
    smaller datasets of a study of the dataset size can be taken from the largest one (nested,
    each the best-trained part of the larger ones).

    Raises:
      ValueError: ``n`` is not an integer in ``[1, dataset.size]``.
    """
    require(is_int(n) and 1 <= n <= dataset.size, "n", f"an integer in [1, {dataset.size}]", n)
    return jax.tree.map(lambda x: x[x.shape[0] - int(n):], dataset)
