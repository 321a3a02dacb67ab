"""Heuristic scheduling policies and the exhaustive oracle (docs/design.md §4).

Each factory returns a pure :data:`jaxrrm.env.Policy` ``(key, obs, state, params) -> [I] int32``,
cached per configuration so that rolling the same baseline out twice does not recompile.

* ``random``: each AP serves a uniformly random valid candidate.
* ``full_reuse``: every AP serves its candidate of largest PF metric :math:`w_j C_j^{est}`, all
  transmit (:math:`C^{est} = \\log_2(1 + \\widehat{\\mathrm{SINR}})` from the observation).
* ``tdm``: in slot ``t`` only AP ``t mod I`` transmits, to its largest-PF-metric candidate.
* ``max_sinr``: every AP serves its largest-SINR candidate.
* ``reward_greedy``: every AP serves its candidate of largest
  :math:`w_j^{\\lambda} \\log_2(1 + \\widehat{\\mathrm{SINR}}_j)`, the PF reward's own weighting with
  ``lambda = params.pf_lambda`` (greedy per slot, all transmit); ``full_reuse`` is its ``lambda = 1``.
* ``exhaustive``: centralized oracle: each slot it evaluates all ``A^I`` joint actions on the true
  channel in one vectorized pass and takes the one of largest instantaneous reward (myopic optimum).

The decentralized baselines (``random``, ``full_reuse``, ``max_sinr``, ``reward_greedy``) read only
the observation (its first ``2N`` local features, whatever observation options are on);
``tdm`` reads the slot clock and ``exhaustive`` the true channel from the state.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import radio
from .config import EnvConfig
from .env import actions_to_serving, argmax_first, channel_gain, noise_w, tx_power_w

NAMES = ("random", "full_reuse", "tdm", "max_sinr", "reward_greedy", "exhaustive")

#: The baselines that are not oracles (what "best baseline" ranges over).
HEURISTICS = tuple(n for n in NAMES if n != "exhaustive")

#: Largest joint action space the exhaustive oracle will enumerate in one pass.
MAX_EXHAUSTIVE_JOINT_ACTIONS = 1 << 16


def candidate_features(obs, cfg: EnvConfig):
    """Split an observation into per-candidate features.

    Returns:
      ``sinr_est`` ``[I, N]`` linear, ``weights`` ``[I, N]`` 1/(Mbit/s), ``valid`` ``[I, N]`` bool.
    """
    n = cfg.num_candidates
    # Strided slices, not a reshape to [..., N, 2]: under vmap a reshape moves the batch axis
    # first, and the episodes-last rollout would transpose every slot.
    valid = obs.action_mask[:, :n]
    return 10.0 ** obs.agents[..., 0:2 * n:2], 10.0 ** obs.agents[..., 1:2 * n:2], valid


def _fallback_action(cfg: EnvConfig) -> int:
    return cfg.idle_action if cfg.allow_idle else 0


def _argmax_valid(values, valid, cfg: EnvConfig):
    """Per AP, the valid candidate of largest value; idle (or 0) if it has none. ``[I]`` int32."""
    best = argmax_first(jnp.where(valid, values, -jnp.inf))
    return jnp.where(jnp.any(valid, axis=-1), best, _fallback_action(cfg)).astype(jnp.int32)


def pf_metric(obs, cfg: EnvConfig):
    """PF metric of each candidate, :math:`w_j \\log_2(1 + \\widehat{\\mathrm{SINR}}_j)`: ``[I, N]``."""
    sinr_est, weights, _ = candidate_features(obs, cfg)
    return weights * jnp.log2(1.0 + sinr_est)


def joint_action_table(cfg: EnvConfig) -> np.ndarray:
    """All joint actions ``[A^I, I]`` int32, row ``j`` the base-``A`` digits of ``j`` (AP 0 first).

    Row order is :func:`encode_joint_action`'s: ``table[encode_joint_action(a)] == a``.
    """
    a, i = cfg.num_actions, cfg.num_aps
    idx = np.arange(a**i, dtype=np.int64)
    digits = (idx[:, None] // (a ** np.arange(i - 1, -1, -1))[None, :]) % a
    return digits.astype(np.int32)


def encode_joint_action(actions, num_actions: int):
    """Joint index of per-AP actions, base ``A`` with AP 0 most significant: ``[..., I] -> [...]``."""
    actions = jnp.asarray(actions, jnp.int32)
    num_aps = actions.shape[-1]
    place = jnp.asarray(num_actions ** np.arange(num_aps - 1, -1, -1), jnp.int32)
    return jnp.sum(actions * place, axis=-1)


def decode_joint_action(index, num_aps: int, num_actions: int):
    """Inverse of :func:`encode_joint_action`: ``[...] -> [..., I]`` int32."""
    index = jnp.asarray(index, jnp.int32)
    place = jnp.asarray(num_actions ** np.arange(num_aps - 1, -1, -1), jnp.int32)
    return ((index[..., None] // place) % num_actions).astype(jnp.int32)


@functools.lru_cache(maxsize=None)
def make(name: str, cfg: EnvConfig):
    """The baseline policy ``name`` for configuration ``cfg`` (cached: same object each call).

    Raises:
      ValueError: unknown name; ``tdm`` without ``allow_idle``; ``exhaustive`` with more than
        ``MAX_EXHAUSTIVE_JOINT_ACTIONS`` joint actions.
    """
    if name not in NAMES:
        raise ValueError(f"unknown baseline {name!r}: allowed are {NAMES}")
    return globals()[f"_make_{name}"](cfg)


def _make_random(cfg: EnvConfig):
    def policy(key, obs, state, params):
        valid = obs.action_mask[:, : cfg.num_candidates]
        u = jax.random.uniform(key, valid.shape)
        return _argmax_valid(u, valid, cfg)
    return policy


def _make_full_reuse(cfg: EnvConfig):
    def policy(key, obs, state, params):
        _, _, valid = candidate_features(obs, cfg)
        return _argmax_valid(pf_metric(obs, cfg), valid, cfg)
    return policy


def _make_max_sinr(cfg: EnvConfig):
    def policy(key, obs, state, params):
        sinr_est, _, valid = candidate_features(obs, cfg)
        return _argmax_valid(sinr_est, valid, cfg)
    return policy


def reward_greedy_metric(obs, params, cfg: EnvConfig):
    """Per-candidate reward-greedy metric :math:`w_j^{\\lambda} \\log_2(1 + \\widehat{\\mathrm{SINR}}_j)`.

    The slot's own contribution of candidate ``j`` to the PF reward
    :math:`\\frac1K \\sum_j w_j^{\\lambda} C_j` (docs/design.md §1), up to the common factor
    ``B / K``, with the all-APs-active SINR estimate in place of the executed SINR;
    ``lambda = params.pf_lambda``.

    Returns:
      ``[I, N]`` float32 (unitless; 1/(Mbit/s)^lambda times bit/s/Hz).
    """
    sinr_est, weights, _ = candidate_features(obs, cfg)
    return weights ** params.pf_lambda * jnp.log2(1.0 + sinr_est)


def _make_reward_greedy(cfg: EnvConfig):
    def policy(key, obs, state, params):
        _, _, valid = candidate_features(obs, cfg)
        return _argmax_valid(reward_greedy_metric(obs, params, cfg), valid, cfg)
    return policy


def _make_tdm(cfg: EnvConfig):
    if not cfg.allow_idle:
        raise ValueError("baseline 'tdm' needs EnvConfig.allow_idle=True (APs must fall silent)")

    def policy(key, obs, state, params):
        _, _, valid = candidate_features(obs, cfg)
        best = _argmax_valid(pf_metric(obs, cfg), valid, cfg)
        turn = jnp.arange(cfg.num_aps) == (state.time % cfg.num_aps)
        return jnp.where(turn, best, cfg.idle_action).astype(jnp.int32)
    return policy


def _make_exhaustive(cfg: EnvConfig):
    if cfg.num_joint_actions > MAX_EXHAUSTIVE_JOINT_ACTIONS:
        raise ValueError(
            f"baseline 'exhaustive' enumerates num_actions**num_aps = {cfg.num_joint_actions} joint "
            f"actions; allowed is <= {MAX_EXHAUSTIVE_JOINT_ACTIONS} (use fewer APs or candidates)")
    table = jnp.asarray(joint_action_table(cfg))  # [J, I]

    def policy(key, obs, state, params):
        serving, masked = jax.vmap(lambda a: actions_to_serving(a, state.candidates, cfg))(table)
        gain = channel_gain(state)
        sinr = jax.vmap(lambda s: radio.sinr(gain, s, tx_power_w(params), noise_w(params)))(serving)
        rates = radio.rate_mbps(sinr, params.bandwidth_hz)  # [J, K]
        avg = state.avg_rate_mbps
        if cfg.reward == "pf":
            w = radio.pf_weights(avg, params.min_avg_rate_mbps)
            value = radio.pf_reward(rates, w[None, :], params.pf_lambda)
        else:
            new = jnp.maximum(radio.update_average(avg[None, :], rates, params.pf_beta),
                              params.min_avg_rate_mbps)
            value = radio.log_utility_reward(new, avg[None, :])
        # A joint action with a masked component duplicates one with that AP idle: skip it.
        value = jnp.where(jnp.any(masked, axis=-1), -jnp.inf, value)
        return table[jnp.argmax(value)]
    return policy
