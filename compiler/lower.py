"""Graph IR -> plan: one builder per IR record type, registered in BUILDERS.

Builders walk the network in time order. Projections that share a source and a
geometry (the E->E and E->I of one E-I layer) are fused into a single matmul or
convolution. A cycle through a delayed edge (recurrent inhibition from the
previous step, say) becomes one "loop" step whose body runs once per time step;
everything outside the cycle stays batched over time. Anything the runtime
cannot execute is refused here, at compile time, with the spec location of the
offending node.
"""
from __future__ import annotations

import re
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import networkx as nx

from eidsl import ir
from eidsl.errors import SpecError
from eidsl.ir import node_sign, time_order

from eidsl_compiler.plan import (Delay, Inhibitor, Integrate, IntegrateParams, Loop, Neuron, ParamSpec, Plan, Pool,
                                  Project, ProjectParams, Step, Steps)


def lower(graph: ir.Graph) -> Plan:
    _check_lowerable(graph)
    lw = _Lowering(graph)
    for group in schedule(graph):
        if len(group) == 1 and not graph.g.has_edge(group[0], group[0]):
            _build(lw, group[0])
        else:
            _loop(lw, group)
    _tie_means(lw)
    return Plan(graph.name, lw.T, graph.node(graph.input_name), lw.steps, lw.params, lw.buffers, graph.output)


def schedule(graph: ir.Graph) -> list[list[str]]:
    """Nodes in computation order, grouped: a group of several nodes (or one that feeds itself)
    is a cycle through delayed edges and runs step by step.

    The order is the time order whenever the graph has no cycle, so the plan (and the
    order in which E-I Init draws its random weights) does not depend on this grouping.
    """
    order = time_order(graph)          # refuses cycles without a delay
    position = {name: i for i, name in enumerate(order)}
    condensed = nx.condensation(graph.g)
    groups = {c: sorted(condensed.nodes[c]["members"], key=position.__getitem__) for c in condensed}
    key = lambda c: f"{position[groups[c][0]]:09d}"   # noqa: E731
    return [groups[c] for c in nx.lexicographical_topological_sort(condensed, key=key)]


def _build(lw: "_Lowering", name: str) -> None:
    rec = lw.graph.node(name)
    builder = BUILDERS.get(type(rec))
    if builder is None:
        raise SpecError(f"the compiler has no lowering for a {rec.kind} node ('{name}')",
                        rec.loc.span() if rec.loc else None)
    builder(lw, name, rec)


@dataclass
class _Loop:
    members: set[str]
    ready: dict[tuple[str, str], str] = field(default_factory=dict)   # edge from outside -> tensor name
    pending: list[tuple[str, str]] = field(default_factory=list)     # delayed projections inside the loop


