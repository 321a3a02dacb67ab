"""Offline training: chunks of scanned minibatch updates, vmapped over seeds (docs/design.md §4).

The update loop is compiled once per (learner config, train config, dataset shape, number of
seeds) as :attr:`Trainer.run_chunk`: a ``jit`` of a ``vmap`` over seeds of a ``lax.scan`` over
``chunk_size`` minibatch updates. Each update splits the seed's key, draws a minibatch from the
on-device dataset with :func:`jaxrrm.data.sample` and applies the learner's ``update``
(:func:`jaxrrm.algos.cql.make_learner` or :func:`jaxrrm.algos.bc.make_learner`).

Between chunks the host loop (:func:`train` / :meth:`Trainer.train`; it is
:func:`jaxrrm.loop.run_chunks`, the loop the online trainer :mod:`jaxrrm.train_online` runs too)

* checks the chunk's non-finite flag (computed inside the compiled chunk from every update's
  metrics) and, if any loss became NaN/inf, stops with :class:`NonFiniteLossError` naming the
  chunk, the update, the seed and the offending losses; the error carries the last good state
  (the state *before* the bad chunk) as ``err.state``;
* reports progress through an optional ``callback(chunk_index, mean_metrics)``;
* every ``eval_every_chunks`` chunks (and after the last one) evaluates each seed's greedy policy
  with :func:`jaxrrm.evaluate.rollout_seeds` on held-out evaluation keys (fresh environment
  episodes derived from a salted key, never the training dataset); the same evaluation keys are
  used at every evaluation point, so learning curves compare like with like.

* with ``checkpoint_dir`` set, every ``checkpoint_every_chunks`` chunks (and after the last
  one) saves the full :class:`TrainState` (params, targets, optimizer states, step, RNG keys),
  the history so far, the configurations, the environment parameters, the training/evaluation
  keys and the dataset fingerprint (:func:`jaxrrm.data.fingerprint`) with
  :mod:`jaxrrm.checkpoint` (orbax, atomic, SHA-256 checked, the ``checkpoint_keep`` most recent
  kept). A later call with the same ``checkpoint_dir`` resumes from the latest checkpoint that
  verifies, after checking that the configurations, environment parameters, keys and dataset
  fingerprint match (:class:`jaxrrm.checkpoint.CheckpointError` naming the differing fields
  otherwise) and that the stored history agrees with the step, and its final state and history
  are bitwise equal (on CPU) to those of a run that was never interrupted. On
  :class:`NonFiniteLossError` the last good state is checkpointed (if it was not already) and
  stays on disk.

With ``progress=True`` the host loop shows a tqdm progress bar over the chunks with the latest
chunk's mean losses and Q-values (``critic_loss``, ``cql_penalty``/``bc_loss``, ``q``) and, after
an evaluation, the mean held-out score.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import checkpoint as ckpt_lib
from . import data as data_lib
from . import distributed
from . import evaluate, loop
from .algos import bc, cql
from .config import EnvConfig, EnvParams, is_int, require
from .loop import NonFiniteLossError, TrainResult  # noqa: F401 (jaxrrm.train's)

#: Salt folded into the training key to derive the held-out evaluation keys.
EVAL_SALT = 0x5EED_E7A1

LearnerConfig = Union[cql.CQLConfig, bc.BCConfig]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop (frozen, hashable; validated on construction).

    Attributes:
      num_updates: gradient updates per seed (>= 1; a multiple of ``chunk_size``).
      batch_size: minibatch rows per update (>= 1).
      chunk_size: updates per compiled chunk (>= 1): the host reports, checks for non-finite
        losses and evaluates between chunks.
      num_seeds: independent training seeds, run as one ``vmap`` (>= 1).
      eval_every_chunks: evaluate every this many chunks (>= 1; the last chunk is always
        evaluated); 0 evaluates only at the end.
      eval_episodes: episodes per seed of each evaluation (>= 1).
    """

    num_updates: int = 10_000
    batch_size: int = 256
    chunk_size: int = 500
    num_seeds: int = 1
    eval_every_chunks: int = 4
    eval_episodes: int = 16

    def __post_init__(self):
        for name in ("num_updates", "batch_size", "chunk_size", "num_seeds", "eval_episodes"):
            v = getattr(self, name)
            require(is_int(v) and v >= 1, name, "an integer >= 1", v)
        require(is_int(self.eval_every_chunks) and self.eval_every_chunks >= 0,
                "eval_every_chunks", "an integer >= 0 (0 = only at the end)",
                self.eval_every_chunks)
        require(self.num_updates % self.chunk_size == 0, "num_updates",
                f"a multiple of chunk_size={self.chunk_size}", self.num_updates)

    @property
    def num_chunks(self) -> int:
        return self.num_updates // self.chunk_size

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


