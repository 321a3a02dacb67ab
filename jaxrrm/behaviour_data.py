"""Behaviour datasets for offline learning: what dataset to make (:class:`DatasetSpec`), making it
(:func:`build_dataset`: an online learner trained first, or a fixed behaviour collected), and a
cache that makes it once per full configuration (:func:`load_or_build`).

A :class:`DatasetSpec` names a behaviour policy (an online learner, ``"sac"`` or ``"dqn"``,
trained first on the vectorized environment; ``"random_walk"``; or a baseline), the number of
transitions and a seed. :func:`build_dataset` makes it; :func:`load_or_build` keeps it in a cache
directory under a name derived from the SHA-256 of the spec, the environment configuration and
parameters and the dataset schema version (:func:`cache_name`), so a dataset is made once per
full configuration and any change of it makes a new one. The trained behaviour learner's
parameters are kept beside the dataset (``behaviour_params.msgpack``, with its SHA-256 in
``behaviour_params.json``), so the behaviour policy itself can be evaluated later. With a
``checkpoint_dir`` an online behaviour's training is checkpointed and its stream written chunk by
chunk, so a killed build resumes where it was saved and makes the same dataset.

Evaluating and comparing the methods trained on a dataset is :mod:`jaxrrm.compare`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import numpy as np

from . import baselines, data, distributed, files, train_online
from .algos import ONLINE_LEARNERS
from .config import EnvConfig, EnvParams, check_seed, is_int, is_num, require

#: Behaviours a :class:`DatasetSpec` accepts: the fixed ones of :mod:`jaxrrm.data` (baselines and
#: ``random_walk``) and the online learners (trained first).
BEHAVIOURS = tuple(data.BEHAVIOURS) + tuple(n for n in ONLINE_LEARNERS
                                            if n not in data.BEHAVIOURS)

#: Progress callback: ``progress(done, total, postfix)`` (e.g. a tqdm bar's update).
Progress = Callable[[int, int, str], None]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What behaviour dataset to make (frozen, hashable; validated on construction).

    Attributes:
      behaviour: one of :data:`BEHAVIOURS`.
      size: transitions to keep (>= 1).
      seed: integer seed of the behaviour's training / collection.
      train_steps: online learners only: transitions of the training run (rounded up to whole
        training chunks); 0 means ``max(size, 128_000)``.
      source: online learners only: ``"stream"`` keeps a slice of the training stream (the
        transitions the learner generated while it learned, as the paper's datasets);
        ``"policy"`` rolls out the finished policy.
      stream_start: ``"stream"`` only: where the slice starts as a fraction of the training run,
        in [0, 1); ``None`` keeps the last ``size`` transitions.
      epsilon: probability of a uniformly random valid action per AP and slot, in [0, 1]
        (fixed behaviours and ``source="policy"``).
    """

    behaviour: str = "sac"
    size: int = 100_000
    seed: int = 0
    train_steps: int = 0
    source: str = "stream"
    stream_start: Optional[float] = None
    epsilon: float = 0.0

    def __post_init__(self):
        require(self.behaviour in BEHAVIOURS, "behaviour", f"one of {BEHAVIOURS}",
                self.behaviour)
        require(is_int(self.size) and self.size >= 1, "size", "an integer >= 1", self.size)
        check_seed(self.seed, "seed")
        require(is_int(self.train_steps) and self.train_steps >= 0, "train_steps",
                "an integer >= 0 (0: max(size, 128000))", self.train_steps)
        require(self.source in ("stream", "policy"), "source", "'stream' or 'policy'",
                self.source)
        require(self.stream_start is None or (is_num(self.stream_start)
                                              and 0.0 <= self.stream_start < 1.0),
                "stream_start", "None or a number in [0, 1)", self.stream_start)
        require(is_num(self.epsilon) and 0.0 <= self.epsilon <= 1.0, "epsilon", "[0, 1]",
                self.epsilon)

    @property
    def online(self) -> bool:
        """Whether the behaviour is an online learner trained before collection."""
        return self.behaviour in ONLINE_LEARNERS

    def replace(self, **kw) -> "DatasetSpec":
        return dataclasses.replace(self, **kw)


