"""Where a dataset's leaves live, and minibatches.

Functions that build datasets on the host (:func:`jaxrrm.data.collection.collect_policy`,
:func:`jaxrrm.data.mixtures.mixture`, :func:`jaxrrm.data.mixtures.concatenate`,
:func:`jaxrrm.data.storage.load`) return NumPy-backed leaves (``load``: read-only memory maps of
the files); :func:`to_device` (or ``jax.device_put``) moves a dataset to an accelerator once,
after which :func:`sample` draws minibatches there inside jitted code; :func:`to_numpy` brings
one back to the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .transitions import Transitions


def as_numpy(x) -> np.ndarray:
    """``x`` as a NumPy array on the host: itself if it is one (memory maps included), else a
    device-to-host copy."""
    return x if isinstance(x, np.ndarray) else np.asarray(jax.device_get(x))


def to_numpy(dataset: Transitions) -> Transitions:
    """``dataset`` with NumPy leaves (copied from the device where needed)."""
    return jax.tree.map(as_numpy, dataset)



def to_device(dataset: Transitions, device=None) -> Transitions:
    """Copy a dataset (e.g. the memory maps of :func:`~jaxrrm.data.storage.load`) to a device, once.

    Args:
      dataset: :class:`Transitions` with NumPy or JAX leaves.
      device: a ``jax.Device`` or ``jax.sharding.Sharding``; default the default device.

    Returns:
      :class:`Transitions` with ``jax.Array`` leaves (same shapes and dtypes).
    """
    host = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), dataset)
    return jax.device_put(host, device)


def sample(key, dataset: Transitions, batch_size: int) -> Transitions:
    """A minibatch drawn uniformly with replacement from the rows of ``dataset``.

    jit-compatible with ``batch_size`` static (``jax.jit(sample, static_argnames="batch_size")``,
    or call it inside a jitted update); ``n`` is the (static) leading size of the leaves. Put
    the dataset on the device first (:func:`to_device`): NumPy leaves passed into a jitted call
    are copied to the device on every call.

    Args:
      key: PRNG key.
      dataset: :class:`Transitions` with ``n >= 1`` rows.
      batch_size: rows to draw (static int >= 1).

    Returns:
      :class:`Transitions` with ``batch_size`` rows (JAX arrays); row ``b`` is dataset row
      ``randint(key, [batch_size], 0, n)[b]``.
    """
    n = dataset.size
    if n < 1:
        raise ValueError("cannot sample from an empty dataset")
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], dataset)

