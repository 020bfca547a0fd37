"""Sign-constrained SGD (PAPER.md §3.1): SGD with momentum and L2 weight decay on every
parameter, then every sign-constrained parameter projected back onto >= 0.

The reference also clamps inside each forward; since every step here ends on the
constraint set, that clamp would be the identity, so the forward stays pure.
"""
from __future__ import annotations

import torch

from .network import Network


class SignConstrainedSGD(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            if group.get("nonneg"):
                for p in group["params"]:
                    p.clamp_(min=0)
        return loss


def make_optimizer(net: Network, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                   nesterov: bool = False) -> SignConstrainedSGD:
    constrained, free = [], []
    names = {id(p): n for n, p in net.named_parameters()}
    for p in net.parameters():
        spec = net.param_specs.get(names[id(p)])
        (constrained if spec is not None and spec.nonneg else free).append(p)
    groups = [g for g in ({"params": constrained, "nonneg": True}, {"params": free, "nonneg": False}) if g["params"]]
    return SignConstrainedSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
