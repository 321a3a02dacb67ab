"""Optimisation steps the learners share: :func:`gradient_step` (one optax step on a loss),
:func:`polyak` (target-network averaging) and :func:`linear_schedule` (e.g. epsilon decay)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def gradient_step(loss_fn: Callable, params, opt_state, tx, *args, has_aux: bool = True):
    """One optimizer step on ``loss_fn(params, *args)`` (as ``flax.training.TrainState
    .apply_gradients``: ``value_and_grad``, ``tx.update``, ``optax.apply_updates``).

    Args:
      loss_fn: ``loss_fn(params, *args) -> loss`` (scalar) or, with ``has_aux``,
        ``(loss, aux)``; differentiated with respect to its first argument.
      params: the pytree being optimized.  opt_state: ``tx``'s state for it.
      tx: an ``optax.GradientTransformation``.
      *args: the loss's other arguments (no gradient is taken with respect to them).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      ``(new_params, new_opt_state, loss, aux, grads)``: ``aux`` is ``None`` without
      ``has_aux``; ``grads`` (shaped like ``params``) for diagnostics such as gradient norms.
    """
    out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, *args)
    loss, aux = out if has_aux else (out, None)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux, grads


def polyak(target, online, tau: float):
    """``(1 - tau) * target + tau * online`` leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def linear_schedule(start: float, end: float, steps) -> Callable:
    """``f(n) = start + (end - start) * min(n / steps, 1)`` (``steps`` >= 1)."""
    def f(n):
        frac = jnp.minimum(jnp.asarray(n, jnp.float32) / float(max(steps, 1)), 1.0)
        return start + (end - start) * frac
    return f
