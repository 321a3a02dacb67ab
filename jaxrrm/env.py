"""The multi-AP scheduling environment: pure ``reset`` / ``step``, observations, rollouts.

The Markov game of docs/design.md §2. With ``I = cfg.num_aps``, ``K = cfg.num_ues``,
``N = cfg.num_candidates`` and ``A = cfg.num_actions`` (``N + 1`` with idle):

* ``reset(key, params, cfg) -> (obs, state)``
* ``step(key, state, actions, params, cfg) -> (obs, state, reward, terminated, truncated, info)``

are pure functions of explicit PRNG keys; ``cfg`` is static (pass it with ``static_argnums`` or
close over it), everything else is a pytree, so both ``jit``, ``vmap`` (over keys, states *and*
``EnvParams``) and ``lax.scan`` without recompiling from one call to the next.

The randomness of a step is only the fading innovation; :func:`transition` is the deterministic
rest, given that innovation (it is what the NumPy reference in :mod:`jaxrrm.testing.reference` mirrors).

Order within a step (docs/design.md §1): the observation at slot ``t`` describes the channel and PF
weights of slot ``t``; the actions are executed on that channel; then the PF averages are updated,
the fading advances to ``t + 1`` (and, with mobility, UEs move), and the next observation is made.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import channel, radio, topology
from .config import EnvConfig, EnvParams
from .units import dbm_to_w, thermal_noise_w

_TINY_SINR = 1e-30


@struct.dataclass
class Observation:
    """What the agents see at a slot.

    Attributes:
      agents: ``[I, D]`` float32 (``D = cfg.obs_dim``, ``2N`` by default). Row ``i`` is AP
        ``i``'s observation: for its candidates ``n = 0..N-1`` (its associated UEs sorted by PF
        weight, largest first) the pairs ``(SINR_dB / 10, log10 w)`` at positions ``2n, 2n+1``;
        the SINR is the all-APs-active estimate on this slot's channel, ``w`` the PF weight in
        1/(Mbit/s). Zeros where masked. The observation options of :class:`EnvConfig` append
        features after these ``2N`` (:func:`observe`).
      global_state: ``[cfg.state_dim]`` float32: every AP's own features (``2 N I`` numbers by
        default: the concatenation of all rows of ``agents``), then the clock if ``obs_clock``.
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
    """Noise power :math:`N_0 B F` in W (docs/design.md §1: -97 dBm for the default)."""
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


#: Longest axis :func:`argmax_first` unrolls (the per-AP action counts are far below it).
ARGMAX_UNROLL_MAX = 16


def argmax_first(x):
    """Index of the largest entry along the last axis, the first one on ties: ``jnp.argmax``.

    For the short axes of this project (candidates, per-AP actions: ``n <=``
    :data:`ARGMAX_UNROLL_MAX`) as ``n - 1`` element-wise compares instead of a variadic
    reduction: element-wise code keeps a ``vmap``'s batch axis where it is (``jnp.argmax`` under
    ``vmap`` moves it first, and the episodes-last rollout then transposes every slot) and
    vectorizes over it. Longer axes (the centralized learner's joint actions) use
    ``jnp.argmax``. NaN counts as the largest value, as in ``jnp.argmax``.

    Args:
      x: ``[..., n]`` float or int, ``n >= 1`` (static).

    Returns:
      ``[...]`` int32, the same as ``jnp.argmax(x, axis=-1)``.
    """
    n = x.shape[-1]
    if n > ARGMAX_UNROLL_MAX:
        return jnp.argmax(x, axis=-1).astype(jnp.int32)
    best_v, best_i = x[..., 0], jnp.zeros(x.shape[:-1], jnp.int32)
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    for j in range(1, n):
        v = x[..., j]
        better = v > best_v
        if floating:  # a NaN beats any number; the first NaN is kept
            better = better | (jnp.isnan(v) & ~jnp.isnan(best_v))
        best_v = jnp.where(better, v, best_v)
        best_i = jnp.where(better, jnp.int32(j), best_i)
    return best_i


def other_aps(num_aps: int):
    """The other APs of each AP in the order the shared observations use: ``[I, I - 1]`` int32,
    row ``i`` = ``(i+1, ..., i+I-1) mod I`` (so a network shared across APs sees its neighbours in
    the same relative order)."""
    return jnp.asarray(_other_aps_np(num_aps), jnp.int32)


def _other_aps_np(num_aps: int) -> np.ndarray:
    """:func:`other_aps` as a NumPy constant (static indices for gathers under ``jit``)."""
    i = np.arange(num_aps)
    return (i[:, None] + np.arange(1, num_aps)[None, :]) % num_aps


