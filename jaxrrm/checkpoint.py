"""Checkpoints of the training state with orbax-checkpoint (docs/design.md §4).

A checkpoint directory holds one sub-directory per saved step (``<directory>/<step>/``), each
with three orbax items:

* ``state``: every leaf of the state pytree (e.g. a :class:`jaxrrm.train.TrainState`: params,
  target params, optimizer states, step counters and RNG keys) as a flat ``{"000000": array}``
  mapping, saved with ``ocp.args.StandardSave``. Typed PRNG keys (``jax.random.key``) are stored
  as their ``jax.random.key_data`` and wrapped back (same key implementation as the template)
  on :func:`restore`. Arrays are stored losslessly, so a restored state is bitwise equal to the
  saved one.
* ``meta``: a JSON dict (``ocp.args.JsonSave``) holding the schema version, the jaxrrm version,
  the configurations, the environment parameters and the dataset fingerprint (see
  :func:`make_meta`), the structure of the state (leaf paths, shapes, dtypes) and whatever else
  the caller adds (the trainer stores its learning-curve history there).
* ``integrity``: a small JSON dict ``{"meta_sha256": ..., "arrays": {"000000": sha256}}``: the
  SHA-256 of the meta's canonical JSON (:func:`meta_sha256`) and of every state array (its
  dtype, shape and raw bytes). Each item checks another: a damaged meta, array or integrity
  record fails a checksum.

Writes are atomic: orbax writes a step into a temporary directory and renames it when it is
complete (and :func:`save` waits for that), and :func:`latest_step` / :func:`restore` only
consider finalized steps, so a checkpoint interrupted mid-write is never picked up. Only the
``keep`` most recent complete steps (up to the one saved) are kept.

Every read is verified: :func:`restore` and :func:`restore_meta` check the checksums, and any
failure to read a step (a missing item, a truncated, deleted or garbled file, a checksum
mismatch, a meta without its keys) is a :class:`CorruptCheckpointError` (a
:class:`CheckpointError`) naming the directory, the step and the item, file or state leaf.
Without an explicit ``step`` they try the steps newest first and fall back to the newest one
that verifies, with a :class:`CheckpointWarning` naming the skipped steps and why. Saving a step
whose directory exists but does not verify (e.g. an empty ``<directory>/<step>``) moves it aside
to ``<step>.damaged`` first.

:func:`restore` refuses (:class:`CheckpointError`, never skipped) to restore a checkpoint whose
configurations, environment parameters or dataset fingerprint differ from the expected ones,
naming the differing fields, whose state structure differs from the template's, or that was
written by another checkpoint format (:data:`SCHEMA_VERSION`); and raises
:class:`CheckpointError` when the directory has no (finalized) checkpoint. Use
:func:`latest_step` (``None`` when there is none) to test first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from . import files

#: Version of the checkpoint layout / meta schema; bumped on incompatible changes (2: the
#: ``integrity`` item with SHA-256 checksums, the environment parameters in the meta).
SCHEMA_VERSION = 2

#: Meta keys that are recorded but never compared by :func:`restore`.
UNCHECKED_META = frozenset({"jaxrrm_version", "state_structure", "history"})

_STATE, _META, _INTEGRITY = "state", "meta", "integrity"
_ITEMS = (_STATE, _META, _INTEGRITY)


class CheckpointError(RuntimeError):
    """No checkpoint to restore, or one that does not match the run that wants to resume it."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint step that cannot be read or fails its checksums (damaged, truncated or
    incomplete files); :func:`restore` skips such steps when it may fall back."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint step was skipped (restore) or moved aside (save)."""


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


def make_meta(env_cfg, learner_cfg, train_cfg, dataset_fingerprint: str, env_params=None,
              **extra) -> Dict[str, Any]:
    """The meta dict of an offline training run: schema and jaxrrm versions, the three
    configurations as JSON-able dicts, the dataset fingerprint (:func:`jaxrrm.data.fingerprint`),
    the environment parameters ``env_params`` (an :class:`jaxrrm.config.EnvParams` or its JSON
    form, stored as :func:`jaxrrm.data.params_to_json`; omitted when ``None``) and ``extra``
    (JSON-able; e.g. the training key)."""
    return _meta(env_cfg, learner_cfg, train_cfg, env_params,
                 {"dataset_fingerprint": dataset_fingerprint}, extra)


