"""The hash-based Gaussian generator behind the fading innovations (channel.hash_normal)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrrm import channel

N_KEYS = 2048
SHAPE = (2, 4, 24)


@pytest.fixture(scope="module")
def draws():
    keys = jax.random.split(jax.random.key(123), N_KEYS)
    return np.asarray(jax.jit(jax.vmap(lambda k: channel.hash_normal(k, SHAPE)))(keys),
                      np.float64).reshape(N_KEYS, -1)


def test_moments(draws):
    x = draws.ravel()
    n = x.size  # 393216
    # Standard errors: mean 1/sqrt(n) = 0.0016, variance sqrt(2/n) = 0.0023; allow 5 sigma.
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(stats.skew(x)) < 5 * np.sqrt(6.0 / n)
    assert abs(stats.kurtosis(x)) < 5 * np.sqrt(24.0 / n)


def test_kolmogorov_smirnov(draws):
    assert stats.kstest(draws.ravel()[:100_000], "norm").pvalue > 1e-3


def test_tail_frequencies(draws):
    x = np.abs(draws.ravel())
    for z in (1.0, 2.0, 3.0):
        p = 2 * stats.norm.sf(z)
        se = np.sqrt(p * (1 - p) / x.size)
        assert abs(np.mean(x > z) - p) < 5 * se, z


def test_no_correlation_between_counters_or_keys(draws):
    n = draws.size
    lim = 5 / np.sqrt(n)
    # Neighbouring counters within a key, and the same counter across consecutive keys.
    assert abs(np.corrcoef(draws[:, :-1].ravel(), draws[:, 1:].ravel())[0, 1]) < lim
    assert abs(np.corrcoef(draws[:-1].ravel(), draws[1:].ravel())[0, 1]) < lim
    # Keys differing in one fold_in step.
    base = jax.random.key(7)
    a = channel.hash_normal(jax.random.fold_in(base, 0), (50_000,))
    b = channel.hash_normal(jax.random.fold_in(base, 1), (50_000,))
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(50_000)


def test_deterministic_and_key_dependent():
    k1, k2 = jax.random.split(jax.random.key(0))
    a = channel.hash_normal(k1, (100,))
    np.testing.assert_array_equal(a, channel.hash_normal(k1, (100,)))
    assert not np.allclose(a, channel.hash_normal(k2, (100,)))
    # Raw uint32 keys work too and agree with the typed key of the same data.
    raw = jax.random.key_data(k1)
    np.testing.assert_array_equal(a, channel.hash_normal(raw, (100,)))


def test_std_and_fading_innovation_power():
    x = channel.hash_normal(jax.random.key(3), (200_000,), std=2.5)
    assert float(jnp.std(x)) == pytest.approx(2.5, rel=0.01)
    e = channel.fading_innovation(jax.random.key(4), (100, 100))
    assert e.shape == (2, 100, 100)
    assert float(jnp.mean(channel.fading_power(e))) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.isfinite(np.asarray(e)))


def test_gauss_markov_with_hash_innovations_is_stationary():
    rho = float(channel.fading_correlation(1.0, 3.5e9, 0.01))
    keys = jax.random.split(jax.random.key(9), 400)

    def body(h, k):
        h2 = channel.advance_fading(h, channel.fading_innovation(k, (64, 64)), rho)
        lag1 = jnp.mean(h[0] * h2[0] + h[1] * h2[1])  # E[Re(h_t conj h_{t+1})]
        return h2, (jnp.mean(channel.fading_power(h2)), lag1)

    h0 = channel.init_fading(jax.random.key(10), (64, 64))
    _, (power, lag1) = jax.lax.scan(body, h0, keys)
    assert float(jnp.mean(power)) == pytest.approx(1.0, abs=0.01)
    assert float(jnp.mean(lag1)) == pytest.approx(rho, abs=0.01)


def test_erfinv_f32_accuracy_on_the_hash_grid():
    """erfinv_f32 against SciPy's float64 erfinv on every 5th point of the grid hash_normal draws
    from, (2t + 1) 2^-24 for t in [-2^23, 2^23): relative error below 5e-7 everywhere, the tail
    branch (w >= 5, |x| > 0.9966) included, and odd symmetry exact."""
    from scipy import special

    t = np.arange(-(1 << 23), 1 << 23, 5, dtype=np.int64)
    x = (2 * t + 1).astype(np.float32) * np.float32(2.0**-24)
    ref = special.erfinv(x.astype(np.float64))
    out = np.asarray(jax.jit(channel.erfinv_f32)(jnp.asarray(x)), np.float64)
    rel = np.abs(out - ref) / np.abs(ref)
    assert rel.max() < 5e-7, (rel.max(), x[rel.argmax()])
    tail = np.abs(x) > 0.9966
    assert tail.sum() > 1000 and rel[tail].max() < 5e-7
    np.testing.assert_array_equal(out, -np.asarray(channel.erfinv_f32(jnp.asarray(-x)), np.float64))
