"""Checks and inference over the graph IR, run in order by ``check``.

Each pass reads the graph, fills in what can be inferred (shapes, fan-in, which
weights Dale's law constrains) and reports located errors for what is wrong.
"""
from __future__ import annotations

import math
import os

from eidsl import ir
from eidsl.ir import node_sign, time_order
from eidsl.errors import EidslError, SpecError, Span, raise_all
from eidsl.limits import MAX_ERRORS


def _span(rec) -> Span | None:
    return rec.loc.span() if rec.loc else None


def check(graph: ir.Graph, batch: int = 1, memory_limit: float | None = None) -> ir.Graph:
    """Run every pass; raise all independent errors together. The size check is for a training
    step at `batch` against `memory_limit` bytes (None: the memory available now)."""
    order = time_order(graph)
    errors = infer_shapes(graph, order)
    raise_all(errors)
    # check_signs marks the sign-constrained weights that check_constrained_inits then reads.
    raise_all(check_signs(graph) + check_constrained_inits(graph) + check_reachability(graph)
              + check_readout(graph) + check_delays(graph) + check_inhibition(graph))
    infer_fan_in(graph)
    check_size(graph, batch, memory_limit)
    return graph


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
                            _span(rec), hint="pool before flattening")
        c, h, w = src_shape
        if rec.global_pool:
            return (c, 1, 1)
        oh, ow = (h - rec.kernel) // rec.stride + 1, (w - rec.kernel) // rec.stride + 1
        if oh < 1 or ow < 1:
            raise SpecError(f"a {rec.kernel}x{rec.kernel} pool does not fit the {h}x{w} input of '{inputs[0][0]}'",
                            _span(rec), hint="use fewer pooling layers, a smaller pool or a larger input")
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
                    raise SpecError(f"a dense projection needs a flat input, but '{src}' has shape {_fmt(s)}",
                                    _span(edge), hint="flatten it first, `h = flatten(h)`, or use a conv projection")
                here = ()
            else:
                if len(s) != 3:
                    raise SpecError(f"a conv projection needs a (channels, height, width) input, "
                                    f"but '{src}' has shape {_fmt(s)}", _span(edge))
                _, h, w = s
                oh = (h + 2 * edge.padding - edge.kernel) // edge.stride + 1
                ow = (w + 2 * edge.padding - edge.kernel) // edge.stride + 1
                if oh < 1 or ow < 1:
                    raise SpecError(f"a {edge.kernel}x{edge.kernel} conv with padding {edge.padding} does not fit "
                                    f"the {h}x{w} input of '{src}'", _span(edge),
                                    hint="use a smaller kernel or more padding")
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
                            _span(edge), hint="match kernel, stride and padding of the projections into it")
    if not seen:
        if final and not any(True for _ in graph.in_edges(name)):
            raise SpecError(f"population '{name}' receives no input", _span(rec),
                            hint=f"add a projection into it, e.g. `x -> {name.rsplit('.', 1)[-1]} : dense()`")
        return None
    return (rec.size, *spatial)


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


# ---------------------------------------------------------------- Dale's law

def check_signs(graph: ir.Graph) -> list[SpecError]:
    errors = []
    memo: dict[str, str] = {}
    for src, dst, edge in graph.edges():
        if not isinstance(edge, (ir.Projection, ir.Inhibition)):
            continue
        s, d = graph.node(src), graph.node(dst)
        s_sign = node_sign(graph, src, memo)
        if not isinstance(d, ir.Population):
            errors.append(SpecError(f"a projection must end on a population, not {_a(d.kind)}", _span(edge)))
            continue
        if isinstance(edge, ir.Projection) and s_sign == "inh":
            errors.append(SpecError(f"Dale's law: inhibitory '{src}' cannot excite '{dst}' with '->'", _span(edge),
                                    hint="inhibitory populations project with '-|' (inhibit); declare the source "
                                         "`exc` if it should excite, or `pop` for a sign-free baseline"))
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


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _negative_part(init: ir.Init) -> str | None:
    """How an init rule starts some values below 0, if it does so by its own numbers. Formulas
    (text over fan_in, n_E, n_I) are only known when the network is lowered; a parameter declared
    `param(..., clamp = none)` is never clamped."""
    if init.clamp == "none":
        return None

    def below_zero(v) -> bool:
        return isinstance(v, (int, float)) and v < 0

    def text(v) -> str:
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)
    if init.rule == "constant" and below_zero(init.value):
        return f"the constant {text(init.value)}"
    if init.rule == "uniform" and below_zero(init.low):
        return f"uniform({text(init.low)}, {text(init.high)}), whose values below 0"
    if init.rule == "normal" and below_zero(init.mean):
        return f"normal({text(init.mean)}, {text(init.std)}), centred below 0,"
    return None


