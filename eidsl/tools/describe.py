"""A network summarised layer by layer, for `eidsl describe` and build summaries."""
from __future__ import annotations

import math
from collections import defaultdict

from eidsl import ir
from eidsl.lang.checks import count_parameters, neuron_counts


def layer_of(name: str) -> str:
    """The motif instance a node belongs to (its path without the last part)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def summarize(graph: ir.Graph) -> dict:
    params = count_parameters(graph)
    groups: dict[str, list[str]] = defaultdict(list)
    for name, _ in graph.nodes():
        groups[layer_of(name)].append(name)
    layers = []
    for group, names in groups.items():
        recs = {n: graph.node(n) for n in names}
        pops = {n: r for n, r in recs.items() if isinstance(r, ir.Population)}
        if not pops:
            for n, r in recs.items():
                layers.append({"name": n, "kind": r.kind, "parameters": 0, "shape": list(_shape(r))})
            continue
        exc = [r for r in pops.values() if r.sign in ("exc", "free")]
        inh = [r for r in pops.values() if r.sign == "inh"]
        main = exc[0] if exc else next(iter(pops.values()))
        n_e = sum(r.size for r in exc)
        n_i = sum(r.size for r in inh)
        fan = [e.fan_in for n in pops for _, e in graph.in_edges(n, ir.Projection)]
        kind = "E-I" if inh else ("BN" if main.norm == "batchnorm" else "plain")
        if main.model == "current":
            kind += " readout"
        layers.append({
            "name": group, "kind": kind, "E": n_e, "I": n_i,
            "ratio": f"{n_e / n_i:g}:1" if n_i else None,
            "fan_in": fan[0] if fan else None,
            "parameters": sum(params[n] for n in pops),
            "shape": list(_shape(main)),
            "populations": {n.rsplit(".", 1)[-1]: {"model": r.model, "sign": r.sign, "size": r.size,
                                                  "shape": list(_shape(r))} for n, r in pops.items()},
        })
    T = next(r.T for _, r in graph.nodes(ir.Input))
    return {"name": graph.name, "parameters": sum(params.values()), "neurons": neuron_counts(graph),
            "T": T, "params": graph.params, "layers": layers, "flops_per_step": flops_per_step(graph)}


def _shape(rec) -> tuple:
    return tuple(rec.shape or ())


def flops_per_step(graph: ir.Graph) -> int:
    """Multiply-adds of the weighted projections for one sample and one time step."""
    total = 0
    for src, dst, e in graph.edges():
        target = graph.node(dst)
        positions = math.prod(target.shape[1:]) if target.shape and len(target.shape) > 1 else 1
        if isinstance(e, ir.Projection):
            total += target.size * (e.fan_in or 0) * positions
        elif isinstance(e, ir.Inhibition):
            paths = int(e.subtractive) + int(e.divisive)
            total += paths * target.size * graph.node(src).size * positions
    return total
