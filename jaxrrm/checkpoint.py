"""Checkpoints of the training state with orbax-checkpoint (DESIGN.md §4, issue 4).

A checkpoint directory holds one sub-directory per saved step (``<directory>/<step>/``), each
with two orbax items:

* ``state``: every leaf of the state pytree (e.g. a :class:`jaxrrm.train.TrainState`: params,
  target params, optimizer states, step counters and RNG keys) as a flat ``{"000000": array}``
  mapping, saved with ``ocp.args.StandardSave``. Typed PRNG keys (``jax.random.key``) are stored
  as their ``jax.random.key_data`` and wrapped back (same key implementation as the template)
  on :func:`restore`. Arrays are stored losslessly, so a restored state is bitwise equal to the
  saved one.
* ``meta``: a JSON dict (``ocp.args.JsonSave``) holding the schema version, the jaxrrm version,
  the configurations and the dataset fingerprint (see :func:`make_meta`), the structure of the
  state (leaf paths, shapes, dtypes) and whatever else the caller adds (the trainer stores its
  learning-curve history there).

Writes are atomic: orbax writes a step into a temporary directory and renames it when it is
complete (and :func:`save` waits for that), and :func:`latest_step` / :func:`restore` only
consider finalized steps, so a checkpoint interrupted mid-write is never picked up. Only the
``keep`` most recent steps are kept.

:func:`restore` refuses (:class:`CheckpointError`) to restore a checkpoint whose configurations
or dataset fingerprint differ from the expected ones, naming the differing fields, or whose state
structure differs from the template's; and raises :class:`CheckpointError` when the directory has
no (finalized) checkpoint. Use :func:`latest_step` (``None`` when there is none) to test first.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

#: Version of the checkpoint layout / meta schema; bumped on incompatible changes.
SCHEMA_VERSION = 1

#: Meta keys that are recorded but never compared by :func:`restore`.
UNCHECKED_META = frozenset({"jaxrrm_version", "state_structure", "history"})

_STATE, _META = "state", "meta"


class CheckpointError(RuntimeError):
    """No checkpoint to restore, or one that does not match the run that wants to resume it."""


# ------------------------------------------------------------------------------------------------
# Meta
# ------------------------------------------------------------------------------------------------

def to_jsonable(x: Any) -> Any:
    """A JSON-able form of a (nested) dataclass / dict / tuple / NumPy value: dataclasses become
    dicts (with a ``"__class__"`` entry naming the class), tuples lists."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        d = {f.name: to_jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
        return {"__class__": type(x).__name__, **d}
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, jax.Array)):
        return np.asarray(x).tolist()
    return x


def key_to_json(key) -> List:
    """The raw data of a PRNG key (typed or legacy ``uint32``) as nested lists of ints."""
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).astype(np.int64).tolist()


def make_meta(env_cfg, learner_cfg, train_cfg, dataset_fingerprint: str,
              **extra) -> Dict[str, Any]:
    """The meta dict of a training run: schema and jaxrrm versions, the three configurations as
    JSON-able dicts, the dataset fingerprint (:func:`jaxrrm.data.fingerprint`) and ``extra``
    (JSON-able; e.g. the training key)."""
    from . import __version__
    meta = {"schema_version": SCHEMA_VERSION, "jaxrrm_version": __version__,
            "env_config": to_jsonable(env_cfg), "learner_config": to_jsonable(learner_cfg),
            "train_config": to_jsonable(train_cfg), "dataset_fingerprint": dataset_fingerprint}
    meta.update({k: to_jsonable(v) for k, v in extra.items()})
    return json.loads(json.dumps(meta))  # normalized exactly as it will be read back


