"""Dale's law outside eidsl's own optimiser.

Sign-constrained parameters (W_EE, W_IE, W_EI, g_I, g_E of a population with `dale = true`)
must stay >= 0. `eidsl.optimizer` projects them after every step; a plain `torch.optim.Adam`
would not, and one step is enough to leave thousands of negative weights. Two guards close
that gap for every network built by eidsl:

- enforcement: a global optimizer post-step hook (torch's `register_optimizer_step_post_hook`)
  projects, after any torch.optim optimizer's step, the constrained parameters of live eidsl
  networks that this optimizer holds onto >= 0 — the same projection as the paper's recipe;
- detection: a constrained parameter changed in place outside an optimizer step (a manual
  update, `load_state_dict`, a callback) is checked on the next forward, and a negative entry
  stops it with `DaleError` naming the tensor. Parameters whose in-place version counter is
  unchanged since the last check or projection are not read, so the check costs a few
  attribute reads per forward and no device sync. Writes through `.data` bypass version
  counting and are not seen here; the trainer's epoch-end health check still finds them.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from eidsl.errors import EidslError

if TYPE_CHECKING:
    from eidsl_compiler.network import Network


class DaleError(EidslError):
    """A sign-constrained parameter holds negative entries at the start of a forward."""


_networks: "weakref.WeakSet[Network]" = weakref.WeakSet()
_hook = None


class Guard:
    """One network's sign-constrained parameters and their version counters when last known >= 0."""

    def __init__(self, net: "Network"):
        self.slots: list[tuple[str, torch.nn.Module, str]] = []
        for path, spec in net.param_specs.items():
            if spec.nonneg:
                module, name = net._scope(path)
                self.slots.append((path, module, name))
        self.versions: dict[str, int] = {}

    def params(self):
        # Looked up each time: `net.to(...)` may replace a Parameter object.
        for path, module, name in self.slots:
            yield path, module._parameters[name]

    def check(self) -> None:
        changed = [(path, p) for path, p in self.params() if self.versions.get(path) != p._version]
        if not changed:
            return
        with torch.no_grad():
            negatives = torch.stack([(p < 0).sum() for _, p in changed]).tolist()
        bad = [(path, p, n) for (path, p), n in zip(changed, negatives) if n]
        if bad:
            raise DaleError(_message(bad))
        for path, p in changed:
            self.versions[path] = p._version

    def mark(self, params: list[torch.Tensor]) -> None:
        """`params` were just projected onto >= 0."""
        ids = {id(p) for p in params}
        for path, p in self.params():
            if id(p) in ids:
                self.versions[path] = p._version


def _message(bad) -> str:
    path, p, n = bad[0]
    more = f" (and {len(bad) - 1} more sign-constrained tensors: {', '.join(b[0] for b in bad[1:4])})" \
        if len(bad) > 1 else ""
    return (f"Dale's law is broken: {path} holds {n} negative entries (min {float(p.detach().min()):.3g}){more}, "
            "written outside an optimizer step. eidsl projects sign-constrained weights onto >= 0 after every "
            "torch.optim step; after changing them by hand, call `net.clamp_()` (or update them through an "
            "optimizer). `dale = false` on a population lifts its constraint")


def track(net: "Network") -> None:
    """Put `net` in the set the post-step hook projects (the hook is installed on first use)."""
    global _hook
    if _hook is None:
        _hook = register_optimizer_step_post_hook(_project_after_step)
    _networks.add(net)


def watch(net: "Network") -> None:
    """Before a forward: check `net`'s constrained parameters, and track it (a deep copy of a
    network joins the set on its first forward)."""
    track(net)
    net.dale_guard.check()


@torch.no_grad()
def _project_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    if not _networks:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    # eidsl's own optimiser (optim.SignConstrainedSGD) has projected its "nonneg" groups already.
    done = {id(p) for group in optimizer.param_groups if group.get("nonneg") for p in group["params"]} \
        if getattr(optimizer, "projects_nonneg", False) else set()
    for net in list(_networks):
        guard = getattr(net, "dale_guard", None)
        if guard is None:
            continue
        params = [p for _, p in guard.params() if id(p) in held]
        if not params:
            continue
        todo = [p for p in params if id(p) not in done]
        if todo:
            torch._foreach_clamp_min_(todo, 0.0)
        guard.mark(params)