#: The ``kind`` entry of an online run's meta (:func:`make_online_meta`); an offline run's meta
#: has none but a dataset fingerprint, so neither kind of run resumes the other's checkpoint.
ONLINE_KIND = "online"


def make_online_meta(env_cfg, learner_cfg, train_cfg, env_params, **extra) -> Dict[str, Any]:
    """The meta dict of an online training run (:mod:`jaxrrm.train_online`): as
    :func:`make_meta`'s, with ``"kind": "online"`` instead of a dataset fingerprint (an online
    learner makes its own data: the environment parameters and the keys fix it)."""
    return _meta(env_cfg, learner_cfg, train_cfg, env_params, {"kind": ONLINE_KIND}, extra)


def _meta(env_cfg, learner_cfg, train_cfg, env_params, source, extra) -> Dict[str, Any]:
    from . import __version__
    meta = {"schema_version": SCHEMA_VERSION, "jaxrrm_version": __version__,
            "env_config": to_jsonable(env_cfg), "learner_config": to_jsonable(learner_cfg),
            "train_config": to_jsonable(train_cfg), **source}
    if env_params is not None:
        from .data import params_to_json
        meta["env_params"] = params_to_json(env_params)
    meta.update({k: to_jsonable(v) for k, v in extra.items()})
    return json.loads(json.dumps(meta))  # normalized exactly as it will be read back


def meta_sha256(meta: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``meta`` (sorted keys, no whitespace, ASCII): the
    checksum :func:`save` stores for the meta and :func:`restore` checks."""
    return files.json_sha256(meta)


def _array_sha256(arr) -> str:
    """SHA-256 (hex) of an array's dtype, shape and raw (C-order) bytes."""
    arr = np.ascontiguousarray(np.asarray(arr))
    h = hashlib.sha256(f"{arr.dtype.name}{list(arr.shape)}".encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()


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
# Reading and verifying one step
# ------------------------------------------------------------------------------------------------

def _manager(directory, keep: Optional[int] = None, create: bool = True) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                        enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=opts)


def _where(directory, step: int) -> str:
    return f"{os.fspath(directory)} (step {step})"


def _item_path(directory, step: int, item: str) -> str:
    return os.path.join(os.path.abspath(os.fspath(directory)), str(step), item)


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _read_json_item(mgr, directory, step: int, item: str) -> Dict[str, Any]:
    try:
        out = mgr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]
    except Exception as e:  # orbax / OS / JSON errors, KeyError for a missing item
        raise CorruptCheckpointError(
            f"{_where(directory, step)}: item {item!r} ({_item_path(directory, step, item)}) is "
            f"unreadable: {_short(e)}") from e
    if not isinstance(out, Mapping):
        raise CorruptCheckpointError(
            f"{_where(directory, step)}: item {item!r} ({_item_path(directory, step, item)}) is "
            f"not a JSON object (got {type(out).__name__})")
    return dict(out)


def _check_schema(meta: Mapping[str, Any], where: str) -> None:
    """:class:`CheckpointError` (not skipped) for a checkpoint of another format;
    :class:`CorruptCheckpointError` for a meta without a valid schema version."""
    v = meta.get("schema_version")
    if v == SCHEMA_VERSION:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise CorruptCheckpointError(f"{where or 'checkpoint'}: the meta has no valid "
                                     f"'schema_version' (got {v!r})")
    age = "an older" if v < SCHEMA_VERSION else "a newer"
    raise CheckpointError(
        f"refusing to resume from the checkpoint{' in ' + where if where else ''}: it was "
        f"written by {age} checkpoint format (schema version {v}; this jaxrrm reads version "
        f"{SCHEMA_VERSION}); the run must start fresh (remove that directory) or use another "
        f"checkpoint_dir")


