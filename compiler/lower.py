"""Graph IR -> plan: one builder per IR record type, registered in BUILDERS.

Builders walk the network in time order. Projections that share a source and a
geometry (the E->E and E->I of one E-I layer) are fused into a single matmul or
convolution. Anything the runtime cannot execute is refused here, at compile
time, with the spec location of the offending node.
"""
from __future__ import annotations

import re
from typing import Callable

import networkx as nx

from eidsl import ir
from eidsl.errors import SpecError
from eidsl.passes import node_sign, time_order

from .plan import ParamSpec, Plan, Step


def lower(graph: ir.Graph) -> Plan:
    lw = _Lowering(graph)
    for name in _order(graph):
        rec = graph.node(name)
        BUILDERS[type(rec)](lw, name, rec)
    return Plan(graph.name, lw.T, graph.node(graph.input_name), lw.steps, lw.params, lw.buffers, graph.output)


def _order(graph: ir.Graph) -> list[str]:
    """Every node after all its sources, delayed edges included, so a delayed feedforward
    projection reads a tensor that exists; only loops through a delay fall back to the
    per-time-step order (and are refused by `need`)."""
    index = {name: i for i, name in enumerate(graph.g.nodes)}
    try:
        return list(nx.lexicographical_topological_sort(graph.g, key=lambda n: f"{index[n]:09d}"))
    except nx.NetworkXUnfeasible:
        return time_order(graph)


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

    def emit(self, step: Step) -> None:
        self.steps.append(step)

    def need(self, src: str, dst: str, rec) -> None:
        if src not in self.done:
            raise SpecError(f"'{dst}' reads '{src}' from the previous time step inside a loop; "
                            "recurrent loops through a delay are not supported by this compiler yet",
                            rec.loc.span() if rec.loc else None,
                            hint="feed the delayed projection from a layer computed earlier")

    def delay(self, edge, target: str) -> int:
        """A delay reads an earlier time step: it must be one of the T the network runs."""
        if not 0 <= edge.delay < self.T:
            raise SpecError(f"the projection into '{target}' has delay {edge.delay}, but the network runs "
                            f"T = {self.T} time steps, so delays go from 0 to {self.T - 1}",
                            edge.loc.span() if edge.loc else None,
                            hint="shorten the delay or raise T" if edge.delay > 0 else "delays read the past: "
                                 "use a delay of 0 or more")
        return edge.delay

    def param(self, node: str, name: str, shape, role: str, init: ir.Init, nonneg: bool,
              fan_in: int = 1, used: bool = True) -> str:
        taken = self.names.setdefault(node, set())
        base, k = name, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        spec = ParamSpec(f"{node}.{name}", tuple(shape), role, init, nonneg, fan_in, node, used)
        self.params.append(spec)
        return spec.path


# ---------------------------------------------------------------- builders


def _input(lw: _Lowering, name: str, rec: ir.Input) -> None:
    op = "repeat_static" if rec.encoding == "static" else "fold_events"
    lw.emit(Step(op, (name,), ("input",), name, {"T": rec.T}, loc=rec.loc))
    lw.done.add(name)


def _single_input(lw: _Lowering, name: str) -> list[str]:
    srcs = [src for src, _ in sorted(lw.graph.in_edges(name, ir.Flow), key=lambda e: e[1].port)]
    return srcs


def _pool(lw: _Lowering, name: str, rec: ir.Pool) -> None:
    (src,) = _single_input(lw, name)
    if rec.global_pool:
        lw.emit(Step("global_avgpool", (name,), (src,), name, loc=rec.loc))
    else:
        lw.emit(Step("avgpool", (name,), (src,), name, {"kernel": rec.kernel, "stride": rec.stride}, loc=rec.loc))
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
    lw.emit(Step("readout_mean", (name,), (src,), name, {"T": lw.T}, loc=rec.loc))
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
    siblings = [(dst, e) for dst, e in lw.graph.out_edges(src, ir.Projection)
                if _geometry(e) == _geometry(edge) and (src, dst) not in lw.emitted]
    weights, biases, outs = [], [], []
    for dst, e in siblings:
        rec = lw.graph.node(dst)
        name, role = _weight_name(lw, src, rec)
        shape = (rec.size, e.fan_in) if e.op == "dense" else \
            (rec.size, lw.graph.node(src).shape[0], e.kernel, e.kernel)
        weights.append(lw.param(dst, name, shape, role, e.init, e.nonneg, e.fan_in))
        biases.append(lw.param(dst, "bias", (rec.size,), "bias", ir.Init(rule="default"), False, e.fan_in)
                      if e.bias else None)
        out = f"{dst}<-{src}"
        outs.append(out)
        lw.emitted[(src, dst)] = out
    lw.emit(Step("project", tuple(outs), (src,), target,
                 {"op": edge.op, "stride": edge.stride, "padding": edge.padding},
                 {"weights": weights, "biases": biases}, loc=edge.loc))


