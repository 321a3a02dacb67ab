"""Static configuration (:class:`EnvConfig`) and physical parameters (:class:`EnvParams`).

The split follows gymnax: everything that fixes an array *shape* or a *code path* is static and
lives in the frozen, hashable :class:`EnvConfig` (pass it as a static argument to ``jit``);
everything physical is a leaf of the :class:`EnvParams` pytree, so a sweep over, say, the PF
exponent or the transmit power is one ``vmap`` over a batched ``EnvParams``.

Both validate themselves when they are built and raise :class:`ValueError` naming the field and the
allowed range. ``EnvParams`` checks every leaf that holds a concrete value (Python number, NumPy or
JAX array); leaves that are tracers (inside ``jit``/``vmap``) are not checked there, since their
values are unknown: build parameters outside of traced code, where they are checked.

Which defaults are assumptions: the paper (Eldeeb & Alves, arXiv 2501.12991) does not publish its
simulation constants; the values here follow docs/design.md §1 (multi-AP scheduling setups in the
tradition of Naderializadeh et al., arXiv 2002.06215) and 3GPP TR 38.901 for the channel.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Tuple

import jax
import numpy as np
from flax import struct

PATHLOSS_MODELS = ("umi", "inh_office", "log_distance", "free_space")
REWARDS = ("pf", "log_utility")
AP_LAYOUTS = ("grid", "random")
OBS_SHARES = ("local", "global")

#: Largest per-agent action count (candidates + idle) the int32 joint-action encoding of the
#: centralized learner and the exhaustive oracle can hold for the configured number of APs.
MAX_JOINT_ACTIONS = 2**31 - 1

#: Largest seed an integer seed may be (``jax.random.key`` takes the seed modulo 2**32, so larger
#: ones would silently alias smaller ones; the project derives further seeds by adding offsets
#: below 2**31 to a seed, which stay below 2**32 from here).
MAX_SEED = 2**31 - 1

#: What a seed may be, as :func:`check_seed` (and the command lines' seed flags) say it.
SEED_RANGE = f"an integer in [0, {MAX_SEED}]"


def check_seed(seed, field: str = "seed") -> int:
    """``seed`` as an int if it is an integer in ``[0, MAX_SEED]`` (:data:`SEED_RANGE`; a bool
    is not an integer here), else ``ValueError`` naming ``field``: the one rule for seeds."""
    require(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
             and 0 <= seed <= MAX_SEED, field, SEED_RANGE, seed)
    return int(seed)


def require(cond: bool, field: str, allowed: str, value) -> None:
    """Raise ``ValueError`` naming ``field``, its value and the allowed range unless ``cond``
    (the one validation message of every config in the library)."""
    if not cond:
        raise ValueError(f"{field}={value!r} is invalid: allowed range is {allowed}")


def is_int(v) -> bool:
    """A Python int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    """A Python int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)




#: Upper bounds of EnvConfig's integer fields: far beyond any scenario of this model, low enough
#: that shapes, int32 slot counters and the UE drop's ``tries x UEs x APs`` candidates fit.
_CONFIG_INT_MAX = {"num_aps": 1024, "num_ues": 100_000, "num_candidates": 1024,
                   "horizon": 10_000_000, "reassociation_slots": 10_000_000,
                   "min_drop_tries": 4096}


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static settings of the environment: shapes and code paths (frozen, hashable).

    Attributes:
      num_aps: number of access points (agents) ``I`` >= 1.
      num_ues: number of user equipments ``K`` >= 1.
      num_candidates: candidates ``N`` per AP in the observation (top-``N`` by PF weight), >= 1.
      horizon: episode length ``T`` in slots, >= 1.
      allow_idle: if True, action ``N`` means "stay silent" (``N + 1`` actions per AP).
      pathloss_model: one of ``"umi"`` (3GPP 38.901 UMi-Street Canyon), ``"inh_office"``
        (38.901 InH-Office mixed), ``"log_distance"``, ``"free_space"``.
      reward: ``"pf"`` (the paper's PF-weighted rate, docs/design.md §1) or ``"log_utility"``.
      ap_layout: ``"grid"`` (centres of a near-square grid over the area; default 2x2 for 4 APs)
        or ``"random"`` (uniform over the area, new each episode). Ignored if ``ap_positions_m``
        is given.
      ap_positions_m: optional fixed AP positions ``((x, y), ...)`` in metres, one per AP.
      mobility: if True, UEs move at ``EnvParams.ue_speed_mps`` in a random direction fixed per
        episode, reflecting at the borders of the area.
      reassociation_slots: with mobility, association is refreshed every this many slots (>= 1).
      min_drop_tries: candidate positions drawn per UE for the minimum-distance drop (>= 1).

    Observation options (information for coordination; all off by default, which is the paper's
    local observation of docs/design.md §2 and the main job's reference). Each AP's *own* features
    are its ``2N`` local features, followed with ``obs_interference`` by ``N (I - 1)`` more; see
    :func:`jaxrrm.env.observe` for the exact layout and what an AP has to signal per slot:

      obs_interference: per candidate, the interference-to-noise ratio from each other AP,
        ``log10(P g[k, j] / N0 B)`` (dB / 10) for ``k = i+1, ..., i+I-1 (mod I)``: the
        neighbour-cell received powers a UE measures on reference signals (an RSRP/CSI report).
        With them the SINR of a candidate under *any* set of silent APs follows from the
        observation, which the all-active SINR estimate alone does not give.
      obs_clock: a synchronized slot clock, the one-hot of ``t mod I`` (``I`` numbers; APs of a
        real network share slot timing; TDM's schedule is a function of it).
      obs_share: ``"local"`` (each AP sees its own features) or ``"global"``: each AP also sees
        every other AP's own features, in the order ``i+1, ..., i+I-1 (mod I)`` (exchanged over
        the backhaul each slot, as in multi-AP scheduling with observation exchange, together
        with which of their candidates exist, i.e. their action masks). Every AP's observation
        then holds the whole global state, so a joint policy can be executed at every AP
        (:func:`jaxrrm.env.replicated_policy`).
    """

    num_aps: int = 4
    num_ues: int = 24
    num_candidates: int = 3
    horizon: int = 200
    allow_idle: bool = True
    pathloss_model: str = "umi"
    reward: str = "pf"
    ap_layout: str = "grid"
    ap_positions_m: Optional[Tuple[Tuple[float, float], ...]] = None
    mobility: bool = False
    reassociation_slots: int = 50
    min_drop_tries: int = 16
    obs_interference: bool = False
    obs_clock: bool = False
    obs_share: str = "local"

    def __post_init__(self):
        for name, high in _CONFIG_INT_MAX.items():
            v = getattr(self, name)
            require(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                     and 1 <= v <= high, name, f"an integer in [1, {high:,}]", v)
        drop = self.min_drop_tries * self.num_ues * self.num_aps
        require(drop <= 2**28, "min_drop_tries", f"min_drop_tries x num_ues x num_aps <= 2**28 "
                 f"(the UE drop's candidate distances; here {drop:,})", self.min_drop_tries)
        require(self.num_candidates <= self.num_ues, "num_candidates",
                 f"1 <= num_candidates <= num_ues ({self.num_ues})", self.num_candidates)
        require(self.num_actions ** self.num_aps <= MAX_JOINT_ACTIONS, "num_candidates",
                 f"(num_candidates + allow_idle) ** num_aps <= {MAX_JOINT_ACTIONS} "
                 "(int32 joint-action encoding)", self.num_candidates)
        require(self.pathloss_model in PATHLOSS_MODELS, "pathloss_model",
                 f"one of {PATHLOSS_MODELS}", self.pathloss_model)
        require(self.reward in REWARDS, "reward", f"one of {REWARDS}", self.reward)
        require(self.ap_layout in AP_LAYOUTS, "ap_layout", f"one of {AP_LAYOUTS}", self.ap_layout)
        require(isinstance(self.allow_idle, bool), "allow_idle", "True or False", self.allow_idle)
        require(isinstance(self.mobility, bool), "mobility", "True or False", self.mobility)
        for name in ("obs_interference", "obs_clock"):
            require(isinstance(getattr(self, name), bool), name, "True or False",
                     getattr(self, name))
        require(self.obs_share in OBS_SHARES, "obs_share", f"one of {OBS_SHARES}",
                 self.obs_share)
        if self.ap_positions_m is not None:
            require(all(isinstance(c, (int, float, np.integer, np.floating))
                         and not isinstance(c, (bool, np.bool_))
                         for p in self.ap_positions_m for c in p), "ap_positions_m",
                     "pairs of real numbers (x, y) in metres", self.ap_positions_m)
            pos = tuple(tuple(float(c) for c in p) for p in self.ap_positions_m)
            require(len(pos) == self.num_aps and all(len(p) == 2 for p in pos),
                     "ap_positions_m", f"{self.num_aps} pairs (x, y) in metres", self.ap_positions_m)
            require(all(math.isfinite(c) for p in pos for c in p), "ap_positions_m",
                     "finite coordinates", self.ap_positions_m)
            object.__setattr__(self, "ap_positions_m", pos)

    @property
    def num_actions(self) -> int:
        """Actions per AP: ``N + 1`` with idle allowed, else ``N``."""
        return self.num_candidates + int(self.allow_idle)

    @property
    def idle_action(self) -> int:
        """The action index that means "stay silent" (``N``); only valid when ``allow_idle``."""
        return self.num_candidates

    @property
    def local_obs(self) -> bool:
        """True for the paper's local observation (every observation option off)."""
        return not (self.obs_interference or self.obs_clock) and self.obs_share == "local"

    @property
    def own_dim(self) -> int:
        """Length of one AP's own features: ``2 N``, plus ``N (I - 1)`` with ``obs_interference``."""
        n, i = self.num_candidates, self.num_aps
        return 2 * n + (n * (i - 1) if self.obs_interference else 0)

    @property
    def clock_dim(self) -> int:
        """Length of the slot clock feature: ``I`` with ``obs_clock``, else 0."""
        return self.num_aps if self.obs_clock else 0

    @property
    def obs_dim(self) -> int:
        """Length of one agent's observation: ``own_dim + clock_dim`` (+ ``(I - 1) own_dim`` with
        ``obs_share="global"``); ``2 N`` by default."""
        share = (self.num_aps - 1) * self.own_dim if self.obs_share == "global" else 0
        return self.own_dim + self.clock_dim + share

    @property
    def state_dim(self) -> int:
        """Length of the global state: every AP's own features and the clock,
        ``I own_dim + clock_dim`` (``2 N I`` by default)."""
        return self.num_aps * self.own_dim + self.clock_dim

    @property
    def num_joint_actions(self) -> int:
        """Size of the joint action space, ``num_actions ** num_aps``."""
        return self.num_actions ** self.num_aps

    def replace(self, **kw) -> "EnvConfig":
        return dataclasses.replace(self, **kw)


