"""Scale out: device meshes, episodes and seeds sharded over devices and hosts (docs/design.md §5).

Everything here is JAX's own runtime: a 1-D :class:`jax.sharding.Mesh` named ``"batch"`` over the
devices of every process, :class:`jax.sharding.NamedSharding` placements, :func:`jax.shard_map`
to run a batched function on each device's slice of the batch, and
:func:`jax.distributed.initialize` to join several processes (hosts) into one program. Nothing
is home-made: no sockets, no pickled results, no per-device Python threads. The mesh, placement
and :func:`shard_batched` are :mod:`jaxrrm.sharding`'s (re-exported here); this module adds the
start-up, the sharded rollouts and evaluation, and the sharded trainer.

**What shards.** The library's batched work is a ``vmap`` over a leading axis whose rows are
independent: evaluation *seeds* (:func:`jaxrrm.evaluate.rollout_seeds`, keys ``[S]``), *episodes*
of a rollout (:func:`jaxrrm.env.rollout`, episode keys ``[E]``) and of dataset collection, and
training *seeds* (:class:`jaxrrm.train.TrainState`, every leaf ``[S, ...]``). That leading axis
is split over the ``D`` devices of the mesh (``S/D`` rows per device); everything else (the
environment parameters, the offline dataset, configurations) is replicated. Each device runs the
same compiled program on its rows, with no communication, and the rows are gathered at the end
(an all-gather inside XLA; over the network between hosts). Row ``i`` is computed from row ``i``
of the inputs only, so **results are the unsharded ones whatever the number of devices or
hosts** (to float32 rounding, see *Equality*).

**Multi-host (SPMD).** Every process runs the same script with the same arguments; the mesh
holds the devices of all processes; inputs (keys, parameters, datasets) are built identically on
every process (they come from the same seeds), each process computes its devices' rows, and
gathered results are available on every process. Only one process writes shared outputs:
:func:`is_writer` (process 0). On CPU, cross-process collectives use Gloo
(``jax_cpu_collectives_implementation``, the default of JAX 0.10).

**Equality.** Sharding changes only which device computes a row, never its keys, so sharded
results are the unsharded ones up to float32 rounding: XLA compiles the per-device program for
its own batch size (``B/D`` rows), and on CPU a reduction or a fused elementwise operation may
round differently for another shape (even the *unsharded* program is not bitwise invariant to
the number of seeds). ``tests/test_distributed.py`` (4 CPU devices) holds sharded per-UE rates
to 1e-5 relative of the unsharded ones, so the metrics of docs/design.md §3 agree to that
precision, and parameters and losses after 20 CQL updates to 1e-4. Training is chaotic, so over
long runs a sharded and an unsharded run drift apart like runs on different hardware; their
statistics over seeds do not.

**Divisibility.** The batch must be a multiple of the device count: otherwise a ``ValueError``
names both numbers. Evaluation and rollouts accept ``pad=True``: the keys are padded by repeating
the last one up to the next multiple, and the padded rows are dropped from the results (wasted
work, the same results). Training seeds are never padded (the state's shape is the user's).

Start-up (:func:`initialize`) reads, in this order: explicit arguments (from the command line:
``--coordinator``, ``--num-processes``, ``--process-id`` of ``experiments/cli_distributed.py``),
then the environment variables ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself),
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here; JAX has no variables for these), and
with ``auto_detect`` (``--auto-cluster``) JAX's cluster detection (Slurm, Open MPI, Kubernetes,
Cloud TPU). With none of these it does nothing: one process, default device, no flags.

Shapes: ``D`` devices in the mesh, ``S`` seeds, ``E`` episodes, ``K`` UEs.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import env as envlib
from . import evaluate as evallib
from .config import EnvConfig, EnvParams
# The meshes, placement and shard_batched live in jaxrrm.sharding (which imports no other jaxrrm
# module, so that dataset collection can shard without importing this module); re-exported here.
from .sharding import (BATCH_AXIS, batch_sharding, check_divisible, gather, make_mesh,  # noqa: F401
                       num_devices, padded_size, put_batch, put_replicated, replicated_sharding,
                       shard_batched)

#: Environment variables read by :func:`initialize` (besides JAX's own ``JAX_COORDINATOR_ADDRESS``).
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


# --------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------


def _env_int(name: str) -> Optional[int]:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is invalid: expected an "
                         "integer") from None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Union[int, Sequence[int]]] = None,
               auto_detect: bool = False, initialization_timeout_s: int = 300) -> bool:
    """Join a multi-process (multi-host) JAX program, or do nothing for one process.

    Must run before anything touches a JAX device (``jax.devices()``, creating an array,
    any computation); every process calls it with the same coordinator and process count and
    its own ``process_id``.

    Args:
      coordinator_address: ``"HOST:PORT"`` of process 0 (which starts the coordinator service
        there); default ``$JAX_COORDINATOR_ADDRESS``.
      num_processes: number of processes; default ``$JAX_NUM_PROCESSES``.
      process_id: this process, ``0..num_processes-1``; default ``$JAX_PROCESS_ID``.
      local_device_ids: restrict this process to these local accelerators (default all, or
        ``$JAX_LOCAL_DEVICE_IDS``, which JAX reads).
      auto_detect: let JAX detect the cluster (Slurm, Open MPI, Kubernetes, Cloud TPU) for
        whatever is not given.
      initialization_timeout_s: how long to wait for the other processes.

    Returns:
      True if :func:`jax.distributed.initialize` was called (now or before), False for a
      single-process run (nothing given, or ``num_processes == 1`` without a coordinator).

    Raises:
      ValueError: an inconsistent setting (e.g. several processes but no coordinator), or an
        invalid environment variable.
      RuntimeError: JAX's backend already started (call this first).
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if not auto_detect:
        if coordinator_address is None and (num_processes or 1) == 1 and not process_id:
            return False
        missing = [name for name, v in (("coordinator address (--coordinator or "
                                         f"${ENV_COORDINATOR})", coordinator_address),
                                        (f"number of processes (--num-processes or "
                                         f"${ENV_NUM_PROCESSES})", num_processes),
                                        (f"process id (--process-id or ${ENV_PROCESS_ID})",
                                         process_id)) if v is None]
        if missing:
            raise ValueError("a multi-process run needs " + ", ".join(missing)
                             + " (or --auto-cluster on Slurm / Open MPI / Kubernetes / TPU)")
        if not (isinstance(num_processes, int) and num_processes >= 1):
            raise ValueError(f"num_processes={num_processes!r} is invalid: allowed is an "
                             "integer >= 1")
        if not (isinstance(process_id, int) and 0 <= process_id < num_processes):
            raise ValueError(f"process_id={process_id!r} is invalid: allowed range is "
                             f"0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout_s)
    return True


def is_writer() -> bool:
    """True in the one process that writes shared outputs (process 0; always True for one)."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------------------------
# Sharded rollouts
# --------------------------------------------------------------------------------------------


def _pad_keys(keys, mesh: Mesh, pad: bool, what: str):
    n = int(keys.shape[0])
    if not pad:
        check_divisible(n, mesh, what)
        return keys, n
    total = padded_size(n, mesh)
    if total > n:
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], total - n, axis=0)])
    return keys, n


@functools.lru_cache(maxsize=64)
def _rollout_seeds_fn(cfg: EnvConfig, num_episodes: int, mesh: Mesh):
    def fn(keys, policy, params):
        return evallib.rollout_seeds(keys, policy, params, cfg, num_episodes)

    return shard_batched(fn, mesh, (True, False, False), gather_out=True, what="seeds")


def rollout_seeds(keys, policy: envlib.Policy, params: EnvParams, cfg: EnvConfig,
                  num_episodes: int, mesh: Optional[Mesh] = None, pad: bool = False):
    """:func:`jaxrrm.evaluate.rollout_seeds` with the seeds split over the mesh.

    Args:
      keys: ``[S]`` PRNG keys, one per seed (the same on every process).
      policy, params, cfg, num_episodes: as :func:`jaxrrm.evaluate.rollout_seeds` (the policy
        is a pytree argument, replicated: a :func:`jaxrrm.env.policy_with_params` compiles once
        per ``apply_fn``).
      mesh: a mesh (:func:`make_mesh`); None runs the unsharded function.
      pad: pad the seeds to a multiple of ``D`` (repeating the last key; padded rows dropped)
        instead of raising ``ValueError``.

    Returns:
      ``ue_rates_mbps`` ``[S, E, K]`` float32 and mean episode return ``[S]`` float32, replicated
      on every device (the unsharded values up to float32 rounding; see the module's
      *Equality*).
    """
    if mesh is None:
        return evallib.rollout_seeds(keys, policy, params, cfg, num_episodes)
    keys, n = _pad_keys(keys, mesh, pad, "seeds")
    rates, ret = _rollout_seeds_fn(cfg, int(num_episodes), mesh)(
        keys, envlib.as_pytree_policy(policy), params)
    return (rates, ret) if rates.shape[0] == n else (rates[:n], ret[:n])


@functools.lru_cache(maxsize=64)
def _rollout_fn(cfg: EnvConfig, return_trajectory: bool, mesh: Mesh):
    def fn(ep_keys, policy, params):
        return tuple(envlib.rollout_episodes(ep_keys, policy, params, cfg, return_trajectory))

    return shard_batched(fn, mesh, (True, False, False), gather_out=True, what="episodes")


def rollout(key, policy: envlib.Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
            mesh: Optional[Mesh] = None, return_trajectory: bool = False,
            pad: bool = False) -> envlib.RolloutResult:
    """:func:`jaxrrm.env.rollout` with the episodes split over the mesh: each device runs
    :func:`jaxrrm.env.rollout_episodes` on its slice of the episode keys.

    Episode ``e`` uses ``jax.random.split(key, num_episodes)[e]`` as in the unsharded rollout,
    whatever the device count. ``pad`` as :func:`rollout_seeds` (for the episodes).

    Returns:
      :class:`jaxrrm.env.RolloutResult` of replicated arrays (``ue_rates_mbps`` ``[E, K]``,
      ``rewards`` ``[E, T]``, ``masked_actions`` ``[E]``, optional ``trajectory``).
    """
    if mesh is None:
        return envlib.rollout(key, policy, params, cfg, num_episodes, return_trajectory)
    ep_keys, n = _pad_keys(jax.random.split(key, num_episodes), mesh, pad, "episodes")
    out = _rollout_fn(cfg, bool(return_trajectory), mesh)(
        ep_keys, envlib.as_pytree_policy(policy), params)
    if ep_keys.shape[0] != n:
        out = jax.tree.map(lambda x: x[:n], out)  # (a None trajectory has no leaves)
    return envlib.RolloutResult(*out)


# --------------------------------------------------------------------------------------------
# Training seeds
# --------------------------------------------------------------------------------------------


class ShardedTrainer(NamedTuple):
    """The compiled pieces of a :class:`jaxrrm.train.Trainer` with the seeds split over a mesh.

    Attributes:
      init: ``init(keys [S]) -> TrainState``, every leaf ``[S, ...]`` split over the mesh.
      run_chunk: ``run_chunk(state, dataset) -> (state, metrics)``: the state stays split over
        the mesh; ``metrics`` (``{name: [S, chunk_size]}``, plus ``"nonfinite"``) are replicated.
        Place the dataset once with :func:`put_replicated` (otherwise it is copied every call).
      evaluate: ``evaluate(learner_state, keys [S]) -> {"sum_rate", "p5_rate", "score",
        "return"} -> [S]`` NumPy, the greedy policies on held-out keys (as ``Trainer.evaluate``).
      evaluate_rates: ``evaluate_rates(learner_state, keys [S], num_episodes) -> (ue_rates
        [S, E, K], mean return [S])`` NumPy (as ``Trainer.evaluate_rates``).
      mesh: the mesh.
    """

    init: Callable
    run_chunk: Callable
    evaluate: Callable
    evaluate_rates: Callable
    mesh: Mesh


def shard_trainer(trainer, mesh: Mesh) -> ShardedTrainer:
    """Split the seeds of ``trainer`` (:func:`jaxrrm.train.make_train`) over ``mesh``.

    Uses ``trainer.init``, ``chunk_fn``, ``learner``, ``env_cfg``, ``env_params`` and
    ``train_cfg``. Every function returned accepts unplaced inputs (placed on each call) and
    works across processes.

    Raises:
      ValueError: ``D`` does not divide ``trainer.train_cfg.num_seeds`` (seeds are not padded).
    """
    check_divisible(trainer.train_cfg.num_seeds, mesh, "num_seeds")
    init = shard_batched(trainer.init, mesh, (True,), gather_out=False, what="num_seeds")
    run_chunk = shard_batched(trainer.chunk_fn, mesh, (True, False), gather_out=(False, True),
                              what="num_seeds")
    learner, env_cfg, env_params = trainer.learner, trainer.env_cfg, trainer.env_params

    @functools.lru_cache(maxsize=8)
    def rates_fn(num_episodes: int):
        def eval_rates(ls, keys, params):
            # As jaxrrm.train's eval_rates: each seed's greedy policy on its own key.
            return evallib.rollout_per_seed(keys, learner.policy(ls.params, greedy=True),
                                            params, env_cfg, num_episodes)

        return shard_batched(eval_rates, mesh, (True, True, False), gather_out=True,
                             what="num_seeds")

    def evaluate_rates(learner_state, keys, num_episodes: int):
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, (int, np.integer)) \
                or num_episodes < 1:
            raise ValueError(f"num_episodes={num_episodes!r} is invalid: allowed is an integer "
                             ">= 1")
        return gather(rates_fn(int(num_episodes))(learner_state, keys, env_params))

    def evaluate_seeds(learner_state, keys):
        rates, ret = evaluate_rates(learner_state, keys, trainer.train_cfg.eval_episodes)
        out = evallib.seed_metrics(rates, env_params.score_mu)
        out["return"] = np.asarray(ret, np.float64)
        return out

    return ShardedTrainer(init=init, run_chunk=run_chunk, evaluate=evaluate_seeds,
                          evaluate_rates=evaluate_rates, mesh=mesh)