def _population(lw: _Lowering, name: str, rec: ir.Population) -> None:
    graph = lw.graph
    currents = []
    for src, edge in graph.in_edges(name, ir.Projection):
        lw.need(src, name, edge)
        if (src, name) not in lw.emitted:
            _projections(lw, src, name)
        current = lw.emitted[(src, name)]
        if lw.delay(edge, name):
            delayed = f"{current}@t-{edge.delay}"
            lw.emit(Step("delay", (delayed,), (current,), name, {"T": lw.T, "steps": edge.delay}, loc=edge.loc))
            current = delayed
        currents.append(current)

    inhibitors, modes, w_ei, g_i = [], [], [], []
    for src, edge in graph.in_edges(name, ir.Inhibition):
        lw.need(src, name, edge)
        src_rec = graph.node(src)
        signal = src
        if lw.delay(edge, name):
            signal = f"{src}@t-{edge.delay}"
            lw.emit(Step("delay", (signal,), (src,), name, {"T": lw.T, "steps": edge.delay}, loc=edge.loc))
        inhibitors.append(signal)
        if edge.divisive and src_rec.gain is None:
            raise SpecError(f"divisive inhibition from '{src}' needs its gain g_I", edge.loc.span() if edge.loc else None,
                            hint="declare it: `inh I = relu(n, gain = gain_control)`")
        nonneg = edge.nonneg
        shape = (rec.size, src_rec.size)
        init = edge.init
        if edge.shared or not (edge.subtractive and edge.divisive):
            paths = [lw.param(name, "W_EI" if nonneg else "W_inh", shape, "W_EI", init, nonneg, edge.fan_in)]
        else:
            paths = [lw.param(name, "W_EI_sub", shape, "W_EI", init, nonneg, edge.fan_in),
                     lw.param(name, "W_EI_div", shape, "W_EI", init, nonneg, edge.fan_in)]
        w_ei.append(paths)
        g_i.append(f"{src}.{_gain_name(src_rec)}" if src_rec.gain is not None and edge.divisive else None)
        modes.append({"subtractive": edge.subtractive, "divisive": edge.divisive, "stabilize": edge.stabilize,
                      "epsilon": edge.epsilon, "ste": edge.ste,
                      "grad_scale": 1.0 / edge.fan_in if edge.grad_scale and edge.fan_in else 1.0})
    if not currents and not inhibitors:
        raise SpecError(f"population '{name}' receives no input", rec.loc.span() if rec.loc else None)

    fan_in = next((e.fan_in for _, e in graph.in_edges(name, ir.Projection)), 1)
    gain = bias = None
    readout = rec.model == "current" and bool(inhibitors)
    # An inhibitory population's gain is g_I, which scales its divisive effect on its targets
    # (PAPER.md §1.2 item 4); any other population's gain (g_E) scales its own integrated current.
    own_gain = rec.sign != "inh"
    if rec.gain is not None:
        gain = lw.param(name, _gain_name(rec), (rec.size,), _gain_name(rec), rec.gain,
                        rec.sign != "free" and rec.dale, fan_in, used=not readout)
    if rec.bias is not None:
        bias = lw.param(name, _bias_name(rec), (rec.size,), _bias_name(rec), rec.bias, False, fan_in,
                        used=not readout)
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
                 {"n_exc": len(currents), "modes": modes, "balanced_only": readout,
                  "spatial": len(rec.shape or ()) > 1},
                 {"W_EI": w_ei, "g_I": g_i, "g_E": gain if own_gain and not readout else None,
                  "b_E": None if readout else bias, "bn": bn}, loc=rec.loc))
    if rec.model == "lif":
        _check_neuron(name, rec)
        lw.emit(Step("lif", (name,), (integrated,), name,
                     {"T": lw.T, "tau": rec.tau, "theta": rec.theta, "reset": rec.reset, "v_reset": rec.v_reset,
                      "detach_reset": rec.detach_reset, "surrogate": rec.surrogate, "alpha": rec.alpha}, loc=rec.loc))
    elif rec.model == "relu":
        lw.emit(Step("relu", (name,), (integrated,), name, loc=rec.loc))
    else:
        lw.emit(Step("identity", (name,), (integrated,), name, loc=rec.loc))
    lw.done.add(name)


def _check_neuron(name: str, rec: ir.Population) -> None:
    # Written as not (a >= b) so that NaN (reachable by spec arithmetic, 1e400 - 1e400) fails too.
    problem = None
    if not rec.tau >= 1:
        problem = (f"tau = {rec.tau:g}, but a LIF membrane keeps 1 - 1/tau of its potential each step, "
                   "so tau must be at least 1")
    elif not rec.alpha > 0:
        problem = f"alpha = {rec.alpha:g}, but the surrogate gradient's sharpness must be positive"
    if problem:
        raise SpecError(f"population '{name}': {problem}", rec.loc.span() if rec.loc else None)


def _gain_name(rec: ir.Population) -> str:
    return {"exc": "g_E", "inh": "g_I"}.get(rec.sign, "g")


def _bias_name(rec: ir.Population) -> str:
    return {"exc": "b_E", "inh": "b_I"}.get(rec.sign, "b")


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