# Per-model shadowing standard deviations (dB) of 3GPP TR 38.901 Table 7.4.1-1.
_SHADOWING_DEFAULTS = {
    "umi": (4.0, 7.82),
    "inh_office": (3.0, 8.03),
    "log_distance": (8.0, 8.0),
    "free_space": (0.0, 0.0),
}


def _concrete(v, name: str):
    """A float64 NumPy view of ``v`` if it holds a known value; None for tracers, abstract
    values and the non-array leaves JAX's tree utilities put in a pytree when they rebuild one
    (``None``, shapes, ``object()`` sentinels). A value that is not a real number or an array of
    real numbers -- a string, a bool, a complex, a list of those, an int too large for a float --
    is a ``ValueError`` naming ``name``."""
    def bad(what):
        return ValueError(f"EnvParams.{name}={v!r:.80} is invalid: a real number or an array of "
                          f"real numbers is required, got {what}")

    if isinstance(v, (str, bytes, bool, complex, np.bool_)):
        raise bad(type(v).__name__)
    if isinstance(v, (list, tuple)):
        try:
            arr = np.asarray(v)
        except Exception:
            raise bad("a ragged sequence") from None
        if arr.dtype.kind not in "iuf":
            raise bad(f"a sequence of dtype {arr.dtype}")
        return arr.astype(np.float64)
    if isinstance(v, numbers.Number) and not isinstance(v, (float, np.generic)):
        try:                               # Python ints, Decimal, Fraction
            return np.asarray(float(v), dtype=np.float64)
        except (OverflowError, ValueError, TypeError):
            raise bad("a number outside the float range") from None
    if not isinstance(v, (np.ndarray, np.generic, jax.Array, float)):
        return None
    if np.dtype(v.dtype if hasattr(v, "dtype") else type(v)).kind not in "iuf":
        raise bad(f"dtype {np.dtype(v.dtype)}")
    try:
        return np.asarray(v, dtype=np.float64)
    except Exception:  # a tracer (no value yet) or a non-addressable array
        return None


