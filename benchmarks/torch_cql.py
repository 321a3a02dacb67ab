"""PyTorch reference of the offline CQL update of :mod:`jaxrrm.algos.cql` (SAC backbone).

The yardstick of ``python -m benchmarks.train_throughput``: the same networks, losses, optimizers
and minibatch as the JAX learner, written the way offline-RL code in PyTorch usually is (plain
``nn.Module``s, ``torch.optim.Adam``, one eager Python step per update), so that the
updates-per-second ratio compares like with like. Needs the optional ``bench`` extra
(``pip install -e '.[bench]'``, CPU wheel: ``--index-url https://download.pytorch.org/whl/cpu``).

What is implemented (centralized, independent and CTDE; not QMIX; SAC backbone only)
------------------------------------------------------------------------------------
* twin critics (``num_critics``), Polyak target critics, categorical actor, one temperature per
  decision-maker with Adam on ``log alpha`` (``autotune_alpha``);
* critic loss ``sum_k mean_b [...]`` with the CQL(H) penalty ``logsumexp - Q(a_data)``, the soft
  value of the next state from the current actor and the min over the target critics, the CTDE
  team target on ``Q_tot = sum_i Q_i``; actor loss against the min of the critics' values on the
  batch from *before* the critic step (as the JAX learner); temperature loss
  ``mean(log_alpha * (H - target_entropy))``; masks applied as in JAX (``-1e9`` fill before
  every logsumexp / softmax, ``where(mask, ., 0)`` in every sum over actions);
* gradient clipping by global norm per optimizer (per AP in ``independent``), Adam
  (``eps = 1e-8``; optax's formula), then the Polyak update of the targets;
* canonical dataset actions (masked ones mapped to idle with ``allow_idle``).

Every loss is computed from the state *before* the update (as in JAX), so one backward pass of
``critic_loss + actor_loss + alpha_loss`` gives each optimizer exactly its own gradient (the
three parameter sets are disjoint and the cross terms are detached).

Network layouts (``style``)
---------------------------
* ``"vectorized"`` (default, the fast one): every set of independent MLPs of one role (the
  ``K x I`` per-AP critics, the ``I`` per-AP actors, the ``K`` centralized critics) is one
  *ensemble* of ``E`` members whose layers are ``torch.baddbmm`` over stacked weights
  ``[E, d_in, d_out]`` (CORL's ``VectorizedLinear``, the usual way fast ensemble critics are
  written in PyTorch). One matmul per layer per role, like XLA's batched dot.
* ``"loop"``: one ``nn.Sequential`` of ``nn.Linear`` per member, called in a Python loop (the
  most common style in multi-agent code; slower for many APs).

Weights are loaded from (and exported to) the JAX parameter pytree (:meth:`TorchCQL.load_jax`,
:meth:`TorchCQL.export_jax`), so losses and updates can be compared on the same weights and batch
(``tests/test_benchmarks_train.py``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MASK_VALUE = -1e9

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),  # flax nn.gelu: approximate=True
    "silu": F.silu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
}

LN_EPS = 1e-6  # flax nn.LayerNorm default


def set_threads(n: Optional[int] = None) -> int:
    """``torch.set_num_threads`` to ``n`` (default: the core count); returns it."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------------------------
# Ensembles of MLPs: x [E, B, d_in] -> [E, B, out]
# --------------------------------------------------------------------------------------------

def _dense_names(tree: dict) -> List[str]:
    return sorted((k for k in tree if k.startswith("Dense_")), key=lambda s: int(s[6:]))