def cache_name(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams) -> str:
    """Directory name of ``spec``'s dataset in a cache: ``<behaviour>-<size>-<hash16>``, the hash
    being the SHA-256 of the spec, the environment configuration and parameters, and the
    dataset schema version (any change of them gives another name)."""
    h = files.json_sha256({"spec": files.to_json(dataclasses.asdict(spec)),
                           "env_config": data.config_to_json(cfg),
                           "env_params": data.params_to_json(params),
                           "schema": data.SCHEMA_VERSION})
    return f"{spec.behaviour}-{spec.size}-{h[:16]}"


class Behaviour(NamedTuple):
    """A behaviour dataset and where it came from.

    Attributes:
      dataset: :class:`jaxrrm.data.Transitions` (NumPy leaves, possibly memory-mapped).
      meta: its metadata (:func:`jaxrrm.data.load`).
      path: its directory (``None`` when not saved).
      policy: the behaviour policy (greedy for online learners, the fixed policy otherwise) as
        a :data:`jaxrrm.env.Policy`, or ``None`` for ``random_walk``.
      built: whether it was made by this call (``False``: loaded from the cache).
      seconds: wall time of making or loading it.
    """

    dataset: data.Transitions
    meta: Dict[str, Any]
    path: Optional[Path]
    policy: Optional[Callable]
    built: bool
    seconds: float


def _online_plan(spec: DatasetSpec, algo_cfg) -> Tuple[int, int, float]:
    """(chunks, total transitions, stream start fraction) of an online behaviour's training."""
    per_chunk = algo_cfg.transitions_per_chunk
    train_steps = spec.train_steps or max(spec.size, 128_000)
    num_chunks = math.ceil(train_steps / per_chunk)
    total = num_chunks * per_chunk
    start = spec.stream_start
    if spec.source == "stream":
        if spec.size > total:
            raise ValueError(f"DatasetSpec.size={spec.size} is more than the {total} transitions "
                             f"of the training run: raise train_steps or use source='policy'")
        if start is None:  # the last `size` transitions, the best-trained part of the run
            steps = num_chunks * algo_cfg.steps_per_chunk
            start = math.floor(max(0.0, (total - spec.size) / total) * steps) / steps
    return num_chunks, total, start