class _Lowering:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.T = graph.node(graph.input_name).T
        self.steps: list[Step] = []
        self.params: list[ParamSpec] = []
        self.buffers: list[ParamSpec] = []
        self.done: set[str] = set()             # nodes whose output exists
        self.emitted: dict[tuple[str, str], str] = {}   # (source, target) -> current name
        self.names: dict[str, set[str]] = {}     # parameter names used per node
        self.loop: _Loop | None = None          # set while the body of a loop is lowered
        self.weight_of: dict[tuple[str, str], str] = {}   # (source, target) -> weight path
        self.ties: list[tuple[int, str, str, object]] = []   # (param index, source, referenced node, loc)

    def emit(self, step: Step) -> None:
        self.steps.append(step)

    def need(self, src: str, dst: str, rec) -> None:
        if src not in self.done:   # the schedule makes this unreachable; kept as a located guard
            raise SpecError(f"'{dst}' reads '{src}' before it is computed", rec.loc.span() if rec.loc else None)

    def in_loop(self, node: str) -> bool:
        return self.loop is not None and node in self.loop.members

    def incoming(self, src: str, dst: str, edge) -> str:
        """The tensor that the edge src -> dst delivers to `dst` at the current time step,
        emitting the projection and delay it takes."""
        if self.loop is not None and (src, dst) in self.loop.ready:
            return self.loop.ready[(src, dst)]
        dst_rec = self.graph.node(dst)
        if isinstance(edge, ir.Projection):
            if self.in_loop(src) and edge.delay:
                # Inside a loop the current is computed once `src` has fired, and read a step later.
                self.loop.pending.append((src, dst))
                return self.delay_step(f"{dst}<-{src}", edge.delay, dst_rec.shape, dst, edge)
            self.need(src, dst, edge)
            if (src, dst) not in self.emitted:
                _projections(self, src, dst)
            current = self.emitted[(src, dst)]
        else:
            if self.in_loop(src) and edge.delay:
                return self.delay_step(src, edge.delay, self.graph.node(src).shape, dst, edge)
            self.need(src, dst, edge)
            current = src
        if edge.delay:
            delayed = f"{current}@t-{edge.delay}"
            self.emit(Step("delay", (delayed,), (current,), dst, Delay(edge.delay, T=self.T), loc=edge.loc))
            return delayed
        return current

    def delay_step(self, name: str, steps: int, shape, dst: str, edge) -> str:
        delayed = f"{name}@t-{steps}"
        self.emit(Step("delay_step", (delayed,), (name,), dst, Delay(steps, shape=tuple(shape)), loc=edge.loc))
        return delayed

    def param(self, node: str, name: str, shape, role: str, init: ir.Init, nonneg: bool,
              fan_in: int = 1, used: bool = True, env: dict | None = None, loc=None,
              grad_scale: float | str = 1.0) -> str:
        taken = self.names.setdefault(node, set())
        base, k = name, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        init, grad = _resolve_init(init, env or {"fan_in": fan_in}, f"{node}.{name}", loc)
        grad *= _formula(grad_scale, env or {"fan_in": fan_in}, f"the gradient factor of {node}.{name}", loc)
        nonneg = {"dale": nonneg, "nonneg": True, "none": False}[init.clamp]
        spec = ParamSpec(f"{node}.{name}", tuple(shape), role, init, nonneg, fan_in, node, used,
                         init.transform, grad, init.decay)
        self.params.append(spec)
        return spec.path


# ---------------------------------------------------------------- builders


def _input(lw: _Lowering, name: str, rec: ir.Input) -> None:
    op = "repeat_static" if rec.encoding == "static" else "fold_events"
    lw.emit(Step(op, (name,), ("input",), name, Steps(rec.T), loc=rec.loc))
    lw.done.add(name)


def _single_input(lw: _Lowering, name: str) -> list[str]:
    srcs = [src for src, _ in sorted(lw.graph.in_edges(name, ir.Flow), key=lambda e: e[1].port)]
    return srcs


def _pool(lw: _Lowering, name: str, rec: ir.Pool) -> None:
    (src,) = _single_input(lw, name)
    if rec.global_pool:
        lw.emit(Step("global_avgpool", (name,), (src,), name, loc=rec.loc))
    else:
        lw.emit(Step("maxpool" if rec.op == "max" else "avgpool", (name,), (src,), name, Pool(rec.kernel, rec.stride),
                     loc=rec.loc))
    lw.done.add(name)


def _flatten(lw: _Lowering, name: str, rec: ir.Flatten) -> None:
    (src,) = _single_input(lw, name)
    lw.emit(Step("flatten", (name,), (src,), name, loc=rec.loc))
    lw.done.add(name)


def _sum(lw: _Lowering, name: str, rec: ir.Sum) -> None:
    lw.emit(Step("spike_sum", (name,), tuple(_single_input(lw, name)), name, loc=rec.loc))
    lw.done.add(name)


def _readout(lw: _Lowering, name: str, rec: ir.Readout) -> None:
    (src,) = _single_input(lw, name)
    lw.emit(Step("readout_mean", (name,), (src,), name, Steps(lw.T), loc=rec.loc))
    lw.done.add(name)


def _letter(sign: str) -> str:
    return {"exc": "E", "inh": "I"}.get(sign, "")


def _weight_name(lw: _Lowering, src: str, dst_rec: ir.Population) -> tuple[str, str]:
    src_l, dst_l = _letter(node_sign(lw.graph, src)), _letter(dst_rec.sign)
    if src_l and dst_l:
        role = f"W_{dst_l}{src_l}"   # W_<to><from>: W_EE, W_IE, W_EI as in the paper
        return role, role
    return "W", "W"


def _geometry(edge: ir.Projection) -> tuple:
    return (edge.op, edge.kernel, edge.stride, edge.padding)


