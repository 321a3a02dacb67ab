"""Behaviour cloning (BC): a per-AP categorical policy fit to the dataset's actions.

The offline reference of DESIGN §4: each AP ``i`` has a categorical policy ``pi_i(a | o_i)`` (a
:class:`jaxrrm.networks.AgentNet`, separate parameters per AP by default) trained by the masked
cross-entropy of the dataset actions::

    L = mean over (rows b, APs i) of  -log pi_i(a_data[b, i] | o_i[b])

where the softmax runs over the valid actions only (masked logits, :func:`jaxrrm.networks.
masked_log_softmax`). Dataset actions that are masked (none are, for data made by this package's
policies) are mapped to the idle action when ``allow_idle`` (as the environment executes them,
:func:`jaxrrm.algos.cql.canonical_actions`); without idle they are left out of the mean.
Execution is decentralized: each AP acts from its own observation (greedy = masked argmax, else
a sample).

The API mirrors :mod:`jaxrrm.algos.cql`::

    learner = make_learner(env_cfg, BCConfig())
    state = learner.init(key)
    state, metrics = learner.update(state, batch, key)   # pure; jit / vmap / scan it
    pol = learner.policy(state.params, greedy=True)

``metrics``: ``loss`` (cross-entropy), ``accuracy`` (fraction of valid data actions that the
greedy policy reproduces), ``entropy`` (mean policy entropy), ``grad_norm``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ..config import EnvConfig
from ..data import Transitions
from ..networks import masked_argmax, masked_entropy, masked_log_softmax, sample_masked
from .common import NetConfig, is_num, require
from .cql import CQL_NET, canonical_actions, q_at


@dataclasses.dataclass(frozen=True)
class BCConfig:
    """Hyperparameters of behaviour cloning (frozen, hashable; validated on construction).

    Attributes:
      lr: Adam learning rate (> 0).
      max_grad_norm: global gradient-norm clip (> 0).
      net: the per-AP policy network (:class:`jaxrrm.algos.common.NetConfig`; separate
        parameters per AP by default).
    """

    lr: float = 3e-4
    max_grad_norm: float = 10.0
    net: NetConfig = CQL_NET

    def __post_init__(self):
        for name in ("lr", "max_grad_norm"):
            v = getattr(self, name)
            require(is_num(v) and v > 0 and math.isfinite(v), name, "> 0 (finite)", v)
        require(isinstance(self.net, NetConfig), "net", "a NetConfig", self.net)

    def replace(self, **kw) -> "BCConfig":
        return dataclasses.replace(self, **kw)


@struct.dataclass
class BCState:
    """Training state: ``params`` ``{"actor"}``, ``opt_state``, ``step`` ``[]`` int32."""

    params: Any
    opt_state: Any
    step: jax.Array


class Learner(NamedTuple):
    """``init(key)``, ``update(state, batch, key)``, ``policy(params, greedy=True)``, ``loss(
    actor_params, batch) -> (loss, aux)``, the ``actor`` module and the configurations."""

    init: Callable
    update: Callable
    policy: Callable
    loss: Callable
    actor: Any
    env_cfg: EnvConfig
    config: BCConfig


def masked_cross_entropy(logits, mask, actions, weight=None):
    """Mean of ``-log pi(actions)`` under the masked softmax of ``logits``.

    Args:
      logits: ``[..., A]``.  mask: ``[..., A]`` bool.  actions: ``[...]`` int.
      weight: optional ``[...]`` weights (e.g. 0 for rows to leave out).

    Returns:
      A scalar: the (weighted) mean cross-entropy.
    """
    nll = -q_at(masked_log_softmax(logits, mask), actions)
    if weight is None:
        return jnp.mean(nll)
    weight = jnp.asarray(weight, nll.dtype)
    return jnp.sum(weight * nll) / jnp.maximum(jnp.sum(weight), 1.0)


@functools.lru_cache(maxsize=None)
def make_learner(env_cfg: EnvConfig, cfg: BCConfig = BCConfig()) -> Learner:
    """The BC learner for ``env_cfg`` (cached per configuration pair)."""
    actor = cfg.net.agent_net(env_cfg, out_scale=0.01)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    example = jnp.zeros((env_cfg.num_aps, env_cfg.obs_dim), jnp.float32)

    def init(key) -> BCState:
        params = {"actor": actor.init(key, example)}
        return BCState(params=params, opt_state=tx.init(params["actor"]),
                       step=jnp.zeros((), jnp.int32))

    def loss(a_params, batch: Transitions):
        acts = canonical_actions(batch.actions, batch.action_mask, env_cfg)     # [B, I]
        valid = q_at(batch.action_mask, acts)                                  # [B, I]
        logits = actor.apply(a_params, batch.obs)                              # [B, I, A]
        ce = masked_cross_entropy(logits, batch.action_mask, acts, valid)
        logp = masked_log_softmax(logits, batch.action_mask)
        hit = (masked_argmax(logits, batch.action_mask) == acts) & valid
        acc = jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)
        return ce, {"accuracy": acc, "entropy": jnp.mean(masked_entropy(logp, batch.action_mask))}

    def update(state: BCState, batch: Transitions, key):
        del key
        (ce, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params["actor"], batch)
        upd, opt_state = tx.update(grads, state.opt_state, state.params["actor"])
        params = {"actor": optax.apply_updates(state.params["actor"], upd)}
        m = {"loss": ce, "grad_norm": optax.tree.norm(grads), **aux}
        return BCState(params=params, opt_state=opt_state, step=state.step + 1), m

    def make_policy(params, greedy: bool = True):
        p = params.params if isinstance(params, BCState) else params
        p = p["actor"] if isinstance(p, dict) and "actor" in p else p

        def pol(key, obs, env_state, env_params):
            logits = actor.apply(p, obs.agents)
            if greedy:
                return masked_argmax(logits, obs.action_mask)
            return sample_masked(key, logits, obs.action_mask)

        return pol

    return Learner(init=init, update=update, policy=make_policy, loss=loss, actor=actor,
                   env_cfg=env_cfg, config=cfg)


def init(key, env_cfg: EnvConfig, bc_cfg: BCConfig = BCConfig()) -> BCState:
    """Initial :class:`BCState`."""
    return make_learner(env_cfg, bc_cfg).init(key)


def update(state: BCState, batch: Transitions, key, env_cfg: EnvConfig,
           bc_cfg: BCConfig = BCConfig()):
    """One gradient step: ``(state, metrics)`` (configs static under ``jit``)."""
    return make_learner(env_cfg, bc_cfg).update(state, batch, key)


def policy(params, bc_cfg: BCConfig, env_cfg: EnvConfig, greedy: bool = True):
    """The cloned policy as a jaxrrm Policy ``(key, obs, env_state, env_params) -> [I] int32``."""
    return make_learner(env_cfg, bc_cfg).policy(params, greedy)