def check_constrained_inits(graph: ir.Graph) -> list[SpecError]:
    """Sign-constrained weights and gains are clamped to >= 0 after initialisation: a negative
    init there silently became 0 (a dead layer). Say so instead."""
    errors = []
    for src, dst, edge in graph.edges():
        if isinstance(edge, (ir.Projection, ir.Inhibition)) and edge.nonneg and edge.init is not None:
            what = _negative_part(edge.init)
            if what:
                errors.append(SpecError(f"the weights of '{src}' -> '{dst}' are kept >= 0 (Dale's law), so "
                                        f"{what} would be clamped to 0", _span(edge),
                                        hint="give a non-negative init, or make the target `dale = false` for "
                                             "sign-free weights"))
    for name, rec in graph.nodes(ir.Population):
        if rec.gain is not None and rec.sign != "free" and rec.dale:
            what = _negative_part(rec.gain)
            if what:
                errors.append(SpecError(f"the gain of '{name}' is kept >= 0 (Dale's law), so {what} would be "
                                        "clamped to 0", _span(rec),
                                        hint="give a non-negative gain, or `dale = false`"))
    return errors


# ---------------------------------------------------------------- reachability

def check_reachability(graph: ir.Graph) -> list[SpecError]:
    errors = []
    inputs = [n for n, r in graph.nodes(ir.Input)]
    if not inputs:
        return [SpecError("the network has no input", _span(graph) if graph.loc else None,
                          hint="start with `x = image([1, 28, 28])`")]
    import networkx as nx   # at use: see eidsl/ir.py
    reached = nx.descendants(graph.g, inputs[0]) | {inputs[0]}
    feeds_output = nx.ancestors(graph.g, graph.output) | {graph.output}
    for name, rec in graph.nodes():
        if len(errors) > MAX_ERRORS:   # one per node of a large graph cost seconds to build
            break
        if name not in reached:
            errors.append(SpecError(f"'{name}' is not reached from the input", _span(rec),
                                    hint="connect it with a projection from an earlier layer"))
        elif name not in feeds_output:
            errors.append(SpecError(f"'{name}' does not reach the readout (dangling {rec.kind})", _span(rec),
                                    hint="connect it to a later layer, or remove it"))
    return errors


# ---------------------------------------------------------------- readout and delays

def check_readout(graph: ir.Graph) -> list[SpecError]:
    """The readout ends the network with one value per class: (B, classes) logits."""
    errors = []
    for name, rec in graph.nodes(ir.Readout):
        for _, edge in graph.out_edges(name):
            errors.append(SpecError(f"'{name}' is a readout, which ends the network; nothing can read from it",
                                    _span(edge)))
        if rec.shape is not None and len(rec.shape) != 1:
            errors.append(SpecError(f"the readout needs one value per class, but its input has shape "
                                    f"{_fmt(rec.shape)}", _span(rec),
                                    hint="flatten (or global_avgpool, then flatten) before the classifier"))
    return errors


def check_delays(graph: ir.Graph) -> list[SpecError]:
    T = next((r.T for _, r in graph.nodes(ir.Input)), None)
    errors = []
    for src, dst, edge in graph.edges():
        delay = getattr(edge, "delay", 0)
        if T is not None and delay >= T:
            errors.append(SpecError(f"a delay of {delay} steps is not shorter than T = {T}, so '{src}' -> '{dst}' "
                                    "would only ever carry zeros", _span(edge), hint=f"use a delay below {T}"))
    return errors


def check_inhibition(graph: ir.Graph) -> list[SpecError]:
    errors = []
    for src, dst, edge in graph.edges(ir.Inhibition):
        s = graph.node(src)
        if edge.divisive and isinstance(s, ir.Population) and s.model != "current" and s.gain is None:
            errors.append(SpecError(f"divisive inhibition from '{src}' needs its gain g_I", _span(edge),
                                    hint="give the population one, `inh I = relu(n, gain = gain_control)`, "
                                         "or make the inhibition subtractive only (div = false)"))
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
    """Memory a new allocation can get now: the kernel's MemAvailable, capped by the container's
    cgroup limit when there is one (MemAvailable shows the host's memory inside containers)."""
    sizes = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    sizes.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f, open(usage_file) as g:
                limit, usage = f.read().strip(), int(g.read())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:      # "max" or a huge number: no limit
            sizes.append(max(int(limit) - usage, 0))
    if not sizes:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return min(sizes)


# Floats one training step holds per element of a node's output, for each of the T*B folded
# rows: the output, what autograd saves of it for the backward, its gradient, and the largest
# transient of the op (compiler/ops.py). Rounded up from measured peaks of training steps
# (docs/reliability.md; bench/memory.py re-measures them).
ACTIVATION_FLOATS = {
    "input": 2,       # the T-fold copy of the batch that the first projection saves, and the batch
    "lif": 4,         # spikes (saved by the next projection), the membrane before the spike (saved
                      # by the fused LIF, compiler/fused.py), gradients of spikes and current
    "relu": 3,        # output (saved by relu and by the inhibition product), its gradient, its current
    "current": 3,
    "linear": 3,
    "batchnorm": 2,   # the normalised current BatchNorm saves, and its gradient
    "inhibited": 3,   # the fused circuit saves I_EE - I_sub (s_I is the relu's) and recomputes the
                      # divisor; made and dropped: the divisor, the integrated current, two gradients
    "pool": 2, "sum": 2, "flatten": 0, "readout": 1,
}
FLOAT_BYTES = 4