@struct.dataclass
class TrainState:
    """The training state of ``S`` seeds: ``learner`` (a CQLState/BCState with a leading seed
    axis on every leaf, ``learner.step`` ``[S]``) and ``key`` ``[S]`` (each seed's RNG)."""

    learner: Any
    key: jax.Array


class Trainer(NamedTuple):
    """What :func:`make_train` returns, and the online :func:`jaxrrm.train_online.make_train`
    (the same fields; the online ones are described there).

    Attributes:
      init: ``init(keys [S]) -> TrainState`` (vmapped over the seed keys).
      chunk_fn: the un-jitted chunk ``(state, dataset) -> (state, metrics)``.
      run_chunk: ``jax.jit(chunk_fn)``; ``metrics`` are ``{name: [S, chunk_size]}`` per update,
        plus ``"nonfinite"`` ``[S, chunk_size]`` bool (any metric of that update NaN/inf).
      evaluate: ``evaluate(learner_state, keys [S]) -> per-seed metrics dict`` (greedy).
      evaluate_rates: ``evaluate_rates(learner_state, keys [S], num_episodes) -> (ue_rates
        [S, E, K] float32 Mbit/s, mean episode return [S] float32)``: the raw per-UE average
        rates and the mean return of each seed's greedy policy (``E = num_episodes`` episodes per seed).
      train: ``train(key, dataset, callback=None, eval_keys=None, checkpoint_dir=None,
        checkpoint_every_chunks=1, checkpoint_keep=3, progress=False, progress_desc=...,
        on_state=None) -> TrainResult``.
      learner: the learner (``init``, ``update``, ``policy``, ...).
      env_cfg, env_params, learner_cfg, train_cfg: the configurations.
    """

    init: Callable
    chunk_fn: Callable
    run_chunk: Callable
    evaluate: Callable
    evaluate_rates: Callable
    train: Callable
    learner: Any
    env_cfg: EnvConfig
    env_params: EnvParams
    learner_cfg: Any
    train_cfg: TrainConfig


def make_learner(env_cfg: EnvConfig, learner_cfg: LearnerConfig):
    """The learner of ``learner_cfg`` (CQL in any paradigm/backbone, or BC)."""
    if isinstance(learner_cfg, cql.CQLConfig):
        return cql.make_learner(env_cfg, learner_cfg)
    if isinstance(learner_cfg, bc.BCConfig):
        return bc.make_learner(env_cfg, learner_cfg)
    raise TypeError(f"learner_cfg must be a CQLConfig or BCConfig, got {type(learner_cfg)}")


@functools.lru_cache(maxsize=None)
def _compiled(env_cfg: EnvConfig, learner_cfg: LearnerConfig, batch_size: int, chunk_size: int):
    """The configuration-only pieces, cached so that trainers that differ only in
    ``num_updates``, ``num_seeds`` or the evaluation settings share compilations."""
    learner = make_learner(env_cfg, learner_cfg)

    def init(keys) -> TrainState:
        def one(key):
            k_init, k_run = jax.random.split(key)
            return learner.init(k_init), k_run

        ls, k = jax.vmap(one)(keys)
        return TrainState(learner=ls, key=k)

    def one_seed(ls, key, dataset):
        def body(carry, _):
            ls, key = carry
            key, k_sample, k_update = jax.random.split(key, 3)
            batch = data_lib.sample(k_sample, dataset, batch_size)
            ls, m = learner.update(ls, batch, k_update)
            m = {name: jnp.asarray(v, jnp.float32) for name, v in m.items()}
            m["nonfinite"] = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                                                 for v in m.values()]))
            return (ls, key), m

        (ls, key), metrics = jax.lax.scan(body, (ls, key), None, length=chunk_size)
        return ls, key, metrics

    def chunk_fn(state: TrainState, dataset):
        ls, key, metrics = jax.vmap(one_seed, in_axes=(0, 0, None))(
            state.learner, state.key, dataset)
        return TrainState(learner=ls, key=key), metrics

    run_chunk = jax.jit(chunk_fn)

    @functools.partial(jax.jit, static_argnames=("num_episodes",))
    def eval_rates(ls, keys, env_params, num_episodes):
        # each seed's greedy policy on its own key
        return evaluate.rollout_per_seed(keys, learner.policy(ls.params, greedy=True),
                                         env_params, env_cfg, num_episodes)

    return learner, jax.jit(init), chunk_fn, run_chunk, eval_rates


