"""End-to-end building blocks of the experiments: behaviour datasets made once and cached, offline
learners trained over many seeds, and every method evaluated on the same held-out episodes.

The experiment entry points (:mod:`experiments.ctde` and the studies) are thin shells around
these functions: they parse arguments, draw progress bars and write files; everything that decides
*what* is trained and evaluated lives here, so that the studies and the main job cannot drift
apart.

Datasets
--------
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

Evaluation protocol
-------------------
Every method is evaluated on the *test keys* of the run (:func:`jaxrrm.evaluate.seed_keys`): seed
``s`` of every method sees the same ``E`` episodes, so per-seed comparisons are paired and the
relative score (TDM = 1) is computed seed by seed. Learned policies are greedy. The learning
curves recorded during training use other, salted keys (:func:`jaxrrm.train.eval_keys_for`), and
nothing is ever selected on the test episodes: the reported learner is the one after the last
update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import numpy as np

from . import baselines, data, distributed, evaluate, files, train, train_online
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


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cache_name(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams) -> str:
    """Directory name of ``spec``'s dataset in a cache: ``<behaviour>-<size>-<hash16>``, the hash
    being the SHA-256 of the spec, the environment configuration and parameters, and the
    dataset schema version (any change of them gives another name)."""
    h = _sha256_json({"spec": dataclasses.asdict(spec), "env_config": data.config_to_json(cfg),
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
    (its SHA-256) into the directory ``path``, each atomically."""
    from flax import serialization

    payload = serialization.to_bytes(behaviour_params)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path / "behaviour_params.msgpack", payload)
    files.write_atomic(path / "behaviour_params.json", json.dumps(
        {"schema_version": 1, "sha256": hashlib.sha256(payload).hexdigest()}).encode())


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


