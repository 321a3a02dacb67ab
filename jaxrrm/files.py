"""Files written safely: strict JSON and atomic replacement.

Every JSON file the project writes (results, dataset and cache metadata, benchmark records) goes
through :func:`to_json` / :func:`dumps`: NumPy and JAX values become plain numbers and lists, and a
non-finite float (NaN, inf: an undefined statistic such as the 95% CI of a single seed) becomes
``null``, so the file is strict JSON (RFC 8259 has no NaN) that any parser reads.
:func:`write_atomic` replaces a file only with complete content: a temporary sibling, fsynced, is
renamed over the target, so a reader (or a run killed mid-write) sees the old file or the new one,
never a part of either; :func:`replace_dir` does the same for a whole directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np


def to_json(x: Any) -> Any:
    """A strict-JSON value of ``x``: mappings (keys as strings), lists / tuples, dataclasses
    (as dicts of their fields), NumPy / JAX scalars and arrays (as numbers / nested lists),
    ``pathlib`` paths (as strings); non-finite floats become ``None``.

    Raises:
      TypeError: a value of another type (nothing is silently turned into its ``str``).
    """
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.generic):
        return to_json(x.item())
    if isinstance(x, np.ndarray) or type(x).__module__.startswith(("jax", "jaxlib")):
        arr = np.asarray(x)
        return to_json(arr.item()) if arr.ndim == 0 else [to_json(v) for v in arr.tolist()]
    raise TypeError(f"not JSON-able: {type(x).__name__} ({x!r:.80})")


def dumps(obj: Any, **kw) -> str:
    """``json.dumps(to_json(obj), allow_nan=False, **kw)``: strict JSON text."""
    return json.dumps(to_json(obj), allow_nan=False, **kw)


def write_atomic(path: Union[str, Path], payload: Union[bytes, str]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory,
    flushed and fsynced, then ``os.replace``-d onto ``path`` (the parent must exist). On any
    error (or Ctrl-C) the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Union[str, Path], obj: Any, indent: int = 2, sort_keys: bool = False
               ) -> Path:
    """:func:`write_atomic` (fsynced) of :func:`dumps` ``(obj, indent=indent,
    sort_keys=sort_keys)`` plus a final newline."""
    return write_atomic(path, dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def fsync_dir(path: Union[str, Path]) -> None:
    """fsync a directory (its entries: a rename in it is then durable); a no-op where the
    platform has no directory file descriptors."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_dir(tmp: Union[str, Path], path: Union[str, Path]) -> None:
    """Move the complete directory ``tmp`` to ``path`` (same file system). An existing ``path``
    is swapped out atomically: moved aside to a hidden ``.<name>.old-*`` sibling, ``tmp``
    renamed in, the parent fsynced, the old one removed; so at every moment ``path`` holds the
    old or the new content, and if renaming ``tmp`` in fails (or is interrupted), the old one is
    put back. The caller decides whether ``path`` may be replaced at all."""
    tmp, path = Path(tmp), Path(path)
    old = None
    if os.path.lexists(path):
        old = path.parent / f".{path.name}.old-{os.getpid()}-{os.urandom(4).hex()}"
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def json_sha256(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``: sorted keys, no whitespace, ASCII
    (``json.dumps(obj, sort_keys=True, separators=(",", ":"))``), so it depends on the values
    only, not on a file's indentation or key order. The checksum of dataset and checkpoint
    metadata."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_file(path: Union[str, Path], bufsize: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks of ``bufsize``."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(bufsize), b""):
            sha.update(block)
    return sha.hexdigest()


def no_duplicate_keys(pairs):
    """``json.loads(..., object_pairs_hook=no_duplicate_keys)``: a JSON object that names a key
    twice is a ``ValueError`` (the standard parser silently keeps the last one)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out