def meta_diff(stored: Any, expected: Any, prefix: str = "") -> List[str]:
    """Human-readable differences ``"path: stored X, expected Y"`` between two JSON values."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(stored) | set(expected), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in stored:
                out.append(f"{name}: missing in the checkpoint, expected {expected[k]!r}")
            elif k not in expected:
                out.append(f"{name}: stored {stored[k]!r}, not expected")
            else:
                out.extend(meta_diff(stored[k], expected[k], name))
        return out
    if isinstance(stored, list) and isinstance(expected, list) and len(stored) == len(expected):
        out = []
        for i, (a, b) in enumerate(zip(stored, expected)):
            out.extend(meta_diff(a, b, f"{prefix}[{i}]"))
        return out
    if stored != expected:
        return [f"{prefix or '<meta>'}: stored {stored!r}, expected {expected!r}"]
    return []


# ------------------------------------------------------------------------------------------------
# State <-> flat arrays
# ------------------------------------------------------------------------------------------------

def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(state) -> Tuple[Dict[str, np.ndarray], List[Dict[str, Any]]]:
    paths_leaves, _ = jax.tree_util.tree_flatten_with_path(state)
    flat, structure = {}, []
    for i, (path, leaf) in enumerate(paths_leaves):
        is_key = _is_key(leaf)
        arr = np.asarray(jax.device_get(jax.random.key_data(leaf) if is_key else leaf))
        flat[f"{i:06d}"] = arr
        structure.append({"path": jax.tree_util.keystr(path), "shape": list(arr.shape),
                          "dtype": str(arr.dtype), "prng_key": bool(is_key)})
    return flat, structure


def _structure_diff(stored: List[Dict[str, Any]], expected: List[Dict[str, Any]]) -> List[str]:
    if len(stored) != len(expected):
        return [f"number of leaves: stored {len(stored)}, expected {len(expected)}"]
    return [f"{e['path']}: stored {s}, expected {e}" for s, e in zip(stored, expected) if s != e]


# ------------------------------------------------------------------------------------------------
# Save / restore
# ------------------------------------------------------------------------------------------------

def _manager(directory, keep: Optional[int] = None, create: bool = True) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                        enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=opts)


def latest_step(directory) -> Optional[int]:
    """The newest finalized step in ``directory``, or ``None`` (no directory / no checkpoint).
    Unfinished (temporary) step directories are ignored."""
    if not os.path.isdir(directory):
        return None
    mgr = _manager(directory, create=False)
    try:
        return mgr.latest_step()
    finally:
        mgr.close()


def all_steps(directory) -> List[int]:
    """The finalized steps in ``directory`` (ascending; empty when none)."""
    if not os.path.isdir(directory):
        return []
    mgr = _manager(directory, create=False)
    try:
        return sorted(mgr.all_steps())
    finally:
        mgr.close()


def save(directory, step: int, state, meta: Mapping[str, Any], keep: int = 3) -> None:
    """Save ``state`` (any pytree of arrays / typed PRNG keys) and ``meta`` (JSON-able dict;
    ``schema_version`` is added if absent) as step ``step`` of ``directory`` (created if
    needed), atomically and synchronously; then only the ``keep`` most recent steps are kept.
    Overwrites nothing: saving an existing step raises :class:`CheckpointError`."""
    step = int(step)
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    flat, structure = _flatten(state)
    meta = json.loads(json.dumps(to_jsonable(dict(meta))))
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta["state_structure"] = structure
    mgr = _manager(directory, keep=keep)
    try:
        if step in mgr.all_steps():
            raise CheckpointError(f"{directory}: step {step} already has a checkpoint")
        mgr.save(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(flat),
                                                   _META: ocp.args.JsonSave(meta)}), force=True)
        mgr.wait_until_finished()
    finally:
        mgr.close()


def restore_meta(directory, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
    """``(meta, step)`` of step ``step`` (default: the latest) without reading the state.

    Raises:
      CheckpointError: no (such) finalized checkpoint in ``directory``.
    """
    steps = all_steps(directory)
    if not steps:
        raise CheckpointError(f"no checkpoint to restore in {directory}")
    if step is None:
        step = steps[-1]
    elif int(step) not in steps:
        raise CheckpointError(f"{directory}: no checkpoint of step {step} (have {steps})")
    mgr = _manager(directory, create=False)
    try:
        out = mgr.restore(int(step), args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
    finally:
        mgr.close()
    return dict(out[_META]), int(step)


def check_meta(meta: Mapping[str, Any], expected_meta: Mapping[str, Any],
               where: str = "") -> None:
    """Raise :class:`CheckpointError` naming every differing field when the stored ``meta``
    differs from ``expected_meta`` in any key of ``expected_meta`` (the schema version always;
    keys in :data:`UNCHECKED_META` never)."""
    expected = json.loads(json.dumps(to_jsonable(dict(expected_meta))))
    expected.setdefault("schema_version", SCHEMA_VERSION)
    keys = [k for k in expected if k not in UNCHECKED_META]
    diffs = meta_diff({k: meta[k] for k in keys if k in meta}, {k: expected[k] for k in keys})
    if diffs:
        raise CheckpointError(
            f"refusing to resume from the checkpoint{' in ' + where if where else ''}: it was "
            f"written by another configuration or dataset; differing fields:\n  "
            + "\n  ".join(diffs))


def restore(directory, like_state, expected_meta: Optional[Mapping[str, Any]] = None,
            step: Optional[int] = None):
    """Restore step ``step`` (default: the latest finalized one) of ``directory``.

    Args:
      directory: the checkpoint directory given to :func:`save`.
      like_state: a template pytree with the structure, shapes and dtypes of the saved state
        (e.g. a freshly initialized state); its typed PRNG keys give the key implementation.
      expected_meta: the meta the run that resumes would write (:func:`make_meta`); every key of
        it (except :data:`UNCHECKED_META`) must equal the stored one. ``None`` checks nothing.
      step: the step to restore (default: the latest).

    Returns:
      ``(state, step, meta)``: the restored state (structure of ``like_state``, typed keys
      wrapped back), its step and the stored meta (with the caller's extra entries).

    Raises:
      CheckpointError: no checkpoint in ``directory``; or the stored configurations / dataset
        fingerprint differ from ``expected_meta`` (the message names the differing fields); or
        the stored state's structure differs from ``like_state``'s.
    """
    meta, step = restore_meta(directory, step)
    if expected_meta is not None:
        check_meta(meta, expected_meta, f"{directory} (step {step})")
    like_flat, like_structure = _flatten(like_state)
    diffs = _structure_diff(meta.get("state_structure", []), like_structure)
    if diffs:
        raise CheckpointError(f"{directory} (step {step}): the stored state does not have the "
                              f"structure of the template: " + "; ".join(diffs[:5]))
    target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in like_flat.items()}
    mgr = _manager(directory, create=False)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(target)}))
    finally:
        mgr.close()
    flat = out[_STATE]
    like_leaves, treedef = jax.tree_util.tree_flatten(like_state)
    leaves = []
    for i, like in enumerate(like_leaves):
        arr = jax.numpy.asarray(flat[f"{i:06d}"])
        if _is_key(like):
            arr = jax.random.wrap_key_data(arr, impl=jax.random.key_impl(like))
        leaves.append(arr)
    return jax.tree_util.tree_unflatten(treedef, leaves), step, meta
