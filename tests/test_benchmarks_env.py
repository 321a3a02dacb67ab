"""The episodes-last rollout layout and episode blocks (issue 6), and the env_throughput benchmark.

``env.rollout(..., layout="episodes_last")`` repeats the step with the episode axis last; it must
give ``vmap(step)``'s numbers (to float32 rounding; XLA's CPU code is itself only reproducible bit
for bit for equal array shapes), and its episode block must not change a bit.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrrm import EnvConfig, EnvParams, baselines, channel, env

E = 10  # episodes; blocks of 4 leave a remainder block of 2

# (config, policy, params overrides): the default path; log-utility reward with mobility,
# per-AP powers and a random policy; more UEs than the unrolled paths take (N rounds of
# reductions for the candidates, XLA's mean over UEs) and APs with fewer UEs than candidates.
CASES = {
    "pf": (EnvConfig(num_aps=3, num_ues=12, num_candidates=3, horizon=12), "full_reuse", {}),
    "log_mobility": (EnvConfig(num_aps=2, num_ues=7, num_candidates=2, horizon=12,
                               reward="log_utility", mobility=True, reassociation_slots=4),
                     "random", {"tx_power_dbm": jnp.array([30.0, 24.0]),
                                "ue_speed_mps": 30.0}),
    "many_ues": (EnvConfig(num_aps=2, num_ues=70, num_candidates=2, horizon=6), "max_sinr", {}),
    "few_ues": (EnvConfig(num_aps=4, num_ues=5, num_candidates=3, horizon=8), "tdm", {}),
    # every observation option (the interference features are picked in the top-k pass)
    "obs_options": (EnvConfig(num_aps=3, num_ues=9, num_candidates=2, horizon=8,
                              obs_interference=True, obs_clock=True, obs_share="global"),
                    "reward_greedy", {"tx_power_dbm": jnp.array([30.0, 24.0, 27.0])}),
}


def _roll(case, layout, block=None, num_episodes=E, key=3):
    cfg, pol_name, over = CASES[case]
    params = EnvParams.create(cfg, **over)
    pol = baselines.make(pol_name, cfg)
    f = jax.jit(lambda k: env.rollout(k, pol, params, cfg, num_episodes, True,
                                      episode_block=block, layout=layout))
    return jax.device_get(f(jax.random.key(key)))


@pytest.fixture(scope="module")
def rolls():
    """Rollouts per case: vmap, episodes-last unblocked and in blocks of 4."""
    return {case: {"vmap": _roll(case, "vmap"), "el": _roll(case, "episodes_last"),
                   "el4": _roll(case, "episodes_last", block=4)} for case in CASES}


def _leaves(res):
    return jax.tree_util.tree_flatten_with_path(res)[0]


@pytest.mark.parametrize("case", list(CASES))
def test_episodes_last_matches_vmap(rolls, case):
    ref, got = rolls[case]["vmap"], rolls[case]["el"]
    assert jax.tree.structure(ref) == jax.tree.structure(got)
    for (path, a), (_, b) in zip(_leaves(ref), _leaves(got)):
        name = jax.tree_util.keystr(path)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6, err_msg=name)
        else:  # decisions, masks, counts, candidates: identical
            np.testing.assert_array_equal(b, a, err_msg=name)


def test_episodes_last_default_scenario_rates_bitwise():
    # In the default scenario only the reward's mean over UEs is summed in another order.
    cfg = EnvConfig(horizon=10)
    params = EnvParams.create(cfg)
    pol = baselines.make("full_reuse", cfg)
    out = {lay: jax.device_get(jax.jit(lambda k: env.rollout(k, pol, params, cfg, 16,
                                                             layout=lay))(jax.random.key(0)))
           for lay in ("vmap", "episodes_last")}
    np.testing.assert_array_equal(out["episodes_last"].ue_rates_mbps, out["vmap"].ue_rates_mbps)
    np.testing.assert_array_equal(out["episodes_last"].masked_actions,
                                  out["vmap"].masked_actions)
    np.testing.assert_allclose(out["episodes_last"].rewards, out["vmap"].rewards, rtol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_episode_block_changes_no_bit(rolls, case):
    for (path, a), (_, b) in zip(_leaves(rolls[case]["el"]), _leaves(rolls[case]["el4"])):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))


def test_vmap_blocks_match_to_rounding():
    a, b = _roll("pf", "vmap"), _roll("pf", "vmap", block=4)
    for (path, x), (_, y) in zip(_leaves(a), _leaves(b)):
        np.testing.assert_allclose(y, x, rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_vmap_layout_is_the_vmap_of_step_and_default_is_auto():
    # layout="vmap" is the vmap of the one-episode scan of env.step (what a user's own vmap
    # does), bit for bit; the default layout is "auto" (the faster one for the size).
    cfg, pol_name, _ = CASES["pf"]
    params = EnvParams.create(cfg)
    pol = baselines.make(pol_name, cfg)
    keys = jax.random.split(jax.random.key(3), E)
    direct = jax.jit(jax.vmap(lambda k: env._episode(k, pol, params, cfg, False)))(keys)
    res = jax.jit(lambda k: env.rollout(k, pol, params, cfg, E, layout="vmap"))(
        jax.random.key(3))
    np.testing.assert_array_equal(res.ue_rates_mbps, direct[0])
    np.testing.assert_array_equal(res.rewards, direct[1])
    assert env.resolve_layout(cfg, E) == env.resolve_layout(cfg, E, "auto")
    assert env.resolve_layout(cfg, 64) == ("episodes_last", 64)


def test_episodes_last_under_vmap_over_seeds_and_params():
    from jaxrrm import evaluate

    cfg, pol_name, _ = CASES["pf"]
    pol = baselines.make(pol_name, cfg)
    keys = evaluate.seed_keys(0, 2)
    params = jax.tree.map(lambda *x: jnp.stack(x), EnvParams.create(cfg),
                          EnvParams.create(cfg, pf_lambda=0.5, tx_power_dbm=27.0))
    out = {}
    for lay in ("vmap", "episodes_last"):
        out[lay] = jax.device_get(jax.jit(jax.vmap(
            lambda p, k: evaluate.rollout_seeds(k[None], pol, p, cfg, 6, layout=lay)))(
                params, keys))
    for a, b in zip(out["vmap"], out["episodes_last"]):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)


def test_resolve_layout():
    small, big = EnvConfig(num_ues=24), EnvConfig(num_aps=2, num_ues=200)
    assert env.resolve_layout(small, 64, "auto") == ("episodes_last", 64)
    # the observation options run in the episodes-last layout too (one physics for both)
    opts = EnvConfig(num_ues=24, obs_interference=True, obs_clock=True, obs_share="global")
    assert env.resolve_layout(opts, 64, "auto") == ("episodes_last", 64)
    assert env.resolve_layout(small, 8, "auto") == ("vmap", 8)
    assert env.resolve_layout(big, 4096, "auto") == ("vmap", 4096)
    assert env.resolve_layout(small, 64, "episodes_last", 100) == ("episodes_last", 64)
    assert env.resolve_layout(small, 64, "vmap", 16) == ("vmap", 16)
    with pytest.raises(ValueError, match="layout"):
        env.resolve_layout(small, 64, "columns")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="episode_block"):
            env.resolve_layout(small, 64, "vmap", bad)


def test_hash_normal_from_words_is_hash_normal_per_key():
    keys = jax.random.split(jax.random.key(7), 5)
    s0, s1 = channel.seed_words(keys)
    batched = channel.hash_normal_from_words(s0, s1, (2, 3, 4), std=math.sqrt(0.5))
    assert batched.shape == (2, 3, 4, 5)
    for b in range(5):
        np.testing.assert_array_equal(batched[..., b],
                                      channel.hash_normal(keys[b], (2, 3, 4), math.sqrt(0.5)))
    raw = jax.random.key_data(keys)  # raw uint32 keys give the same words
    np.testing.assert_array_equal(np.stack(channel.seed_words(raw)), np.stack((s0, s1)))


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def _check_row(r, kind):
    assert "error" not in r, r
    for k in ("run_s", "cpu_s", "steps_per_s", "steps_per_cpu_s", "ue_slots_per_s",
              "cpu_per_wall", "peak_rss_mib"):
        assert r[k] > 0, (k, r)
    if kind == "jax":
        assert r["compile_s"] > 0 and r["layout"] in ("vmap", "episodes_last")
        assert r["xla_temp_bytes"] is None or r["xla_temp_bytes"] >= 0


def test_env_throughput_tiny_writes_valid_json(tmp_path):
    from benchmarks import env_throughput, report

    out = tmp_path / "bench.json"
    assert env_throughput.main(["--tiny", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["benchmark"] == "env_throughput" and r["schema_version"] == 2
    assert r["config"]["quick"] is True and r["headline_layout"] == "episodes_last"
    assert [x["episodes"] for x in r["jax"]] == [1, 8]
    assert {(x["episodes"], x["layout"]) for x in r["jax_layouts"]} == {
        (e, lay) for e in (1, 8) for lay in ("vmap", "episodes_last")}
    for x in r["jax_layouts"]:
        _check_row(x, "jax")
    assert [(x["batched"], x["streams"]) for x in r["numpy"]] == [
        (False, "episode"), (True, "episode"), (True, "shared")]
    for x in r["numpy"]:
        _check_row(x, "numpy")
    ra = {(x["episodes"], x["layout"]): x for x in r["ratios"]}
    assert set(ra[(8, "episodes_last")]) >= {"vs_numpy_loop", "vs_numpy_loop_cpu",
                                             "vs_numpy_vectorized", "vs_numpy_vectorized_cpu",
                                             "vs_numpy_vectorized_shared_cpu",
                                             "vs_numpy_lean", "vs_numpy_lean_cpu"}
    # the lean NumPy peer ran at the vectorized episode count, and the ratio is its own
    assert [x["episodes"] for x in r["numpy_lean"]] == [8]
    _check_row(r["numpy_lean"][0], "numpy")
    np.testing.assert_allclose(ra[(8, "episodes_last")]["vs_numpy_lean"],
                               [x for x in r["jax_layouts"] if x["episodes"] == 8
                                and x["layout"] == "episodes_last"][0]["steps_per_s"]
                               / r["numpy_lean"][0]["steps_per_s"])
    assert r["load_avg_1min"]["start"] is not None and r["threads"]["cpu_count"] >= 1
    # Rendered (quick runs are left out of RESULTS.md, so mark it as a full run).
    r["config"]["quick"] = False
    (tmp_path / "full.json").write_text(json.dumps(r))
    text = report.render(tmp_path)
    assert "**Default scenario**" in text and "Targets (issue 6" not in text  # no 8192 point
    assert f"{r['jax'][1]['steps_per_s']:,.0f}" in text
    assert f"lean peer (float32, vectorized) | 8 | {r['numpy_lean'][0]['steps_per_s']:,.0f}" \
        in text


def test_env_throughput_scenario_in_subprocesses_and_failures():
    from benchmarks import env_throughput

    # A larger-network scenario, each point in its own process; a point over the size limit
    # is recorded as skipped and the rest still runs.
    sc = env_throughput.run_scenario(
        "small-large", dict(num_aps=2, num_ues=70, num_candidates=1, allow_idle=False,
                            horizon=3), (2, 64), ("episodes_last",), (2,), ("shared",), 1,
        policy="full_reuse", min_seconds=0.01, isolate=True, max_links=2 * 140, timeout_s=600)
    assert sc["config"]["num_ues"] == 70 and sc["config"]["allow_idle"] is False
    ok, skipped = sc["jax"]
    _check_row(ok, "jax")
    assert skipped["episodes"] == 64 and skipped["error"].startswith("skipped")
    for x in sc["numpy"]:
        _check_row(x, "numpy")
    assert [x["episodes"] for x in sc["ratios"]] == [2]
    # A failing point becomes an error row instead of ending the sweep.
    bad = env_throughput._run_point({"kind": "numpy", "config": {"num_aps": 0}, "policy": "x",
                                     "episodes": 1, "batched": False, "streams": "episode",
                                     "min_seconds": 0.01}, isolate=True, timeout_s=300)
    assert "error" in bad and bad["episodes"] == 1
