"""The on-disk format of a dataset, its metadata (JSON of the configuration and parameters),
checksums and fingerprint.

On disk (:func:`save` / :func:`load`), a dataset is a directory::

    NAME/
      meta.json            schema version, jaxrrm version, EnvConfig, EnvParams, behaviour, seeds,
                           n, per-field file/shape/dtype/SHA-256, creation time, fingerprint,
                           meta_sha256 (the SHA-256 of meta.json's own entries)
      obs.npy ... t.npy    one NumPy .npy file per field of
                           :class:`~jaxrrm.data.transitions.Transitions` (no pickles)

written atomically (a temporary sibling directory, fsynced, then renamed), and checked on load;
every problem found on load raises :class:`~jaxrrm.data.transitions.DatasetError` naming the
file and what is wrong. Matching checksums do not make a dataset sound (a buggy writer computes
them too), so the values are checked as well, by
:func:`~jaxrrm.data.transitions.check_content`: :func:`save` refuses to write a dataset that
fails it, :func:`load` (with ``verify``) to return one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np

from .. import files
from ..config import EnvConfig, EnvParams, check_feasible, is_int
from .sampling import as_numpy, to_numpy
from .transitions import (FIELDS, DatasetError, Transitions, check_content, check_shapes,
                          field_specs)


#: Version of the on-disk layout written by :func:`save`; :func:`load` refuses any other.
#: 2: ``meta.json`` carries ``meta_sha256``, the checksum of its own content (schema 1 did not).
SCHEMA_VERSION = 2

#: Name of the metadata file inside a dataset directory.
META_FILE = "meta.json"

#: Arrays at least this large (bytes) are memory-mapped by :func:`load` (``mmap=True``).
MMAP_MIN_BYTES = 1 << 20


class DatasetExistsError(DatasetError, FileExistsError):
    """:func:`save` was asked to write where something already exists (without ``overwrite``)."""



def config_to_json(cfg: EnvConfig) -> Dict[str, Any]:
    """``dataclasses.asdict(cfg)`` in JSON form (tuples as lists)."""
    if isinstance(cfg, Mapping):  # already serialized (e.g. a loaded meta)
        cfg = config_from_json(cfg)
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_json(d: Mapping[str, Any]) -> EnvConfig:
    """Inverse of :func:`config_to_json` (validated by :class:`EnvConfig`).

    Raises:
      ValueError: unknown fields or invalid values.
    """
    names = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown EnvConfig field(s) {sorted(unknown)}")
    kw = dict(d)
    if kw.get("ap_positions_m") is not None:
        kw["ap_positions_m"] = tuple(tuple(p) for p in kw["ap_positions_m"])
    return EnvConfig(**kw)


def params_to_json(params: EnvParams) -> Dict[str, Any]:
    """Every :class:`EnvParams` field as a float (scalar) or a (nested) list of floats."""
    if isinstance(params, Mapping):
        params = params_from_json(params)
    out = {}
    for f in dataclasses.fields(EnvParams):
        v = np.asarray(jax.device_get(getattr(params, f.name)), np.float64)
        out[f.name] = float(v) if v.ndim == 0 else v.tolist()
    return out


def _is_number(v) -> bool:
    """A real number that is not a bool (Python or NumPy scalar)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool,
                                                                                      np.bool_))


def _numeric_tree(v) -> bool:
    """``v`` is a number or a (nested) list / tuple of numbers; bools and strings are not."""
    if isinstance(v, (list, tuple)):
        return all(_numeric_tree(x) for x in v)
    return _is_number(v)


