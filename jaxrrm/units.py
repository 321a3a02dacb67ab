"""Unit conversions: decibels, dBm, watts and thermal noise.

Every function is a pure, element-wise JAX function: it accepts Python scalars or arrays of any
shape, works under ``jit`` and ``vmap``, and returns ``float32`` arrays (or the input's floating
dtype).

Conventions
-----------
* A power *ratio* in dB: :math:`x_\\mathrm{dB} = 10\\log_{10} x`.
* A power in dBm: :math:`P_\\mathrm{dBm} = 10\\log_{10}(P_\\mathrm{W} / 1\\,\\mathrm{mW})`.
* Thermal noise power over a bandwidth :math:`B` with receiver noise figure :math:`F`:
  :math:`N_\\mathrm{dBm} = N_0 + 10\\log_{10}(B/\\mathrm{Hz}) + F_\\mathrm{dB}`, with the noise
  power spectral density :math:`N_0 = -174` dBm/Hz (:math:`k_B T` at :math:`T = 290` K).
"""

from __future__ import annotations

import jax.numpy as jnp

#: Thermal noise power spectral density at 290 K, dBm/Hz (k_B * 290 K = -173.98 dBm/Hz).
THERMAL_NOISE_DBM_PER_HZ = -174.0

#: Speed of light in vacuum, m/s.
SPEED_OF_LIGHT_MPS = 299_792_458.0


def db_to_linear(x_db):
    """Power ratio from dB to linear: :math:`10^{x/10}`.

    Args:
      x_db: any shape, float, dB.

    Returns:
      Same shape, float, linear (dimensionless).
    """
    return jnp.power(10.0, jnp.asarray(x_db, dtype=jnp.result_type(float)) / 10.0)


def linear_to_db(x):
    """Power ratio from linear to dB: :math:`10\\log_{10} x`.

    Args:
      x: any shape, float, linear, > 0 (0 gives ``-inf``).

    Returns:
      Same shape, float, dB.
    """
    return 10.0 * jnp.log10(jnp.asarray(x, dtype=jnp.result_type(float)))


def dbm_to_w(p_dbm):
    """Power from dBm to watts: :math:`P_\\mathrm{W} = 10^{(P_\\mathrm{dBm} - 30)/10}`.

    Args:
      p_dbm: any shape, float, dBm.

    Returns:
      Same shape, float, W.
    """
    return db_to_linear(jnp.asarray(p_dbm, dtype=jnp.result_type(float)) - 30.0)


def w_to_dbm(p_w):
    """Power from watts to dBm: :math:`P_\\mathrm{dBm} = 10\\log_{10} P_\\mathrm{W} + 30`.

    Args:
      p_w: any shape, float, W, > 0.

    Returns:
      Same shape, float, dBm.
    """
    return linear_to_db(p_w) + 30.0


def thermal_noise_dbm(bandwidth_hz, noise_figure_db=0.0, psd_dbm_hz=THERMAL_NOISE_DBM_PER_HZ):
    """Receiver noise power in dBm.

    .. math::
        N_\\mathrm{dBm} = N_0 + 10\\log_{10} B + F_\\mathrm{dB}

    Example: :math:`B` = 10 MHz, :math:`F` = 7 dB gives -174 + 70 + 7 = -97 dBm.

    Args:
      bandwidth_hz: any shape, float, Hz, > 0.
      noise_figure_db: broadcastable, float, dB.
      psd_dbm_hz: broadcastable, float, dBm/Hz; -174 dBm/Hz by default.

    Returns:
      Broadcast shape, float, dBm.
    """
    return psd_dbm_hz + linear_to_db(bandwidth_hz) + noise_figure_db


def thermal_noise_w(bandwidth_hz, noise_figure_db=0.0, psd_dbm_hz=THERMAL_NOISE_DBM_PER_HZ):
    """Receiver noise power in watts, :func:`thermal_noise_dbm` converted with :func:`dbm_to_w`.

    Args:
      bandwidth_hz: any shape, float, Hz, > 0.
      noise_figure_db: broadcastable, float, dB.
      psd_dbm_hz: broadcastable, float, dBm/Hz.

    Returns:
      Broadcast shape, float, W.
    """
    return dbm_to_w(thermal_noise_dbm(bandwidth_hz, noise_figure_db, psd_dbm_hz))
