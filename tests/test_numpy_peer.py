"""The lean NumPy peer of the benchmarks computes the simulator's slot (against the reference)."""

import math

import numpy as np
import pytest

from benchmarks import numpy_peer
from jaxrrm import EnvConfig, EnvParams
from jaxrrm.testing import reference as ref


@pytest.mark.parametrize("cfg_kw", [dict(), dict(num_aps=3, num_ues=5, num_candidates=2)])
def test_lean_step_matches_reference_transition(cfg_kw):
    cfg = EnvConfig(horizon=10, **cfg_kw)
    params = EnvParams.create(cfg)
    rng = np.random.default_rng(3)
    obs, state = ref.reset(rng, params, cfg, batch=32)
    st = numpy_peer.LeanState(state.large_gain, state.association, state.fading,
                              state.avg_rate_mbps, cfg.num_aps)
    c = numpy_peer._constants(params, cfg)
    for _ in range(3):  # a few slots, so the averages and the fading move
        z = rng.standard_normal((2,) + st.large_gain.shape).astype(np.float32)
        rates, reward, feats = numpy_peer.lean_step(st, z[0], z[1], c, cfg)
        np.testing.assert_allclose(feats, obs.agents, rtol=1e-4, atol=1e-5)
        acts = ref.policy_full_reuse(obs, cfg)
        innovation = np.moveaxis(z.astype(np.float64), 0, 1) * math.sqrt(0.5)
        obs, state, r, _, _, info = ref.transition(state, acts, innovation, params, cfg)
        np.testing.assert_allclose(rates, info["rates_mbps"], rtol=2e-4, atol=1e-4)
        np.testing.assert_allclose(reward, r, rtol=2e-4)
        np.testing.assert_allclose(st.avg_rate_mbps, state.avg_rate_mbps, rtol=2e-4)
        np.testing.assert_allclose(st.fading_re, state.fading[:, 0], rtol=1e-4, atol=1e-5)


def test_rollout_shape_and_unsupported_options():
    cfg = EnvConfig(horizon=4)
    out = numpy_peer.rollout(np.random.default_rng(0), EnvParams.create(cfg), cfg, 8)
    assert out.shape == (8, cfg.num_ues) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.all(out >= 0) and out.sum() > 0
    with pytest.raises(ValueError, match="mobility"):
        numpy_peer.check_supported(EnvConfig(mobility=True))
