"""Offline multi-agent Conservative Q-Learning: functional losses and the four paradigms.

CQL (Kumar et al., arXiv 2006.04779) on a discrete soft actor-critic backbone (Christodoulou,
arXiv 1910.07207), as docs/design.md §4 and Eldeeb & Alves (arXiv 2501.12991) use it, plus a
DQN-backbone variant. Everything here is a pure function of arrays: no Python side effects, so the
update is ``jit``-, ``vmap``- (over seeds) and ``lax.scan``-able.

Decisions
---------
The losses are written once, over *decisions*: a decision is a categorical choice among ``A``
actions, with Q-values ``q [..., A]``, a validity mask ``mask [..., A]`` (bool) and the dataset's
action ``a_data [...]``. A minibatch of ``B`` joint transitions gives ``G`` decisions per row
(``[B, G, A]``), and the paradigm fixes what they are:

=================  =====================  ===================================================
paradigm           decisions ``G x A``     networks (input -> output)
=================  =====================  ===================================================
``centralized``    ``1 x A^I``            critic/actor MLP: global state ``[2NI]`` -> ``[A^I]``
(C-MARL-CQL)                              joint action ``a = encode(a_1..a_I)`` (base ``A``,
                                          :func:`jaxrrm.baselines.encode_joint_action`)
``independent``    ``I x A``              per-AP critic/actor: ``o_i [2N]`` -> ``[A]``,
(I-MARL-CQL)                              separate parameters, each its own TD target
``ctde``           ``I x A``              per-AP critic/actor as above, ``Q_tot = sum_i Q_i``
(CTDE-MARL-CQL)                           in one team TD target
``qmix``           ``I x A``              per-AP critic/actor as ``ctde``, ``Q_tot = M_s(Q_1,
(QMIX-MARL-CQL)                           ..., Q_I)``: a monotonic mixer conditioned on the
                                          global state ``s [state_dim]``
                                          (:class:`jaxrrm.networks.QMixer`, Rashid et al.,
                                          arXiv 1803.11485), in one team TD target
=================  =====================  ===================================================

CTDE and QMIX are the *decomposed* paradigms (:attr:`CQLConfig.decomposed`): per-AP utilities
``Q_i(o_i, a_i)`` trained on one team target, decentralized execution (each AP's actor, or its
critic's argmax, from its own observation; with QMIX's monotone mixer ``dQ_tot/dQ_i >= 0``, so
the per-AP argmaxes maximise ``Q_tot`` too). The mixer, ``Q_tot = elu(q W_1(s) + b_1(s)) W_2(s) +
V(s)`` with ``W_1 = |hyper_w1(s)| [I, E]``, ``W_2 = |hyper_w2(s)| [E]``
(``E = CQLConfig.mixer_embed``), is part of each critic: critic ``k`` of the ensemble has its own
mixer ``M^k`` and its Polyak target ``M^{k-}`` (the critic parameters are ``{"agents", "mixer"}``).

The joint mask of the centralized learner is the product of the per-AP masks: joint action ``j``
is valid iff every component ``decode(j)_i`` is valid for AP ``i`` (:func:`joint_action_mask`).

Losses (``K`` critics ``Q^k`` with Polyak targets ``Q^{k-}``; ``alpha`` the entropy temperature of
the decision; sums over ``a`` run over *valid* actions only)
-----------------------------------------------------------------------------------------------
* soft value (SAC backbone)::

      V(s') = sum_a pi(a|s') [min_k Q^{k-}(s', a) - alpha log pi(a|s')]           (soft_value)

  greedy value (DQN backbone, double DQN): ``V(s') = Q^-(s', argmax_a Q(s', a))`` (or
  ``max_a Q^-(s', a)`` with ``double=False``)                                (greedy_value)
* TD target: ``y = reward_scale * r + gamma * (1 - done) * V(s')``; independent and centralized
  have one target per decision (the team reward in each); CTDE has one team target
  ``y = r + gamma (1 - done) sum_i V_i(o_i')`` (each AP's soft value from its own actor,
  temperature and min over its own target critics, or its own greedy value). QMIX mixes, for
  each target critic ``k``, that critic's per-AP next values with its own target mixer, and
  takes the minimum of the ``K`` team targets::

      y = min_k [r + gamma (1 - done) M^{k-}_{s'}(V^k_1(o_1'), ..., V^k_I(o_I'))]

  with ``V^k_i`` the soft value of target critic ``k`` alone under AP ``i``'s actor and
  temperature (or the double-DQN greedy value; the DQN backbone has ``K = 1``). The minimum is
  taken over team values, each from one consistent ensemble member (critic and mixer trained
  together): clipped double-Q on ``Q_tot``. (A minimum over per-AP values first, as CTDE does,
  would leave no natural choice of which of the ``K`` mixers to apply; for ``K = 1`` both are the
  same.)
* CQL penalty per decision and critic: ``logsumexp_a Q(s, a) - Q(s, a_data)``    (cql_penalty)
* critic loss, summed over critics, averaged over the batch (squared error, no 1/2, as the CQL
  reference implementation; the TD part is :func:`jaxrrm.algos.losses.td_loss`, the discrete-SAC
  losses online SAC uses too, with ``cql_alpha * penalty`` added inside its reduction)::

      independent / centralized:  sum_k mean_b sum_g [(Q^k_g(a_g) - y_g)^2 + cql_alpha * pen^k_g]
      ctde:                       sum_k mean_b [(sum_i Q^k_i(a_i) - y)^2
                                               + cql_alpha * sum_i pen^k_i]
      qmix:                       sum_k mean_b [(M^k_s(Q^k_1(a_1), ..., Q^k_I(a_I)) - y)^2
                                               + cql_alpha * sum_i pen^k_i]

  (:func:`cql_critic_loss`, with ``mix`` for QMIX; with ``cql_alpha = 0`` it is the plain
  soft/double-DQN TD loss). In both decomposed paradigms the CQL penalty acts on the per-AP
  utilities (a penalty on ``Q_tot`` would need a logsumexp over the ``A^I`` joint actions).
* actor loss (SAC backbone), per decision: ``sum_a pi(a|s) [alpha log pi(a|s) - min_k Q^k(s, a)]``
  with the critics' values held fixed, summed over decisions, averaged over the batch
  (:func:`jaxrrm.algos.losses.actor_loss`); in CTDE and QMIX each AP's actor
  against its own ``min_k Q^k_i``.
* temperature (``autotune_alpha``): ``log alpha_g * (H[pi_g] - target_entropy_frac * log |valid|)``,
  one temperature per decision-maker (``G`` of them), averaged over the batch and the ``G``
  (:func:`jaxrrm.algos.losses.temperature_loss`, as :mod:`jaxrrm.algos.sac`).

Masked actions get the finite :data:`jaxrrm.networks.MASK_VALUE` in place of their Q-value or
logit before any logsumexp / softmax / argmax, and every sum over actions is taken with
``where(mask, ., 0)``: their values enter nothing, their probabilities are exactly 0, their
gradients exactly 0, and they are never chosen, sampled or bootstrapped from.

Terminal states and truncation
------------------------------
The game has no terminal state: episodes end by time limit only (docs/design.md §2); the datasets
mark an episode's last slot ``truncated=True, terminated=False`` and store as its ``next_obs`` that
episode's own final observation (``info["final_obs"]``), the true successor. So the TD target
**bootstraps through truncation**: ``done = terminated`` and the discount is
``gamma * (1 - terminated)``. With ``CQLConfig(bootstrap_truncated=False)`` a truncated row is
treated as terminal as well (``done = terminated | truncated``), e.g. for data whose boundary
``next_obs`` is not a true successor. Slices of a behaviour stream cut episodes at either end,
but every row keeps its own successor, so nothing else is needed.

Dataset actions that are masked (none are, for data made by this package's policies) are mapped
to the idle action when ``allow_idle`` (that is how the environment executes them,
:func:`canonical_actions`).

Optimisation: Adam with gradient-norm clipping; in the ``independent`` paradigm the clipping is
per AP (:func:`clip_by_agent_norm`), so that each AP's update depends on its own loss only and
the learners are truly independent (the gradient of AP ``i``'s loss with respect to AP ``j``'s
parameters is exactly zero, and so is the effect of ``i``'s data on ``j``'s update). QMIX's mixers
are critic parameters: one optimizer, one clipping norm and one Polyak average for the per-AP
critics and the mixers together.

API
---
::

    learner = make_learner(env_cfg, CQLConfig(paradigm="ctde"))     # cached per config pair
    state = learner.init(key)                                        # CQLState
    state, metrics = learner.update(state, batch, key)               # pure; jit / vmap / scan it
    pol = learner.policy(state.params, greedy=True)                  # a jaxrrm Policy

or the module-level equivalents :func:`init`, :func:`update`, :func:`policy`. ``metrics`` (scalars):
``critic_loss``, ``td_loss`` (mean squared TD error per critic), ``cql_penalty`` (mean penalty
per decision and critic), ``q`` (mean Q of the dataset actions, the value regressed on the
target: ``Q_tot`` in CTDE and QMIX), ``target`` (mean TD target), ``q_gap`` (mean over decisions of
``Q(s, a_data) - mean_{valid a} Q(s, a)``: how much CQL favours the data's actions),
``actor_loss``, ``entropy`` (mean policy entropy per decision), ``alpha`` (mean temperature
used in this update), ``alpha_loss``, ``critic_grad_norm``. The DQN backbone has no actor: its
``actor_loss``, ``entropy``, ``alpha`` and ``alpha_loss`` are 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ..baselines import decode_joint_action, encode_joint_action
from ..config import EnvConfig, is_int, is_num, require
from ..data import Transitions
from ..env import policy_with_params, replicated_policy
from ..networks import (MLP, QMixer, ensemble_apply, ensemble_init, mask_logits, masked_argmax,
                        masked_log_softmax, random_valid_actions, sample_masked)
from .losses import (not_done, q_at, sac_actor_loss, soft_value, target_entropy,  # noqa: F401
                     td_loss, td_target, temperature_loss)
from .losses import actor_loss as sac_batch_actor_loss
from .netconfig import NetConfig
from .optim import gradient_step, polyak

PARADIGMS = ("centralized", "independent", "ctde", "qmix")
#: How a centralized policy is executed (:attr:`CQLConfig.execution`).
EXECUTIONS = ("joint", "replicated")
BACKBONES = ("sac", "dqn")

#: Default network of the offline learners: two hidden layers of 256 (ReLU), separate parameters
#: per AP (the paper's per-AP critics and actors).
CQL_NET = NetConfig(hidden=(256, 256), shared=False)

#: ``NetConfig.shared=None`` of the offline learners (CQL in every paradigm, BC) resolves to this:
#: separate parameters per AP, as :data:`CQL_NET` (``independent`` allows nothing else).
OFFLINE_SHARED = False

#: Default bound on the joint action space of the centralized learner (its output layer).
MAX_JOINT_ACTIONS = 4096

METRIC_NAMES = ("critic_loss", "td_loss", "cql_penalty", "q", "q_gap", "target", "actor_loss",
                "entropy", "alpha", "alpha_loss", "critic_grad_norm")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CQLConfig:
    """Hyperparameters of offline CQL (frozen, hashable; validated on construction).

    Attributes:
      paradigm: ``"centralized"`` (C-MARL-CQL), ``"independent"`` (I-MARL-CQL), ``"ctde"``
        (CTDE-MARL-CQL, ``Q_tot = sum_i Q_i``) or ``"qmix"`` (QMIX-MARL-CQL, ``Q_tot`` from a
        monotonic mixer conditioned on the global state); see the module docstring.
      backbone: ``"sac"`` (discrete SAC: twin critics, categorical actor, temperature) or
        ``"dqn"`` (one Q network, double-DQN target, greedy policy).
      gamma: discount in [0, 1) (0.9 as the behaviour learners: see :mod:`jaxrrm.algos.dqn`).
      cql_alpha: weight of the CQL penalty, >= 0 (1.0, the paper's; 0 = no conservatism).
      tau: Polyak rate of the target critics, (0, 1].
      critic_lr, actor_lr, alpha_lr: Adam learning rates (> 0).
      max_grad_norm: gradient-norm clip (> 0); per AP in the ``independent`` paradigm.
      init_alpha: initial entropy temperature (> 0).
      autotune_alpha: tune the temperature towards the target entropy (else fixed at
        ``init_alpha``).
      target_entropy_frac: target entropy as a fraction of ``log(valid actions)``, in [0, 1).
      num_critics: critics of the SAC backbone (>= 1; 2 = twin critics, min in the targets and
        the actor loss). The DQN backbone always has one Q network.
      double: DQN backbone: double-DQN target (online argmax, target value); else max of target.
      reward_scale: the team reward is multiplied by this in the TD target (> 0).
      bootstrap_truncated: bootstrap through truncation (True: the game ends by time limit only,
        docs/design.md §2); False treats a truncated row as terminal.
      critic_net, actor_net: :class:`jaxrrm.algos.netconfig.NetConfig` of the critics and the
        actor (hidden widths, activation, layer norm; ``shared``/``agent_id`` choose parameter
        sharing across APs in ``ctde`` and ``qmix``; ``independent`` requires
        ``shared=False``; ``shared=None`` resolves to ``False``, per-AP parameters, in every
        paradigm; the centralized networks are single MLPs and ignore them).
      max_joint_actions: largest ``(N+1)^I`` the centralized learner accepts (>= 1).
      mixer_embed: ``qmix``: width ``E`` of the mixing layer of :class:`jaxrrm.networks.QMixer`
        (>= 1; 32 as QMIX). Ignored by the other paradigms.
      mixer_hyper_hidden: ``qmix``: hidden width of the two-layer hypernetworks producing the
        mixing weights (>= 1; 64 as QMIX's ``hypernet_embed``). Ignored by the other paradigms.
      execution: ``centralized`` only: ``"joint"`` (one controller reads the global state and
        sends every AP its action) or ``"replicated"`` (decentralized execution: each AP rebuilds
        the global state from its own observation and runs the same joint policy,
        :func:`jaxrrm.env.replicated_policy`; needs ``EnvConfig.obs_share="global"``; same
        actions bit for bit). The other paradigms execute per AP already; they accept "joint".
    """

    paradigm: str = "ctde"
    backbone: str = "sac"
    gamma: float = 0.9
    cql_alpha: float = 1.0
    tau: float = 0.005
    critic_lr: float = 3e-4
    actor_lr: float = 3e-4
    alpha_lr: float = 3e-4
    max_grad_norm: float = 10.0
    init_alpha: float = 0.1
    autotune_alpha: bool = True
    target_entropy_frac: float = 0.3
    num_critics: int = 2
    double: bool = True
    reward_scale: float = 1.0
    bootstrap_truncated: bool = True
    critic_net: NetConfig = CQL_NET
    actor_net: NetConfig = CQL_NET
    max_joint_actions: int = MAX_JOINT_ACTIONS
    mixer_embed: int = 32
    mixer_hyper_hidden: int = 64
    execution: str = "joint"

    def __post_init__(self):
        require(self.paradigm in PARADIGMS, "paradigm", f"one of {PARADIGMS}", self.paradigm)
        require(self.execution in EXECUTIONS, "execution", f"one of {EXECUTIONS}",
                self.execution)
        require(self.execution == "joint" or self.paradigm == "centralized", "execution",
                "'joint' unless paradigm='centralized' (the other paradigms act per AP)",
                self.execution)
        require(self.backbone in BACKBONES, "backbone", f"one of {BACKBONES}", self.backbone)
        require(is_num(self.gamma) and 0.0 <= self.gamma < 1.0, "gamma", "[0, 1)", self.gamma)
        require(is_num(self.cql_alpha) and self.cql_alpha >= 0.0 and math.isfinite(self.cql_alpha),
                "cql_alpha", ">= 0 (finite)", self.cql_alpha)
        require(is_num(self.tau) and 0.0 < self.tau <= 1.0, "tau", "(0, 1]", self.tau)
        for name in ("critic_lr", "actor_lr", "alpha_lr", "max_grad_norm", "init_alpha",
                     "reward_scale"):
            v = getattr(self, name)
            require(is_num(v) and v > 0 and math.isfinite(v), name, "> 0 (finite)", v)
        require(is_num(self.target_entropy_frac) and 0.0 <= self.target_entropy_frac < 1.0,
                "target_entropy_frac", "[0, 1)", self.target_entropy_frac)
        require(is_int(self.num_critics) and self.num_critics >= 1, "num_critics",
                "an integer >= 1", self.num_critics)
        for name in ("max_joint_actions", "mixer_embed", "mixer_hyper_hidden"):
            require(is_int(getattr(self, name)) and getattr(self, name) >= 1, name,
                    "an integer >= 1", getattr(self, name))
        for name in ("autotune_alpha", "double", "bootstrap_truncated"):
            require(isinstance(getattr(self, name), bool), name, "True or False",
                    getattr(self, name))
        for name in ("critic_net", "actor_net"):
            net = getattr(self, name)
            require(isinstance(net, NetConfig), name, "a NetConfig", net)
            net = net.resolve(OFFLINE_SHARED)      # None: per-AP parameters in every paradigm
            object.__setattr__(self, name, net)
            if self.paradigm == "independent":
                require(not net.shared, f"{name}.shared",
                        "False for paradigm='independent' (each AP its own parameters)",
                        net.shared)

    def replace(self, **kw) -> "CQLConfig":
        return dataclasses.replace(self, **kw)

    @property
    def decomposed(self) -> bool:
        """True for CTDE and QMIX: per-AP utilities ``Q_i`` with one team TD target on
        ``Q_tot`` (their sum, or their QMIX mixture)."""
        return self.paradigm in ("ctde", "qmix")

    @property
    def mixed(self) -> bool:
        """True for QMIX: ``Q_tot`` from a monotonic mixer of the per-AP utilities."""
        return self.paradigm == "qmix"


def check_execution(env_cfg: EnvConfig, execution: str) -> None:
    """``execution="replicated"`` needs every AP to observe the global state."""
    if execution == "replicated" and env_cfg.obs_share != "global":
        raise ValueError("execution='replicated' needs EnvConfig.obs_share='global' (each AP "
                         "rebuilds the global state from its own observation); got "
                         f"obs_share={env_cfg.obs_share!r}")


def check_env(env_cfg: EnvConfig, cfg: CQLConfig) -> None:
    """Raise ``ValueError`` if ``cfg`` cannot run on ``env_cfg`` (centralized: joint actions;
    replicated execution: shared observations)."""
    check_execution(env_cfg, cfg.execution)
    if cfg.paradigm == "centralized" and env_cfg.num_joint_actions > cfg.max_joint_actions:
        raise ValueError(
            f"paradigm='centralized' needs num_actions**num_aps = {env_cfg.num_actions}**"
            f"{env_cfg.num_aps} = {env_cfg.num_joint_actions} joint actions; max_joint_actions="
            f"{cfg.max_joint_actions} is the allowed maximum (raise max_joint_actions, or use "
            "paradigm='ctde' / 'qmix' / 'independent', whose size is linear in the number of "
            "APs)")


# --------------------------------------------------------------------------------------------
# Generic pieces over decisions: q [..., A], mask [..., A], a_data [...]
# --------------------------------------------------------------------------------------------

def masked_logsumexp(q, mask):
    """``log sum_{a valid} exp q[..., a]`` -> ``[...]`` (masked entries contribute exactly 0)."""
    return jax.nn.logsumexp(mask_logits(q, mask), axis=-1)


def cql_penalty(q, mask, a_data):
    """CQL(H) penalty of one decision: ``logsumexp_{a valid} Q(s, a) - Q(s, a_data)``.

    Args:
      q: ``[..., A]`` Q-values.  mask: ``[..., A]`` bool, True where valid.
      a_data: ``[...]`` int, the dataset's action (assumed valid).

    Returns:
      ``[...]``, >= 0 when ``a_data`` is valid (``log |valid|`` when all Q are equal).
    """
    return masked_logsumexp(q, mask) - q_at(q, a_data)


def greedy_value(q_target, mask, q_online=None):
    """Greedy value over valid actions -> ``[...]``.

    With ``q_online`` (double DQN): ``q_target[argmax_{valid} q_online]``; else
    ``max_{valid} q_target``.
    """
    a_star = masked_argmax(q_target if q_online is None else q_online, mask)
    return q_at(q_target, a_star)


def q_tot(q, actions):
    """CTDE value decomposition: ``Q_tot = sum_i Q_i(o_i, a_i)``; ``q [..., I, A]``,
    ``actions [..., I]`` -> ``[...]``."""
    return jnp.sum(q_at(q, actions), axis=-1)


def cql_critic_loss(q, a_data, mask, target, cql_alpha, decomposed: bool = False,
                    mix: Optional[Callable] = None):
    """The CQL critic loss of ``K`` critics over a batch of ``B`` rows of ``G`` decisions.

    Args:
      q: ``[K, B, G, A]`` Q-values of the online critics.
      a_data: ``[B, G]`` int dataset actions.  mask: ``[B, G, A]`` bool.
      target: TD targets (no gradient is taken through them): ``[B, G]`` per decision, or
        ``[B]`` with ``decomposed`` (the team target of ``Q_tot``).
      cql_alpha: penalty weight (float or scalar array).
      decomposed: value decomposition: one team value ``Q_tot`` per row and critic.
      mix: with ``decomposed``, ``mix(q_a [K, B, G]) -> Q_tot [K, B]``, critic ``k``'s mixture
        of its utilities of the data actions (QMIX: its own mixer; gradients flow through it);
        ``None``: ``Q_tot = sum_g Q_g`` (CTDE).

    Returns:
      ``(loss, aux)``: the scalar loss ``sum_k mean_b [...]`` (module docstring) and a dict of
      ``td_loss`` (mean squared TD error), ``cql_penalty`` (mean over ``K, B, G``), ``q`` (mean
      Q of the data actions, ``Q_tot`` if decomposed), ``q_gap`` (mean over decisions of
      ``Q(a_data)`` minus the mean Q over valid actions), ``target`` (mean), and, when not
      decomposed, ``loss_per_decision`` ``[G]`` (summing to ``loss``; decision ``g``'s loss
      depends on ``q[:, :, g]`` only).
    """
    if mix is not None and not decomposed:
        raise ValueError("cql_critic_loss: mix needs decomposed=True (one team target per row)")
    target = jax.lax.stop_gradient(target)
    q_a = q_at(q, a_data[None])                         # [K, B, G]
    pen = cql_penalty(q, mask[None], a_data[None])      # [K, B, G]
    if decomposed:
        q_pred = jnp.sum(q_a, axis=-1) if mix is None else mix(q_a)  # [K, B]
        loss, _, td = td_loss(q_pred, target, cql_alpha * jnp.sum(pen, axis=-1))  # td [K, B]
        aux = {}
    else:
        q_pred = q_a
        loss, per, td = td_loss(q_a, target, cql_alpha * pen)  # per [G], td [K, B, G]
        aux = {"loss_per_decision": per}
    n_valid = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(q.dtype)              # [B, G]
    q_mean = jnp.sum(jnp.where(mask[None], q, 0.0), axis=-1) / n_valid[None]      # [K, B, G]
    aux.update(td_loss=jnp.mean(td), cql_penalty=jnp.mean(pen), q=jnp.mean(q_pred),
               q_gap=jnp.mean(q_a - q_mean), target=jnp.mean(target))
    return loss, aux


# --------------------------------------------------------------------------------------------
# Joint actions (centralized paradigm)
# --------------------------------------------------------------------------------------------

def joint_action_mask(mask, env_cfg: EnvConfig):
    """Joint mask ``[..., I, A] -> [..., A^I]``: joint action ``j`` is valid iff every AP's
    component ``decode_joint_action(j)_i`` is valid (row order of
    :func:`jaxrrm.baselines.joint_action_table`)."""
    num_aps, a = env_cfg.num_aps, env_cfg.num_actions
    if tuple(mask.shape[-2:]) != (num_aps, a):
        raise ValueError(f"mask has trailing shape {tuple(mask.shape[-2:])}, expected "
                         f"(num_aps, num_actions) = {(num_aps, a)}")
    # AND of the per-AP masks broadcast over an I-dimensional grid [..., A, ..., A] (AP 0 on
    # the slowest axis), flattened row-major: that is the base-A order of encode_joint_action.
    # (A gather through joint_action_table gives the same, but XLA fuses that gather into every
    # masked op over the joint actions: ~1.5x slower updates with 16 vmapped seeds.)
    mask = jnp.asarray(mask, bool)
    lead = mask.shape[:-2]
    out = None
    for i in range(num_aps):
        m = mask[..., i, :].reshape(lead + tuple(a if j == i else 1 for j in range(num_aps)))
        out = m if out is None else out & m
    return jnp.reshape(out, lead + (a ** num_aps,))


def canonical_actions(actions, mask, env_cfg: EnvConfig):
    """Dataset actions with masked entries replaced by the idle action (with ``allow_idle``), as
    the environment executes them; unchanged otherwise. ``[..., I]`` int32."""
    actions = jnp.asarray(actions, jnp.int32)
    if not env_cfg.allow_idle:
        return actions
    valid = q_at(mask, actions)
    return jnp.where(valid, actions, env_cfg.idle_action).astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Optimisation helpers
# --------------------------------------------------------------------------------------------

def clip_by_agent_norm(max_norm: float, agent_axis: int) -> optax.GradientTransformation:
    """Clip the gradient of each agent separately to norm ``max_norm``.

    Every leaf of the updates carries the agent axis at ``agent_axis``; agent ``i``'s norm is
    taken over its slices of all leaves. (``optax.clip_by_global_norm`` would couple the agents'
    updates through one shared norm.)
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        sq = sum(jnp.sum(jnp.square(u), axis=tuple(d for d in range(u.ndim) if d != agent_axis))
                 for u in leaves)
        norm = jnp.sqrt(sq)
        scale = jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, 1e-30), 1.0)

        def f(u):
            shape = [1] * u.ndim
            shape[agent_axis] = -1
            return u * scale.reshape(shape).astype(u.dtype)

        return jax.tree.map(f, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Learners
# --------------------------------------------------------------------------------------------

@struct.dataclass
class CQLState:
    """Training state (a pytree).

    Attributes:
      params: ``{"critic": [K, ...] stacked critics, "critic_target": same, and with the SAC
        backbone "actor" and "log_alpha" [G]}``; per-AP networks with ``shared=False`` carry the
        AP axis after the critic axis (critics) / first (actor). QMIX: each critic is
        ``{"agents": per-AP critics [K, ...], "mixer": its QMixer [K, ...]}`` (so the optimizer
        and the Polyak targets cover the mixers too).
      opt_state: ``{"critic", "actor", "alpha"}`` optax states (``{"critic"}`` for DQN).
      step: ``[]`` int32, updates done.
    """

    params: Any
    opt_state: Any
    step: jax.Array


class Learner(NamedTuple):
    """What :func:`make_learner` returns (pure functions; closures over the static configs).

    Attributes:
      init: ``init(key) -> CQLState``.
      update: ``update(state, batch: Transitions, key) -> (state, metrics)`` (not jitted: jit,
        vmap or scan it; the key is unused by the current losses, which take exact expectations
        over actions, and is there for stochastic variants).
      policy: ``policy(params, greedy=True, epsilon=None) -> jaxrrm Policy`` (params: the
        ``CQLState`` or its ``params``).
      critic_loss: ``critic_loss(critic_params, params, batch) -> (loss, (aux, q_min))``.
      actor_loss: ``actor_loss(actor_params, params, batch, q_min) -> (loss, aux)`` (SAC) or
        None.
      decisions: ``decisions(batch) -> (x, mask, a, next_x, next_mask)``: network inputs,
        ``[B, G, A]`` masks and ``[B, G]`` actions of the batch.
      apply_critic: ``(critic_params, x) -> [K, ..., G, A]`` (QMIX: the per-AP utilities).
      apply_actor: ``(actor_params, x) -> [..., G, A]`` logits (SAC) or None.
      num_decisions: ``G``.  num_decision_actions: ``A`` (``A^I`` centralized).
      env_cfg, config: the configurations.
      mix: QMIX: ``mix(critic_params, q [K, B, I], state [B, state_dim]) -> Q_tot [K, B]``,
        each critic's own mixer applied to its per-AP utilities; None for the other paradigms.
    """

    init: Callable
    update: Callable
    policy: Callable
    critic_loss: Callable
    actor_loss: Optional[Callable]
    decisions: Callable
    apply_critic: Callable
    apply_actor: Optional[Callable]
    num_decisions: int
    num_decision_actions: int
    env_cfg: EnvConfig
    config: CQLConfig
    mix: Optional[Callable] = None


def _opt(lr, max_norm, agent_axis):
    clip = (clip_by_agent_norm(max_norm, agent_axis) if agent_axis is not None
            else optax.clip_by_global_norm(max_norm))
    return optax.chain(clip, optax.adam(lr))


@functools.lru_cache(maxsize=None)
def make_learner(env_cfg: EnvConfig, cfg: CQLConfig) -> Learner:
    """Build the learner of paradigm ``cfg.paradigm`` / backbone ``cfg.backbone`` for ``env_cfg``.

    Cached: the same configurations give the same :class:`Learner` (so jitted callers do not
    recompile).

    Raises:
      ValueError: the centralized joint action space exceeds ``cfg.max_joint_actions``.
    """
    check_env(env_cfg, cfg)
    sac = cfg.backbone == "sac"
    central = cfg.paradigm == "centralized"
    num_aps, num_actions = env_cfg.num_aps, env_cfg.num_actions
    num_k = cfg.num_critics if sac else 1
    if central:
        g, a_dec = 1, env_cfg.num_joint_actions

        def mlp(net: NetConfig, out_scale):
            return MLP(out=a_dec, hidden=net.hidden, activation=net.activation,
                       layer_norm=net.layer_norm, out_scale=out_scale)

        critic, actor = mlp(cfg.critic_net, 1.0), mlp(cfg.actor_net, 0.01)

        def to_inputs(agents, state):
            del agents
            return state

        def to_mask(mask):
            return joint_action_mask(mask, env_cfg)[..., None, :]

        def to_decision_actions(actions):
            return encode_joint_action(actions, num_actions)[..., None]

        def to_env_actions(a):
            return decode_joint_action(a[..., 0], num_aps, num_actions)

        def apply_critic(params, x):
            return ensemble_apply(critic, params, x)[..., None, :]

        def apply_actor(params, x):
            return actor.apply(params, x)[..., None, :]

        example = jnp.zeros((env_cfg.state_dim,), jnp.float32)
    else:
        g, a_dec = num_aps, num_actions
        critic = cfg.critic_net.agent_net(env_cfg)
        actor = cfg.actor_net.agent_net(env_cfg, out_scale=0.01)

        def to_inputs(agents, state):
            del state
            return agents

        def to_mask(mask):
            return mask

        def to_decision_actions(actions):
            return actions

        def to_env_actions(a):
            return a

        def apply_critic(params, x):
            return ensemble_apply(critic, params["agents"] if cfg.mixed else params, x)

        def apply_actor(params, x):
            return actor.apply(params, x)

        example = jnp.zeros((num_aps, env_cfg.obs_dim), jnp.float32)

    mixer = (QMixer(num_agents=num_aps, embed=cfg.mixer_embed,
                    hyper_hidden=cfg.mixer_hyper_hidden) if cfg.mixed else None)

    def mix(c_params, q, state):
        # q [K, B, I], state [B, S] -> [K, B]: critic k's mixer on critic k's utilities.
        return jax.vmap(lambda p, qk: mixer.apply(p, qk, state))(c_params["mixer"], q)

    independent = cfg.paradigm == "independent"
    tx_critic = _opt(cfg.critic_lr, cfg.max_grad_norm, 1 if independent else None)
    tx_actor = _opt(cfg.actor_lr, cfg.max_grad_norm, 0 if independent else None)
    tx_alpha = optax.adam(cfg.alpha_lr)

    def decisions(batch: Transitions):
        acts = canonical_actions(batch.actions, batch.action_mask, env_cfg)
        return (to_inputs(batch.obs, batch.state), to_mask(batch.action_mask),
                to_decision_actions(acts), to_inputs(batch.next_obs, batch.next_state),
                to_mask(batch.next_action_mask))

    def init(key) -> CQLState:
        k_c, k_a = jax.random.split(key)
        c_params = ensemble_init(critic, k_c, example, num_k)
        if cfg.mixed:
            q0 = jnp.zeros((num_aps,), jnp.float32)
            s0 = jnp.zeros((env_cfg.state_dim,), jnp.float32)
            keys = jax.random.split(jax.random.fold_in(k_c, 1), num_k)
            c_params = {"agents": c_params,
                        "mixer": jax.vmap(lambda k: mixer.init(k, q0, s0))(keys)}
        params = {"critic": c_params, "critic_target": c_params}
        opt_state = {"critic": tx_critic.init(c_params)}
        if sac:
            a_params = actor.init(k_a, example)
            log_alpha = jnp.full((g,), math.log(cfg.init_alpha), jnp.float32)
            params.update(actor=a_params, log_alpha=log_alpha)
            opt_state.update(actor=tx_actor.init(a_params), alpha=tx_alpha.init(log_alpha))
        return CQLState(params=params, opt_state=opt_state, step=jnp.zeros((), jnp.int32))

    def critic_loss(c_params, params, batch: Transitions):
        x, mask, a, nx, nmask = decisions(batch)
        q = apply_critic(c_params, x)                      # [K, B, G, A]
        q_next_t = apply_critic(params["critic_target"], nx)
        if sac:
            alpha = jnp.exp(params["log_alpha"])           # [G]
            logp_next = masked_log_softmax(apply_actor(params["actor"], nx), nmask)
            # QMIX: each target critic's own values (mixed by its own mixer below, then the min
            # over critics); the others: the min over critics first.
            q_boot = q_next_t if cfg.mixed else jnp.min(q_next_t, axis=0)
            v = soft_value(q_boot, logp_next, nmask, alpha)  # [B, G] (QMIX [K, B, G])
        else:
            q_online = apply_critic(c_params, nx)[0] if cfg.double else None
            v = greedy_value(q_next_t[0], nmask, q_online)  # [B, G]
            v = v[None] if cfg.mixed else v                 # (QMIX [K = 1, B, G])
        disc = cfg.gamma * not_done(batch.terminated, batch.truncated, cfg.bootstrap_truncated)
        r = cfg.reward_scale * batch.reward
        mix_q = None
        if cfg.mixed:
            y_k = td_target(r, mix(params["critic_target"], v, batch.next_state), disc)  # [K, B]
            y = jnp.min(y_k, axis=0)                       # [B]
            mix_q = functools.partial(mix, c_params, state=batch.state)
        elif cfg.decomposed:
            y = td_target(r, jnp.sum(v, axis=-1), disc)    # [B]
        else:
            y = td_target(r[:, None], v, disc[:, None])    # [B, G]
        loss, aux = cql_critic_loss(q, a, mask, y, cfg.cql_alpha, cfg.decomposed, mix_q)
        q_min = jax.lax.stop_gradient(jnp.min(q, axis=0))  # [B, G, A]
        return loss, (aux, q_min)

    def actor_loss(a_params, params, batch: Transitions, q_min):
        # q_min: min over the critics on batch's inputs, from the critic step before its update
        # (as jaxrrm.algos.sac: saves critic passes; the one-step lag is immaterial).
        x, mask, _, _, _ = decisions(batch)
        alpha = jnp.exp(params["log_alpha"])
        loss, per_dec, ent = sac_batch_actor_loss(apply_actor(a_params, x), q_min, mask, alpha)
        return loss, {"entropy": ent, "loss_per_decision": per_dec}

    def update(state: CQLState, batch: Transitions, key):
        del key
        params, opt_state = state.params, state.opt_state
        c_params, c_opt, c_loss, (aux, q_min), c_grads = gradient_step(
            critic_loss, params["critic"], opt_state["critic"], tx_critic, params, batch)
        new_params = dict(params, critic=c_params,
                          critic_target=polyak(params["critic_target"], c_params, cfg.tau))
        new_opt = dict(opt_state, critic=c_opt)
        zero = jnp.zeros((), jnp.float32)
        m = {"critic_loss": c_loss, "td_loss": aux["td_loss"], "cql_penalty": aux["cql_penalty"],
             "q": aux["q"], "q_gap": aux["q_gap"], "target": aux["target"],
             "critic_grad_norm": optax.tree.norm(c_grads), "actor_loss": zero, "entropy": zero,
             "alpha": zero, "alpha_loss": zero}
        if sac:
            a_params, a_opt, a_loss, a_aux, _ = gradient_step(
                actor_loss, params["actor"], opt_state["actor"], tx_actor, params, batch, q_min)
            ent = a_aux["entropy"]                                      # [B, G]
            _, mask, _, _, _ = decisions(batch)
            t_args = (ent, mask, cfg.target_entropy_frac)
            if cfg.autotune_alpha:
                log_alpha, al_opt, al_loss, _, _ = gradient_step(
                    temperature_loss, params["log_alpha"], opt_state["alpha"], tx_alpha, *t_args,
                    has_aux=False)
            else:
                al_opt, log_alpha = opt_state["alpha"], params["log_alpha"]
                al_loss = temperature_loss(params["log_alpha"], *t_args)
            new_params.update(actor=a_params, log_alpha=log_alpha)
            new_opt.update(actor=a_opt, alpha=al_opt)
            m.update(actor_loss=a_loss, entropy=jnp.mean(ent),
                     alpha=jnp.mean(jnp.exp(params["log_alpha"])), alpha_loss=al_loss)
        return CQLState(params=new_params, opt_state=new_opt, step=state.step + 1), m

    apply_fns = {}  # one apply_fn per (greedy, epsilon): stable, so rollouts compile once

    def apply_fn(greedy: bool, eps: float):
        if (greedy, eps) in apply_fns:
            return apply_fns[(greedy, eps)]

        def pol(p, key, obs, env_state, env_params):
            x = to_inputs(obs.agents, obs.global_state)
            mask = to_mask(obs.action_mask)                # [G, A]
            if sac:
                logits = apply_actor(p["actor"], x)       # [G, A]
                a = (masked_argmax(logits, mask) if greedy
                     else sample_masked(key, logits, mask))
            else:
                a = masked_argmax(apply_critic(p["critic"], x)[0], mask)
                if not greedy:
                    k1, k2 = jax.random.split(key)
                    rnd = random_valid_actions(k1, mask)
                    a = jnp.where(jax.random.uniform(k2, a.shape) < eps, rnd, a)
            return to_env_actions(a).astype(jnp.int32)

        if cfg.execution == "replicated":
            joint = pol

            def pol(p, key, obs, env_state, env_params):  # noqa: F811
                return replicated_policy(policy_with_params(joint, p), env_cfg)(
                    key, obs, env_state, env_params)

        apply_fns[(greedy, eps)] = pol
        return pol

    def make_policy(params, greedy: bool = True, epsilon: Optional[float] = None):
        p = params.params if isinstance(params, CQLState) else params
        eps = 0.05 if epsilon is None else float(epsilon)
        return policy_with_params(apply_fn(bool(greedy), eps), p)

    return Learner(init=init, update=update, policy=make_policy, critic_loss=critic_loss,
                   actor_loss=actor_loss if sac else None, decisions=decisions,
                   apply_critic=apply_critic, apply_actor=apply_actor if sac else None,
                   num_decisions=g, num_decision_actions=a_dec, env_cfg=env_cfg, config=cfg,
                   mix=mix if cfg.mixed else None)


# --------------------------------------------------------------------------------------------
# Module-level API
# --------------------------------------------------------------------------------------------

def policy(params, cql_cfg: CQLConfig, env_cfg: EnvConfig, greedy: bool = True,
           epsilon: Optional[float] = None):
    """The learned policy as a jaxrrm Policy ``(key, obs, env_state, env_params) -> [I] int32``.

    SAC backbone: the actor's masked argmax (``greedy``) or a sample. DQN backbone: the Q
    network's masked argmax, or epsilon-greedy over valid actions (``epsilon``, default 0.05).
    Centralized: the joint action from the global state, decoded per AP; the others (QMIX too:
    its mixer is used in training only): each AP from its own observation (decentralized
    execution).
    """
    return make_learner(env_cfg, cql_cfg).policy(params, greedy, epsilon)
