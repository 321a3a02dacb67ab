"""The command-line options of a sharded or multi-process run (devices, coordinator, process
count and id), and turning them into a :mod:`jaxrrm.distributed` start-up and mesh.

The library (:mod:`jaxrrm.distributed`, :mod:`jaxrrm.sharding`) takes plain arguments; this
module is the argparse side, shared by the experiment entry points. JAX is imported only when
:func:`add_arguments`, :func:`setup` or :func:`describe` is called.
"""

from __future__ import annotations

import argparse
from typing import Optional

from experiments import cli


def devices_arg(text: str):
    """An argparse type: ``"all"`` or an integer ``>= 1`` (a number of devices)."""
    return "all" if text == "all" else cli.int_at_least(text, 1, "a positive integer or 'all'")


def nonneg_int(text: str) -> int:
    """An argparse type: an integer ``>= 0``."""
    return cli.int_at_least(text, 0, "an integer >= 0")


def process_count_arg(text: str) -> int:
    """An argparse type: an integer ``>= 1`` (a number of processes; a text that is no integer
    >= 0 gets :func:`nonneg_int`'s message)."""
    v = nonneg_int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the device and host options (all optional; one process on one device by default):
    ``--devices N|all``, ``--coordinator HOST:PORT``, ``--num-processes N``, ``--process-id I``,
    ``--auto-cluster``."""
    from jaxrrm.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

    g = parser.add_argument_group(
        "devices and hosts", "shard episodes and seeds over devices and processes with JAX's "
        "distributed runtime (see README 'Scaling out'); results do not depend on these")
    g.add_argument("--devices", type=devices_arg, default=None, metavar="N|all",
                   help="devices to shard over, of every process (default: 1 for one process, "
                        "all for a multi-process run); on CPU, more than one needs XLA_FLAGS="
                        "--xla_force_host_platform_device_count=N")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help=f"address of process 0 for a multi-process run (default "
                        f"${ENV_COORDINATOR})")
    g.add_argument("--num-processes", type=process_count_arg, default=None, metavar="N",
                   help=f"number of processes of a multi-process run (default "
                        f"${ENV_NUM_PROCESSES})")
    g.add_argument("--process-id", type=nonneg_int, default=None, metavar="I",
                   help=f"this process, 0..N-1 (default ${ENV_PROCESS_ID})")
    g.add_argument("--auto-cluster", action="store_true",
                   help="let JAX detect the cluster (Slurm, Open MPI, Kubernetes, Cloud TPU) "
                        "for the coordinator, process count and id")


def setup(args):
    """Initialize the distributed runtime from :func:`add_arguments`' options and make the mesh.

    Call it before any other JAX work (before building environment parameters). Options absent
    from ``args`` count as not given.

    Returns:
      None for the default (one process, one device: callers take their unsharded path), else
      the 1-D :class:`jax.sharding.Mesh` over ``--devices`` devices (all of them for a
      multi-process run).

    Raises:
      ValueError: inconsistent options (see :func:`jaxrrm.distributed.initialize`,
        :func:`jaxrrm.sharding.make_mesh`).
    """
    import jax

    from jaxrrm import distributed

    distributed.initialize(getattr(args, "coordinator", None),
                           getattr(args, "num_processes", None),
                           getattr(args, "process_id", None),
                           auto_detect=getattr(args, "auto_cluster", False))
    devices = getattr(args, "devices", None)
    if devices is None:
        devices = "all" if jax.process_count() > 1 else 1
    if devices == "all":
        devices = len(jax.devices())
    if devices == 1 and jax.process_count() == 1:
        return None
    return distributed.make_mesh(devices)


def describe(mesh: Optional[object]) -> dict:
    """JSON-able description of the run's layout (for a run's config file; not for summaries,
    which do not depend on it): ``process_count``, ``process_index``, ``mesh_devices`` (1 without
    a mesh), ``platform`` and ``local_devices`` (their names)."""
    import jax

    from jaxrrm import distributed

    return {"process_count": jax.process_count(), "process_index": jax.process_index(),
            "mesh_devices": 1 if mesh is None else distributed.num_devices(mesh),
            "platform": jax.default_backend(),
            "local_devices": [str(d) for d in jax.local_devices()]}
