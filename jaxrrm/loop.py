"""The one host loop of every trainer: offline (:mod:`jaxrrm.train`, CQL / BC on a dataset) and
online (:mod:`jaxrrm.train_online`, DQN / SAC on the environment) (docs/design.md §4.5).

A trainer hands :func:`run_chunks` its compiled chunk, ``run_chunk(state) -> (state, metrics,
extra)``: the state of ``S`` seeds (leading axis ``S`` on every leaf), ``metrics`` ``{name:
[S, U]}`` for ``U`` units of the chunk (updates offline, one chunk mean online) plus
``"nonfinite"`` ``[S, U]`` bool computed inside the compiled chunk, and ``extra`` whatever the
chunk produced besides (online: its transitions, ``[S, n, ...]``). Between chunks the loop

* checks ``nonfinite`` and, if any unit of any seed went bad, stops with
  :class:`NonFiniteLossError` naming the chunk, the first bad unit and seed and the non-finite
  metrics, with the last good state (the state *before* the bad chunk) and the history up to it
  (checkpointed first, when checkpoints are on);
* records the history: each metric's mean over the chunk's units per seed, after every chunk;
* every ``eval_every`` chunks (0: never before the last) and after the last evaluates the state
  (``evaluate(state) -> {metric: [S]}``);
* calls ``on_chunk(chunk, state, report, extra)``, then saves a checkpoint when one is due,
  then ``callback(chunk, report)`` and ``on_state(steps_done, state)``; ``report`` holds the
  means over seeds and units of every metric (plain floats), the steps done and, after an
  evaluation, ``eval_<metric>`` means over seeds;
* shows a tqdm bar with ``progress=True``.

With a :class:`CheckpointPlan` the loop resumes from the newest checkpoint in its directory that
verifies (:mod:`jaxrrm.checkpoint`: the stored meta must equal the plan's, the stored history
must agree with the step and the state's own step counters), and saves the whole state, the
meta and the history every ``every`` chunks and after the last; a resumed run's state and
history are bitwise those of a run that was never interrupted (on CPU). A step is counted in
the trainer's unit (``chunk_steps`` per chunk: updates offline, transitions per seed online).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np

from . import checkpoint as ckpt_lib
from .config import is_int, require


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite during training (:func:`run_chunks`: offline
    :func:`jaxrrm.train.train`, online :func:`jaxrrm.train_online.fit` and its trainer).

    Attributes:
      chunk: index of the chunk where it happened (0-based).
      update: global index of the first bad update (0-based, over the whole run); online
        (whose chunks report means) the chunk's first update.
      seed: index of the first seed (in the vmapped batch) that went bad.
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


class CheckpointPlan(NamedTuple):
    """Where and how often :func:`run_chunks` checkpoints.

    Attributes:
      directory: the :mod:`jaxrrm.checkpoint` directory (resumed from when it holds one).
      every: save every this many chunks (>= 1); the last chunk is always saved.
      keep: how many of the most recent checkpoints to keep (>= 1).
      meta: the run's meta (:func:`jaxrrm.checkpoint.make_meta` or
        :func:`~jaxrrm.checkpoint.make_online_meta`), compared with the stored one on resume.
    """

    directory: Any
    every: int
    keep: int
    meta: Dict[str, Any]


class TrainResult(NamedTuple):
    """What :func:`run_chunks` returns, and with it every trainer's ``train``
    (:func:`jaxrrm.train.train`, :func:`jaxrrm.train_online.make_train`'s).

    Attributes:
      state: the final state of all seeds (offline :class:`jaxrrm.train.TrainState`, online
        :class:`jaxrrm.algos.online.OnlineState` with a leading ``[S]`` axis).
      history: ``{step: [C], "metrics": {name: [C, S]} chunk means per seed, "eval_" + step:
        [V], "eval": {metric: [V, S]}}`` (NumPy), the learning curves; ``step`` is the
        trainer's step name (offline ``"updates"``, online ``"env_steps"``: transitions per
        seed).
      final: ``{"sum_rate", "p5_rate", "score", "return"} -> [S]`` per-seed metrics of the
        greedy policies of the last evaluation (held-out keys), ``None`` without one.
    """

    state: Any
    history: Dict[str, Any]
    final: Optional[Dict[str, np.ndarray]]


def check_checkpoint_args(directory, every: int, keep: int) -> None:
    """Validate the checkpoint arguments before any work: ``every`` and ``keep`` integers
    >= 1 (``ValueError`` naming ``checkpoint_every_chunks`` / ``checkpoint_keep``) and
    ``directory`` not below an existing non-directory (:class:`jaxrrm.checkpoint
    .CheckpointError`)."""
    require(is_int(every) and every >= 1, "checkpoint_every_chunks", "an integer >= 1", every)
    require(is_int(keep) and keep >= 1, "checkpoint_keep", "an integer >= 1", keep)
    probe = os.path.abspath(os.fspath(directory))
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ckpt_lib.CheckpointError(
            f"checkpoint_dir {directory}: {probe} exists and is not a directory")


def eval_due(chunk: int, num_chunks: int, every: int) -> bool:
    """Whether chunk ``chunk`` (0-based) of ``num_chunks`` is followed by an evaluation: the
    last one, and every ``every``-th (``every = 0``: only the last)."""
    return chunk + 1 == num_chunks or bool(every and (chunk + 1) % every == 0)


def first_bad(bad: np.ndarray) -> Tuple[int, int]:
    """``(seed, unit)`` of the earliest bad unit of ``bad [S, U]`` (lowest seed on ties)."""
    unit = int(np.argmax(bad.any(axis=0)))
    return int(np.argmax(bad[:, unit])), unit


def run_chunks(state, run_chunk: Callable, *, num_chunks: int, chunk_steps: int,
               step_name: str, num_seeds: int, describe: Callable,
               evaluate: Optional[Callable] = None, eval_every: int = 0,
               callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
               on_chunk: Optional[Callable] = None, on_state: Optional[Callable] = None,
               checkpoint: Optional[CheckpointPlan] = None, progress: bool = False,
               progress_desc: str = "training", may_be_nan=frozenset(),
               state_step: Optional[Callable] = None, gather: Optional[Callable] = None,
               place: Optional[Callable] = None) -> TrainResult:
    """Run chunks ``[start, num_chunks)`` of ``run_chunk`` from ``state`` (see the module
    docstring); ``start`` is 0, or the resumed checkpoint's chunk count.

    Args:
      state: the initial state of the ``S = num_seeds`` seeds (the restore template too).
      run_chunk: ``run_chunk(state) -> (state, metrics, extra)`` (compiled).
      num_chunks: chunks of the whole run.
      chunk_steps: steps (``step_name``) one chunk does per seed.
      step_name: the name of the step count in the history and reports (``"updates"``).
      num_seeds: ``S``.
      describe: ``describe(chunk, seed, unit, state, metrics) -> (update, where, done)`` of the
        first bad unit (the error's ``update``, its place in the message, and the updates done by
        the last good state ``state``).
      evaluate: ``evaluate(state) -> {metric: [S]}`` (NumPy), or ``None``: no evaluations.
      eval_every: evaluate every this many chunks (0: only after the last).
      callback, on_chunk, on_state: see the module docstring.
      checkpoint: a :class:`CheckpointPlan`, or ``None``.
      progress, progress_desc: the tqdm bar and its label.
      may_be_nan: metrics NaN by design: never reported as the bad losses.
      state_step: ``state_step(state) -> [S]`` step counters of a restored state, which must
        equal the checkpoint's step (``None``: not checked).
      gather, place: with the state split over devices, ``gather(state)`` brings it whole to
        every process (for saving, and as the restore template) and ``place(state)`` splits a
        restored one again (``None``: identity).

    Raises:
      NonFiniteLossError: see the module docstring.
      jaxrrm.checkpoint.CheckpointError: the checkpoint belongs to another run, does not fit
        the state, has a history that disagrees with its step, or no step of it verifies.
    """
    gather = gather or (lambda s: s)
    place = place or (lambda s: s)
    hist_steps: List[int] = []
    hist_metrics: Dict[str, List[np.ndarray]] = {}
    eval_steps: List[int] = []
    eval_hist: Dict[str, List[np.ndarray]] = {}
    start, final, saved_step = 0, None, None
    if checkpoint is not None and ckpt_lib.latest_step(checkpoint.directory) is not None:
        restored, saved_step, stored = ckpt_lib.restore(checkpoint.directory, gather(state),
                                                        checkpoint.meta)
        where = f"{checkpoint.directory} (step {saved_step})"
        start, h_metrics, h_eval = _resumed_history(
            stored, saved_step, restored, where, chunk_steps=chunk_steps,
            num_chunks=num_chunks, eval_every=eval_every if evaluate is not None else None,
            num_seeds=num_seeds, step_name=step_name, state_step=state_step)
        state = place(restored)
        hist_steps[:] = stored["history"][step_name]
        hist_metrics.update(h_metrics)
        eval_steps[:] = stored["history"]["eval_" + step_name]
        eval_hist.update(h_eval)
        if eval_hist:
            final = {k: v[-1] for k, v in eval_hist.items()}

    def history():
        return {step_name: np.asarray(hist_steps, np.int64),
                "metrics": {k: np.stack(v) for k, v in hist_metrics.items()},
                "eval_" + step_name: np.asarray(eval_steps, np.int64),
                "eval": {k: np.stack(v) for k, v in eval_hist.items()}}

    def save(st, chunks_done):
        nonlocal saved_step
        step = chunks_done * chunk_steps
        if saved_step == step:
            return
        hist = {"chunks": chunks_done, step_name: list(hist_steps),
                "metrics": {k: [x.tolist() for x in v] for k, v in hist_metrics.items()},
                "eval_" + step_name: list(eval_steps),
                "eval": {k: [x.tolist() for x in v] for k, v in eval_hist.items()},
                "dtypes": {"metrics": {k: str(v[0].dtype) for k, v in hist_metrics.items()},
                           "eval": {k: str(v[0].dtype) for k, v in eval_hist.items()}}}
        ckpt_lib.save(checkpoint.directory, step, gather(st),
                      {**checkpoint.meta, "history": hist}, keep=checkpoint.keep)
        saved_step = step

    bar = _progress_bar(progress, progress_desc, num_chunks, start)
    try:
        for c in range(start, num_chunks):
            new_state, metrics, extra = run_chunk(state)
            metrics = jax.device_get(metrics)
            bad = np.asarray(metrics.pop("nonfinite"))          # [S, U]
            if bad.any():
                seed_i, unit = first_bad(bad)
                losses = {k: float(v[seed_i, unit]) for k, v in metrics.items()
                          if k not in may_be_nan and not np.isfinite(v[seed_i, unit])}
                update, where, done = describe(c, seed_i, unit, state, metrics)
                if checkpoint is not None:
                    save(state, c)
                raise nonfinite_loss_error(losses, chunk=c, update=update, seed=seed_i,
                                           done=done, state=state, history=history(),
                                           where=where)
            state = new_state
            steps_done = (c + 1) * chunk_steps
            hist_steps.append(steps_done)
            for k, v in metrics.items():
                hist_metrics.setdefault(k, []).append(np.mean(v, axis=1))
            report = {k: float(np.mean(v)) for k, v in metrics.items()}
            report[step_name] = steps_done
            last = c + 1 == num_chunks
            if evaluate is not None and eval_due(c, num_chunks, eval_every):
                ev = evaluate(state)
                eval_steps.append(steps_done)
                for k, v in ev.items():
                    eval_hist.setdefault(k, []).append(v)
                    report[f"eval_{k}"] = float(np.mean(v))
                final = ev
            if on_chunk is not None:
                on_chunk(c, state, report, extra)
            if checkpoint is not None and (last or (c + 1) % checkpoint.every == 0):
                save(state, c + 1)
            bar.update(1)
            bar.set_postfix_str(_postfix(report), refresh=False)
            if callback is not None:
                callback(c, report)
            if on_state is not None:
                on_state(steps_done, state)
    finally:
        bar.close()
    return TrainResult(state=state, history=history(), final=final)


def _resumed_history(stored, step: int, state, where: str, **schedule):
    """``(chunks, metrics, eval)`` of a restored checkpoint's history (``metrics``/``eval``:
    ``{name: [per-chunk arrays]}``), after checking that it agrees with the step: ``chunks ==
    step // chunk_steps``, one step entry per chunk, one metric row per chunk, the evaluations of
    the schedule and the state's step counters equal to ``step``.

    Raises:
      jaxrrm.checkpoint.CheckpointError: the history is missing, malformed or inconsistent.
    """
    def bad(msg):
        return ckpt_lib.CheckpointError(f"{where}: {msg}; the checkpoint is inconsistent and "
                                        f"cannot be resumed")

    try:
        return _check_history(stored, step, state, bad, **schedule)
    except ckpt_lib.CheckpointError:
        raise
    except Exception as e:  # wrong types in a malformed history, missing dtypes
        raise bad(f"the history is malformed ({type(e).__name__}: {e})") from e


def _check_history(stored, step, state, bad, *, chunk_steps, num_chunks, eval_every, num_seeds,
                   step_name, state_step):
    cs, nc, name = chunk_steps, num_chunks, step_name
    h = stored.get("history")
    if not isinstance(h, dict):
        raise bad("the meta has no 'history'")
    missing = [k for k in ("chunks", name, "metrics", "eval_" + name, "eval", "dtypes")
               if k not in h]
    if missing:
        raise bad(f"the history has no {missing}")
    chunks = h["chunks"]
    if step % cs or not is_int(chunks) or chunks != step // cs or not 0 <= chunks <= nc:
        raise bad(f"the history's chunk count {chunks!r} does not match the step: step {step} "
                  f"// {cs} {name} per chunk = {step / cs:g} (of {nc} chunks)")
    want_steps = [(c + 1) * cs for c in range(chunks)]
    if list(h[name]) != want_steps:
        raise bad(f"the history's {name} {list(h[name])} are not the {chunks} chunks' "
                  f"{want_steps}")
    want_eval = ([] if eval_every is None else
                 [(c + 1) * cs for c in range(chunks) if eval_due(c, nc, eval_every)])
    if list(h["eval_" + name]) != want_eval:
        raise bad(f"the history's eval_{name} {list(h['eval_' + name])} are not the "
                  f"schedule's {want_eval}")
    out = []
    for part, rows in (("metrics", chunks), ("eval", len(want_eval))):
        if rows and not h[part]:
            raise bad(f"the history has no {part} for its {rows} rows")
        got = {}
        for k, v in h[part].items():
            arrs = [np.asarray(x, h["dtypes"][part][k]) for x in v]
            if len(arrs) != rows or any(a.shape != (num_seeds,) for a in arrs):
                raise bad(f"the history's {part}[{k!r}] has {[a.shape for a in arrs]}, "
                          f"expected {rows} rows of shape ({num_seeds},)")
            got[k] = arrs
        out.append(got)
    counters = None if state_step is None else state_step(state)
    if counters is not None and not np.all(np.asarray(counters) == step):
        raise bad(f"the learner's step counters {np.asarray(counters).tolist()} are not the "
                  f"step")
    return int(chunks), out[0], out[1]


def _progress_bar(enabled: bool, desc: str, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="chunk", disable=not enabled,
                dynamic_ncols=True)


#: What the progress bar shows of a chunk's report (when present), in this order.
POSTFIX = (("critic_loss", "critic"), ("cql_penalty", "cql"), ("loss", "loss"), ("q", "Q"),
           ("reward", "reward"), ("eval_score", "score"))


def _postfix(report: Mapping[str, float]) -> str:
    return " ".join(f"{short}={report[k]:.3g}" for k, short in POSTFIX if k in report)
