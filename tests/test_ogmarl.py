"""jaxrrm datasets as OG-MARL vaults (jaxrrm.integrations.ogmarl; needs flashbax).

One tiny configuration (2 APs, 4 UEs, N = 2, T = 5) and one compiled collection (23 random-walk
transitions: 4 whole episodes and a partial fifth) shared by every test; the stream tests build
their interleaved streams from its rows by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

fbx = pytest.importorskip("flashbax")
from flashbax.vault import Vault  # noqa: E402

from jaxrrm import EnvConfig, EnvParams, data  # noqa: E402
from jaxrrm.data import DatasetError, DatasetExistsError  # noqa: E402
from jaxrrm.integrations import ogmarl  # noqa: E402

CFG = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
N_STEPS = 23
NAME = "jaxrrm/rrm/tiny.vlt"

#: The README's snippet ("Using jaxrrm datasets with OG-MARL"); test_readme_snippet runs the
#: README's own copy when README.md has that section, this one otherwise.
SNIPPET = '''
from flashbax.vault import Vault
from jaxrrm import EnvConfig, EnvParams, data
from jaxrrm.integrations import ogmarl

cfg = EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=5)
dataset, meta = data.collect(0, "random_walk", EnvParams.create(cfg), cfg, num_steps=23)

# vaults/jaxrrm/rrm/aps2_ues4.vlt/random_walk/ (OG-MARL's "<source>/<env>/<scenario>.vlt"/<uid>)
ogmarl.to_vault(dataset, cfg, meta, "jaxrrm/rrm/aps2_ues4.vlt", rel_dir="vaults",
                vault_uid="random_walk")

# What OG-MARL reads: a plain flashbax vault, one buffer row, the episodes back to back in time.
vault = Vault("jaxrrm/rrm/aps2_ues4.vlt", rel_dir="vaults", vault_uid="random_walk")
experience = vault.read().experience
print(experience["observations"].shape)  # (1, 23, 2, 4): [B, T, N, obs_dim]
# In OG-MARL: FlashbaxReplayBuffer(sequence_length=5).populate_from_vault(
#     "jaxrrm", "rrm", "aps2_ues4", "random_walk")

# Back to jaxrrm: bitwise, in the original row order, checksums and content re-verified.
restored, restored_meta = ogmarl.from_vault("jaxrrm/rrm/aps2_ues4.vlt", rel_dir="vaults",
                                            vault_uid="random_walk")
assert restored_meta["fingerprint"] == data.fingerprint(restored, cfg)
'''


@pytest.fixture(scope="module")
def collected():
    """(dataset, meta) of data.collect: 23 rows, episodes 0-3 whole, episode 4 slots 0-2."""
    ds, meta = data.collect(0, "random_walk", EnvParams.create(CFG), CFG, N_STEPS)
    assert ds.size == N_STEPS and not ds.truncated[-1]
    return ds, meta


def assert_same(a: data.Transitions, b: data.Transitions):
    """Every field equal bitwise, same dtype and shape."""
    for name in data.FIELDS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


def plain_read(rel_dir: Path, uid: str):
    """The vault's experience as plain flashbax reads it (no jaxrrm), as NumPy."""
    vlt = Vault(vault_name=NAME, rel_dir=str(rel_dir), vault_uid=uid)
    return jax.tree.map(np.asarray, vlt.read().experience)


