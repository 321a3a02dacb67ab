"""Offline training: chunks of scanned minibatch updates, vmapped over seeds (docs/design.md §4).

The update loop is compiled once per (learner config, train config, dataset shape, number of
seeds) as :attr:`Trainer.run_chunk`: a ``jit`` of a ``vmap`` over seeds of a ``lax.scan`` over
``chunk_size`` minibatch updates. Each update splits the seed's key, draws a minibatch from the
on-device dataset with :func:`jaxrrm.data.sample` and applies the learner's ``update``
(:func:`jaxrrm.algos.cql.make_learner` or :func:`jaxrrm.algos.bc.make_learner`).

Between chunks the host loop (:func:`train` / :meth:`Trainer.train`)

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
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import checkpoint as ckpt_lib
from . import data as data_lib
from . import distributed
from . import evaluate
from .algos import bc, cql
from .algos.common import (NonFiniteLossError, is_int,  # noqa: F401 (jaxrrm.train's)
                           nonfinite_loss_error, require)
from .config import EnvConfig, EnvParams

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


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
      state: the final :class:`TrainState` (all seeds).
      history: ``{"updates": [C], "metrics": {name: [C, S]} chunk means per seed,
        "eval_updates": [V], "eval": {metric: [V, S]}}`` (NumPy), learning curves.
      final: ``{"sum_rate", "p5_rate", "score", "return"} -> [S]`` per-seed metrics of the
        greedy policies after the last chunk (held-out evaluation keys).
    """

    state: TrainState
    history: Dict[str, Any]
    final: Dict[str, np.ndarray]


