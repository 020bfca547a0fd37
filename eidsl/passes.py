"""Checks and inference over the graph IR, run in order by ``check``.

Each pass reads the graph, fills in what can be inferred (shapes, fan-in, which
weights Dale's law constrains) and reports located errors for what is wrong.
"""
from __future__ import annotations

import math
import os

import networkx as nx

from . import ir
from .errors import SpecError, Span, raise_all


def _span(rec) -> Span | None:
    return rec.loc.span() if rec.loc else None


def check(graph: ir.Graph) -> ir.Graph:
    """Run every pass; raise all independent errors together."""
    order = time_order(graph)
    errors = infer_shapes(graph, order)
    raise_all(errors)
    raise_all(check_signs(graph))
    raise_all(check_reachability(graph))
    infer_fan_in(graph)
    check_size(graph)
    return graph


# ---------------------------------------------------------------- order and cycles

def instantaneous(graph: ir.Graph) -> nx.DiGraph:
    """The graph without edges that carry a time delay: what one time step computes."""
    g = nx.DiGraph()
    g.add_nodes_from(graph.g.nodes)
    for src, dst, rec in graph.edges():
        if getattr(rec, "delay", 0) == 0:
            g.add_edge(src, dst)
    return g


def time_order(graph: ir.Graph) -> list[str]:
    g = instantaneous(graph)
    try:
        return list(nx.lexicographical_topological_sort(g, key=_creation_index(graph)))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        names = [a for a, _ in cycle] + [cycle[0][0]]
        first = graph.edge(*cycle[0])
        raise SpecError("cycle without a time delay: " + " -> ".join(names), _span(first),
                        hint="give one projection in the loop `delay = 1` (it then reads the previous time step)") \
            from None


def _creation_index(graph: ir.Graph):
    index = {name: i for i, name in enumerate(graph.g.nodes)}
    return lambda name: f"{index[name]:09d}"


# ---------------------------------------------------------------- shapes

def infer_shapes(graph: ir.Graph, order: list[str]) -> list[SpecError]:
    errors: list[SpecError] = []
    shapes: dict[str, tuple[int, ...]] = {}
    # Delayed edges read a node computed later in the order; a second sweep sees their shapes.
    for sweep in range(2):
        errors = []
        for name in order:
            rec = graph.node(name)
            try:
                shape = _node_shape(graph, name, rec, shapes, final=sweep == 1)
            except SpecError as err:
                errors.append(err)
                continue
            if shape is not None:
                shapes[name] = shape
    for name, shape in shapes.items():
        rec = graph.node(name)
        if isinstance(rec, ir.Input):
            continue
        graph.replace_node(name, shape=shape)
    return errors


def _node_shape(graph, name, rec, shapes, final):
    if isinstance(rec, ir.Input):
        return rec.shape
    inputs = [(src, e) for src, e in graph.in_edges(name) if src in shapes]
    if isinstance(rec, ir.Population):
        return _population_shape(graph, name, rec, shapes, final)
    if not inputs:
        return None
    src_shape = shapes[inputs[0][0]]
    if isinstance(rec, ir.Pool):
        if len(src_shape) != 3:
            raise SpecError(f"pooling needs a (channels, height, width) input, got shape {_fmt(src_shape)}",
                            _span(rec))
        c, h, w = src_shape
        if rec.global_pool:
            return (c, 1, 1)
        oh, ow = (h - rec.kernel) // rec.stride + 1, (w - rec.kernel) // rec.stride + 1
        if oh < 1 or ow < 1:
            raise SpecError(f"pool of size {rec.kernel} does not fit a {h}x{w} input", _span(rec),
                            hint="use fewer pooling layers or a larger input")
        return (c, oh, ow)
    if isinstance(rec, ir.Flatten):
        return (math.prod(src_shape),)
    if isinstance(rec, ir.Readout):
        return src_shape
    if isinstance(rec, ir.Sum):
        got = {src: shapes[src] for src, _ in inputs}
        if len(set(got.values())) > 1:
            listing = ", ".join(f"'{s}' {_fmt(v)}" for s, v in got.items())
            raise SpecError(f"shape mismatch at residual sum: {listing}", _span(rec),
                            hint="add a downsample projection (1x1 conv with the stride) on the shortcut")
        return src_shape
    return None