def interleave(ds: data.Transitions, num_envs: int = 2):
    """A step-major stream of ``num_envs`` environments from whole collected episodes: env
    ``e`` runs episodes ``e, e + E, ...`` (ids unique per (env, episode), the stream
    convention); returns (stream, row of ``ds`` for each stream row)."""
    T = CFG.horizon
    per_env = 4 // num_envs
    idx = [(e + num_envs * (s // T)) * T + s % T
           for s in range(per_env * T) for e in range(num_envs)]
    idx = np.asarray(idx)
    return jax.tree.map(lambda x: np.asarray(x)[idx], ds), idx


def test_round_trip_collect_policy(collected, tmp_path):
    """A data.collect_policy dataset comes back bitwise (original order, dtypes), for NumPy and
    JAX leaves; chunked writes give the same vault; the partial last episode is flagged."""
    ds, meta = collected
    path = ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="rw")
    assert path == tmp_path / NAME / "rw" and (path / ogmarl.SIDECAR_FILE).is_file()
    back, _ = ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="rw")
    assert_same(ds, back)
    # default uid: the only dataset of the vault
    again, _ = ogmarl.from_vault(NAME, rel_dir=str(tmp_path))
    assert_same(ds, again)

    side = ogmarl.read_sidecar(path)
    assert side["episodes"] == 5 and side["segments"] == 5 and side["added_truncations"] == 1
    extra = {k: np.load(path / v["file"]) for k, v in side["arrays"].items()}
    np.testing.assert_array_equal(extra["order"], np.arange(N_STEPS))  # already episode-major
    np.testing.assert_array_equal(extra["added_truncations"], [N_STEPS - 1])
    # only each episode's last slot has a next_obs that is not the next row's obs
    np.testing.assert_array_equal(extra["next_rows"], [4, 9, 14, 19, 22])

    small = ogmarl.to_vault(data.to_device(ds), CFG, meta, NAME, rel_dir=str(tmp_path),
                            vault_uid="chunked", chunk_rows=4)
    a, b = plain_read(tmp_path, "rw"), plain_read(tmp_path, "chunked")
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)
    assert ogmarl.read_sidecar(small)["arrays"] == side["arrays"]
    assert_same(ds, ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="chunked")[0])

    one = jax.tree.map(lambda x: np.asarray(x)[:1], ds)  # a single (cut) row
    ogmarl.to_vault(one, CFG, meta | {"n": 1}, NAME, rel_dir=str(tmp_path), vault_uid="one")
    assert_same(one, ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="one")[0])


def test_interleaved_stream_regrouped(collected, tmp_path):
    """A slice of a 2-environment step-major stream (episodes cut at both ends) is regrouped by
    (episode, t); one episode's rows are checked by hand; the import restores the stream order
    and the cut rows' truncated=False."""
    ds, meta = collected
    stream, src = interleave(ds)
    sl = data.slice_stream(stream, 0.2, 12, num_envs=2)  # steps 2..7 of 10
    # step-major: row 2*(s-2)+e is env e at step s; env 0 runs episodes 0, 2; env 1: 1, 3
    np.testing.assert_array_equal(sl.episode, [0, 1] * 3 + [2, 3] * 3)
    np.testing.assert_array_equal(sl.t, np.repeat([2, 3, 4, 0, 1, 2], 2))
    path = ogmarl.to_vault(sl, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="slice")
    exp = plain_read(tmp_path, "slice")

    # vault rows: ep 0 t2-4 | ep 1 t2-4 | ep 2 t0-2 | ep 3 t0-2. Episode 1 by hand: env 1 at
    # steps 2, 3, 4 = slice rows 1, 3, 5 = vault rows 3, 4, 5.
    rows = [1, 3, 5]
    np.testing.assert_array_equal(exp["observations"][0, 3:6], sl.obs[rows])
    np.testing.assert_array_equal(exp["actions"][0, 3:6], sl.actions[rows])
    np.testing.assert_array_equal(exp["rewards"][0, 3:6], np.repeat(sl.reward[rows, None], 2, 1))
    np.testing.assert_array_equal(exp["infos"]["state"][0, 3:6], sl.state[rows])
    np.testing.assert_array_equal(exp["infos"]["legals"][0, 3:6], sl.action_mask[rows])
    np.testing.assert_array_equal(exp["truncations"][0, 3:6], [[0, 0], [0, 0], [1, 1]])
    # ... which are the collected dataset's rows 5+2..5+4 (episode 1, slots 2-4)
    np.testing.assert_array_equal(src[4 + np.asarray(rows)], [7, 8, 9])  # slice = row 4 on
    np.testing.assert_array_equal(exp["observations"][0, 3:6], ds.obs[7:10])
    # episode 2 (env 0, steps 5-7 = slice rows 6, 8, 10) is cut after t=2: flagged, not ours
    np.testing.assert_array_equal(exp["observations"][0, 6:9], sl.obs[[6, 8, 10]])
    np.testing.assert_array_equal(exp["truncations"][0, :, 0],
                                  [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1])
    assert not exp["terminals"].any()
    side = ogmarl.read_sidecar(path)
    assert side["segments"] == 4 and side["episodes"] == 4
    np.testing.assert_array_equal(np.load(path / side["arrays"]["added_truncations"]["file"]),
                                  [8, 11])
    np.testing.assert_array_equal(np.load(path / side["arrays"]["order"]["file"]),
                                  [0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11])
    # OG-MARL's vault_utils count episodes as rows where every agent's flag is set
    done = exp["terminals"][0].all(-1) | exp["truncations"][0].all(-1)
    assert int(done.sum()) == 4

    back, _ = ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="slice")
    assert_same(sl, back)
    assert not back.truncated[10] and not back.truncated[11] and back.truncated[4]


