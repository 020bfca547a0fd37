"""Looking inside a running network: firing rates, the first non-finite tensor, current and weight histograms.

All of it reads the environment `Network.run(x, keep=True)` returns, whose keys
are the plan's tensor names: ``<pop><-<src>`` for a projection's current,
``<pop>:I_int`` for an integrated current, ``<pop>`` for a population's output.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from eidsl_compiler import ops
from eidsl_compiler.network import Network

BINS = 64


def spiking_layers(net: Network) -> list[str]:
    """Populations with LIF neurons, E and I, those inside recurrent loops included, in plan order."""
    from eidsl.train.monitor import populations
    return [p.name for p in populations(net) if p.spiking]


def firing_rates(net: Network, env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean spike probability per LIF population (detached scalar tensors, no host sync);
    monitor.rates also gives the rate-coded interneurons."""
    return {name: env[name].detach().float().mean() for name in spiking_layers(net)}


@contextmanager
def frozen(net: Network):
    """Eval mode for a look that must not change the network (BatchNorm running statistics)."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


# ---------------------------------------------------------------- non-finite diagnosis


@dataclass(frozen=True)
class NonFinite:
    layer: str       # population, or "input"
    current: str     # I_EE, I_IE, I_sub, I_div, I_int, spikes, ...
    tensor: str      # the plan's tensor name
    inside: bool = False   # a term the runner computes on the way to `tensor` and does not keep

    def __str__(self) -> str:
        if self.layer == "input":
            return f"the input batch ('{self.tensor}')"
        return f"{self.current} of layer '{self.layer}' ({'computing' if self.inside else 'tensor'} '{self.tensor}')"


def _describe(net: Network, step, index: int) -> tuple[str, str]:
    name = step.outs[index]
    if step.op == "project":
        role = net.param_specs[step.params.weights[index]].role
        return name.split("<-")[0], "I" + role[1:] if role.startswith("W") else role
    if step.op == "integrate":
        return step.node, "I_int"
    if step.op == "lif":
        return step.node, "spikes"
    if step.op == "relu":
        return step.node, "s_I"
    if step.op in ("repeat_static", "fold_events"):
        return "input", "input"
    return step.node, step.op


@torch.no_grad()
def first_nonfinite(net: Network, x: torch.Tensor) -> NonFinite | None:
    """Re-run `x` and return the first tensor, in plan order, holding an inf or a NaN."""
    if not torch.isfinite(x).all():
        return NonFinite("input", "input", "input")
    env = net.run(x, keep=True)
    for step in net.plan.steps:
        if step.op == "integrate":
            # An infinite I_div can still give a finite I_int (x / inf = 0): look inside every circuit.
            term = _first_nonfinite_term(net, step, env)
            if term is not None:
                return NonFinite(step.node, term, step.outs[0], inside=True)
        for i, name in enumerate(step.outs):
            if not torch.isfinite(env[name]).all():
                layer, current = _describe(net, step, i)
                return NonFinite(layer, current, name)
    return None


def _first_nonfinite_term(net: Network, step, env) -> str | None:
    """Which of I_EE, I_sub, I_div (before stabilisation) made I_int non-finite; None: the combination did."""
    excitation = [env[n] for n in step.ins[:step.attrs.n_exc]]
    I_sub, I_div = _inhibition(net, step, env)
    if step.attrs.balanced_only:   # a readout computes I_EE - I_sub only
        I_div = None
    terms = {"I_EE": ops.spike_sum(*excitation) if excitation else None, "I_sub": I_sub, "I_div": I_div}
    return next((name for name, t in terms.items() if t is not None and not torch.isfinite(t).all()), None)


def nonfinite_parameters(net: Network) -> list[str]:
    return [name for name, p in net.named_parameters() if not torch.isfinite(p).all()]


def nonfinite_gradients(net: Network) -> list[str]:
    """Parameters whose gradient holds an inf or a NaN (one host sync when all are finite)."""
    named = [(name, p.grad) for name, p in net.named_parameters() if p.grad is not None]
    if not named or torch.stack([torch.isfinite(g).all() for _, g in named]).all():
        return []
    return [name for name, g in named if not torch.isfinite(g).all()]


# ---------------------------------------------------------------- histograms


def _inhibition(net: Network, step, env) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """I_sub and I_div of an integrate step, before stabilisation (the runner does not keep them)."""
    p = step.params
    I_sub, I_div, _ = ops.inhibition([env[s] for s in step.ins[step.attrs.n_exc:]],
                                     [[net.value(w) for w in paths] for paths in p.W_EI],
                                     [None if g is None else net.value(g) for g in p.g_I], step.attrs.modes)
    return I_sub, I_div


def layer_quantities(net: Network, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Per excitatory/output population: its currents on `x` and its weights, in the paper's names."""
    specs = net.param_specs
    # Interneurons show up as their targets' I_sub/I_div, not as layers of their own. Known by their
    # weights' roles (W_IE, g_I), not by model: DANN's I units are linear and its hidden E units ReLU.
    interneurons = {spec.node for spec in specs.values() if spec.role.startswith("W_I") or spec.role == "g_I"}
    with torch.no_grad(), frozen(net):
        env = net.run(x, keep=True)
        layers: dict[str, dict[str, torch.Tensor]] = {}
        for step in net.plan.steps:
            if step.op != "integrate" or step.node in interneurons or not step.attrs.n_exc:
                continue
            pop = step.node
            q: dict[str, torch.Tensor] = {}
            q["I_EE"] = ops.spike_sum(*[env[n] for n in step.ins[:step.attrs.n_exc]])
            I_sub, I_div = _inhibition(net, step, env)
            if I_sub is not None:
                q["I_sub"] = I_sub
            if I_div is not None:
                q["I_div"] = I_div
            q["I_int"] = env[step.outs[0]]
            weights = {"W_EE": [], "W_IE": [], "W_EI": [], "g_I": []}
            sources = {s.split("@t-")[0] for s in step.ins[step.attrs.n_exc:]}
            for path, spec in specs.items():
                if spec.node == pop and spec.role in ("W_EE", "W"):
                    weights["W_EE"].append(path)
                elif spec.node in sources and spec.role == "W_IE":
                    weights["W_IE"].append(path)
            weights["W_EI"] = [p for paths in step.params.W_EI for p in paths]
            weights["g_I"] = [p for p in step.params.g_I if p is not None]
            for role, paths in weights.items():
                if paths:
                    q[role] = torch.cat([net.value(p).detach().flatten() for p in paths])   # g_I = exp(alpha) where declared
            layers[pop] = q
    return layers


def histogram(t: torch.Tensor, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the finite values of `t`, over their own range."""
    v = t.detach().float().flatten().cpu()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:  # a constant tensor (W_EI = 1/n_I at init): a narrow bin around its value
        pad = max(abs(lo) * 0.05, 1e-6)
        lo, hi = lo - pad, hi + pad
    counts = torch.histc(v, bins, lo, hi)
    return counts.numpy().astype(np.int64), np.linspace(lo, hi, bins + 1)


def layer_histograms(net: Network, x: torch.Tensor, bins: int = BINS) -> dict[str, np.ndarray]:
    """Flat {"<layer>|<quantity>|counts" or "|edges": array} for one npz file."""
    return quantity_histograms(layer_quantities(net, x), bins)


def quantity_histograms(layers: dict[str, dict[str, torch.Tensor]], bins: int = BINS) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for layer, quantities in layers.items():
        for name, t in quantities.items():
            counts, edges = histogram(t, bins)
            out[f"{layer}|{name}|counts"], out[f"{layer}|{name}|edges"] = counts, edges
    return out
