"""Wireless channel: path loss, LOS probability, shadowing and Gauss–Markov Rayleigh fading.

All functions are pure and element-wise (broadcasting) unless stated, and work under ``jit`` and
``vmap``. Distances are in metres, frequencies in Hz, losses in dB (positive = attenuation).

References
----------
* 3GPP TR 38.901 V17.0.0, "Study on channel model for frequencies from 0.5 to 100 GHz",
  Table 7.4.1-1 (path loss, shadowing std) and Table 7.4.2-1 (LOS probability).
* W. C. Jakes, *Microwave Mobile Communications*, 1974: the autocorrelation
  :math:`J_0(2\\pi f_D \\tau)` of Rayleigh fading with isotropic scattering.
* M. Abramowitz and I. A. Stegun, *Handbook of Mathematical Functions*, §9.4.1 and §9.4.3:
  polynomial approximations of :math:`J_0` used by :func:`bessel_j0`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .units import SPEED_OF_LIGHT_MPS


def _log10(x):
    return jnp.log10(jnp.asarray(x, dtype=jnp.result_type(float)))


# --------------------------------------------------------------------------------------------
# Path loss models
# --------------------------------------------------------------------------------------------

def los_probability_umi(distance_2d_m):
    """LOS probability of 38.901 UMi–Street Canyon (Table 7.4.2-1).

    .. math::
        P_\\mathrm{LOS} = \\begin{cases} 1, & d_\\mathrm{2D} \\le 18\\,\\mathrm{m} \\\\
        \\frac{18}{d_\\mathrm{2D}} + e^{-d_\\mathrm{2D}/36}\\left(1 - \\frac{18}{d_\\mathrm{2D}}\\right),
        & d_\\mathrm{2D} > 18\\,\\mathrm{m} \\end{cases}

    Args:
      distance_2d_m: any shape, float, m, >= 0.

    Returns:
      Same shape, float, probability in [0, 1].
    """
    d = jnp.maximum(jnp.asarray(distance_2d_m, dtype=jnp.result_type(float)), 18.0)
    p = 18.0 / d + jnp.exp(-d / 36.0) * (1.0 - 18.0 / d)
    return jnp.where(distance_2d_m <= 18.0, 1.0, p)


def los_probability_inh(distance_2d_m):
    """LOS probability of 38.901 InH–Office, mixed office (Table 7.4.2-1).

    .. math::
        P_\\mathrm{LOS} = \\begin{cases} 1, & d \\le 1.2\\,\\mathrm{m} \\\\
        e^{-(d-1.2)/4.7}, & 1.2 < d < 6.5\\,\\mathrm{m} \\\\
        0.32\\,e^{-(d-6.5)/32.6}, & d \\ge 6.5\\,\\mathrm{m} \\end{cases}

    Args:
      distance_2d_m: any shape, float, m, >= 0.

    Returns:
      Same shape, float, probability in [0, 1].
    """
    d = jnp.asarray(distance_2d_m, dtype=jnp.result_type(float))
    mid = jnp.exp(-(d - 1.2) / 4.7)
    far = 0.32 * jnp.exp(-(d - 6.5) / 32.6)
    return jnp.where(d <= 1.2, 1.0, jnp.where(d < 6.5, mid, far))


def breakpoint_distance_umi_m(carrier_hz, ap_height_m, ue_height_m):
    """Effective breakpoint distance of UMi (38.901 Table 7.4.1-1, note 1), m.

    .. math::
        d'_\\mathrm{BP} = 4\\,h'_\\mathrm{BS}\\,h'_\\mathrm{UT}\\,f_c / c,
        \\quad h' = h - h_E,\\ h_E = 1\\,\\mathrm{m}
    """
    return 4.0 * (ap_height_m - 1.0) * (ue_height_m - 1.0) * carrier_hz / SPEED_OF_LIGHT_MPS


def pathloss_umi_db(distance_2d_m, distance_3d_m, los, carrier_hz, ap_height_m=10.0,
                    ue_height_m=1.5):
    """Path loss of 38.901 UMi–Street Canyon (Table 7.4.1-1), dB.

    With :math:`f_c` in GHz and distances in m:

    .. math::
        PL_1 &= 32.4 + 21\\log_{10} d_\\mathrm{3D} + 20\\log_{10} f_c \\\\
        PL_2 &= 32.4 + 40\\log_{10} d_\\mathrm{3D} + 20\\log_{10} f_c
               - 9.5\\log_{10}\\left(d'^2_\\mathrm{BP} + (h_\\mathrm{BS} - h_\\mathrm{UT})^2\\right) \\\\
        PL_\\mathrm{LOS} &= PL_1 \\text{ if } d_\\mathrm{2D} \\le d'_\\mathrm{BP} \\text{ else } PL_2 \\\\
        PL'_\\mathrm{NLOS} &= 35.3\\log_{10} d_\\mathrm{3D} + 22.4 + 21.3\\log_{10} f_c
               - 0.3 (h_\\mathrm{UT} - 1.5) \\\\
        PL_\\mathrm{NLOS} &= \\max(PL_\\mathrm{LOS}, PL'_\\mathrm{NLOS})

    The standard defines it for :math:`10\\,\\mathrm{m} \\le d_\\mathrm{2D} \\le 5\\,\\mathrm{km}`;
    shorter distances are evaluated with the same formulas (finite for :math:`d_\\mathrm{3D} > 0`).

    Args:
      distance_2d_m: any shape, float, m.
      distance_3d_m: broadcastable, float, m, > 0.
      los: broadcastable, bool, True for a line-of-sight link.
      carrier_hz: broadcastable, float, Hz.
      ap_height_m, ue_height_m: broadcastable, float, m.

    Returns:
      Broadcast shape, float, dB.
    """
    fc_ghz = carrier_hz / 1e9
    d_bp = breakpoint_distance_umi_m(carrier_hz, ap_height_m, ue_height_m)
    pl1 = 32.4 + 21.0 * _log10(distance_3d_m) + 20.0 * _log10(fc_ghz)
    pl2 = (32.4 + 40.0 * _log10(distance_3d_m) + 20.0 * _log10(fc_ghz)
           - 9.5 * _log10(d_bp**2 + (ap_height_m - ue_height_m) ** 2))
    pl_los = jnp.where(distance_2d_m <= d_bp, pl1, pl2)
    pl_nlos_prime = (35.3 * _log10(distance_3d_m) + 22.4 + 21.3 * _log10(fc_ghz)
                     - 0.3 * (ue_height_m - 1.5))
    return jnp.where(los, pl_los, jnp.maximum(pl_los, pl_nlos_prime))


def pathloss_inh_db(distance_3d_m, los, carrier_hz):
    """Path loss of 38.901 InH–Office (Table 7.4.1-1), dB.

    .. math::
        PL_\\mathrm{LOS} &= 32.4 + 17.3\\log_{10} d_\\mathrm{3D} + 20\\log_{10} f_c \\\\
        PL'_\\mathrm{NLOS} &= 38.3\\log_{10} d_\\mathrm{3D} + 17.30 + 24.9\\log_{10} f_c \\\\
        PL_\\mathrm{NLOS} &= \\max(PL_\\mathrm{LOS}, PL'_\\mathrm{NLOS})

    (:math:`f_c` in GHz; defined for :math:`1 \\le d_\\mathrm{3D} \\le 150` m.)

    Args:
      distance_3d_m: any shape, float, m, > 0.
      los: broadcastable, bool.
      carrier_hz: broadcastable, float, Hz.

    Returns:
      Broadcast shape, float, dB.
    """
    fc_ghz = carrier_hz / 1e9
    pl_los = 32.4 + 17.3 * _log10(distance_3d_m) + 20.0 * _log10(fc_ghz)
    pl_nlos_prime = 38.3 * _log10(distance_3d_m) + 17.30 + 24.9 * _log10(fc_ghz)
    return jnp.where(los, pl_los, jnp.maximum(pl_los, pl_nlos_prime))


def pathloss_free_space_db(distance_3d_m, carrier_hz):
    """Friis free-space path loss, dB.

    .. math::
        PL = 20\\log_{10}\\left(\\frac{4\\pi d f_c}{c}\\right)

    Args:
      distance_3d_m: any shape, float, m, > 0.
      carrier_hz: broadcastable, float, Hz.

    Returns:
      Broadcast shape, float, dB.
    """
    return 20.0 * _log10(4.0 * jnp.pi * distance_3d_m * carrier_hz / SPEED_OF_LIGHT_MPS)


def pathloss_log_distance_db(distance_3d_m, carrier_hz, exponent=3.5, reference_m=1.0):
    """Log-distance path loss anchored at free space at ``reference_m``, dB.

    .. math::
        PL = PL_\\mathrm{FS}(d_0) + 10\\,n\\log_{10}(d / d_0)

    Args:
      distance_3d_m: any shape, float, m, > 0.
      carrier_hz: broadcastable, float, Hz.
      exponent: broadcastable, float, the path-loss exponent ``n``.
      reference_m: broadcastable, float, reference distance ``d0``, m.

    Returns:
      Broadcast shape, float, dB.
    """
    return (pathloss_free_space_db(reference_m, carrier_hz)
            + 10.0 * exponent * _log10(distance_3d_m / reference_m))


def los_probability(model: str, distance_2d_m):
    """LOS probability of the named model (``free_space``: 1, ``log_distance``: 0)."""
    if model == "umi":
        return los_probability_umi(distance_2d_m)
    if model == "inh_office":
        return los_probability_inh(distance_2d_m)
    if model == "free_space":
        return jnp.ones_like(jnp.asarray(distance_2d_m, dtype=jnp.result_type(float)))
    if model == "log_distance":
        return jnp.zeros_like(jnp.asarray(distance_2d_m, dtype=jnp.result_type(float)))
    raise ValueError(f"unknown path-loss model {model!r}")


def pathloss_db(model: str, distance_2d_m, distance_3d_m, los, params):
    """Path loss of the model named in ``EnvConfig.pathloss_model``, dB.

    Args:
      model: ``"umi"``, ``"inh_office"``, ``"log_distance"`` or ``"free_space"`` (static).
      distance_2d_m, distance_3d_m: any shape, float, m.
      los: broadcastable, bool.
      params: :class:`jaxrrm.EnvParams` (carrier, heights, exponent).

    Returns:
      Broadcast shape, float, dB.
    """
    if model == "umi":
        return pathloss_umi_db(distance_2d_m, distance_3d_m, los, params.carrier_hz,
                               params.ap_height_m, params.ue_height_m)
    if model == "inh_office":
        return pathloss_inh_db(distance_3d_m, los, params.carrier_hz)
    if model == "free_space":
        return pathloss_free_space_db(distance_3d_m, params.carrier_hz)
    if model == "log_distance":
        return pathloss_log_distance_db(distance_3d_m, params.carrier_hz, params.pathloss_exponent)
    raise ValueError(f"unknown path-loss model {model!r}")


def shadowing_std_db(los, params):
    """Shadowing standard deviation per link from its LOS state, dB (same shape as ``los``)."""
    return jnp.where(los, params.shadowing_std_los_db, params.shadowing_std_nlos_db)


# --------------------------------------------------------------------------------------------
# Small-scale fading
# --------------------------------------------------------------------------------------------

def bessel_j0(x):
    """Bessel function of the first kind of order zero, :math:`J_0(x)`, in pure JAX.

    Abramowitz & Stegun 9.4.1 for :math:`|x| \\le 3` (absolute error < 5e-8) and 9.4.3 for
    :math:`|x| > 3` (error < 1.6e-8 relative to the envelope); even in ``x``.

    Args:
      x: any shape, float.

    Returns:
      Same shape, float.
    """
    x = jnp.abs(jnp.asarray(x, dtype=jnp.result_type(float)))
    y = (x / 3.0) ** 2
    small = (1.0 + y * (-2.2499997 + y * (1.2656208 + y * (-0.3163866 + y * (
        0.0444479 + y * (-0.0039444 + y * 0.0002100))))))
    xs = jnp.maximum(x, 3.0)
    z = 3.0 / xs
    f0 = (0.79788456 + z * (-0.00000077 + z * (-0.00552740 + z * (-0.00009512 + z * (
        0.00137237 + z * (-0.00072805 + z * 0.00014476))))))
    th = (xs - 0.78539816 + z * (-0.04166397 + z * (-0.00003954 + z * (0.00262573 + z * (
        -0.00054125 + z * (-0.00029333 + z * 0.00013558))))))
    large = f0 * jnp.cos(th) / jnp.sqrt(xs)
    return jnp.where(x <= 3.0, small, large)


def doppler_hz(speed_mps, carrier_hz):
    """Maximum Doppler shift :math:`f_D = v f_c / c`, Hz."""
    return speed_mps * carrier_hz / SPEED_OF_LIGHT_MPS


def fading_correlation(speed_mps, carrier_hz, slot_s):
    """Lag-one correlation of Jakes' fading, :math:`\\rho = J_0(2\\pi f_D T_s)`.

    Default scenario: :math:`v` = 1 m/s, :math:`f_c` = 3.5 GHz, :math:`T_s` = 10 ms give
    :math:`f_D` = 11.67 Hz and :math:`\\rho = J_0(0.7335) \\approx 0.870`.

    Args:
      speed_mps, carrier_hz, slot_s: broadcastable floats (m/s, Hz, s).

    Returns:
      Broadcast shape, float, in [-0.403, 1].
    """
    return bessel_j0(2.0 * jnp.pi * doppler_hz(speed_mps, carrier_hz) * slot_s)


def init_fading(key, shape):
    """Draw Rayleigh fading :math:`h \\sim \\mathcal{CN}(0, 1)` as real and imaginary parts.

    Args:
      key: PRNG key.
      shape: tuple, e.g. ``(num_aps, num_ues)``.

    Returns:
      ``[2, *shape]`` float32: ``[0]`` real part, ``[1]`` imaginary part, each N(0, 1/2).
    """
    return jax.random.normal(key, (2, *shape)) * jnp.sqrt(0.5)


def _mix32(x):
    """lowbias32 integer hash (C. Wellons, 2018): a bijection of uint32 with strong avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _seed_words(key):
    """Two uint32 words of a PRNG key (typed or raw), used to seed :func:`hash_normal`."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = jnp.asarray(key).reshape(-1).astype(jnp.uint32)
    return words[0], words[-1]


def seed_words(keys):
    """The two seed words of each key of a batch: ``(s0, s1)``, uint32 arrays of the batch shape.

    For a single key the same words as :func:`hash_normal` uses; for a batch of keys (typed, or raw
    ``uint32[..., n]``) the words of each key, for :func:`hash_normal_from_words`.
    """
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.key_data(keys)
    words = jnp.asarray(keys).astype(jnp.uint32)
    return words[..., 0], words[..., -1]


def hash_normal(key, shape, std=1.0):
    r"""Gaussian numbers from a counter-based hash keyed by ``key`` (fast on CPU).

    A cheaper generator on CPU than ``jax.random.normal`` (threefry rounds; see
    ``benchmarks/ANALYSIS.md``). The ``n``-th number uses the counter ``n`` and the key's two
    words :math:`(s_0, s_1)`:

    .. math::
        h_n = m(m(m(n \oplus s_0) \oplus s_1) + \varphi), \quad
        u_n = (\lfloor h_n / 2^8 \rfloor + \tfrac12)\,2^{-24}, \quad
        z_n = \sqrt2\,\mathrm{erf}^{-1}(2u_n - 1)

    with :math:`m` the lowbias32 hash and :math:`\varphi` = 0x9E3779B9: one fused element-wise
    kernel, no sequential rounds. Uniforms have 24-bit resolution, so :math:`|z| \le 5.42`.
    Keys must come from ``jax.random`` (``split``/``fold_in``): their words are already
    pseudo-random, which is what seeds the hash. Tests check moments, a KS test and the absence of
    correlation between neighbouring counters and keys; this is a simulation-grade generator, not
    a cryptographic one.

    Args:
      key: a PRNG key (typed ``jax.random.key`` or raw ``uint32[2]``).
      shape: output shape (static).
      std: scalar float, standard deviation.

    Returns:
      ``shape`` float32, i.i.d. :math:`\mathcal N(0, \mathrm{std}^2)`.
    """
    s0, s1 = _seed_words(key)
    return hash_normal_from_words(s0, s1, shape, std)


#: Giles' single-precision coefficients of :func:`erfinv_f32`, highest power first: the
#: central branch (``w < 5``, in ``w - 2.5``) and the tail (in ``sqrt(w) - 3``).
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   2.1858087e-04, -1.25372503e-03, -4.17768164e-03, 2.46640727e-01, 1.50140941)
_ERFINV_TAIL = (-2.00214257e-04, 1.00950558e-04, 1.34934322e-03, -3.67342844e-03,
                5.73950773e-03, -7.6224613e-03, 9.43887047e-03, 1.00167406, 2.83297682)


def erfinv_f32(x):
    r"""Inverse error function in float32 (M. Giles, "Approximating the erfinv function",
    GPU Computing Gems Jade, 2011): with :math:`w = -\ln((1 - x)(1 + x))`,

    .. math::
        \mathrm{erf}^{-1}(x) \approx x\,p_1(w - 2.5) \ (w < 5), \qquad
        x\,p_2(\sqrt w - 3) \ (w \ge 5),

    :math:`p_1, p_2` polynomials of degree 8. Element-wise, no branch but one select, so it
    fuses into its caller (cheaper on CPU than ``jax.scipy.special.erfinv``; see
    ``benchmarks/ANALYSIS.md``). Relative error below 5e-7 on the grid :func:`hash_normal`
    draws from (``tests/test_rng.py`` checks it against SciPy in float64).

    Args:
      x: float32 array, :math:`|x| < 1`.

    Returns:
      same shape, float32.
    """
    x = jnp.asarray(x, jnp.float32)
    w = -jnp.log((1.0 - x) * (1.0 + x))
    a = w - 2.5
    b = jnp.sqrt(w) - 3.0
    p1 = jnp.float32(_ERFINV_CENTRAL[0])
    for c in _ERFINV_CENTRAL[1:]:
        p1 = c + p1 * a
    p2 = jnp.float32(_ERFINV_TAIL[0])
    for c in _ERFINV_TAIL[1:]:
        p2 = c + p2 * b
    return jnp.where(w < 5.0, p1, p2) * x


def hash_normal_from_words(s0, s1, shape, std=1.0):
    r""":func:`hash_normal` from the key's two seed words, batched over *trailing* axes.

    ``hash_normal(key, shape, std)`` is ``hash_normal_from_words(s0, s1, shape, std)`` with
    ``(s0, s1)`` the first and last uint32 word of ``key``'s data. With ``s0`` and ``s1`` of shape
    ``B`` (one pair per key of a batch), the result has shape ``shape + B`` and its ``[..., b]``
    slice is bit for bit the numbers of key ``b``: the same element-wise computation, with the
    batch on the last axes (the episodes-last layout of :func:`jaxrrm.env.rollout`).

    Args:
      s0, s1: uint32 scalars or arrays of the same shape ``B``.
      shape: per-key output shape (static).
      std: scalar float, standard deviation.

    Returns:
      ``shape + B`` float32, i.i.d. :math:`\mathcal N(0, \mathrm{std}^2)`.
    """
    s0 = jnp.asarray(s0, jnp.uint32)
    s1 = jnp.asarray(s1, jnp.uint32)
    shape = tuple(shape)
    n = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape + (1,) * s0.ndim)
    h = _mix32(_mix32(_mix32(n ^ s0) ^ s1) + jnp.uint32(0x9E3779B9))
    # 2u - 1 as the odd integers in (-2^24, 2^24), exact in float32 (so never +-1).
    t = (h >> 8).astype(jnp.int32)
    v = (2 * t + (1 - (1 << 24))).astype(jnp.float32) * jnp.float32(2.0**-24)
    return (jnp.sqrt(2.0) * std) * erfinv_f32(v)


def fading_innovation(key, shape):
    r"""The innovation :math:`e(t) \sim \mathcal{CN}(0, 1)` of one fading step, from
    :func:`hash_normal`: ``[2, *shape]`` float32, real and imaginary parts each N(0, 1/2)."""
    return hash_normal(key, (2, *shape), std=math.sqrt(0.5))


def advance_fading(fading, innovation, rho):
    """One step of the first-order Gauss–Markov fading process.

    .. math::
        h(t+1) = \\rho\\,h(t) + \\sqrt{1-\\rho^2}\\,e(t), \\quad e(t) \\sim \\mathcal{CN}(0, 1)

    which keeps :math:`E|h|^2 = 1` and gives lag-one correlation :math:`\\rho`.

    Args:
      fading: ``[2, ...]`` float, real/imag parts of h(t).
      innovation: same shape, float, real/imag parts of e(t) (each N(0, 1/2)).
      rho: scalar or broadcastable float, correlation in [-1, 1].

    Returns:
      ``[2, ...]`` float, h(t+1).
    """
    return rho * fading + jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0)) * innovation


def fading_power(fading):
    """:math:`|h|^2` from real/imag parts: ``[2, ...] -> [...]`` float, linear."""
    return fading[0] * fading[0] + fading[1] * fading[1]