def load_or_build(spec: DatasetSpec, cfg: EnvConfig, params: EnvParams, cache_dir,
                  progress: Optional[Progress] = None, rebuild: bool = False,
                  checkpoint_dir=None) -> Behaviour:
    """``spec``'s dataset from ``cache_dir`` (:func:`cache_name`), made and saved there first
    when absent (or when ``rebuild``).

    The cache entry is a directory holding the dataset (``dataset/``, :func:`jaxrrm.data.save`:
    atomic, checksummed) and, for online behaviours, the learner's parameters. Loading verifies
    every checksum and the environment configuration (:func:`jaxrrm.data.load`).
    ``checkpoint_dir``: passed to :func:`build_dataset` (a killed build resumes there).

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
    dataset, meta, bparams = build_dataset(spec, cfg, params, progress,
                                           checkpoint_dir=checkpoint_dir)
    meta["build_seconds"] = time.perf_counter() - t0
    if not distributed.is_writer():  # every process made the same data; one writes it
        return Behaviour(dataset, meta, None, behaviour_policy(spec, cfg, params, bparams), True,
                         time.perf_counter() - t0)
    entry.mkdir(parents=True, exist_ok=True)
    if bparams is not None:  # parameters first: the dataset's presence marks a full entry
        save_behaviour_params(entry, bparams)
    meta = data.save(ds_path, dataset, meta, overwrite=True)
    return Behaviour(dataset, meta, ds_path, behaviour_policy(spec, cfg, params, bparams), True,
                     time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Methods: train and evaluate
# --------------------------------------------------------------------------------------------

class MethodResult(NamedTuple):
    """One method's results on the test keys.

    Attributes:
      per_seed: ``{"sum_rate", "p5_rate", "score", "return"} -> [S]`` float64
        (:func:`jaxrrm.evaluate.seed_metrics`; ``relative_score`` added by
        :func:`jaxrrm.evaluate.add_relative`).
      ue_rates: ``[S, E, K]`` float32, per-UE average rates [Mbit/s] of every test episode.
      history: the trainer's history (learning curves; :class:`jaxrrm.train.TrainResult`), or
        ``None`` for fixed policies.
      train_seconds: wall time of training (0 for fixed policies), compile time included.
      eval_seconds: wall time of the test evaluation.
    """

    per_seed: Dict[str, np.ndarray]
    ue_rates: np.ndarray
    history: Optional[Dict[str, Any]]
    train_seconds: float
    eval_seconds: float


def evaluate_policy(policy, test_keys, cfg: EnvConfig, params: EnvParams,
                    num_episodes: int, mesh=None) -> MethodResult:
    """A fixed policy (a baseline or the behaviour policy) on the test keys ``[S]``: seed ``s``
    runs ``num_episodes`` episodes from ``test_keys[s]``. With a ``mesh``
    (:func:`jaxrrm.distributed.make_mesh`) the seeds are split over its devices (padded when
    they do not divide) and gathered."""
    t0 = time.perf_counter()
    if mesh is None:
        rates, ret = evaluate.rollout_seeds(test_keys, policy, params, cfg, num_episodes)
    else:
        rates, ret = distributed.gather(distributed.rollout_seeds(
            test_keys, policy, params, cfg, num_episodes, mesh, pad=True))
    rates = np.asarray(jax.block_until_ready(rates))
    per_seed = evaluate.seed_metrics(rates, params.score_mu)
    per_seed["return"] = np.asarray(ret, np.float64)
    return MethodResult(per_seed, rates, None, 0.0, time.perf_counter() - t0)


def train_and_evaluate(train_key, dataset, cfg: EnvConfig, params: EnvParams, learner_cfg,
                       train_cfg: train.TrainConfig, test_keys, num_episodes: int,
                       callback=None, progress: bool = False,
                       progress_desc: str = "training", mesh=None) -> MethodResult:
    """Train ``train_cfg.num_seeds`` seeds of ``learner_cfg`` on ``dataset`` in one vmapped run
    (:func:`jaxrrm.train.train`, learning curves on salted keys), then evaluate seed ``s``'s
    greedy policy on ``test_keys[s]`` for ``num_episodes`` episodes. With a ``mesh`` the seeds
    are split over its devices (:func:`jaxrrm.train.make_train`).

    Raises:
      ValueError: ``test_keys`` has not ``train_cfg.num_seeds`` keys.
      jaxrrm.train.NonFiniteLossError: a loss became non-finite (see :func:`jaxrrm.train.train`).
    """
    s = train_cfg.num_seeds
    if len(test_keys) != s:
        raise ValueError(f"test_keys has {len(test_keys)} keys; train_cfg.num_seeds is {s}")
    trainer = train.make_train(cfg, params, learner_cfg, train_cfg, mesh=mesh)
    t0 = time.perf_counter()
    res = trainer.train(train_key, dataset, callback=callback, progress=progress,
                        progress_desc=progress_desc)
    jax.block_until_ready(res.state)
    t1 = time.perf_counter()
    rates, ret = trainer.evaluate_rates(res.state.learner, test_keys, num_episodes)
    rates = np.asarray(jax.block_until_ready(rates))
    per_seed = evaluate.seed_metrics(rates, params.score_mu)
    per_seed["return"] = np.asarray(ret, np.float64)
    return MethodResult(per_seed, rates, res.history, t1 - t0, time.perf_counter() - t1)


def summarize(results: Dict[str, MethodResult], reference: str = "tdm") -> Dict[str, dict]:
    """``{method: {metric: {"mean", "ci95"}}}`` over seeds, with the paired relative score
    (``reference`` = 1 seed by seed; skipped when ``reference`` is absent) and the return.

    Adds ``relative_score`` to each result's ``per_seed`` in place."""
    per_seed = {n: r.per_seed for n, r in results.items()}
    if reference in per_seed:
        evaluate.add_relative(per_seed, reference)
    out = {}
    for name, m in per_seed.items():
        out[name] = evaluate.summarize(m, (*evaluate.METRIC_NAMES, "return"))
    return out


def task_name(cfg: EnvConfig, params: EnvParams) -> str:
    """A short name of a scenario for reports: ``"4ap-24ue-500m-umi-pf"``."""
    area = np.asarray(params.area_side_m, np.float64)
    area_txt = f"{float(area):g}m" if area.ndim == 0 else "batched-area"
    return (f"{cfg.num_aps}ap-{cfg.num_ues}ue-{area_txt}-{cfg.pathloss_model}-{cfg.reward}")


