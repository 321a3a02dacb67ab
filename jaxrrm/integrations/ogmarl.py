"""jaxrrm datasets as OG-MARL vaults (flashbax ``Vault``), and back.

`OG-MARL <https://github.com/instadeepai/og-marl>`_ keeps its offline datasets as flashbax
vaults: ``<rel_dir>/<vault_name>/<vault_uid>/`` (tensorstore / zarr on an OCDBT key-value store,
plus flashbax's ``metadata.json``), conventionally ``vault_name = "<source>/<env>/<scenario>.vlt"``
and ``vault_uid`` the dataset's quality (``"Good"``, ...). :func:`to_vault` writes a jaxrrm
dataset (:class:`jaxrrm.data.Transitions` and its meta, from :func:`jaxrrm.data.load` or
:func:`jaxrrm.data.collect`) in that layout; :func:`from_vault` reads it back, bitwise, in the
original row order, with the jaxrrm checksums re-verified.

The layout followed is the one OG-MARL's recorder writes and its loaders read:
``og_marl/replay_buffers.py`` (``FlashbaxReplayBuffer.add``: one timestep is
``{"observations", "actions", "rewards", "terminals", "truncations", "infos"}``, each stacked
over the agents, added with ``add_batch_size=1``; ``populate_from_vault`` reads
``Vault(f"{source}/{env_name}/{scenario_name}.vlt", vault_uid=dataset_name, rel_dir=...)``),
``og_marl/wrapped_environments/smacv1.py`` (``infos = {"legals": ..., "state": ...}``, float32),
the systems' ``train_step`` (e.g. ``og_marl/baselines/tf2_systems/offline/iql_cql.py``:
``observations (B,T,N,O)``, ``actions``, ``rewards``, ``terminals``, ``truncations (B,T,N)``,
``infos["legals"] (B,T,N,A)``) and ``og_marl/vault_utils/subsample_smaller.py`` /
``analyse_vault.py`` (episodes found from ``experience[flag][0, :].all(axis=-1)``, i.e. one
buffer row ``B = 1`` holding the episodes back to back along ``T``), as in the published
vaults (``examples/dataset_api_demo.ipynb``: ``actions (1, 996366, 3) int32``,
``observations (1, 996366, 3, 30)``, ``rewards``, ``terminals``, ``truncations (1, 996366, 3)``,
``infos: legals (1, 996366, 3, 9), state (1, 996366, 48)``, all float32 but ``actions``).

With ``n`` rows, ``I`` APs (OG-MARL's ``N`` agents), ``D = 2 * num_candidates`` observation
features, ``A`` actions and ``S`` state features, the vault's experience is:

=======================  =====================  =========================================
key                      shape, dtype           from the jaxrrm field
=======================  =====================  =========================================
``observations``         [1, n, I, D] float32   ``obs``
``actions``              [1, n, I] int32        ``actions``
``rewards``              [1, n, I] float32      ``reward`` (the team reward, every agent)
``terminals``            [1, n, I] float32      ``terminated`` (0/1, every agent)
``truncations``          [1, n, I] float32      ``truncated``, and 1 where a segment is cut
``infos["legals"]``      [1, n, I, A] float32   ``action_mask`` (0/1)
``infos["state"]``       [1, n, S] float32      ``state``
=======================  =====================  =========================================

**Row order.** OG-MARL reads consecutive vault rows as consecutive time steps, so the rows are
regrouped episode-major: sorted by ``(episode, t)`` (episodes by ascending id, each in slot
order). This undoes the interleaving of a stream slice (:mod:`jaxrrm.data`'s stream
convention: ``E`` environments step-major, ids unique per (environment, episode)).

**Cut episodes** (decided here). Each maximal run of consecutive slots of one episode is a
*segment*. An episode cut at the start (a stream slice starting mid-episode: first slot
``t > 0``) needs nothing. A segment that stops before its episode's end (``truncated`` and
``terminated`` False on its last row: a stream slice's or :func:`jaxrrm.data.collect_policy`'s
partial last episode) gets ``truncations = 1`` on its last row, so that OG-MARL's loaders
(``terminals | truncations`` resets, vault_utils' episode counts) never join it to the next
segment; the jaxrrm ``truncated`` flag of that row is restored to False on import. A *gap*
inside an episode (missing slots between two of its rows, e.g. a :func:`jaxrrm.data.mixture`
row sample) raises ``ValueError`` naming the episode and the missing slots, unless
``allow_gaps=True``, which cuts the episode there like a segment end. Two rows with the same
``(episode, t)`` always raise ``ValueError`` (no time order exists).

**What OG-MARL's layout lacks** and jaxrrm keeps beside the vault, in the vault's directory:

* ``jaxrrm_meta.json`` (:data:`SIDECAR_FILE`): the dataset's meta (the one given, completed
  with ``n``, the per-field ``fields.<name>.sha256`` of :func:`jaxrrm.data.array_sha256` and the
  ``fingerprint`` if it lacked them; a :func:`jaxrrm.data.load` meta is kept as it is), the
  layout, the segment counts, the SHA-256 of each file below, and its own ``meta_sha256``;
* ``jaxrrm_extra/*.npy`` (:data:`EXTRA_DIR`): the permutation ``order`` (vault row ``j`` is
  original row ``order[j]``); ``rates_mbps``, ``episode``, ``t`` (vault order); the vault rows
  whose cut truncation flag was added (``added_truncations``); and ``next_obs``,
  ``next_state``, ``next_action_mask`` only for the rows ``next_rows`` where they are not the
  next vault row's ``obs`` / ``state`` / ``action_mask`` bitwise (each segment's last row: an
  episode's final observation, which OG-MARL's layout has no place for).

flashbax ignores these files (its store lives in ``manifest.ocdbt`` and ``d/``), and so does
OG-MARL (it lists datasets as the sub-directories of ``<rel_dir>/<vault_name>``).

Fields are exported in the dtypes of :func:`jaxrrm.data.field_specs` (as
:func:`jaxrrm.data.save` writes them), so the import equals a canonical dataset (every one that
:func:`jaxrrm.data.collect` or :func:`jaxrrm.data.load` returns) bitwise, dtypes included.

flashbax is imported only inside these functions; without it they raise ``ImportError`` with
the install line ``pip install 'jaxrrm[ogmarl]'``. Nothing else in jaxrrm imports this module.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import numpy as np

from .. import data, files
from ..config import EnvConfig

#: Name of the jaxrrm metadata file inside the vault's directory.
SIDECAR_FILE = "jaxrrm_meta.json"

#: Name of the directory of the jaxrrm-only arrays inside the vault's directory.
EXTRA_DIR = "jaxrrm_extra"

#: ``format`` entry of :data:`SIDECAR_FILE`.
FORMAT = "jaxrrm-ogmarl-vault"

#: ``format_version`` of :data:`SIDECAR_FILE` that this module writes and reads.
FORMAT_VERSION = 1

#: Rows gathered per write to the vault (bounds :func:`to_vault`'s memory besides the sidecar).
CHUNK_ROWS = 1 << 16

#: Keys of the vault's experience (``infos`` a dict of ``legals`` and ``state``).
EXPERIENCE_KEYS = ("observations", "actions", "rewards", "terminals", "truncations", "infos")
INFOS_KEYS = ("legals", "state")

_INSTALL = "pip install 'jaxrrm[ogmarl]'"


def _flashbax():
    """The ``flashbax.vault`` module and flashbax's ``TrajectoryBufferState``, imported here."""
    try:
        from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
        from flashbax.vault import Vault
    except ImportError as e:
        raise ImportError(f"jaxrrm.integrations.ogmarl needs flashbax: {_INSTALL}") from e
    return Vault, TrajectoryBufferState