def _top_k_rounds(x, payloads, k: int):
    """:func:`top_k_first` over axis 1 of ``x`` ``[I, K, *B]``, carrying per-UE payloads.

    Args:
      x: ``[I, K, *B]`` values.  payloads: arrays broadcastable to ``x`` (``[1 or I, K, *B]``).
      k: int (static).

    Returns:
      (values ``[I, k, *B]``, indices ``[I, k, *B]`` int32, each payload at the indices
      ``[I, k, *B]``).
    """
    n = x.shape[1]
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
    vals, idxs, picks = [], [], [[] for _ in payloads]
    for _ in range(k):
        m = jnp.max(x, axis=1, keepdims=True)
        i = jnp.min(jnp.where(x == m, iota, n), axis=1, keepdims=True)
        idx = jnp.minimum(i, n - 1)
        vals.append(m)
        idxs.append(idx)
        for out, p in zip(picks, payloads):
            out.append(jnp.max(jnp.where(iota == idx, p, -jnp.inf), axis=1, keepdims=True))
        x = jnp.where(iota == i, -jnp.inf, x)
    cat = lambda xs: jnp.concatenate(xs, axis=1)  # noqa: E731
    return cat(vals), cat(idxs), [cat(p) for p in picks]


def _top_k_streaming(x, payloads, k: int):
    """:func:`_top_k_rounds` as one pass over the UEs: insertion into a sorted list of ``k``.

    A UE displaces a kept one only if its value is strictly larger, so ties go to the lower index
    as in :func:`top_k_first`. Slots left empty (an AP with fewer than ``k`` UEs) hold ``-inf``
    at index 0, which is also what :func:`top_k_first` returns for them. All in one fused kernel
    (the rounds of :func:`_top_k_rounds` are ``4 k`` kernels over ``[I, K, *B]``); its size grows
    as ``K k``, hence only for small ``K``.
    """
    n = x.shape[1]
    shape = x.shape[:1] + x.shape[2:]
    payloads = [jnp.broadcast_to(p, x.shape) for p in payloads]
    vals = [jnp.full(shape, -jnp.inf, x.dtype)] * k
    idxs = [jnp.zeros(shape, jnp.int32)] * k
    pays = [[p[:, 0]] * k for p in payloads]
    for j in range(n):
        xj = x[:, j]
        above = [xj > v for v in vals]

        def insert(kept, new):
            out = []
            for s in range(k):
                v = jnp.where(above[s], new, kept[s])
                if s > 0:  # shifted down by a larger newcomer above this slot
                    v = jnp.where(above[s - 1], kept[s - 1], v)
                out.append(v)
            return out
        vals, idxs = insert(vals, xj), insert(idxs, j)
        pays = [insert(kept, p[:, j]) for kept, p in zip(pays, payloads)]
    stack = lambda xs: jnp.stack(xs, axis=1)  # noqa: E731
    return stack(vals), stack(idxs), [stack(p) for p in pays]


