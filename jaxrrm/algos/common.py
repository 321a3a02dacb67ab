"""Pieces shared by the online behaviour learners (:mod:`.dqn`, :mod:`.sac`).

* :class:`NetConfig`: width, depth, activation and parameter sharing of the per-agent networks.
* :class:`Replay`: an on-device circular replay buffer (a pytree, so it lives in the jitted
  training state) with :func:`replay_init`, :func:`replay_add`, :func:`replay_sample`.
* :class:`ReplayItem`: the slim per-transition record the learners store (observations, masks,
  joint action, team reward, next observations, termination): what a TD update needs and no more.
* :class:`Runner`: ``E`` parallel episodes of the environment stepped together with
  :func:`jaxrrm.env.step_auto_reset`; :func:`runner_init`, :func:`runner_step`. Every step emits
  the full :class:`jaxrrm.data.Transitions` (``next_obs`` = ``info["final_obs"]``, so the last
  slot of an episode bootstraps from its own episode) with episode ids
  ``env_index + E * episode_counter``, unique per episode of the run.
* Evaluation of network parameters is :func:`jaxrrm.evaluate.rollout_seeds` of the learner's
  policy (a :func:`jaxrrm.env.policy_with_params` pytree, so the parameters are traced and a
  learning curve compiles once).

Shapes: ``E`` parallel environments, ``I`` APs, ``D = 2N`` observation length, ``A`` actions per AP,
``K`` UEs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from .. import env as envlib
from ..config import EnvConfig, EnvParams, is_int, is_num, require  # noqa: F401
from ..data import Transitions, from_step
from ..networks import ACTIVATIONS, AgentNet


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite during training (offline :func:`jaxrrm.train.train`, or
    online :func:`fit`); raised by :func:`nonfinite_loss_error`'s callers.

    Attributes:
      chunk: index of the chunk where it happened (0-based).
      update: global index of the first bad update (0-based, over the whole run); online
        (:func:`fit`, whose chunks report means) the chunk's first update.
      seed: index of the first seed (in the vmapped batch) that went bad (0 online).
      losses: ``{metric_name: value}`` of the non-finite metrics of that update (online: of the
        chunk's means).
      state: the last good training state (before the bad chunk; all seeds).
      history: the history up to the last good chunk.
    """

    def __init__(self, message, *, chunk, update, seed, losses, state, history):
        super().__init__(message)
        self.chunk, self.update, self.seed = chunk, update, seed
        self.losses, self.state, self.history = losses, state, history


def nonfinite_loss_error(losses: dict, *, chunk: int, update: int, where: str, seed: int,
                         done: int, state, history) -> NonFiniteLossError:
    """The :class:`NonFiniteLossError` of a bad chunk, with the one message every trainer
    uses: ``non-finite loss in chunk {chunk}, {where}, seed {seed}: name=value, ...; training
    stopped, the last good state (after {done} updates) is kept in err.state``.

    Args:
      losses: ``{name: value}`` of the non-finite metrics.
      chunk: the bad chunk's index.  update: the error's ``update`` attribute.
      where: where in the chunk, e.g. ``"update 12 (update 2 of the chunk)"``.
      seed: the bad seed.  done: updates done by the last good state.
      state, history: the last good state and the history up to it.
    """
    msg = (f"non-finite loss in chunk {chunk}, {where}, seed {seed}: "
           + ", ".join(f"{k}={v}" for k, v in losses.items())
           + f"; training stopped, the last good state (after {done} updates) is kept in "
           "err.state")
    return NonFiniteLossError(msg, chunk=chunk, update=update, seed=seed, losses=losses,
                              state=state, history=history)