def to_marl_eval(results: Dict[str, "MethodResult"], task: str, env_name: str = "jaxrrm",
                 metrics_: Sequence[str] = ("score", "sum_rate", "p5_rate", "return")) -> dict:
    """Results in the JSON layout of InstaDeep's marl-eval (``{env: {task: {algorithm:
    {"run_<s>": {"step_<v>": {"step_count", metric: [values]}, "absolute_metrics": {metric:
    [values]}}}}}}``), so its aggregation and plotting tools read them.

    One run is one seed. ``absolute_metrics`` hold the seed's test metrics (one value per
    metric: the seed's evaluation over its test episodes, as in ``per_seed.json``); a learner's
    ``step_<v>`` entries are its learning curve (validation episodes) after ``step_count``
    gradient updates. Fixed policies have only ``absolute_metrics``.
    """
    algos = {}
    for name, r in results.items():
        num_seeds = len(next(iter(r.per_seed.values())))
        runs = {}
        for s in range(num_seeds):
            run = {}
            if r.history is not None and len(r.history["eval_updates"]):
                for v, step in enumerate(np.asarray(r.history["eval_updates"]).tolist()):
                    run[f"step_{v}"] = {"step_count": int(step), **{
                        k: [float(r.history["eval"][k][v][s])] for k in metrics_
                        if k in r.history["eval"]}}
            run["absolute_metrics"] = {k: [float(r.per_seed[k][s])] for k in metrics_
                                       if k in r.per_seed}
            runs[f"run_{s}"] = run
        algos[name] = runs
    return {env_name: {task: algos}}


# --------------------------------------------------------------------------------------------
# Studies: sub-datasets and evaluation of one trained learner under other environments
# --------------------------------------------------------------------------------------------

def last_transitions(dataset: data.Transitions, n: int) -> data.Transitions:
    """The last ``n`` transitions (rows) of ``dataset``, as views of its arrays.

    For a dataset sliced from an online learner's training stream (:func:`build_dataset`,
    ``source="stream"``), the last ``n`` rows are the last ``n`` transitions that learner
    generated, i.e. the dataset of size ``n`` the same training run would have given: a study
    of the dataset size can train the behaviour once, for the largest size, and take the
    smaller datasets from it (nested, so each is the best-trained part of the larger ones).

    Raises:
      ValueError: ``n`` is not an integer in ``[1, dataset.size]``.
    """
    require(is_int(n) and 1 <= n <= dataset.size, "n", f"an integer in [1, {dataset.size}]", n)
    return jax.tree.map(lambda x: x[x.shape[0] - int(n):], dataset)


def check_same_shapes(cfg: EnvConfig, other: EnvConfig) -> None:
    """Raise ``ValueError`` unless a policy learned under ``cfg`` can act under ``other``: the
    same number of APs, candidates per AP and actions (observation, state and action shapes)."""
    for name in ("num_aps", "num_candidates", "allow_idle"):
        if getattr(cfg, name) != getattr(other, name):
            raise ValueError(f"test environment has {name}={getattr(other, name)!r}, the "
                             f"training environment {getattr(cfg, name)!r}: the learned "
                             "networks' shapes would not fit")


def train_and_evaluate_envs(train_key, dataset, cfg: EnvConfig, params: EnvParams, learner_cfg,
                            train_cfg: train.TrainConfig, test_keys, num_episodes: int,
                            test_envs: Dict[str, Tuple[EnvConfig, EnvParams]],
                            callback=None, progress: bool = False,
                            progress_desc: str = "training",
                            mesh=None) -> Dict[str, MethodResult]:
    """As :func:`train_and_evaluate`, but the learners trained once under ``(cfg, params)`` are
    evaluated under every test environment of ``test_envs`` (``{name: (cfg, params)}``, e.g.
    the training environment with UE mobility on, or with another reward to read the returns
    under it), each on the same ``test_keys``.

    Returns:
      ``{name: MethodResult}`` in the order of ``test_envs``; all share the training history
      and ``train_seconds``.

    Raises:
      ValueError: a test environment's shapes differ from ``cfg``'s (:func:`check_same_shapes`)
        or ``test_keys`` has not ``train_cfg.num_seeds`` keys.
      jaxrrm.train.NonFiniteLossError: a loss became non-finite.
    """
    s = train_cfg.num_seeds
    if len(test_keys) != s:
        raise ValueError(f"test_keys has {len(test_keys)} keys; train_cfg.num_seeds is {s}")
    for tcfg, _ in test_envs.values():
        check_same_shapes(cfg, tcfg)
    trainer = train.make_train(cfg, params, learner_cfg, train_cfg, mesh=mesh)
    t0 = time.perf_counter()
    res = trainer.train(train_key, dataset, callback=callback, progress=progress,
                        progress_desc=progress_desc)
    jax.block_until_ready(res.state)
    train_seconds = time.perf_counter() - t0
    out = {}
    for name, (tcfg, tparams) in test_envs.items():
        t1 = time.perf_counter()
        tester = train.make_train(tcfg, tparams, learner_cfg, train_cfg, mesh=mesh)
        rates, ret = tester.evaluate_rates(res.state.learner, test_keys, num_episodes)
        rates = np.asarray(jax.block_until_ready(rates))
        per_seed = evaluate.seed_metrics(rates, tparams.score_mu)
        per_seed["return"] = np.asarray(ret, np.float64)
        out[name] = MethodResult(per_seed, rates, res.history, train_seconds,
                                 time.perf_counter() - t1)
    return out


