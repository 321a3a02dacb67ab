"""Training benchmarks: smoke runs of train_throughput and scaling (tiny sizes, valid JSON), the
report renderer, and the PyTorch reference's losses and updates equal to the JAX learner's on
the same weights and batch (so the throughput comparison is of like with like).

The PyTorch tests are skipped when torch is not installed: it is in the optional ``bench`` extra,
not in ``dev`` (``pip install -e '.[bench]'``, CPU wheel).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig
from jaxrrm.algos import cql
from jaxrrm.algos.netconfig import NetConfig

TINY = EnvConfig(num_aps=3, num_ues=6, num_candidates=2, horizon=5)


def _batch(seed: int, b: int = 24):
    """Random transitions: random masks (idle always valid), actions partly masked (mapped to
    idle by both implementations), some terminated and truncated rows."""
    from jaxrrm.data import Transitions

    rng = np.random.default_rng(seed)
    i, a, d = TINY.num_aps, TINY.num_actions, TINY.obs_dim
    obs, nobs = rng.normal(size=(2, b, i, d)).astype(np.float32)
    mask, nmask = rng.random((2, b, i, a)) < 0.6
    mask[..., -1] = nmask[..., -1] = True
    return Transitions(
        obs=obs, state=obs.reshape(b, -1), action_mask=mask,
        actions=rng.integers(0, a, size=(b, i)).astype(np.int32),
        reward=rng.normal(size=(b,)).astype(np.float32), next_obs=nobs,
        next_state=nobs.reshape(b, -1), next_action_mask=nmask,
        terminated=rng.random(b) < 0.2, truncated=rng.random(b) < 0.2,
        rates_mbps=np.zeros((b, TINY.num_ues), np.float32), episode=np.zeros((b,), np.int32),
        t=np.zeros((b,), np.int32))


CASES = {
    # paradigm, network, extra config: clipping active in every case (small max_grad_norm)
    "centralized": ("centralized", NetConfig(hidden=(16, 16), shared=False), {}),
    "independent": ("independent", NetConfig(hidden=(16, 16), shared=False), {}),
    # CTDE with the shared-network layout, layer norm and gelu (the per-AP layout is covered
    # by "independent"; one case per paradigm keeps the file fast)
    "ctde": ("ctde", NetConfig(hidden=(16,), shared=True, layer_norm=True, activation="gelu"),
             {"bootstrap_truncated": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_torch_reference_equals_jax(case):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_cql

    torch.set_num_threads(1)
    paradigm, net, extra = CASES[case]
    lc = cql.CQLConfig(paradigm=paradigm, critic_net=net, actor_net=net, max_grad_norm=1.0,
                       tau=0.2, **extra)
    learner = cql.make_learner(TINY, lc)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.key(3))
    ref = torch_cql.TorchCQL(TINY, lc, style="vectorized", jax_params=state.params)
    loop = torch_cql.TorchCQL(TINY, lc, style="loop", jax_params=state.params)
    for step in range(3):
        batch = _batch(step)
        state, m = update(state, jax.tree.map(jnp.asarray, batch), jax.random.key(0))
        tb = torch_cql.to_torch(batch)
        for impl in (ref, loop):
            out = impl.update(tb)
            for name in ("critic_loss", "actor_loss", "alpha_loss", "td_loss", "cql_penalty",
                         "entropy"):
                np.testing.assert_allclose(float(out[name]), float(m[name]), rtol=2e-5,
                                           atol=2e-6, err_msg=f"{case} {name} step {step}")
    assert float(m["critic_grad_norm"]) > lc.max_grad_norm  # clipping was exercised
    want = jax.device_get(state.params)
    for impl in (ref, loop):
        got = impl.export_jax()
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_torch_reference_rejects_dqn():
    pytest.importorskip("torch")
    from benchmarks import torch_cql

    with pytest.raises(NotImplementedError):
        torch_cql.TorchCQL(TINY, cql.CQLConfig(backbone="dqn"))


def test_flop_model_counts_default_ctde():
    from benchmarks.train_throughput import flop_model

    fm = flop_model(EnvConfig(), cql.CQLConfig(paradigm="ctde"), 256)
    per_row = 6 * 256 + 256 * 256 + 256 * 4
    assert fm["critic_macs_per_row"] == per_row
    assert fm["flops_per_update"] == 2 * 4 * (256 * 4) * (2 * per_row + per_row)


def test_train_throughput_smoke(tmp_path):
    from benchmarks import report, train_throughput

    out = tmp_path / "train.json"
    assert train_throughput.main(["--tiny", "--paradigms", "ctde", "--seeds", "1", "2",
                                  "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "train_throughput" and r["config"]["tiny"]
    rows = {row["seeds"]: row for row in r["jax"]}
    assert set(rows) == {1, 2}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["updates_per_s"] > 0 and row["compile_s"] > 0
        assert row["seed_updates_per_s"] == pytest.approx(row["updates_per_s"] * row["seeds"])
    assert rows[1]["cost_vs_1_seed"] == pytest.approx(1.0)
    assert r["summary"][0]["paradigm"] == "ctde"
    try:
        import torch  # noqa: F401
    except ImportError:
        assert r["torch_skipped"] == "torch not installed"
    else:
        assert r["torch"] and all(t["status"] == "ok" for t in r["torch"])
        assert r["summary"][0]["ratio_1_seeds_vs_torch"] > 0
    # the report renders it (tiny runs are left out of RESULTS.md unless marked otherwise)
    r["config"]["tiny"] = False
    (tmp_path / "train_throughput-x.json").write_text(json.dumps(r))
    text = report.render(tmp_path)
    assert "### train_throughput" in text and "| ctde | 2 |" in text


def test_scaling_smoke(tmp_path):
    from benchmarks import report, scaling

    out = tmp_path / "scaling.json"
    assert scaling.main(["--tiny", "--axes", "num_ues", "--values", "6", "12", "--out",
                         str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "scaling" and r["config"]["tiny"]
    pts = r["points"]
    assert [p["value"] for p in pts] == [6, 12]
    for p in pts:
        assert p["status"] == "ok", p
        assert p["env"]["us_per_step"] > 0 and p["cql"]["ms_per_update"] > 0
    # the CQL update does not depend on the number of UEs: measured once, reused
    assert pts[0]["cql"] == pts[1]["cql"]
    assert r["slopes"]["num_ues"]["env"] is not None
    assert (tmp_path / "scaling.png").stat().st_size > 0
    r["config"]["tiny"] = False
    (tmp_path / "scaling-x.json").write_text(json.dumps(r))
    assert "### scaling" in report.render(tmp_path)


def test_loglog_slope():
    from benchmarks.scaling import loglog_slope

    assert loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    assert loglog_slope([2], [1]) is None


def test_distributed_scaling_smoke(tmp_path):
    # Two forced CPU device counts, each in its own subprocess, tiny sizes: valid JSON with a
    # row per count, positive rates, and speed-ups relative to the first count.
    from benchmarks import distributed_scaling

    out = tmp_path / "ds.json"
    assert distributed_scaling.main(["--quick", "--devices", "1", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "distributed_scaling" and r["config"]["quick"]
    assert [row["devices"] for row in r["rows"]] == [1, 2]
    for row in r["rows"]:
        assert row["rollout_steps_per_s"] > 0 and row["train_updates_per_s"] > 0
    assert r["rows"][0]["rollout_speedup"] == 1.0 and r["rows"][0]["train_efficiency"] == 1.0
    assert r["rows"][1]["rollout_speedup"] == pytest.approx(
        r["rows"][0]["rollout_s"] / r["rows"][1]["rollout_s"])
