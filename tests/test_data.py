"""Offline datasets (jaxrrm.data): collection, streams, mixtures, the disk format, sampling.

The disk-format and combination tests run on small synthetic datasets (no environment); only the
collection tests roll the environment out, on ``conftest.SMALL_CFG`` (3 APs, 12 UEs, N = 3,
T = 20), sharing one compiled collection program where they can.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrrm import EnvConfig, EnvParams, baselines, data, env
from jaxrrm.data import DatasetError, Transitions

from conftest import SMALL_CFG

CFG = SMALL_CFG
P_MIN = 1e-3  # significance floor of the statistical tests (fixed keys: deterministic)


def synthetic(n: int, cfg: EnvConfig = CFG, seed: int = 0, reward=None,
              row_ids: bool = False) -> Transitions:
    """A dataset with random contents of the right shapes that passes ``data.check_content``
    (idle always valid, each action valid under its mask, ``t`` the slot within the episode).

    With ``row_ids``, ``t`` is ``0..n-1`` instead (a row id; beyond the horizon not a valid slot,
    for the sampling and mixture tests, which do not save).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in data.field_specs(cfg, n).items():
        if dtype == np.float32:
            out[name] = rng.standard_normal(shape).astype(np.float32)
        elif dtype == bool:
            out[name] = rng.random(shape) < 0.7
        else:
            out[name] = rng.integers(0, cfg.num_actions, shape).astype(np.int32)
    for name in ("action_mask", "next_action_mask"):
        out[name][..., cfg.idle_action] = True
    out["actions"] = np.argmax(np.where(out["action_mask"], rng.random(out["action_mask"].shape),
                                        -1.0), axis=-1).astype(np.int32)
    out["rates_mbps"] = np.abs(out["rates_mbps"])     # rates are not negative
    out["episode"] = (np.arange(n) // cfg.horizon).astype(np.int32)
    out["t"] = (np.arange(n) if row_ids else np.arange(n) % cfg.horizon).astype(np.int32)
    if reward is not None:
        out["reward"] = np.full((n,), reward, np.float32)
    return Transitions(**out)


def meta_for(cfg: EnvConfig = CFG, **kw):
    return data.make_meta(cfg, EnvParams.create(cfg), "random_walk", {"epsilon": 0.0},
                          {"collect": 7}, **kw)


def assert_same(a: Transitions, b: Transitions):
    for name in data.FIELDS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Disk format
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    ds = synthetic(90)
    path = tmp_path / "ds"
    meta = data.save(path, ds, meta_for(note="hello"))
    return path, ds, meta


def test_round_trip(saved):
    path, ds, meta = saved
    loaded, meta2 = data.load(path, expected_cfg=CFG)
    assert_same(ds, loaded)
    assert meta2 == meta
    assert meta["schema_version"] == data.SCHEMA_VERSION == 2
    assert meta["n"] == 90 and meta["note"] == "hello"
    assert meta["behaviour"] == "random_walk" and meta["seeds"] == {"collect": 7}
    assert data.config_from_meta(meta) == CFG
    assert data.params_from_meta(meta) == EnvParams.create(CFG)
    assert meta["fields"]["obs"]["shape"] == [90, 3, 6]
    assert meta["created_utc"].endswith("+00:00")
    # one .npy per field plus meta.json, nothing else; no temporary directory left beside it
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [f"{f}.npy" for f in data.FIELDS] + ["meta.json"])
    assert [p.name for p in path.parent.iterdir()] == ["ds"]
    # the fingerprint of the meta equals that of the in-memory dataset, and is stored
    assert data.fingerprint(meta) == data.fingerprint(ds, CFG) == meta["fingerprint"]


def test_fingerprint_changes_with_content_and_config():
    ds = synthetic(30)
    fp = data.fingerprint(ds, CFG)
    changed = ds.replace(reward=ds.reward.copy())
    changed.reward[5] += 1.0
    assert data.fingerprint(changed, CFG) != fp
    assert data.fingerprint(ds, CFG.replace(pathloss_model="free_space")) != fp
    with pytest.raises(ValueError, match="cfg"):
        data.fingerprint(ds)