def build_dataset(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams,
                  progress: Optional[Progress] = None, eval_every: int = 10,
                  eval_episodes: int = 64, checkpoint_dir=None,
                  checkpoint_every_chunks: int = 1, checkpoint_keep: int = 2):
    """Make ``spec``'s dataset.

    Online behaviours (``sac``, ``dqn``) are trained for ``train_steps`` transitions with their
    default configuration (:mod:`jaxrrm.algos.sac`, :mod:`jaxrrm.algos.dqn`), their greedy policy
    evaluated on 4 held-out seeds x ``eval_episodes`` episodes every ``eval_every`` chunks and
    after the last (the learning curve kept in the metadata), then the dataset is a slice of the training stream or rollouts of the finished
    policy (``spec.source``). Fixed behaviours are collected with
    :func:`jaxrrm.data.collect`.

    With ``checkpoint_dir`` (online behaviours), the training is checkpointed to
    ``checkpoint_dir/state`` (:func:`jaxrrm.train_online.fit`: every ``checkpoint_every_chunks``
    chunks, the ``checkpoint_keep`` most recent kept) and each chunk's transitions are written to
    ``checkpoint_dir/stream/<chunk>.npz`` (atomically, with their SHA-256) before its checkpoint,
    so a killed build called again with the same directory resumes at the saved chunk and makes
    the same dataset (bitwise) as one never interrupted. The directory belongs to this spec and
    environment (a checkpoint of another is refused); remove it once the dataset is saved.

    Returns:
      ``(dataset, meta, behaviour_params)``: NumPy :class:`~jaxrrm.data.Transitions`, metadata
      for :func:`jaxrrm.data.save` and the trained learner's parameters (``None`` for fixed
      behaviours).

    Raises:
      ValueError: ``spec`` cannot be made (e.g. ``size`` larger than the training stream).
    """
    if not spec.online:
        def collect_progress(n):
            if progress is not None:
                progress(n, spec.size, "")

        ds, meta = data.collect(spec.seed, spec.behaviour, params, cfg, spec.size, spec.epsilon,
                                progress=collect_progress)
        meta["spec"] = dataclasses.asdict(spec)
        return ds, meta, None

    module, config_cls = ONLINE_LEARNERS[spec.behaviour]
    algo_cfg = config_cls()
    num_chunks, total, start = _online_plan(spec, algo_cfg)
    trainer = module.make_train(cfg, params, algo_cfg, eval_episodes=eval_episodes)
    eval_seed = spec.seed + 1_000_003
    eval_keys = jax.random.split(jax.random.key(eval_seed), 4)
    chunks = []
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir)

    def on_chunk(c, ts, m, trs):
        if spec.source == "stream" and ckpt is None:
            chunks.append(data.to_numpy(trs))
        elif spec.source == "stream":
            save_stream_chunk(ckpt / "stream", c, data.to_numpy(trs))
        if progress is not None:
            post = " ".join(f"{k}={m[k]:.3g}" for k in ("reward", "q") if k in m)
            if "eval_score" in m:
                post += f" score={m['eval_score']:.1f}"
            progress(c + 1, num_chunks, post)

    t0 = time.perf_counter()
    ts, history = train_online.fit(
        trainer, jax.random.key(spec.seed), num_chunks, eval_keys=eval_keys,
        eval_every=eval_every, on_chunk=on_chunk,
        checkpoint_dir=None if ckpt is None else ckpt / "state",
        checkpoint_every_chunks=checkpoint_every_chunks, checkpoint_keep=checkpoint_keep)
    train_seconds = time.perf_counter() - t0
    if spec.source == "stream" and ckpt is not None:
        chunks = [load_stream_chunk(ckpt / "stream", c) for c in range(num_chunks)]
    if spec.source == "stream":
        stream = data.concatenate(chunks, renumber_episodes=False)
        del chunks
        dataset = data.slice_stream(stream, start, spec.size, num_envs=algo_cfg.num_envs)
        source_cfg = {"source": "stream", "stream_start": start, "train_transitions": total}
    else:
        pol = trainer.policy(ts.params, greedy=spec.epsilon == 0.0)
        dataset = data.collect_policy(jax.random.key(spec.seed + 7), pol, params, cfg,
                                      spec.size, spec.epsilon)
        source_cfg = {"source": "policy", "epsilon": spec.epsilon, "train_transitions": total}
    behaviour_cfg = {"algorithm": spec.behaviour, **dataclasses.asdict(algo_cfg), **source_cfg,
                     "train_seconds": train_seconds, "learning_curve": history}
    meta = data.make_meta(cfg, params, spec.behaviour, behaviour_cfg,
                          {"train": int(spec.seed), "eval": int(eval_seed)},
                          spec=dataclasses.asdict(spec))
    return data.to_numpy(dataset), meta, jax.device_get(ts.params)


def save_stream_chunk(directory: Path, chunk: int, transitions: data.Transitions) -> Path:
    """Write one chunk of an online run's transition stream (NumPy leaves) to
    ``directory/<chunk:06d>.npz`` (no pickles; atomically, replacing an earlier write of the same
    chunk) with its SHA-256 in ``<chunk:06d>.sha256``, the digest written last."""
    buf = io.BytesIO()
    np.savez(buf, **{f.name: np.asarray(getattr(transitions, f.name))
                     for f in dataclasses.fields(transitions)})
    payload = buf.getvalue()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{chunk:06d}.npz"
    files.write_atomic(path, payload)
    files.write_atomic(path.with_suffix(".sha256"), hashlib.sha256(payload).hexdigest())
    return path


