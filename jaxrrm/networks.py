"""Flax networks for the learners: MLPs, per-agent Q networks / categorical actors, action masking.

With ``I = cfg.num_aps`` agents, observation length ``D = cfg.obs_dim`` (``2N``) and ``A =
cfg.num_actions`` actions per agent, the per-agent heads map

    obs ``[..., I, D]`` -> ``[..., I, A]`` (Q-values of a critic, or logits of an actor)

in one of two parameterisations (:class:`AgentNet`):

* ``shared=True``: one MLP for every AP (parameter sharing). With ``agent_id=True`` a one-hot of the
  agent index (``I`` numbers) is appended to each agent's observation, so the shared network can
  still specialise per AP. Parameters: one MLP of input ``D (+ I)``.
* ``shared=False``: separate parameters per AP: the MLP's parameters carry a leading agent axis
  ``[I, ...]`` (Flax ``nn.vmap`` over the agent axis of the input), so agent ``i``'s output depends
  only on its own slice of the parameters.

Masked (invalid) actions: :func:`mask_logits` replaces their entries by :data:`MASK_VALUE`, a large
negative *finite* number, before any argmax / softmax. Finite, not ``-inf``: ``softmax`` then still
gives them probability exactly 0 in float32 while ``log_softmax`` stays finite, so ``pi * log pi``
terms never produce ``0 * inf = NaN`` (use :func:`masked_log_softmax` and sum entropies with
``where(mask, ...)``).

Ensembles (twin critics): initialise with ``jax.vmap(net.init)`` over a batch of keys and apply with
``jax.vmap(net.apply, in_axes=(0, None))`` (:func:`ensemble_init`, :func:`ensemble_apply`).

These modules are generic (width, depth, activation, output size all configurable); the offline CQL
learners reuse them, including :class:`MLP` alone for the centralized critic over the global state,
and :class:`QMixer`, the QMIX monotonic mixer of per-agent utilities conditioned on the global state
(the ``qmix`` paradigm of :mod:`jaxrrm.algos.cql`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from .config import EnvConfig
from .env import argmax_first

#: Logit / Q-value given to masked actions: far below any real value, yet finite (see module doc).
MASK_VALUE = -1e9

ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
}


def activation_fn(name: str) -> Callable:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`); ValueError otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is invalid: allowed are {tuple(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """A multilayer perceptron ``[..., d_in] -> [..., out]``.

    Attributes:
      out: output size.
      hidden: sizes of the hidden layers (depth = ``len(hidden)``), default ``(256, 256)``.
      activation: name in :data:`ACTIVATIONS` (default ``"relu"``).
      layer_norm: apply LayerNorm after each hidden Dense (before the activation).
      out_scale: the last layer's weights are initialised with this variance scale (small values
        start Q-values / logits near 0, i.e. a near-uniform initial policy).
    """

    out: int
    hidden: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        act = activation_fn(self.activation)
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        init = nn.initializers.variance_scaling(self.out_scale, "fan_avg", "uniform")
        return nn.Dense(self.out, kernel_init=init)(x)


class AgentNet(nn.Module):
    """Per-agent head: observations ``[..., I, D]`` -> ``[..., I, A]`` (Q-values or logits).

    No masking is applied here (call :func:`mask_logits` with the action mask); outputs are raw.

    Attributes:
      num_agents: ``I``.
      num_actions: ``A``.
      hidden, activation, layer_norm, out_scale: of the underlying :class:`MLP`.
      shared: one set of parameters for every agent (True) or one per agent (False).
      agent_id: with ``shared``, append a one-hot agent index to each agent's input (ignored when
        ``shared=False``, where each agent has its own network anyway).
    """

    num_agents: int
    num_actions: int
    hidden: Sequence[int] = (256, 256)
    activation: str = "relu"
    layer_norm: bool = False
    out_scale: float = 1.0
    shared: bool = True
    agent_id: bool = True

    @classmethod
    def for_env(cls, cfg: EnvConfig, **kw) -> "AgentNet":
        """An :class:`AgentNet` sized for ``cfg`` (``I = num_aps``, ``A = num_actions``)."""
        return cls(num_agents=cfg.num_aps, num_actions=cfg.num_actions, **kw)

    @nn.compact
    def __call__(self, obs):
        """``obs [..., I, D]`` float -> ``[..., I, A]`` float32."""
        if obs.shape[-2] != self.num_agents:
            raise ValueError(f"obs has {obs.shape[-2]} agents on axis -2, "
                             f"expected {self.num_agents}")
        mlp_kw = dict(out=self.num_actions, hidden=tuple(self.hidden), activation=self.activation,
                      layer_norm=self.layer_norm, out_scale=self.out_scale)
        if self.shared:
            x = obs
            if self.agent_id:
                eye = jnp.eye(self.num_agents, dtype=obs.dtype)
                eye = jnp.broadcast_to(eye, obs.shape[:-1] + (self.num_agents,))
                x = jnp.concatenate([obs, eye], axis=-1)
            return MLP(**mlp_kw, name="mlp")(x)
        # Separate parameters: map the MLP over the agent axis (-2) of the input, with the
        # parameters stacked on a leading axis of size I.
        per_agent = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=obs.ndim - 2, out_axes=obs.ndim - 2,
                            axis_size=self.num_agents)
        return per_agent(**mlp_kw, name="mlp")(obs)


class QMixer(nn.Module):
    r"""QMIX monotonic mixing network (Rashid et al., arXiv 1803.11485, §4.2).

    Mixes the ``I`` per-agent utilities ``q = (Q_1(o_1, a_1), ..., Q_I(o_I, a_I))`` into a team
    value ``Q_tot``, with weights produced from the global state ``s`` by hypernetworks:

    .. math::

        W_1 &= |\mathrm{hyper\_w1}(s)| \in \mathbb{R}_{\ge 0}^{I \times E}, \qquad
        b_1 = \mathrm{hyper\_b1}(s) \in \mathbb{R}^{E}, \\
        W_2 &= |\mathrm{hyper\_w2}(s)| \in \mathbb{R}_{\ge 0}^{E}, \qquad
        b_2 = V(s) \in \mathbb{R}, \\
        h &= \mathrm{elu}(q^\top W_1 + b_1) \in \mathbb{R}^{E}, \qquad
        Q_{tot}(s, q) = h^\top W_2 + b_2 .

    ``hyper_w1`` and ``hyper_w2`` are two-layer MLPs (hidden width ``hyper_hidden``, ReLU; QMIX's
    ``hypernet_layers=2``), ``hyper_b1`` is one linear layer and ``V`` a one-hidden-layer MLP
    (width ``embed``, ReLU) to a scalar, as the reference implementation (PyMARL's ``QMixer``).
    ``W_1`` is the flat hypernetwork output ``[I * E]`` read row-major as ``[I, E]`` (entry
    ``(i, e)`` at ``i * E + e``). Parameters (Dense layers, ``{"kernel", "bias"}`` each):
    ``hyper_w1_0 [S, H]``, ``hyper_w1_1 [H, I E]``, ``hyper_b1 [S, E]``, ``hyper_w2_0 [S, H]``,
    ``hyper_w2_1 [H, E]``, ``V_0 [S, E]``, ``V_1 [E, 1]`` (``H = hyper_hidden``).

    Initialisation: every kernel ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default for a
    linear layer, so the reference's), biases 0. With states of unit scale the mixer then starts
    with a gain ``dQ_tot/dq_i`` of order 1; Flax's default (LeCun normal, three times the
    variance per layer) gives gains of order 10 through the two-layer hypernetworks of both
    ``W_1`` and ``W_2``, and a ``Q_tot`` far from ``sum_i q_i`` at the first update.

    Monotonicity holds by construction, for every state and every parameter value:

    .. math::

        \frac{\partial Q_{tot}}{\partial q_i}
        = \sum_{e} W_{1, ie} \, \mathrm{elu}'(\cdot)_e \, W_{2, e} \ge 0,

    since ``|.| >= 0`` and ``elu' > 0``: a greedy choice of each agent's own ``argmax_a Q_i``
    maximises ``Q_tot`` too (the IGM property), so execution stays decentralized. The state
    enters only the weights and biases (not through a monotone path), so ``Q_tot`` may depend on
    ``s`` arbitrarily.

    Attributes:
      num_agents: ``I``.
      embed: ``E``, width of the mixing layer (>= 1).
      hyper_hidden: hidden width of ``hyper_w1`` / ``hyper_w2`` (>= 1).

    Call: ``(q [..., I], state [..., S]) -> Q_tot [...]`` (same leading axes; float32).
    """

    num_agents: int
    embed: int = 32
    hyper_hidden: int = 64

    @nn.compact
    def __call__(self, q, state):
        """``q [..., I]``, ``state [..., S]`` -> ``[...]``."""
        if q.shape[-1] != self.num_agents:
            raise ValueError(f"q has {q.shape[-1]} agents on its last axis, "
                             f"expected {self.num_agents}")
        if q.shape[:-1] != state.shape[:-1]:
            raise ValueError(f"q {q.shape} and state {state.shape} differ in their leading axes")
        i, e = self.num_agents, self.embed
        init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

        def dense(x, out, name):
            return nn.Dense(out, kernel_init=init, name=name)(x)

        def two_layer(x, out, hidden, name):
            return dense(nn.relu(dense(x, hidden, f"{name}_0")), out, f"{name}_1")

        w1 = jnp.abs(two_layer(state, i * e, self.hyper_hidden, "hyper_w1"))
        w1 = w1.reshape(state.shape[:-1] + (i, e))                       # [..., I, E]
        b1 = dense(state, e, "hyper_b1")                                 # [..., E]
        w2 = jnp.abs(two_layer(state, e, self.hyper_hidden, "hyper_w2"))  # [..., E]
        b2 = two_layer(state, 1, e, "V")[..., 0]                         # [...]
        h = nn.elu(jnp.einsum("...i,...ie->...e", q, w1) + b1)
        return jnp.sum(h * w2, axis=-1) + b2


def mask_logits(x, mask):
    """``x`` where ``mask`` else :data:`MASK_VALUE` (same shape; ``mask`` broadcastable, bool)."""
    return jnp.where(mask, x, jnp.asarray(MASK_VALUE, x.dtype))


def masked_argmax(x, mask):
    """Argmax over the last axis among valid actions: ``[..., A] -> [...]`` int32.

    If a row has no valid action (cannot happen with ``allow_idle``), returns 0.
    """
    return argmax_first(mask_logits(x, mask))


def masked_log_softmax(logits, mask):
    """Log-probabilities of the masked categorical: ``[..., A]``; masked entries ~ ``MASK_VALUE``.

    Finite everywhere; ``exp`` of a masked entry is exactly 0.
    """
    return jax.nn.log_softmax(mask_logits(logits, mask), axis=-1)


def masked_entropy(logp, mask):
    """Entropy ``-sum_a pi(a) log pi(a)`` over valid actions only: ``[..., A] -> [...]``."""
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(mask, p * logp, 0.0), axis=-1)


def sample_masked(key, logits, mask):
    """Sample actions from the masked categorical: ``[..., A] -> [...]`` int32 (never masked)."""
    return jax.random.categorical(key, mask_logits(logits, mask), axis=-1).astype(jnp.int32)


def random_valid_actions(key, mask):
    """A uniformly random valid action per row of ``mask``: ``[..., A] bool -> [...]`` int32
    (idle included where it is valid; never a masked action while the row has a valid one)."""
    logits = jnp.where(mask, 0.0, -1e9)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def ensemble_init(net: nn.Module, key, example, num: int):
    """Parameters of ``num`` independently initialised copies of ``net``, stacked on axis 0."""
    return jax.vmap(lambda k: net.init(k, example))(jax.random.split(key, num))


def ensemble_apply(net: nn.Module, params, x):
    """Apply every member of an ensemble to the same input: ``[num, *net(x).shape]``."""
    return jax.vmap(lambda p: net.apply(p, x))(params)