def _observe(gain, association, avg_rate_mbps, time, params: EnvParams, cfg: EnvConfig):
    """:func:`observe` from the arrays it reads, with optional trailing batch axes ``*B``.

    Args:
      gain: ``[I, K, *B]`` channel gains.  association: ``[K, *B]``.  avg_rate_mbps: ``[K, *B]``.
      time: ``[*B]`` int32.

    Returns:
      (:class:`Observation` with leaves ``[I, D, *B]``, ``[S, *B]``, ``[I, A, *B]``;
      candidates ``[I, N, *B]`` int32).
    """
    num_aps, num_ues, num_cand = cfg.num_aps, cfg.num_ues, cfg.num_candidates
    batch = gain.shape[2:]
    lead = lambda *dims: tuple(dims) + batch  # noqa: E731
    p_w, n_w = tx_power_w(params), noise_w(params)
    est = radio.sinr_all_active(gain, association, p_w, n_w)  # [K, *B]
    weights = radio.pf_weights(avg_rate_mbps, params.min_avg_rate_mbps)  # [K, *B]
    aps = jnp.arange(num_aps, dtype=association.dtype).reshape((num_aps, 1) + (1,) * len(batch))
    own = association[None] == aps  # [I, K, *B]
    x = jnp.where(own, weights[None], -jnp.inf)
    # The candidates' SINR estimates and, with obs_interference, for each other AP in
    # other_aps order the interference-to-noise ratio at them, picked in the top-k pass.
    payloads = [est[None]]
    with_inr = cfg.obs_interference and not cfg.local_obs and num_aps > 1
    if with_inr:
        inr = radio.per_ap(p_w, 1 + len(batch)) * gain / n_w  # [I (tx), K, *B]
        others = _other_aps_np(num_aps)  # [I, I-1]
        payloads += [inr[others[:, m]] for m in range(num_aps - 1)]
    if not batch:
        # One episode (also under a user's vmap, which batches it episode-first): N rounds of
        # reductions and gathers; the insertion pass below is slower in that layout.
        top_w, idx = top_k_first(x, num_cand)  # [I, N]
        picked = [jnp.take_along_axis(jnp.broadcast_to(p, x.shape), idx, axis=1)
                  for p in payloads]
    else:
        top_k = _top_k_streaming if num_ues <= radio.UNROLLED_MAX_UES else _top_k_rounds
        top_w, idx, picked = top_k(x, payloads, num_cand)
    valid = top_w > -jnp.inf  # [I, N, *B]
    candidates = jnp.where(valid, idx, -1).astype(jnp.int32)
    sinr_feat = jnp.log10(jnp.maximum(picked[0], _TINY_SINR))  # dB / 10
    logw_feat = jnp.log10(jnp.where(valid, top_w, 1.0))
    feats = jnp.stack([sinr_feat, logw_feat], axis=2) * valid[:, :, None]  # [I, N, 2, *B]
    own_feats = feats.reshape(lead(num_aps, 2 * num_cand)).astype(jnp.float32)
    mask = valid
    if cfg.allow_idle:
        mask = jnp.concatenate([valid, jnp.ones(lead(num_aps, 1), bool)], axis=1)
    if cfg.local_obs:
        obs = Observation(agents=own_feats, global_state=own_feats.reshape(lead(-1)),
                          action_mask=mask)
        return obs, candidates
    if with_inr:
        inr_c = jnp.stack(picked[1:], axis=2)  # [I, N, I-1, *B]
        inr_feat = jnp.log10(jnp.maximum(inr_c, _TINY_SINR)) * valid[:, :, None]
        own_feats = jnp.concatenate(
            [own_feats, inr_feat.reshape(lead(num_aps, -1)).astype(jnp.float32)], axis=1)
    parts, state_parts = [own_feats], [own_feats.reshape(lead(-1))]
    if cfg.obs_clock:
        clock = (aps[:, 0] == (time % num_aps)[None]).astype(jnp.float32)  # [I, *B]
        parts.append(jnp.broadcast_to(clock[None], lead(num_aps, num_aps)))
        state_parts.append(clock)
    if cfg.obs_share == "global" and num_aps > 1:
        parts.append(own_feats[_other_aps_np(num_aps)].reshape(lead(num_aps, -1)))
    obs = Observation(agents=jnp.concatenate(parts, axis=1),
                      global_state=jnp.concatenate(state_parts, axis=0), action_mask=mask)
    return obs, candidates


def observe(state: EnvState, params: EnvParams, cfg: EnvConfig):
    """Observation of the current slot and the candidate UEs behind each AP's actions.

    Candidates of AP ``i``: its associated UEs with the ``N`` largest PF weights
    :math:`w_j = 1/\\bar C_j(t-1)`, largest first (ties: lower UE index first).

    Row ``i`` of ``agents`` (``cfg.obs_dim`` numbers), in this order:

    1. AP ``i``'s *own* features (``cfg.own_dim``): the ``2N`` local pairs
       :math:`(\\mathrm{SINR}^{est}_j\\,[\\mathrm{dB}]/10,\\ \\log_{10} w_j)` of its candidates and,
       with ``obs_interference``, for each candidate ``n`` and each other AP ``k`` in
       :func:`other_aps` order, :math:`\\log_{10}(P_k g_{kj} / N_0 B)` (the interference-to-noise
       ratio in dB / 10; position ``2N + n (I-1) + m`` for the ``m``-th other AP). From these the
       SINR of candidate ``j`` when only the APs in a set :math:`S` transmit besides its own is
       :math:`\\mathrm{SNR}_j / (1 + \\sum_{k \\in S} \\mathrm{INR}_{kj})` with
       :math:`\\mathrm{SNR}_j = \\mathrm{SINR}^{est}_j (1 + \\sum_{k \\ne i} \\mathrm{INR}_{kj})`.
       Signalling: each UE reports, per slot, the received power of each neighbour AP's reference
       signal (``N (I - 1)`` numbers per AP).
    2. with ``obs_clock``: the one-hot of ``t mod I`` (``I`` numbers; a shared slot clock, no
       signalling beyond slot synchronization).
    3. with ``obs_share="global"``: the own features of every other AP, in :func:`other_aps`
       order (``(I - 1) own_dim`` numbers; each AP broadcasts its own features to the others
       over the backhaul every slot).

    Masked candidates have all their features zero. ``global_state`` is every AP's own
    features, AP 0 first, then the clock (``cfg.state_dim``).

    The state may carry trailing batch axes ``*B`` on every leaf (``[I, K, *B]`` gains, ``[*B]``
    time: the episodes-last layout of :func:`rollout`); the outputs then carry them too.

    Returns:
      (:class:`Observation`, ``[I, N]`` int32 candidates, -1 where an AP has fewer than N UEs).
    """
    return _observe(channel_gain(state), state.association, state.avg_rate_mbps, state.time,
                    params, cfg)


