"""Faults of the dataset format (jaxrrm.data) that checksums alone do not catch.

A dataset whose checksums match can still be garbage (a buggy writer or an attacker computes
them too): these tests write such datasets by hand, *resealing* ``meta.json`` (array SHA-256,
byte counts, fingerprint, ``meta_sha256``) so that only the content and metadata checks stand
between them and the trainer. One small collection on ``EnvConfig(num_aps=2, num_ues=4,
num_candidates=2, horizon=5)`` (one compilation) feeds them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re

import jax
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, data
from jaxrrm.data import DatasetError, Transitions

CFG = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
N = 23  # 4 whole episodes and a partial one


@pytest.fixture(scope="module")
def collected():
    """Two random-walk collections (seeds 0 and 1; one compiled program) and their metas."""
    params = EnvParams.create(CFG)
    a, meta_a = data.collect(0, "random_walk", params, CFG, N)
    b, meta_b = data.collect(1, "random_walk", params, CFG, N)
    return a, meta_a, b, meta_b


@pytest.fixture
def saved(tmp_path, collected):
    ds, meta = collected[0], collected[1]
    path = tmp_path / "ds"
    return path, ds, data.save(path, ds, meta)


def canonical_sha(meta) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def reseal(path, meta, rehash=(), refingerprint=True) -> None:
    """Write ``meta`` as ``path/meta.json`` with its checksums recomputed (an attacker's write):
    the SHA-256 and byte counts of the fields ``rehash``, the fingerprint (if
    ``refingerprint``), ``meta_sha256``."""
    m = copy.deepcopy(meta)
    for name in rehash:
        raw = (path / f"{name}.npy").read_bytes()
        m["fields"][name].update(sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    if refingerprint:
        with contextlib.suppress(Exception):  # metadata too broken to fingerprint: keep it
            m["fingerprint"] = data.fingerprint(m)
    m["meta_sha256"] = canonical_sha(m)
    (path / "meta.json").write_text(json.dumps(m))


def write_fields(path, meta, ds: Transitions) -> None:
    """Replace every field's file by ``ds``'s and reseal (the checksums match the garbage)."""
    for name in data.FIELDS:
        np.save(path / f"{name}.npy", np.ascontiguousarray(getattr(ds, name)), allow_pickle=False)
    reseal(path, meta, rehash=data.FIELDS)


def mutable(ds: Transitions) -> Transitions:
    return jax.tree.map(lambda x: np.array(x), ds)


# ---------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------


def _nan_reward(d):
    d.reward[9] = np.nan
    d.reward[3] = np.nan  # the first one is reported


def _set(name, idx, value):
    def fn(d):
        getattr(d, name)[idx] = value
    return fn


def _no_valid_action(name):
    def fn(d):
        getattr(d, name)[6, 1, :] = False
    return fn


def _forbidden_action(d):
    d.action_mask[4, 0, :] = [False, True, True]
    d.actions[4, 0] = 0


#: (label, corruption of a mutable copy, field, first offending index, problem)
GARBAGE = [
    ("nan_reward", _nan_reward, "reward", "3", "not finite"),
    ("inf_obs", _set("obs", (7, 1, 2), np.inf), "obs", "7, 1, 2", "not finite"),
    ("nan_state", _set("state", (2, 5), np.nan), "state", "2, 5", "not finite"),
    ("nan_next_obs", _set("next_obs", (0, 0, 0), np.nan), "next_obs", "0, 0, 0", "not finite"),
    ("inf_next_state", _set("next_state", (22, 0), -np.inf), "next_state", "22, 0",
     "not finite"),
    ("nan_rates", _set("rates_mbps", (11, 3), np.nan), "rates_mbps", "11, 3", "not finite"),
    ("negative_action", _set("actions", (5, 1), -1), "actions", "5, 1", r"outside \[0, 3\)"),
    ("action_too_large", _set("actions", (8, 0), 3), "actions", "8, 0", r"outside \[0, 3\)"),
    ("empty_mask_row", _no_valid_action("action_mask"), "action_mask", "6, 1", "no valid action"),
    ("empty_next_mask_row", _no_valid_action("next_action_mask"), "next_action_mask", "6, 1",
     "no valid action"),
    ("forbidden_action", _forbidden_action, "actions", "4, 0", "forbidden by its own action_mask"),
    ("t_at_horizon", _set("t", 10, 5), "t", "10", r"outside \[0, 5\)"),
    ("negative_t", _set("t", 1, -1), "t", "1", r"outside \[0, 5\)"),
    ("negative_episode", _set("episode", 13, -2), "episode", "13", "not an episode id"),
]


def test_collected_data_pass_check_content(collected):
    a, _, b, _ = collected
    data.check_content(a, CFG)
    data.check_content(b, CFG, where="somewhere")
    data.check_content(data.to_device(a), CFG)  # JAX leaves
    with pytest.raises(DatasetError, match="empty"):        # nothing to learn from
        data.check_content(jax.tree.map(lambda x: x[:0], a), CFG)


@pytest.mark.parametrize("label,corrupt,name,index,problem", GARBAGE,
                         ids=[g[0] for g in GARBAGE])
def test_check_content_names_field_index_and_problem(collected, label, corrupt, name, index,
                                                     problem):
    bad = mutable(collected[0])
    corrupt(bad)
    pattern = rf"^where: Transitions\.{name}\[{index}\] .*{problem}"
    with pytest.raises(DatasetError, match=pattern):
        data.check_content(bad, CFG, where="where")
    with pytest.raises(DatasetError, match=pattern[len("^where: "):]):  # JAX leaves too
        data.check_content(data.to_device(bad), CFG)


@pytest.mark.parametrize("label,corrupt,name,index,problem", GARBAGE,
                         ids=[g[0] for g in GARBAGE])
def test_garbage_with_matching_checksums_refused_on_load(saved, label, corrupt, name, index,
                                                         problem):
    path, ds, meta = saved
    bad = mutable(ds)
    corrupt(bad)
    write_fields(path, meta, bad)
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: Transitions\.{name}\[{index}\] .*{problem}"):
        data.load(path)
    # verify=False is the documented fast path: no checksums, no content checks
    loaded, _ = data.load(path, verify=False)
    np.testing.assert_array_equal(getattr(loaded, name), getattr(bad, name))


@pytest.mark.parametrize("label,corrupt,name,index,problem", GARBAGE,
                         ids=[g[0] for g in GARBAGE])
def test_save_refuses_garbage_before_writing(tmp_path, collected, label, corrupt, name, index,
                                             problem):
    bad = mutable(collected[0])
    corrupt(bad)
    with pytest.raises(DatasetError, match=rf"not written.*{name}\[{index}\] .*{problem}"):
        data.save(tmp_path / "ds", bad, collected[1])
    assert list(tmp_path.iterdir()) == []


def test_float32_overflow_and_wrong_dtypes_refused(tmp_path, collected):
    ds, meta = collected[0], collected[1]
    # finite as float64, infinite as the float32 save writes
    big = ds.replace(reward=np.asarray(ds.reward, np.float64) * 0 + 1e39)
    with pytest.raises(DatasetError, match=r"reward\[0\].*not finite \(as float32\)"):
        data.save(tmp_path / "a", big, meta)
    with pytest.raises(DatasetError, match="actions has dtype float32; an integer"):
        data.check_content(ds.replace(actions=np.asarray(ds.actions, np.float32)), CFG)
    with pytest.raises(DatasetError, match="t has dtype bool"):
        data.check_content(ds.replace(t=np.asarray(ds.t) > 0), CFG)
    with pytest.raises(DatasetError, match="Transitions.obs has shape"):
        data.check_content(ds.replace(obs=np.asarray(ds.obs)[:, :1]), CFG)
    # int64 episode ids beyond int32 would wrap when saved
    with pytest.raises(DatasetError, match=r"episode\[0\]"):
        data.check_content(ds.replace(episode=np.asarray(ds.episode, np.int64) + 2**31), CFG)
    assert list(tmp_path.iterdir()) == []


def test_no_idle_ap_without_ue_is_valid(collected):
    # Without idle, an AP with no UE has no valid action (all-False row): the environment
    # executes any action as silence, so such rows are data, not garbage.
    ds = mutable(collected[0])
    cfg = CFG.replace(allow_idle=False)
    no_idle = ds.replace(action_mask=ds.action_mask[..., :2].copy(),
                         next_action_mask=ds.next_action_mask[..., :2].copy(),
                         actions=np.zeros_like(ds.actions))
    no_idle.action_mask[..., 0] = True
    no_idle.next_action_mask[..., 0] = True
    no_idle.action_mask[3, 1] = False
    no_idle.actions[3, 1] = 1
    data.check_content(no_idle, cfg)
    no_idle.action_mask[4, 0] = [False, True]  # but a valid action must be taken where one exists
    with pytest.raises(DatasetError, match=r"actions\[4, 0\] = 0 is forbidden.*\[1\]"):
        data.check_content(no_idle, cfg)


class _Spy:
    """An array-like that records the rows of every read (to check the chunking)."""

    def __init__(self, arr, reads):
        self.arr, self.reads = arr, reads
        self.shape, self.dtype = arr.shape, arr.dtype

    def __getitem__(self, idx):
        out = self.arr[idx]
        self.reads.append(out.shape[0])
        return out


def _spied(ds):
    reads = {name: [] for name in data.FIELDS}
    return Transitions(**{name: _Spy(np.asarray(getattr(ds, name)), reads[name])
                          for name in data.FIELDS}), reads


def test_check_content_reads_in_chunks(collected, monkeypatch):
    monkeypatch.setattr(data.transitions, "CHECK_CHUNK_ROWS", 4)
    bad = mutable(collected[0])
    bad.rates_mbps[21, 2] = np.nan  # in the last chunk: the index is the dataset's, not the chunk's
    spied, reads = _spied(bad)
    with pytest.raises(DatasetError, match=r"rates_mbps\[21, 2\]"):
        data.check_content(spied, CFG)
    assert max(r for v in reads.values() for r in v) <= 4
    spied, reads = _spied(collected[0])
    data.check_content(spied, CFG)
    checked = [name for name in data.FIELDS if name not in ("terminated", "truncated")]
    for name in checked:  # every row once, never more than a chunk at a time
        assert sum(reads[name]) == N and max(reads[name]) <= 4, name


# ---------------------------------------------------------------------------------------------
# meta.json integrity and types
# ---------------------------------------------------------------------------------------------


def _edit(path, meta, fn, seal=True):
    m = copy.deepcopy(meta)
    fn(m)
    if seal:  # keeps a fingerprint the edit set
        reseal(path, m, refingerprint=m.get("fingerprint") == meta["fingerprint"])
    else:
        (path / "meta.json").write_text(json.dumps(m))


def test_meta_checksum_stored_and_verified(saved):
    path, _, meta = saved
    assert meta["meta_sha256"] == canonical_sha(meta)
    on_disk = json.loads((path / "meta.json").read_text())
    assert on_disk["meta_sha256"] == canonical_sha(on_disk) == meta["meta_sha256"]
    # a hand edit that leaves every array checksum intact
    _edit(path, meta, lambda m: m.update(behaviour="full_reuse"), seal=False)
    with pytest.raises(DatasetError, match=r"meta\.json: meta_sha256 mismatch"):
        data.load(path)
    assert data.load(path, verify=False)[1]["behaviour"] == "full_reuse"  # the fast path
    _edit(path, meta, lambda m: m.pop("meta_sha256"), seal=False)
    with pytest.raises(DatasetError, match="meta.json: meta_sha256 mismatch"):
        data.load(path)
    with pytest.raises(DatasetError, match="meta.json: lacks the entry 'meta_sha256'"):
        data.load(path, verify=False)


def test_stored_fingerprint_compared(saved):
    path, _, meta = saved

    def lie(m):
        m["fingerprint"] = "0" * 64
        m["meta_sha256"] = canonical_sha(m)  # consistent meta.json, wrong fingerprint
    _edit(path, meta, lie, seal=False)
    with pytest.raises(DatasetError, match=r"meta\.json: entry 'fingerprint' = '0{64}' does not"):
        data.load(path)


def test_exchanged_field_entries_refused(saved):
    path, _, meta = saved

    def swap(m):
        m["fields"]["obs"], m["fields"]["next_obs"] = m["fields"]["next_obs"], m["fields"]["obs"]
    _edit(path, meta, swap)
    for verify in (True, False):
        with pytest.raises(DatasetError,
                           match=r"meta\.json: entry 'fields\.obs\.file' = 'next_obs\.npy'"):
            data.load(path, verify=verify)


@pytest.mark.parametrize("value", [7, -0.1, "0.5", True, None, [0.5, "a"], [True], {"x": 1}])
def test_invalid_env_params_refused(saved, value):
    path, _, meta = saved
    _edit(path, meta, lambda m: m["env_params"].update(pf_lambda=value))
    for verify in (True, False):
        with pytest.raises(DatasetError, match=r"meta\.json: entry 'env_params' is invalid.*"
                                               r"pf_lambda"):
            data.load(path, verify=verify)


def test_incomplete_env_params_refused(saved):
    path, _, meta = saved
    _edit(path, meta, lambda m: m["env_params"].pop("tx_power_dbm"))
    with pytest.raises(DatasetError, match="env_params' lacks.*tx_power_dbm"):
        data.load(path)
    _edit(path, meta, lambda m: m["env_params"].update(bogus=1.0))
    with pytest.raises(DatasetError, match="env_params' is invalid.*bogus"):
        data.load(path)


def _setter(*keys, value):
    def fn(m):
        d = m
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


#: (label, edit, what the message names)
WRONG_TYPES = [
    ("n_str", _setter("n", value="23"), "n='23'"),
    ("n_bool", _setter("n", value=True), "n=True"),
    ("shape_int", _setter("fields", "obs", "shape", value=3), r"'fields\.obs\.shape' = 3"),
    ("shape_null", _setter("fields", "obs", "shape", value=None), r"'fields\.obs\.shape'"),
    ("shape_floats", _setter("fields", "obs", "shape", value=[23.0, 2, 4]),
     r"'fields\.obs\.shape'"),
    ("field_int", _setter("fields", "obs", value=5), "field 'obs'"),
    ("fields_list", _setter("fields", value=[1]), "'fields' = \\[1\\] has the wrong type"),
    ("fields_unknown", _setter("fields", "extra", value={}), "unknown fields \\['extra'\\]"),
    ("dtype_unknown", _setter("fields", "obs", "dtype", value="foo"), r"'fields\.obs\.dtype'"),
    ("dtype_int", _setter("fields", "obs", "dtype", value=5), r"'fields\.obs\.dtype'"),
    ("file_int", _setter("fields", "obs", "file", value=5), r"'fields\.obs\.file' = 5"),
    ("file_path", _setter("fields", "obs", "file", value="../obs.npy"), r"'fields\.obs\.file'"),
    ("sha_int", _setter("fields", "obs", "sha256", value=5), r"'fields\.obs\.sha256' = 5"),
    ("bytes_str", _setter("fields", "obs", "bytes", value="9"), r"'fields\.obs\.bytes' = '9'"),
    ("bytes_wrong", _setter("fields", "obs", "bytes", value=9), r"'fields\.obs\.bytes' = 9"),
    ("config_list", _setter("env_config", value=[1]), "'env_config' = \\[1\\]"),
    ("config_num_aps_str", _setter("env_config", "num_aps", value="2"),
     "'env_config.num_aps' = '2'"),
    ("config_horizon_float", _setter("env_config", "horizon", value=5.0),
     "'env_config.horizon' = 5.0"),
    ("config_flag_int", _setter("env_config", "allow_idle", value=1),
     "'env_config.allow_idle' = 1"),
    ("config_name_int", _setter("env_config", "reward", value=3), "'env_config.reward' = 3"),
    ("config_positions", _setter("env_config", "ap_positions_m", value=[[0, True], [1, "2"]]),
     "'env_config.ap_positions_m'"),
    ("config_positions_int", _setter("env_config", "ap_positions_m", value=5),
     "'env_config.ap_positions_m' = 5"),
    ("config_missing", lambda m: m["env_config"].pop("mobility"), "env_config' lacks 'mobility'"),
    ("config_unknown", _setter("env_config", "bogus", value=1), "env_config' is invalid.*bogus"),
    ("params_list", _setter("env_params", value=[1]), "'env_params' = \\[1\\]"),
    ("behaviour_int", _setter("behaviour", value=5), "'behaviour' = 5"),
    ("seeds_list", _setter("seeds", value=[0]), "'seeds' = \\[0\\]"),
    ("behaviour_config_str", _setter("behaviour_config", value="x"), "'behaviour_config'"),
    ("fingerprint_int", _setter("fingerprint", value=5), "'fingerprint' = 5"),
    ("schema_1", _setter("schema_version", value=1), "schema_version 1 is not supported"),
    ("schema_float", _setter("schema_version", value=2.0), "'schema_version' = 2.0"),
]


@pytest.mark.parametrize("label,edit,names", WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_typed_meta_entries_raise_dataset_error(saved, label, edit, names):
    path, _, meta = saved
    _edit(path, meta, edit)
    for verify in (True, False):
        with pytest.raises(DatasetError, match=rf"meta\.json: .*{names}"):
            data.load(path, verify=verify)


def test_duplicate_meta_keys_refused(saved):
    path, _, meta = saved
    text = json.dumps(meta)
    (path / "meta.json").write_text(text[:-1] + ', "n": 23}')
    with pytest.raises(DatasetError, match="meta.json: not valid JSON.*duplicate key 'n'"):
        data.read_meta(path)


@pytest.mark.parametrize("value", ["30", True, False, None, [1.0, True], ["1"], {"a": 1}])
def test_params_from_json_refuses_bool_and_str(value):
    with pytest.raises(ValueError, match="tx_power_dbm"):
        data.params_from_json({"tx_power_dbm": value})


def test_params_from_json_accepts_numbers():
    assert data.params_from_json({"tx_power_dbm": 30}).tx_power_dbm == 30.0
    assert data.params_from_json({"pf_lambda": np.float32(0.5)}).pf_lambda == 0.5
    batched = data.params_from_json({"pf_lambda": [0.2, 0.4]})
    np.testing.assert_allclose(batched.pf_lambda, [0.2, 0.4])
    full = data.params_to_json(EnvParams.create(CFG))
    assert data.params_from_json(full) == EnvParams.create(CFG)
    with pytest.raises(ValueError, match="pf_lambda"):
        data.params_from_json({"pf_lambda": 7})


# ---------------------------------------------------------------------------------------------
# Combinations keep the guarantees
# ---------------------------------------------------------------------------------------------


def test_combinations_pass_check_content_and_round_trip(tmp_path, collected):
    a, meta_a, b, _ = collected
    mix = data.mixture(jax.random.key(0), [a, b], [0.7, 0.3], 40)  # more rows than a has
    cat = data.concatenate([a, b])
    cat_kept = data.concatenate([a, b], renumber_episodes=False)
    sl = data.slice_stream(data.concatenate([a, a]), 0.25, 11)
    for name, ds in (("mix", mix), ("cat", cat), ("cat_kept", cat_kept), ("slice", sl),
                     ("mix_of_mix", data.mixture(jax.random.key(1), [mix, sl], [1, 1], 9))):
        data.check_content(ds, CFG, where=name)
        written = data.save(tmp_path / name, ds, meta_a)
        loaded, meta = data.load(tmp_path / name, expected_cfg=CFG)
        assert meta == written and meta["n"] == ds.size
        for f in data.FIELDS:
            np.testing.assert_array_equal(getattr(loaded, f), np.asarray(getattr(ds, f)),
                                          err_msg=f"{name}.{f}")
        assert data.fingerprint(meta) == data.fingerprint(ds, CFG) == meta["fingerprint"]


def test_review_round_two_content_and_meta(tmp_path):
    """Empty datasets, negative rates, non-datasets, NaN tokens in meta.json and env_params that
    do not fit the env_config (re-signed) are refused."""
    import json

    from jaxrrm import EnvConfig, EnvParams, data

    cfg = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
    ds, meta = data.collect(0, "full_reuse", EnvParams.create(cfg), cfg, 10)
    with pytest.raises(data.DatasetError, match="empty"):
        data.check_content(jax.tree.map(lambda x: x[:0], ds), cfg)
    with pytest.raises(data.DatasetError, match="Transitions dataset is required"):
        data.check_content("str", cfg)
    rates = np.array(ds.rates_mbps)
    rates[3, 1] = -1.0
    with pytest.raises(data.DatasetError, match=r"rates_mbps\[3, 1\].*negative"):
        data.save(tmp_path / "neg", ds.replace(rates_mbps=rates), meta)
    assert not (tmp_path / "neg").exists()
    path = tmp_path / "ok"
    data.save(path, ds, meta)
    assert data.is_dataset_dir(path) and not data.is_dataset_dir(tmp_path)
    mpath = path / data.META_FILE
    good = json.loads(mpath.read_text())

    def resign(m):
        m[data.META_SHA_KEY] = data.meta_sha256(m)
        mpath.write_text(json.dumps(m))

    bad = json.loads(json.dumps(good))
    bad["env_params"]["tx_power_dbm"] = [30.0, 30.0, 30.0]         # 3 values for 2 APs
    resign(bad)
    with pytest.raises(data.DatasetError, match="does not fit 'env_config'"):
        data.load(path)
    bad = json.loads(json.dumps(good))
    bad["env_params"]["min_distance_m"] = 1e5                     # infeasible geometry
    resign(bad)
    with pytest.raises(data.DatasetError, match="infeasible"):
        data.load(path)
    mpath.write_text('{"x": NaN, ' + json.dumps(good)[1:])
    with pytest.raises(data.DatasetError, match="NaN"):
        data.load(path)
