"""Behaviour cloning (BC): a per-AP categorical policy fit to the dataset's actions.

The offline reference of docs/design.md §4: each AP ``i`` has a categorical policy
``pi_i(a | o_i)`` (a :class:`jaxrrm.networks.AgentNet`, separate parameters per AP by default)
trained by the masked cross-entropy of the dataset actions::

    L = mean over (rows b, APs i) of  -log pi_i(a_data[b, i] | o_i[b])

where the softmax runs over the valid actions only (masked logits, :func:`jaxrrm.networks.
masked_log_softmax`). Dataset actions that are masked (none are, for data made by this package's
policies) are mapped to the idle action when ``allow_idle`` (as the environment executes them,
:func:`jaxrrm.algos.cql.canonical_actions`); without idle they are left out of the mean.
Execution is decentralized: each AP acts from its own observation (greedy = masked argmax, else
a sample).

``BCConfig(paradigm="centralized")`` is the centralized reference: one categorical policy
``pi(a | s)`` over the ``A^I`` joint actions (base-``A`` code of
:func:`jaxrrm.baselines.encode_joint_action`) from the global state ``s``, masked by the product
of the per-AP masks (:func:`jaxrrm.algos.cql.joint_action_mask`)::

    L = mean over rows b of  -log pi(encode(a_data[b]) | s[b])

Cloned from the exhaustive oracle's data, it measures how much of the oracle's decision the
global state carries (the oracle itself reads the true channel, not the observation).

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

from ..baselines import decode_joint_action, encode_joint_action
from ..config import EnvConfig, is_num, require
from ..data import Transitions
from ..env import policy_with_params, replicated_policy
from ..networks import MLP, masked_argmax, masked_entropy, masked_log_softmax, sample_masked
from .cql import (CQL_NET, EXECUTIONS, MAX_JOINT_ACTIONS, OFFLINE_SHARED, canonical_actions,
                  check_execution, joint_action_mask, q_at)
from .netconfig import NetConfig
from .optim import gradient_step


PARADIGMS = ("decentralized", "centralized")


@dataclasses.dataclass(frozen=True)
class BCConfig:
    """Hyperparameters of behaviour cloning (frozen, hashable; validated on construction).

    Attributes:
      lr: Adam learning rate (> 0).
      max_grad_norm: global gradient-norm clip (> 0).
      net: the per-AP policy network (:class:`jaxrrm.algos.netconfig.NetConfig`; separate
        parameters per AP by default, and for ``shared=None``); for ``"centralized"`` the
        joint policy's MLP (its ``shared`` / ``agent_id`` do not apply).
      paradigm: ``"decentralized"`` (per-AP policies on their own observations) or
        ``"centralized"`` (one joint-action policy on the global state).
      execution: ``"joint"`` or, centralized only, ``"replicated"`` (each AP runs the joint
        policy on the global state rebuilt from its own observation;
        :attr:`jaxrrm.algos.cql.CQLConfig.execution`).
    """

    lr: float = 3e-4
    max_grad_norm: float = 10.0
    net: NetConfig = CQL_NET
    paradigm: str = "decentralized"
    execution: str = "joint"

    def __post_init__(self):
        for name in ("lr", "max_grad_norm"):
            v = getattr(self, name)
            require(is_num(v) and v > 0 and math.isfinite(v), name, "> 0 (finite)", v)
        require(isinstance(self.net, NetConfig), "net", "a NetConfig", self.net)
        object.__setattr__(self, "net", self.net.resolve(OFFLINE_SHARED))  # None: per AP
        require(self.paradigm in PARADIGMS, "paradigm", f"one of {PARADIGMS}", self.paradigm)
        require(self.execution in EXECUTIONS, "execution", f"one of {EXECUTIONS}",
                self.execution)
        require(self.execution == "joint" or self.paradigm == "centralized", "execution",
                "'joint' unless paradigm='centralized'", self.execution)

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
    """The BC learner for ``env_cfg`` (cached per configuration pair).

    Raises:
      ValueError: ``"centralized"`` with more joint actions than
        :data:`jaxrrm.algos.cql.MAX_JOINT_ACTIONS`.
    """
    central = cfg.paradigm == "centralized"
    check_execution(env_cfg, cfg.execution)
    tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
    if central:
        if env_cfg.num_joint_actions > MAX_JOINT_ACTIONS:
            raise ValueError(
                f"BCConfig(paradigm='centralized') needs num_actions**num_aps = "
                f"{env_cfg.num_joint_actions} <= {MAX_JOINT_ACTIONS} joint actions")
        net = cfg.net
        actor = MLP(out=env_cfg.num_joint_actions, hidden=net.hidden, activation=net.activation,
                    layer_norm=net.layer_norm, out_scale=0.01)
        example = jnp.zeros((env_cfg.state_dim,), jnp.float32)

        def inputs(obs, state, mask, actions):   # -> x, [.., 1, J] mask, [.., 1] joint action
            joint = None if actions is None else encode_joint_action(
                actions, env_cfg.num_actions)[..., None]
            return state, joint_action_mask(mask, env_cfg)[..., None, :], joint

        def apply(p, x):
            return actor.apply(p, x)[..., None, :]

        def to_env(a):
            return decode_joint_action(a[..., 0], env_cfg.num_aps, env_cfg.num_actions)
    else:
        actor = cfg.net.agent_net(env_cfg, out_scale=0.01)
        example = jnp.zeros((env_cfg.num_aps, env_cfg.obs_dim), jnp.float32)

        def inputs(obs, state, mask, actions):
            return obs, mask, actions

        apply = actor.apply

        def to_env(a):
            return a

    def init(key) -> BCState:
        params = {"actor": actor.init(key, example)}
        return BCState(params=params, opt_state=tx.init(params["actor"]),
                       step=jnp.zeros((), jnp.int32))

    def loss(a_params, batch: Transitions):
        acts = canonical_actions(batch.actions, batch.action_mask, env_cfg)     # [B, I]
        x, mask, acts = inputs(batch.obs, batch.state, batch.action_mask, acts)
        valid = q_at(mask, acts)                                               # [B, G]
        logits = apply(a_params, x)                                            # [B, G, A]
        ce = masked_cross_entropy(logits, mask, acts, valid)
        logp = masked_log_softmax(logits, mask)
        hit = (masked_argmax(logits, mask) == acts) & valid
        acc = jnp.sum(hit) / jnp.maximum(jnp.sum(valid), 1)
        return ce, {"accuracy": acc, "entropy": jnp.mean(masked_entropy(logp, mask))}

    def update(state: BCState, batch: Transitions, key):
        del key
        a_params, opt_state, ce, aux, grads = gradient_step(
            loss, state.params["actor"], state.opt_state, tx, batch)
        params = {"actor": a_params}
        m = {"loss": ce, "grad_norm": optax.tree.norm(grads), **aux}
        return BCState(params=params, opt_state=opt_state, step=state.step + 1), m

    apply_fns = {}  # one apply_fn per mode: stable, so rollouts compile once

    def apply_fn(greedy: bool):
        if greedy in apply_fns:
            return apply_fns[greedy]

        def pol(p, key, obs, env_state, env_params):
            x, mask, _ = inputs(obs.agents, obs.global_state, obs.action_mask, None)
            logits = apply(p, x)
            a = (masked_argmax(logits, mask) if greedy else sample_masked(key, logits, mask))
            return to_env(a).astype(jnp.int32)

        if cfg.execution == "replicated":
            joint = pol

            def pol(p, key, obs, env_state, env_params):  # noqa: F811
                return replicated_policy(policy_with_params(joint, p), env_cfg)(
                    key, obs, env_state, env_params)

        apply_fns[greedy] = pol
        return pol

    def make_policy(params, greedy: bool = True):
        p = params.params if isinstance(params, BCState) else params
        p = p["actor"] if isinstance(p, dict) and "actor" in p else p
        return policy_with_params(apply_fn(bool(greedy)), p)

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