def global_state_index(cfg: EnvConfig) -> np.ndarray:
    """Where each entry of the global state sits in each AP's observation under
    ``obs_share="global"``: ``[I, state_dim]`` int32, so that
    ``obs.agents[i][table[i]] == obs.global_state`` exactly (:func:`observe`'s layouts: row ``i``
    is ``own_i, clock, own_{i+1}, ..., own_{i+I-1}``; the state is ``own_0..own_{I-1}, clock``).

    Raises:
      ValueError: ``cfg.obs_share`` is not ``"global"`` (an AP then lacks the others' features).
    """
    if cfg.obs_share != "global":
        raise ValueError("global_state_index: an AP's observation holds the global state only "
                         f"with EnvConfig.obs_share='global' (got {cfg.obs_share!r})")
    i_n, d, c = cfg.num_aps, cfg.own_dim, cfg.clock_dim
    table = np.zeros((i_n, cfg.state_dim), np.int32)
    for i in range(i_n):
        for k in range(i_n):
            m = (k - i) % i_n
            start = 0 if m == 0 else d + c + (m - 1) * d
            table[i, k * d:(k + 1) * d] = np.arange(start, start + d)
        table[i, i_n * d:] = np.arange(d, d + c)
    return table


def replicated_policy(joint_policy: "Policy", cfg: EnvConfig) -> "Policy":
    """Decentralized execution of a joint policy that reads only the global state and the mask.

    With ``obs_share="global"`` every AP's observation contains the global state (its own
    features, the clock and the features the other APs broadcast; :func:`global_state_index`), and
    the action masks are shared with them (which of a neighbour's candidates exist). So each AP
    ``i`` can rebuild the global state from its *own* observation row, run the same joint policy
    (the same parameters are replicated at every AP) and execute component ``i`` of the joint
    action: the APs agree without exchanging actions, because they evaluate the same function of
    the same inputs. The joint policy is called with ``env_state=None`` (it cannot read the
    simulator's state) and, for a stochastic policy, the same key at every AP (common
    randomness, e.g. a shared seed and the slot clock).

    Returns:
      A :data:`Policy` whose actions equal ``joint_policy``'s on the true global state, bit for
      bit (the rebuilt state is a permutation of the same numbers).
    """
    table = jnp.asarray(global_state_index(cfg))

    def policy(key, obs, state, params):
        def one(i):
            gs = obs.agents[i][table[i]]
            obs_i = Observation(agents=obs.agents, global_state=gs, action_mask=obs.action_mask)
            return jnp.asarray(joint_policy(key, obs_i, None, params), jnp.int32)[i]
        return jnp.stack([one(i) for i in range(cfg.num_aps)])
    return policy


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
    they were built) and checks :meth:`EnvParams.check_shapes` (static shapes: a per-AP field of
    the wrong length is a ``ValueError`` even under ``jit`` / ``vmap``).

    Args:
      key: PRNG key.
      params: :class:`EnvParams`.
      cfg: :class:`EnvConfig` (static).

    Returns:
      (:class:`Observation`, :class:`EnvState`).
    """
    params.validate().check_shapes(cfg)
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
      actions: ``[I, *B]`` int, in ``[0, A)``.
      candidates: ``[I, N, *B]`` int32 from the observation (-1 = no candidate).
      cfg: static configuration.

    Returns:
      (``[I, *B]`` int32 served UE, -1 = silent; ``[I, *B]`` bool, True where the action was
      masked — pointing at a missing candidate or out of range — and so executed as silent).
    """
    actions = jnp.asarray(actions, jnp.int32)
    num_cand = cfg.num_candidates
    in_cand = (actions >= 0) & (actions < num_cand)
    a = jnp.clip(actions, 0, num_cand - 1)
    picked = candidates[:, 0]
    for n in range(1, num_cand):
        picked = jnp.where(a == n, candidates[:, n], picked)
    serving = jnp.where(in_cand, picked, -1)
    idle = (actions == cfg.idle_action) if cfg.allow_idle else jnp.zeros_like(in_cand)
    has_valid = jnp.any(candidates >= 0, axis=1) | cfg.allow_idle
    masked = ~idle & (serving < 0) & has_valid
    return serving.astype(jnp.int32), masked


def _map_batch(fn, num_batch: int):
    """``fn`` of one episode's arrays, mapped over ``num_batch`` trailing batch axes."""
    for _ in range(num_batch):
        fn = jax.vmap(fn, in_axes=-1, out_axes=-1)
    return fn


