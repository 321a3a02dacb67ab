"""Offline datasets of joint transitions: the in-memory format, collection, disk format, sampling.

A dataset is a :class:`Transitions` pytree of ``n`` joint transitions (field shapes and meaning:
:mod:`jaxrrm.data.transitions`). The package's modules, each importing only those above it:

* :mod:`~jaxrrm.data.transitions`: the schema (:class:`Transitions`, :data:`FIELDS`,
  :func:`field_specs`, :func:`from_step`), its checks (:func:`check_shapes`,
  :func:`check_content`, :class:`DatasetError`) and the conversion of rollouts and behaviour
  streams (:func:`from_rollout`, :func:`flatten_stream`, :func:`slice_stream`,
  :func:`last_transitions`, :func:`episode_order`);
* :mod:`~jaxrrm.data.sampling`: host / device placement (:func:`to_device`, :func:`to_numpy`)
  and minibatches (:func:`sample`);
* :mod:`~jaxrrm.data.mixtures`: :func:`concatenate`, :func:`mixture`, :func:`mixture_counts`;
* :mod:`~jaxrrm.data.storage`: the on-disk format (:func:`save`, :func:`load`,
  :func:`read_meta`, :func:`is_dataset_dir`), the JSON of ``EnvConfig`` / ``EnvParams``
  (:func:`config_to_json`, :func:`params_from_json`, ...) and the checksums
  (:func:`array_sha256`, :func:`fingerprint`, :func:`meta_sha256`);
* :mod:`~jaxrrm.data.collection`: behaviour policies (:data:`BEHAVIOURS`,
  :func:`behaviour_policy`, :func:`uniform_policy`, :func:`epsilon_greedy`) and collection by
  rollouts (:func:`collect_policy`, :func:`collect`, :func:`make_meta`).

Every public name of these modules is available here (``from jaxrrm import data;
data.load(...)``). Module-level settings (``MMAP_MIN_BYTES``, ``CHECK_CHUNK_ROWS``,
``CHUNK_STEPS``) are read from the module that defines them: change them there (e.g.
``jaxrrm.data.storage.MMAP_MIN_BYTES``), not on this package.
"""

from . import collection, mixtures, sampling, storage, transitions
from .collection import (BEHAVIOURS, CHUNK_STEPS, behaviour_policy, collect, collect_policy,
                         epsilon_greedy, make_meta, random_valid_actions, rollout_chunk,
                         sharded_rollout_chunk, uniform_policy)
from .mixtures import concatenate, mixture, mixture_counts
from .sampling import as_numpy, sample, to_device, to_numpy
from .storage import (META_FILE, META_SHA_KEY, MMAP_MIN_BYTES, SCHEMA_VERSION, DatasetExistsError,
                      array_sha256, config_from_json, config_from_meta, config_to_json,
                      fingerprint, is_dataset_dir, load, load_dataset, LoadedDataset,
                      meta_sha256, params_from_json, params_from_meta, params_to_json, read_meta,
                      save)
from .transitions import (CHECK_CHUNK_ROWS, FIELDS, TRAJ_KEYS, DatasetError, Transitions,
                          check_content, check_shapes, episode_order, field_specs,
                          flatten_stream, from_rollout, from_step, last_transitions,
                          slice_stream)


__all__ = [
    "BEHAVIOURS", "CHECK_CHUNK_ROWS", "CHUNK_STEPS", "DatasetError", "DatasetExistsError",
    "FIELDS", "META_FILE", "META_SHA_KEY", "MMAP_MIN_BYTES", "SCHEMA_VERSION", "TRAJ_KEYS",
    "Transitions", "array_sha256", "as_numpy", "behaviour_policy", "check_content",
    "check_shapes", "collect", "collect_policy", "collection", "concatenate", "config_from_json",
    "config_from_meta", "config_to_json", "episode_order", "epsilon_greedy", "field_specs",
    "fingerprint", "flatten_stream", "from_rollout", "from_step", "is_dataset_dir",
    "last_transitions", "load", "load_dataset", "LoadedDataset", "make_meta", "meta_sha256",
    "mixture", "mixture_counts", "mixtures", "params_from_json",
    "params_from_meta", "params_to_json", "random_valid_actions", "read_meta", "rollout_chunk",
    "sample", "sampling", "save", "sharded_rollout_chunk", "slice_stream", "storage",
    "to_device", "to_numpy", "transitions", "uniform_policy",
]
