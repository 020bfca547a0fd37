"""Operation counts, energy, circuit currents, E/I balance and spectra of a network on real data.

Counts come from the IR (every population, projection and inhibition by name) and the
activity measured by `Network.run(x, keep=True)`. Conventions (docs/analysis.md):

* A projection whose source is non-spiking (pixels, ReLU interneurons, currents) costs dense
  MACs: every output times its fan-in, zero-padding positions of a convolution included.
* A projection whose source is event-driven (LIF spikes, and pools, flattens and spike sums of
  them) costs one accumulate (AC) per non-zero input entry per target it reaches, with the exact
  fan-out of a strided, padded convolution (border entries reach fewer outputs).
* Element-wise circuit work (sums of currents, I_EE - I_sub, the divisor's stabilisation, the
  division, gains, biases, the neuron update) is counted per element in adds, mults, divs, cmps.

Everything is per sample: `per_inference` sums the T time steps, `per_step` is that over T.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F

from eidsl_compiler import ops
from eidsl_compiler.network import Network
from eidsl_compiler.plan import walk

from eidsl import ir
from eidsl.errors import EidslError

OPS = ("macs", "acs", "mults", "adds", "divs", "cmps")

# pJ per operation, 45 nm (Horowitz, "Computing's energy problem", ISSCC 2014): 32-bit float
# multiply 3.7, add 0.9; a MAC is both (4.6); an AC is one float add (0.9); a comparison is
# taken as an add. The divide is not in that table: 3 fused multiply-adds (a Newton-Raphson
# reciprocal) is our assumption. `mem` is one 32-bit read from a small (8 KB) SRAM: half the
# table's 10 pJ per 64-bit access.
DEFAULT_ENERGY_PJ = {"macs": 4.6, "acs": 0.9, "mults": 3.7, "adds": 0.9, "cmps": 0.9, "divs": 13.8,
                     "memory_accesses": 5.0}

PATHWAYS = ("x->E", "x->I", "recurrent", "I-|E sub", "I-|E div", "E neuron", "I neuron", "pool",
            "residual sum", "readout")

LEAVES_OUT = (
    "Memory traffic (weights, membranes, spikes between layers), which on real hardware costs "
    "10-1000x the arithmetic (Horowitz 2014: a 64-bit DRAM read ~1.3-2.6 nJ against 4.6 pJ per MAC); "
    "`--memory` adds a crude no-reuse count of on-chip accesses, nothing for DRAM.",
    "Control, address generation, sparse-event routing and the cost of checking which inputs are zero.",
    "Delays and the time-step loop's bookkeeping.",
    "BatchNorm, which is folded into the preceding weights and bias at inference (its shift counted as one "
    "add per neuron, its scale as nothing).",
    "Training: forward counts only, one sample, no backward pass.",
    "The 45 nm, 32-bit float figures are one technology point: int8 or neuromorphic hardware changes every "
    "number, and an AC is only 5x cheaper than a MAC at this point.",
)


class AnalysisError(EidslError):
    pass


# ---------------------------------------------------------------- structure


def layer_of(name: str) -> str:
    """A population's layer is its motif instance: `layer_1.E` -> `layer_1`."""
    return name.rsplit(".", 1)[0] if "." in name else name


def event_driven(graph: ir.Graph, name: str, _seen=None) -> bool:
    """Whether the values a node delivers are spike events (LIF output, or pooled/summed spikes)."""
    rec = graph.node(name)
    if isinstance(rec, ir.Input):
        return rec.encoding == "events"
    if isinstance(rec, ir.Population):
        return rec.model == "lif"
    if isinstance(rec, (ir.Pool, ir.Flatten, ir.Sum)):
        srcs = [s for s, _ in graph.in_edges(name, ir.Flow)]
        return bool(srcs) and all(event_driven(graph, s) for s in srcs)
    return False


def recurrent_edges(graph: ir.Graph) -> set[tuple[str, str]]:
    """Edges with a delay or inside a cycle (which can only close through a delay)."""
    cyc = set()
    for comp in nx.strongly_connected_components(graph.g):
        if len(comp) > 1 or any(graph.g.has_edge(n, n) for n in comp):
            cyc |= {(s, d) for s, d in graph.g.edges(comp) if d in comp}
    return cyc | {(s, d) for s, d, e in graph.edges() if getattr(e, "delay", 0)}