def test_mmap(saved, monkeypatch):
    path, ds, _ = saved
    monkeypatch.setattr(data.storage, "MMAP_MIN_BYTES", 0)
    loaded, _ = data.load(path)
    assert all(isinstance(getattr(loaded, f), np.memmap) for f in data.FIELDS)
    assert not loaded.obs.flags.writeable
    loaded, _ = data.load(path, mmap=False)
    assert not any(isinstance(getattr(loaded, f), np.memmap) for f in data.FIELDS)
    dev = data.to_device(loaded)
    assert all(isinstance(getattr(dev, f), jax.Array) for f in data.FIELDS)
    assert_same(ds, dev)


def test_flipped_data_byte_detected(saved):
    path, ds, _ = saved
    f = path / "rates_mbps.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x10  # inside the array data, not the header
    f.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="rates_mbps.npy.*SHA-256"):
        data.load(path)
    # the shapes are intact, so the fast path loads it (and the value really changed)
    loaded, _ = data.load(path, verify=False)
    diff = np.asarray(loaded.rates_mbps) != ds.rates_mbps
    assert diff.sum() == 1


def test_flipped_header_byte_detected_without_verify(saved):
    path, _, _ = saved
    f = path / "obs.npy"
    raw = f.read_bytes()
    assert b"(90, 3, 6)" in raw
    f.write_bytes(raw.replace(b"(90, 3, 6)", b"(90, 3, 7)"))  # one byte: a shape that lies
    for verify in (True, False):
        with pytest.raises(DatasetError, match="obs.npy"):
            data.load(path, verify=verify)


@pytest.mark.parametrize("cut", [1, 100])
def test_truncated_file_detected(saved, cut):
    path, _, _ = saved
    f = path / "actions.npy"
    raw = f.read_bytes()
    f.write_bytes(raw[:-cut])
    for verify in (True, False):
        with pytest.raises(DatasetError, match="actions.npy.*truncated"):
            data.load(path, verify=verify)


def test_truncated_into_header_detected(saved):
    path, _, _ = saved
    f = path / "t.npy"
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(DatasetError, match="t.npy"):
        data.load(path, verify=False)


def test_missing_files(saved):
    path, _, _ = saved
    (path / "next_state.npy").unlink()
    with pytest.raises(DatasetError, match="next_state.npy.*missing"):
        data.load(path)
    (path / "meta.json").unlink()
    with pytest.raises(DatasetError, match="meta.json.*missing"):
        data.load(path)
    with pytest.raises(DatasetError, match="no such dataset"):
        data.load(path.parent / "nope")


def _edit_meta(path, fn):
    m = json.loads((path / "meta.json").read_text())
    fn(m)
    (path / "meta.json").write_text(json.dumps(m))


def test_wrong_schema_version_refused(saved):
    path, _, _ = saved
    _edit_meta(path, lambda m: m.update(schema_version=3))
    with pytest.raises(DatasetError, match="meta.json.*schema_version 3"):
        data.load(path, verify=False)
    _edit_meta(path, lambda m: m.pop("schema_version"))
    with pytest.raises(DatasetError, match="schema_version None"):
        data.load(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json.*JSON"):
        data.load(path)


def test_meta_shape_inconsistent_with_config_refused(saved):
    path, _, _ = saved
    _edit_meta(path, lambda m: m["env_config"].update(num_ues=13))
    with pytest.raises(DatasetError, match="rates_mbps"):
        data.load(path, verify=False)


def test_other_env_config_refused(saved):
    path, _, _ = saved
    with pytest.raises(DatasetError, match=r"num_ues \(dataset 12, expected 13\)"):
        data.load(path, expected_cfg=CFG.replace(num_ues=13))
    with pytest.raises(DatasetError, match="horizon.*reward|reward.*horizon") as e:
        data.load(path, expected_cfg=CFG.replace(horizon=21, reward="log_utility"))
    assert "num_ues" not in str(e.value)
    data.load(path, expected_cfg=EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=20))


def test_overwrite_refused_by_default(saved):
    path, ds, meta = saved
    other = synthetic(40, seed=1)
    with pytest.raises(DatasetError, match="already exists"):
        data.save(path, other, meta_for())
    with pytest.raises(FileExistsError):
        data.save(path, other, meta_for())
    assert_same(data.load(path)[0], ds)  # untouched
    data.save(path, other, meta_for(), overwrite=True)
    assert_same(data.load(path)[0], other)
    assert [p.name for p in path.parent.iterdir()] == ["ds"]