def load_stream_chunk(directory: Path, chunk: int) -> data.Transitions:
    """Read what :func:`save_stream_chunk` wrote for ``chunk``, checking its SHA-256.

    Raises:
      jaxrrm.data.DatasetError: the chunk is missing, unreadable or fails its checksum.
    """
    path = Path(directory) / f"{chunk:06d}.npz"
    try:
        payload = path.read_bytes()
        want = path.with_suffix(".sha256").read_text().strip()
    except OSError as e:
        raise data.DatasetError(f"{path}: stream chunk {chunk} missing or unreadable ({e})") \
            from None
    if hashlib.sha256(payload).hexdigest() != want:
        raise data.DatasetError(f"{path}: stream chunk {chunk} fails its SHA-256 check "
                                "(damaged); remove the checkpoint directory to rebuild")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return data.Transitions(**{k: z[k] for k in z.files})


def behaviour_policy(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams, behaviour_params=None):
    """The behaviour policy of ``spec`` (greedy for online learners; ``None`` for random walk).

    ``behaviour_params`` are the trained learner's parameters (:func:`build_dataset`)."""
    if spec.online:
        if behaviour_params is None:
            return None
        module, config_cls = ONLINE_LEARNERS[spec.behaviour]
        trainer = module.make_train(cfg, params, config_cls())
        return trainer.policy(behaviour_params, greedy=True)
    if spec.behaviour in baselines.NAMES:
        return baselines.make(spec.behaviour, cfg)
    return None


def _params_template(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams):
    module, config_cls = ONLINE_LEARNERS[spec.behaviour]
    trainer = module.make_train(cfg, params, config_cls())
    return jax.device_get(trainer.init(jax.random.key(0)).params)


def save_behaviour_params(path: Path, behaviour_params) -> None:
    """Write ``behaviour_params.msgpack`` (flax serialization) and ``behaviour_params.json``
    (its SHA-256) into the directory ``path``, each atomically (:func:`jaxrrm.files.write_atomic`).

    Plain files, not a :mod:`jaxrrm.checkpoint`: a cache entry is written by process 0 alone
    and read by every process on its own, while the checkpoint manager synchronizes all
    processes of a multi-process run (docs/design.md §4.3)."""
    from flax import serialization

    payload = serialization.to_bytes(behaviour_params)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path / "behaviour_params.msgpack", payload)
    files.write_json(path / "behaviour_params.json",
                     {"schema_version": 1, "sha256": hashlib.sha256(payload).hexdigest()})