def _advance(state: EnvState, gain, serving, masked, innovation, params: EnvParams,
             cfg: EnvConfig):
    """The slot after the actions are mapped to served UEs, with optional trailing batch axes.

    Args:
      state: :class:`EnvState` at slot ``t`` (leaves may carry trailing axes ``*B``).
      gain: ``[I, K, *B]``, :func:`channel_gain` of ``state``.
      serving, masked: ``[I, *B]``, :func:`actions_to_serving` of the actions.
      innovation: ``[2, I, K, *B]``, real/imag parts of the fading innovation ``e(t)``.

    Returns:
      (obs, new state, its channel gain ``[I, K, *B]``, reward ``[*B]``, truncated ``[*B]``,
      info), as :func:`step` with the batch axes last.
    """
    num_ues = cfg.num_ues
    num_batch = gain.ndim - 2
    p_w, n_w = tx_power_w(params), noise_w(params)
    sinr = radio.sinr(gain, serving, p_w, n_w)  # [K, *B]
    rates = radio.rate_mbps(sinr, params.bandwidth_hz)
    weights = radio.pf_weights(state.avg_rate_mbps, params.min_avg_rate_mbps)
    avg_new = jnp.maximum(radio.update_average(state.avg_rate_mbps, rates, params.pf_beta),
                          params.min_avg_rate_mbps)
    if cfg.reward == "pf":
        reward = radio.pf_reward(rates, weights, params.pf_lambda,
                                 served=radio.served_by(serving, num_ues))
    else:
        reward = radio.log_utility_reward(avg_new, state.avg_rate_mbps, ue_axis=0)

    rho = channel.fading_correlation(params.ue_speed_mps, params.carrier_hz, params.slot_s)
    fading = channel.advance_fading(state.fading, innovation, rho)
    time = state.time + 1
    new = state.replace(time=time, fading=fading, avg_rate_mbps=avg_new)
    if cfg.mobility:
        pos, heading = _map_batch(
            lambda ue, head: topology.move_ues(ue, head, params.ue_speed_mps * params.slot_s,
                                               params.area_side_m), num_batch)(
            state.ue_pos_m, state.heading_rad)
        large_gain = _map_batch(
            lambda ap, ue, los, sh: topology.large_scale_gain(ap, ue, los, sh, params, cfg),
            num_batch)(state.ap_pos_m, pos, state.los, state.shadowing_db)
        refresh = (time % cfg.reassociation_slots) == 0
        association = jnp.where(refresh[None], _map_batch(topology.associate,
                                                          num_batch)(large_gain),
                                state.association)
        new = new.replace(ue_pos_m=pos, heading_rad=heading, large_gain=large_gain,
                          association=association)
    gain_new = channel_gain(new)
    obs, candidates = _observe(gain_new, new.association, avg_new, time, params, cfg)
    new = new.replace(candidates=candidates)
    truncated = time >= cfg.horizon
    info = {"rates_mbps": rates, "serving": serving, "masked": masked, "sinr": sinr,
            "pf_weights": weights}
    return obs, new, gain_new, reward, truncated, info


def transition(state: EnvState, actions, innovation, params: EnvParams, cfg: EnvConfig):
    """Deterministic part of :func:`step`, given the fading innovation ``e(t)``.

    Args:
      state: :class:`EnvState` at slot ``t``.
      actions: ``[I]`` int32 per-AP actions.
      innovation: ``[2, I, K]`` float32, real/imag parts of ``e(t) ~ CN(0, 1)``.
      params, cfg: environment parameters and configuration.

    Every leaf of ``state`` (and ``actions``, ``innovation``) may carry the same trailing batch
    axes ``*B``, which the outputs then carry (the episodes-last layout of :func:`rollout`).

    Returns:
      Same as :func:`step`.
    """
    serving, masked = actions_to_serving(actions, state.candidates, cfg)
    obs, new, _, reward, truncated, info = _advance(state, channel_gain(state), serving, masked,
                                                    innovation, params, cfg)
    return obs, new, reward, jnp.zeros_like(truncated), truncated, info


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


def episode_key_schedule(keys, horizon: int):
    """The key schedule of every rollout: for episode keys ``[E]``, ``(reset keys [E], policy
    keys [E, T], step keys [E, T])``. Episode ``e``: ``(k_reset, k_run) = split(keys[e])``;
    slot ``t`` uses ``split(k_run, (T, 2))[t]`` as (policy key, step key); all per-slot keys in
    one bulk split (cheaper than splitting inside the scan)."""
    split = jax.vmap(jax.random.split)(keys)                                      # [E, 2]
    slots = jax.vmap(lambda k: jax.random.split(k, (horizon, 2)))(split[:, 1])   # [E, T, 2]
    return split[:, 0], slots[:, :, 0], slots[:, :, 1]


def _episode(key, policy: Policy, params: EnvParams, cfg: EnvConfig, return_trajectory: bool):
    k_reset, k_pol, k_step = jax.tree.map(lambda x: x[0],
                                          episode_key_schedule(key[None], cfg.horizon))
    obs, state = reset(k_reset, params, cfg)

    def body(carry, keys_t):
        obs, state, rate_sum, n_masked = carry
        k_pol, k_env = keys_t
        actions = jnp.asarray(policy(k_pol, obs, state, params), jnp.int32)
        obs2, state2, reward, term, trunc, info = step(k_env, state, actions, params, cfg)
        carry = (obs2, state2, rate_sum + info["rates_mbps"],
                 n_masked + jnp.sum(info["masked"], dtype=jnp.int32))
        out = {"rewards": reward}
        if return_trajectory:
            out.update(obs=obs, actions=actions, next_obs=obs2, truncated=trunc, info=info)
        return carry, out

    init = (obs, state, jnp.zeros((cfg.num_ues,), jnp.float32), jnp.zeros((), jnp.int32))
    (_, _, rate_sum, n_masked), out = jax.lax.scan(body, init, (k_pol, k_step))
    traj = out if return_trajectory else None
    return rate_sum / cfg.horizon, out["rewards"], n_masked, traj