def test_overwrite_never_replaces_a_non_dataset(tmp_path):
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "precious.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a dataset directory"):
        data.save(victim, synthetic(10), meta_for(), overwrite=True)
    assert (victim / "precious.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


class _FailOnCall:
    """``np.save`` that raises on its ``k``-th call (an interrupted write)."""

    def __init__(self, k):
        self.k, self.calls, self.real = k, 0, np.save

    def __call__(self, *a, **kw):
        self.calls += 1
        if self.calls == self.k:
            raise OSError("disk on fire")
        return self.real(*a, **kw)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ds"
    monkeypatch.setattr(data.storage.np, "save", _FailOnCall(3))
    with pytest.raises(OSError, match="disk on fire"):
        data.save(path, synthetic(50), meta_for())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # temporary directory removed
    with pytest.raises(DatasetError):
        data.load(path)


def test_killed_write_leaves_nothing_that_loads(tmp_path, monkeypatch):
    # A process killed mid-write cannot clean up: simulate by disabling the clean-up.
    path = tmp_path / "ds"
    monkeypatch.setattr(data.storage.np, "save", _FailOnCall(3))
    monkeypatch.setattr(data.storage.shutil, "rmtree", lambda *a, **kw: None)
    with pytest.raises(OSError):
        data.save(path, synthetic(50), meta_for())
    assert not path.exists()
    (leftover,) = list(tmp_path.iterdir())
    assert leftover.name.startswith(".ds.tmp-")
    names = sorted(p.name for p in leftover.iterdir())
    assert names == ["action_mask.npy", "obs.npy", "state.npy"]  # the third one empty
    assert (leftover / "action_mask.npy").stat().st_size == 0
    with pytest.raises(DatasetError, match="meta.json.*missing"):
        data.load(leftover)


def test_interrupted_overwrite_keeps_old_dataset(saved, monkeypatch):
    path, ds, meta = saved
    monkeypatch.setattr(data.storage.np, "save", _FailOnCall(5))
    with pytest.raises(OSError):
        data.save(path, synthetic(40, seed=3), meta_for(), overwrite=True)
    loaded, meta2 = data.load(path)
    assert_same(loaded, ds)
    assert meta2 == meta
    assert [p.name for p in path.parent.iterdir()] == ["ds"]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Transitions.obs has shape"):
        data.save(tmp_path / "a", synthetic(10, cfg=CFG.replace(num_aps=2)), meta_for())
    with pytest.raises(ValueError, match="env_params"):
        data.save(tmp_path / "b", synthetic(10), {"env_config": CFG, "behaviour": "x"})
    with pytest.raises(TypeError):
        data.save(tmp_path / "c", synthetic(10), meta_for(bad=object()))
    assert list(tmp_path.iterdir()) == []


def test_save_accepts_jax_leaves_and_casts(tmp_path):
    ds = synthetic(25)
    dev = data.to_device(ds).replace(episode=np.asarray(ds.episode, np.int64))
    data.save(tmp_path / "d", dev, meta_for())
    assert_same(data.load(tmp_path / "d")[0], ds)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def test_sample_is_uniform_under_jit():
    n, batch = 37, 37 * 400
    ds = data.to_device(synthetic(n, row_ids=True))
    sample = jax.jit(data.sample, static_argnames="batch_size")
    b = sample(jax.random.key(3), ds, batch_size=batch)
    assert b.obs.shape == (batch, CFG.num_aps, CFG.obs_dim) and b.actions.dtype == jnp.int32
    rows = np.asarray(b.t)  # t is the row id of the synthetic dataset
    # every field of a sampled row comes from the same dataset row
    np.testing.assert_array_equal(np.asarray(b.obs), np.asarray(ds.obs)[rows])
    np.testing.assert_array_equal(np.asarray(b.truncated), np.asarray(ds.truncated)[rows])
    counts = np.bincount(rows, minlength=n)
    assert stats.chisquare(counts).pvalue > P_MIN
    # the test has power: a sampler biased by 10% towards one row is rejected
    biased = counts.copy()
    biased[0] = int(biased[0] * 1.3)
    assert stats.chisquare(biased, biased.sum() / n * np.ones(n)).pvalue < P_MIN
    # different keys give different batches; the same key the same batch
    b2 = sample(jax.random.key(4), ds, batch_size=batch)
    assert not np.array_equal(np.asarray(b2.t), rows)
    np.testing.assert_array_equal(np.asarray(sample(jax.random.key(3), ds, batch_size=batch).t),
                                  rows)


def test_sample_inside_a_jitted_update():
    ds = data.to_device(synthetic(20))

    @jax.jit
    def update(key, dataset):
        batch = data.sample(key, dataset, 8)
        return jnp.mean(batch.reward)

    assert np.isfinite(float(update(jax.random.key(0), ds)))
    with pytest.raises(ValueError, match="empty"):
        data.sample(jax.random.key(0), synthetic(0), 4)


# ---------------------------------------------------------------------------------------------
# Streams, concatenation, mixtures
# ---------------------------------------------------------------------------------------------


def _stream(num_steps, num_envs):
    """A [S, E] stream flattened step-major; t encodes (step, env) as 100 * s + e."""
    ds = synthetic(num_steps * num_envs)
    s, e = np.divmod(np.arange(num_steps * num_envs), num_envs)
    return ds.replace(t=(100 * s + e).astype(np.int32))


def test_flatten_stream_is_step_major():
    steps = jax.tree.map(lambda x: x.reshape((5, 4) + x.shape[1:]), synthetic(20, row_ids=True))
    flat = data.flatten_stream(steps)
    np.testing.assert_array_equal(flat.t, np.arange(20))
    np.testing.assert_array_equal(flat.obs[4 * 2 + 3], steps.obs[2, 3])


def test_slice_stream_bounds():
    stream = _stream(10, 4)
    sl = data.slice_stream(stream, 0.5, 8, num_envs=4)
    np.testing.assert_array_equal(sl.t, [500, 501, 502, 503, 600, 601, 602, 603])
    assert sl.size == 8
    np.testing.assert_array_equal(data.slice_stream(stream, 0.0, 40, num_envs=4).t, stream.t)
    np.testing.assert_array_equal(data.slice_stream(stream, 0.8, 8, num_envs=4).t[-1], 903)
    # a start inside a step snaps back to the step's first env
    assert int(data.slice_stream(stream, 0.55, 4, num_envs=4).t[0]) == 500
    with pytest.raises(ValueError, match="largest start_fraction for this size is 0.8"):
        data.slice_stream(stream, 0.9, 8, num_envs=4)
    with pytest.raises(ValueError, match="past the end"):
        data.slice_stream(stream, 1.0, 1, num_envs=4)
    with pytest.raises(ValueError, match="larger than the stream"):
        data.slice_stream(stream, 0.0, 41, num_envs=4)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="start_fraction"):
            data.slice_stream(stream, bad, 4)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="size"):
            data.slice_stream(stream, 0.0, bad)
    with pytest.raises(ValueError, match="whole number of steps"):
        data.slice_stream(stream, 0.0, 4, num_envs=3)