def _numel(shape) -> int:
    return math.prod(shape)


def _positions(shape) -> int:
    return _numel(shape[1:]) if len(shape) > 1 else 1


# ---------------------------------------------------------------- counting


@dataclass
class Entry:
    """The work of one pathway of one layer, per sample."""
    layer: str
    pathway: str
    population: str                  # "E" or "I": which side of the circuit pays for it
    source: str
    target: str
    per_inference: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPS, 0.0))
    ann: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPS, 0.0))
    state_accesses: float = 0.0      # membrane reads and writes

    def add(self, op: str, n: float, ann: float | None = None) -> None:
        self.per_inference[op] += float(n)
        if ann is not None:
            self.ann[op] += float(ann)


def _value(graph: ir.Graph, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A node's output from `env`, or (given only the populations' spikes) recomputed from its inputs."""
    if name in env:
        return env[name]
    rec = graph.node(name)
    srcs = [_value(graph, env, s) for s, _ in sorted(graph.in_edges(name, ir.Flow), key=lambda e: e[1].port)]
    if isinstance(rec, ir.Flatten):
        return ops.flatten(srcs[0])
    if isinstance(rec, ir.Pool):
        return ops.global_avgpool(srcs[0]) if rec.global_pool else ops.avgpool(srcs[0], rec.kernel, rec.stride)
    if isinstance(rec, ir.Sum):
        return ops.spike_sum(*srcs)
    raise KeyError(name)


def _spikes_over_time(x: torch.Tensor, T: int, delay: int) -> torch.Tensor:
    """The entries a delayed edge delivers: steps 0..T-1-delay of its source."""
    if not delay:
        return x
    seq = ops.unfold_time(x, T)
    return ops.fold_time(seq[:T - delay]) if delay < T else x[:0]


def _acs(edge: ir.Projection, src: torch.Tensor, out_channels: int) -> float:
    """Accumulates: each non-zero input entry once per output it reaches (exact conv fan-out)."""
    nz = (src != 0)
    if edge.op == "dense":
        return float(nz.flatten(1).sum()) * out_channels
    per_position = nz.sum(1, keepdim=True).to(torch.float64)
    ones = torch.ones(1, 1, edge.kernel, edge.kernel, dtype=torch.float64)
    reached = F.conv2d(per_position, ones, stride=edge.stride, padding=edge.padding)
    return float(reached.sum()) * out_channels


def count_ops(graph: ir.Graph, env: dict[str, torch.Tensor], batch: int) -> list[Entry]:
    """Per-sample operation counts of every pathway, from the IR and one `run(x, keep=True)`."""
    T = graph.node(graph.input_name).T
    recurrent = recurrent_edges(graph)
    entries: dict[tuple[str, str], Entry] = {}

    def entry(layer, pathway, population, source="", target="") -> Entry:
        key = (layer, pathway)
        if key not in entries:
            entries[key] = Entry(layer, pathway, population, source, target)
        e = entries[key]
        for attr, value in (("source", source), ("target", target)):
            if value and value not in getattr(e, attr).split(", "):
                setattr(e, attr, f"{getattr(e, attr)}, {value}" if getattr(e, attr) else value)
        return e

    for src, dst, edge in graph.edges():
        dst_rec = graph.node(dst)
        layer = layer_of(dst)
        if isinstance(edge, ir.Projection):
            side = "I" if dst_rec.sign == "inh" else "E"
            pathway = "recurrent" if (src, dst) in recurrent else f"x->{side}"
            e = entry(layer, pathway, side, src, dst)
            outputs = _numel(dst_rec.shape)
            dense = outputs * edge.fan_in          # MACs of one time step
            if event_driven(graph, src):
                delivered = _spikes_over_time(_value(graph, env, src), T, edge.delay)
                e.add("acs", _acs(edge, delivered, dst_rec.size) / batch, 0)
            else:
                e.add("macs", dense * T, 0)
            e.ann["macs"] += dense
            if edge.bias:
                e.add("adds", outputs * T, outputs)
        elif isinstance(edge, ir.Inhibition):
            _count_inhibition(graph, env, batch, T, src, dst, edge, entry)

    for name, rec in graph.nodes():
        _count_node(graph, env, batch, T, name, rec, entry)
    # Layers in the order the network computes them, pathways in their fixed order within a layer.
    from eidsl.ir import time_order
    first: dict[str, int] = {}
    for i, name in enumerate(time_order(graph)):
        first.setdefault(layer_of(name) if isinstance(graph.node(name), ir.Population) else name, i)
    kept = [e for e in entries.values() if any(e.per_inference.values()) or any(e.ann.values())]
    return sorted(kept, key=lambda e: (first.get(e.layer, len(first)), PATHWAYS.index(e.pathway)))


def _count_inhibition(graph, env, batch, T, src, dst, edge, entry):
    dst_rec, src_rec = graph.node(dst), graph.node(src)
    layer = layer_of(dst)
    positions = _positions(dst_rec.shape)
    n = _numel(dst_rec.shape)
    product = positions * dst_rec.size * src_rec.size       # one W_EI product, one step, dense
    readout = dst_rec.model == "current"      # a readout computes I_EE - I_sub only
    paths = [("sub", edge.subtractive), ("div", edge.divisive and not readout)]
    for which, on in paths:
        if not on:
            continue
        e = entry(layer, f"I-|E {which}", "I", src, dst)
        if event_driven(graph, src):
            delivered = _spikes_over_time(_value(graph, env, src), T, edge.delay)
            nz = float((delivered != 0).sum())
            e.add("acs", nz * dst_rec.size / batch, 0)
        else:
            e.add("macs", product * T, 0)
        e.ann["macs"] += product
        if which == "sub":
            e.add("adds", n * T, n)                               # I_EE - I_sub
        else:
            if src_rec.gain is not None:
                gated = _numel(src_rec.shape)
                e.add("mults", gated * T, gated)                  # g_I * s_I
            if edge.stabilize == "min_positive":
                e.add("cmps", 2 * n * T, 2 * n)                   # the row minimum, then the replacement
            elif edge.stabilize == "epsilon":
                e.add("adds", n * T, n)
            e.add("divs", n * T, n)
    # Several inhibitors of one population: their currents are summed.
    others = sum(1 for _ in graph.in_edges(dst, ir.Inhibition))
    if others > 1 and next(s for s, _ in graph.in_edges(dst, ir.Inhibition)) == src:
        for which, on in paths:
            if on:
                entry(layer, f"I-|E {which}", "I").add("adds", (others - 1) * n * T, (others - 1) * n)


def _count_node(graph, env, batch, T, name, rec, entry):
    if isinstance(rec, ir.Population):
        n = _numel(rec.shape)
        side = "I" if rec.sign == "inh" else "E"
        e = entry(layer_of(name), f"{side} neuron", side, "", name)
        n_exc = sum(1 for _ in graph.in_edges(name, ir.Projection))
        if n_exc > 1:
            e.add("adds", (n_exc - 1) * n * T, (n_exc - 1) * n)
        readout = rec.model == "current" and any(True for _ in graph.in_edges(name, ir.Inhibition))
        if rec.gain is not None and rec.sign != "inh" and not readout:
            e.add("mults", n * T, n)                              # g_E
        if rec.bias is not None and not readout:
            e.add("adds", n * T, n)                               # b_E
        if rec.norm == "batchnorm":
            e.add("adds", n * T, n)                               # folded BN: its shift
        if rec.model == "lif":
            # v <- v (1 - 1/tau) + I, compare with theta; the ANN's neuron is a ReLU (one compare).
            e.add("mults", n * T, 0)
            e.add("adds", n * T, 0)
            e.add("cmps", n * T, n)
            spikes = float((env[name] != 0).sum()) / batch
            if rec.reset == "soft":
                e.add("adds", spikes)                             # v -= theta, on a spike only
            else:
                e.add("cmps", n * T)                              # the reset's select
            e.state_accesses += 2 * n * T                         # membrane read and write
        elif rec.model == "relu":
            e.add("cmps", n * T, n)
    elif isinstance(rec, ir.Pool):
        (src,) = [s for s, _ in graph.in_edges(name, ir.Flow)]
        e = entry(name, "pool", "E", src, name)
        if rec.global_pool:
            c, h, w = graph.node(src).shape
            e.add("adds", c * (h * w - 1) * T, c * (h * w - 1))
            e.add("mults", c * T, c)
        else:
            outputs = _numel(rec.shape)
            k2 = rec.kernel * rec.kernel
            e.add("adds", outputs * (k2 - 1) * T, outputs * (k2 - 1))
            e.add("mults", outputs * T, outputs)
    elif isinstance(rec, ir.Sum):
        k = sum(1 for _ in graph.in_edges(name, ir.Flow))
        n = _numel(rec.shape)
        entry(name, "residual sum", "E", "", name).add("adds", (k - 1) * n * T, (k - 1) * n)
    elif isinstance(rec, ir.Readout):
        n = _numel(rec.shape)
        e = entry(name, "readout", "E", "", name)
        e.add("adds", n * (T - 1), 0)                             # the mean over T: a sum ...
        e.add("mults", n, 0)                                      # ... and one scale


def energy(ops_: dict[str, float], table: dict[str, float]) -> float:
    return sum(ops_[k] * table[k] for k in OPS)


def energy_table(overrides: dict[str, float] | None = None) -> dict[str, float]:
    table = dict(DEFAULT_ENERGY_PJ)
    for key, value in (overrides or {}).items():
        name = key if key in table else f"{key}s" if f"{key}s" in table else None
        if name is None:
            raise AnalysisError(f"unknown operation '{key}' in the energy table; known: {', '.join(table)}")
        if not (value >= 0 and math.isfinite(value)):
            raise AnalysisError(f"energy of '{key}' must be a finite number of pJ >= 0, got {value}")
        table[name] = float(value)
    return table


def summarize_ops(entries: list[Entry], T: int, table: dict[str, float], memory: bool = False) -> dict[str, Any]:
    """The JSON section: every pathway, with totals per layer, per pathway, per E/I side and overall."""
    rows = []
    for e in entries:
        row = {"layer": e.layer, "pathway": e.pathway, "population": e.population,
               "source": e.source, "target": e.target,
               "per_inference": {**e.per_inference, "energy_pj": energy(e.per_inference, table)},
               "per_step": {**{k: v / T for k, v in e.per_inference.items()},
                            "energy_pj": energy(e.per_inference, table) / T},
               "ann": {**e.ann, "energy_pj": energy(e.ann, table)}}
        if memory:
            # No reuse: one weight fetch per synaptic operation, plus the membranes' reads and writes.
            accesses = e.per_inference["macs"] + e.per_inference["acs"] + e.state_accesses
            row["per_inference"]["memory_accesses"] = accesses
            row["per_inference"]["memory_energy_pj"] = accesses * table["memory_accesses"]
        rows.append(row)

    def total(select) -> dict[str, Any]:
        chosen = [r for r in rows if select(r)]
        out = {k: sum(r["per_inference"][k] for r in chosen) for k in (*OPS, "energy_pj")}
        out["energy_pj_per_step"] = out["energy_pj"] / T
        out["per_step"] = {k: out[k] / T for k in (*OPS, "energy_pj")}
        out["ann_macs"] = sum(r["ann"]["macs"] for r in chosen)
        out["ann_energy_pj"] = sum(r["ann"]["energy_pj"] for r in chosen)
        if memory:
            out["memory_accesses"] = sum(r["per_inference"]["memory_accesses"] for r in chosen)
        return out

    layers = list(dict.fromkeys(r["layer"] for r in rows))
    pathways = [p for p in PATHWAYS if any(r["pathway"] == p for r in rows)]
    whole = total(lambda r: True)
    return {
        "units": "operations per sample; per_inference sums the T time steps, per_step is per time step; "
                 "ann: the same network as a non-spiking ANN, one pass",
        "T": T,
        "energy_table_pj": table,
        "pathways": rows,
        "by_layer": {l: total(lambda r, l=l: r["layer"] == l) for l in layers},
        "by_pathway": {p: total(lambda r, p=p: r["pathway"] == p) for p in pathways},
        "by_population": {s: total(lambda r, s=s: r["population"] == s) for s in ("E", "I")},
        "total": whole,
        "snn_over_ann_energy": whole["energy_pj"] / whole["ann_energy_pj"] if whole["ann_energy_pj"] else None,
        "leaves_out": list(LEAVES_OUT),
    }


# ---------------------------------------------------------------- activity, currents, balance


def _stats(t: torch.Tensor) -> dict[str, float]:
    """Mean and spread; one pass when every value is finite (the common case), else over the finite ones."""
    t = t.detach().float().flatten()
    n = t.numel()
    # Sums rather than torch.std_mean, whose one-pass reduction is ~5x slower on CPU.
    s1, s2 = float(t.sum(dtype=torch.float64)), float(torch.dot(t, t)) if n else 0.0
    if n and math.isfinite(s1) and math.isfinite(s2):
        mean = s1 / n
        return {"mean": mean, "std": math.sqrt(max(s2 - n * mean * mean, 0.0) / (n - 1)) if n > 1 else 0.0}
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "finite": 0.0}
    return {"mean": float(finite.mean()), "std": float(finite.std()) if finite.numel() > 1 else 0.0,
            "finite": finite.numel() / t.numel()}


def population_rates(graph: ir.Graph, env: dict[str, torch.Tensor], T: int) -> dict[str, dict[str, Any]]:
    """Every population: mean rate (LIF: spikes per neuron per step; ReLU: mean output and the
    fraction of units active), silent (never active on the batch) and saturated units."""
    out = {}
    for name, rec in graph.nodes(ir.Population):
        x = env[name].detach()
        per_unit_active = (x != 0).float().mean(0)            # over samples and steps
        item: dict[str, Any] = {"sign": rec.sign, "model": rec.model, "layer": layer_of(name),
                                "side": "I" if rec.sign == "inh" else "E"}
        if rec.model == "lif":
            item["rate"] = float(x.float().mean())
            item["saturated_fraction"] = float((per_unit_active >= 1.0).float().mean())
        elif rec.model == "relu":
            item["mean_output"] = float(x.float().mean())
            item["rate"] = float(per_unit_active.mean())       # fraction of unit-steps active
        else:   # a readout current has no rate
            item["mean_output"] = float(x.float().mean())
            item["rate"] = None
        item["silent_fraction"] = float((per_unit_active == 0).float().mean())
        out[name] = item
    return out


def _membrane(I_int: torch.Tensor, T: int, rec: ir.Population) -> torch.Tensor:
    """Membrane potential before the spike decision, every step (the fused LIF keeps none)."""
    seq = ops.unfold_time(I_int.detach(), T)
    v = torch.zeros_like(seq[0])
    out = []
    for t in range(T):
        v = v * (1.0 - 1.0 / rec.tau) + seq[t]
        out.append(v)
        s = (v >= rec.theta).to(v.dtype)
        v = v - rec.theta * s if rec.reset == "soft" else s * rec.v_reset + (1 - s) * v
    return torch.stack(out)


def _unit_correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean over units of the Pearson correlation of a and b across samples and time."""
    a, b = a.detach().float().flatten(1), b.detach().float().flatten(1)
    a, b = a - a.mean(0), b - b.mean(0)
    den = a.norm(dim=0) * b.norm(dim=0)
    ok = den > 0
    if not bool(ok.any()):
        return None
    return float(((a * b).sum(0)[ok] / den[ok]).mean())


