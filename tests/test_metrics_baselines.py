"""Evaluation metrics by hand (jaxrrm.metrics) and the heuristic baselines (jaxrrm.baselines)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxrrm import EnvConfig, EnvParams, baselines, env, metrics

# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

# Two episodes, three UEs (Mbit/s); pooled and sorted: 1 2 3 4 5 6
RATES = np.array([[3.0, 1.0, 6.0], [2.0, 5.0, 4.0]])


class TestMetrics:
    def test_sum_rate(self):
        # episode sums 10 and 11 -> mean 10.5
        assert float(metrics.sum_rate(RATES)) == pytest.approx(10.5, rel=1e-6)
        assert float(metrics.sum_rate(RATES[:1])) == pytest.approx(10.0, rel=1e-6)

    def test_percentile(self):
        # numpy's linear interpolation on the 6 pooled values: position q/100 * (6 - 1)
        # q = 5: 0.25 -> 1 + 0.25 * (2 - 1) = 1.25;  q = 50: 2.5 -> 3.5;  q = 90: 4.5 -> 5.5
        assert float(metrics.percentile_rate(RATES)) == pytest.approx(1.25, rel=1e-6)
        assert float(metrics.percentile_rate(RATES, 50.0)) == pytest.approx(3.5, rel=1e-6)
        assert float(metrics.percentile_rate(RATES, 90.0)) == pytest.approx(5.5, rel=1e-6)
        assert float(metrics.percentile_rate(RATES, 0.0)) == pytest.approx(1.0, rel=1e-6)
        assert float(metrics.percentile_rate(RATES, 100.0)) == pytest.approx(6.0, rel=1e-6)
        x = np.random.default_rng(0).gamma(2.0, 3.0, size=(16, 24))
        for q in (1.0, 5.0, 37.5, 95.0):
            np.testing.assert_allclose(float(metrics.percentile_rate(x, q)), np.percentile(x, q),
                                       rtol=1e-5)

    def test_score(self):
        # 10.5 + mu * 1.25: mu = 3 (K) -> 14.25; mu = 0 -> the sum rate
        assert float(metrics.score(RATES, 3.0)) == pytest.approx(14.25, rel=1e-6)
        assert float(metrics.score(RATES, 0.0)) == pytest.approx(10.5, rel=1e-6)
        m = metrics.all_metrics(RATES, 3.0, tdm_score=7.125)
        assert m == pytest.approx({"sum_rate": 10.5, "p5_rate": 1.25, "score": 14.25,
                                   "relative_score": 2.0}, rel=1e-6)
        assert "relative_score" not in metrics.all_metrics(RATES, 3.0)
        assert float(metrics.relative_score(14.25, 7.125)) == 2.0

    def test_metrics_jit_and_vmap(self):
        batch = jnp.stack([RATES, 2 * RATES])
        out = jax.jit(jax.vmap(lambda r: metrics.score(r, 3.0)))(batch)
        np.testing.assert_allclose(out, [14.25, 28.5], rtol=1e-6)

    def test_student_t_quantile(self):
        assert metrics.student_t_quantile(0.975, 15) == pytest.approx(2.1314, abs=1e-4)
        for df in (1, 2, 5, 15, 30, 200):
            for p in (0.6, 0.9, 0.975, 0.995):
                assert metrics.student_t_quantile(p, df) == pytest.approx(
                    scipy.stats.t.ppf(p, df), rel=1e-6), (p, df)
        assert metrics.student_t_quantile(0.025, 15) == pytest.approx(-2.131450, abs=1e-5)
        with pytest.raises(ValueError):
            metrics.student_t_quantile(1.0, 5)
        with pytest.raises(ValueError):
            metrics.student_t_quantile(0.9, 0)

    def test_iqm_by_hand(self):
        # 8 values: the middle 50% are 3 4 5 6 -> 4.5; 5 values: drop one at each end.
        assert metrics.iqm(np.arange(1.0, 9.0)) == 4.5
        assert metrics.iqm([100.0, 1.0, 3.0, 2.0, 4.0]) == 3.0     # the outlier does not count
        assert metrics.iqm([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0], [4.0, 8.0]]) == 4.5  # pooled
        x = np.random.default_rng(0).normal(size=37)
        assert metrics.iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25))

    def test_probability_of_improvement_by_hand(self):
        # x = [2, 3], y = [2, 1]: pairs (2,2) tie 0.5, (2,1) 1, (3,2) 1, (3,1) 1 -> 3.5 / 4
        assert metrics.probability_of_improvement([2.0, 3.0], [2.0, 1.0]) == 0.875
        assert metrics.probability_of_improvement([3.0, 4.0], [1.0, 2.0]) == 1.0
        assert metrics.probability_of_improvement([1.0, 2.0], [3.0, 4.0]) == 0.0
        assert metrics.probability_of_improvement([2.0, 2.0], [2.0, 2.0]) == 0.5
        # two tasks: 1.0 on the first, 0.0 on the second -> 0.5
        assert metrics.probability_of_improvement([[3.0, 0.0], [4.0, 1.0]],
                                                  [[1.0, 5.0], [2.0, 6.0]]) == 0.5
        rng = np.random.default_rng(1)
        x, y = rng.normal(0.3, 1, 9), rng.normal(0, 1, 7)
        u = scipy.stats.mannwhitneyu(x, y, alternative="greater").statistic
        assert metrics.probability_of_improvement(x, y) == pytest.approx(u / 63)

    def test_paired_difference_and_headroom_by_hand(self):
        # d = [3, 1]: mean 2, CI t(0.975, 1) * sd / sqrt(2) = 12.706 * sqrt(2) / sqrt(2): covers 0
        d = metrics.paired_difference([10.0, 12.0], [7.0, 11.0])
        assert d["mean"] == pytest.approx(2.0) and d["ci95"] == pytest.approx(12.706, rel=1e-4)
        assert d["sign"] == 0
        assert metrics.paired_difference([5.0, 5.1, 4.9], [1.0, 1.0, 1.0])["sign"] == 1
        assert metrics.paired_difference([1.0, 1.1, 0.9], [5.0, 5.0, 5.0])["sign"] == -1
        one = metrics.paired_difference([3.0], [1.0])     # one seed: no interval, inconclusive
        assert one["mean"] == 2.0 and np.isnan(one["ci95"]) and one["sign"] == 0
        # headroom (x - h) / (o - h): (10 - 7) / (12 - 7) = 0.6, (12 - 11) / (16 - 11) = 0.2
        h = metrics.headroom_fraction([10.0, 12.0], [7.0, 11.0], [12.0, 16.0])
        assert h["mean"] == pytest.approx(0.4)
        assert metrics.headroom_fraction([1.0], [2.0], [2.0]) == {
            "mean": None, "ci95": None, "undefined_seeds": 1}

    def test_against_rliable_where_it_imports(self):
        rly = pytest.importorskip("rliable.metrics")
        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(10, 3)), rng.normal(0.2, 1, size=(8, 3))
        assert metrics.iqm(x) == pytest.approx(rly.aggregate_iqm(x))
        assert metrics.probability_of_improvement(x, y) == pytest.approx(
            rly.probability_of_improvement(x, y))

    def test_bootstrap_ci(self):
        x = np.random.default_rng(3).normal(10.0, 2.0, 16)
        lo, hi = metrics.bootstrap_ci(x, "mean", seed=0)
        assert lo < x.mean() < hi
        assert (lo, hi) == metrics.bootstrap_ci(x, "mean", seed=0)        # reproducible
        ref = scipy.stats.bootstrap((x,), np.mean, method="percentile", n_resamples=50_000,
                                    random_state=1).confidence_interval
        width = hi - lo
        assert abs(lo - ref.low) < 0.05 * width and abs(hi - ref.high) < 0.05 * width
        ilo, ihi = metrics.bootstrap_ci(x, "iqm", seed=0)
        assert ilo < metrics.iqm(x) < ihi
        assert metrics.bootstrap_ci([4.0], "mean") == (4.0, 4.0)
        with pytest.raises(ValueError, match="statistic"):
            metrics.bootstrap_ci(x, "median")

    def test_bootstrap_is_stratified_by_task(self):
        # Task means 1 and 101: a resample keeps 3 runs of each task, so its mean stays in
        # [50, 52]; resampling the 6 values together would range from 0 to 102.
        scores = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0]])
        lo, hi = metrics.bootstrap_ci(scores, "mean", reps=2000)
        assert 50.0 <= lo <= 51.0 <= hi <= 52.0

    def test_bootstrap_coverage(self):
        # The percentile interval of the mean of 16 normal values covers the true mean in about
        # 93% of samples (it undercovers a little at this size); a broken resampler would not.
        rng = np.random.default_rng(4)
        hits = [lo <= 0.0 <= hi for lo, hi in (
            metrics.bootstrap_ci(rng.normal(size=16), "mean", reps=1000, seed=i)
            for i in range(300))]
        assert 0.86 <= np.mean(hits) <= 0.98

    @pytest.mark.parametrize("n", [16, 2, 5])
    def test_mean_ci95(self, n):
        x = np.random.default_rng(n).normal(3.0, 2.0, size=n)
        mean, half = metrics.mean_ci95(x)
        expected = scipy.stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
        assert mean == pytest.approx(x.mean(), rel=1e-12)
        assert half == pytest.approx(expected, rel=1e-6)
        lo, hi = scipy.stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
        assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-6)

    def test_mean_ci95_by_hand_and_edge_cases(self):
        # [1, 3]: mean 2, s = sqrt(2), sem = 1, t(0.975, 1) = 12.7062
        mean, half = metrics.mean_ci95([1.0, 3.0])
        assert mean == 2.0 and half == pytest.approx(12.7062, abs=1e-4)
        mean, half = metrics.mean_ci95([4.0])
        assert mean == 4.0 and math.isnan(half)
        with pytest.raises(ValueError):
            metrics.mean_ci95([])


# ---------------------------------------------------------------------------------------------
# Joint actions and the factory
# ---------------------------------------------------------------------------------------------


class TestJointActions:
    def test_table_order(self):
        cfg = EnvConfig(num_aps=2, num_ues=6, num_candidates=3)  # A = 4
        table = baselines.joint_action_table(cfg)
        assert table.shape == (16, 2) and table.dtype == np.int32
        # AP 0 is the most significant digit: row 5 = (1, 1), row 6 = (1, 2), row 15 = (3, 3)
        np.testing.assert_array_equal(table[[0, 1, 4, 5, 6, 15]],
                                      [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [3, 3]])
        cfg3 = EnvConfig(num_aps=3, num_ues=6, num_candidates=2, allow_idle=False)  # A = 2
        np.testing.assert_array_equal(baselines.joint_action_table(cfg3)[[1, 2, 3, 4, 6]],
                                      [[0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 0]])

    def test_round_trip(self):
        cfg = EnvConfig(num_aps=3, num_ues=12, num_candidates=3)
        table = baselines.joint_action_table(cfg)
        idx = baselines.encode_joint_action(table, cfg.num_actions)
        np.testing.assert_array_equal(idx, np.arange(64))
        np.testing.assert_array_equal(
            baselines.decode_joint_action(jnp.arange(64), 3, cfg.num_actions), table)
        # hand: (2, 0, 3) in base 4 = 2 * 16 + 0 * 4 + 3 = 35
        assert int(baselines.encode_joint_action(jnp.array([2, 0, 3]), 4)) == 35
        np.testing.assert_array_equal(baselines.decode_joint_action(35, 3, 4), [2, 0, 3])
        # batched [..., I]
        a = jnp.array([[[1, 2, 3], [3, 3, 3]]])
        np.testing.assert_array_equal(baselines.encode_joint_action(a, 4), [[27, 63]])

    def test_make_caches_and_rejects(self):
        cfg = EnvConfig(num_aps=3, num_ues=12, horizon=20)
        for name in baselines.NAMES:
            assert baselines.make(name, cfg) is baselines.make(name, cfg)
            # an equal configuration built separately is the same cache entry
            assert baselines.make(name, cfg) is baselines.make(
                name, EnvConfig(num_aps=3, num_ues=12, horizon=20))
        assert baselines.make("random", cfg) is not baselines.make("tdm", cfg)
        assert baselines.make("random", cfg) is not baselines.make("random", cfg.replace(
            horizon=21))
        with pytest.raises(ValueError, match="unknown baseline"):
            baselines.make("round_robin", cfg)
        with pytest.raises(ValueError, match="allow_idle"):
            baselines.make("tdm", cfg.replace(allow_idle=False))
        # (3 + 1)^9 = 262144 > 65536 joint actions
        with pytest.raises(ValueError, match="exhaustive"):
            baselines.make("exhaustive", EnvConfig(num_aps=9, num_ues=27))
        assert callable(baselines.make("exhaustive", EnvConfig(num_aps=8, num_ues=24)))  # 4^8


# ---------------------------------------------------------------------------------------------
# Policies on many random states
# ---------------------------------------------------------------------------------------------

# 6 UEs over 3 APs: APs often have fewer than N = 3 UEs (masked candidates) or none at all.
CFG = EnvConfig(num_aps=3, num_ues=6, num_candidates=3, horizon=20)
PARAMS = EnvParams.create(CFG)
E, T = 48, 8  # 384 states


@jax.jit
def _collect(key):
    """``E`` episodes of ``T`` random-policy slots: stacked (obs, state) of every slot."""
    rand = baselines.make("random", CFG)

    def episode(k):
        k0, k1 = jax.random.split(k)
        obs, st = env.reset(k0, PARAMS, CFG)

        def body(carry, kt):
            obs, st = carry
            ka, ks = jax.random.split(kt)
            # random candidates, idle 1 time in 4
            a = jnp.where(jax.random.uniform(ka, (CFG.num_aps,)) < 0.25, CFG.idle_action,
                          rand(ka, obs, st, PARAMS))
            obs2, st2, *_ = env.step(ks, st, a, PARAMS, CFG)
            return (obs2, st2), (obs, st)

        return jax.lax.scan(body, (obs, st), jax.random.split(k1, T))[1]

    obs, st = jax.vmap(episode)(jax.random.split(key, E))
    flat = lambda x: x.reshape(E * T, *x.shape[2:])  # noqa: E731
    return jax.tree.map(flat, obs), jax.tree.map(flat, st)


@pytest.fixture(scope="module")
def batch():
    return _collect_cached()


def _act(name, cfg, obs, st, keys, params=PARAMS):
    return np.asarray(_act_jit(baselines.make(name, cfg), keys, obs, st, params))


def _vstep(cfg):
    return _VSTEP.setdefault(cfg, jax.jit(jax.vmap(
        lambda k, s, a, p: env.step(k, s, a, p, cfg), in_axes=(0, 0, 0, None))))


_VSTEP: dict = {}
_act_jit = jax.jit(lambda pol, k, o, s, p: jax.vmap(pol, in_axes=(0, 0, 0, None))(k, o, s, p),
                   static_argnums=(0,))


def _features(obs):
    f = np.asarray(obs.agents, np.float64).reshape(-1, CFG.num_aps, CFG.num_candidates, 2)
    return 10.0 ** f[..., 0], 10.0 ** f[..., 1]


class TestPolicies:
    def test_states_are_varied(self, batch):
        obs, st, _ = batch
        mask = np.asarray(obs.action_mask)[..., :3]
        assert (~mask).any(), "no masked candidate in the sample"
        assert (~mask.any(axis=-1)).any(), "no AP without UEs in the sample"
        assert mask.all(axis=-1).any()
        assert len(set(np.asarray(st.time).tolist())) == T

    @pytest.mark.parametrize("name", ["full_reuse", "max_sinr"])
    def test_argmax_of_metric_never_masked(self, batch, name):
        obs, st, keys = batch
        a = _act(name, CFG, obs, st, keys)
        mask = np.asarray(obs.action_mask)
        valid = mask[..., :3]
        sinr, w = _features(obs)
        metric = w * np.log2(1 + sinr) if name == "full_reuse" else sinr
        metric = np.where(valid, metric, -np.inf)
        has = valid.any(axis=-1)
        # never a masked action; idle exactly when the AP has no candidate (all transmit)
        assert np.take_along_axis(mask, a[..., None], axis=-1).all()
        np.testing.assert_array_equal(a == 3, ~has)
        chosen = np.take_along_axis(metric, np.minimum(a, 2)[..., None], axis=-1)[..., 0]
        best = metric.max(axis=-1)
        assert np.all(chosen[has] >= best[has] * (1 - 1e-5)), f"{name} did not pick the argmax"
        # where the metric has a clear winner, it is exactly the argmax
        top2 = np.sort(metric, axis=-1)[..., -2:]
        clear = has & (top2[..., 1] > top2[..., 0] * (1 + 1e-4))
        assert clear.sum() > 100
        np.testing.assert_array_equal(a[clear], metric.argmax(axis=-1)[clear])

    def test_tdm_one_active_ap(self, batch):
        obs, st, keys = batch
        a = _act("tdm", CFG, obs, st, keys)
        t = np.asarray(st.time)
        mask = np.asarray(obs.action_mask)
        has = mask[..., :3].any(axis=-1)
        turn = t % CFG.num_aps
        for s in range(a.shape[0]):
            for i in range(CFG.num_aps):
                if i != turn[s] or not has[s, i]:
                    assert a[s, i] == 3, (s, i, t[s], a[s])
                else:
                    assert a[s, i] < 3 and mask[s, i, a[s, i]]
        # its pick is full_reuse's pick for that AP
        fr = _act("full_reuse", CFG, obs, st, keys)
        rows = np.arange(a.shape[0])
        in_turn = has[rows, turn]
        np.testing.assert_array_equal(a[rows, turn][in_turn], fr[rows, turn][in_turn])
        # executed: at most one AP transmits, and exactly one when the AP in turn has UEs
        serving, masked = jax.vmap(lambda x, c: env.actions_to_serving(x, c, CFG))(
            jnp.asarray(a), st.candidates)
        active = np.asarray(serving >= 0).sum(axis=-1)
        np.testing.assert_array_equal(active, has[rows, turn].astype(int))
        assert not np.asarray(masked).any()

    def test_random_covers_valid_candidates(self, batch):
        n = 3000
        mask = jnp.array([[True, True, True, True], [True, False, False, True],
                          [False, False, False, True]])
        obs = env.Observation(agents=jnp.zeros((3, 6)), global_state=jnp.zeros(18),
                              action_mask=mask)
        pol = baselines.make("random", CFG)
        a = np.asarray(jax.jit(jax.vmap(lambda k: pol(k, obs, None, PARAMS)))(
            jax.random.split(jax.random.key(3), n)))
        counts = np.bincount(a[:, 0], minlength=4)
        assert counts[3] == 0 and set(a[:, 0]) == {0, 1, 2}
        se = math.sqrt(n * (1 / 3) * (2 / 3))
        assert np.all(np.abs(counts[:3] - n / 3) < 5 * se), counts
        assert set(a[:, 1]) == {0}  # its only valid candidate, never idle
        assert set(a[:, 2]) == {3}  # no candidate: idle
        # on the sampled states: always valid, and over many states every valid index is used
        obs_b, st_b, keys = batch
        ab = _act("random", CFG, obs_b, st_b, keys)
        mb = np.asarray(obs_b.action_mask)
        assert np.take_along_axis(mb, ab[..., None], axis=-1).all()
        full = mb[..., :3].all(axis=-1)
        assert set(ab[full].tolist()) == {0, 1, 2}

    @pytest.mark.parametrize("reward", ["pf", "log_utility"])
    def test_exhaustive_is_the_myopic_optimum(self, batch, reward):
        obs, st, keys = batch
        cfg = CFG.replace(reward=reward)
        step = _vstep(cfg)
        ex = _act("exhaustive", cfg, obs, st, keys)
        mask = np.asarray(obs.action_mask)
        assert np.take_along_axis(mask, ex[..., None], axis=-1).all(), "exhaustive took a mask"
        r_ex = np.asarray(step(keys, st, jnp.asarray(ex), PARAMS)[2], np.float64)
        tol = 1e-5 * np.abs(r_ex) + 1e-7
        for name in ("full_reuse", "max_sinr", "tdm", "random"):
            a = _act(name, cfg, obs, st, keys)
            r = np.asarray(step(keys, st, jnp.asarray(a), PARAMS)[2], np.float64)
            assert np.all(r_ex >= r - tol), f"{reward}: {name} beat the oracle"
            assert np.any(r_ex > r + tol), f"{reward}: the oracle never beat {name}"
        # against every joint action on a subset of states, through env.step itself
        table = jnp.asarray(baselines.joint_action_table(cfg))
        sub = slice(0, 64)
        best = np.full(64, -np.inf)
        sub_tree = jax.tree.map(lambda x: x[sub], st)
        for j in range(table.shape[0]):
            aj = jnp.broadcast_to(table[j], (64, 3))
            r = np.asarray(step(keys[sub], sub_tree, aj, PARAMS)[2], np.float64)
            best = np.maximum(best, r)
        np.testing.assert_allclose(r_ex[sub], best, rtol=1e-5, atol=1e-7)


_COLLECTED = {}


def _collect_cached():
    if "b" not in _COLLECTED:
        obs, st = _collect(jax.random.key(0))
        _COLLECTED["b"] = (obs, st, jax.random.split(jax.random.key(1), E * T))
    return _COLLECTED["b"]


# ---------------------------------------------------------------------------------------------
# Baselines against each other over many episodes
# ---------------------------------------------------------------------------------------------

_reset_many = jax.jit(jax.vmap(lambda k: env.reset(k, PARAMS, CFG)))


def test_baseline_ranking_over_many_episodes():
    # E * T = 384 episodes of CFG (same batch size as above: the vmapped step and policies are
    # compiled already), T = 20 slots, the same drops and fading for every policy.
    n = E * T
    keys = jax.random.split(jax.random.key(42), n)
    step = _vstep(CFG)
    ue_rates, masked = {}, {}
    for name in ("random", "full_reuse", "tdm"):
        obs, st = _reset_many(keys)
        total, n_masked = 0.0, 0
        for t in range(CFG.horizon):
            kt = jax.vmap(lambda k, t=t: jax.random.fold_in(k, t))(keys)
            a = jnp.asarray(_act(name, CFG, obs, st, kt))
            obs, st, r, _, _, info = step(kt, st, a, PARAMS)
            total = total + np.asarray(info["rates_mbps"], np.float64)
            n_masked += int(info["masked"].sum())
            assert np.all(np.isfinite(np.asarray(r)))
        ue_rates[name], masked[name] = total / CFG.horizon, n_masked
    m = {name: metrics.all_metrics(r, CFG.num_ues) for name, r in ue_rates.items()}
    assert m["full_reuse"]["score"] > m["random"]["score"], m
    assert m["full_reuse"]["sum_rate"] > m["random"]["sum_rate"], m
    assert m["tdm"]["sum_rate"] < m["full_reuse"]["sum_rate"], m
    # TDM and full reuse are fairer than random: higher 5th-percentile rate
    assert m["full_reuse"]["p5_rate"] > m["random"]["p5_rate"], m
    assert masked == {"random": 0, "full_reuse": 0, "tdm": 0}


def test_argmax_first_is_jnp_argmax():
    """env.argmax_first == jnp.argmax on the last axis: random floats with many ties (values
    from a small set), -inf rows, NaNs (the first NaN wins, as in jnp.argmax), ints, n = 1, and
    under vmap with the batch axis last (the episodes-last rollout's use)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxrrm.env import argmax_first

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 7, 16, 17, 256):  # 17, 256: past ARGMAX_UNROLL_MAX, jnp.argmax
        x = rng.choice(np.array([-np.inf, -1.0, 0.0, 0.5, 2.0], np.float32), size=(500, 3, n))
        x[rng.random(x.shape) < 0.05] = np.nan
        x[0] = -np.inf
        np.testing.assert_array_equal(argmax_first(jnp.asarray(x)), jnp.argmax(x, axis=-1))
        xi = rng.integers(-3, 3, size=(200, n)).astype(np.int32)
        np.testing.assert_array_equal(argmax_first(jnp.asarray(xi)), jnp.argmax(xi, axis=-1))
        last = jnp.moveaxis(jnp.asarray(x), 0, -1)  # [3, n, 500]
        got = jax.vmap(argmax_first, in_axes=-1, out_axes=-1)(last)
        np.testing.assert_array_equal(got, jnp.argmax(x, axis=-1).T)