def test_episode_order_regroups_an_interleaved_stream():
    # Two environments step-major, a slice starting at slot 3: env 0 runs episode 10 (slots 3,
    # 4) then episode 12 (0, 1); env 1 runs episode 11 (3, 4) then 13 (0, 1).
    ds = synthetic(8)
    ep = np.array([10, 11, 10, 11, 12, 13, 12, 13], np.int32)
    t = np.array([3, 3, 4, 4, 0, 0, 1, 1], np.int32)
    ds = ds.replace(episode=ep, t=t)
    order = data.episode_order(ds)
    np.testing.assert_array_equal(order, [0, 2, 1, 3, 4, 6, 5, 7])
    np.testing.assert_array_equal(ep[order], [10, 10, 11, 11, 12, 12, 13, 13])
    np.testing.assert_array_equal(t[order], [3, 4, 3, 4, 0, 1, 0, 1])
    # A collected dataset is already in episode order.
    params = EnvParams.create(CFG)
    col = data.collect(0, "full_reuse", params, CFG, 3 * CFG.horizon)[0]
    np.testing.assert_array_equal(data.episode_order(col), np.arange(col.size))
    with pytest.raises(data.DatasetError, match="episode 10: slot 5 does not follow slot 3"):
        data.episode_order(ds.replace(t=np.array([3, 3, 5, 4, 0, 0, 1, 1], np.int32)))


