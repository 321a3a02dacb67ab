"""Datasets combined: rows of several datasets one after another (:func:`concatenate`), or
drawn from them in given proportions (:func:`mixture`, :func:`mixture_counts`). Results have
NumPy leaves (host memory)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .sampling import as_numpy
from .transitions import FIELDS, Transitions


def concatenate(datasets: Sequence[Transitions], renumber_episodes: bool = True) -> Transitions:
    """The rows of several datasets, one after the other, in one dataset (NumPy leaves).

    Args:
      datasets: non-empty sequence of :class:`Transitions` of one configuration (same trailing
        shapes per field).
      renumber_episodes: shift each source's ``episode`` ids so that they stay unique: source
        ``i``'s ids become ``id - min_i + offset_i``, the offsets packing the sources' id ranges
        one after the other from 0 (within a source, ids keep their differences). With False
        the ids are kept as they are (e.g. for adjacent slices of one stream).

    Returns:
      :class:`Transitions` with ``sum(n_i)`` rows.
    """
    if len(datasets) == 0:
        raise ValueError("concatenate needs at least one dataset")
    for name in FIELDS:
        tails = {tuple(np.shape(getattr(d, name))[1:]) for d in datasets}
        if len(tails) > 1:
            raise ValueError(f"datasets disagree on the shape of {name!r}: {sorted(tails)} "
                             "(different configurations?)")
    parts = {name: [as_numpy(getattr(d, name)) for d in datasets] for name in FIELDS}
    if renumber_episodes:
        offset, eps = 0, []
        for ep in parts["episode"]:
            if ep.size:
                lo, hi = int(ep.min()), int(ep.max())
                eps.append((ep.astype(np.int64) - lo + offset).astype(np.int32))
                offset += hi - lo + 1
            else:
                eps.append(ep.astype(np.int32))
        parts["episode"] = eps
    return Transitions(**{name: np.concatenate(v, axis=0) for name, v in parts.items()})


def mixture_counts(weights: Sequence[float], size: int) -> np.ndarray:
    """Rows per source for a mixture of ``size`` rows in proportions ``weights``.

    Largest-remainder rounding of ``size * w_i / sum(w)``: the counts sum to ``size`` exactly and
    each is within 1 of its exact share (remainder ties go to the lower index).

    Returns:
      ``[len(weights)]`` int64.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights={list(np.atleast_1d(w))} are invalid: allowed are finite, "
                         ">= 0, not all 0")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r} is invalid: allowed is an integer >= 1")
    exact = w / w.sum() * size
    counts = np.floor(exact).astype(np.int64)
    short = int(size - counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def mixture(key, datasets: Sequence[Transitions], weights: Sequence[float],
            size: int) -> Transitions:
    """A dataset of ``size`` rows drawn from several datasets in the given proportions.

    Source ``i`` contributes exactly ``mixture_counts(weights, size)[i] = c_i`` rows. Within a
    source rows are drawn **without replacement** when ``c_i <= n_i`` (a uniformly random subset);
    when ``c_i > n_i`` every row is taken ``c_i // n_i`` times plus a random subset of
    ``c_i % n_i`` rows (as even as possible). Each source's rows keep their original order, and
    the sources follow one another (source 0 first) with episode ids renumbered as
    :func:`concatenate` does. Whole transitions are sampled, so episodes are generally cut.

    Args:
      key: PRNG key (source ``i``'s rows are a ``numpy.random.default_rng`` permutation seeded
        with ``jax.random.bits(key, (len(datasets), 4), uint32)[i]``).
      datasets: the sources (same configuration).
      weights: non-negative proportions, one per source (need not sum to 1).
      size: rows of the mixture, ``>= 1``.

    Returns:
      :class:`Transitions` of ``size`` rows, NumPy leaves.
    """
    if len(datasets) != len(weights):
        raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
    counts = mixture_counts(weights, size)
    # NumPy permutations seeded from the key's bits: no compilation per source size.
    seeds = np.asarray(jax.random.bits(key, (len(datasets), 4), jnp.uint32))
    parts = []
    for d, c, seed in zip(datasets, counts, seeds):
        n = d.size
        if c > 0 and n == 0:
            raise ValueError("a source with positive weight is empty")
        if c == 0:
            idx = np.zeros((0,), np.int64)
        else:
            perm = np.random.default_rng(seed).permutation(n)
            idx = np.concatenate([np.tile(np.arange(n), c // n), perm[: c % n]])
            idx.sort(kind="stable")
        parts.append(jax.tree.map(lambda x: as_numpy(x)[idx], d))
    return concatenate(parts)