# field -> (predicate on a float64 array, description of the allowed range). Bounds beyond the
# physical meaning of a field keep every quantity of the model finite in float32: a rollout of
# every baseline over the corners of these ranges is checked finite (tests/test_faults_inputs.py);
# 400 dBm of transmit power (1e37 W) or -500 dBm/Hz of noise would overflow it.
_PARAM_RANGES = {
    "area_side_m": (lambda x: (x > 0) & (x <= 1e6), "(0, 1e6] m"),
    "ap_height_m": (lambda x: (x > 0) & (x <= 1e4), "(0, 1e4] m"),
    "ue_height_m": (lambda x: (x > 0) & (x <= 1e4), "(0, 1e4] m"),
    "min_distance_m": (lambda x: (x > 0) & (x <= 1e6), "(0, 1e6] m"),
    "carrier_hz": (lambda x: (x >= 1e6) & (x <= 1e12), "[1e6, 1e12] Hz"),
    "bandwidth_hz": (lambda x: (x >= 1.0) & (x <= 1e12), "[1, 1e12] Hz"),
    "tx_power_dbm": (lambda x: (x >= -100) & (x <= 100), "[-100, 100] dBm"),
    "noise_psd_dbm_hz": (lambda x: (x >= -250) & (x <= -100), "[-250, -100] dBm/Hz"),
    "noise_figure_db": (lambda x: (x >= 0) & (x <= 50), "[0, 50] dB"),
    "shadowing_std_los_db": (lambda x: (x >= 0) & (x <= 30), "[0, 30] dB"),
    "shadowing_std_nlos_db": (lambda x: (x >= 0) & (x <= 30), "[0, 30] dB"),
    "pathloss_exponent": (lambda x: (x > 0) & (x <= 10), "(0, 10]"),
    "ue_speed_mps": (lambda x: (x >= 0) & (x <= 1e4), "[0, 1e4] m/s"),
    "slot_s": (lambda x: (x >= 1e-9) & (x <= 1e3), "[1e-9, 1e3] s"),
    "pf_beta": (lambda x: (x > 0) & (x <= 1), "(0, 1]"),
    "pf_lambda": (lambda x: (x >= 0) & (x <= 1), "[0, 1]"),
    "score_mu": (lambda x: (x >= 0) & (x <= 1e6), "[0, 1e6]"),
    "min_avg_rate_mbps": (lambda x: (x >= 1e-30) & (x <= 1e6), "[1e-30, 1e6] Mbit/s"),
}