class VectorizedMLP(nn.Module):
    """``E`` independent MLPs as batched matmuls (``baddbmm``) over stacked weights."""

    def __init__(self, num: int, d_in: int, hidden, out: int, activation: str = "relu",
                 layer_norm: bool = False):
        super().__init__()
        self.num, self.act, self.layer_norm = num, ACTIVATIONS[activation], layer_norm
        sizes = [d_in, *hidden, out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_scales = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(num, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(num, 1, b)))
            if layer_norm and i < len(hidden):
                self.ln_scales.append(nn.Parameter(torch.ones(num, 1, b)))
                self.ln_biases.append(nn.Parameter(torch.zeros(num, 1, b)))

    def forward(self, x):
        n = len(self.weights)
        for i in range(n):
            x = torch.baddbmm(self.biases[i], x, self.weights[i])
            if i < n - 1:
                if self.layer_norm:
                    x = F.layer_norm(x, x.shape[-1:], eps=LN_EPS)
                    x = x * self.ln_scales[i] + self.ln_biases[i]
                x = self.act(x)
        return x

    def member_sq_norms(self) -> torch.Tensor:
        """``[E]`` squared gradient norm of each member."""
        tot = 0
        for p in self.parameters():
            tot = tot + torch.sum(torch.square(p.grad).reshape(self.num, -1), dim=1)
        return tot

    @torch.no_grad()
    def load_flax(self, tree: dict) -> None:
        """Load a Flax ``MLP`` param dict whose leaves carry leading axes that multiply to E."""
        names = _dense_names(tree)
        for i, name in enumerate(names):
            k = np.array(tree[name]["kernel"], np.float32)
            b = np.array(tree[name]["bias"], np.float32)
            self.weights[i].copy_(torch.from_numpy(k.reshape((self.num,) + k.shape[-2:])))
            self.biases[i].copy_(torch.from_numpy(b.reshape(self.num, 1, b.shape[-1])))
            if self.layer_norm and i < len(names) - 1:
                ln = tree[f"LayerNorm_{i}"]
                self.ln_scales[i].copy_(torch.from_numpy(
                    np.array(ln["scale"], np.float32).reshape(self.num, 1, -1)))
                self.ln_biases[i].copy_(torch.from_numpy(
                    np.array(ln["bias"], np.float32).reshape(self.num, 1, -1)))

    @torch.no_grad()
    def export_flax(self, like: dict) -> dict:
        """The parameters as a Flax param dict shaped like ``like``."""
        out = {}
        names = _dense_names(like)
        for i, name in enumerate(names):
            out[name] = {
                "kernel": self.weights[i].detach().numpy().reshape(
                    np.shape(like[name]["kernel"])).copy(),
                "bias": self.biases[i].detach().numpy().reshape(
                    np.shape(like[name]["bias"])).copy()}
            if self.layer_norm and i < len(names) - 1:
                ln = like[f"LayerNorm_{i}"]
                out[f"LayerNorm_{i}"] = {
                    "scale": self.ln_scales[i].detach().numpy().reshape(
                        np.shape(ln["scale"])).copy(),
                    "bias": self.ln_biases[i].detach().numpy().reshape(
                        np.shape(ln["bias"])).copy()}
        return out