def _read_meta(mgr, directory, step: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(meta, integrity)`` of a step, verified: the meta's checksum, its schema version, its
    state structure and the integrity record's shape."""
    where = _where(directory, step)
    meta = _read_json_item(mgr, directory, step, _META)
    try:
        integrity = _read_json_item(mgr, directory, step, _INTEGRITY)
    except CorruptCheckpointError:
        v = meta.get("schema_version")
        if isinstance(v, int) and v != SCHEMA_VERSION:
            _check_schema(meta, where)  # a checkpoint of another format: say so
        raise
    stored = integrity.get("meta_sha256")
    computed = meta_sha256(meta)
    if stored != computed:
        raise CorruptCheckpointError(
            f"{where}: item 'meta' ({_item_path(directory, step, _META)}) fails its SHA-256 "
            f"check (stored {stored!r}, computed {computed!r}): the meta or the integrity "
            f"record is damaged")
    _check_schema(meta, where)
    structure = meta.get("state_structure")
    if not isinstance(structure, list) or not all(
            isinstance(e, Mapping) and {"path", "shape", "dtype", "prng_key"} <= set(e)
            for e in structure):
        raise CorruptCheckpointError(f"{where}: the meta has no valid 'state_structure'")
    arrays = integrity.get("arrays")
    keys = [f"{i:06d}" for i in range(len(structure))]
    if not isinstance(arrays, Mapping) or sorted(arrays) != keys:
        raise CorruptCheckpointError(
            f"{where}: item 'integrity' ({_item_path(directory, step, _INTEGRITY)}) has no "
            f"checksum for each of the {len(structure)} state arrays")
    return meta, integrity


def _read_state(mgr, directory, step: int, meta: Mapping[str, Any],
                integrity: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The flat state arrays of a step (as its verified meta describes them), each checked
    against its SHA-256."""
    where, path = _where(directory, step), _item_path(directory, step, _STATE)
    structure = meta["state_structure"]
    keys = [f"{i:06d}" for i in range(len(structure))]
    try:
        target = {k: jax.ShapeDtypeStruct(tuple(int(n) for n in e["shape"]),
                                          jax.numpy.dtype(e["dtype"]))
                  for k, e in zip(keys, structure)}
    except Exception as e:
        raise CorruptCheckpointError(f"{where}: the meta's 'state_structure' is invalid: "
                                     f"{_short(e)}") from e
    try:
        out = mgr.restore(step, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(target)}))[_STATE]
        flat = {k: np.asarray(out[k]) for k in keys}
    except Exception as e:  # orbax / tensorstore / OS errors, KeyError for a missing array
        raise CorruptCheckpointError(
            f"{where}: item 'state' ({path}) is unreadable: {_short(e)}") from e
    for k, e in zip(keys, structure):
        arr, leaf = flat[k], f"state array {k} (leaf {e['path'] or '<root>'})"
        if list(arr.shape) != list(e["shape"]) or str(arr.dtype) != e["dtype"]:
            raise CorruptCheckpointError(
                f"{where}: {leaf} in {path} was read as {arr.dtype}{list(arr.shape)}, stored "
                f"as {e['dtype']}{list(e['shape'])}")
        if _array_sha256(arr) != integrity["arrays"][k]:
            raise CorruptCheckpointError(
                f"{where}: {leaf} in {path} fails its SHA-256 check: the stored data is "
                f"damaged")
    return flat


def _step_problem(mgr, directory, step: int) -> Optional[str]:
    """``None`` when step ``step`` reads and verifies completely (or is a readable checkpoint
    of another format), else what is wrong with it."""
    try:
        meta, integrity = _read_meta(mgr, directory, step)
        _read_state(mgr, directory, step, meta, integrity)
    except CorruptCheckpointError as e:
        return str(e)
    except CheckpointError:  # another format: readable, not to be moved aside
        pass
    return None


def _is_complete(directory, step: int) -> bool:
    """Whether the directory of step ``step`` has all its items (a cheap check, no reading)."""
    return all(os.path.isdir(_item_path(directory, step, item)) for item in _ITEMS)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _set_aside(directory, step: int, problem: str) -> str:
    """Rename the (damaged) directory of step ``step`` to ``<step>.damaged[-n]``."""
    src = os.path.join(os.path.abspath(os.fspath(directory)), str(step))
    dst, n = src + ".damaged", 0
    while os.path.exists(dst):
        n += 1
        dst = f"{src}.damaged-{n}"
    if jax.process_index() == 0:
        os.rename(src, dst)
    _barrier(f"jaxrrm_checkpoint_set_aside_{step}")
    warnings.warn(f"{directory}: step {step} already had a checkpoint directory that does not "
                  f"verify ({problem}); moved it aside to {dst} and saving step {step} anew",
                  CheckpointWarning, stacklevel=3)
    return dst


# ------------------------------------------------------------------------------------------------
# Save / restore
# ------------------------------------------------------------------------------------------------

def latest_step(directory) -> Optional[int]:
    """The newest finalized step in ``directory``, or ``None`` (no directory / no checkpoint).
    Unfinished (temporary) step directories are ignored; finalized ones are not verified here
    (:func:`restore` does that and falls back)."""
    if not os.path.isdir(directory):
        return None
    mgr = _manager(directory, create=False)
    try:
        return mgr.latest_step()
    finally:
        mgr.close()


def all_steps(directory) -> List[int]:
    """The finalized steps in ``directory`` (ascending; empty when none; not verified)."""
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
    needed), with their SHA-256 checksums, atomically and synchronously; then only the ``keep``
    most recent complete steps up to ``step`` are kept (steps newer than ``step``, e.g. damaged
    ones that :func:`restore` skipped, and incomplete step directories are left alone).
    Overwrites nothing: saving an existing step that verifies raises :class:`CheckpointError`;
    an existing one that does not verify is moved aside to ``<step>.damaged`` (with a
    :class:`CheckpointWarning`) and the step is saved anew."""
    step = int(step)
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    flat, structure = _flatten(state)
    meta = json.loads(json.dumps(to_jsonable(dict(meta))))
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta["state_structure"] = structure
    integrity = {"meta_sha256": meta_sha256(meta),
                 "arrays": {k: _array_sha256(v) for k, v in flat.items()}}
    mgr = _manager(directory)
    try:
        if step in mgr.all_steps():
            problem = _step_problem(mgr, directory, step)
            if problem is None:
                raise CheckpointError(f"{directory}: step {step} already has a checkpoint")
            mgr.close()
            _set_aside(directory, step, problem)
            mgr = _manager(directory)
        mgr.save(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(flat),
                                                   _META: ocp.args.JsonSave(meta),
                                                   _INTEGRITY: ocp.args.JsonSave(integrity)}),
                 force=True)
        mgr.wait_until_finished()
        complete = sorted(s for s in mgr.all_steps() if s <= step and _is_complete(directory, s))
        for s in complete[:-keep]:
            mgr.delete(s)
    finally:
        mgr.close()