def _rollout_vmap(keys, policy: Policy, params: EnvParams, cfg: EnvConfig,
                  return_trajectory: bool):
    """Episodes ``keys`` [B] with ``vmap`` of the one-episode scan (episode axis first)."""
    return jax.vmap(lambda k: _episode(k, policy, params, cfg, return_trajectory))(keys)


# --------------------------------------------------------------------------------------------
# Episodes-last layout: the same step with the episode axis last
# --------------------------------------------------------------------------------------------
#
# ``vmap`` puts the episode axis first: a batch of states is ``[E, I, K]``, and XLA's CPU loops
# then run over rows of ``K`` (24 by default) numbers, with a broadcast and a short, poorly
# vectorized inner loop in every fused kernel. With the episode axis *last* (``[I, K, E]``) every
# kernel is a long contiguous, vectorized loop over episodes, and broadcasts over APs or UEs cost
# nothing. The physics (:func:`_observe`, :func:`_advance`, :mod:`jaxrrm.radio`) is written once,
# for optional trailing batch axes; this layout calls it with the episode axis last, and differs
# from the ``vmap`` of :func:`step` only in how the scan is driven:
#
# * the fading innovation of all episodes is one :func:`jaxrrm.channel.hash_normal_from_words`
#   call on the episodes' seed words (the same numbers as :func:`step`'s per-key draw);
# * the gain of the next slot is carried instead of recomputed, and the actions of slot ``t + 1``
#   are chosen at the end of slot ``t`` (see :func:`_scan_episodes_last`).
#
# ``tests/test_benchmarks_env.py`` checks the layout against ``vmap(step)`` and that the episode
# block does not change a bit.


def _scan_episodes_last(obs, state, k_pol, seed0, seed1, policy: Policy, params: EnvParams,
                        cfg: EnvConfig, return_trajectory: bool):
    """The horizon of a block of ``B`` episodes from their first observation and state (episodes
    last) and per-slot keys ``k_pol`` and seed words ``seed0``, ``seed1`` (``[T, B]`` each).

    Returns:
      (rate_sum ``[K, B]``, masked count ``[B]``, per-slot outputs ``[T, ..., B]``).
    """
    policy_el = jax.vmap(policy, in_axes=(0, -1, -1, None), out_axes=-1)

    def act(k_p, obs, state):
        actions = jnp.asarray(policy_el(k_p, obs, state, params), jnp.int32)  # [I, B]
        return (actions,) + actions_to_serving(actions, state.candidates, cfg)

    # The actions of slot t + 1 are chosen at the end of slot t and carried: a loop-carried
    # value is materialized once, whereas XLA would recompute the serving decision (and the
    # transpose of the policy's episode-first output) inside every kernel that broadcasts it.
    # The policy keys are those of the slot acted in; the last slot's extra choice is unused.
    k_next = jnp.concatenate([k_pol[1:], k_pol[-1:]])

    def body(carry, xs):
        obs, state, gain, (actions, serving, masked), rate_sum, n_masked = carry
        k_p, s0, s1 = xs
        innovation = channel.hash_normal_from_words(s0, s1, (2, cfg.num_aps, cfg.num_ues),
                                                    std=math.sqrt(0.5))
        obs2, state2, gain2, reward, trunc, info = _advance(state, gain, serving, masked,
                                                            innovation, params, cfg)
        chosen2 = act(k_p, obs2, state2)
        carry = (obs2, state2, gain2, chosen2, rate_sum + info["rates_mbps"],
                 n_masked + jnp.sum(info["masked"], axis=0, dtype=jnp.int32))
        out = {"rewards": reward}
        if return_trajectory:
            out.update(obs=obs, actions=actions, next_obs=obs2, truncated=trunc, info=info)
        return carry, out

    num_ep = k_pol.shape[-1]
    init = (obs, state, channel_gain(state), act(k_pol[0], obs, state),
            jnp.zeros((cfg.num_ues, num_ep), jnp.float32), jnp.zeros((num_ep,), jnp.int32))
    (_, _, _, _, rate_sum, n_masked), out = jax.lax.scan(body, init, (k_next, seed0, seed1))
    return rate_sum, n_masked, out


