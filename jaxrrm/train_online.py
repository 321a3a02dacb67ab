"""Online training of the behaviour learners (DQN, SAC): seeds vmapped, the one host loop,
checkpoints (docs/design.md §4.5).

The learner is a single-seed pure learner (:class:`jaxrrm.algos.online.OnlineLearner`:
``init(key)``, ``chunk(state)``, ``policy(params)``); :func:`make_train` compiles, once per
(environment, learner config, number of seeds), the ``jit`` of a ``vmap`` over seeds of its
``init`` and of its ``chunk`` (``steps_per_chunk`` environment steps of ``num_envs``
environments, each followed by ``updates_per_step`` updates), and runs the chunks with
:func:`jaxrrm.loop.run_chunks`, the host loop of the offline trainer (:mod:`jaxrrm.train`): the
same progress callback and bar, history, held-out evaluations, non-finite guard
(:class:`jaxrrm.loop.NonFiniteLossError`, with the last good state) and checkpoints.

* Seed ``s`` trains from ``fold_in(key, s)`` (as offline), or from ``seed_keys[s]`` when given;
  its results do not depend on the other seeds (up to the float rounding of batched matrix
  products). A run of one seed is not batched: its state is bitwise the single-seed learner's
  (``jit(learner.init)(key)`` and repeated ``jit(learner.chunk)``).
* The guard checks every chunk metric (means over the chunk) but those NaN by design
  (:data:`jaxrrm.algos.online.MAY_BE_NAN`).
* Checkpoints (``checkpoint_dir``, every ``checkpoint_every_chunks`` chunks and after the last,
  the ``checkpoint_keep`` most recent kept) hold the whole state of every seed: parameters,
  targets, optimizer states, the replay buffer, the environments, keys and counters, with the
  history and :func:`jaxrrm.checkpoint.make_online_meta` (configurations, environment
  parameters, keys); a step is counted in transitions per seed. A later call with the same
  directory resumes at the newest checkpoint that verifies, and its state and history are
  bitwise those of a run that was never interrupted (on CPU). ``on_chunk(chunk, state, report,
  transitions)`` runs after each chunk *before* its checkpoint is saved: a consumer of the
  transition stream that keeps what it got up to the checkpoint's chunk resumes the stream
  exactly (:func:`jaxrrm.behaviour_data.build_dataset` does).

:func:`fit` is the single-seed form (one key, the state of that seed; no seed axis), kept for
callers of the former ``jaxrrm.algos.common.fit``; it runs the same loop.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoint as ckpt_lib
from . import evaluate, loop
from .algos import ONLINE_LEARNERS
from .algos.online import MAY_BE_NAN, OnlineLearner
from .config import EnvConfig, EnvParams, is_int, require
from .loop import NonFiniteLossError, TrainResult  # noqa: F401 (jaxrrm.train_online's)
from .train import Trainer, eval_keys_for


@dataclasses.dataclass(frozen=True)
class OnlineTrainConfig:
    """Settings of an online training run (frozen, hashable; validated on construction); the
    learner's own config holds the chunk's size (``steps_per_chunk``, ``num_envs``).

    Attributes:
      num_chunks: chunks per seed (>= 1; each ``learner_cfg.transitions_per_chunk``
        transitions).
      num_seeds: independent seeds, run as one ``vmap`` (>= 1).
      eval_every_chunks: evaluate every this many chunks (>= 0; 0: only after the last).
      eval_episodes: episodes per evaluation key of each evaluation (>= 1).
    """

    num_chunks: int = 20
    num_seeds: int = 1
    eval_every_chunks: int = 0
    eval_episodes: int = 64

    def __post_init__(self):
        for name in ("num_chunks", "num_seeds", "eval_episodes"):
            v = getattr(self, name)
            require(is_int(v) and v >= 1, name, "an integer >= 1", v)
        require(is_int(self.eval_every_chunks) and self.eval_every_chunks >= 0,
                "eval_every_chunks", "an integer >= 0 (0 = only at the end)",
                self.eval_every_chunks)

    def replace(self, **kw) -> "OnlineTrainConfig":
        return dataclasses.replace(self, **kw)


#: What :meth:`OnlineTrainer.train` returns: :class:`jaxrrm.loop.TrainResult` with the state of
#: all seeds (:class:`jaxrrm.algos.online.OnlineState`, leading ``[S]``) and the history
#: ``{"env_steps": [C], "metrics": {name: [C, S]}, "eval_env_steps": [V], "eval": {metric: [V,
#: S]}}`` (``env_steps``: transitions per seed after each chunk).
OnlineTrainResult = TrainResult

#: What :func:`make_train` returns: a :class:`jaxrrm.train.Trainer` (the offline trainer's
#: fields) whose
#:
#: * ``init(keys [S]) -> state`` is the learner's ``init`` vmapped over the keys (jitted);
#: * ``chunk_fn(state) -> (state, metrics, transitions)`` is the un-jitted chunk: ``metrics``
#:   ``{name: [S, 1]}`` chunk means plus ``"nonfinite"`` ``[S, 1]`` bool, ``transitions``
#:   :class:`jaxrrm.data.Transitions` ``[S, steps_per_chunk * num_envs]`` (or ``None``);
#:   ``run_chunk`` its ``jax.jit``;
#: * ``evaluate(state, keys) -> {"sum_rate", "p5_rate", "score", "return"} -> [S]`` (NumPy,
#:   float64) of each seed's greedy policy: ``keys [S]`` (one key of ``eval_episodes`` episodes
#:   per seed) or ``[S, V]`` (the means over ``V`` keys);
#: * ``evaluate_rates(params, keys [S], num_episodes) -> (ue_rates [S, E, K] float32 Mbit/s,
#:   mean episode return [S] float32)`` of each seed's greedy policy (``params``: the state's
#:   ``params``, seeds batched);
#: * ``train(key, callback=None, eval_keys=None, seed_keys=None, checkpoint_dir=None,
#:   checkpoint_every_chunks=1, checkpoint_keep=3, progress=False, progress_desc=...,
#:   on_chunk=None, on_state=None, evaluation=True) -> OnlineTrainResult``;
#: * ``learner`` is the :class:`jaxrrm.algos.online.OnlineLearner`, ``train_cfg`` an
#:   :class:`OnlineTrainConfig`.
OnlineTrainer = Trainer


def make_learner(env_cfg: EnvConfig, env_params: EnvParams, learner_cfg) -> OnlineLearner:
    """The online learner of ``learner_cfg`` (a config of :data:`jaxrrm.algos.ONLINE_LEARNERS`).

    Raises:
      TypeError: ``learner_cfg`` is not such a config.
    """
    for module, config_cls in ONLINE_LEARNERS.values():
        if isinstance(learner_cfg, config_cls):
            return module.make_learner(env_cfg, env_params, learner_cfg)
    names = ", ".join(c.__name__ for _, c in ONLINE_LEARNERS.values())
    raise TypeError(f"learner_cfg must be one of {names}, got {type(learner_cfg)}")


def make_train(env_cfg: EnvConfig, env_params: EnvParams, learner_cfg,
               train_cfg: OnlineTrainConfig = OnlineTrainConfig()) -> OnlineTrainer:
    """Build the online trainer of ``learner_cfg`` (see the module docstring and
    :class:`OnlineTrainer`); :func:`trainer_of` of :func:`make_learner`.

    Raises:
      TypeError: ``learner_cfg`` is not an online learner's config, or ``train_cfg`` not an
        :class:`OnlineTrainConfig`.
    """
    if not isinstance(train_cfg, OnlineTrainConfig):
        raise TypeError(f"train_cfg must be an OnlineTrainConfig, got {type(train_cfg)}")
    return trainer_of(make_learner(env_cfg, env_params, learner_cfg), train_cfg)


#: The compiled functions of the most recent (learner, number of seeds) pairs, so that trainers
#: of the same learner (e.g. repeated :func:`fit` calls on one trainer) share one compilation:
#: ``{(id(learner), seeds): (learner, compiled)}``, the learner kept to pin its id.
_COMPILED: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_COMPILED_MAX = 8


def _compiled(learner: OnlineLearner, s: int):
    """``(chunk_fn, init, run_chunk, eval_rates)`` of ``s`` seeds of ``learner`` (the jitted
    functions; built once per learner object and number of seeds, see :data:`_COMPILED`)."""
    key = (id(learner), s)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is learner:
        _COMPILED.move_to_end(key)
        return hit[1]
    env_cfg, env_params = learner.env_cfg, learner.env_params

    def one_chunk(ts):
        ts, m, trs = learner.chunk(ts)
        m = {k: jnp.asarray(v)[None] for k, v in m.items()}   # one unit: the chunk's means
        m["nonfinite"] = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for k, v in m.items()
                                             if k not in MAY_BE_NAN]))[None]
        return ts, m, trs

    def seeds(fn):
        # One seed runs unbatched (its leading axis dropped and put back), so that its results
        # are the single-seed learner's bit for bit; more seeds are a vmap.
        if s > 1:
            return jax.vmap(fn)
        return lambda *a: jax.tree.map(lambda y: y[None], fn(*jax.tree.map(lambda y: y[0], a)))

    chunk_fn = seeds(one_chunk)
    init, run_chunk = jax.jit(seeds(learner.init)), jax.jit(chunk_fn)

    def rollout(p, k, num_episodes):  # one seed: params, keys [V]
        return evaluate.rollout_seeds(k, learner.policy(p, greedy=True), env_params, env_cfg,
                                      num_episodes)

    vmapped_rollout = jax.jit(jax.vmap(rollout, in_axes=(0, 0, None)), static_argnums=2)

    def eval_rates(params, keys, num_episodes):  # params [S], keys [S, V]
        if s > 1:
            return vmapped_rollout(params, keys, num_episodes)
        # one seed: the rollout of its parameters alone (rollout_seeds compiles it once)
        return jax.tree.map(lambda y: y[None], rollout(seed_slice(params), keys[0],
                                                       num_episodes))

    out = (chunk_fn, init, run_chunk, eval_rates)
    _COMPILED[key] = (learner, out)
    if len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return out


def trainer_of(learner: OnlineLearner, train_cfg: OnlineTrainConfig) -> OnlineTrainer:
    """The :class:`OnlineTrainer` of an :class:`~jaxrrm.algos.online.OnlineLearner` (compiled on
    first use, once per learner and number of seeds: :func:`_compiled`)."""
    env_cfg, env_params, learner_cfg = learner.env_cfg, learner.env_params, learner.config
    s = train_cfg.num_seeds
    chunk_fn, init, run_chunk, eval_rates = _compiled(learner, s)

    def evaluate_rates(params, keys, num_episodes: int):
        require(is_int(num_episodes) and num_episodes >= 1, "num_episodes", "an integer >= 1",
                num_episodes)
        rates, ret = eval_rates(params, keys[:, None], int(num_episodes))
        return rates[:, 0], ret[:, 0]

    def evaluate_seeds(state, keys) -> Dict[str, np.ndarray]:
        keys = keys if keys.ndim == 2 else keys[:, None]
        rates, ret = jax.device_get(eval_rates(state.params, keys, train_cfg.eval_episodes))
        n, v = rates.shape[:2]
        m = evaluate.seed_metrics(rates.reshape((n * v,) + rates.shape[2:]),
                                  env_params.score_mu)
        out = {k: np.mean(x.reshape(n, v), axis=1) for k, x in m.items()}
        out["return"] = np.mean(ret, axis=1).astype(np.float64)
        return out

    per_chunk = learner_cfg.transitions_per_chunk

    def describe(c, seed, unit, state, metrics):
        first = int(np.asarray(jax.device_get(state.updates))[seed])
        last = int(metrics["updates"][seed, unit]) - 1
        return first, f"updates {first}..{last} (the chunk's means)", first

    def train_(key, callback=None, eval_keys=None, seed_keys=None, checkpoint_dir=None,
               checkpoint_every_chunks: int = 1, checkpoint_keep: int = 3,
               progress: bool = False, progress_desc: str = "online training",
               on_chunk: Optional[Callable] = None, on_state: Optional[Callable] = None,
               evaluation: bool = True) -> OnlineTrainResult:
        """Run ``train_cfg.num_chunks`` chunks of every seed.

        Args:
          key: PRNG key of the run; seed ``s`` trains from ``fold_in(key, s)``.
          callback: optional ``callback(chunk_index, report)`` after every chunk: the means over
            seeds of every chunk metric, ``"env_steps"`` (transitions per seed so far) and, on
            evaluation chunks, ``"eval_<metric>"`` means over seeds.
          eval_keys: ``[S]`` or ``[S, V]`` evaluation keys of each seed (default
            :func:`jaxrrm.train.eval_keys_for` ``(key, S)``).
          seed_keys: ``[S]`` keys to train seed ``s`` from instead of ``fold_in(key, s)``
            (e.g. ``key[None]``: the single-seed run of ``learner.init(key)``).
          checkpoint_dir: optional :mod:`jaxrrm.checkpoint` directory (see the module
            docstring): resumed from when it holds a checkpoint of this run (the same
            configurations, environment parameters and keys), written to while training.
          checkpoint_every_chunks: save every this many chunks (>= 1); the last is always saved.
          checkpoint_keep: how many of the most recent checkpoints to keep (>= 1).
          progress, progress_desc: a tqdm bar over the chunks and its label.
          on_chunk: optional ``on_chunk(chunk_index, state, report, transitions)`` after every
            chunk, before its checkpoint (``transitions``: ``[S, n]`` on the device, or
            ``None``).
          on_state: optional ``on_state(env_steps_done, state)`` after every chunk.
          evaluation: ``False``: no evaluations (no ``eval_*`` reports, an empty ``eval``
            history, ``final`` ``None``).

        Raises:
          NonFiniteLossError: a chunk metric became non-finite; ``err.state`` is the last good
            state of all seeds (also checkpointed when ``checkpoint_dir`` is set).
          jaxrrm.checkpoint.CheckpointError: the checkpoint belongs to another run (another
            configuration, environment parameters or keys, an offline run), does not fit the
            state, has a history that disagrees with its step, or no step of it verifies.
        """
        if checkpoint_dir is not None:
            loop.check_checkpoint_args(checkpoint_dir, checkpoint_every_chunks, checkpoint_keep)
        if seed_keys is None:
            seed_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(s))
        if len(seed_keys) != s:
            raise ValueError(f"seed_keys has {len(seed_keys)} keys; num_seeds is {s}")
        if eval_keys is None and evaluation:
            eval_keys = eval_keys_for(key, s)
        if evaluation and len(eval_keys) != s:
            raise ValueError(f"eval_keys has {len(eval_keys)} rows; num_seeds is {s}")
        plan = None
        if checkpoint_dir is not None:
            meta = ckpt_lib.make_online_meta(
                env_cfg, learner_cfg, train_cfg, env_params, train_key=ckpt_lib.key_to_json(key),
                seed_keys=ckpt_lib.key_to_json(seed_keys),
                eval_keys=ckpt_lib.key_to_json(eval_keys) if evaluation else None)
            plan = loop.CheckpointPlan(checkpoint_dir, checkpoint_every_chunks, checkpoint_keep,
                                       meta)
        out = loop.run_chunks(
            init(seed_keys), run_chunk, num_chunks=train_cfg.num_chunks, chunk_steps=per_chunk,
            step_name="env_steps", num_seeds=s, describe=describe,
            evaluate=(lambda st: evaluate_seeds(st, eval_keys)) if evaluation else None,
            eval_every=train_cfg.eval_every_chunks, callback=callback, on_chunk=on_chunk,
            on_state=on_state, checkpoint=plan, progress=progress, progress_desc=progress_desc,
            may_be_nan=MAY_BE_NAN, state_step=lambda st: st.env_steps)
        return OnlineTrainResult(state=out.state, history=out.history, final=out.final)

    return OnlineTrainer(init=init, chunk_fn=chunk_fn, run_chunk=run_chunk,
                         evaluate=evaluate_seeds, evaluate_rates=evaluate_rates, train=train_,
                         learner=learner, env_cfg=env_cfg, env_params=env_params,
                         learner_cfg=learner_cfg, train_cfg=train_cfg)


def seed_slice(tree, seed: int = 0):
    """Seed ``seed``'s slice of a seed-batched pytree (the leading axis dropped)."""
    return jax.tree.map(lambda x: x[seed], tree)