def vault_dir(vault_name: str, rel_dir: str = "vaults", vault_uid: str = "") -> Path:
    """The directory flashbax's ``Vault(vault_name, rel_dir=rel_dir, vault_uid=vault_uid)`` uses:
    ``normpath(cwd / rel_dir / vault_name / vault_uid)`` (an absolute ``rel_dir`` is kept)."""
    return Path(os.path.normpath(os.path.join(os.getcwd(), rel_dir, vault_name, vault_uid)))


def _host(x) -> np.ndarray:
    """A NumPy (or memory-mapped) leaf as it is; a JAX one copied to the host."""
    return x if isinstance(x, np.ndarray) else np.asarray(jax.device_get(x))


def _bits(x: np.ndarray) -> np.ndarray:
    """``x`` viewed as unsigned integers of its item size (bitwise comparisons; bools as is)."""
    if x.dtype == bool:
        return x
    return x.view(f"u{x.dtype.itemsize}")


def _segments(episode: np.ndarray, t: np.ndarray, allow_gaps: bool):
    """(order, cont): the episode-major permutation and, for vault rows ``j < n - 1``, whether
    row ``j + 1`` is the next slot of the same episode. Raises ``ValueError`` on duplicates and
    (unless ``allow_gaps``) gaps."""
    order = np.lexsort((t, episode)).astype(np.int64)
    ep, tt = episode[order].astype(np.int64), t[order].astype(np.int64)
    same = ep[1:] == ep[:-1]
    step = tt[1:] - tt[:-1]
    dup = same & (step == 0)
    if dup.any():
        j = int(np.argmax(dup))
        raise ValueError(f"episode {ep[j]} has slot t={tt[j]} twice (rows {order[j]} and "
                         f"{order[j + 1]}): the rows of an episode have no time order; export "
                         "datasets without repeated (episode, t) rows (e.g. not a "
                         "data.mixture drawn with replacement)")
    gap = same & (step > 1)
    if gap.any() and not allow_gaps:
        j = int(np.argmax(gap))
        raise ValueError(
            f"episode {ep[j]} has a gap: slots {tt[j] + 1}..{tt[j + 1] - 1} are missing between "
            f"rows {order[j]} (t={tt[j]}) and {order[j + 1]} (t={tt[j + 1]}) ({int(gap.sum())} "
            "gap(s) in all); OG-MARL reads consecutive rows as consecutive steps. Pass "
            "allow_gaps=True to cut the episodes there (truncation flags), or export whole "
            "episodes or contiguous stream slices")
    return order, same & (step == 1)


