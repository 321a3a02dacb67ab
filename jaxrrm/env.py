"""The multi-AP scheduling environment: pure ``reset`` / ``step``, observations, rollouts.

The Markov game of DESIGN.md §2. With ``I = cfg.num_aps``, ``K = cfg.num_ues``,
``N = cfg.num_candidates`` and ``A = cfg.num_actions`` (``N + 1`` with idle):

* ``reset(key, params, cfg) -> (obs, state)``
* ``step(key, state, actions, params, cfg) -> (obs, state, reward, terminated, truncated, info)``

are pure functions of explicit PRNG keys; ``cfg`` is static (pass it with ``static_argnums`` or
close over it), everything else is a pytree, so both ``jit``, ``vmap`` (over keys, states *and*
``EnvParams``) and ``lax.scan`` without recompiling from one call to the next.

The randomness of a step is only the fading innovation; :func:`transition` is the deterministic
rest, given that innovation (it is what the NumPy reference in :mod:`jaxrrm.reference` mirrors).

Order within a step (DESIGN §1): the observation at slot ``t`` describes the channel and PF weights
of slot ``t``; the actions are executed on that channel; then the PF averages are updated, the
fading advances to ``t + 1`` (and, with mobility, UEs move), and the next observation is made.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import struct

from . import channel, radio, topology
from .config import EnvConfig, EnvParams
from .units import dbm_to_w, thermal_noise_w

_TINY_SINR = 1e-30


@struct.dataclass
class Observation:
    """What the agents see at a slot.

    Attributes:
      agents: ``[I, 2N]`` float32. Row ``i`` is AP ``i``'s observation: for its candidates
        ``n = 0..N-1`` (its associated UEs sorted by PF weight, largest first) the pairs
        ``(SINR_dB / 10, log10 w)`` at positions ``2n, 2n+1``; the SINR is the all-APs-active
        estimate on this slot's channel, ``w`` the PF weight in 1/(Mbit/s). Zeros where masked.
      global_state: ``[2 N I]`` float32, the concatenation of all rows of ``agents``.
      action_mask: ``[I, A]`` bool, True where an action is valid (candidate exists; idle always).
    """

    agents: jax.Array
    global_state: jax.Array
    action_mask: jax.Array


@struct.dataclass
class EnvState:
    """Full state of one episode (a pytree; add a leading axis for a batch of episodes).

    Attributes:
      time: ``[]`` int32, the slot ``t`` the next action is taken in.
      ap_pos_m: ``[I, 2]`` float32, m.  ue_pos_m: ``[K, 2]`` float32, m.
      heading_rad: ``[K]`` float32, UE headings (used with mobility).
      los: ``[I, K]`` bool, line-of-sight state per link (fixed per episode).
      shadowing_db: ``[I, K]`` float32, dB (fixed per episode).
      large_gain: ``[I, K]`` float32, linear: path loss and shadowing.
      association: ``[K]`` int32, serving AP of each UE.
      fading: ``[2, I, K]`` float32, real/imag parts of the Rayleigh coefficient h(t).
      avg_rate_mbps: ``[K]`` float32, PF average :math:`\\bar C(t-1)`, Mbit/s.
      candidates: ``[I, N]`` int32, the UEs behind each AP's actions at slot ``t`` (-1 = none).
    """

    time: jax.Array
    ap_pos_m: jax.Array
    ue_pos_m: jax.Array
    heading_rad: jax.Array
    los: jax.Array
    shadowing_db: jax.Array
    large_gain: jax.Array
    association: jax.Array
    fading: jax.Array
    avg_rate_mbps: jax.Array
    candidates: jax.Array


def tx_power_w(params: EnvParams):
    """AP transmit power in W (scalar, or ``[I]`` if ``params.tx_power_dbm`` is per AP)."""
    return dbm_to_w(params.tx_power_dbm)


def noise_w(params: EnvParams):
    """Noise power :math:`N_0 B F` in W (DESIGN §1: -97 dBm for the default)."""
    return thermal_noise_w(params.bandwidth_hz, params.noise_figure_db, params.noise_psd_dbm_hz)


def channel_gain(state: EnvState):
    """Instantaneous channel power gain :math:`g = \\bar g |h|^2`: ``[I, K]`` float32, linear."""
    return state.large_gain * channel.fading_power(state.fading)


def top_k_first(x, k: int):
    """The ``k`` largest entries along the last axis, largest first, ties to the lower index.

    Same result as ``jax.lax.top_k`` for distinct values, computed as ``k`` rounds of a max and a
    min-index reduction: on CPU this is several times faster than the sort behind ``top_k`` for
    the small ``k`` (candidates per AP) used here. Cost ``O(k * n)``.

    Args:
      x: ``[..., n]`` float.
      k: int <= n (static).

    Returns:
      (``[..., k]`` values, ``[..., k]`` int32 indices).
    """
    n = x.shape[-1]
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    vals, idxs = [], []
    for _ in range(k):
        m = jnp.max(x, axis=-1, keepdims=True)
        i = jnp.min(jnp.where(x == m, iota, n), axis=-1, keepdims=True)
        vals.append(m)
        idxs.append(jnp.minimum(i, n - 1))
        x = jnp.where(iota == i, -jnp.inf, x)
    return jnp.concatenate(vals, axis=-1), jnp.concatenate(idxs, axis=-1)


def observe(state: EnvState, params: EnvParams, cfg: EnvConfig):
    """Observation of the current slot and the candidate UEs behind each AP's actions.

    Candidates of AP ``i``: its associated UEs with the ``N`` largest PF weights
    :math:`w_j = 1/\\bar C_j(t-1)`, largest first (ties: lower UE index first).

    Returns:
      (:class:`Observation`, ``[I, N]`` int32 candidates, -1 where an AP has fewer than N UEs).
    """
    num_aps, num_cand = cfg.num_aps, cfg.num_candidates
    gain = channel_gain(state)
    est = radio.sinr_all_active(gain, state.association, tx_power_w(params), noise_w(params))
    weights = radio.pf_weights(state.avg_rate_mbps, params.min_avg_rate_mbps)
    own = state.association[None, :] == jnp.arange(num_aps)[:, None]  # [I, K]
    score = jnp.where(own, weights[None, :], -jnp.inf)
    top_w, idx = top_k_first(score, num_cand)  # [I, N]
    valid = top_w > -jnp.inf
    candidates = jnp.where(valid, idx, -1).astype(jnp.int32)
    sinr_feat = jnp.log10(jnp.maximum(est[idx], _TINY_SINR))  # dB / 10
    logw_feat = jnp.log10(jnp.where(valid, top_w, 1.0))
    feats = jnp.stack([sinr_feat, logw_feat], axis=-1) * valid[..., None]  # [I, N, 2]
    agents = feats.reshape(num_aps, 2 * num_cand).astype(jnp.float32)
    mask = valid
    if cfg.allow_idle:
        mask = jnp.concatenate([valid, jnp.ones((num_aps, 1), bool)], axis=-1)
    obs = Observation(agents=agents, global_state=agents.reshape(-1), action_mask=mask)
    return obs, candidates


def init_state(ap_pos_m, ue_pos_m, heading_rad, los, shadowing_db, fading, params: EnvParams,
               cfg: EnvConfig):
    """Deterministic part of :func:`reset`: an episode's first state from its random draws.

    Args:
      ap_pos_m: ``[I, 2]`` m.  ue_pos_m: ``[K, 2]`` m.  heading_rad: ``[K]`` rad.
      los: ``[I, K]`` bool.  shadowing_db: ``[I, K]`` dB (already scaled by the link's std).
      fading: ``[2, I, K]`` real/imag parts of h(0).
      params, cfg: environment parameters and configuration.

    Returns:
      (:class:`Observation`, :class:`EnvState`) at ``t = 0``.
    """
    large_gain = topology.large_scale_gain(ap_pos_m, ue_pos_m, los, shadowing_db, params, cfg)
    association = topology.associate(large_gain)
    avg0 = radio.initial_average(large_gain, association, tx_power_w(params), noise_w(params),
                                 params.bandwidth_hz, cfg.num_aps)
    avg0 = jnp.maximum(avg0, params.min_avg_rate_mbps)
    state = EnvState(
        time=jnp.zeros((), jnp.int32),
        ap_pos_m=jnp.asarray(ap_pos_m, jnp.float32),
        ue_pos_m=jnp.asarray(ue_pos_m, jnp.float32),
        heading_rad=jnp.asarray(heading_rad, jnp.float32),
        los=jnp.asarray(los, bool),
        shadowing_db=jnp.asarray(shadowing_db, jnp.float32),
        large_gain=large_gain.astype(jnp.float32),
        association=association,
        fading=jnp.asarray(fading, jnp.float32),
        avg_rate_mbps=avg0.astype(jnp.float32),
        candidates=jnp.full((cfg.num_aps, cfg.num_candidates), -1, jnp.int32),
    )
    obs, candidates = observe(state, params, cfg)
    return obs, state.replace(candidates=candidates)


def reset(key, params: EnvParams, cfg: EnvConfig):
    """Start an episode: AP layout, UE drop, LOS states, shadowing, fading and PF averages.

    Draws (each from its own subkey): AP positions (only for ``ap_layout="random"``), UE positions
    (uniform, at least ``min_distance_m`` from every AP), UE headings (uniform in [0, 2pi)), each
    link's LOS state from the model's LOS probability, shadowing ``N(0, std(LOS)^2)`` dB, and
    fading ``h(0) ~ CN(0, 1)``. Association is to the largest large-scale gain and the PF averages
    start at the fair share of :func:`jaxrrm.radio.initial_average`.

    Relies on :meth:`EnvParams.validate` (a no-op on traced parameters, which were checked when
    they were built).

    Args:
      key: PRNG key.
      params: :class:`EnvParams`.
      cfg: :class:`EnvConfig` (static).

    Returns:
      (:class:`Observation`, :class:`EnvState`).
    """
    params.validate()
    k_ap, k_ue, k_head, k_los, k_sh, k_fad = jax.random.split(key, 6)
    ap_pos = topology.ap_positions(k_ap, params, cfg)
    ue_pos = topology.drop_ues(k_ue, ap_pos, cfg.num_ues, params.area_side_m,
                               params.min_distance_m, cfg.min_drop_tries)
    heading = jax.random.uniform(k_head, (cfg.num_ues,), maxval=2.0 * jnp.pi)
    d2 = topology.distances_2d_m(ap_pos, ue_pos)
    los = topology.draw_los(k_los, d2, cfg.pathloss_model)
    shadowing = channel.shadowing_std_db(los, params) * jax.random.normal(k_sh, los.shape)
    fading = channel.init_fading(k_fad, (cfg.num_aps, cfg.num_ues))
    return init_state(ap_pos, ue_pos, heading, los, shadowing, fading, params, cfg)


def actions_to_serving(actions, candidates, cfg: EnvConfig):
    """Map per-AP actions to served UEs.

    Args:
      actions: ``[I]`` int, in ``[0, A)``.
      candidates: ``[I, N]`` int32 from the observation (-1 = no candidate).
      cfg: static configuration.

    Returns:
      (``[I]`` int32 served UE, -1 = silent; ``[I]`` bool, True where the action was masked —
      pointing at a missing candidate or out of range — and so executed as silent).
    """
    actions = jnp.asarray(actions, jnp.int32)
    in_cand = (actions >= 0) & (actions < cfg.num_candidates)
    picked = jnp.take_along_axis(candidates, jnp.clip(actions, 0, cfg.num_candidates - 1)[:, None],
                                 axis=1)[:, 0]
    serving = jnp.where(in_cand, picked, -1)
    idle = (actions == cfg.idle_action) if cfg.allow_idle else jnp.zeros_like(in_cand)
    has_valid = jnp.any(candidates >= 0, axis=1) | cfg.allow_idle
    masked = ~idle & (serving < 0) & has_valid
    return serving.astype(jnp.int32), masked


def transition(state: EnvState, actions, innovation, params: EnvParams, cfg: EnvConfig):
    """Deterministic part of :func:`step`, given the fading innovation ``e(t)``.

    Args:
      state: :class:`EnvState` at slot ``t``.
      actions: ``[I]`` int32 per-AP actions.
      innovation: ``[2, I, K]`` float32, real/imag parts of ``e(t) ~ CN(0, 1)``.
      params, cfg: environment parameters and configuration.

    Returns:
      Same as :func:`step`.
    """
    p_w, n_w = tx_power_w(params), noise_w(params)
    serving, masked = actions_to_serving(actions, state.candidates, cfg)
    gain = channel_gain(state)
    sinr = radio.sinr(gain, serving, p_w, n_w)
    rates = radio.rate_mbps(sinr, params.bandwidth_hz)
    weights = radio.pf_weights(state.avg_rate_mbps, params.min_avg_rate_mbps)
    avg_new = jnp.maximum(radio.update_average(state.avg_rate_mbps, rates, params.pf_beta),
                          params.min_avg_rate_mbps)
    if cfg.reward == "pf":
        reward = radio.pf_reward(rates, weights, params.pf_lambda)
    else:
        reward = radio.log_utility_reward(avg_new, state.avg_rate_mbps)

    rho = channel.fading_correlation(params.ue_speed_mps, params.carrier_hz, params.slot_s)
    fading = channel.advance_fading(state.fading, innovation, rho)
    time = state.time + 1
    new = state.replace(time=time, fading=fading, avg_rate_mbps=avg_new)
    if cfg.mobility:
        pos, heading = topology.move_ues(state.ue_pos_m, state.heading_rad,
                                         params.ue_speed_mps * params.slot_s, params.area_side_m)
        large_gain = topology.large_scale_gain(state.ap_pos_m, pos, state.los,
                                               state.shadowing_db, params, cfg)
        refresh = (time % cfg.reassociation_slots) == 0
        association = jnp.where(refresh, topology.associate(large_gain), state.association)
        new = new.replace(ue_pos_m=pos, heading_rad=heading, large_gain=large_gain,
                          association=association)
    obs, candidates = observe(new, params, cfg)
    new = new.replace(candidates=candidates)
    terminated = jnp.zeros((), bool)
    truncated = time >= cfg.horizon
    info = {"rates_mbps": rates, "serving": serving, "masked": masked, "sinr": sinr,
            "pf_weights": weights}
    return obs, new, reward, terminated, truncated, info


def step(key, state: EnvState, actions, params: EnvParams, cfg: EnvConfig):
    """Execute one slot.

    Args:
      key: PRNG key (the fading innovation of this slot, drawn by
        :func:`jaxrrm.channel.fading_innovation`).
      state: :class:`EnvState` at slot ``t``.
      actions: ``[I]`` int32; action ``n < N`` serves the AP's ``n``-th candidate, ``N`` (with
        ``allow_idle``) is silence; a masked action is executed as silence and flagged in ``info``.
      params: :class:`EnvParams`.
      cfg: :class:`EnvConfig` (static).

    Returns:
      ``obs`` (:class:`Observation` of slot ``t + 1``), ``state`` (slot ``t + 1``), ``reward``
      ``[]`` float32 (team reward of slot ``t``), ``terminated`` ``[]`` bool (always False),
      ``truncated`` ``[]`` bool (``t + 1 == horizon``), and ``info``: ``rates_mbps`` ``[K]``,
      ``serving`` ``[I]`` int32 (-1 silent), ``masked`` ``[I]`` bool, ``sinr`` ``[K]`` linear,
      ``pf_weights`` ``[K]`` (the weights of slot ``t``), all of slot ``t``.
    """
    innovation = channel.fading_innovation(key, (cfg.num_aps, cfg.num_ues))
    return transition(state, actions, innovation, params, cfg)


def step_auto_reset(key, state: EnvState, actions, params: EnvParams, cfg: EnvConfig):
    """:func:`step`, then :func:`reset` where the episode ended (for streams of transitions).

    The returned observation and state are the new episode's when ``terminated | truncated``;
    the last observation of the finished episode is kept in ``info["final_obs"]`` (what a
    bootstrapped target needs).
    """
    k_step, k_reset = jax.random.split(key)
    obs, new, reward, term, trunc, info = step(k_step, state, actions, params, cfg)
    obs_r, state_r = reset(k_reset, params, cfg)
    done = term | trunc
    pick = lambda a, b: jnp.where(done, a, b)  # noqa: E731
    info = dict(info, final_obs=obs)
    obs = jax.tree.map(pick, obs_r, obs)
    new = jax.tree.map(pick, state_r, new)
    return obs, new, reward, term, trunc, info


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------

Policy = Callable[[jax.Array, Observation, EnvState, EnvParams], jax.Array]
"""A policy: ``(key, obs, state, params) -> [I] int32 actions``. Decentralized policies use
``obs`` only; ``state`` is there for oracles (``exhaustive``) and slot-clock schedules (``tdm``)."""


class RolloutResult(NamedTuple):
    """Output of :func:`rollout` for ``E`` episodes of ``T`` slots.

    Attributes:
      ue_rates_mbps: ``[E, K]`` float32, per-UE average rate :math:`R_j = \\frac1T\\sum_t C_j(t)`.
      rewards: ``[E, T]`` float32, team reward per slot.
      masked_actions: ``[E]`` int32, number of masked actions taken.
      trajectory: ``None``, or a dict of ``[E, T, ...]`` arrays: ``obs`` (:class:`Observation`),
        ``actions`` ``[E, T, I]``, ``rewards``, ``next_obs``, ``truncated`` and ``info``.
    """

    ue_rates_mbps: jax.Array
    rewards: jax.Array
    masked_actions: jax.Array
    trajectory: Optional[dict]


def _episode(key, policy: Policy, params: EnvParams, cfg: EnvConfig, return_trajectory: bool):
    k_reset, k_run = jax.random.split(key)
    obs, state = reset(k_reset, params, cfg)

    def body(carry, keys_t):
        obs, state, rate_sum, n_masked = carry
        k_pol, k_env = keys_t[0], keys_t[1]
        actions = jnp.asarray(policy(k_pol, obs, state, params), jnp.int32)
        obs2, state2, reward, term, trunc, info = step(k_env, state, actions, params, cfg)
        carry = (obs2, state2, rate_sum + info["rates_mbps"],
                 n_masked + jnp.sum(info["masked"], dtype=jnp.int32))
        out = {"rewards": reward}
        if return_trajectory:
            out.update(obs=obs, actions=actions, next_obs=obs2, truncated=trunc, info=info)
        return carry, out

    init = (obs, state, jnp.zeros((cfg.num_ues,), jnp.float32), jnp.zeros((), jnp.int32))
    # All per-slot keys in one bulk split (cheaper than splitting inside the loop).
    keys = jax.random.split(k_run, (cfg.horizon, 2))
    (_, _, rate_sum, n_masked), out = jax.lax.scan(body, init, keys)
    traj = out if return_trajectory else None
    return rate_sum / cfg.horizon, out["rewards"], n_masked, traj


def rollout(key, policy: Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
            return_trajectory: bool = False) -> RolloutResult:
    """Run ``num_episodes`` independent episodes of ``policy`` in parallel (``vmap`` of ``scan``).

    Episode ``e`` uses ``jax.random.split(key, num_episodes)[e]``, so results do not depend on how
    episodes are batched. Jit it with ``policy``, ``cfg``, ``num_episodes`` and
    ``return_trajectory`` static (:func:`rollout_jit` does).

    Args:
      key: PRNG key.
      policy: a :data:`Policy` (hashable; reuse the same object to avoid recompiling).
      params: :class:`EnvParams` (may itself be vmapped over by the caller).
      cfg: :class:`EnvConfig`.
      num_episodes: ``E``.
      return_trajectory: also return every transition (memory ``O(E T (I + K))``).

    Returns:
      :class:`RolloutResult`.
    """
    keys = jax.random.split(key, num_episodes)
    rates, rewards, masked, traj = jax.vmap(
        lambda k: _episode(k, policy, params, cfg, return_trajectory))(keys)
    return RolloutResult(rates, rewards, masked, traj)


rollout_jit = jax.jit(rollout, static_argnames=("policy", "cfg", "num_episodes",
                                                "return_trajectory"))
"""``jax.jit`` of :func:`rollout` with the policy, config, episode count and flag static."""