def _projections(lw: _Lowering, src: str, target: str) -> None:
    """Emit the fused projection from `src` that feeds `target`, with every sibling it can share."""
    edge = lw.graph.edge(src, target)
    # Inside a loop only the loop's own targets share the per-step product; the others get
    # one product over the whole sequence after the loop.
    scope = lw.loop.members if lw.in_loop(src) else None
    siblings = [(dst, e) for dst, e in lw.graph.out_edges(src, ir.Projection)
                if _geometry(e) == _geometry(edge) and (src, dst) not in lw.emitted
                and (scope is None or dst in scope)]
    weights, biases, outs = [], [], []
    for dst, e in siblings:
        rec = lw.graph.node(dst)
        name, role = _weight_name(lw, src, rec)
        shape = (rec.size, e.fan_in) if e.op == "dense" else \
            (rec.size, lw.graph.node(src).shape[0], e.kernel, e.kernel)
        weights.append(lw.param(dst, name, shape, role, e.init, e.nonneg, e.fan_in,
                                env=_sizes(lw, dst, e.fan_in), loc=e.loc))
        lw.weight_of[(src, dst)] = weights[-1]
        if e.init.rule == "mean_of":
            lw.ties.append((len(lw.params) - 1, src, e.init.ref, e.loc))
        biases.append(lw.param(dst, "bias", (rec.size,), "bias", ir.Init(rule="default"), False, e.fan_in)
                      if e.bias else None)
        out = f"{dst}<-{src}"
        outs.append(out)
        lw.emitted[(src, dst)] = out
    lw.emit(Step("project", tuple(outs), (src,), target,
                 Project(edge.op, edge.stride, edge.padding), ProjectParams(tuple(weights), tuple(biases)),
                 loc=edge.loc))


def _population(lw: _Lowering, name: str, rec: ir.Population) -> None:
    graph = lw.graph
    currents = [lw.incoming(src, name, edge) for src, edge in graph.in_edges(name, ir.Projection)]

    inhibitors, modes, w_ei, g_i = [], [], [], []
    for src, edge in graph.in_edges(name, ir.Inhibition):
        src_rec = graph.node(src)
        inhibitors.append(lw.incoming(src, name, edge))
        if edge.divisive and src_rec.gain is None:
            raise SpecError(f"divisive inhibition from '{src}' needs its gain g_I", edge.loc.span() if edge.loc else None,
                            hint="declare it: `inh I = relu(n, gain = gain_control)`")
        nonneg = edge.nonneg
        shape = (rec.size, src_rec.size)
        init = edge.init
        env = {"fan_in": edge.fan_in or 1, "n_E": rec.size, "n_I": src_rec.size}
        # DeepEISNN's E-I Prop rule (W_EI's gradient / d) is `grad_scale = 1 / fan_in`; true is its shorthand.
        factor = edge.grad_scale
        if isinstance(factor, bool):
            factor = 1.0 / edge.fan_in if factor and edge.fan_in else 1.0
        factor = _formula(factor, env, f"the gradient factor of the inhibition {src} -| {name}", edge.loc)
        kw = dict(env=env, loc=edge.loc, grad_scale=factor)
        if edge.shared or not (edge.subtractive and edge.divisive):
            paths = [lw.param(name, "W_EI" if nonneg else "W_inh", shape, "W_EI", init, nonneg, edge.fan_in, **kw)]
        else:
            paths = [lw.param(name, "W_EI_sub", shape, "W_EI", init, nonneg, edge.fan_in, **kw),
                     lw.param(name, "W_EI_div", shape, "W_EI", init, nonneg, edge.fan_in, **kw)]
        w_ei.append(tuple(paths))
        g_i.append(f"{src}.{_gain_name(src_rec)}" if src_rec.gain is not None and edge.divisive else None)
        # W_EI's gradient factor lives on its ParamSpec (Network.value applies it), not here.
        modes.append(Inhibitor(edge.subtractive, edge.divisive, edge.stabilize, edge.epsilon, edge.ste))
    if not currents and not inhibitors:
        raise SpecError(f"population '{name}' receives no input", rec.loc.span() if rec.loc else None)

    fan_in = next((e.fan_in for _, e in graph.in_edges(name, ir.Projection)), 1)
    gain = bias = None
    readout = rec.model == "current" and bool(inhibitors)
    # An inhibitory population's gain is g_I, which scales its divisive effect on its targets
    # (docs/science.md §1.2 item 4); any other population's gain (g_E) scales its own integrated current.
    own_gain = rec.sign != "inh"
    env = _sizes(lw, name, fan_in)
    for what, init in (("gain", rec.gain), ("bias", rec.bias)):
        if init is not None and init.rule in ("unit_std", "zero_mean"):
            _check_standardised(lw, name, rec, what, init.rule, readout, own_gain)
    if rec.gain is not None:
        gain = lw.param(name, _gain_name(rec), (rec.size,), _gain_name(rec).replace("log_", ""), rec.gain,
                        rec.sign != "free" and rec.dale, fan_in, used=not readout, env=env, loc=rec.loc)
    if rec.bias is not None:
        bias = lw.param(name, _bias_name(rec), (rec.size,), _bias_name(rec), rec.bias, False, fan_in,
                        used=not readout, env=env, loc=rec.loc)
    bn = None
    if rec.norm == "batchnorm":
        if inhibitors:
            raise SpecError(f"population '{name}' combines BatchNorm with inhibition, which has no defined order",
                            rec.loc.span() if rec.loc else None, hint="use one or the other")
        bn = f"{name}.bn"
        lw.buffers.append(ParamSpec(bn, (rec.size,), "bn", ir.Init(rule="default"), False, node=name))
        lw.names.setdefault(name, set()).add("bn")

    integrated = f"{name}:I_int"
    lw.emit(Step("integrate", (integrated,), tuple(currents) + tuple(inhibitors), name,
                 Integrate(len(currents), tuple(modes), readout, len(rec.shape or ()) > 1),
                 IntegrateParams(tuple(w_ei), tuple(g_i), gain if own_gain and not readout else None,
                                 None if readout else bias, bn), loc=rec.loc))
    if rec.model == "lif":
        # In a loop the membrane is carried from step to step by the loop itself.
        lw.emit(Step("lif_step" if lw.loop else "lif", (name,), (integrated,), name,
                     Neuron(lw.T, rec.tau, rec.theta, rec.reset, rec.v_reset, rec.detach_reset, rec.surrogate,
                            rec.alpha), loc=rec.loc))
    elif rec.model == "relu":
        lw.emit(Step("relu", (name,), (integrated,), name, loc=rec.loc))
    else:
        lw.emit(Step("identity", (name,), (integrated,), name, loc=rec.loc))
    lw.done.add(name)


