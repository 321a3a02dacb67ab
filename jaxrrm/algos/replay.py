"""The on-device replay buffer of the online learners (:mod:`.dqn`, :mod:`.sac`).

* :class:`Replay`: a fixed-size circular buffer of a pytree of records (a pytree itself, so it
  lives in the jitted training state and in its checkpoints) with :func:`replay_init`,
  :func:`replay_add`, :func:`replay_sample`.
* :class:`ReplayItem`: the slim per-transition record the learners store (observations, masks,
  joint action, team reward, next observations, termination): what a TD update needs and no more.

Shapes: ``I`` APs, ``D`` observation length, ``A`` actions per AP.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ..config import is_int, require
from ..data import Transitions


@struct.dataclass
class ReplayItem:
    """What the learners store per joint transition (leading axes: batch).

    Attributes:
      obs: ``[I, D]`` float32.  action_mask: ``[I, A]`` bool.  actions: ``[I]`` int32.
      reward: ``[]`` float32 (team reward).  next_obs: ``[I, D]``.  next_action_mask: ``[I, A]``.
      terminated: ``[]`` bool (only true terminations stop bootstrapping; truncations do not).
    """

    obs: jax.Array
    action_mask: jax.Array
    actions: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    next_action_mask: jax.Array
    terminated: jax.Array

    @classmethod
    def from_transitions(cls, tr: Transitions) -> "ReplayItem":
        return cls(obs=tr.obs, action_mask=tr.action_mask, actions=tr.actions, reward=tr.reward,
                   next_obs=tr.next_obs, next_action_mask=tr.next_action_mask,
                   terminated=tr.terminated)

    @classmethod
    def example(cls, obs, num_aps: int) -> "ReplayItem":
        """A zero record shaped by one observation ``obs`` (:class:`jaxrrm.env.Observation`
        without batch axes): the template of :func:`replay_init`."""
        return cls(obs=obs.agents, action_mask=obs.action_mask,
                   actions=jnp.zeros((num_aps,), jnp.int32), reward=jnp.zeros((), jnp.float32),
                   next_obs=obs.agents, next_action_mask=obs.action_mask,
                   terminated=jnp.zeros((), bool))


@struct.dataclass
class Replay:
    """Fixed-size circular buffer of a pytree of records.

    Attributes:
      data: the records, every leaf ``[capacity, ...]``.
      ptr: ``[]`` int32, the slot the next record is written to.
      size: ``[]`` int32, number of valid records (``min(total written, capacity)``).
    """

    data: Any
    ptr: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return int(jax.tree.leaves(self.data)[0].shape[0])


def replay_init(example, capacity: int) -> Replay:
    """An empty buffer for records shaped like ``example`` (a single record, no batch axis)."""
    require(is_int(capacity) and capacity >= 1, "capacity", "an integer >= 1", capacity)
    data = jax.tree.map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
                        example)
    return Replay(data=data, ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def replay_add(buf: Replay, batch) -> Replay:
    """Write a batch of ``n <= capacity`` records (leading axis ``n``) at ``ptr``, wrapping around.

    The oldest records are overwritten first; record ``k`` of the batch lands in slot
    ``(ptr + k) % capacity``.
    """
    cap = buf.capacity
    n = int(jax.tree.leaves(batch)[0].shape[0])
    if n > cap:
        raise ValueError(f"batch of {n} records does not fit a replay buffer of capacity {cap}")
    idx = (buf.ptr + jnp.arange(n, dtype=jnp.int32)) % cap
    data = jax.tree.map(lambda d, b: d.at[idx].set(b.astype(d.dtype)), buf.data, batch)
    return Replay(data=data, ptr=(buf.ptr + n) % cap,
                  size=jnp.minimum(buf.size + n, cap).astype(jnp.int32))


def replay_sample(key, buf: Replay, batch_size: int):
    """``batch_size`` records drawn uniformly with replacement from the valid part of ``buf``."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    return jax.tree.map(lambda d: d[idx], buf.data)