def _inhibition(net: Network, step, env):
    from eidsl.train.probe import _inhibition as inner
    return inner(net, step, env)


def circuit_currents(net: Network, env: dict[str, torch.Tensor], light: bool = False) -> dict[str, dict[str, Any]]:
    """Per population with an integrating circuit: I_EE, I_sub, I_div (before stabilisation),
    I_int, the membrane relative to threshold, and balance indices. `light` skips the membrane."""
    graph, T = net.graph, net.T
    out = {}
    for step in walk(net.plan.steps):
        if step.op != "integrate" or not step.attrs.n_exc:
            continue
        rec = graph.node(step.node)
        if rec.sign == "inh":
            continue
        I_EE = ops.spike_sum(*[env[n] for n in step.ins[:step.attrs.n_exc]]).detach()
        I_sub, I_div = _inhibition(net, step, env) if len(step.ins) > step.attrs.n_exc else (None, None)
        if step.attrs.balanced_only:
            I_div = None
        item: dict[str, Any] = {"layer": layer_of(step.node), "I_EE": _stats(I_EE), "I_int": _stats(env[step.outs[0]])}
        if I_sub is not None:
            item["I_sub"] = _stats(I_sub)
        if I_div is not None:
            item["I_div"] = _stats(I_div)
        inh = I_sub if I_sub is not None else I_div
        balance: dict[str, Any] = {}
        if inh is not None:
            inh = inh.detach()
            e_mean = item["I_EE"]["mean"]
            inh_mean = item["I_sub" if I_sub is not None else "I_div"]["mean"]
            balance["inh_exc_ratio"] = inh_mean / e_mean if e_mean else None
            balance["ei_correlation"] = _unit_correlation(I_EE, inh)
            if I_sub is not None:
                balance["net_over_exc"] = (float((I_EE - inh).abs().float().mean())
                                           / max(float(I_EE.abs().float().mean()), 1e-30))
        item["balance"] = balance
        if rec.model == "lif" and not light:
            v = _membrane(env[step.outs[0]], T, rec) / rec.theta
            item["v_over_theta"] = {**_stats(v), "p95": float(torch.quantile(v.flatten().double()[:1_000_000], 0.95)),
                                    "above_threshold": float((v >= 1).double().mean())}
        out[step.node] = item
    return out