def _gain_name(rec: ir.Population) -> str:
    name = {"exc": "g_E", "inh": "g_I"}.get(rec.sign, "g")
    return f"log_{name}" if rec.gain is not None and rec.gain.transform == "exp" else name


# ---------------------------------------------------------------- declared rules (formulas, ties)


def _sizes(lw: "_Lowering", pop: str, fan_in: int) -> dict[str, float]:
    """The names a formula may use for a parameter of population `pop`: fan_in of its (first) input,
    n_E (its own size, or for an I population the size of what it inhibits) and n_I (its own size
    if inhibitory, else the size of the population inhibiting it)."""
    graph, rec = lw.graph, lw.graph.node(pop)
    env = {"fan_in": fan_in or 1}
    # A size that differs between several partners is left undefined, so a formula using it is an error.
    if rec.sign == "inh":
        env["n_I"] = rec.size
        sizes = {graph.node(dst).size for dst, _ in graph.out_edges(pop, ir.Inhibition)}
        if len(sizes) == 1:
            env["n_E"] = sizes.pop()
    else:
        env["n_E"] = rec.size
        sizes = {graph.node(src).size for src, _ in graph.in_edges(pop, ir.Inhibition)}
        if len(sizes) == 1:
            env["n_I"] = sizes.pop()
    return env


def _formula(value, env: dict, what: str, loc) -> float:
    try:
        return ir.eval_formula(value, env)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise SpecError(f"{what} = {value}: {exc}", loc.span() if loc else None,
                        hint="formulas may use fan_in, n_E and n_I where the circuit defines them") from None