def test_layout_matches_ogmarl(collected, tmp_path):
    """Plain flashbax reads the vault: OG-MARL's keys, [B=1, T, N, ...] shapes, dtypes; an
    OG-MARL-style flashbax trajectory buffer samples sequences from it."""
    ds, meta = collected
    path = ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="Good")
    state = Vault(vault_name=NAME, rel_dir=str(tmp_path), vault_uid="Good").read()
    exp = state.experience
    n, i, a = N_STEPS, CFG.num_aps, CFG.num_actions
    shapes = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), exp)
    assert shapes == {
        "observations": ((1, n, i, CFG.obs_dim), "float32"), "actions": ((1, n, i), "int32"),
        "rewards": ((1, n, i), "float32"), "terminals": ((1, n, i), "float32"),
        "truncations": ((1, n, i), "float32"),
        "infos": {"legals": ((1, n, i, a), "float32"), "state": ((1, n, CFG.state_dim),
                                                                 "float32")},
    }
    meta_json = json.loads((path / "metadata.json").read_text())
    assert meta_json["jaxrrm_sidecar"] == ogmarl.SIDECAR_FILE
    # like OG-MARL's FlashbaxReplayBuffer.populate_from_vault + sample
    buf = fbx.make_trajectory_buffer(add_batch_size=1, sample_batch_size=4,
                                     sample_sequence_length=3, period=1,
                                     min_length_time_axis=3, max_length_time_axis=n)
    batch = buf.sample(state, jax.random.key(0)).experience
    assert batch["observations"].shape == (4, 3, i, CFG.obs_dim)
    assert batch["infos"]["legals"].shape == (4, 3, i, a)


def test_metadata_and_checksums_preserved(collected, tmp_path):
    """A data.load meta comes back unchanged (fingerprint, per-field SHA-256, meta_sha256); a
    data.collect meta is completed with them; damage and mismatches are refused."""
    ds, meta = collected
    saved_meta = data.save(tmp_path / "ds", ds, meta)
    loaded, loaded_meta = data.load(tmp_path / "ds")
    path = ogmarl.to_vault(loaded, CFG, loaded_meta, NAME, rel_dir=str(tmp_path / "v"),
                           vault_uid="loaded")
    back, back_meta = ogmarl.from_vault(NAME, rel_dir=str(tmp_path / "v"), vault_uid="loaded")
    assert back_meta == loaded_meta == saved_meta
    assert data.fingerprint(back, CFG) == data.fingerprint(back_meta) == saved_meta["fingerprint"]
    assert data.meta_sha256(back_meta) == back_meta["meta_sha256"]
    assert_same(loaded, back)

    path2 = ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path / "v"), vault_uid="coll")
    _, coll_meta = ogmarl.from_vault(NAME, rel_dir=str(tmp_path / "v"), vault_uid="coll")
    assert {k: coll_meta[k] for k in meta} == json.loads(json.dumps(meta))
    assert coll_meta["n"] == N_STEPS
    assert coll_meta["fingerprint"] == saved_meta["fingerprint"]
    for name in data.FIELDS:
        assert coll_meta["fields"][name]["sha256"] == saved_meta["fields"][name]["sha256"]

    # a meta that is not this dataset's
    other = data.Transitions(**{f: np.asarray(getattr(ds, f)).copy() for f in data.FIELDS})
    other.reward[0] += 1.0
    with pytest.raises(ValueError, match=r"does not match its meta.*reward"):
        ogmarl.to_vault(other, CFG, loaded_meta, NAME, rel_dir=str(tmp_path / "v"),
                        vault_uid="bad")
    with pytest.raises(ValueError, match="another configuration"):
        ogmarl.to_vault(ds, EnvConfig(num_aps=2, num_ues=4, num_candidates=2, horizon=6), meta,
                        NAME, rel_dir=str(tmp_path / "v"), vault_uid="bad")
    # an existing vault is never written into
    with pytest.raises(DatasetExistsError):
        ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path / "v"), vault_uid="coll")
    assert sorted(p.name for p in (tmp_path / "v" / NAME).iterdir()) == ["coll", "loaded"]

    # damage: the sidecar's meta, a sidecar array, the vault's data
    side_path = path / ogmarl.SIDECAR_FILE
    side = json.loads(side_path.read_text())
    side["dataset_meta"]["behaviour"] = "edited"
    side_path.write_text(json.dumps(side))
    with pytest.raises(DatasetError, match="meta_sha256 mismatch"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path / "v"), vault_uid="loaded")
    rates = path2 / ogmarl.EXTRA_DIR / "rates_mbps.npy"
    arr = np.load(rates)
    arr[0, 0] += 1.0
    np.save(rates, arr)
    with pytest.raises(DatasetError, match="rates_mbps.npy: SHA-256 mismatch"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path / "v"), vault_uid="coll")
    Vault(vault_name=NAME, rel_dir=str(tmp_path / "v"), vault_uid="foreign",
          experience_structure={"actions": np.zeros((1, 1, 2), np.int32)})
    with pytest.raises(DatasetError, match="jaxrrm_meta.json: missing"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path / "v"), vault_uid="foreign")


