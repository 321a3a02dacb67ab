"""``E`` parallel episodes of the environment stepped together: the online learners' data source.

:class:`Runner` holds them; :func:`runner_init` resets them, :func:`runner_step` steps all of
them with :func:`jaxrrm.env.step_auto_reset`. Every step emits the full
:class:`jaxrrm.data.Transitions` (``next_obs`` = ``info["final_obs"]``, so the last slot of an
episode bootstraps from its own episode) with episode ids ``env_index + E * episode_counter``,
unique per episode of the run; :func:`flatten_time_env` orders a chunk's ``[T, E]`` transitions
step-major.

Shapes: ``E`` parallel environments, ``I`` APs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from .. import env as envlib
from ..config import EnvConfig, EnvParams
from ..data import from_step


@struct.dataclass
class Runner:
    """``E`` environments stepped in lockstep (every leaf has a leading axis ``E``).

    Attributes:
      obs: :class:`jaxrrm.env.Observation` of the current slot.
      state: :class:`jaxrrm.env.EnvState`.
      episode: ``[E]`` int32, id of the running episode, ``env_index + E * count``.
      t: ``[E]`` int32, slot within the episode.
      ep_return: ``[E]`` float32, team return of the running episode so far.
    """

    obs: Any
    state: Any
    episode: jax.Array
    t: jax.Array
    ep_return: jax.Array


def runner_init(key, num_envs: int, params: EnvParams, cfg: EnvConfig) -> Runner:
    """Reset ``num_envs`` episodes; episode ids ``0..E-1``."""
    obs, state = jax.vmap(lambda k: envlib.reset(k, params, cfg))(jax.random.split(key, num_envs))
    return Runner(obs=obs, state=state, episode=jnp.arange(num_envs, dtype=jnp.int32),
                  t=jnp.zeros((num_envs,), jnp.int32),
                  ep_return=jnp.zeros((num_envs,), jnp.float32))


def runner_step(key, runner: Runner, actions, params: EnvParams, cfg: EnvConfig):
    """Step every environment (auto-reset) with ``actions`` ``[E, I]``.

    Returns:
      (new :class:`Runner`, :class:`jaxrrm.data.Transitions` with leading axis ``E``,
      ``[E]`` float32 return of the episodes that ended on this step (0 elsewhere),
      ``[E]`` bool ``done``).
    """
    num_envs = runner.episode.shape[0]
    keys = jax.random.split(key, num_envs)
    obs2, state2, reward, term, trunc, info = jax.vmap(
        lambda k, s, a: envlib.step_auto_reset(k, s, a, params, cfg))(keys, runner.state, actions)
    tr = from_step(runner.obs, actions, reward, info["final_obs"], term, trunc, info,
                   runner.episode, runner.t)
    done = term | trunc
    ret = runner.ep_return + reward
    new = Runner(obs=obs2, state=state2,
                 episode=jnp.where(done, runner.episode + num_envs, runner.episode),
                 t=jnp.where(done, 0, runner.t + 1),
                 ep_return=jnp.where(done, 0.0, ret))
    return new, tr, jnp.where(done, ret, 0.0), done


def flatten_time_env(tree):
    """``[T, E, ...] -> [T * E, ...]`` (step-major: all envs of step 0, then of step 1, ...)."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)