def _resolve_init(init: ir.Init, env: dict, what: str, loc) -> tuple[ir.Init, float]:
    """The init with its formulas evaluated for this parameter, and its gradient factor."""
    if init.data_dependent and init.transform != "none":
        # E-I Init writes the value the circuit uses; a transformed parameter stores something else.
        raise SpecError(f"{what}: the data-dependent init '{init.rule}' cannot be combined with "
                        f"transform = {init.transform}", loc.span() if loc else None,
                        hint="give a transformed parameter a data-free init (a number, formula or distribution)")
    changes = {}
    for field_name, v in (("value", init.value), ("scale", init.scale), ("low", init.low), ("high", init.high),
                          ("mean", init.mean), ("std", init.std)):
        if isinstance(v, str):
            changes[field_name] = _formula(v, env, f"the init {field_name} of {what}", loc)
            if not abs(changes[field_name]) <= FLOAT32_MAX:
                raise SpecError(f"{what} would start at {changes[field_name]:g} ({init.rule} {field_name} = {v}), "
                                "beyond the float32 range of a weight (about ±3.4e38)", loc.span() if loc else None)
    new = init.model_copy(update=changes) if changes else init
    bad = {"exponential": lambda: not new.scale > 0 and f"a positive scale, got {new.scale:g}",
           "uniform": lambda: not new.low < new.high and f"low < high, got low {new.low:g} and high {new.high:g}",
           "normal": lambda: not new.std > 0 and f"a positive standard deviation, got {new.std:g}"}.get(init.rule)
    if changes and bad is not None and bad():
        raise SpecError(f"the {init.rule} init of {what} needs {bad()}", loc.span() if loc else None)
    grad = _formula(init.grad, env, f"the gradient factor of {what}", loc)
    return new, grad


def _tie_means(lw: "_Lowering") -> None:
    """mean_of(P) on the weight src -> X: point its init at the weight src -> P."""
    for index, src, ref, loc in lw.ties:
        spec = lw.params[index]
        other = lw.weight_of.get((src, ref))
        if other is None:
            raise SpecError(f"mean_of('{ref}'): '{ref}' has no weight from '{src}' to average",
                            loc.span() if loc else None, hint="average a population fed by the same source")
        ref_spec = next(p for p in lw.params if p.path == other)
        if ref_spec.shape[1:] != spec.shape[1:]:
            raise SpecError(f"mean_of('{ref}'): its weight has shape {ref_spec.shape}, this one {spec.shape}",
                            loc.span() if loc else None)
        lw.params[index] = dataclasses.replace(spec, init=spec.init.model_copy(update={"ref": other}))


def _check_standardised(lw: _Lowering, name: str, rec, what: str, rule: str, readout: bool, own_gain: bool) -> None:
    """unit_std / zero_mean act on the population's own integrated current, once, on the first batch."""
    where = rec.loc.span() if rec.loc else None
    right = {"unit_std": "gain", "zero_mean": "bias"}[rule]
    if what != right:
        raise SpecError(f"population '{name}': '{rule}' is a {right} rule, given as its {what}", where,
                        hint=f"`{right} = {rule}`")
    if not own_gain and rule == "unit_std":
        raise SpecError(f"population '{name}' is inhibitory: its gain is g_I, which scales its divisive effect on "
                        "its targets, not its own current, so unit_std has nothing to standardise", where,
                        hint="use gain = gain_control (E-I Init) for an interneuron's g_I")
    if readout:
        raise SpecError(f"population '{name}' is a readout, whose g_E and b_E the circuit does not use "
                        "(the output is I_EE - W_EI s_I)", where,
                        hint="use `linear(n, gain = unit_std, bias = zero_mean)` for an output layer with its own "
                             "gain and bias")
    if rec.norm == "batchnorm":
        raise SpecError(f"population '{name}' is normalised by {rec.norm}, which sets its statistics itself; "
                        f"'{rule}' would be undone every step", where, hint=f"drop `norm = {rec.norm}` or `{rule}`")
    if lw.loop:
        raise SpecError(f"population '{name}' is inside a loop: '{rule}' is measured on the first batch in one "
                        "pass, which a loop's own feedback would change", where,
                        hint="give populations in loops a number (e.g. `gain = 1, bias = 0`)")


def _bias_name(rec: ir.Population) -> str:
    return {"exc": "b_E", "inh": "b_I"}.get(rec.sign, "b")