# ---------------------------------------------------------------- spectra


def _weight_of(net: Network, src: str, dst: str) -> torch.Tensor | None:
    for step in walk(net.plan.steps):
        if step.op == "project":
            for out, path in zip(step.outs, step.params.weights):
                if out == f"{dst}<-{src}":
                    return net.tensor(path).detach()
    return None


def effective_weights(net: Network) -> dict[str, dict[str, Any]]:
    """Per E population and excitatory source: W_EE, and where interneurons read the same source,
    the circuit's subtractive effective weight W_EE - W_EI W_IE (divisive normalisation left out)."""
    graph = net.graph
    found = {}
    for dst, rec in graph.nodes(ir.Population):
        if rec.sign == "inh":
            continue
        for src, edge in graph.in_edges(dst, ir.Projection):
            W = _weight_of(net, src, dst)
            if W is None:
                continue
            eff, inhibitors = W.double(), []
            for i_name, inh in graph.in_edges(dst, ir.Inhibition):
                if not inh.subtractive or not graph.g.has_edge(src, i_name):
                    continue
                W_IE = _weight_of(net, src, i_name)
                step = next(s for s in walk(net.plan.steps) if s.op == "integrate" and s.node == dst)
                idx = [n.split("@t-")[0] for n in step.ins[step.attrs.n_exc:]].index(i_name)
                W_EI = net.tensor(step.params.W_EI[idx][0]).detach().double()
                if W_IE is not None and W_IE.shape[1:] == W.shape[1:]:
                    eff = eff - torch.einsum("ei,i...->e...", W_EI, W_IE.double())
                    inhibitors.append(i_name)
            key = dst if sum(1 for _ in graph.in_edges(dst, ir.Projection)) == 1 else f"{dst}<-{src}"
            found[key] = {"W_EE": W.double().flatten(1), "effective": eff.flatten(1), "inhibitors": inhibitors}
    return found