def _candidates(directory, step: Optional[int]) -> List[int]:
    steps = all_steps(directory)
    if not steps:
        raise CheckpointError(f"no checkpoint to restore in {directory}")
    if step is None:
        return steps[::-1]
    if int(step) not in steps:
        raise CheckpointError(f"{directory}: no checkpoint of step {step} (have {steps})")
    return [int(step)]


def _first_good(directory, step: Optional[int], read):
    """``read(mgr, s)`` of the newest step ``s`` (or of ``step`` only) that does not raise
    :class:`CorruptCheckpointError`, warning about the skipped ones."""
    problems: List[Tuple[int, str]] = []

    def warn(what):
        if problems:
            warnings.warn(f"{directory}: skipped damaged checkpoint step(s) "
                          f"{[s for s, _ in problems]}, {what}:\n  "
                          + "\n  ".join(p for _, p in problems), CheckpointWarning,
                          stacklevel=4)

    mgr = _manager(directory, create=False)
    try:
        for s in _candidates(directory, step):
            try:
                out = read(mgr, s)
            except CorruptCheckpointError as e:
                if step is not None:
                    raise
                problems.append((s, str(e)))
                continue
            except CheckpointError:  # another run / format: not skipped
                warn(f"refused step {s}")
                raise
            break
        else:
            raise CorruptCheckpointError(
                f"{directory}: no checkpoint step verifies (tried {[s for s, _ in problems]}):"
                f"\n  " + "\n  ".join(p for _, p in problems))
    finally:
        mgr.close()
    warn(f"restored step {s}")
    return out