def _in_blocks(run, tree, block: int):
    """``run`` (leaves ``[B, ...]`` -> outputs ``[B, ...]``) over ``tree``'s leading axis in
    blocks of ``block``, one after the other (``lax.map``), the last block possibly smaller."""
    num = jax.tree.leaves(tree)[0].shape[0]
    num_full = num // block
    parts = []
    if num_full == 1:
        parts.append(run(jax.tree.map(lambda x: x[:block], tree)))
    elif num_full > 1:
        head = jax.tree.map(
            lambda x: x[: num_full * block].reshape((num_full, block) + x.shape[1:]), tree)
        blocked = jax.lax.map(run, head)
        parts.append(jax.tree.map(lambda x: x.reshape((num_full * block,) + x.shape[2:]), blocked))
    if num_full * block < num:
        parts.append(run(jax.tree.map(lambda x: x[num_full * block:], tree)))
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _rollout_episodes_last(keys, policy: Policy, params: EnvParams, cfg: EnvConfig,
                           return_trajectory: bool, block: int):
    """Episodes ``keys`` [E] in the episodes-last layout, in blocks of ``block`` episodes (each
    block runs the whole horizon, one block after the other); the outputs of
    :func:`_rollout_vmap`. All episodes are reset together (with ``vmap``: a one-off cost), so
    that the blocks only change the shapes of the scanned step, which is written not to depend
    on them: the block changes no bit of the result."""
    k_reset, k_pol, k_step = episode_key_schedule(keys, cfg.horizon)
    obs, state = jax.vmap(lambda k: reset(k, params, cfg))(k_reset)
    seed0, seed1 = channel.seed_words(k_step)  # [E, T] each
    # Everything per episode, episode axis first: (obs, state, policy keys, seed words).
    per_episode = (obs, state, k_pol, seed0, seed1)

    def run(tree):  # [B, ...] leaves -> outputs, episode axis first
        ob, st, kp, s0, s1 = jax.tree.map(lambda x: jnp.moveaxis(x, 0, -1), tree)
        rate_sum, n_masked, out = _scan_episodes_last(ob, st, kp, s0, s1, policy, params, cfg,
                                                      return_trajectory)
        out = jax.tree.map(lambda x: jnp.moveaxis(x, -1, 0), out)  # [T, ..., B] -> [B, T, ...]
        return rate_sum.T, n_masked, out

    rate_sum, n_masked, out = _in_blocks(run, per_episode, block)
    traj = out if return_trajectory else None
    return rate_sum / cfg.horizon, out["rewards"], n_masked, traj


#: Layouts of :func:`rollout`'s batch of episodes.
LAYOUTS = ("vmap", "episodes_last", "auto")
#: ``layout="auto"`` uses the episodes-last layout from this many episodes on ...
EPISODES_LAST_MIN_EPISODES = 32
#: ... in networks of at most this many UEs (with more, ``vmap``'s rows of ``K`` UEs are long
#: enough to vectorize, and the two layouts run at the same speed).
EPISODES_LAST_MAX_UES = radio.UNROLLED_MAX_UES