def _population_shape(graph, name, rec: ir.Population, shapes, final):
    spatial = None
    seen = False
    for src, edge in graph.in_edges(name):
        if src not in shapes:
            continue
        seen = True
        s = shapes[src]
        if isinstance(edge, ir.Projection):
            if edge.op == "dense":
                if len(s) != 1:
                    raise SpecError(f"a dense projection needs a flat input, but '{src}' has shape {_fmt(s)}",
                                    _span(edge), hint="flatten it first: `h = flatten(h)`")
                here = ()
            else:
                if len(s) != 3:
                    raise SpecError(f"a conv projection needs a (channels, height, width) input, "
                                    f"but '{src}' has shape {_fmt(s)}", _span(edge))
                _, h, w = s
                oh = (h + 2 * edge.padding - edge.kernel) // edge.stride + 1
                ow = (w + 2 * edge.padding - edge.kernel) // edge.stride + 1
                if oh < 1 or ow < 1:
                    raise SpecError(f"a {edge.kernel}x{edge.kernel} conv does not fit the {h}x{w} input of '{src}'",
                                    _span(edge))
                here = (oh, ow)
        elif isinstance(edge, ir.Inhibition):
            here = s[1:]
        else:
            raise SpecError(f"population '{name}' can only receive projections", _span(edge))
        if spatial is None:
            spatial = here
        elif spatial != here:
            raise SpecError(f"inputs of population '{name}' disagree on its spatial shape: "
                            f"{_fmt(spatial) if spatial else 'flat'} vs {_fmt(here) if here else 'flat'} from '{src}'",
                            _span(edge), hint="match stride and padding of the projections into it")
    if not seen:
        if final and not any(True for _ in graph.in_edges(name)):
            raise SpecError(f"population '{name}' receives no input", _span(rec),
                            hint=f"add a projection into it, e.g. `x -> {name.rsplit('.', 1)[-1]} : dense()`")
        return None
    return (rec.size, *spatial)


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


# ---------------------------------------------------------------- Dale's law

def node_sign(graph: ir.Graph, name: str, _seen=None) -> str:
    """Declared for populations and the input; pools, flattens and sums carry their inputs' sign."""
    rec = graph.node(name)
    if isinstance(rec, (ir.Population, ir.Input)):
        return rec.sign
    _seen = _seen or set()
    if name in _seen:
        return "free"
    _seen.add(name)
    signs = {node_sign(graph, src, _seen) for src, _ in graph.in_edges(name)}
    return signs.pop() if len(signs) == 1 else "free"


def check_signs(graph: ir.Graph) -> list[SpecError]:
    errors = []
    for src, dst, edge in graph.edges():
        if not isinstance(edge, (ir.Projection, ir.Inhibition)):
            continue
        s, d = graph.node(src), graph.node(dst)
        s_sign = node_sign(graph, src)
        if not isinstance(d, ir.Population):
            errors.append(SpecError(f"a projection must end on a population, not a {d.kind}", _span(edge)))
            continue
        if isinstance(edge, ir.Projection) and s_sign == "inh":
            errors.append(SpecError(f"Dale's law: inhibitory '{src}' cannot excite '{dst}' with '->'", _span(edge),
                                    hint="inhibitory populations project with '-|' (inhibit)"))
        if isinstance(edge, ir.Inhibition) and s_sign == "exc":
            errors.append(SpecError(f"Dale's law: excitatory '{src}' cannot inhibit '{dst}' with '-|'", _span(edge),
                                    hint="excitatory populations project with '->'; route inhibition through "
                                         "an `inh` population"))
        if isinstance(edge, ir.Inhibition) and not isinstance(s, ir.Population):
            errors.append(SpecError(f"inhibition must come from a population, but '{src}' is a {s.kind}",
                                    _span(edge), hint="inhibit from the interneuron population itself (`I -| E`)"))
            continue
        if isinstance(edge, ir.Inhibition) and isinstance(s, ir.Population) and s.model == "current":
            errors.append(SpecError(f"'{src}' is a readout current and cannot inhibit", _span(edge)))
        signed = s_sign != "free" and d.sign != "free" and d.dale
        graph.replace_edge(src, dst, nonneg=signed)
    return errors