def svd_entropy(singular: torch.Tensor) -> float:
    """Normalised SVD entropy, -sum p log p / log n with p = sigma / sum sigma (Li et al., NeurIPS 2023):
    1 for a flat spectrum, near 0 when one direction dominates."""
    s = singular.double()
    n = s.numel()
    if n < 2 or float(s.sum()) == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(n))


def spectra(net: Network, keep: int = 512) -> dict[str, dict[str, Any]]:
    out = {}
    for name, w in effective_weights(net).items():
        item: dict[str, Any] = {"inhibitors": w["inhibitors"], "shape": list(w["effective"].shape)}
        for which in ("effective", "W_EE"):
            s = torch.linalg.svdvals(w[which])
            positive = s[s > 0]
            item[which] = {
                "svd_entropy": svd_entropy(s),
                "condition_number": float(positive[0] / positive[-1]) if positive.numel() else None,
                "sigma_max": float(s[0]) if s.numel() else 0.0,
                "singular_values": [float(v) for v in s[:keep]],
            }
        item["svd_entropy"] = item["effective"]["svd_entropy"]
        out[name] = item
    return out


SILENT, SATURATED, LOW_ENTROPY, ILL_CONDITIONED = 0.01, 0.9, 0.5, 1e4


def health_flags(rates: dict, spectra_: dict | None) -> list[dict[str, str]]:
    flags = []
    for name, r in rates.items():
        if r["rate"] is None:   # current and linear populations pass a value on, not a rate
            continue
        if r["rate"] < SILENT:
            flags.append({"population": name, "flag": "silent", "why": f"rate {r['rate']:.4f} < {SILENT}"})
        elif r["model"] == "lif" and r["rate"] > SATURATED:   # a ReLU has no ceiling
            flags.append({"population": name, "flag": "saturated", "why": f"rate {r['rate']:.3f} > {SATURATED}"})
        if r.get("silent_fraction", 0) > 0.5:
            flags.append({"population": name, "flag": "mostly silent units",
                          "why": f"{100 * r['silent_fraction']:.0f} % of units never active"})
    for name, s in (spectra_ or {}).items():
        if s["svd_entropy"] < LOW_ENTROPY:
            flags.append({"population": name, "flag": "low SVD entropy",
                          "why": f"normalised SVD entropy {s['svd_entropy']:.3f} < {LOW_ENTROPY}"})
        c = s["effective"]["condition_number"]
        if c is not None and c > ILL_CONDITIONED:
            flags.append({"population": name, "flag": "badly conditioned",
                          "why": f"condition number {c:.3g} > {ILL_CONDITIONED:g}"})
    return flags


