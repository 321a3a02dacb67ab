"""Geometry: AP placement, UE drops with a minimum distance, distances, association and mobility.

Coordinates are 2-D positions in metres in the square ``[0, area_side_m]^2``; antenna heights come
from :class:`jaxrrm.EnvParams`. Everything is pure and shape-static (no data-dependent Python loops).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from . import channel
from .config import EnvConfig, EnvParams, grid_fractions
from .units import db_to_linear


def grid_positions(num_aps: int, area_side_m):
    """Centres of the first ``num_aps`` cells of a near-square grid over the area.

    The grid has :math:`c = \\lceil\\sqrt{I}\\rceil` columns and :math:`\\lceil I/c \\rceil` rows;
    cells are filled row by row. ``I = 4`` gives the 2x2 grid of docs/design.md §1:
    (125, 125), (375, 125), (125, 375), (375, 375) m for a 500 m area.

    Args:
      num_aps: int (static).
      area_side_m: scalar float, m.

    Returns:
      ``[num_aps, 2]`` float, m.
    """
    return jnp.asarray(grid_fractions(num_aps), dtype=jnp.float32) * area_side_m


def ap_positions(key, params: EnvParams, cfg: EnvConfig):
    """AP positions for an episode: fixed (``cfg.ap_positions_m``), grid, or uniform random.

    Returns:
      ``[num_aps, 2]`` float, m.
    """
    if cfg.ap_positions_m is not None:
        return jnp.asarray(cfg.ap_positions_m, dtype=jnp.float32)
    if cfg.ap_layout == "grid":
        return grid_positions(cfg.num_aps, params.area_side_m)
    return jax.random.uniform(key, (cfg.num_aps, 2)) * params.area_side_m


def distances_2d_m(ap_pos_m, ue_pos_m):
    """Horizontal AP–UE distances: ``[I, 2], [K, 2] -> [I, K]`` float, m."""
    diff = ap_pos_m[:, None, :] - ue_pos_m[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def distances_3d_m(distance_2d_m, ap_height_m, ue_height_m):
    """:math:`d_\\mathrm{3D} = \\sqrt{d_\\mathrm{2D}^2 + (h_\\mathrm{BS} - h_\\mathrm{UT})^2}`, m."""
    return jnp.sqrt(distance_2d_m**2 + (ap_height_m - ue_height_m) ** 2)


def drop_ues(key, ap_pos_m, num_ues: int, area_side_m, min_distance_m, num_tries: int = 16):
    """Drop UEs uniformly in the area, each at least ``min_distance_m`` (2-D) from every AP.

    Rejection sampling with a fixed budget: ``num_tries`` uniform candidates per UE, the first that
    keeps the distance is used. In the default scenario one try fails with probability
    :math:`\\approx 4\\pi 10^2 / 500^2 = 0.5\\%`, so 16 tries all fail with probability ~1e-37. If
    they all fail (a crowded custom geometry), the last candidate is pushed radially away from its
    nearest AP to exactly ``min_distance_m`` and clipped to the area: positions stay finite and the
    drop is then only approximately uniform.

    Args:
      key: PRNG key.
      ap_pos_m: ``[I, 2]`` float, m.
      num_ues: int ``K`` (static).
      area_side_m, min_distance_m: scalar floats, m.
      num_tries: int (static).

    Returns:
      ``[K, 2]`` float, m.
    """
    cand = jax.random.uniform(key, (num_tries, num_ues, 2)) * area_side_m
    d = jnp.sqrt(jnp.sum((cand[:, :, None, :] - ap_pos_m[None, None]) ** 2, axis=-1))  # [M,K,I]
    ok = jnp.all(d >= min_distance_m, axis=-1)  # [M, K]
    first = jnp.argmax(ok, axis=0)  # [K]; 0 when none is ok
    any_ok = jnp.any(ok, axis=0)
    chosen = jnp.take_along_axis(cand, first[None, :, None], axis=0)[0]  # [K, 2]
    # Fallback: push the last candidate out of its nearest AP's exclusion disc.
    last = cand[-1]
    dl = d[-1]  # [K, I]
    nearest = jnp.argmin(dl, axis=-1)
    ap = ap_pos_m[nearest]
    vec = last - ap
    norm = jnp.sqrt(jnp.sum(vec * vec, axis=-1, keepdims=True))
    unit = jnp.where(norm > 1e-6, vec / jnp.maximum(norm, 1e-6), jnp.array([1.0, 0.0]))
    pushed = jnp.clip(ap + unit * min_distance_m, 0.0, area_side_m)
    return jnp.where(any_ok[:, None], chosen, pushed)


def draw_los(key, distance_2d_m, model: str):
    """Draw each link's LOS state from the model's LOS probability: ``[I, K]`` bool."""
    p = channel.los_probability(model, distance_2d_m)
    return jax.random.uniform(key, jnp.shape(distance_2d_m)) < p


def large_scale_gain(ap_pos_m, ue_pos_m, los, shadowing_db, params: EnvParams, cfg: EnvConfig):
    """Large-scale channel power gain (path loss and shadowing), linear.

    .. math::
        \\bar g_{ij} = 10^{-(PL_{ij} - S_{ij})/10}

    with :math:`S_{ij}` the shadowing in dB (already scaled by the link's std). The 2-D distance is
    floored at 1 m so that a UE on top of an AP (possible only through mobility or a custom
    geometry) still has a finite gain.

    Args:
      ap_pos_m: ``[I, 2]`` float, m.  ue_pos_m: ``[K, 2]`` float, m.
      los: ``[I, K]`` bool.  shadowing_db: ``[I, K]`` float, dB.
      params, cfg: environment parameters and configuration.

    Returns:
      ``[I, K]`` float, linear.
    """
    d2 = jnp.maximum(distances_2d_m(ap_pos_m, ue_pos_m), 1.0)
    d3 = distances_3d_m(d2, params.ap_height_m, params.ue_height_m)
    pl = channel.pathloss_db(cfg.pathloss_model, d2, d3, los, params)
    return db_to_linear(shadowing_db - pl)


def associate(large_gain):
    """Association: each UE to the AP of largest large-scale gain. ``[I, K] -> [K]`` int32."""
    return jnp.argmax(large_gain, axis=0).astype(jnp.int32)


def move_ues(ue_pos_m, heading_rad, distance_m, area_side_m):
    """Move UEs ``distance_m`` along their headings, reflecting at the borders of the area.

    Reflection flips the heading's component normal to the border it crossed (specular).

    Args:
      ue_pos_m: ``[K, 2]`` float, m.
      heading_rad: ``[K]`` float, rad.
      distance_m: scalar float, m (speed x slot time); assumed smaller than the area side.
      area_side_m: scalar float, m.

    Returns:
      (``[K, 2]`` new positions, ``[K]`` new headings).
    """
    vel = jnp.stack([jnp.cos(heading_rad), jnp.sin(heading_rad)], axis=-1)
    pos = ue_pos_m + vel * distance_m
    low = pos < 0.0
    high = pos > area_side_m
    pos = jnp.where(low, -pos, jnp.where(high, 2.0 * area_side_m - pos, pos))
    vel = jnp.where(low | high, -vel, vel)
    return pos, jnp.arctan2(vel[:, 1], vel[:, 0])