def _check_meta(meta: Mapping[str, Any], cfg: EnvConfig, n: int, sums: Dict[str, str],
                ) -> Dict[str, Any]:
    """The meta stored beside the vault: ``meta`` as JSON, completed with ``n``, ``fields``
    checksums and ``fingerprint`` where it lacks them, checked against the data where it has
    them."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be the dataset's metadata dict (data.collect / data.load), "
                         f"got {type(meta).__name__}")
    for key in ("env_config", "env_params", "behaviour"):
        if key not in meta:
            raise ValueError(f"meta lacks {key!r} (build it with data.make_meta, or pass the "
                             "meta of data.collect / data.load)")
    if data.config_to_json(meta["env_config"]) != data.config_to_json(cfg):
        raise ValueError("meta['env_config'] is not cfg: the dataset's metadata describes "
                         "another configuration")
    out = files.to_json(dict(meta))
    out["env_config"] = data.config_to_json(cfg)
    if isinstance(meta["env_params"], Mapping):  # JSON already (kept as is, but validated)
        data.params_from_json(meta["env_params"])
    else:
        out["env_params"] = data.params_to_json(meta["env_params"])
    env_fp = data.fingerprint({"fields": {k: {"sha256": v} for k, v in sums.items()},
                               "env_config": out["env_config"]})
    if "n" in out and out["n"] != n:
        raise ValueError(f"meta['n'] = {out['n']!r} but the dataset has {n} rows")
    out["n"] = n
    if "fields" in out:
        try:
            recorded = {name: out["fields"][name]["sha256"] for name in data.FIELDS}
        except (KeyError, TypeError) as e:
            raise ValueError(f"meta['fields'] lacks the checksum {e}") from None
        bad = [name for name in data.FIELDS if recorded[name] != sums[name]]
        if bad:
            raise ValueError(f"the dataset does not match its meta: the SHA-256 of {bad} differ "
                             "from meta['fields'] (another dataset's meta, or modified data?)")
    else:
        specs = data.field_specs(cfg, n)
        out["fields"] = {name: {"shape": list(specs[name][0]), "dtype": specs[name][1].str,
                                "sha256": sums[name]} for name in data.FIELDS}
    if out.get("fingerprint", env_fp) != env_fp:
        raise ValueError(f"meta['fingerprint'] = {out['fingerprint']!r} does not match the "
                         f"dataset ({env_fp})")
    out["fingerprint"] = env_fp
    return out


def to_vault(dataset: data.Transitions, cfg: EnvConfig, meta: Mapping[str, Any],
             vault_name: str, rel_dir: str = "vaults", vault_uid: Optional[str] = None, *,
             allow_gaps: bool = False, chunk_rows: int = CHUNK_ROWS, quiet: bool = True) -> Path:
    """Write ``dataset`` as an OG-MARL vault (module docstring: layout, row order, cut episodes).

    The vault is written into a hidden temporary sibling ``.<uid>.tmp-*`` of its directory,
    with the jaxrrm sidecar, and renamed into place when complete; an existing directory is
    never written into. (A process killed mid-write leaves that hidden directory behind; delete
    it: OG-MARL's ``get_available_uids`` lists hidden directories too.)

    Args:
      dataset: :class:`jaxrrm.data.Transitions` (NumPy, memory-mapped or JAX leaves) of ``cfg``;
        checked with :func:`jaxrrm.data.check_content` first.
      cfg: its :class:`EnvConfig`.
      meta: its metadata (:func:`jaxrrm.data.collect`'s or :func:`jaxrrm.data.load`'s): needs
        ``env_config`` (equal to ``cfg``), ``env_params`` and ``behaviour``; recorded
        checksums (``fields``, ``fingerprint``, ``n``) must match the dataset.
      vault_name: flashbax's vault name; OG-MARL's loaders expect
        ``"<source>/<env>/<scenario>.vlt"`` (e.g. ``"jaxrrm/rrm/aps2_ues4.vlt"``).
      rel_dir: flashbax's base directory (relative to the working directory, or absolute).
      vault_uid: the dataset's name inside the vault (OG-MARL: ``"Good"``, ...); default the
        current time as flashbax does (``%Y%m%d%H%M%S``).
      allow_gaps: cut episodes at missing slots instead of raising ``ValueError``.
      chunk_rows: rows gathered and written per flashbax write.
      quiet: silence flashbax's prints.

    Returns:
      The vault's directory (``.name`` is the uid).

    Raises:
      ImportError: flashbax is not installed.
      ValueError: shapes that do not fit ``cfg``, a meta of another configuration or dataset,
        repeated ``(episode, t)`` rows, gaps without ``allow_gaps``, an empty dataset.
      jaxrrm.data.DatasetError: content :func:`jaxrrm.data.check_content` refuses.
      jaxrrm.data.DatasetExistsError: the vault's directory exists.
    """
    Vault, TrajectoryBufferState = _flashbax()
    data.check_shapes(dataset, cfg)
    n = dataset.size
    if n < 1:
        raise ValueError("cannot export an empty dataset")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows={chunk_rows!r}: allowed is >= 1")
    chunk_rows = int(chunk_rows)
    specs = data.field_specs(cfg, n)
    host = {name: _host(getattr(dataset, name)) for name in data.FIELDS}
    data.check_content(data.Transitions(**host), cfg, where="to_vault (not written)")
    sums = {name: data.array_sha256(host[name], specs[name][1]) for name in data.FIELDS}
    full_meta = _check_meta(meta, cfg, n, sums)

    uid = vault_uid if vault_uid else datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    if not isinstance(uid, str) or "/" in uid or uid.startswith("."):
        raise ValueError(f"vault_uid={vault_uid!r}: allowed is a name without '/' or a "
                         "leading '.'")
    final = vault_dir(vault_name, rel_dir, uid)
    if os.path.lexists(final):
        raise data.DatasetExistsError(f"{final}: already exists; choose another vault_uid")

    episode = host["episode"].astype(np.int32, copy=False)
    t = host["t"].astype(np.int32, copy=False)
    order, cont = _segments(episode, t, allow_gaps)
    seg_end = np.append(~cont, True)
    trunc_v = host["truncated"].astype(bool, copy=False)[order]
    term_v = host["terminated"].astype(bool, copy=False)[order]
    added = np.flatnonzero(seg_end & ~trunc_v & ~term_v).astype(np.int64)

    num_i = cfg.num_aps
    f32 = np.float32

    def rows(name, idx):
        return np.asarray(host[name][idx], specs[name][1])

    def experience(idx, lo):
        m = idx.shape[0]

        def per_agent(v):  # [m] -> [1, m, I] float32, one team value per agent
            return np.ascontiguousarray(
                np.broadcast_to(np.asarray(v, f32)[None, :, None], (1, m, num_i)))

        trunc = rows("truncated", idx).copy()
        hit = added[(added >= lo) & (added < lo + m)] - lo
        trunc[hit] = True
        return {
            "observations": rows("obs", idx)[None],
            "actions": rows("actions", idx)[None],
            "rewards": per_agent(rows("reward", idx)),
            "terminals": per_agent(rows("terminated", idx)),
            "truncations": per_agent(trunc),
            "infos": {"legals": rows("action_mask", idx).astype(f32)[None],
                      "state": rows("state", idx)[None]},
        }

    # next_* rows that are not the next vault row's obs / state / mask, bitwise.
    next_rows = []
    pairs = (("next_obs", "obs"), ("next_state", "state"), ("next_action_mask", "action_mask"))
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        explicit = ~cont[lo:hi] if hi < n else np.append(~cont[lo:hi - 1], True)
        nxt_idx = order[lo + 1:min(n, hi + 1)]
        k = nxt_idx.shape[0]  # hi - lo, or one less at the end
        for nxt_name, cur_name in pairs:
            if k == 0:
                break
            a = _bits(rows(nxt_name, order[lo:lo + k]))
            b = _bits(rows(cur_name, nxt_idx))
            explicit[:k] |= (a != b).reshape(k, -1).any(axis=1)
        next_rows.append(lo + np.flatnonzero(explicit))
    next_rows = np.concatenate(next_rows).astype(np.int64)
    extra = {
        "order": order, "episode": episode[order], "t": t[order],
        "rates_mbps": rows("rates_mbps", order), "added_truncations": added,
        "next_rows": next_rows,
        "next_obs": rows("next_obs", order[next_rows]),
        "next_state": rows("next_state", order[next_rows]),
        "next_action_mask": rows("next_action_mask", order[next_rows]),
    }

    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_uid = f".{uid}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = parent / tmp_uid
    out = io.StringIO() if quiet else None
    try:
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            template = jax.tree.map(lambda x: x[:, :1], experience(order[:1], 0))
            vault = Vault(vault_name=vault_name, experience_structure=template, rel_dir=rel_dir,
                          vault_uid=tmp_uid, metadata={"jaxrrm_sidecar": SIDECAR_FILE})
            for lo in range(0, n, chunk_rows):
                hi = min(n, lo + chunk_rows)
                state = TrajectoryBufferState(experience=experience(order[lo:hi], lo),
                                              current_index=np.int32(hi - lo),
                                              is_full=np.bool_(False))
                written = vault.write(state, source_interval=(0, hi - lo))
                assert written == hi - lo
            assert vault.vault_index == n
            del vault
        (tmp / EXTRA_DIR).mkdir()
        arrays = {}
        for name, arr in extra.items():
            fname = f"{EXTRA_DIR}/{name}.npy"
            with open(tmp / fname, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            arrays[name] = {"file": fname, "shape": list(arr.shape), "dtype": arr.dtype.str,
                            "sha256": files.sha256_file(tmp / fname)}
        from .. import __version__
        sidecar = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "jaxrrm_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "layout": {"B": 1, "T": n, "N": num_i, "obs_dim": cfg.obs_dim,
                       "num_actions": cfg.num_actions, "state_dim": cfg.state_dim,
                       "order": "episode-major: sorted by (episode, t)"},
            "n": n, "episodes": int(np.unique(episode).size), "segments": int(seg_end.sum()),
            "added_truncations": int(added.size), "allow_gaps": bool(allow_gaps),
            "dataset_meta": full_meta, "arrays": arrays,
        }
        sidecar = json.loads(json.dumps(sidecar))
        sidecar[data.META_SHA_KEY] = data.meta_sha256(sidecar)
        files.write_json(tmp / SIDECAR_FILE, sidecar, indent=1, sort_keys=True)  # fsynced
        files.fsync_dir(tmp)
        if os.path.lexists(final):
            raise data.DatasetExistsError(f"{final}: appeared while writing; not replaced")
        os.rename(tmp, final)
        files.fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _pick_uid(vault_name: str, rel_dir: str) -> str:
    base = vault_dir(vault_name, rel_dir)
    uids = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if base.is_dir() else []
    if len(uids) != 1:
        raise ValueError(f"{base}: pass vault_uid; the vault holds {uids or 'no datasets'}")
    return uids[0]


def _fail(where: Path, msg: str):
    raise data.DatasetError(f"{where}: {msg}")


def read_sidecar(path) -> Dict[str, Any]:
    """The verified :data:`SIDECAR_FILE` of the vault directory ``path`` (format, version and
    ``meta_sha256`` checked). Raises :class:`jaxrrm.data.DatasetError`."""
    spath = Path(path) / SIDECAR_FILE
    if not spath.is_file():
        _fail(spath, "missing: not a vault written by jaxrrm.integrations.ogmarl.to_vault")
    try:
        side = json.loads(spath.read_text(encoding="utf-8"), object_pairs_hook=files.no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        _fail(spath, f"not valid JSON ({e})")
    if not isinstance(side, dict):
        _fail(spath, "not a JSON object")
    if side.get("format") != FORMAT or side.get("format_version") != FORMAT_VERSION:
        _fail(spath, f"format {side.get('format')!r} version {side.get('format_version')!r}; "
              f"this jaxrrm reads {FORMAT!r} version {FORMAT_VERSION}")
    if side.get(data.META_SHA_KEY) != data.meta_sha256(side):
        _fail(spath, f"{data.META_SHA_KEY} mismatch (edited or corrupt)")
    for key, typ in (("n", int), ("arrays", dict), ("dataset_meta", dict)):
        if not isinstance(side.get(key), typ):
            _fail(spath, f"entry {key!r} is missing or of the wrong type")
    return side


def from_vault(vault_name: str, rel_dir: str = "vaults", vault_uid: Optional[str] = None, *,
               verify: bool = True, quiet: bool = True
               ) -> Tuple[data.Transitions, Dict[str, Any]]:
    """Read a vault written by :func:`to_vault` back into the jaxrrm dataset, exactly.

    The vault is read whole with flashbax (``Vault(...).read()``), its structure checked
    (the keys, shapes and dtypes of the module docstring's table, ``B = 1``, ``T = n``, every
    agent's reward / flags equal, 0/1 flags and masks), the jaxrrm-only fields taken from the
    sidecar (every file's SHA-256 checked) and the rows put back in their original order.

    Args:
      vault_name, rel_dir: as given to :func:`to_vault`.
      vault_uid: the dataset's uid; default the only dataset in the vault.
      verify: re-verify the result: every field's SHA-256 (:func:`jaxrrm.data.array_sha256`)
        against the meta's ``fields``, the meta's ``fingerprint`` (:func:`jaxrrm.data.
        fingerprint`) and the content (:func:`jaxrrm.data.check_content`).
      quiet: silence flashbax's prints.

    Returns:
      (:class:`jaxrrm.data.Transitions` with NumPy leaves, in the original row order and the
      :func:`jaxrrm.data.field_specs` dtypes; the dataset's meta as stored: the
      :func:`jaxrrm.data.load` meta that was exported, or the :func:`jaxrrm.data.collect` meta
      completed with ``n``, ``fields`` and ``fingerprint``).

    Raises:
      ImportError: flashbax is not installed.
      ValueError: no ``vault_uid`` and not exactly one dataset in the vault.
      jaxrrm.data.DatasetError: a missing or foreign vault, a damaged sidecar, array or vault,
        or a checksum that does not match.
    """
    Vault, _ = _flashbax()
    uid = vault_uid if vault_uid else _pick_uid(vault_name, rel_dir)
    path = vault_dir(vault_name, rel_dir, uid)
    if not path.is_dir():
        _fail(path, "no such vault directory")
    side = read_sidecar(path)
    meta = side["dataset_meta"]
    try:
        cfg = data.config_from_meta(meta)
    except (KeyError, ValueError, TypeError) as e:
        _fail(path / SIDECAR_FILE, f"dataset_meta has no valid env_config ({e})")
    n = side["n"]
    specs = data.field_specs(cfg, n)

    extra = {}
    for name, entry in side["arrays"].items():
        fpath = path / entry["file"]
        if not fpath.is_file():
            _fail(fpath, "missing")
        if files.sha256_file(fpath) != entry["sha256"]:
            _fail(fpath, "SHA-256 mismatch (corrupt file)")
        extra[name] = np.load(fpath, allow_pickle=False)
    needed = ("order", "episode", "t", "rates_mbps", "added_truncations", "next_rows",
              "next_obs", "next_state", "next_action_mask")
    missing = [k for k in needed if k not in extra]
    if missing:
        _fail(path / SIDECAR_FILE, f"lacks the arrays {missing}")
    order = extra["order"]
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        _fail(path / side["arrays"]["order"]["file"], "is not a permutation of the rows")

    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        try:
            exp = Vault(vault_name=vault_name, rel_dir=rel_dir, vault_uid=uid).read().experience
        except Exception as e:  # tensorstore / flashbax errors of a damaged store
            _fail(path, f"flashbax cannot read the vault ({type(e).__name__}: {e})")
    exp = jax.tree.map(np.asarray, exp)
    num_i, f32 = cfg.num_aps, np.dtype(np.float32)
    want = {
        "observations": ((1, n, num_i, cfg.obs_dim), f32), "actions": ((1, n, num_i), np.int32),
        "rewards": ((1, n, num_i), f32), "terminals": ((1, n, num_i), f32),
        "truncations": ((1, n, num_i), f32),
        "infos": {"legals": ((1, n, num_i, cfg.num_actions), f32),
                  "state": ((1, n, cfg.state_dim), f32)},
    }
    if not isinstance(exp, dict) or set(exp) != set(want) or not isinstance(
            exp["infos"], dict) or set(exp["infos"]) != set(want["infos"]):
        _fail(path, f"experience has keys {jax.tree.map(lambda x: x.shape, exp)}; expected "
              f"{sorted(EXPERIENCE_KEYS)} with infos {sorted(INFOS_KEYS)}")
    flat = {k: exp[k] for k in want if k != "infos"} | {
        f"infos.{k}": exp["infos"][k] for k in want["infos"]}
    wflat = {k: want[k] for k in want if k != "infos"} | {
        f"infos.{k}": want["infos"][k] for k in want["infos"]}
    for key, (shape, dtype) in wflat.items():
        if flat[key].shape != shape or flat[key].dtype != np.dtype(dtype):
            _fail(path, f"experience {key} is {flat[key].shape} {flat[key].dtype}; the sidecar's "
                  f"configuration and n={n} need {shape} {np.dtype(dtype)}")

    def agents_equal(key):
        x = flat[key][0]
        if not (_bits(x) == _bits(x[:, :1])).all():
            _fail(path, f"experience {key} differs between agents (jaxrrm writes one team value)")
        return x[:, 0]

    def zero_one(key, x):
        if not np.isin(x, (0.0, 1.0)).all():
            _fail(path, f"experience {key} holds values other than 0 and 1")
        return x == 1.0

    reward_v = agents_equal("rewards")
    term_v = zero_one("terminals", agents_equal("terminals"))
    trunc_v = zero_one("truncations", agents_equal("truncations"))
    added = extra["added_truncations"]
    if added.size and not trunc_v[added].all():
        _fail(path, "a cut segment's truncation flag is missing from the vault")
    trunc_v = trunc_v.copy()
    trunc_v[added] = False
    obs_v, state_v = flat["observations"][0], flat["infos.state"][0]
    mask_v = zero_one("infos.legals", flat["infos.legals"][0])

    next_rows = extra["next_rows"]
    if next_rows.ndim != 1 or next_rows.size == 0 or next_rows.min() < 0 \
            or next_rows[-1] != n - 1 or next_rows.max() >= n:
        _fail(path / side["arrays"]["next_rows"]["file"], "does not index the vault's rows "
              "(the last row must be among them)")

    def shifted(cur, stored):
        nxt = np.empty_like(cur)
        nxt[:-1] = cur[1:]
        nxt[next_rows] = stored
        return nxt

    vault_order = {
        "obs": obs_v, "state": state_v, "action_mask": mask_v, "actions": flat["actions"][0],
        "reward": reward_v, "next_obs": shifted(obs_v, extra["next_obs"]),
        "next_state": shifted(state_v, extra["next_state"]),
        "next_action_mask": shifted(mask_v, extra["next_action_mask"]),
        "terminated": term_v, "truncated": trunc_v, "rates_mbps": extra["rates_mbps"],
        "episode": extra["episode"], "t": extra["t"],
    }
    fields = {}
    for name in data.FIELDS:
        shape, dtype = specs[name]
        v = vault_order[name]
        if v.shape != shape or v.dtype != dtype:
            _fail(path, f"{name} is {v.shape} {v.dtype} after import; expected {shape} {dtype}")
        out = np.empty(shape, dtype)
        out[order] = v
        fields[name] = out
    dataset = data.Transitions(**fields)
    if verify:
        try:
            recorded = {name: meta["fields"][name]["sha256"] for name in data.FIELDS}
        except (KeyError, TypeError) as e:
            _fail(path / SIDECAR_FILE, f"dataset_meta lacks the checksum {e}")
        for name in data.FIELDS:
            got = data.array_sha256(fields[name], specs[name][1])
            if got != recorded[name]:
                _fail(path, f"{name}: SHA-256 of the imported field {got} != {recorded[name]} "
                      "recorded at export (a damaged vault?)")
        if data.fingerprint(meta) != meta.get("fingerprint"):
            _fail(path / SIDECAR_FILE, "dataset_meta's fingerprint does not match its checksums")
        data.check_content(dataset, cfg, where=str(path))
    return dataset, meta
