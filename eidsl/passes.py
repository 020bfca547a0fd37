"""Checks and inference over the graph IR, run in order by ``check``.

Each pass reads the graph, fills in what can be inferred (shapes, fan-in, which
weights Dale's law constrains) and reports located errors for what is wrong.
"""
from __future__ import annotations

import math
import os

import networkx as nx

from . import ir
from .errors import SpecError, Span, place, raise_all


def _span(rec) -> Span | None:
    return rec.loc.span() if rec.loc else None


def _error(message: str, rec, hint: str | None = None, notes=()) -> SpecError:
    """An error at the spec text that produced `rec`, reached through its motif calls."""
    loc = getattr(rec, "loc", None)
    err = SpecError(message, loc.span() if loc else None, hint=hint, notes=list(notes))
    return place(err, loc.calls() if loc else [])


def check(graph: ir.Graph) -> ir.Graph:
    """Run every pass; raise all independent errors together."""
    order = time_order(graph)
    raise_all(infer_shapes(graph, order))
    raise_all(check_signs(graph) + check_reachability(graph) + check_readout(graph) + check_delays(graph))
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
        raise _error("cycle without a time delay: " + " -> ".join(names), first,
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
            raise _error(f"pooling needs a (channels, height, width) input, got shape {_fmt(src_shape)}", rec,
                         hint="pool before flattening")
        c, h, w = src_shape
        if rec.global_pool:
            return (c, 1, 1)
        oh, ow = (h - rec.kernel) // rec.stride + 1, (w - rec.kernel) // rec.stride + 1
        if oh < 1 or ow < 1:
            raise _error(f"a {rec.kernel}x{rec.kernel} pool does not fit the {h}x{w} input of '{inputs[0][0]}'", rec,
                         hint="use fewer pooling layers, a smaller pool or a larger input")
        return (c, oh, ow)
    if isinstance(rec, ir.Flatten):
        return (math.prod(src_shape),)
    if isinstance(rec, ir.Readout):
        return src_shape
    if isinstance(rec, ir.Sum):
        got = {src: shapes[src] for src, _ in inputs}
        if len(set(got.values())) > 1:
            listing = ", ".join(f"'{s}' {_fmt(v)}" for s, v in got.items())
            raise _error(f"shape mismatch at residual sum: {listing}", rec,
                         hint="both sides of a sum need one shape; on the shortcut, add a downsample "
                              "projection (a 1x1 conv with the stride)")
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
                    raise _error(f"a dense projection needs a flat input, but '{src}' has shape {_fmt(s)}",
                                 edge, hint="flatten it first, `h = flatten(h)`, or use a conv projection")
                here = ()
            else:
                if len(s) != 3:
                    raise _error(f"a conv projection needs a (channels, height, width) input, "
                                 f"but '{src}' has shape {_fmt(s)}", edge,
                                 hint="convolve before flattening" if len(s) == 1 else None)
                _, h, w = s
                oh = (h + 2 * edge.padding - edge.kernel) // edge.stride + 1
                ow = (w + 2 * edge.padding - edge.kernel) // edge.stride + 1
                if oh < 1 or ow < 1:
                    raise _error(f"a {edge.kernel}x{edge.kernel} conv with padding {edge.padding} does not fit "
                                 f"the {h}x{w} input of '{src}'", edge, hint="use a smaller kernel or more padding")
                here = (oh, ow)
        elif isinstance(edge, ir.Inhibition):
            here = s[1:]
        else:
            raise _error(f"population '{name}' can only receive projections", edge)
        if spatial is None:
            spatial = here
        elif spatial != here:
            raise _error(f"inputs of population '{name}' disagree on its spatial shape: "
                         f"{_fmt(spatial) if spatial else 'flat'} vs {_fmt(here) if here else 'flat'} from '{src}'",
                         edge, hint="match kernel, stride and padding of the projections into it")
    if not seen:
        if final and not any(True for _ in graph.in_edges(name)):
            raise _error(f"population '{name}' receives no input", rec,
                         hint=f"add a projection into it, e.g. `x -> {name.rsplit('.', 1)[-1]} : dense()`")
        return None
    return (rec.size, *spatial)


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


# ---------------------------------------------------------------- Dale's law

def node_sign(graph: ir.Graph, name: str) -> str:
    """Declared for populations and the input; pools, flattens and sums carry their inputs' sign
    (when those all agree, else they are sign-free)."""
    signs, seen, stack = set(), set(), [name]
    while stack:   # iterative: a chain of thousands of pools must not exhaust the stack
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        rec = graph.node(node)
        if isinstance(rec, (ir.Population, ir.Input)):
            signs.add(rec.sign)
        else:
            stack.extend(src for src, _ in graph.in_edges(node))
    return signs.pop() if len(signs) == 1 else "free"


def check_signs(graph: ir.Graph) -> list[SpecError]:
    errors = []
    for src, dst, edge in graph.edges():
        if not isinstance(edge, (ir.Projection, ir.Inhibition)):
            continue
        s, d = graph.node(src), graph.node(dst)
        s_sign = node_sign(graph, src)
        if not isinstance(d, ir.Population):
            errors.append(_error(f"a projection must end on a population, not {_a(d.kind)}", edge))
            continue
        if isinstance(edge, ir.Inhibition) and not isinstance(s, ir.Population):
            errors.append(_error(f"inhibition must come from a population, not {_a(s.kind)}", edge,
                                 hint="inhibit from an `inh` population"))
            continue
        if isinstance(edge, ir.Projection) and s_sign == "inh":
            errors.append(_error(f"Dale's law: inhibitory '{src}' cannot excite '{dst}' with '->'", edge,
                                 hint="inhibitory populations project with '-|' (inhibit); declare the source "
                                      "`exc` if it should excite, or `pop` for a sign-free baseline"))
        if isinstance(edge, ir.Inhibition) and s_sign == "exc":
            errors.append(_error(f"Dale's law: excitatory '{src}' cannot inhibit '{dst}' with '-|'", edge,
                                 hint="excitatory populations project with '->'; route inhibition through "
                                      "an `inh` population"))
        if isinstance(edge, ir.Inhibition) and s.model == "current":
            errors.append(_error(f"'{src}' is a readout current and cannot inhibit", edge,
                                 hint="inhibit from a relu or lif population"))
        elif isinstance(edge, ir.Inhibition) and edge.divisive and s.gain is None:
            errors.append(_error(f"divisive inhibition from '{src}' needs its gain g_I", edge,
                                 hint="give the population one, `inh I = relu(n, gain = gain_control)`, "
                                      "or make the inhibition subtractive only (div = false)"))
        signed = s_sign != "free" and d.sign != "free" and d.dale
        graph.replace_edge(src, dst, nonneg=signed)
    return errors


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


# ---------------------------------------------------------------- reachability

def check_reachability(graph: ir.Graph) -> list[SpecError]:
    errors = []
    inputs = [n for n, r in graph.nodes(ir.Input)]
    if not inputs:
        return [_error("the network has no input", graph, hint="start with `x = image([1, 28, 28])`")]
    reached = nx.descendants(graph.g, inputs[0]) | {inputs[0]}
    feeds_output = nx.ancestors(graph.g, graph.output) | {graph.output}
    for name, rec in graph.nodes():
        if name not in reached:
            errors.append(_error(f"'{name}' is not reached from the input", rec,
                                 hint="connect it with a projection from an earlier layer"))
        elif name not in feeds_output:
            errors.append(_error(f"'{name}' does not reach the readout (dangling {rec.kind})", rec,
                                 hint="connect it to a later layer, or remove it"))
    return errors


# ---------------------------------------------------------------- readout and delays

def check_readout(graph: ir.Graph) -> list[SpecError]:
    """The readout ends the network with one value per class: (B, classes) logits."""
    errors = []
    for name, rec in graph.nodes(ir.Readout):
        for dst, edge in graph.out_edges(name):
            errors.append(_error(f"'{name}' is a readout, which ends the network; nothing can read from it", edge))
        if rec.shape is not None and len(rec.shape) != 1:
            errors.append(_error(f"the readout needs a flat input (one value per class), but its input has shape "
                                 f"{_fmt(rec.shape)}", rec,
                                 hint="flatten (or global_avgpool, then flatten) before the classifier"))
    return errors


def check_delays(graph: ir.Graph) -> list[SpecError]:
    T = next((r.T for _, r in graph.nodes(ir.Input)), None)
    errors = []
    for src, dst, edge in graph.edges():
        delay = getattr(edge, "delay", 0)
        if T is not None and delay >= T:
            errors.append(_error(f"a delay of {delay} steps is not shorter than T = {T}, so '{src}' -> '{dst}' "
                                 "would only ever carry zeros", edge, hint=f"use a delay below {T}"))
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


def memory_limit() -> tuple[int, str]:
    """The byte budget a network must fit, and where it comes from."""
    text = os.environ.get("EIDSL_MEMORY_LIMIT", "").strip()
    if text:
        try:
            return _parse_bytes(text), f"the EIDSL_MEMORY_LIMIT of {text}"
        except ValueError:
            raise SpecError(f"EIDSL_MEMORY_LIMIT={text!r} is not a size", hint="e.g. EIDSL_MEMORY_LIMIT=64GiB") \
                from None
    return available_memory(), "available"


def _parse_bytes(text: str) -> int:
    units = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
             "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    unit = text[len(number):].strip().lower()
    if unit not in units or not number:
        raise ValueError(text)
    value = float(number) * units[unit]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return int(value)


def check_size(graph: ir.Graph, batch: int = 1, limit: int | None = None) -> dict[str, int]:
    """Refuse, from the shapes alone, a network whose training step would not fit in memory."""
    est = estimate_bytes(graph, batch)
    source = "given"
    if limit is None:
        limit, source = memory_limit()
    need = est["parameter_bytes"] + est["activation_bytes"]
    if need > limit:
        # Point at the population that needs the most: that is the size to change.
        params = count_parameters(graph)
        T = next(r.T for _, r in graph.nodes(ir.Input))
        share = {n: 12 * params[n] + 8 * math.prod(r.shape or (r.size,)) * batch * T
                 for n, r in graph.nodes(ir.Population)}
        biggest = max(share, key=share.get) if share else None
        where = graph.node(biggest) if biggest else graph
        neurons = sum(neuron_counts(graph).values())
        what = "available" if source == "available" else source
        message = (f"network too large: about {_gib(need)} for {_count(est['parameters'])} parameters and "
                   f"{_count(neurons)} neurons at batch {batch}, more than the {_gib(limit)} "
                   + ("available" if source == "available" else f"limit ({source})"))
        notes = []
        hint = "reduce the sizes; the limit is the free memory, or EIDSL_MEMORY_LIMIT (e.g. EIDSL_MEMORY_LIMIT=64GiB)"
        if biggest:
            message += f"; '{biggest}' alone needs about {_gib(share[biggest])}"
        raise _error(message, where, hint=hint, notes=notes)
    return est


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{n:.3g}"


def _gib(n: int) -> str:
    gib = n / 2**30
    return f"{gib:,.1f} GiB" if gib < 10**6 else f"{gib:.3g} GiB"