def activation_floats(graph: ir.Graph, name: str, rec) -> int:
    if isinstance(rec, ir.Population):
        floats = ACTIVATION_FLOATS[rec.model]
        if rec.norm == "batchnorm":
            floats += ACTIVATION_FLOATS["batchnorm"]
        if any(True for _ in graph.in_edges(name, ir.Inhibition)):
            floats += ACTIVATION_FLOATS["inhibited"]
        return floats
    return ACTIVATION_FLOATS[rec.kind]


def _weights(graph: ir.Graph, src: str, dst: str, edge) -> int:
    size = graph.node(dst).size
    if isinstance(edge, ir.Inhibition):
        paths = 1 if edge.shared or not (edge.subtractive and edge.divisive) else 2
        return paths * size * graph.node(src).size
    return size * (edge.fan_in or projection_fan_in(graph, src, edge))


def _copied_weights(graph: ir.Graph) -> int:
    """Weights the runtime copies each step: projections fused with a sibling (torch.cat of W_EE and
    W_IE, saved for the backward) and W_EI under the E-I Prop gradient scale."""
    total = 0
    for src in graph.g:
        groups: dict[tuple, list[int]] = {}
        for dst, edge in graph.out_edges(src, ir.Projection):
            key = (edge.op, edge.kernel, edge.stride, edge.padding)
            groups.setdefault(key, []).append(_weights(graph, src, dst, edge))
        total += sum(sum(w) for w in groups.values() if len(w) > 1)
    # W_EI with a gradient factor (true: 1/d, or a number/formula other than 1) is copied by scale_grad
    total += sum(_weights(graph, s, d, e) for s, d, e in graph.edges(ir.Inhibition)
                 if e.grad_scale is not False and e.grad_scale != 1)
    return total


def estimate_bytes(graph: ir.Graph, batch: int = 1, T: int | None = None) -> dict[str, int]:
    """Memory of one training step (SGD with momentum) at this batch size, from the IR alone,
    before anything is allocated. Python integers: sizes of absurd specs do not overflow."""
    T = T or graph.node(graph.input_name).T
    params = sum(count_parameters(graph).values())
    # weight, gradient and momentum buffer; each copied weight and its gradient
    parameter_bytes = FLOAT_BYTES * (3 * params + 2 * _copied_weights(graph))
    floats = sum(activation_floats(graph, name, rec) * math.prod(_out_shape(rec))
                 for name, rec in graph.nodes())
    activation_bytes = FLOAT_BYTES * floats * T * batch
    return {"parameters": params, "parameter_bytes": parameter_bytes, "activation_bytes": activation_bytes,
            "total_bytes": parameter_bytes + activation_bytes, "batch": batch, "T": T}


def _out_shape(rec) -> tuple[int, ...]:
    if rec.shape is not None:
        return rec.shape
    return (rec.size,) if isinstance(rec, ir.Population) else (1,)


def check_size(graph: ir.Graph, batch: int = 1, limit: float | None = None) -> dict[str, int]:
    """Refuse a network whose training step would not fit in `limit` bytes (None: the memory
    available now; math.inf: no limit)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EidslError(f"batch must be a positive whole number, got {batch!r}")
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise EidslError(f"a memory limit is a positive number of bytes, got {limit!r}")
    est = estimate_bytes(graph, batch)
    if limit is None:
        limit, what = available_memory(), "memory available"
    else:
        what = "memory limit"
    if est["total_bytes"] > limit:
        raise SpecError(f"network too large: a training step at batch {batch:,} and T = {est['T']} needs about "
                        f"{format_bytes(est['total_bytes'])} ({est['parameters']:,} parameters: "
                        f"{format_bytes(est['parameter_bytes'])} with gradients and momentum; activations: "
                        f"{format_bytes(est['activation_bytes'])}), more than the {format_bytes(limit)} {what}",
                        _span(graph), hint="reduce the layer sizes, the batch size or T, or override the limit "
                                           "with --memory-limit SIZE (memory_limit= in the Python API)")
    return est


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            if isinstance(n, int) and n // size >= 10**15:
                # Absurd specs give integers past float range: scientific notation from the digits.
                digits = str(n // size)
                return f"{digits[0]}.{digits[1]}e{len(digits) - 1} {unit}"
            return f"{n / size:,.1f} {unit}"
    return f"{int(n)} bytes"