def test_concatenate_renumbers_episodes():
    a, b = synthetic(45, seed=1), synthetic(30, seed=2)
    b = b.replace(episode=b.episode + 7)  # ids 7, 8
    c = data.concatenate([a, b])
    assert c.size == 75
    np.testing.assert_array_equal(c.obs[45:], b.obs)
    np.testing.assert_array_equal(np.unique(c.episode), np.arange(5))  # 0,1,2 | 3,4
    kept = data.concatenate([a, b], renumber_episodes=False)
    np.testing.assert_array_equal(kept.episode[45:], b.episode)
    with pytest.raises(ValueError, match="obs"):
        data.concatenate([a, synthetic(5, cfg=CFG.replace(num_aps=2))])
    with pytest.raises(ValueError):
        data.concatenate([])


def test_mixture_counts():
    np.testing.assert_array_equal(data.mixture_counts([0.5, 0.3, 0.2], 101), [51, 30, 20])
    np.testing.assert_array_equal(data.mixture_counts([1, 1, 1], 10), [4, 3, 3])
    np.testing.assert_array_equal(data.mixture_counts([2, 0, 6], 80), [20, 0, 60])
    for w in ([], [0, 0], [-1, 2], [np.nan, 1]):
        with pytest.raises(ValueError, match="weights"):
            data.mixture_counts(w, 10)
    with pytest.raises(ValueError, match="size"):
        data.mixture_counts([1], 0)


def test_mixture_follows_weights():
    sources = [synthetic(100, seed=1, reward=0.0, row_ids=True),
               synthetic(50, seed=2, reward=1.0, row_ids=True),
               synthetic(30, seed=3, reward=2.0, row_ids=True)]
    mix = data.mixture(jax.random.key(0), sources, [0.5, 0.3, 0.2], 101)
    assert mix.size == 101
    src = mix.reward.astype(int)
    np.testing.assert_array_equal(np.bincount(src, minlength=3), [51, 30, 20])
    assert np.all(np.diff(src) >= 0)  # sources in order
    for i in range(3):
        rows = mix.t[src == i]
        assert len(np.unique(rows)) == len(rows)  # without replacement
        assert np.all(np.diff(rows) > 0)  # original order kept
        np.testing.assert_array_equal(mix.obs[src == i], sources[i].obs[rows])
    # a source asked for more rows than it has: every row twice
    mix = data.mixture(jax.random.key(1), sources, [0.2, 0.2, 0.6], 100)
    rows2 = mix.t[mix.reward == 2.0]
    np.testing.assert_array_equal(np.bincount(rows2, minlength=30), np.full(30, 2))
    # episode ids stay unique per source
    for i in range(3):
        for j in range(i + 1, 3):
            assert not set(mix.episode[mix.reward == i]) & set(mix.episode[mix.reward == j])
    # different keys, different subsets; same key, same subset
    a = data.mixture(jax.random.key(5), sources, [1, 1, 1], 60)
    b = data.mixture(jax.random.key(6), sources, [1, 1, 1], 60)
    c = data.mixture(jax.random.key(5), sources, [1, 1, 1], 60)
    assert not np.array_equal(a.t, b.t)
    assert_same(a, c)
    with pytest.raises(ValueError, match="weights"):
        data.mixture(jax.random.key(0), sources, [1, 1], 10)


# ---------------------------------------------------------------------------------------------
# Behaviour policies and collection (environment rollouts)
# ---------------------------------------------------------------------------------------------


def test_random_valid_actions_uniform_over_mask():
    mask = jnp.array([[True, True, True, True], [True, False, True, False],
                      [False, False, False, True]])
    keys = jax.random.split(jax.random.key(0), 3000)
    acts = np.asarray(jax.vmap(lambda k: data.random_valid_actions(k, mask))(keys))
    assert acts.shape == (3000, 3) and acts.dtype == np.int32
    assert np.all(np.asarray(mask)[np.arange(3), acts])
    assert stats.chisquare(np.bincount(acts[:, 0], minlength=4)).pvalue > P_MIN
    assert stats.chisquare(np.bincount(acts[:, 1], minlength=4)[[0, 2]]).pvalue > P_MIN
    assert np.all(acts[:, 2] == 3)