@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Per-agent network settings (see :class:`jaxrrm.networks.AgentNet`).

    Attributes:
      hidden: hidden layer widths, e.g. ``(256, 256)`` (depth = length, each >= 1).
      activation: one of :data:`jaxrrm.networks.ACTIVATIONS`.
      layer_norm: LayerNorm after each hidden layer.
      shared: ``True``: one network for all APs (with ``agent_id``); ``False``: separate
        parameters per AP; ``None`` (default): the learner's natural choice, filled in by the
        learner's config (:meth:`resolve`): separate per-AP parameters for the offline learners
        (:class:`~jaxrrm.algos.cql.CQLConfig` in every paradigm, the paper's per-AP networks,
        and :class:`~jaxrrm.algos.bc.BCConfig`), one shared network for the online behaviour
        learners (:class:`~jaxrrm.algos.dqn.DQNConfig`, :class:`~jaxrrm.algos.sac.SACConfig`,
        as :data:`BEHAVIOUR_NET`). An explicit choice is kept, and one the paradigm cannot
        honour is a ``ValueError`` (``shared=True`` with ``paradigm="independent"``).
      agent_id: append a one-hot AP index to the input of the shared network.
    """

    hidden: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    shared: Optional[bool] = None
    agent_id: bool = True

    def __post_init__(self):
        hidden = tuple(self.hidden) if isinstance(self.hidden, (list, tuple)) else self.hidden
        require(isinstance(hidden, tuple) and all(is_int(h) and h >= 1 for h in hidden),
                "hidden", "a tuple of integers >= 1", self.hidden)
        object.__setattr__(self, "hidden", hidden)
        require(self.activation in ACTIVATIONS, "activation", f"one of {tuple(ACTIVATIONS)}",
                self.activation)
        for name in ("layer_norm", "agent_id"):
            require(isinstance(getattr(self, name), bool), name, "True or False",
                    getattr(self, name))
        require(self.shared is None or isinstance(self.shared, bool), "shared",
                "True, False or None (the learner's natural choice)", self.shared)

    def resolve(self, shared: bool) -> "NetConfig":
        """This config with ``shared`` filled in where it is ``None`` (an explicit choice is
        kept); what the learners' configs do with their natural choice."""
        return self if self.shared is not None else dataclasses.replace(self, shared=shared)

    def agent_net(self, cfg: EnvConfig, out_scale: float = 1.0) -> AgentNet:
        """The :class:`AgentNet` for environment ``cfg`` (``shared`` must be resolved)."""
        if self.shared is None:
            raise ValueError("NetConfig.shared is None: the learner's config chooses it "
                             "(NetConfig.resolve); pass shared=True or False to build a "
                             "network directly")
        return AgentNet.for_env(cfg, hidden=self.hidden, activation=self.activation,
                                layer_norm=self.layer_norm, shared=self.shared,
                                agent_id=self.agent_id, out_scale=out_scale)


#: Default network of the online behaviour learners: two hidden layers of 128 (ReLU), shared across
#: APs with a one-hot AP id. On the default scenario it reached the same scores as (256, 256) in
#: our (short) comparison runs, at ~3x less compute per update, which matters on CPU.
BEHAVIOUR_NET = NetConfig(hidden=(128, 128), shared=True)

#: ``NetConfig.shared=None`` of the online behaviour learners resolves to this: one network shared
#: across APs (with a one-hot AP id), as :data:`BEHAVIOUR_NET`.
ONLINE_SHARED = True


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
        """Joint transitions generated per ``train_chunk`` call, ``num_envs * steps_per_chunk``."""
        return self.num_envs * self.steps_per_chunk


# --------------------------------------------------------------------------------------------
# Replay buffer
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Parallel environments
# --------------------------------------------------------------------------------------------

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


def random_valid_actions(key, mask):
    """Uniform random valid action per row of ``mask`` ``[..., A]`` -> ``[...]`` int32."""
    logits = jnp.where(mask, 0.0, -1e9)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def gradient_step(loss_fn: Callable, params, opt_state, tx, *args, has_aux: bool = True):
    """One optimizer step on ``loss_fn(params, *args)`` (as ``flax.training.TrainState
    .apply_gradients``: ``value_and_grad``, ``tx.update``, ``optax.apply_updates``).

    Args:
      loss_fn: ``loss_fn(params, *args) -> loss`` (scalar) or, with ``has_aux``,
        ``(loss, aux)``; differentiated with respect to its first argument.
      params: the pytree being optimized.  opt_state: ``tx``'s state for it.
      tx: an ``optax.GradientTransformation``.
      *args: the loss's other arguments (no gradient is taken with respect to them).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      ``(new_params, new_opt_state, loss, aux, grads)``: ``aux`` is ``None`` without
      ``has_aux``; ``grads`` (shaped like ``params``) for diagnostics such as gradient norms.
    """
    out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, *args)
    loss, aux = out if has_aux else (out, None)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux, grads