def restore_meta(directory, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
    """``(meta, step)`` of step ``step`` (default: the newest step whose meta verifies, see
    :func:`restore`) without reading the state; the meta's checksum is checked.

    Raises:
      CheckpointError: no (such) finalized checkpoint in ``directory``, or one of another
        checkpoint format.
      CorruptCheckpointError: the meta of ``step`` (or of every step) is unreadable or fails
        its checksum.
    """
    return _first_good(directory, step, lambda mgr, s: (_read_meta(mgr, directory, s)[0], s))


def check_meta(meta: Mapping[str, Any], expected_meta: Mapping[str, Any],
               where: str = "") -> None:
    """Raise :class:`CheckpointError` naming every differing field when the stored ``meta``
    differs from ``expected_meta`` in any key of ``expected_meta`` (the schema version always,
    with its own message for another checkpoint format; keys in :data:`UNCHECKED_META`
    never)."""
    expected = json.loads(json.dumps(to_jsonable(dict(expected_meta))))
    expected.setdefault("schema_version", SCHEMA_VERSION)
    if expected["schema_version"] == SCHEMA_VERSION:
        _check_schema(meta, where)
    keys = [k for k in expected if k not in UNCHECKED_META]
    diffs = meta_diff({k: meta[k] for k in keys if k in meta}, {k: expected[k] for k in keys})
    if diffs:
        raise CheckpointError(
            f"refusing to resume from the checkpoint{' in ' + where if where else ''}: it was "
            f"written by another configuration or dataset; differing fields:\n  "
            + "\n  ".join(diffs))


def restore(directory, like_state, expected_meta: Optional[Mapping[str, Any]] = None,
            step: Optional[int] = None):
    """Restore step ``step`` (default: the newest finalized one that verifies) of
    ``directory``.

    Every step read is verified: its items must be readable and its meta and state arrays must
    match their SHA-256 checksums. Without ``step``, the steps are tried newest first and a
    damaged one (:class:`CorruptCheckpointError`) is skipped with a :class:`CheckpointWarning`
    naming it and its problem; a step of another configuration, state structure or format is
    never skipped (it raises: the directory belongs to another run).

    Args:
      directory: the checkpoint directory given to :func:`save`.
      like_state: a template pytree with the structure, shapes and dtypes of the saved state
        (e.g. a freshly initialized state); its typed PRNG keys give the key implementation.
      expected_meta: the meta the run that resumes would write (:func:`make_meta`); every key of
        it (except :data:`UNCHECKED_META`) must equal the stored one. ``None`` checks nothing
        but the schema version.
      step: the step to restore (default: the newest that verifies); no fallback.

    Returns:
      ``(state, step, meta)``: the restored state (structure of ``like_state``, typed keys
      wrapped back), its step and the stored meta (with the caller's extra entries).

    Raises:
      CheckpointError: no checkpoint in ``directory``; or the stored configurations /
        environment parameters / dataset fingerprint differ from ``expected_meta`` (the message
        names the differing fields); or the stored state's structure differs from
        ``like_state``'s; or the checkpoint was written by another checkpoint format.
      CorruptCheckpointError: ``step`` (or, without ``step``, every step) is damaged: the
        message names the directory, the step and the item, file or state leaf (for every step
        tried).
    """
    _, like_structure = _flatten(like_state)

    def read(mgr, s):
        meta, integrity = _read_meta(mgr, directory, s)
        where = _where(directory, s)
        if expected_meta is not None:
            check_meta(meta, expected_meta, where)
        diffs = _structure_diff(meta["state_structure"], like_structure)
        if diffs:
            raise CheckpointError(f"{where}: the stored state does not have the structure of "
                                  f"the template: " + "; ".join(diffs[:5]))
        return _read_state(mgr, directory, s, meta, integrity), s, meta

    flat, step, meta = _first_good(directory, step, read)
    like_leaves, treedef = jax.tree_util.tree_flatten(like_state)
    leaves = []
    for i, like in enumerate(like_leaves):
        arr = jax.numpy.asarray(flat[f"{i:06d}"])
        if _is_key(like):
            arr = jax.random.wrap_key_data(arr, impl=jax.random.key_impl(like))
        leaves.append(arr)
    return jax.tree_util.tree_unflatten(treedef, leaves), step, meta