def test_behaviour_policies():
    assert data.behaviour_policy("random_walk", CFG) is data.uniform_policy(CFG)
    assert data.behaviour_policy("full_reuse", CFG) is baselines.make("full_reuse", CFG)
    with pytest.raises(ValueError, match="random_walk"):
        data.behaviour_policy("sac", CFG)
    pol = baselines.make("full_reuse", CFG)
    assert data.epsilon_greedy(pol, 0.0, CFG) is pol
    assert data.epsilon_greedy(pol, 0.3, CFG) is data.epsilon_greedy(pol, 0.3, CFG)
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError, match="epsilon"):
            data.epsilon_greedy(pol, bad, CFG)
    with pytest.raises(ValueError, match="num_steps"):
        data.collect_policy(jax.random.key(0), pol, EnvParams.create(CFG), CFG, 0)


@pytest.fixture(scope="module")
def rollout_traj():
    """A ``rollout(..., return_trajectory=True)`` trajectory of 2 episodes [E, T, ...].

    Made by ``jax.vmap`` of one-episode ``env.rollout`` calls inside the collection program of
    :func:`data.collect_policy` (``data.rollout_chunk``), so that it shares that compilation.
    """
    keys = jax.random.split(jax.random.key(11), 2)
    return data.rollout_chunk(keys, baselines.make("full_reuse", CFG), EnvParams.create(CFG),
                              CFG)


def test_rollout_chunk_is_rollout(rollout_traj):
    # the trajectory format from_rollout reads is env.rollout's own (checked on the reward)
    # (shapes only: eval_shape traces env.rollout without compiling it)
    one = jax.eval_shape(lambda k: env.rollout(k, baselines.make("full_reuse", CFG),
                                               EnvParams.create(CFG), CFG, 1,
                                               return_trajectory=True).trajectory,
                         jax.random.key(5))
    assert set(one) >= set(rollout_traj) and set(one["info"]) >= set(rollout_traj["info"])
    for k in ("actions", "rewards", "truncated"):
        assert one[k].shape[1:] == rollout_traj[k].shape[1:], k


def test_from_rollout(rollout_traj):
    T, I, K = CFG.horizon, CFG.num_aps, CFG.num_ues
    E = 2
    tr = data.from_rollout(rollout_traj, CFG)
    n = E * T
    data.check_shapes(tr, CFG)
    assert tr.size == n and tr.obs.shape == (n, I, CFG.obs_dim)
    assert tr.next_action_mask.shape == (n, I, CFG.num_actions)
    np.testing.assert_array_equal(tr.episode, np.repeat(np.arange(E), T))
    np.testing.assert_array_equal(tr.t, np.tile(np.arange(T), E))
    assert not np.any(tr.terminated)
    np.testing.assert_array_equal(tr.truncated, tr.t == T - 1)
    np.testing.assert_array_equal(np.asarray(tr.rates_mbps).reshape(E, T, K),
                                  rollout_traj["info"]["rates_mbps"])
    np.testing.assert_array_equal(np.asarray(tr.state), np.asarray(tr.obs).reshape(n, -1))
    # within an episode the next observation of slot t is the observation of slot t + 1
    same = np.asarray(tr.episode[1:] == tr.episode[:-1])
    assert same.sum() == E * (T - 1)
    for cur, nxt in (("obs", "next_obs"), ("state", "next_state"),
                     ("action_mask", "next_action_mask")):
        x, y = np.asarray(getattr(tr, cur)), np.asarray(getattr(tr, nxt))
        np.testing.assert_array_equal(y[:-1][same], x[1:][same], err_msg=cur)
    # ... and not across episodes (a new UE drop)
    assert not np.array_equal(np.asarray(tr.next_obs)[T - 1], np.asarray(tr.obs)[T])
    # NumPy in, NumPy out
    tr_np = data.from_rollout(jax.device_get(rollout_traj), CFG, episode_offset=5)
    assert isinstance(tr_np.obs, np.ndarray) and int(tr_np.episode[0]) == 5
    with pytest.raises(ValueError, match="horizon"):
        data.from_rollout(rollout_traj, CFG.replace(horizon=21))
    with pytest.raises(ValueError, match="missing"):
        data.from_rollout({"rewards": rollout_traj["rewards"]}, CFG)


