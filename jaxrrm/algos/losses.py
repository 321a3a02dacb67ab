"""The discrete soft actor-critic losses, written once for every learner that uses them.

Online SAC (:mod:`jaxrrm.algos.sac`) and offline CQL on its SAC backbone (:mod:`jaxrrm.algos.cql`)
call these pure functions; nothing else writes a soft TD target, a TD loss, an actor loss or a
temperature loss.

Shapes are over *decisions* (see :mod:`jaxrrm.algos.cql`): a decision is one categorical choice
among ``A`` actions with Q-values ``q [..., A]``, a validity mask ``mask [..., A]`` (bool) and an
action ``a [...]``. A minibatch of ``B`` rows has ``G`` decisions per row (``G = I`` APs for the
per-AP learners, ``G = 1`` for the centralized one), ``K`` critics ``Q^k`` with Polyak targets
``Q^{k-}``. Sums over actions run over the valid actions only.

.. math::
   V(s') = \\sum_{a\\,\\mathrm{valid}} \\pi(a|s') [\\min_k Q^{k-}(s', a) - \\alpha \\log\\pi(a|s')]

   y = c\\, r + \\gamma (1 - d) V(s')

   L_Q = \\sum_k \\frac1B \\sum_b \\sum_g (Q^k_g(s_b, a_{b,g}) - y_{b,g})^2

   L_\\pi = \\sum_g \\frac1B \\sum_b \\sum_{a\\,\\mathrm{valid}} \\pi_g(a|s_b)
            [\\alpha_g \\log\\pi_g(a|s_b) - \\min_k Q^k_g(s_b, a)]

   L_\\alpha = \\frac1{BG} \\sum_{b,g} \\log\\alpha_g (\\mathcal H[\\pi_g(.|s_b)]
                - f \\log |\\mathrm{valid}_{b,g}|)

**Convention** (one for both learners): squared error *without* the factor 1/2, summed over
critics and decisions, averaged over the batch (as the CQL reference implementation). CQL needs
this scale: its critic loss weighs ``L_Q`` against ``cql_alpha * penalty``
(:func:`jaxrrm.algos.cql.cql_critic_loss`). Online SAC used ``sum_k mean_{b,i} 1/2 (Q - y)^2``
until it adopted this convention; its loss is now ``2 I`` times larger (``I`` APs; its actor loss
``I`` times, a sum instead of a mean over APs). Adam is invariant to a constant scale of the loss
up to its ``eps``; what does change is the gradient-norm clip (``max_grad_norm``), which now acts
on the ``2 I``-times larger critic gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..networks import masked_entropy, masked_log_softmax


def q_at(q, a):
    """``q[..., a]``: the value of action ``a [...]`` (int) in ``q [..., A]`` -> ``[...]``."""
    return jnp.take_along_axis(q, jnp.asarray(a, jnp.int32)[..., None], axis=-1)[..., 0]


def soft_value(q, logp, mask, alpha):
    """Soft state value ``sum_{a valid} pi(a) [q(a) - alpha log pi(a)]`` -> ``[...]``.

    .. math:: V = \\sum_{a\\,\\mathrm{valid}} \\pi(a) [q(a) - \\alpha \\log\\pi(a)]

    Args:
      q: ``[..., A]`` (e.g. min over target critics).  logp: ``[..., A]`` from
        :func:`jaxrrm.networks.masked_log_softmax`.  mask: ``[..., A]`` bool.
      alpha: temperature, broadcastable to ``[...]``.
    """
    soft = jnp.exp(logp) * (q - jnp.asarray(alpha)[..., None] * logp)
    return jnp.sum(jnp.where(mask, soft, 0.0), axis=-1)


def not_done(terminated, truncated=None, bootstrap_truncated: bool = True):
    """``1 - done`` as float32: ``done = terminated`` (default) or ``terminated | truncated``
    (``bootstrap_truncated=False``)."""
    done = jnp.asarray(terminated, bool)
    if not bootstrap_truncated:
        done = done | jnp.asarray(truncated, bool)
    return 1.0 - done.astype(jnp.float32)


def td_target(reward, next_value, discount):
    """``reward + discount * next_value`` (all broadcastable; ``discount = gamma (1 - done)``).

    .. math:: y = r + \\gamma (1 - d) V(s')
    """
    return reward + discount * next_value


def td_loss(q_pred, target, extra=None):
    """Squared TD loss of ``K`` critics, summed over critics and decisions, mean over the batch.

    .. math:: L = \\sum_k \\frac1B \\sum_b \\sum_g [(Q^k_{b,g} - y_{b,g})^2 + e^k_{b,g}]

    No 1/2 (see the module docstring). No gradient is taken through ``target``.

    Args:
      q_pred: ``[K, B, ...]`` the critics' values of the taken actions (``[K, B, G]`` per
        decision, ``[K, B]`` for a team value ``Q_tot``).
      target: ``[B, ...]`` TD targets (broadcast over ``K``).
      extra: optional ``[K, B, ...]`` term added to the squared error inside the same reduction
        (CQL: ``cql_alpha * penalty``); ``None`` for the plain TD loss.

    Returns:
      ``(loss, per, td)``: the scalar loss; ``per [...]`` (the trailing decision axes: ``[G]``
      or ``[]``) its terms per decision, summed over critics and averaged over the batch
      (``loss = sum(per)``); ``td [K, B, ...]`` the squared TD errors.
    """
    td = jnp.square(q_pred - jax.lax.stop_gradient(target)[None])
    per = jnp.sum(jnp.mean(td if extra is None else td + extra, axis=1), axis=0)
    return jnp.sum(per), per, td


def sac_actor_loss(logits, q, mask, alpha):
    """Discrete-SAC actor loss per decision ``sum_{a valid} pi(a) [alpha log pi(a) - q(a)]``.

    .. math:: \\ell = \\sum_{a\\,\\mathrm{valid}} \\pi(a) [\\alpha \\log\\pi(a) - q(a)]

    Args:
      logits: ``[..., A]`` raw actor outputs.  q: ``[..., A]`` critic values (min over critics;
        treated as constants).  mask: ``[..., A]`` bool.  alpha: broadcastable to ``[...]``.

    Returns:
      ``(loss [...], entropy [...])`` (entropy over valid actions).
    """
    q = jax.lax.stop_gradient(q)
    logp = masked_log_softmax(logits, mask)
    p = jnp.exp(logp)
    per = jnp.sum(jnp.where(mask, p * (jnp.asarray(alpha)[..., None] * logp - q), 0.0), axis=-1)
    return per, masked_entropy(logp, mask)


def actor_loss(logits, q, mask, alpha):
    """The batch actor loss: :func:`sac_actor_loss` summed over decisions, mean over the batch.

    .. math:: L_\\pi = \\sum_g \\frac1B \\sum_b \\ell_{b,g}

    Args:
      logits: ``[B, G, A]``.  q: ``[B, G, A]`` min over the critics (held fixed).
      mask: ``[B, G, A]`` bool.  alpha: ``[G]`` temperatures.

    Returns:
      ``(loss, per_decision [G], entropy [B, G])``.
    """
    per, ent = sac_actor_loss(logits, q, mask, alpha)
    per_dec = jnp.mean(per, axis=0)
    return jnp.sum(per_dec), per_dec, ent


def target_entropy(mask, frac: float):
    """``frac * log(number of valid actions)`` per row of ``mask [..., A]`` -> ``[...]``."""
    n = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(jnp.float32)
    return frac * jnp.log(n)


def temperature_loss(log_alpha, entropy, mask, frac: float):
    """Temperature loss, mean over the batch and the decision-makers.

    .. math:: L_\\alpha = \\frac1{BG} \\sum_{b,g} \\log\\alpha_g
              (\\mathcal H_{b,g} - f \\log |\\mathrm{valid}_{b,g}|)

    Its gradient lowers ``alpha_g`` when the policy's entropy is below the target and raises it
    above. No gradient is taken through the entropy.

    Args:
      log_alpha: ``[G]`` log temperatures.  entropy: ``[B, G]`` policy entropies (nats).
      mask: ``[B, G, A]`` bool, the valid actions (for the target entropy).
      frac: ``target_entropy_frac`` in [0, 1).

    Returns:
      the scalar loss.
    """
    gap = jax.lax.stop_gradient(entropy - target_entropy(mask, frac))
    return jnp.mean(log_alpha[None, :] * gap)