def _loop(lw: _Lowering, members: list[str]) -> None:
    """One step that runs `members` (a cycle through delayed edges) once per time step."""
    graph = lw.graph
    for name in members:
        rec = graph.node(name)
        if isinstance(rec, ir.Readout) or (isinstance(rec, ir.Population) and rec.norm == "batchnorm"):
            what = "a readout" if isinstance(rec, ir.Readout) else "BatchNorm"
            raise SpecError(f"'{name}' is part of a recurrent loop, where {what} has no per-step meaning",
                            rec.loc.span() if rec.loc else None,
                            hint="keep readouts and BatchNorm layers outside loops through a delay")
    loop = _Loop(set(members))
    # Whatever enters the loop from outside is computed once, over the whole sequence.
    for name in members:
        for src, edge in graph.in_edges(name):
            if src not in loop.members and isinstance(edge, (ir.Projection, ir.Inhibition)):
                loop.ready[(src, name)] = lw.incoming(src, name, edge)
    outer, lw.steps, lw.loop = lw.steps, [], loop
    for name in members:
        _build(lw, name)
    for src, dst in loop.pending:
        if (src, dst) not in lw.emitted:
            _projections(lw, src, dst)
    body, lw.steps, lw.loop = lw.steps, outer, None
    produced = {out for step in body for out in step.outs}
    inputs = tuple(dict.fromkeys(i for step in body if step.op != "delay_step"
                                 for i in step.ins if i not in produced))
    history = tuple(dict.fromkeys(step.ins[0] for step in body if step.op == "delay_step"))
    first = graph.node(members[0])
    lw.emit(Step("loop", tuple(members), inputs, members[0],
                 Loop(lw.T, tuple(body), history, tuple(members)), loc=first.loc))


def _check_lowerable(graph: ir.Graph) -> None:
    """Combinations the front end accepts but the runtime cannot execute, refused with their location."""
    for src, dst, edge in graph.edges():
        span = edge.loc.span() if edge.loc else None
        if getattr(edge, "delay", 0) < 0:
            raise SpecError(f"delay must be 0 or more time steps, got {edge.delay}", span)
        if isinstance(edge, ir.Inhibition) and not (edge.subtractive or edge.divisive):
            raise SpecError("this inhibition is neither subtractive nor divisive, so it does nothing", span,
                            hint="set `sub = true`, `div = true` or both")
        if isinstance(edge, ir.Inhibition) and not isinstance(graph.node(src), ir.Population):
            raise SpecError(f"inhibition must come from a population, but '{src}' is a {graph.node(src).kind}",
                            span, hint="inhibit from the interneuron population itself (`I -| E`)")
    for src, dst, edge in graph.edges():
        if isinstance(edge, (ir.Projection, ir.Inhibition)):
            _check_init(edge.init, f"the weights of '{src}' -> '{dst}'", edge.loc)
    for name, rec in graph.nodes():
        if isinstance(rec, ir.Population):
            for what, init in (("gain", rec.gain), ("bias", rec.bias)):
                if init is not None:
                    _check_init(init, f"the {what} of '{name}'", rec.loc)
        if isinstance(rec, ir.Readout) and rec.shape is not None and len(rec.shape) != 1:
            raise SpecError(f"the readout needs one value per class, but its input has shape {tuple(rec.shape)}",
                            rec.loc.span() if rec.loc else None,
                            hint="flatten it (after global_avgpool) and end on a classifier layer")
        if isinstance(rec, (ir.Pool, ir.Flatten, ir.Readout)):
            n = sum(1 for _ in graph.in_edges(name))
            if n != 1:
                raise SpecError(f"a {rec.kind} takes exactly one input, '{name}' has {n}",
                                rec.loc.span() if rec.loc else None)


FLOAT32_MAX = 3.4028234663852886e38


def _check_init(init: ir.Init, what: str, loc) -> None:
    """Weights are float32: an init value beyond its range would fail (or turn to inf) on filling."""
    for field_name, v in (("value", init.value), ("low", init.low), ("high", init.high), ("mean", init.mean),
                          ("std", init.std)):
        if v is not None and not isinstance(v, str) and not abs(v) <= FLOAT32_MAX:   # formulas: checked when resolved
            raise SpecError(f"{what} would start at {v:g} ({init.rule} {field_name}), beyond the float32 range "
                            f"of a weight (about ±3.4e38)", loc.span() if loc else None)


BUILDERS: dict[type, Callable] = {
    ir.Input: _input,
    ir.Population: _population,
    ir.Pool: _pool,
    ir.Flatten: _flatten,
    ir.Sum: _sum,
    ir.Readout: _readout,
}


def python_name(value: str) -> str:
    """A tensor name from the plan as a Python identifier, for the code generator."""
    name = re.sub(r"\W+", "_", value.replace("<-", "_from_").replace("@t-", "_delayed_").replace(":", "_"))
    return name.strip("_") or "v"