def fit(trainer, key, num_chunks: int, eval_keys=None, eval_every: int = 0,
        log: Optional[Callable[[dict], None]] = None,
        on_chunk: Optional[Callable[[int, Any, dict, Any], None]] = None,
        checkpoint_dir=None, checkpoint_every_chunks: int = 1, checkpoint_keep: int = 3,
        progress: bool = False, progress_desc: str = "online training"):
    """One seed of ``trainer`` (a DQN or SAC :class:`jaxrrm.algos.online.Trainer`, e.g.
    ``dqn.make_train(...)``) trained from ``learner.init(key)`` for ``num_chunks`` chunks: the
    one-seed run of :func:`make_train`'s loop, with the single seed's state.

    Args:
      trainer: from ``dqn.make_train`` / ``sac.make_train`` (its ``learner`` is trained).
      key: PRNG key of the run (the seed's key itself: ``seed_keys=key[None]``).
      num_chunks: chunks to run (each ``steps_per_chunk * num_envs`` transitions).
      eval_keys: optional ``[V]`` keys: evaluate the greedy policy on them (the trainer's
        ``eval_episodes`` episodes per key) every ``eval_every`` chunks (0: only after the
        last) and add ``eval_sum_rate``, ``eval_p5_rate``, ``eval_score`` and ``eval_return``
        (means over the keys).
      log: called with each chunk's metrics dict (host floats).
      on_chunk: called as ``on_chunk(chunk_index, state, metrics, transitions)`` after each
        chunk (the seed's state and transitions; e.g. to stream the transitions to a dataset),
        before its checkpoint.
      checkpoint_dir, checkpoint_every_chunks, checkpoint_keep, progress, progress_desc: as in
        :meth:`OnlineTrainer.train`.

    Returns:
      (final state, list of per-chunk metric dicts with ``chunk`` and ``wall_s`` added).

    Raises:
      NonFiniteLossError: as :meth:`OnlineTrainer.train`; training stops before that chunk's
        ``on_chunk`` and ``log``, ``err.state`` is the seed's state after the last good chunk,
        ``err.history`` the list of metric dicts up to it.
    """
    tc = OnlineTrainConfig(num_chunks=num_chunks, num_seeds=1,
                           eval_every_chunks=eval_every if eval_keys is not None else 0,
                           eval_episodes=trainer.eval_episodes)
    online = trainer_of(trainer.learner, tc)
    wall: Dict[int, float] = {}
    t0 = time.perf_counter()

    def chunk_done(c, state, report, trs):
        wall[c] = time.perf_counter() - t0
        m = dict(report, chunk=c, wall_s=wall[c])
        if on_chunk is not None:
            on_chunk(c, seed_slice(state), m, None if trs is None else seed_slice(trs))
        if log is not None:
            log(m)

    try:
        res = online.train(key, eval_keys=None if eval_keys is None else eval_keys[None],
                           seed_keys=jnp.asarray(key)[None], evaluation=eval_keys is not None,
                           checkpoint_dir=checkpoint_dir,
                           checkpoint_every_chunks=checkpoint_every_chunks,
                           checkpoint_keep=checkpoint_keep, progress=progress,
                           progress_desc=progress_desc, on_chunk=chunk_done)
    except NonFiniteLossError as err:
        err.state, err.history = seed_slice(err.state), history_rows(err.history, wall)
        raise
    return seed_slice(res.state), history_rows(res.history, wall)


def history_rows(history: Dict[str, Any], wall_s: Optional[Dict[int, float]] = None,
                 seed: int = 0) -> List[dict]:
    """Seed ``seed``'s rows of an online history (:class:`OnlineTrainResult`), one dict per
    chunk as :func:`fit` reports them: every metric (host floats), ``env_steps``, the
    ``eval_<metric>`` of an evaluation after that chunk, ``chunk`` and ``wall_s`` (seconds since
    the start of this call; ``None`` for chunks done before a resume)."""
    steps = np.asarray(history["env_steps"]).tolist()
    evals = {int(v): i for i, v in enumerate(np.asarray(history["eval_env_steps"]).tolist())}
    rows = []
    for c, done in enumerate(steps):
        row = {k: float(v[c][seed]) for k, v in history["metrics"].items()}
        row["env_steps"] = int(done)
        if done in evals:
            row.update({f"eval_{k}": float(v[evals[done]][seed])
                        for k, v in history["eval"].items()})
        row.update(chunk=c, wall_s=(wall_s or {}).get(c))
        rows.append(row)
    return rows