def resolve_layout(cfg: EnvConfig, num_episodes: int, layout: str = "auto",
                   episode_block: Optional[int] = None):
    """The layout and the episode block :func:`rollout` uses: ``(layout, block)``.

    ``"auto"`` is ``"episodes_last"`` from :data:`EPISODES_LAST_MIN_EPISODES` episodes on in
    networks of at most :data:`EPISODES_LAST_MAX_UES` UEs, else ``"vmap"`` (the faster of the
    two there, measured in ``benchmarks/RESULTS.md``). The default block is all episodes.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: allowed are {LAYOUTS}")
    if episode_block is not None and (isinstance(episode_block, bool)
                                      or not isinstance(episode_block, int) or episode_block < 1):
        raise ValueError(f"episode_block={episode_block!r}: allowed is None or an int >= 1")
    if layout == "auto":
        small = cfg.num_ues <= EPISODES_LAST_MAX_UES
        layout = ("episodes_last" if small and num_episodes >= EPISODES_LAST_MIN_EPISODES
                  else "vmap")
    block = num_episodes if episode_block is None else min(episode_block, num_episodes)
    return layout, block


def rollout_episodes(keys, policy: Policy, params: EnvParams, cfg: EnvConfig,
                     return_trajectory: bool = False, episode_block: Optional[int] = None,
                     layout: str = "auto") -> RolloutResult:
    """Run the episodes of the given keys in parallel (batched ``scan``): the one rollout.

    Episode ``e`` draws everything from ``keys[e]``: its reset from the first half of
    ``jax.random.split(keys[e])``, its slots' policy and fading keys from the second. Every
    rollout of the project (evaluation, dataset collection, training validation, the sharded
    rollouts of :mod:`jaxrrm.distributed`, the benchmarks) is this function.

    Args:
      keys: ``[E]`` PRNG keys, one per episode.
      policy, params, cfg, return_trajectory, episode_block, layout: as :func:`rollout`.

    Returns:
      :class:`RolloutResult`.
    """
    num_episodes = keys.shape[0]
    layout, block = resolve_layout(cfg, num_episodes, layout, episode_block)
    if layout == "episodes_last":
        return RolloutResult(*_rollout_episodes_last(keys, policy, params, cfg,
                                                     return_trajectory, block))
    run = lambda k: _rollout_vmap(k, policy, params, cfg, return_trajectory)  # noqa: E731
    return RolloutResult(*_in_blocks(run, keys, block))


def rollout(key, policy: Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
            return_trajectory: bool = False, episode_block: Optional[int] = None,
            layout: str = "auto") -> RolloutResult:
    """Run ``num_episodes`` independent episodes of ``policy`` in parallel (batched ``scan``).

    :func:`rollout_episodes` of ``jax.random.split(key, num_episodes)``: episode ``e`` uses the
    ``e``-th key, so its draws do not depend on how episodes are batched. Its numbers do only up
    to float32 rounding: XLA's CPU code for a fused kernel (where it fuses a multiply-add, how it
    vectorizes) depends on the array shapes, so that a different number of episodes, block or
    layout can change the last bits — and, at a near tie, a policy's choice. The episodes-last
    layout is written so that its block changes no bit. Jit it with ``cfg``, ``num_episodes``,
    ``return_trajectory``, ``episode_block`` and ``layout`` static and the policy as a pytree
    (:func:`rollout_jit` does).

    Args:
      key: PRNG key.
      policy: a :data:`Policy`: a plain function, or a ``jax.tree_util.Partial`` of an
        ``apply_fn`` and its parameters (:func:`policy_with_params`), which :func:`rollout_jit`
        traces as an argument, so that one compilation serves every parameter set. It is called
        per episode, under ``vmap``.
      params: :class:`EnvParams` (may itself be vmapped over by the caller).
      cfg: :class:`EnvConfig`.
      num_episodes: ``E``.
      return_trajectory: also return every transition (memory ``O(E T (I + K))``).
      episode_block: run the episodes in blocks of this many, one block after the other, each
        for the whole horizon (``None``: all at once); the last block may be smaller. Bounds
        the memory of a step (and of a trajectory's per-step outputs before they are stacked).
      layout: ``"auto"`` (the default: the faster layout for this size, :func:`resolve_layout`),
        ``"vmap"`` (``vmap`` of the one-episode scan of :func:`step`, episode axis first: what a
        user's own ``jax.vmap`` does) or ``"episodes_last"`` (the same physics with the episode
        axis last: on CPU faster than ``"vmap"`` from a few dozen episodes on in networks of up
        to :data:`EPISODES_LAST_MAX_UES` UEs, see ``benchmarks/RESULTS.md``).

    Returns:
      :class:`RolloutResult`.
    """
    return rollout_episodes(jax.random.split(key, num_episodes), policy, params, cfg,
                            return_trajectory, episode_block, layout)


def policy_with_params(apply_fn: Callable, policy_params) -> Policy:
    """A :data:`Policy` of an ``apply_fn(policy_params, key, obs, state, env_params)`` and its
    parameters, as a pytree (``jax.tree_util.Partial``): passed to a jitted rollout or
    evaluation (:func:`rollout_jit`, :func:`jaxrrm.evaluate.rollout_seeds`) the parameters are
    traced, so one compilation serves every parameter set of the same ``apply_fn`` (which must be
    the same hashable object from call to call: a module-level function, or a frozen dataclass)."""
    return jax.tree_util.Partial(apply_fn, policy_params)


def as_pytree_policy(policy: Policy) -> Policy:
    """``policy`` as a pytree for ``jit`` arguments: a ``Partial`` as it is, a plain function as
    a ``Partial`` without arguments (no leaves; the function is part of the tree structure, so
    it is static, compared by identity)."""
    if isinstance(policy, jax.tree_util.Partial):
        return policy
    return jax.tree_util.Partial(policy)


_rollout_jit = jax.jit(rollout, static_argnames=("cfg", "num_episodes", "return_trajectory",
                                                 "episode_block", "layout"))


def rollout_jit(key, policy: Policy, params: EnvParams, cfg: EnvConfig, num_episodes: int,
                return_trajectory: bool = False, episode_block: Optional[int] = None,
                layout: str = "auto") -> RolloutResult:
    """``jax.jit`` of :func:`rollout`: the config, episode count, flag, episode block and layout
    static, the policy a pytree argument (:func:`as_pytree_policy`): a plain policy function is
    compiled once per function object, a :func:`policy_with_params` once per ``apply_fn``."""
    return _rollout_jit(key, as_pytree_policy(policy), params, cfg, num_episodes,
                        return_trajectory=return_trajectory, episode_block=episode_block,
                        layout=layout)


rollout_jit.jitted = _rollout_jit  # the jitted function itself (its compilation cache)
