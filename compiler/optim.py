"""Dale-preserving optimisers. Sign-constrained SGD (docs/science.md §3.1): SGD with momentum and L2
weight decay on every parameter (times its declared `decay` factor, 1 unless the spec says
`param(..., decay = 0)`), then every sign-constrained parameter projected back onto >= 0.
Exponentiated gradient (Cornford et al. 2024, linclab/EG_optimiser): sign-constrained parameters
move multiplicatively, w <- w * exp(-lr * sign(w) * g), so they keep their sign by construction;
free parameters take the SGD step. Which parameters are constrained, and any gradient factors
(cSGD, E-I Prop's 1/d), are declared by the spec; the gradient factors act in the backward.

The reference also clamps inside each forward; since every step here ends on the
constraint set, that clamp would be the identity, so the forward stays pure.
"""
from __future__ import annotations

import torch

from eidsl_compiler.network import Network

_FUSED_DEVICES = ("cpu", "cuda")


class SignConstrainedSGD(torch.optim.SGD):
    projects_nonneg = True   # compiler/dale.py's post-step hook need not project its "nonneg" groups again

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            if group.get("nonneg"):
                torch._foreach_clamp_min_(group["params"], 0.0)
        return loss


def fusable(params) -> bool:
    """Whether torch's fused SGD kernel takes these parameters."""
    return all(p.device.type in _FUSED_DEVICES and p.dtype.is_floating_point for p in params)


class ExponentiatedGradient(torch.optim.Optimizer):
    """EG on the sign-constrained group, SGD on the free one; momentum and L2 as in torch's SGD
    (the decayed, momentum-averaged gradient is what the multiplicative step exponentiates)."""

    def __init__(self, groups, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if mom:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(mom).add_(d)
                    d = buf
                if group.get("nonneg"):
                    p.mul_(torch.exp(-lr * torch.sign(p) * d))
                else:
                    p.add_(d, alpha=-lr)
            if group.get("nonneg"):
                torch._foreach_clamp_min_(group["params"], 0.0)   # identity but for -0.0 and rounding
        return loss


RULES = ("sgd", "eg")


@torch.no_grad()
def adaptive_clip_(params, clip: float, eps: float = 1e-3) -> None:
    """Unit-wise adaptive gradient clipping (AGC, Brock et al. 2021, NFNets): each unit's gradient
    G_i is scaled to at most clip * max(|W_i|, eps), a unit being one output row (dense), one output
    channel (conv) or one entry (gains, biases). Scale-invariant layers (BatchNorm's, and the E-I
    circuit's in (W_EE, W_IE)) move by lr |G_i| / |W_i| per step, so this bounds the relative step
    of every unit at once, where a global norm clip is set by the largest layer alone."""
    for p in params:
        if p.grad is None:
            continue
        dims = tuple(range(1, p.dim())) if p.dim() > 1 else ()
        w = p.detach().abs() if not dims else torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=True)
        g = p.grad.abs() if not dims else torch.linalg.vector_norm(p.grad, dim=dims, keepdim=True)
        limit = clip * w.clamp_min(eps)
        p.grad.mul_(torch.where(g > limit, limit / g.clamp_min(1e-30), torch.ones_like(g)))


def make_optimizer(net: Network, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                   nesterov: bool = False, rule: str = "sgd") -> torch.optim.Optimizer:
    if rule not in RULES:
        raise ValueError(f"unknown optimiser rule {rule!r}; known: {', '.join(RULES)}")
    # One group per (sign constraint, decay factor): `param(..., decay = 0)` exempts gains and biases.
    grouped: dict[tuple[bool, float], list] = {}
    names = {id(p): n for n, p in net.named_parameters()}
    for p in net.parameters():
        spec = net.param_specs.get(names[id(p)])
        key = (spec is not None and spec.nonneg, spec.decay if spec is not None else 1.0)
        grouped.setdefault(key, []).append(p)
    groups = [{"params": ps, "nonneg": nonneg, "weight_decay": weight_decay * decay}
              for (nonneg, decay), ps in sorted(grouped.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]
    if rule == "eg":
        return ExponentiatedGradient(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    # The fused kernel updates each parameter in one pass (decay, momentum, step); the loop makes
    # several passes and one Python round per tensor, and an E-I network has twice the BN-SNN's
    # parameter tensors (VGG-8's update 7.9 -> 3.3 ms, ResNet-18's 28 -> 17 ms on 2 CPU threads).
    # Same formula; the momentum update rounds differently now and then (~1e-8 relative).
    return SignConstrainedSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                              fused=fusable(net.parameters()) or None)