@pytest.fixture(scope="module")
def collected():
    params = EnvParams.create(CFG)
    pol = baselines.make("full_reuse", CFG)
    seen = []
    ds = data.collect_policy(jax.random.key(2), pol, params, CFG, 50, episodes_per_chunk=2,
                             progress=seen.append)
    return ds, seen, params, pol


def test_collect_policy_exact_size(collected):
    ds, seen, params, pol = collected
    T = CFG.horizon
    assert ds.size == 50
    data.check_shapes(ds, CFG)
    assert isinstance(ds.obs, np.ndarray)
    assert seen == [40, 50]  # chunks of 2 episodes, the last one cut
    np.testing.assert_array_equal(ds.episode, [0] * T + [1] * T + [2] * 10)
    np.testing.assert_array_equal(ds.t[2 * T:], np.arange(10))
    # the last (partial) episode has not ended
    np.testing.assert_array_equal(np.flatnonzero(ds.truncated), [T - 1, 2 * T - 1])
    mask = ds.action_mask
    assert np.all(np.take_along_axis(mask, ds.actions[..., None], -1))  # full_reuse: valid
    # a shorter collection is a prefix of a longer one (episode keys fold_in(key, e))
    short = data.collect_policy(jax.random.key(2), pol, params, CFG, 30, episodes_per_chunk=2)
    assert_same(short, jax.tree.map(lambda x: x[:30], ds))
    other = data.collect_policy(jax.random.key(3), pol, params, CFG, 30, episodes_per_chunk=2)
    assert not np.array_equal(other.obs, short.obs)


def test_epsilon_one_is_uniform_over_valid_actions(collected):
    _, _, params, pol = collected
    ds = data.collect_policy(jax.random.key(4), pol, params, CFG, 200, epsilon=1.0,
                             episodes_per_chunk=2)
    assert ds.size == 200
    mask, acts = ds.action_mask, ds.actions
    assert np.all(np.take_along_axis(mask, acts[..., None], -1)), "an invalid action was taken"
    # chi-square of action counts against E[count_a] = sum over decisions of mask_a / #valid
    expected = (mask / mask.sum(-1, keepdims=True)).reshape(-1, CFG.num_actions).sum(0)
    counts = np.bincount(acts.reshape(-1), minlength=CFG.num_actions)
    assert counts[CFG.idle_action] > 0  # idle is explored too
    assert stats.chisquare(counts, expected * counts.sum() / expected.sum()).pvalue > P_MIN
    # and it is far from the greedy policy, which never idles
    greedy = data.collect_policy(jax.random.key(4), pol, params, CFG, 40, episodes_per_chunk=2)
    assert not np.any(greedy.actions == CFG.idle_action)


def test_collect_by_name_and_save(tmp_path, collected):
    # full_reuse with epsilon = 1 shares the compiled program of the test above
    ds, meta = data.collect(4, "full_reuse", EnvParams.create(CFG), CFG, 40, epsilon=1.0,
                            episodes_per_chunk=2)
    assert ds.size == 40 and meta["behaviour"] == "full_reuse"
    assert meta["seeds"] == {"collect": 4} and meta["behaviour_config"]["epsilon"] == 1.0
    written = data.save(tmp_path / "eps", ds, meta)
    loaded, meta2 = data.load(tmp_path / "eps", expected_cfg=CFG)
    assert meta2 == written
    assert_same(loaded, ds)
    assert dataclasses.asdict(data.config_from_meta(meta2)) == dataclasses.asdict(CFG)
    with pytest.raises(ValueError, match="unknown behaviour"):
        data.collect(1, "bogus", EnvParams.create(CFG), CFG, 40)


def test_random_walk_policy_on_real_observations(collected):
    ds = collected[0]
    obs = env.Observation(agents=ds.obs, global_state=ds.state, action_mask=ds.action_mask)
    pol = data.uniform_policy(CFG)
    keys = jax.random.split(jax.random.key(0), ds.size)
    acts = np.asarray(jax.vmap(lambda k, o: pol(k, o, None, None))(keys, obs))
    assert acts.shape == (ds.size, CFG.num_aps) and acts.dtype == np.int32
    assert np.all(np.take_along_axis(ds.action_mask, acts[..., None], -1))
    assert np.any(acts == CFG.idle_action) and np.any(acts == 0)