def test_vault_data_damage_detected(collected, tmp_path):
    """A value changed inside the flashbax store fails the imported field's SHA-256 check; a
    reward that differs between agents is refused as such."""
    import tensorstore as ts

    ds, meta = collected
    path = ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="x")

    def leaf(name):  # flashbax's own datastore spec of one experience leaf
        return ts.open({"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{path}",
                                                      "path": name}}).result()

    obs = leaf("observations.")
    obs[0, 3, 0, 0].write(np.float32(obs[0, 3, 0, 0].read().result() + 1.0)).result()
    with pytest.raises(DatasetError, match="obs: SHA-256 of the imported field"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="x")
    rewards = leaf("rewards.")
    rewards[0, 5, 1].write(np.float32(rewards[0, 5, 1].read().result() + 1.0)).result()
    with pytest.raises(DatasetError, match="rewards differs between agents"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="x")


def test_broken_episodes(collected, tmp_path):
    """A gap inside an episode is refused (ValueError naming it) or, with allow_gaps, cut with
    a truncation flag and still round-trips; repeated (episode, t) rows are always refused."""
    ds, meta = collected
    keep = np.delete(np.arange(N_STEPS), 7)  # episode 1 loses slot 2
    gappy = jax.tree.map(lambda x: np.asarray(x)[keep], ds)
    with pytest.raises(ValueError, match=r"episode 1 has a gap: slots 2\.\.2 are missing"):
        ogmarl.to_vault(gappy, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="gap")
    assert not (tmp_path / NAME).exists() or not any((tmp_path / NAME).iterdir())
    path = ogmarl.to_vault(gappy, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="gap",
                           allow_gaps=True)
    exp = plain_read(tmp_path, "gap")
    assert exp["truncations"][0, 6].all()  # episode 1, t=1 (vault row 6) ends its segment
    side = ogmarl.read_sidecar(path)
    assert side["segments"] == 6 and side["episodes"] == 5 and side["allow_gaps"]
    back, _ = ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="gap")
    assert_same(gappy, back)
    assert not back.truncated[6]

    dup = data.concatenate([ds, jax.tree.map(lambda x: np.asarray(x)[:1], ds)],
                           renumber_episodes=False)
    with pytest.raises(ValueError, match=r"episode 0 has slot t=0 twice \(rows 0 and 23\)"):
        ogmarl.to_vault(dup, CFG, meta, NAME, rel_dir=str(tmp_path), vault_uid="dup",
                        allow_gaps=True)


def test_without_flashbax(collected, monkeypatch, tmp_path):
    """Without flashbax the functions raise ImportError with the install line; importing
    jaxrrm (and this module) never imports flashbax."""
    ds, meta = collected
    for mod in ("flashbax", "flashbax.vault", "flashbax.buffers.trajectory_buffer"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"pip install 'jaxrrm\[ogmarl\]'"):
        ogmarl.to_vault(ds, CFG, meta, NAME, rel_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r"pip install 'jaxrrm\[ogmarl\]'"):
        ogmarl.from_vault(NAME, rel_dir=str(tmp_path), vault_uid="x")
    code = ("import sys, jaxrrm, jaxrrm.data, jaxrrm.integrations.ogmarl; "
            "assert 'flashbax' not in sys.modules, 'flashbax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_snippet(collected, monkeypatch, tmp_path):
    """The README's OG-MARL snippet runs (README.md's copy where it has the section)."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    code = SNIPPET
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    m = re.search(r"#+ Using jaxrrm datasets with OG-MARL\n(.*?)```python\n(.*?)```", text,
                  re.DOTALL)
    if m:
        code = m.group(2)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README snippet", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "vaults/jaxrrm/rrm/aps2_ues4.vlt/random_walk" /
            ogmarl.SIDECAR_FILE).is_file()