# ---------------------------------------------------------------- everything


@torch.no_grad()
def analyze(net: Network, x: torch.Tensor, *, table: dict[str, float] | None = None, memory: bool = False,
            with_spectra: bool = False) -> dict[str, Any]:
    """The whole analysis of `net` on the batch `x` (eval mode: BatchNorm uses its running statistics)."""
    from eidsl.train.probe import frozen
    graph = net.graph
    if graph is None:
        raise AnalysisError("the network was built without its graph; build it with eidsl.api.build_graph")
    with frozen(net):
        env = net.run(x, keep=True)
    batch = x.shape[0]
    rates = population_rates(graph, env, net.T)
    result: dict[str, Any] = {
        "network": graph.name,
        "samples": batch,
        "T": net.T,
        "ops": summarize_ops(count_ops(graph, env, batch), net.T, table or energy_table(), memory),
        "firing_rates": rates,
        "currents": circuit_currents(net, env),
    }
    spec = spectra(net) if with_spectra else None
    if spec is not None:
        result["spectra"] = spec
    result["flags"] = health_flags(rates, spec)
    return result


def first_samples(env: dict[str, torch.Tensor], T: int, batch: int, k: int) -> dict[str, torch.Tensor]:
    """The tensors of a time-major (T*B, ...) environment restricted to the first k samples."""
    if k >= batch:
        return env
    return {name: ops.fold_time(ops.unfold_time(v, T)[:, :k]) if v.shape[0] == T * batch else v
            for name, v in env.items()}


def training_record(net: Network, env: dict[str, torch.Tensor], current_samples: int = 16) -> dict[str, Any]:
    """The cheap per-cadence view logged during training: rates of every population over the whole
    batch and, on its first `current_samples` samples, per E population the current means/spreads
    and balance indices (no membrane replay)."""
    rates = population_rates(net.graph, env, net.T)
    batch = env[net.graph.input_name].shape[0] // net.T
    currents = circuit_currents(net, first_samples(env, net.T, batch, current_samples), light=True)
    return {"rates": {k: v["rate"] for k, v in rates.items() if v["rate"] is not None},
            "sides": {k: v["side"] for k, v in rates.items() if v["rate"] is not None},
            "silent": {k: v["silent_fraction"] for k, v in rates.items()},
            "currents": {k: {q: v[q]["mean"] for q in ("I_EE", "I_sub", "I_div", "I_int") if q in v}
                         | {f"{q}_std": v[q]["std"] for q in ("I_EE", "I_sub", "I_div", "I_int") if q in v}
                         | {k2: v2 for k2, v2 in v["balance"].items()}
                         for k, v in currents.items()}}