def load_behaviour_params(path: Path, template):
    """Read what :func:`save_behaviour_params` wrote, checking the SHA-256.

    Raises:
      jaxrrm.data.DatasetError: missing or corrupted files.
    """
    from flax import serialization

    path = Path(path)
    try:
        payload = (path / "behaviour_params.msgpack").read_bytes()
        want = json.loads((path / "behaviour_params.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError) as e:
        raise data.DatasetError(f"{path}: behaviour parameters missing or unreadable ({e})") \
            from None
    if hashlib.sha256(payload).hexdigest() != want:
        raise data.DatasetError(f"{path / 'behaviour_params.msgpack'}: SHA-256 mismatch "
                                "(corrupted); delete the cache entry to rebuild it")
    return serialization.from_bytes(template, payload)


#: Sub-directories :func:`build_dataset` writes into a checkpoint directory (what
#: :func:`load_or_build` removes from its ``<entry>.partial`` once the entry is saved).
_PARTIAL_PARTS = frozenset({"state", "stream"})


def partial_dir(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams, cache_dir) -> Path:
    """Where :func:`load_or_build` (``resumable=True``) checkpoints the build of ``spec``'s
    cache entry: ``<cache_dir>/<cache_name>.partial``."""
    return Path(cache_dir) / (cache_name(spec, cfg, params) + ".partial")


def load_or_build(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams, cache_dir,
                  progress: Optional[Progress] = None, rebuild: bool = False,
                  checkpoint_dir=None, resumable: bool = False,
                  checkpoint_every_chunks: int = 5) -> Behaviour:
    """``spec``'s dataset from ``cache_dir`` (:func:`cache_name`), made and saved there first
    when absent (or when ``rebuild``).

    The cache entry is a directory holding the dataset (``dataset/``, :func:`jaxrrm.data.save`:
    atomic, checksummed) and, for online behaviours, the learner's parameters. Loading verifies
    every checksum and the environment configuration (:func:`jaxrrm.data.load`).
    ``checkpoint_dir``: passed to :func:`build_dataset` (a killed build resumes there).
    ``resumable`` (online behaviours, single-process runs; ignored otherwise): checkpoint the
    build in :func:`partial_dir` every ``checkpoint_every_chunks`` chunks, so that a call after
    a killed one resumes it (same dataset, bitwise), and remove the build's parts of that
    directory once the entry is saved (``rebuild`` clears them first: a rebuild never resumes). With several processes every process trains the same behaviour and one writes the
    entry, so a shared checkpoint directory would be written by all: not done.

    Raises:
      jaxrrm.data.DatasetError: a cache entry exists but is corrupted (the message says which
        file; delete the entry or pass ``rebuild=True``), or holds another dataset than its
        name says (another spec, environment parameters, behaviour or size).
    """
    t0 = time.perf_counter()
    entry = Path(cache_dir) / cache_name(spec, cfg, params)
    ds_path = entry / "dataset"
    complete = ds_path.exists() and (not spec.online
                                     or (entry / "behaviour_params.json").exists())
    if complete and not rebuild:
        # What the entry holds is checked on its metadata before its arrays are read and
        # verified; a metadata file that fails its own checksum is left to data.load's error.
        meta = data.read_meta(ds_path)
        want = {"spec": files.to_json(dataclasses.asdict(spec)),
                "env_params": data.params_to_json(params), "behaviour": spec.behaviour,
                "n": spec.size}
        intact = meta.get(data.META_SHA_KEY) == data.meta_sha256(meta)
        diffs = [k for k, v in want.items() if meta.get(k) != v] if intact else []
        if not diffs:
            dataset, meta = data.load(ds_path, expected_cfg=cfg)
        if diffs:
            raise data.DatasetError(
                f"{ds_path}: the cache entry was made for another dataset than its name says "
                f"(differing: {', '.join(diffs)}); delete it or pass rebuild=True "
                "(--rebuild-dataset)")
        bparams = (load_behaviour_params(entry, _params_template(spec, cfg, params))
                   if spec.online else None)
        return Behaviour(dataset, meta, ds_path,
                         behaviour_policy(spec, cfg, params, bparams), False,
                         time.perf_counter() - t0)
    partial = None
    if checkpoint_dir is None and resumable and spec.online and jax.process_count() == 1:
        partial = checkpoint_dir = partial_dir(spec, cfg, params, cache_dir)
        if rebuild:  # a rebuild starts afresh: never resume a build of older code
            _clear_parts(partial)
    dataset, meta, bparams = build_dataset(spec, cfg, params, progress,
                                           checkpoint_dir=checkpoint_dir,
                                           checkpoint_every_chunks=checkpoint_every_chunks)
    meta["build_seconds"] = time.perf_counter() - t0
    if not distributed.is_writer():  # every process made the same data; one writes it
        return Behaviour(dataset, meta, None, behaviour_policy(spec, cfg, params, bparams), True,
                         time.perf_counter() - t0)
    entry.mkdir(parents=True, exist_ok=True)
    if bparams is not None:  # parameters first: the dataset's presence marks a full entry
        save_behaviour_params(entry, bparams)
    meta = data.save(ds_path, dataset, meta, overwrite=True)
    if partial is not None:
        try:
            _clear_parts(partial)
        except OSError as e:  # the entry is saved: a failed cleanup is not a failed build
            warnings.warn(f"{partial}: could not remove the build's checkpoint ({e})",
                          stacklevel=2)
    return Behaviour(dataset, meta, ds_path, behaviour_policy(spec, cfg, params, bparams), True,
                     time.perf_counter() - t0)


def _clear_parts(path: Path) -> None:
    """Remove what :func:`build_dataset` writes into a checkpoint directory (``state/``,
    ``stream/``; real directories, not links), then the directory itself if nothing else is
    left in it: files the build did not write stay."""
    import shutil

    for name in sorted(_PARTIAL_PARTS):
        part = path / name
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part)
    try:
        path.rmdir()
    except OSError:
        pass  # absent, or holding someone else's files