class LoopMLP(nn.Module):
    """``E`` independent ``nn.Sequential`` MLPs called one after the other (same interface)."""

    def __init__(self, num: int, d_in: int, hidden, out: int, activation: str = "relu",
                 layer_norm: bool = False):
        super().__init__()
        self.num = num
        act = {"relu": nn.ReLU, "gelu": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU,
               "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}[activation]
        sizes = [d_in, *hidden, out]
        self.members = nn.ModuleList()
        for _ in range(num):
            layers: List[nn.Module] = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers.append(nn.Linear(a, b))
                if i < len(hidden):
                    if layer_norm:
                        layers.append(nn.LayerNorm(b, eps=LN_EPS))
                    layers.append(act())
            self.members.append(nn.Sequential(*layers))

    def forward(self, x):
        return torch.stack([m(x[e]) for e, m in enumerate(self.members)])

    def member_sq_norms(self) -> torch.Tensor:
        return torch.stack([sum(torch.sum(torch.square(p.grad)) for p in m.parameters())
                            for m in self.members])

    def _linears(self, m):
        return [l for l in m if isinstance(l, nn.Linear)], [l for l in m
                                                             if isinstance(l, nn.LayerNorm)]

    @torch.no_grad()
    def load_flax(self, tree: dict) -> None:
        names = _dense_names(tree)
        for e, m in enumerate(self.members):
            lins, lns = self._linears(m)
            for i, name in enumerate(names):
                k = np.array(tree[name]["kernel"], np.float32)
                b = np.array(tree[name]["bias"], np.float32)
                k = k.reshape((self.num,) + k.shape[-2:])[e]
                lins[i].weight.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
                lins[i].bias.copy_(torch.from_numpy(b.reshape(self.num, -1)[e]))
            for i, ln in enumerate(lns):
                t = tree[f"LayerNorm_{i}"]
                ln.weight.copy_(torch.from_numpy(
                    np.array(t["scale"], np.float32).reshape(self.num, -1)[e]))
                ln.bias.copy_(torch.from_numpy(
                    np.array(t["bias"], np.float32).reshape(self.num, -1)[e]))

    @torch.no_grad()
    def export_flax(self, like: dict) -> dict:
        out = {}
        names = _dense_names(like)
        per = [self._linears(m) for m in self.members]
        for i, name in enumerate(names):
            k = np.stack([p[0][i].weight.detach().numpy().T for p in per])
            b = np.stack([p[0][i].bias.detach().numpy() for p in per])
            out[name] = {"kernel": k.reshape(np.shape(like[name]["kernel"])),
                         "bias": b.reshape(np.shape(like[name]["bias"]))}
        for i in range(len(per[0][1])):
            ln = like[f"LayerNorm_{i}"]
            out[f"LayerNorm_{i}"] = {
                "scale": np.stack([p[1][i].weight.detach().numpy() for p in per]).reshape(
                    np.shape(ln["scale"])),
                "bias": np.stack([p[1][i].bias.detach().numpy() for p in per]).reshape(
                    np.shape(ln["bias"]))}
        return out


STYLES = {"vectorized": VectorizedMLP, "loop": LoopMLP}


# --------------------------------------------------------------------------------------------
# Role networks: the paradigm's inputs -> [K, B, G, A] (critics) or [B, G, A] (actor)
# --------------------------------------------------------------------------------------------

class RoleNet(nn.Module):
    """The critics (``ensemble = K``) or the actor (``ensemble = None``) of one paradigm.

    Layouts (members of the underlying ensemble, in JAX's parameter order):
      centralized: ``K`` (or 1) MLPs of the global state ``[B, S] -> [B, A^I]``;
      per-AP, separate parameters: ``K x I`` (or ``I``) MLPs of ``o_i [B, D] -> [B, A]``;
      per-AP, shared: ``K`` (or 1) MLPs of ``[o_i, onehot(i)]`` over the ``B * I`` rows.
    """

    def __init__(self, env_cfg, net, central: bool, ensemble: Optional[int], style: str):
        super().__init__()
        self.central, self.k = central, ensemble
        self.num_aps, self.shared = env_cfg.num_aps, (net.shared and not central)
        self.agent_id = self.shared and net.agent_id
        k = ensemble or 1
        if central:
            d_in, out, num = env_cfg.state_dim, env_cfg.num_joint_actions, k
        else:
            d_in, out = env_cfg.obs_dim, env_cfg.num_actions
            if self.shared:
                num = k
                d_in += env_cfg.num_aps if self.agent_id else 0
            else:
                num = k * env_cfg.num_aps
        self.num = num
        self.mlp = STYLES[style](num, d_in, net.hidden, out, net.activation, net.layer_norm)
        # agent (AP) index of every member: for per-AP clipping (independent paradigm)
        self.member_agent = (torch.arange(num) % env_cfg.num_aps
                             if not (central or self.shared) else None)

    def forward(self, x):
        k = self.k or 1
        if self.central:                                   # x [B, S]
            y = self.mlp(x.unsqueeze(0).expand(k, *x.shape))  # [k, B, J]
            y = y.unsqueeze(2)                                 # [k, B, 1, J]
        elif self.shared:                                  # x [B, I, D]
            b, i, _ = x.shape
            if self.agent_id:
                eye = torch.eye(i, dtype=x.dtype).expand(b, i, i)
                x = torch.cat([x, eye], dim=-1)
            x = x.reshape(b * i, -1)
            y = self.mlp(x.unsqueeze(0).expand(k, *x.shape)).reshape(k, b, i, -1)
        else:                                              # x [B, I, D]
            b, i, d = x.shape
            xi = x.transpose(0, 1)                         # [I, B, D]
            xi = xi.unsqueeze(0).expand(k, i, b, d).reshape(k * i, b, d)
            y = self.mlp(xi).reshape(k, i, b, -1).transpose(1, 2)  # [k, B, I, A]
        return y if self.k is not None else y[0]

    def agent_sq_norms(self) -> torch.Tensor:
        """``[I]`` squared gradient norm per AP (separate per-AP parameters only)."""
        per_member = self.mlp.member_sq_norms()
        return torch.zeros(self.num_aps, dtype=per_member.dtype).index_add_(
            0, self.member_agent, per_member)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

BATCH_FIELDS = ("obs", "state", "action_mask", "actions", "reward", "next_obs", "next_state",
                "next_action_mask", "terminated", "truncated")


def to_torch(transitions) -> Dict[str, torch.Tensor]:
    """The fields an update needs of a :class:`jaxrrm.data.Transitions` as torch tensors
    (float32, bool masks and flags, int64 actions)."""
    out = {}
    for f in BATCH_FIELDS:
        x = np.asarray(getattr(transitions, f))
        if f == "actions":
            x = x.astype(np.int64)
        elif x.dtype != np.bool_:
            x = x.astype(np.float32)
        out[f] = torch.from_numpy(np.ascontiguousarray(x))
    return out


def sample(data: Dict[str, torch.Tensor], batch_size: int,
           generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Uniform minibatch with replacement (a replay buffer's ``sample``)."""
    n = data["reward"].shape[0]
    idx = torch.randint(0, n, (batch_size,), generator=generator)
    return {k: v[idx] for k, v in data.items()}


def masked_log_softmax(logits, mask):
    return torch.log_softmax(logits.masked_fill(~mask, MASK_VALUE), dim=-1)


# --------------------------------------------------------------------------------------------
# The learner
# --------------------------------------------------------------------------------------------

class TorchCQL:
    """Offline CQL (SAC backbone) of one paradigm, one seed, in PyTorch.

    Args:
      env_cfg: :class:`jaxrrm.EnvConfig`.  cfg: :class:`jaxrrm.algos.cql.CQLConfig` (SAC).
      style: ``"vectorized"`` or ``"loop"`` (module docstring).
      jax_params: optional ``CQLState.params`` (or the state) of the JAX learner to start from.
    """

    def __init__(self, env_cfg, cfg, style: str = "vectorized", jax_params: Any = None):
        from jaxrrm.baselines import joint_action_table

        if cfg.backbone != "sac":
            raise NotImplementedError("the PyTorch reference implements the SAC backbone only")
        if cfg.paradigm not in ("centralized", "independent", "ctde"):
            raise NotImplementedError(f"the PyTorch reference has no paradigm={cfg.paradigm!r} "
                                      "(centralized, independent and ctde only)")
        if style not in STYLES:
            raise ValueError(f"style={style!r}: one of {tuple(STYLES)}")
        self.env_cfg, self.cfg, self.style = env_cfg, cfg, style
        self.central = cfg.paradigm == "centralized"
        self.independent = cfg.paradigm == "independent"
        self.g = 1 if self.central else env_cfg.num_aps
        k = cfg.num_critics
        self.critic = RoleNet(env_cfg, cfg.critic_net, self.central, k, style)
        self.critic_target = RoleNet(env_cfg, cfg.critic_net, self.central, k, style)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.actor = RoleNet(env_cfg, cfg.actor_net, self.central, None, style)
        self.log_alpha = torch.full((self.g,), math.log(cfg.init_alpha), requires_grad=True)
        if self.central:
            self._table = torch.from_numpy(joint_action_table(env_cfg).astype(np.int64))
            self._place = torch.from_numpy(
                env_cfg.num_actions ** np.arange(env_cfg.num_aps - 1, -1, -1)).long()
            self._ap = torch.arange(env_cfg.num_aps)
        if jax_params is not None:
            self.load_jax(jax_params)
        self._make_optimizers()

    def _make_optimizers(self):
        def adam(params, lr):
            params = list(params)
            try:
                return torch.optim.Adam(params, lr=lr, eps=1e-8, fused=True)
            except (RuntimeError, TypeError):  # fused Adam unavailable on this build
                return torch.optim.Adam(params, lr=lr, eps=1e-8, foreach=True)

        self.opt_critic = adam(self.critic.parameters(), self.cfg.critic_lr)
        self.opt_actor = adam(self.actor.parameters(), self.cfg.actor_lr)
        self.opt_alpha = adam([self.log_alpha], self.cfg.alpha_lr)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._actor_params = list(self.actor.parameters())

    # ---------------------------------------------------------------- weights <-> JAX pytree
    def load_jax(self, params) -> None:
        """Load critics, targets, actor and temperatures from a JAX ``CQLState`` / its params
        (optimizer states are reset: use on a freshly initialised JAX state)."""
        p = getattr(params, "params", params)
        p = {k: v for k, v in p.items()}
        self._like = p
        for net, name in ((self.critic, "critic"), (self.critic_target, "critic_target"),
                          (self.actor, "actor")):
            tree = p[name]["params"]
            net.mlp.load_flax(tree if self.central else tree["mlp"])
        with torch.no_grad():
            self.log_alpha.copy_(torch.from_numpy(np.array(p["log_alpha"], np.float32)))
        if hasattr(self, "opt_critic"):
            self._make_optimizers()

    def export_jax(self) -> dict:
        """The current parameters as a NumPy pytree shaped like the JAX learner's params."""
        like = self._like
        out = {}
        for net, name in ((self.critic, "critic"), (self.critic_target, "critic_target"),
                          (self.actor, "actor")):
            tree = like[name]["params"]
            inner = net.mlp.export_flax(tree if self.central else tree["mlp"])
            out[name] = {"params": inner if self.central else {"mlp": inner}}
        out["log_alpha"] = self.log_alpha.detach().numpy().copy()
        return out

    # ---------------------------------------------------------------- losses
    def decisions(self, b):
        """``(x, mask [B, G, A], a [B, G], next_x, next_mask)`` as the JAX learner's."""
        env_cfg = self.env_cfg
        acts, mask = b["actions"], b["action_mask"]
        if env_cfg.allow_idle:
            valid = torch.gather(mask, -1, acts.unsqueeze(-1)).squeeze(-1)
            acts = torch.where(valid, acts, env_cfg.idle_action)
        if self.central:
            return (b["state"], self._joint_mask(mask), (acts * self._place).sum(-1, keepdim=True),
                    b["next_state"], self._joint_mask(b["next_action_mask"]))
        return b["obs"], mask, acts, b["next_obs"], b["next_action_mask"]

    def _joint_mask(self, mask):                     # [B, I, A] -> [B, 1, A^I]
        return mask[:, self._ap[None, :], self._table].all(-1).unsqueeze(1)

    def losses(self, b) -> Dict[str, torch.Tensor]:
        """Critic, actor and temperature losses of batch ``b`` at the current parameters (with
        autograd graphs to the critic, actor and ``log_alpha`` respectively), plus metrics."""
        cfg = self.cfg
        x, mask, a, nx, nmask = self.decisions(b)
        q = self.critic(x)                                              # [K, B, G, A]
        alpha = self.log_alpha.detach().exp()                           # [G]
        with torch.no_grad():
            q_next = torch.min(self.critic_target(nx), dim=0).values     # [B, G, A]
            logp_n = masked_log_softmax(self.actor(nx), nmask)
            soft = torch.exp(logp_n) * (q_next - alpha[:, None] * logp_n)
            v = torch.where(nmask, soft, 0.0).sum(-1)                   # [B, G]
            done = b["terminated"]
            if not cfg.bootstrap_truncated:
                done = done | b["truncated"]
            disc = cfg.gamma * (1.0 - done.float())                   # [B]
            r = cfg.reward_scale * b["reward"]
            y = r + disc * v.sum(-1) if cfg.decomposed else r[:, None] + disc[:, None] * v
        k = q.shape[0]
        q_a = torch.gather(q, -1, a.unsqueeze(0).unsqueeze(-1).expand(k, *a.shape, 1)
                           ).squeeze(-1)                                # [K, B, G]
        pen = torch.logsumexp(q.masked_fill(~mask, MASK_VALUE), dim=-1) - q_a
        if cfg.decomposed:
            td = torch.square(q_a.sum(-1) - y)                          # [K, B]
            critic_loss = (td + cfg.cql_alpha * pen.sum(-1)).mean(1).sum()
        else:
            td = torch.square(q_a - y)                                  # [K, B, G]
            critic_loss = (td + cfg.cql_alpha * pen).mean(1).sum()
        # actor: against the (detached) min of the critics on the batch
        q_min = torch.min(q.detach(), dim=0).values                    # [B, G, A]
        logp = masked_log_softmax(self.actor(x), mask)
        p = torch.exp(logp)
        per = torch.where(mask, p * (alpha[:, None] * logp - q_min), 0.0).sum(-1)  # [B, G]
        actor_loss = per.mean(0).sum()
        ent = -torch.where(mask, p * logp, 0.0).sum(-1)                # [B, G]
        n_valid = mask.sum(-1).clamp(min=1).float()
        gap = (ent - cfg.target_entropy_frac * torch.log(n_valid)).detach()
        alpha_loss = torch.mean(self.log_alpha[None, :] * gap)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss,
                "td_loss": td.detach().mean(), "cql_penalty": pen.detach().mean(),
                "entropy": ent.detach().mean(), "alpha": alpha.mean()}

    # ---------------------------------------------------------------- update
    def _clip(self, net: RoleNet, params: List[torch.Tensor]):
        max_norm = self.cfg.max_grad_norm
        if self.independent:                         # per-AP norm (clip_by_agent_norm)
            norm = torch.sqrt(net.agent_sq_norms())                     # [I]
            scale = torch.where(norm > max_norm, max_norm / norm.clamp(min=1e-30), 1.0)
            with torch.no_grad():
                if isinstance(net.mlp, VectorizedMLP):
                    s = scale[net.member_agent]                         # [E]
                    for p in params:
                        p.grad.mul_(s.view(-1, *([1] * (p.ndim - 1))))
                else:
                    for e, m in enumerate(net.mlp.members):
                        for p in m.parameters():
                            p.grad.mul_(scale[net.member_agent[e]])
            return
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        scale = torch.where(norm > max_norm, max_norm / norm, 1.0)  # optax clip_by_global_norm
        torch._foreach_mul_(grads, scale)

    def update(self, b) -> Dict[str, torch.Tensor]:
        """One gradient step of critics, actor and temperature on batch ``b``, then the Polyak
        update of the target critics. Returns the losses (detached tensors: no host sync)."""
        cfg = self.cfg
        out = self.losses(b)
        self.opt_critic.zero_grad(set_to_none=True)
        self.opt_actor.zero_grad(set_to_none=True)
        self.opt_alpha.zero_grad(set_to_none=True)
        (out["critic_loss"] + out["actor_loss"] + out["alpha_loss"]).backward()
        self._clip(self.critic, self._critic_params)
        self._clip(self.actor, self._actor_params)
        self.opt_critic.step()
        self.opt_actor.step()
        if cfg.autotune_alpha:
            self.opt_alpha.step()
        with torch.no_grad():
            torch._foreach_mul_(self._target_params, 1.0 - cfg.tau)
            torch._foreach_add_(self._target_params, self._critic_params, alpha=cfg.tau)
        return {k: v.detach() for k, v in out.items()}