# ---------------------------------------------------------------- reachability

def check_reachability(graph: ir.Graph) -> list[SpecError]:
    errors = []
    inputs = [n for n, r in graph.nodes(ir.Input)]
    if not inputs:
        return [SpecError("the network has no input", _span(graph) if graph.loc else None,
                          hint="start with `x = image([1, 28, 28])`")]
    reached = nx.descendants(graph.g, inputs[0]) | {inputs[0]}
    feeds_output = nx.ancestors(graph.g, graph.output) | {graph.output}
    for name, rec in graph.nodes():
        if name not in reached:
            errors.append(SpecError(f"'{name}' is not reached from the input", _span(rec),
                                    hint="connect it with a projection from an earlier layer"))
        elif name not in feeds_output:
            errors.append(SpecError(f"'{name}' does not reach the readout (dangling {rec.kind})", _span(rec),
                                    hint="connect it to a later layer, or remove it"))
    return errors


# ---------------------------------------------------------------- fan-in

def projection_fan_in(graph: ir.Graph, src: str, edge: ir.Projection) -> int:
    shape = graph.node(src).shape
    if edge.op == "dense":
        return math.prod(shape)
    return shape[0] * edge.kernel * edge.kernel


def infer_fan_in(graph: ir.Graph) -> None:
    for src, dst, edge in list(graph.edges(ir.Projection)):
        graph.replace_edge(src, dst, fan_in=projection_fan_in(graph, src, edge))
    for src, dst, edge in list(graph.edges(ir.Inhibition)):
        # d of the layer the inhibition serves: the fan-in of what drives the I population,
        # as in the reference (`prev_in_features`), else what drives the target.
        fans = [e.fan_in for _, e in graph.in_edges(src, ir.Projection)] or \
               [e.fan_in for _, e in graph.in_edges(dst, ir.Projection)] or [1]
        graph.replace_edge(src, dst, fan_in=fans[0])


# ---------------------------------------------------------------- size

def count_parameters(graph: ir.Graph) -> dict[str, int]:
    """Trainable values per node, as the lowering will allocate them."""
    counts: dict[str, int] = {}
    for name, rec in graph.nodes(ir.Population):
        n = 0
        for src, edge in graph.in_edges(name):
            if isinstance(edge, ir.Projection):
                n += rec.size * (edge.fan_in or projection_fan_in(graph, src, edge)) + (rec.size if edge.bias else 0)
            elif isinstance(edge, ir.Inhibition):
                paths = 1 if edge.shared or not (edge.subtractive and edge.divisive) else 2
                n += paths * rec.size * graph.node(src).size
        n += rec.size * ((rec.gain is not None) + (rec.bias is not None))
        if rec.norm == "batchnorm":
            n += 2 * rec.size
        counts[name] = n
    return counts


def neuron_counts(graph: ir.Graph) -> dict[str, int]:
    out = {"E": 0, "I": 0, "free": 0}
    for _, rec in graph.nodes(ir.Population):
        key = {"exc": "E", "inh": "I", "free": "free"}[rec.sign]
        out[key] += math.prod(rec.shape or (rec.size,))
    return out


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(graph: ir.Graph, batch: int = 1, T: int | None = None) -> dict[str, int]:
    """Parameter and activation memory of one training step, before anything is allocated."""
    T = T or next(r.T for _, r in graph.nodes(ir.Input))
    params = sum(count_parameters(graph).values())
    values = sum(math.prod(r.shape or (1,)) for _, r in graph.nodes() if not isinstance(r, ir.Input))
    # float32 weights + gradient + momentum; each activation kept for the backward, about twice.
    return {"parameters": params, "parameter_bytes": 12 * params,
            "activation_bytes": 8 * values * batch * T}


def check_size(graph: ir.Graph, batch: int = 1, limit: int | None = None) -> dict[str, int]:
    est = estimate_bytes(graph, batch)
    limit = limit or available_memory()
    need = est["parameter_bytes"] + est["activation_bytes"]
    if need > limit:
        raise SpecError(f"network too large: about {_gib(need)} for {est['parameters']:,} parameters "
                        f"at batch {batch}, more than the {_gib(limit)} available", _span(graph),
                        hint="reduce the sizes, or raise the limit with --memory-limit")
    return est


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