#: Fields of :class:`EnvParams` that may hold one value per AP (``[I]``); all others are scalars
#: (per parameter set: a batch for ``vmap`` adds leading axes).
PER_AP_FIELDS = ("tx_power_dbm",)

#: A UE drop may fall back to an approximate position (see :func:`jaxrrm.topology.drop_ues`)
#: with at most this probability per UE; geometries where it would be likelier are refused.
MAX_DROP_FALLBACK = 1e-6


@struct.dataclass
class EnvParams:
    """Physical parameters of the environment (a pytree: every field may be batched for ``vmap``).

    Attributes (defaults are docs/design.md §1's; units in the names):
      area_side_m: side of the square deployment area, m (500).
      ap_height_m, ue_height_m: antenna heights, m (10, 1.5).
      min_distance_m: minimum 2-D AP-UE distance of a UE drop, m (10; 38.901's UMi validity bound).
      carrier_hz: carrier frequency, Hz (3.5e9).
      bandwidth_hz: system bandwidth, Hz (10e6); one UE per AP per slot.
      tx_power_dbm: AP transmit power, dBm (30).
      noise_psd_dbm_hz: thermal noise density, dBm/Hz (-174).
      noise_figure_db: UE receiver noise figure, dB (7).
      shadowing_std_los_db, shadowing_std_nlos_db: log-normal shadowing std per LOS state, dB
        (UMi 4 / 7.82; see :meth:`create` for the other models' defaults).
      pathloss_exponent: exponent of the ``log_distance`` model (3.5, an assumption).
      ue_speed_mps: UE speed, m/s (1): sets the Doppler of the fading and, with mobility, motion.
      slot_s: slot duration, s (0.01).
      pf_beta: PF averaging factor beta in (0, 1] (0.05).
      pf_lambda: PF exponent lambda in [0, 1] of the reward (0.8).
      score_mu: weight mu of the 5th-percentile rate in the score (24 = default K; :meth:`create`
        sets it to ``cfg.num_ues``).
      min_avg_rate_mbps: floor on the PF average in the weight 1/avg, Mbit/s (1e-6); keeps weights
        finite in very long episodes of a starved UE (an implementation guard, not in the paper).
    """

    area_side_m: float = 500.0
    ap_height_m: float = 10.0
    ue_height_m: float = 1.5
    min_distance_m: float = 10.0
    carrier_hz: float = 3.5e9
    bandwidth_hz: float = 10e6
    tx_power_dbm: float = 30.0
    noise_psd_dbm_hz: float = -174.0
    noise_figure_db: float = 7.0
    shadowing_std_los_db: float = 4.0
    shadowing_std_nlos_db: float = 7.82
    pathloss_exponent: float = 3.5
    ue_speed_mps: float = 1.0
    slot_s: float = 0.01
    pf_beta: float = 0.05
    pf_lambda: float = 0.8
    score_mu: float = 24.0
    min_avg_rate_mbps: float = 1e-6

    def __post_init__(self):
        self.validate()

    def validate(self) -> "EnvParams":
        """Check every concrete leaf against its allowed range; raise ``ValueError`` naming it.

        Called when an ``EnvParams`` is built (also by ``replace``); :func:`jaxrrm.env.reset`
        relies on it. Traced leaves (inside ``jit``/``vmap``) are skipped. Returns ``self``.
        """
        for name, (pred, allowed) in _PARAM_RANGES.items():
            x = _concrete(getattr(self, name), name)
            if x is None:
                continue
            ok = np.isfinite(x) & pred(x)
            if np.dtype(getattr(getattr(self, name), "dtype", np.float64)) == np.float32:
                # a bound as float32 rounds it (1e-9 -> 9.99999972e-10): one ulp of slack
                ulp = 2.0 ** -23
                ok |= np.isfinite(x) & (pred(x * (1 + ulp)) | pred(x * (1 - ulp)))
            ok = bool(np.all(ok))
            if not ok:
                raise ValueError(
                    f"EnvParams.{name}={getattr(self, name)!r} is invalid: allowed range is "
                    f"{allowed} (finite)")
        return self

    @classmethod
    def in_axes(cls, *batched: str, axis: int = 0) -> "EnvParams":
        """An ``in_axes`` prefix for ``jax.vmap``: ``axis`` for the named fields, None elsewhere.

        Example: ``jax.vmap(f, in_axes=(EnvParams.in_axes("pf_lambda"),))(params)`` maps over a
        batch of PF exponents and shares every other field. (Built without validation: its leaves
        are axis numbers, not physical values.)
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(batched) - names
        if unknown:
            raise ValueError(f"unknown EnvParams field(s): {sorted(unknown)}")
        obj = object.__new__(cls)
        for name in names:
            object.__setattr__(obj, name, axis if name in batched else None)
        return obj

    @classmethod
    def create(cls, cfg: EnvConfig, **overrides) -> "EnvParams":
        """Defaults that match ``cfg``: the path-loss model's shadowing stds and ``mu = K``.

        Shadowing (dB, LOS/NLOS): ``umi`` 4 / 7.82 and ``inh_office`` 3 / 8.03 (38.901 Table
        7.4.1-1); ``log_distance`` 8 / 8 and ``free_space`` 0 / 0 (assumptions).

        Args:
          cfg: the static configuration.
          **overrides: any field of :class:`EnvParams`.
        """
        los, nlos = _SHADOWING_DEFAULTS[cfg.pathloss_model]
        kw = dict(shadowing_std_los_db=los, shadowing_std_nlos_db=nlos,
                  score_mu=float(cfg.num_ues))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown EnvParams field(s): {sorted(unknown)}")
        overrides = dict(overrides)
        for k, v in overrides.items():
            x = _concrete(v, k)
            if x is None and not isinstance(v, jax.Array):     # None, object(), ...
                raise ValueError(f"EnvParams.{k}={v!r:.80} is invalid: a real number or an array "
                                 "of real numbers is required")
            if isinstance(v, (list, tuple)):
                overrides[k] = np.asarray(x, np.float32)
            elif isinstance(v, numbers.Number) and not isinstance(v, (float, int, np.generic)):
                overrides[k] = float(x)                       # Decimal, Fraction
        kw.update(overrides)
        params = cls(**kw)
        check_feasible(params, cfg)
        return params

    def check_shapes(self, cfg: EnvConfig) -> "EnvParams":
        """Check that one parameter set fits ``cfg``: every field a scalar, except
        :data:`PER_AP_FIELDS`, which may be ``[num_aps]``; ``ValueError`` naming the field
        otherwise. Shapes are static, so this works on tracers too: :func:`jaxrrm.env.reset`
        calls it on the (per-episode, unbatched) parameters it gets. Returns ``self``."""
        for f in dataclasses.fields(self):
            shape = tuple(np.shape(getattr(self, f.name)))
            per_ap = f.name in PER_AP_FIELDS
            if shape not in ([(), (cfg.num_aps,)] if per_ap else [()]):
                raise ValueError(
                    f"EnvParams.{f.name} has shape {shape}: allowed is "
                    + (f"a scalar or one value per AP, ({cfg.num_aps},)" if per_ap
                       else "a scalar")
                    + " (batch parameter sets with jax.vmap over EnvParams.in_axes)")
        return self


def grid_fractions(num_aps: int) -> np.ndarray:
    """Centres of the first ``num_aps`` cells of a near-square grid over the unit square,
    ``[num_aps, 2]`` float64: :math:`c = \\lceil\\sqrt{I}\\rceil` columns,
    :math:`\\lceil I/c \\rceil` rows, filled row by row (multiply by the area side for metres;
    :func:`jaxrrm.topology.grid_positions`)."""
    cols = math.ceil(math.sqrt(num_aps))
    rows = math.ceil(num_aps / cols)
    idx = np.arange(num_aps)
    return np.stack([(idx % cols + 0.5) / cols, (idx // cols + 0.5) / rows], axis=-1)


def _drop_fallback_probability(area_side_m: float, min_distance_m: float, cfg: EnvConfig
                               ) -> Tuple[float, float]:
    """``(f, f ** cfg.min_drop_tries)``: the fraction ``f`` of the area closer than
    ``min_distance_m`` to an AP (one rejected try of the UE drop) and the probability that all
    tries of one UE fail. For fixed or grid AP positions ``f`` is measured on a 256 x 256 grid
    of points; for a random layout it is the bound ``min(1, I pi d^2 / L^2)`` (discs inside the
    area, not overlapping)."""
    if cfg.ap_positions_m is None and cfg.ap_layout == "random":
        f = min(1.0, cfg.num_aps * math.pi * min_distance_m ** 2 / area_side_m ** 2)
    else:
        if cfg.ap_positions_m is not None:
            aps = np.asarray(cfg.ap_positions_m, np.float64)
        else:
            aps = grid_fractions(cfg.num_aps) * area_side_m
        g = (np.arange(256) + 0.5) / 256 * area_side_m
        pts = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 1, 2)
        d = np.sqrt(((pts - aps[None]) ** 2).sum(-1)).min(-1)
        f = float(np.mean(d < min_distance_m))
    return f, f ** cfg.min_drop_tries


def check_feasible(params: EnvParams, cfg: EnvConfig) -> None:
    """Refuse (``ValueError``) parameters that cannot meet their own constraints in ``cfg``:

    * a geometry where the minimum-distance UE drop would fall back to an approximate position
      with probability above :data:`MAX_DROP_FALLBACK` per UE (the area too small for
      ``min_distance_m`` around the APs): lower ``min_distance_m``, enlarge the area or raise
      ``EnvConfig.min_drop_tries``;
    * with mobility, a step per slot ``ue_speed_mps * slot_s`` not smaller than the area side
      (the reflection at the borders assumes at most one crossing per slot).

    Called by :meth:`EnvParams.create`. Batched fields are checked at their worst values
    (smallest area, largest distance and step); traced fields are skipped.
    """
    names = ("area_side_m", "min_distance_m", "ue_speed_mps", "slot_s")
    vals = {n: _concrete(getattr(params, n), n) for n in names}
    if any(v is None for v in vals.values()):
        return
    area = float(np.min(vals["area_side_m"]))
    dmin = float(np.max(vals["min_distance_m"]))
    f, p_fail = _drop_fallback_probability(area, dmin, cfg)
    if p_fail > MAX_DROP_FALLBACK:
        layout = cfg.ap_layout if cfg.ap_positions_m is None else "fixed"
        raise ValueError(
            f"EnvParams.min_distance_m={dmin:g} is infeasible with area_side_m={area:g} and "
            f"{cfg.num_aps} APs ({layout} layout): {100 * f:.1f}% of the area is closer than "
            f"that to an AP, so a UE drop fails all its {cfg.min_drop_tries} tries with "
            f"probability {p_fail:.2g} > {MAX_DROP_FALLBACK:g}; lower min_distance_m, enlarge "
            "the area or raise EnvConfig.min_drop_tries")
    speed = float(np.max(vals["ue_speed_mps"]))
    step = float(np.max(vals["ue_speed_mps"] * vals["slot_s"]))
    if cfg.mobility and step >= area:
        raise ValueError(
            f"EnvParams.ue_speed_mps={speed:g} is infeasible with mobility and slot_s="
            f"{float(np.max(vals['slot_s'])):g}: a UE moves {step:g} m per slot, not less than "
            f"area_side_m={area:g} (lower the speed or slot_s)")


def default_config() -> EnvConfig:
    """docs/design.md §1's default scenario: 4 APs, 24 UEs, N = 3, T = 200, UMi, PF reward."""
    return EnvConfig()