def params_from_json(d: Mapping[str, Any]) -> EnvParams:
    """Inverse of :func:`params_to_json` (validated by :class:`EnvParams`).

    Every value must be a number, a (nested) list of numbers or a numeric array; missing fields
    take :class:`EnvParams`'s defaults.

    Raises:
      ValueError: ``d`` not a mapping, unknown fields, a bool, string, ``None`` or other
        non-numeric value (``"30"`` and ``True`` are refused, not converted), a ragged list, or
        a value out of its range (:meth:`EnvParams.validate`).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"EnvParams JSON must be an object of fields, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(EnvParams)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown EnvParams field(s) {sorted(map(str, unknown))}")
    kw = {}
    for k, v in d.items():
        if _is_number(v):
            kw[k] = float(v)
            continue
        ok = _numeric_tree(v) if isinstance(v, (list, tuple)) else (
            isinstance(v, (np.ndarray, jax.Array)) and np.dtype(v.dtype).kind in "iuf")
        if not ok:
            raise ValueError(f"EnvParams.{k}={v!r} is invalid: allowed are numbers or (nested) "
                             "lists of numbers (no bools, strings or nulls)")
        kw[k] = np.asarray(v, np.float32)
    return EnvParams(**kw)


def config_from_meta(meta: Mapping[str, Any]) -> EnvConfig:
    """The :class:`EnvConfig` a dataset was made with (from :func:`load`'s meta)."""
    return config_from_json(meta["env_config"])


def params_from_meta(meta: Mapping[str, Any]) -> EnvParams:
    """The :class:`EnvParams` a dataset was made with (from :func:`load`'s meta)."""
    return params_from_json(meta["env_params"])


class _HashWriter:
    """A write-only file object that hashes what passes through (and writes it on, if given)."""

    def __init__(self, fh=None):
        self.fh, self.sha, self.nbytes = fh, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.nbytes += len(b)
        if self.fh is not None:
            self.fh.write(b)
        return len(b)


def _canonical(x, dtype) -> np.ndarray:
    return np.ascontiguousarray(as_numpy(x), dtype=dtype)


def array_sha256(x, dtype=None) -> str:
    """SHA-256 (hex) of the ``.npy`` serialization of ``x`` (as :func:`save` writes it)."""
    x = _canonical(x, dtype)
    w = _HashWriter()
    np.lib.format.write_array(w, x, allow_pickle=False)
    return w.sha.hexdigest()


def _fingerprint_from(checksums: Mapping[str, str], env_config: Mapping[str, Any]) -> str:
    payload = {"schema_version": SCHEMA_VERSION, "env_config": env_config,
               "arrays": {name: checksums[name] for name in FIELDS}}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def fingerprint(dataset_or_meta, cfg: Optional[EnvConfig] = None) -> str:
    """A SHA-256 (hex) identifying a dataset's content and configuration, for checkpoints.

    It hashes the per-field array checksums (SHA-256 of each field's ``.npy`` serialization, the
    ``sha256`` entries of ``meta.json``) together with the ``EnvConfig`` and the schema version.
    The fingerprint of a :func:`load`-ed dataset's meta equals that of the in-memory dataset that
    was saved (computed with the same NumPy ``.npy`` writer, version 1.0 headers).

    Args:
      dataset_or_meta: a meta dict (as :func:`save` returns / :func:`load` gives; cheap, uses the
        stored checksums) or a :class:`Transitions` (hashes every array; needs ``cfg``).
      cfg: the :class:`EnvConfig` of an in-memory dataset.

    Returns:
      64 hex characters.
    """
    if isinstance(dataset_or_meta, Transitions):
        if cfg is None:
            raise ValueError("fingerprint of an in-memory dataset needs its EnvConfig (cfg=...)")
        specs = field_specs(cfg, dataset_or_meta.size)
        sums = {name: array_sha256(getattr(dataset_or_meta, name), specs[name][1])
                for name in FIELDS}
        return _fingerprint_from(sums, config_to_json(cfg))
    meta = dataset_or_meta
    try:
        sums = {name: meta["fields"][name]["sha256"] for name in FIELDS}
        env_config = meta["env_config"]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{META_FILE}: metadata lacks {e} needed for the fingerprint") from e
    return _fingerprint_from(sums, env_config)


# --------------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------------


def is_dataset_dir(path) -> bool:
    """Whether ``path`` is a dataset directory this project wrote: a directory whose
    ``meta.json`` is a JSON object with an integer ``schema_version`` and either a
    ``meta_sha256`` that verifies (schema 2 on) or, for schema 1, a ``fingerprint`` and
    ``fields``. A directory that merely holds some file named ``meta.json`` is not one (it is
    never replaced by ``save(..., overwrite=True)``)."""
    path = Path(path)
    mpath = path / META_FILE
    if path.is_symlink() or not path.is_dir() or not mpath.is_file():
        return False
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(meta, dict) or isinstance(meta.get("schema_version"), bool) \
            or not isinstance(meta.get("schema_version"), int):
        return False
    if META_SHA_KEY in meta:
        return meta[META_SHA_KEY] == meta_sha256(meta)
    return meta["schema_version"] == 1 and "fingerprint" in meta and "fields" in meta


def _looks_like_dataset_or_empty(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (not any(path.iterdir())
                                                         or is_dataset_dir(path))


_RESERVED = ("schema_version", "jaxrrm_version", "created_utc", "n", "fields", "fingerprint",
             "meta_sha256")

#: Name of the ``meta.json`` entry that holds the SHA-256 of the file's own content.
META_SHA_KEY = "meta_sha256"


def meta_sha256(meta: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a dataset's metadata, the value of its ``meta_sha256`` entry.

    It hashes the canonical JSON of every entry but ``meta_sha256`` itself:
    ``json.dumps(meta_without_it, sort_keys=True, separators=(",", ":"))`` (ASCII), so it does
    not depend on the file's indentation or key order, only on the entries' values.
    """
    return files.json_sha256({k: v for k, v in meta.items() if k != META_SHA_KEY})


def _is_sha256(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)




def _check_env_config_json(d, label: str) -> EnvConfig:
    """The :class:`EnvConfig` of a stored ``env_config``; every field present, of its JSON type.

    Types: the integer fields JSON integers, the flags ``true`` / ``false``, the names strings,
    ``ap_positions_m`` ``null`` or a list of ``[x, y]`` numbers; then the values are validated by
    :class:`EnvConfig`. Raises :class:`DatasetError` (``label``: the file) naming the entry.
    """
    if not isinstance(d, dict):
        raise DatasetError(f"{label}: entry 'env_config' is not an object")
    for f in dataclasses.fields(EnvConfig):
        if f.name not in d:
            raise DatasetError(f"{label}: entry 'env_config' lacks {f.name!r}")
        v, default = d[f.name], f.default
        if f.name == "ap_positions_m":
            ok = v is None or (isinstance(v, list) and all(
                isinstance(q, list) and len(q) == 2 and all(_is_number(c) for c in q) for q in v))
            allowed = "null or a list of [x, y] numbers"
        elif isinstance(default, bool):
            ok, allowed = isinstance(v, bool), "true or false"
        elif isinstance(default, int):
            ok, allowed = is_int(v), "an integer"
        elif isinstance(default, str):
            ok, allowed = isinstance(v, str), "a string"
        else:  # pragma: no cover - a new EnvConfig field of another type
            ok, allowed = True, ""
        if not ok:
            raise DatasetError(f"{label}: entry 'env_config.{f.name}' = {v!r} has the wrong "
                               f"type: allowed is {allowed}")
    try:
        return config_from_json(d)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{label}: entry 'env_config' is invalid ({e})") from e


def _check_env_params_json(d, label: str) -> EnvParams:
    """The :class:`EnvParams` of a stored ``env_params``: every field present, numbers (or lists
    of numbers) in range (:func:`params_from_json`). Raises :class:`DatasetError` naming it."""
    if not isinstance(d, dict):
        raise DatasetError(f"{label}: entry 'env_params' is not an object")
    missing = [f.name for f in dataclasses.fields(EnvParams) if f.name not in d]
    if missing:
        raise DatasetError(f"{label}: entry 'env_params' lacks {missing}")
    try:
        return params_from_json(d)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{label}: entry 'env_params' is invalid ({e})") from e


#: Top-level entries of ``meta.json`` that :func:`load` requires, with their JSON types.
_META_TYPES = {"schema_version": (int, "an integer"), "jaxrrm_version": (str, "a string"),
               "created_utc": (str, "a string"), "n": (int, "an integer"),
               "fields": (dict, "an object"), "env_config": (dict, "an object"),
               "env_params": (dict, "an object"), "behaviour": (str, "a string"),
               "behaviour_config": (dict, "an object"), "seeds": (dict, "an object"),
               "fingerprint": (str, "a string"), META_SHA_KEY: (str, "a string")}


def _check_field_entries(meta: Mapping[str, Any], cfg: EnvConfig, label: str
                         ) -> Dict[str, Dict[str, Any]]:
    """The ``fields`` entries, each checked for type and against the config's shapes/dtypes."""
    n = meta["n"]
    fields = meta["fields"]
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DatasetError(f"{label}: entry 'fields' has unknown fields {unknown}")
    specs = field_specs(cfg, n)
    for name in FIELDS:
        entry = fields.get(name)
        if not isinstance(entry, dict) or not {"file", "shape", "dtype", "sha256",
                                               "bytes"} <= set(entry):
            raise DatasetError(f"{label}: no complete entry for the field {name!r} (an object "
                               "with file, shape, dtype, sha256, bytes)")
        key = f"fields.{name}"
        if entry["file"] != f"{name}.npy":
            raise DatasetError(f"{label}: entry '{key}.file' = {entry['file']!r}; the field "
                               f"{name!r} is stored in {name + '.npy'!r} (entries exchanged?)")
        shape, dtype = specs[name]
        got_shape = entry["shape"]
        if not (isinstance(got_shape, list) and all(is_int(d) for d in got_shape)):
            raise DatasetError(f"{label}: entry '{key}.shape' = {got_shape!r} is not a list of "
                               "integers")
        try:
            got_dtype = np.dtype(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        except TypeError:
            got_dtype = None
        if got_dtype is None:
            raise DatasetError(f"{label}: entry '{key}.dtype' = {entry['dtype']!r} is not a "
                               "NumPy dtype string")
        if tuple(got_shape) != shape or got_dtype != dtype:
            raise DatasetError(f"{label}: field {name!r} is recorded as {got_shape} "
                               f"{entry['dtype']}, but n={n} and the EnvConfig need "
                               f"{list(shape)} {dtype.str}")
        if not _is_sha256(entry["sha256"]):
            raise DatasetError(f"{label}: entry '{key}.sha256' = {entry['sha256']!r} is not a "
                               "SHA-256 (64 lowercase hex digits)")
        if not is_int(entry["bytes"]) or entry["bytes"] < 0:
            raise DatasetError(f"{label}: entry '{key}.bytes' = {entry['bytes']!r} is not a "
                               "non-negative integer")
    return {name: fields[name] for name in FIELDS}


def save(path, dataset: Transitions, meta: Mapping[str, Any], overwrite: bool = False
         ) -> Dict[str, Any]:
    """Write a dataset directory atomically.

    Layout: ``path/<field>.npy`` for every field of :class:`Transitions` (NumPy ``.npy``, no
    pickles, dtypes of :func:`field_specs`) and ``path/meta.json``. Before anything is written
    the shapes (:func:`check_shapes`) and the content (:func:`check_content`) are checked. The
    files are written into
    a temporary sibling directory ``.<name>.tmp-<pid>-<random>``, each fsynced, ``meta.json``
    last; then the directory is renamed to ``path`` (and the parent fsynced). A write that fails
    removes the temporary directory; a process killed mid-write leaves at most that hidden
    temporary directory, which has no ``meta.json`` until it is complete, and never anything at
    ``path``. With ``overwrite=True`` an existing dataset (or empty directory) at ``path`` is
    replaced only after the new one is complete.

    Args:
      path: the dataset directory to create (its parent is created if needed).
      dataset: :class:`Transitions` (NumPy or JAX leaves) whose shapes fit the configuration.
      meta: :func:`~jaxrrm.data.collection.make_meta`'s dict (``env_config``, ``env_params``,
        ``behaviour`` required; ``behaviour_config``, ``seeds`` and any JSON-able extras
        kept). ``env_config`` / ``env_params`` may be :class:`EnvConfig` / :class:`EnvParams`
        objects or their JSON dicts. The keys ``schema_version, jaxrrm_version, created_utc,
        n, fields, fingerprint, meta_sha256`` are (re)computed here.
      overwrite: replace an existing dataset at ``path``.

    Returns:
      The complete metadata written to ``meta.json`` (what :func:`load` returns): the caller's
      entries plus ``schema_version``, ``jaxrrm_version``, ``created_utc`` (UTC ISO 8601),
      ``n``, ``fields`` (``{field: {file, shape, dtype, sha256, bytes}}``), ``fingerprint`` and
      ``meta_sha256`` (:func:`meta_sha256` of all the others).

    Raises:
      DatasetExistsError: ``path`` exists and ``overwrite`` is False, or it exists and is not a
        dataset directory (never replaced).
      ValueError: missing meta entries, invalid ``env_config`` / ``env_params``, or shapes that
        do not fit ``meta["env_config"]``.
      DatasetError: content that :func:`check_content` refuses (NaN or infinite values, actions
        out of range or forbidden by their mask, ...); nothing is written.
    """
    from .. import __version__

    path = Path(path)
    for key in ("env_config", "env_params", "behaviour"):
        if key not in meta:
            raise ValueError(f"meta lacks {key!r} (build it with data.make_meta)")
    cfg = config_from_json(meta["env_config"]) if isinstance(meta["env_config"], Mapping) \
        else meta["env_config"]
    check_shapes(dataset, cfg)
    dataset = to_numpy(dataset)  # one device-to-host copy, for the checks and the files
    check_content(dataset, cfg, where=f"{path} (not written)")

    def refuse_existing():
        if os.path.lexists(path):
            if not overwrite:
                raise DatasetExistsError(f"{path}: already exists; pass overwrite=True to "
                                         "replace it")
            if not _looks_like_dataset_or_empty(path):
                raise DatasetExistsError(f"{path}: exists and is not a dataset directory "
                                         f"written by jaxrrm (no valid {META_FILE}); refusing to "
                                         "replace it")

    refuse_existing()
    n = dataset.size
    specs = field_specs(cfg, n)
    full = {k: v for k, v in meta.items() if k not in _RESERVED}
    full.update(env_config=config_to_json(cfg), env_params=params_to_json(meta["env_params"]),
                behaviour=str(meta["behaviour"]),
                behaviour_config=dict(meta.get("behaviour_config") or {}),
                seeds=dict(meta.get("seeds") or {}))
    # Strict JSON (NaN / inf as null, jaxrrm.files.to_json); fails early, before any file, on
    # entries that are not JSON-able.
    full = files.to_json(full)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fields = {}
        for name in FIELDS:
            arr = _canonical(getattr(dataset, name), specs[name][1])
            fname = f"{name}.npy"
            with open(tmp / fname, "wb") as fh:
                w = _HashWriter(fh)
                np.save(w, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            fields[name] = {"file": fname, "shape": list(arr.shape), "dtype": arr.dtype.str,
                            "sha256": w.sha.hexdigest(), "bytes": w.nbytes}
        full.update(
            schema_version=SCHEMA_VERSION, jaxrrm_version=__version__,
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            n=n, fields=fields)
        full["fingerprint"] = fingerprint(full)
        full = json.loads(json.dumps(full))  # the JSON form load sees (lists, string keys)
        full[META_SHA_KEY] = meta_sha256(full)
        files.write_json(tmp / META_FILE, full, indent=1, sort_keys=True)  # fsynced
        files.fsync_dir(tmp)
        refuse_existing()
        files.replace_dir(tmp, path)  # overwrite: the old one is moved aside only now
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(json.dumps(full))


def _read_header(path: Path):
    """(shape, fortran_order, dtype, data offset) of a ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        return shape, fortran, dtype, fh.tell()


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name} (strict JSON has no NaN / Infinity)")


def read_meta(path) -> Dict[str, Any]:
    """The parsed ``meta.json`` of the dataset directory ``path`` (no other check).

    Raises:
      DatasetError: missing directory or ``meta.json``, or a ``meta.json`` that is not a JSON
        object (or has an object with a duplicate key, which JSON parsers resolve differently).
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset directory")
    mpath = path / META_FILE
    if not mpath.is_file():
        raise DatasetError(f"{mpath}: missing (an incomplete or interrupted write?)")
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"),
                          object_pairs_hook=files.no_duplicate_keys,
                          parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, OSError, RecursionError) as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{mpath}: not a JSON object")
    return meta


class LoadedDataset(NamedTuple):
    """What :func:`load_dataset` returns: the transitions, the metadata and the environment
    they were made in (so that a caller needs nothing else to train or evaluate on them)."""

    transitions: Transitions
    meta: Dict[str, Any]
    cfg: EnvConfig
    params: EnvParams


def load_dataset(path, expected_cfg: Optional[EnvConfig] = None, verify: bool = True,
                 mmap: bool = True) -> LoadedDataset:
    """:func:`load` with the environment's :class:`EnvConfig` and :class:`EnvParams` rebuilt
    from the checked metadata (:func:`config_from_meta`, :func:`params_from_meta`).

    ``transitions, meta, cfg, params = data.load_dataset(path)``; arguments and errors as
    :func:`load`.
    """
    transitions, meta = load(path, expected_cfg=expected_cfg, verify=verify, mmap=mmap)
    return LoadedDataset(transitions, meta, config_from_meta(meta), params_from_meta(meta))


def load(path, expected_cfg: Optional[EnvConfig] = None, verify: bool = True,
         mmap: bool = True) -> Tuple[Transitions, Dict[str, Any]]:
    """Read and check a dataset directory written by :func:`save`.

    Checks, in order:

    1. ``meta.json``: present, JSON (no duplicate keys), ``schema_version == SCHEMA_VERSION``;
       with ``verify``, its ``meta_sha256`` against the SHA-256 of its own content
       (:func:`meta_sha256`: an edited or corrupted ``meta.json`` is refused);
    2. the type of every entry :func:`load` and the consumers of the metadata use (``n``,
       ``fields``, ``env_config``, ``env_params``, ``behaviour``, ``behaviour_config``,
       ``seeds``, ``fingerprint``, ...): every field of ``env_config`` and ``env_params``
       present, of its JSON type and valid (:class:`EnvConfig` / :class:`EnvParams` ranges);
    3. the ``EnvConfig`` against ``expected_cfg`` if given;
    4. every ``fields`` entry: stored in ``<field>.npy`` (entries exchanged between fields are
       refused), shape and dtype those of ``n`` and the config, a SHA-256 string, a byte count;
    5. with ``verify``, the stored ``fingerprint`` against the one recomputed from the stored
       checksums and ``env_config`` (:func:`fingerprint`);
    6. every field's file: present, a ``.npy`` whose header's shape and dtype match ``meta.json``
       and whose size matches the header and the recorded ``bytes`` (a truncated file is caught
       even with ``verify=False``); with ``verify``, its SHA-256 against ``meta.json`` (reads
       every byte);
    7. with ``verify``, the content (:func:`check_content`: finite values, actions in range and
       allowed by their masks, slot and episode indices), chunk by chunk.

    ``verify=False`` is the fast path: it skips the checksums (``meta_sha256``, fingerprint,
    array SHA-256) and the content checks, and keeps the structural ones (1-4, 6 without the
    SHA-256), which read only ``meta.json`` and the ``.npy`` headers.

    Args:
      path: dataset directory.
      expected_cfg: the :class:`EnvConfig` (or its :func:`config_to_json` dict) the caller (e.g.
        a trainer) works with; a dataset made for another configuration is refused, naming the
        differing fields.
      verify: check the checksums and the content (see above).
      mmap: memory-map arrays of at least :data:`MMAP_MIN_BYTES` (read-only,
        ``np.load(mmap_mode="r")``); smaller ones, or all with ``mmap=False``, are read into
        memory.

    Returns:
      (:class:`Transitions` with NumPy leaves — memory maps where mapped; move them with
      :func:`~jaxrrm.data.sampling.to_device` or ``jax.device_put`` —, the metadata dict as
      written by :func:`save`; :func:`config_from_meta` / :func:`params_from_meta` give its
      configuration).

    Raises:
      DatasetError: anything wrong, with the file (``meta.json`` and the entry, or the field's
        ``.npy``) and the problem in the message.
    """
    path = Path(path)
    meta = read_meta(path)
    mpath = path / META_FILE
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise DatasetError(f"{mpath}: schema_version {version!r} is not supported (this jaxrrm "
                           f"reads schema_version {SCHEMA_VERSION})")
    if verify:
        stored = meta.get(META_SHA_KEY)
        actual = meta_sha256(meta)
        if stored != actual:
            raise DatasetError(f"{mpath}: {META_SHA_KEY} mismatch (meta.json edited or corrupt): "
                               f"its content hashes to {actual}, recorded {stored!r}")
    for key, (typ, allowed) in _META_TYPES.items():
        if key not in meta:
            raise DatasetError(f"{mpath}: lacks the entry {key!r}")
        v = meta[key]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            if key == "n":
                raise DatasetError(f"{mpath}: n={v!r} is not a positive integer")
            raise DatasetError(f"{mpath}: entry {key!r} = {v!r} has the wrong type: allowed is "
                               f"{allowed}")
    n = meta["n"]
    if n < 1:
        raise DatasetError(f"{mpath}: n={n!r}: a dataset holds at least one transition")
    cfg = _check_env_config_json(meta["env_config"], str(mpath))
    stored_params = _check_env_params_json(meta["env_params"], str(mpath))
    try:   # one parameter set that fits the configuration and its geometry
        stored_params.check_shapes(cfg)
        check_feasible(stored_params, cfg)
    except ValueError as e:
        raise DatasetError(f"{mpath}: entry 'env_params' does not fit 'env_config' ({e})") \
            from None
    if expected_cfg is not None:
        if isinstance(expected_cfg, Mapping):
            expected_cfg = config_from_json(expected_cfg)
        diffs = [f"{f.name} (dataset {getattr(cfg, f.name)!r}, expected "
                 f"{getattr(expected_cfg, f.name)!r})" for f in dataclasses.fields(EnvConfig)
                 if getattr(cfg, f.name) != getattr(expected_cfg, f.name)]
        if diffs:
            raise DatasetError(f"{mpath}: dataset was made for another EnvConfig; differing "
                               f"fields: {', '.join(diffs)}")
    fields = _check_field_entries(meta, cfg, str(mpath))
    if verify:
        recomputed = fingerprint(meta)
        if recomputed != meta["fingerprint"]:
            raise DatasetError(f"{mpath}: entry 'fingerprint' = {meta['fingerprint']!r} does not "
                               f"match the stored checksums and env_config ({recomputed})")
    specs = field_specs(cfg, n)
    arrays = {}
    for name in FIELDS:
        entry = fields[name]
        shape, dtype = specs[name]
        fpath = path / entry["file"]
        if not fpath.is_file():
            raise DatasetError(f"{fpath}: missing (field {name!r})")
        try:
            fshape, fortran, fdtype, offset = _read_header(fpath)
        except Exception as e:  # numpy raises ValueError / EOFError / SyntaxError variants
            raise DatasetError(f"{fpath}: not a readable .npy file ({e})") from e
        if tuple(fshape) != shape or fdtype != dtype or fortran:
            raise DatasetError(f"{fpath}: holds {tuple(fshape)} {fdtype.str}"
                               f"{' (Fortran order)' if fortran else ''}; meta.json says "
                               f"{tuple(shape)} {dtype.str}")
        want_size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        got_size = fpath.stat().st_size
        if got_size != want_size:
            kind = "truncated" if got_size < want_size else "has trailing bytes"
            raise DatasetError(f"{fpath}: {kind}: {got_size} bytes, expected {want_size}")
        if entry["bytes"] != got_size:
            raise DatasetError(f"{mpath}: entry 'fields.{name}.bytes' = {entry['bytes']} but "
                               f"{fpath.name} has {got_size} bytes")
        if verify:
            digest = files.sha256_file(fpath)
            if digest != entry["sha256"]:
                raise DatasetError(f"{fpath}: SHA-256 mismatch (corrupt file): {digest} != "
                                   f"{entry['sha256']} recorded in {META_FILE}")
        nbytes = want_size - offset
        try:
            arrays[name] = np.load(fpath, mmap_mode="r" if mmap and nbytes >= MMAP_MIN_BYTES
                                   else None, allow_pickle=False)
        except Exception as e:
            raise DatasetError(f"{fpath}: cannot be read ({e})") from e
    dataset = Transitions(**arrays)
    if verify:
        check_content(dataset, cfg, where=str(path))
    return dataset, meta