def eval_keys_for(key, num_seeds: int):
    """Held-out evaluation keys ``[S]`` derived from the training key (salted fold-in)."""
    base = jax.random.fold_in(key, EVAL_SALT)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(num_seeds))


def make_train(env_cfg: EnvConfig, env_params: EnvParams, learner_cfg: LearnerConfig,
               train_cfg: TrainConfig, mesh=None) -> Trainer:
    """Build the trainer (see the module docstring and :class:`Trainer`).

    With ``mesh`` (:func:`jaxrrm.distributed.make_mesh`), the seeds are split over its devices
    (and hosts): the state stays on its devices, metrics and evaluations are gathered, the
    dataset is replicated once (:func:`jaxrrm.distributed.shard_trainer`); the mesh's device
    count must divide ``num_seeds``.
    """
    if not isinstance(train_cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a TrainConfig, got {type(train_cfg)}")
    learner, init, chunk_fn, run_chunk, eval_rates = _compiled(
        env_cfg, learner_cfg, train_cfg.batch_size, train_cfg.chunk_size)

    def evaluate_rates(learner_state, keys, num_episodes: int):
        require(is_int(num_episodes) and num_episodes >= 1, "num_episodes", "an integer >= 1",
                num_episodes)
        return eval_rates(learner_state, keys, env_params, int(num_episodes))

    sharded = None  # set below when a mesh is given

    def evaluate_seeds(learner_state, keys) -> Dict[str, np.ndarray]:
        if sharded is not None:
            return sharded.evaluate(learner_state, keys)
        rates, ret = eval_rates(learner_state, keys, env_params, train_cfg.eval_episodes)
        out = evaluate.seed_metrics(rates, env_params.score_mu)
        out["return"] = np.asarray(ret, np.float64)
        return out

    def train_(key, dataset, callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
               eval_keys=None, checkpoint_dir=None, checkpoint_every_chunks: int = 1,
               checkpoint_keep: int = 3, progress: bool = False,
               progress_desc: str = "training",
               on_state: Optional[Callable[[int, "TrainState"], None]] = None) -> TrainResult:
        """Run ``train_cfg.num_chunks`` chunks from ``key`` on ``dataset``.

        Args:
          key: PRNG key; seed ``s`` trains from ``fold_in(key, s)``.
          dataset: :class:`jaxrrm.data.Transitions` (moved to the device once here).
          callback: optional ``callback(chunk_index, metrics)`` after every chunk, with the
            mean over seeds and updates of every metric, ``"updates"`` (done so far) and, on
            evaluation chunks, ``"eval_<metric>"`` means over seeds.
          eval_keys: ``[S]`` evaluation keys (default :func:`eval_keys_for` ``(key, S)``).
          checkpoint_dir: optional directory of :mod:`jaxrrm.checkpoint` checkpoints: if it
            holds one, training resumes from the newest step that verifies (checksums; damaged
            newer steps are skipped with a warning); the same configurations, environment
            parameters, keys and dataset are required, and the stored history must agree with
            the step (``step // chunk_size`` chunks); checkpoints are written there while
            training. ``None``: no checkpoints.
          checkpoint_every_chunks: save every this many chunks (>= 1); the last chunk is always
            saved.
          checkpoint_keep: how many of the most recent checkpoints to keep (>= 1).
          progress: show a tqdm progress bar over the chunks (losses, Q-values, eval score).
          progress_desc: the bar's label.
          on_state: optional ``on_state(updates_done, state)`` after every chunk (after
            ``callback``), with the :class:`TrainState` of all seeds: the one way to evaluate a
            learner at intermediate budgets, e.g. on the test episodes with
            ``trainer.evaluate_rates(state.learner, test_keys, num_episodes)`` (the learners'
            policies are :func:`jaxrrm.env.policy_with_params` pytrees: one compilation serves
            every budget).

        Raises:
          NonFiniteLossError: a loss became non-finite; ``err.state`` is the last good state
            (also checkpointed when ``checkpoint_dir`` is set).
          jaxrrm.checkpoint.CheckpointError: the checkpoint in ``checkpoint_dir`` was written by
            another configuration, environment parameters, key or dataset (or checkpoint
            format), does not fit this trainer's state, has a history that disagrees with its
            step, or no step of it verifies (:class:`jaxrrm.checkpoint.CorruptCheckpointError`).
        """
        if checkpoint_dir is not None:   # every argument checked before any work
            loop.check_checkpoint_args(checkpoint_dir, checkpoint_every_chunks, checkpoint_keep)
        data_lib.check_shapes(dataset, env_cfg)
        data_lib.check_content(dataset, env_cfg, "the training dataset")  # no NaN, valid actions
        fingerprint = (None if checkpoint_dir is None
                       else data_lib.fingerprint(dataset, env_cfg))
        dataset = (data_lib.to_device(dataset) if sharded is None
                   else distributed.put_replicated(dataset, mesh))
        init_fn = init if sharded is None else sharded.init
        chunk = run_chunk if sharded is None else sharded.run_chunk
        s = train_cfg.num_seeds
        seed_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(s))
        if eval_keys is None:
            eval_keys = eval_keys_for(key, s)
        plan = None
        if checkpoint_dir is not None:
            meta = ckpt_lib.make_meta(
                env_cfg, learner_cfg, train_cfg, fingerprint, env_params=env_params,
                train_key=ckpt_lib.key_to_json(key), eval_keys=ckpt_lib.key_to_json(eval_keys))
            plan = loop.CheckpointPlan(checkpoint_dir, checkpoint_every_chunks,
                                       checkpoint_keep, meta)
        cs = train_cfg.chunk_size

        def describe(c, seed, unit, state, metrics):
            g = c * cs + unit
            return g, f"update {g} (update {unit} of the chunk)", c * cs

        out = loop.run_chunks(
            init_fn(seed_keys), lambda st: (*chunk(st, dataset), None),
            num_chunks=train_cfg.num_chunks, chunk_steps=cs, step_name="updates", num_seeds=s,
            describe=describe, evaluate=lambda st: evaluate_seeds(st.learner, eval_keys),
            eval_every=train_cfg.eval_every_chunks, callback=callback,
            on_state=on_state, checkpoint=plan, progress=progress, progress_desc=progress_desc,
            state_step=lambda st: getattr(st.learner, "step", None),
            gather=None if sharded is None else distributed.gather,
            place=None if sharded is None else (
                lambda st: distributed.put_batch(st, mesh, "num_seeds")))
        return TrainResult(state=out.state, history=out.history, final=out.final)

    trainer = Trainer(init=init, chunk_fn=chunk_fn, run_chunk=run_chunk, evaluate=evaluate_seeds,
                      evaluate_rates=evaluate_rates, train=train_, learner=learner,
                      env_cfg=env_cfg, env_params=env_params, learner_cfg=learner_cfg,
                      train_cfg=train_cfg)
    if mesh is not None:
        sharded = distributed.shard_trainer(trainer, mesh)
        trainer = trainer._replace(init=sharded.init, run_chunk=sharded.run_chunk,
                                   evaluate_rates=sharded.evaluate_rates)
    return trainer


def seed_state(state: TrainState, seed: int) -> TrainState:
    """Seed ``seed``'s slice of a vmapped :class:`TrainState` (leading axis dropped)."""
    return jax.tree.map(lambda x: x[seed], state)


def train(key, dataset, env_cfg: EnvConfig, env_params: EnvParams, learner_cfg: LearnerConfig,
          train_cfg: TrainConfig, callback=None, eval_keys=None, checkpoint_dir=None,
          checkpoint_every_chunks: int = 1, checkpoint_keep: int = 3,
          progress: bool = False, progress_desc: str = "training",
          on_state=None) -> TrainResult:
    """``make_train(env_cfg, env_params, learner_cfg, train_cfg).train(key, dataset, ...)``."""
    return make_train(env_cfg, env_params, learner_cfg, train_cfg).train(
        key, dataset, callback=callback, eval_keys=eval_keys, checkpoint_dir=checkpoint_dir,
        checkpoint_every_chunks=checkpoint_every_chunks, checkpoint_keep=checkpoint_keep,
        progress=progress, progress_desc=progress_desc, on_state=on_state)