def paired_difference(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Mean and 95% CI half-width over seeds of ``a - b`` (per-seed metrics of two methods on
    the same test episodes, so the difference is paired), and whether the interval excludes 0
    (``"sign"``: +1 above, -1 below, 0 inconclusive)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean, ci = evaluate.metrics.mean_ci95(d)
    ci_ = ci if np.isfinite(ci) else np.inf
    sign = 1 if mean - ci_ > 0 else (-1 if mean + ci_ < 0 else 0)
    return {"mean": float(mean), "ci95": float(ci), "sign": sign}


def best_heuristic(per_seed: Dict[str, Dict[str, np.ndarray]], metric: str = "score"):
    """The name of the non-oracle baseline (:data:`jaxrrm.baselines.HEURISTICS`) of largest mean
    ``metric`` among ``per_seed``'s methods, or None if there is none."""
    names = [n for n in baselines.HEURISTICS if n in per_seed]
    if not names:
        return None
    return max(names, key=lambda n: float(np.mean(per_seed[n][metric])))


def headroom_fraction(score: np.ndarray, heuristic: np.ndarray, oracle: np.ndarray
                      ) -> Dict[str, float]:
    """Fraction of the oracle's headroom a method captures, paired per seed:

    .. math:: f_s = \\frac{x_s - h_s}{o_s - h_s}

    with ``x`` the method's, ``h`` the best heuristic's and ``o`` the oracle's score on seed
    ``s`` (same test episodes); mean and Student-t 95% CI of ``f`` over seeds. 0 is the best
    heuristic, 1 the (myopic) oracle.

    The fraction is only defined where the oracle is above the heuristic: if ``o_s <= h_s`` on
    any seed (a tiny or odd scenario where the myopic oracle does not lead), mean and CI are
    ``None`` and ``"undefined_seeds"`` counts those seeds, instead of a ratio whose sign flips.
    """
    x, h, o = (np.asarray(v, np.float64) for v in (score, heuristic, oracle))
    bad = int(np.sum(~(o > h)))
    if bad:
        return {"mean": None, "ci95": None, "undefined_seeds": bad}
    f = (x - h) / (o - h)
    mean, ci = evaluate.metrics.mean_ci95(f)
    return {"mean": float(mean), "ci95": float(ci)}


def versus_best_heuristic(per_seed: Dict[str, Dict[str, np.ndarray]],
                          oracle: str = "exhaustive") -> Optional[dict]:
    """Every method against the best heuristic (:func:`best_heuristic`), paired per seed.

    Returns ``{"best_heuristic": name, "oracle": name or None, "methods": {method: {"minus":
    paired score difference in Mbit/s, "percent": the same relative to the heuristic's score in
    %, "probability_of_improvement": P(a seed of the method scores above a seed of the
    heuristic), :func:`jaxrrm.metrics.probability_of_improvement`, "headroom":
    :func:`headroom_fraction` (only with the oracle)}}}``, or None without any heuristic.
    """
    best = best_heuristic(per_seed)
    if best is None:
        return None
    h = np.asarray(per_seed[best]["score"], np.float64)
    has_oracle = oracle in per_seed
    out = {}
    for name, m in per_seed.items():
        if name == best:
            continue
        x = np.asarray(m["score"], np.float64)
        entry = {"minus": paired_difference(x, h),
                 "percent": paired_difference(100.0 * x / h, np.full_like(h, 100.0)),
                 "probability_of_improvement": evaluate.metrics.probability_of_improvement(x, h)}
        if has_oracle and name != oracle:
            entry["headroom"] = headroom_fraction(x, h, per_seed[oracle]["score"])
        out[name] = entry
    return {"best_heuristic": best, "oracle": oracle if has_oracle else None, "methods": out}
