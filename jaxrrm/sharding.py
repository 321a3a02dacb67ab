"""Device meshes, shardings, placement and gathering of pytrees, and batched functions split
over a mesh (JAX's own runtime: :class:`jax.sharding.Mesh`, :class:`jax.sharding.NamedSharding`,
:func:`jax.shard_map`).

The mesh is 1-D, its one axis :data:`BATCH_AXIS` (``"batch"``) over ``D`` devices of every
process. A *batched* leaf has the batch as leading axis ``[B, ...]`` and is split over the mesh
(``B/D`` rows per device; ``D`` must divide ``B``, :func:`check_divisible`); everything else is
replicated (a full copy on every device). Placement works in single- and multi-process runs:
every process passes the same host values and fills its own devices. What sharding means for
results (the unsharded ones to float32 rounding) and the multi-process start-up are in
:mod:`jaxrrm.distributed`.

This module imports nothing else of jaxrrm, so that any module (dataset collection, training)
can shard its batched work.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

#: Name of the mesh axis the batch (seeds, episodes) is split over.
BATCH_AXIS = "batch"


# --------------------------------------------------------------------------------------------
# Meshes and shardings
# --------------------------------------------------------------------------------------------


def make_mesh(num_devices: Optional[int] = None, axis_name: str = BATCH_AXIS,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices of all processes.

    Args:
      num_devices: how many devices (default: all of ``jax.devices()``, every process's). With
        several processes it must be a multiple of the process count, and each process
        contributes ``num_devices / process_count`` of its local devices.
      axis_name: the mesh axis name (:data:`BATCH_AXIS`).
      devices: explicit devices (overrides ``num_devices``).

    Returns:
      :class:`jax.sharding.Mesh` with one ``Auto`` axis of size ``D``, devices ordered by
      process, then by local id.

    Raises:
      ValueError: more devices asked for than exist (with the CPU hint), or not a multiple of
        the process count.
    """
    if devices is None:
        all_devices = jax.devices()
        nproc = jax.process_count()
        if num_devices is None:
            num_devices = len(all_devices)
        if isinstance(num_devices, bool) or not isinstance(num_devices, (int, np.integer)) \
                or num_devices < 1:
            raise ValueError(f"num_devices={num_devices!r} is invalid: allowed is an integer "
                             ">= 1")
        num_devices = int(num_devices)
        if num_devices > len(all_devices):
            hint = ""
            if jax.default_backend() == "cpu":
                hint = (f"; on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count"
                        f"={num_devices // nproc} to split the host into that many devices")
            raise ValueError(f"num_devices={num_devices} is more than the {len(all_devices)} "
                             f"{jax.default_backend()} device(s) available to "
                             f"{nproc} process(es){hint}")
        if num_devices % nproc:
            raise ValueError(f"num_devices={num_devices} is not a multiple of the {nproc} "
                             "processes: every process must hold the same number of devices")
        per = num_devices // nproc
        by_proc = {}
        for d in sorted(all_devices, key=lambda d: (d.process_index, d.id)):
            by_proc.setdefault(d.process_index, []).append(d)
        devices = [d for p in sorted(by_proc) for d in by_proc[p][:per]]
    devices = list(devices)
    return Mesh(np.array(devices, dtype=object), (axis_name,), axis_types=(AxisType.Auto,))


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D mesh, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def num_devices(mesh: Mesh) -> int:
    """``D``, the number of devices of the mesh."""
    return int(mesh.devices.size)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, other axes whole: ``NamedSharding(mesh, P("batch"))``."""
    return NamedSharding(mesh, P(_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh: ``NamedSharding(mesh, P())``."""
    return NamedSharding(mesh, P())