class Trainer(NamedTuple):
    """What :func:`make_train` returns.

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
            require(is_int(checkpoint_every_chunks) and checkpoint_every_chunks >= 1,
                    "checkpoint_every_chunks", "an integer >= 1", checkpoint_every_chunks)
            require(is_int(checkpoint_keep) and checkpoint_keep >= 1, "checkpoint_keep",
                    "an integer >= 1", checkpoint_keep)
            probe = os.path.abspath(os.fspath(checkpoint_dir))
            while not os.path.lexists(probe):
                probe = os.path.dirname(probe)
            if not os.path.isdir(probe):
                raise ckpt_lib.CheckpointError(
                    f"checkpoint_dir {checkpoint_dir}: {probe} exists and is not a directory")
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
        state = init_fn(seed_keys)
        hist_updates: List[int] = []
        hist_metrics: Dict[str, List[np.ndarray]] = {}
        eval_updates: List[int] = []
        eval_hist: Dict[str, List[np.ndarray]] = {}
        start, final, saved_step, meta = 0, None, None, None
        if checkpoint_dir is not None:
            meta = ckpt_lib.make_meta(
                env_cfg, learner_cfg, train_cfg, fingerprint, env_params=env_params,
                train_key=ckpt_lib.key_to_json(key), eval_keys=ckpt_lib.key_to_json(eval_keys))
            if ckpt_lib.latest_step(checkpoint_dir) is not None:
                state, saved_step, stored = ckpt_lib.restore(
                    checkpoint_dir, state if sharded is None else distributed.gather(state), meta)
                start, h_metrics, h_eval = _resumed_history(
                    stored, saved_step, state, train_cfg, f"{checkpoint_dir} (step {saved_step})")
                if sharded is not None:
                    state = distributed.put_batch(state, mesh, "num_seeds")
                hist_updates[:] = stored["history"]["updates"]
                hist_metrics.update(h_metrics)
                eval_updates[:] = stored["history"]["eval_updates"]
                eval_hist.update(h_eval)
                if eval_hist:
                    final = {k: v[-1] for k, v in eval_hist.items()}

        def history():
            return {"updates": np.asarray(hist_updates, np.int64),
                    "metrics": {k: np.stack(v) for k, v in hist_metrics.items()},
                    "eval_updates": np.asarray(eval_updates, np.int64),
                    "eval": {k: np.stack(v) for k, v in eval_hist.items()}}

        def save_checkpoint(st, chunks_done):
            nonlocal saved_step
            step = chunks_done * train_cfg.chunk_size
            if saved_step == step:
                return
            hist = {"chunks": chunks_done, "updates": list(hist_updates),
                    "metrics": {k: [x.tolist() for x in v] for k, v in hist_metrics.items()},
                    "eval_updates": list(eval_updates),
                    "eval": {k: [x.tolist() for x in v] for k, v in eval_hist.items()},
                    "dtypes": {"metrics": {k: str(v[0].dtype) for k, v in hist_metrics.items()},
                               "eval": {k: str(v[0].dtype) for k, v in eval_hist.items()}}}
            if sharded is not None:
                st = distributed.gather(st)  # whole on every process; orbax writes it once
            ckpt_lib.save(checkpoint_dir, step, st, {**meta, "history": hist},
                          keep=checkpoint_keep)
            saved_step = step

        bar = _progress_bar(progress, progress_desc, train_cfg.num_chunks, start)
        try:
            for c in range(start, train_cfg.num_chunks):
                new_state, metrics = chunk(state, dataset)
                metrics = jax.device_get(metrics)
                bad = np.asarray(metrics.pop("nonfinite"))          # [S, chunk]
                if bad.any():
                    seed_i, upd_i = np.unravel_index(_first_bad(bad), bad.shape)
                    losses = {k: float(v[seed_i, upd_i]) for k, v in metrics.items()
                              if not np.isfinite(v[seed_i, upd_i])}
                    g = c * train_cfg.chunk_size + int(upd_i)
                    if checkpoint_dir is not None:
                        save_checkpoint(state, c)
                    raise nonfinite_loss_error(
                        losses, chunk=c, update=g, seed=int(seed_i),
                        done=c * train_cfg.chunk_size, state=state, history=history(),
                        where=f"update {g} (update {int(upd_i)} of the chunk)")
                state = new_state
                done = (c + 1) * train_cfg.chunk_size
                hist_updates.append(done)
                for k, v in metrics.items():
                    hist_metrics.setdefault(k, []).append(np.mean(v, axis=1))
                report = {k: float(np.mean(v)) for k, v in metrics.items()}
                report["updates"] = done
                last = c + 1 == train_cfg.num_chunks
                every = train_cfg.eval_every_chunks
                if last or (every and (c + 1) % every == 0):
                    ev = evaluate_seeds(state.learner, eval_keys)
                    eval_updates.append(done)
                    for k, v in ev.items():
                        eval_hist.setdefault(k, []).append(v)
                        report[f"eval_{k}"] = float(np.mean(v))
                    final = ev
                if checkpoint_dir is not None and (
                        last or (c + 1) % checkpoint_every_chunks == 0):
                    save_checkpoint(state, c + 1)
                bar.update(1)
                bar.set_postfix_str(_postfix(report), refresh=False)
                if callback is not None:
                    callback(c, report)
                if on_state is not None:
                    on_state(done, state)
        finally:
            bar.close()
        return TrainResult(state=state, history=history(), final=final)

    trainer = Trainer(init=init, chunk_fn=chunk_fn, run_chunk=run_chunk, evaluate=evaluate_seeds,
                      evaluate_rates=evaluate_rates, train=train_, learner=learner,
                      env_cfg=env_cfg, env_params=env_params, learner_cfg=learner_cfg,
                      train_cfg=train_cfg)
    if mesh is not None:
        sharded = distributed.shard_trainer(trainer, mesh)
        trainer = trainer._replace(init=sharded.init, run_chunk=sharded.run_chunk,
                                   evaluate_rates=sharded.evaluate_rates)
    return trainer


def _resumed_history(stored, step: int, state, train_cfg: TrainConfig, where: str):
    """``(chunks, metrics, eval)`` of a restored checkpoint's history (``metrics``/``eval``:
    ``{name: [per-chunk arrays]}``), after checking that it agrees with the step: ``chunks ==
    step // chunk_size``, one ``updates`` entry per chunk, one metric row per chunk, the
    evaluations of the schedule and the learner's step counters equal to ``step``.

    Raises:
      jaxrrm.checkpoint.CheckpointError: the history is missing, malformed or inconsistent.
    """
    def bad(msg):
        return ckpt_lib.CheckpointError(f"{where}: {msg}; the checkpoint is inconsistent and "
                                        f"cannot be resumed")

    try:
        return _check_history(stored, step, state, train_cfg, bad)
    except ckpt_lib.CheckpointError:
        raise
    except Exception as e:  # wrong types in a malformed history, missing dtypes
        raise bad(f"the history is malformed ({type(e).__name__}: {e})") from e


def _check_history(stored, step, state, train_cfg, bad):
    cs, nc, every = train_cfg.chunk_size, train_cfg.num_chunks, train_cfg.eval_every_chunks
    h = stored.get("history")
    if not isinstance(h, dict):
        raise bad("the meta has no 'history'")
    missing = [k for k in ("chunks", "updates", "metrics", "eval_updates", "eval", "dtypes")
               if k not in h]
    if missing:
        raise bad(f"the history has no {missing}")
    chunks = h["chunks"]
    if step % cs or not is_int(chunks) or chunks != step // cs or not 0 <= chunks <= nc:
        raise bad(f"the history's chunk count {chunks!r} does not match the step: step {step} "
                  f"// chunk_size {cs} = {step / cs:g} (of {nc} chunks)")
    want_updates = [(c + 1) * cs for c in range(chunks)]
    if list(h["updates"]) != want_updates:
        raise bad(f"the history's updates {list(h['updates'])} are not the {chunks} chunks' "
                  f"{want_updates}")
    want_eval = [(c + 1) * cs for c in range(chunks)
                 if c + 1 == nc or (every and (c + 1) % every == 0)]
    if list(h["eval_updates"]) != want_eval:
        raise bad(f"the history's eval_updates {list(h['eval_updates'])} are not the schedule's "
                  f"{want_eval}")
    s = train_cfg.num_seeds
    out = []
    for part, rows in (("metrics", chunks), ("eval", len(want_eval))):
        if rows and not h[part]:
            raise bad(f"the history has no {part} for its {rows} rows")
        got = {}
        for k, v in h[part].items():
            arrs = [np.asarray(x, h["dtypes"][part][k]) for x in v]
            if len(arrs) != rows or any(a.shape != (s,) for a in arrs):
                raise bad(f"the history's {part}[{k!r}] has {[a.shape for a in arrs]}, "
                          f"expected {rows} rows of shape ({s},)")
            got[k] = arrs
        out.append(got)
    learner_step = getattr(state.learner, "step", None)
    if learner_step is not None and not np.all(np.asarray(learner_step) == step):
        raise bad(f"the learner's step counters {np.asarray(learner_step).tolist()} are not "
                  f"the step")
    return int(chunks), out[0], out[1]


def _progress_bar(enabled: bool, desc: str, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="chunk", disable=not enabled,
                dynamic_ncols=True)


#: What the progress bar shows of a chunk's report (when present), in this order.
_POSTFIX = (("critic_loss", "critic"), ("cql_penalty", "cql"), ("loss", "loss"), ("q", "Q"),
            ("eval_score", "score"))


def _postfix(report: Dict[str, float]) -> str:
    return " ".join(f"{short}={report[k]:.3g}" for k, short in _POSTFIX if k in report)


def _first_bad(bad: np.ndarray) -> int:
    """Flat index (into ``bad [S, U]``) of the earliest bad update, lowest seed on ties."""
    upd = int(np.argmax(bad.any(axis=0)))
    seed = int(np.argmax(bad[:, upd]))
    return seed * bad.shape[1] + upd


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