def polyak(target, online, tau: float):
    """``(1 - tau) * target + tau * online`` leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


# --------------------------------------------------------------------------------------------
# Evaluation of parameters (traced: one compilation for a whole learning curve)
# --------------------------------------------------------------------------------------------

def linear_schedule(start: float, end: float, steps) -> Callable:
    """``f(n) = start + (end - start) * min(n / steps, 1)`` (``steps`` >= 1)."""
    def f(n):
        frac = jnp.minimum(jnp.asarray(n, jnp.float32) / float(max(steps, 1)), 1.0)
        return start + (end - start) * frac
    return f


# --------------------------------------------------------------------------------------------
# Host loop
# --------------------------------------------------------------------------------------------

#: Chunk metrics of the online trainers that are NaN by design (``episode_return`` of a chunk
#: in which no episode ended); :func:`fit` checks every other one.
MAY_BE_NAN = frozenset({"episode_return"})

def fit(trainer, key, num_chunks: int, eval_keys=None, eval_every: int = 0,
        log: Optional[Callable[[dict], None]] = None,
        on_chunk: Optional[Callable[[int, Any, dict, Any], None]] = None):
    """Run ``num_chunks`` chunks of ``trainer`` (a DQN or SAC ``Trainer``) from ``init(key)``.

    Args:
      trainer: from ``dqn.make_train`` / ``sac.make_train``.
      key: PRNG key of the run.
      num_chunks: chunks to run (each ``steps_per_chunk * num_envs`` transitions).
      eval_keys: optional ``[S]`` keys: evaluate the greedy policy on them (``trainer.evaluate``)
        every ``eval_every`` chunks (0: only after the last) and add ``eval_sum_rate``,
        ``eval_p5_rate``, ``eval_score`` (means over seeds) and ``eval_return`` to the metrics.
      log: called with each chunk's metrics dict (host floats).
      on_chunk: called as ``on_chunk(chunk_index, state, metrics, transitions)`` after each chunk
        (e.g. to stream the transitions to a dataset).

    Returns:
      (final state, list of per-chunk metric dicts with ``chunk`` and ``wall_s`` added).

    Raises:
      NonFiniteLossError: a chunk's metrics (losses, Q-values, ...; every metric but those in
        :data:`MAY_BE_NAN`) are NaN/inf: training stops before that chunk's ``on_chunk`` and
        ``log``, ``err.state`` is the state after the last good chunk, ``err.history`` the
        metrics up to it (the same error, and message, as :func:`jaxrrm.train.train`'s).
    """
    import math
    import time

    import numpy as np

    from ..evaluate import seed_metrics

    t0 = time.perf_counter()
    ts = trainer.init(key)
    history = []
    for c in range(num_chunks):
        new_ts, m, trs = trainer.train_chunk(ts)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        bad = {k: v for k, v in m.items() if k not in MAY_BE_NAN and not math.isfinite(v)}
        if bad:
            first = int(jax.device_get(getattr(ts, "updates", 0)))
            last = int(m.get("updates", first + 1)) - 1
            raise nonfinite_loss_error(
                bad, chunk=c, update=first, seed=0, done=first, state=ts, history=history,
                where=f"updates {first}..{last} (the chunk's means)")
        ts = new_ts
        last = c == num_chunks - 1
        if eval_keys is not None and (last or (eval_every and (c + 1) % eval_every == 0)):
            rates, ret = trainer.evaluate(eval_keys, ts.params)
            sm = seed_metrics(rates, trainer.env_params.score_mu)
            m.update(eval_sum_rate=float(np.mean(sm["sum_rate"])),
                     eval_p5_rate=float(np.mean(sm["p5_rate"])),
                     eval_score=float(np.mean(sm["score"])), eval_return=float(np.mean(ret)))
        m.update(chunk=c, wall_s=time.perf_counter() - t0)
        if on_chunk is not None:
            on_chunk(c, ts, m, trs)
        history.append(m)
        if log is not None:
            log(m)
    return ts, history