def check_divisible(n: int, mesh: Mesh, what: str = "batch") -> None:
    """Raise ``ValueError`` naming ``what``, ``n`` and ``D`` unless ``D`` divides ``n``."""
    d = num_devices(mesh)
    if n % d:
        lo, hi = (n // d) * d, -(-n // d) * d
        raise ValueError(
            f"{what}={n} is not a multiple of the {d} devices of the mesh: each device takes an "
            f"equal share, so use a multiple of {d} (e.g. {hi}" + (f" or {lo}" if lo else "")
            + "), fewer devices (--devices), or pad=True where offered (evaluation and rollouts)")


def padded_size(n: int, mesh: Mesh) -> int:
    """The smallest multiple of ``D`` that is ``>= n``."""
    d = num_devices(mesh)
    return -(-n // d) * d


# --------------------------------------------------------------------------------------------
# Placement and gathering (single- and multi-process)
# --------------------------------------------------------------------------------------------


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _place_leaf(x, sharding: NamedSharding):
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    # Several processes: every process builds the same global array from its host copy, each
    # filling its own devices (the canonical multi-controller way; no cross-host transfer).
    if _is_key(x):
        impl = jax.random.key_impl(x)
        data = _place_leaf(np.asarray(jax.random.key_data(x)), sharding)
        return jax.jit(functools.partial(jax.random.wrap_key_data, impl=impl),
                       out_shardings=sharding)(data)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def put_batch(tree, mesh: Mesh, what: str = "batch"):
    """Place a pytree with its leaves' leading axis split over the mesh.

    Args:
      tree: leaves ``[B, ...]`` (NumPy, JAX or PRNG key arrays), the same on every process.
      mesh: the mesh (``D`` must divide ``B``).
      what: the batch's name for the error message.

    Returns:
      The same pytree of global ``jax.Array`` with sharding :func:`batch_sharding`.
    """
    sh = batch_sharding(mesh)

    def place(x):
        if np.ndim(x) < 1:
            raise ValueError(f"{what}: cannot split a scalar over the mesh")
        check_divisible(int(np.shape(x)[0]), mesh, what)
        return _place_leaf(x, sh)

    return jax.tree.map(place, tree)


def put_replicated(tree, mesh: Mesh):
    """Place a pytree (the same on every process) with a full copy on every device of the mesh
    (e.g. :class:`EnvParams`, an offline dataset: do it once, not per call)."""
    sh = replicated_sharding(mesh)
    return jax.tree.map(lambda x: _place_leaf(x, sh), tree)


def gather(tree):
    """Every leaf as a host NumPy array, whole, on every process (PRNG keys as key arrays on the
    default device). Collective in a multi-process run: every process must call it."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if _is_key(x):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        if x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


# --------------------------------------------------------------------------------------------
# Batched functions on the mesh
# --------------------------------------------------------------------------------------------


def shard_batched(fn: Callable, mesh: Mesh, in_batched, gather_out=True, what: str = "batch"
                  ) -> Callable:
    """Run a row-independent batched function with its batch split over the mesh.

    ``fn(*args)`` must be *batch-separable*: its outputs all have the batch as leading axis and
    row ``i`` of every output depends on row ``i`` of the batched arguments and on the other
    arguments only (any ``vmap`` over the batch is). Each device runs ``fn`` (compiled once) on
    its ``B/D`` rows; nothing is exchanged until the optional gather of the outputs.

    Args:
      fn: the function (static arguments already bound, e.g. with ``functools.partial``).
      mesh: a 1-D mesh (:func:`make_mesh`).
      in_batched: tuple with one bool per positional argument, or a pytree prefix of the
        arguments: True = leading axis split over the mesh, False = replicated.
      gather_out: True = outputs replicated on every device (readable on every process);
        False = left split over the mesh (e.g. a train state that stays on its devices); or a
        pytree prefix of the outputs (e.g. ``(False, True)``).
      what: the batch's name, for the divisibility error.

    Returns:
      ``wrapped(*args)``: places arguments that are not already placed (NumPy or JAX; the same
      values on every process), checks ``D`` divides every batched leading axis
      (``ValueError`` otherwise) and returns global ``jax.Array`` outputs.
    """
    axis = _axis(mesh)
    in_batched = tuple(in_batched)
    bsh, rsh = batch_sharding(mesh), replicated_sharding(mesh)
    in_specs = jax.tree.map(lambda b: P(axis) if b else P(), in_batched)
    out_sh = jax.tree.map(lambda g: rsh if g else bsh, gather_out)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(axis),
                           check_vma=False)
    jitted = jax.jit(mapped, out_shardings=out_sh)

    @functools.wraps(fn)
    def wrapped(*args):
        if len(args) != len(in_batched):
            raise TypeError(f"expected {len(in_batched)} positional arguments, got {len(args)}")
        placed = jax.tree.map(lambda b, sub: put_batch(sub, mesh, what) if b
                              else put_replicated(sub, mesh), in_batched, args)
        return jitted(*placed)

    wrapped.jitted = jitted
    return wrapped
