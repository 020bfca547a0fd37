"""Per-population activity of a forward pass: the firing rate of every population in the IR.

Every LIF population counts, excitatory and inhibitory, top-level or inside a recurrent loop
(whose body runs step by step: `Network.run(x, keep=True)` returns its tensors folded over
time like any other). Two kinds of rate, kept apart because their units differ:

- spiking populations (LIF, E or I): spikes per neuron per time step, in [0, 1];
- rate-coded interneurons (ReLU, the paper's fast-spiking I): the mean of s_I = max(0, I_IE),
  the steady-state rate in units of input current, unbounded.

The readout's current population is not a rate (it is the logits) and is left out.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from eidsl_compiler.network import Network
from eidsl_compiler.plan import walk

# More populations of one kind than this and the epoch line shows their mean and range.
LISTED = 6
ORDER = ("E", "I", "pop", "s_I", "relu")


@dataclass(frozen=True)
class Population:
    name: str
    sign: str        # "exc", "inh" or "free" (the IR's sign)
    spiking: bool    # LIF (spikes) or rate-coded (ReLU)
    in_loop: bool    # runs inside a recurrent loop

    @property
    def group(self) -> str:
        """Its label on the epoch line: E, I (spiking), s_I (rate-coded interneurons), or pop (sign-free)."""
        if not self.spiking:
            return "s_I" if self.sign == "inh" else "relu"
        return {"exc": "E", "inh": "I"}.get(self.sign, "pop")


_cache: "weakref.WeakKeyDictionary[Network, list[Population]]" = weakref.WeakKeyDictionary()


def populations(net: Network) -> list[Population]:
    """The populations whose rate is measured, in plan order (read once per network: the
    trainer asks every batch)."""
    if net not in _cache:
        _cache[net] = _populations(net)
    return _cache[net]


def _populations(net: Network) -> list[Population]:
    found: dict[str, Population] = {}
    loops = {s.node for step in net.plan.steps if step.op == "loop" for s in walk(step.attrs.body)}
    for step in walk(net.plan.steps):
        if step.op in ("lif", "lif_step", "relu") and step.outs[0] not in found:
            sign = "free"
            if net.graph is not None:
                sign = getattr(net.graph.node(step.node), "sign", "free")
            found[step.outs[0]] = Population(step.outs[0], sign, step.op != "relu", step.node in loops)
    return list(found.values())


def describe(net: Network) -> dict[str, dict]:
    """{population: {"sign", "spiking", "loop"}} for a run's config.json, so a plot can tell E from I."""
    return {p.name: {"sign": p.sign, "spiking": p.spiking, "loop": p.in_loop} for p in populations(net)}


def rates(net: Network, env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean rate per population from the tensors of `net.run(x, keep=True)` (detached scalars, no host sync)."""
    return {p.name: env[p.name].detach().float().mean() for p in populations(net)}


@torch.no_grad()
def measure_rates(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Every population's rate on the batch `x`: one forward in eval mode that changes nothing."""
    from eidsl.api import unwrap
    net = unwrap(model)
    was_training = net.training
    net.eval()
    try:
        env = net.run(x, keep=True)
    finally:
        net.train(was_training)
    return {name: float(r) for name, r in rates(net, env).items()}


def split(values: dict[str, float], pops: list[Population]) -> tuple[dict[str, float], dict[str, float]]:
    """(spiking populations' firing rates, rate-coded interneurons' mean s_I)."""
    spiking = {p.name for p in pops if p.spiking}
    return ({k: v for k, v in values.items() if k in spiking},
            {k: v for k, v in values.items() if k not in spiking})


def summary(values: dict[str, float], pops: list[Population]) -> str:
    """`rates E 0.192/0.154 I 0.451/0.393 s_I 2.59/0.96`: every population, grouped, in plan order;
    a group of more than LISTED shows `mean (min-max)`."""
    groups: dict[str, list[float]] = {}
    for p in pops:
        if p.name in values:
            groups.setdefault(p.group, []).append(values[p.name])
    parts = []
    for group in sorted(groups, key=ORDER.index):
        vs = groups[group]
        digits = 3 if group in ("E", "I", "pop") else 2
        if len(vs) <= LISTED:
            parts.append(f"{group} " + "/".join(f"{v:.{digits}f}" for v in vs))
        else:
            parts.append(f"{group} {sum(vs) / len(vs):.{digits}f} ({min(vs):.{digits}f}-{max(vs):.{digits}f})")
    return "rates " + " ".join(parts) if parts else ""
