"""Graph IR + weights -> NIR (the Neuromorphic Intermediate Representation), with a lossiness report.

NIR describes a network as continuous-time nodes joined by edges whose signals are
summed where they meet. eidsl runs in discrete steps; with forward-Euler steps of
length dt the two coincide exactly for everything below (docs/interop.md derives it):

    projection  ->  Linear / Affine / Conv2d, weights times the source's sign
                    (inhibitory W_EI negated), g_E and b_E folded into weights and bias
    LIF, soft reset ->  LI (tau*dt, r = tau, v_leak = 0) -> Threshold(theta) with a Scale
                    feedback -(1 - 1/tau) theta of the previous step's spikes (the reset)
    LIF, hard reset ->  LIF (tau*dt, r = tau, v_leak = 0, theta, v_reset)
    ReLU interneurons whose current cannot be negative, currents, sums -> Scale(1)
    avgpool, flatten -> AvgPool2d, Flatten;  readout (mean over T) -> I with r = 1/(T dt)

What NIR cannot express is listed, one line per IR record, as a `Loss`: blocking
ones change the forward pass (divisive inhibition, a rectifier that can act);
the others are rules NIR does not store (training rules, data-dependent init).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from eidsl import ir
from eidsl.errors import EidslError
from eidsl.ir import time_order

from eidsl_compiler.network import Network

try:
    import nir
except ModuleNotFoundError:  # the optional extra is not installed
    nir = None


class NIRExportError(EidslError):
    pass


@dataclass(frozen=True)
class Loss:
    """One IR record NIR cannot express."""
    loc: ir.Loc | None
    what: str
    why: str
    blocking: bool                  # the forward pass would change
    substitute: str | None = None   # what --lossy writes instead

    def line(self) -> str:
        return f"{where(self.loc)}: {self.what} is not expressible in NIR: {self.why}"


def where(loc: ir.Loc | None) -> str:
    if loc is None:
        return "<unknown>:1:1"
    path = loc.file
    if os.path.isabs(path):
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    return f"{path}:{loc.line}:{loc.column}"


@dataclass
class Export:
    graph: "nir.NIRGraph"
    losses: list[Loss]
    notes: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[Loss]:
        return [x for x in self.losses if x.blocking]

    def report(self) -> list[str]:
        """Blocking lines first, then the rules NIR does not store."""
        return [x.line() for x in self.losses if x.blocking] + [x.line() for x in self.losses if not x.blocking]


# ---------------------------------------------------------------- what NIR cannot express


def nonnegative(graph: ir.Graph, name: str) -> bool:
    """Can this node's output never be negative? Inputs (pixels, event counts), spikes and ReLUs cannot."""
    rec = graph.node(name)
    if isinstance(rec, ir.Input):
        return True
    if isinstance(rec, ir.Population):
        return rec.model in ("lif", "relu")
    return all(nonnegative(graph, src) for src, _ in graph.in_edges(name))


def rectifier_acts(graph: ir.Graph, net: Network, pl: "_PlanIndex", name: str) -> str | None:
    """Why max(0, .) of this ReLU population is not the identity, or None when it provably is."""
    rec = graph.node(name)
    if any(True for _ in graph.in_edges(name, ir.Inhibition)):
        return "it receives inhibition, so its current can be negative"
    if rec.norm != "none":
        return "its BatchNorm shift can make the current negative"
    for src, edge in graph.in_edges(name, ir.Projection):
        if not nonnegative(graph, src):
            return f"its source '{src}' can be negative"
        weight, bias, _ = pl.projection(src, name)
        if net.tensor(weight).min().item() < 0:
            return f"'{weight}' has negative entries"
        if bias is not None and net.tensor(bias).min().item() < 0:
            return f"'{bias}' has negative entries"
    b = pl.integrate(name).params.b_E
    if b is not None and net.tensor(b).min().item() < 0:
        return f"its bias '{b}' has negative entries"
    return None


def losses(graph: ir.Graph, net: Network, trained: bool) -> list[Loss]:
    out: list[Loss] = []
    pl = _PlanIndex(net)
    for name, rec in graph.nodes(ir.Population):
        if rec.model == "relu":
            reason = rectifier_acts(graph, net, pl, name)
            if reason:
                out.append(Loss(rec.loc, f"rectifying interneurons '{name}' (relu)",
                                f"NIR has no rectifier node and here max(0, .) is not the identity: {reason}",
                                True, f"'{name}' passes its current through unrectified (identity)"))
        rules = []
        if rec.model == "lif":
            rules.append(f"{rec.surrogate} surrogate gradient (alpha {rec.alpha:g})")
            if rec.detach_reset:
                rules.append("reset excluded from the gradient")
        if rec.norm == "batchnorm":
            rules.append("BatchNorm batch statistics in training (folded here with its running statistics)")
        if rec.gain is not None and rec.gain.data_dependent and not trained:
            rules.append(f"data-dependent init '{rec.gain.rule}' of its gain")
        if any(p.node == name and p.role in ("g_E", "g_I", "g") and p.nonneg for p in net.plan.params):
            rules.append("gain constrained >= 0")
        if rules:
            out.append(Loss(rec.loc, f"training of '{name}' ({'; '.join(rules)})", _RULES_WHY, False))
    # Declared parameter rules (the `param(...)` wrapper): NIR keeps values, not how they learn.
    for spec in net.plan.params:
        rules = []
        if spec.grad_scale != 1.0 and spec.role != "W_EI":
            rules.append(f"gradient scaled by {spec.grad_scale:.4g}")
        if spec.transform == "exp":
            rules.append("stored as its log (exported as exp of it)")
        if rules:
            rec = graph.node(spec.node)
            out.append(Loss(rec.loc, f"training of '{spec.path}' ({'; '.join(rules)})", _RULES_WHY, False))
    for name, rec in graph.nodes(ir.Pool):
        if rec.op == "max":
            out.append(Loss(rec.loc, f"max pooling '{name}'", "NIR has average and sum pooling only",
                            True, f"'{name}' written as an average pool of the same size"))
    for src, dst, edge in graph.edges():
        if getattr(edge, "delay", 0) and nx.has_path(graph.g, dst, src):
            out.append(Loss(edge.loc, f"recurrent delay '{src} -> {dst}' ({edge.delay} step(s) inside a loop)",
                            "NIR leaves the time step at which a cycle's signal arrives to the simulator "
                            "(nirtorch, for one, adds a step on every cycle)",
                            True, f"an explicit Delay of {edge.delay} step(s) on the cycle"))
        if isinstance(edge, ir.Inhibition) and edge.divisive:
            kept = "g_E (I_EE - W_EI s_I) + b_E" if edge.subtractive else "g_E I_EE + b_E"
            out.append(Loss(edge.loc, f"divisive (shunting) inhibition '{src} -| {dst}'",
                            "NIR combines a node's inputs by summation only; dividing the integrated current "
                            "by W_EI (g_I s_I) has no NIR primitive",
                            True, f"divisor replaced by 1: '{dst}' integrates {kept}"))
        if not isinstance(edge, (ir.Projection, ir.Inhibition)):
            continue
        rules = []
        if edge.nonneg:
            rules.append("Dale's law: weights projected onto >= 0 after each step")
        if isinstance(edge, ir.Inhibition):
            factor = next((p.grad_scale for p in net.plan.params if p.node == dst and p.role == "W_EI"), 1.0)
            if factor != 1.0:
                rules.append(f"W_EI gradient scaled by {factor:.4g}" +
                             (" (1/d)" if edge.fan_in and abs(factor * edge.fan_in - 1) < 1e-12 else ""))
            if edge.divisive and edge.ste and edge.stabilize == "min_positive":
                rules.append("E-I Prop straight-through divisor")
        if edge.init.data_dependent and not trained:
            rules.append(f"data-dependent init '{edge.init.rule}'")
        if rules:
            arrow = "-|" if isinstance(edge, ir.Inhibition) else "->"
            out.append(Loss(edge.loc, f"training of '{src} {arrow} {dst}' ({'; '.join(rules)})",
                            _RULES_WHY, False))
    return out


_RULES_WHY = ("NIR stores a network's values for inference, not how they are initialised or trained "
              "(the exported forward pass is unaffected)")


# ---------------------------------------------------------------- the plan, indexed


def _walk(steps):
    """Every step, the bodies of per-time-step loops included."""
    for step in steps:
        yield step
        if step.op == "loop":
            yield from _walk(step.attrs.body)


class _PlanIndex:
    """Which parameter tensors the lowered plan uses for each projection and population."""

    def __init__(self, net: Network):
        self.proj: dict[tuple[str, str], tuple[str, str | None, dict]] = {}
        self.integ: dict[str, object] = {}
        for step in _walk(net.plan.steps):
            if step.op == "project":
                for out, w, b in zip(step.outs, step.params.weights, step.params.biases):
                    dst, src = out.split("<-", 1)
                    self.proj[(src, dst)] = (w, b, step.attrs)
            elif step.op == "integrate":
                self.integ[step.node] = step

    def projection(self, src: str, dst: str):
        return self.proj[(src, dst)]

    def integrate(self, name: str):
        return self.integ[name]


# ---------------------------------------------------------------- conversion


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _rows(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Scale the output rows (neurons or channels) of a weight."""
    if scale is None:
        return x
    return x * scale.view(-1, *([1] * (x.dim() - 1)))


def _full(shape, value) -> np.ndarray:
    return np.full(tuple(shape), value, dtype=np.float32)


def fires_at(theta: float) -> np.float32:
    """NIR fires on v > v_threshold, eidsl on v >= theta: the next float32 below theta makes them agree."""
    return np.nextafter(np.float32(theta), np.float32(-np.inf))


def lif_nodes(name: str, shape, tau: float, theta: float, reset: str, v_reset: float, dt: float):
    """NIR nodes and internal edges of one eidsl LIF population; inputs go to `entry`, spikes leave `name`.

    eidsl: v <- v (1 - 1/tau) + I, s = [v >= theta], then v <- v - theta s (soft) or v_reset (hard).
    NIR's LIF/LI, one Euler step dt: v <- (1 - dt/tau_N) v + (dt/tau_N)(v_leak + r I). They agree for
    tau_N = tau dt, r = tau, v_leak = 0; the threshold is theta one float32 below (NIR fires on >).
    NIR's LIF resets to v_reset; the soft reset is a feedback of the previous step's spikes into an LI:
    u[t] = (1 - 1/tau)(u[t-1] - theta s[t-1]) + I[t].
    """
    tau_n = _full(shape, tau * dt)
    r = _full(shape, tau)
    leak = _full(shape, 0.0)
    threshold = np.full(shape, fires_at(theta), dtype=np.float32)
    if reset == "hard":
        return {name: nir.LIF(tau=tau_n, r=r, v_leak=leak, v_threshold=threshold,
                              v_reset=_full(shape, v_reset))}, []
    beta = 1.0 - 1.0 / tau
    nodes = {f"{name}.v": nir.LI(tau=tau_n, r=r, v_leak=leak),
             name: nir.Threshold(threshold=threshold),
             f"{name}.reset": nir.Scale(scale=_full(shape, -beta * theta))}
    return nodes, [(f"{name}.v", name), (name, f"{name}.reset"), (f"{name}.reset", f"{name}.v")]


class _Builder:
    def __init__(self, graph: ir.Graph, net: Network, dt: float):
        self.graph, self.net, self.dt = graph, net, dt
        self.pl = _PlanIndex(net)
        self.T = graph.node(graph.input_name).T
        self.nodes: dict[str, object] = {}
        self.edges: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def add(self, name: str, node, ir_name: str, loc: ir.Loc | None) -> str:
        node.metadata = {"eidsl_node": ir_name, "spec": where(loc)}
        self.nodes[name] = node
        return name

    def entry(self, name: str) -> str:
        """The NIR node that receives the inputs of IR node `name`."""
        rec = self.graph.node(name)
        if isinstance(rec, ir.Population) and rec.model == "lif" and rec.reset == "soft":
            return f"{name}.v"
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.graph.node(name).shape)

    # -- records

    def input(self, name: str, rec: ir.Input) -> None:
        self.add(name, nir.Input(input_type=np.array(rec.shape)), name, rec.loc)

    def pool(self, name: str, rec: ir.Pool) -> None:
        src_shape = self.shape(self._flow_sources(name)[0])
        k = src_shape[1:] if rec.global_pool else (rec.kernel, rec.kernel)
        s = k if rec.global_pool else (rec.stride, rec.stride)
        self.add(name, nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array([0, 0])),
                 name, rec.loc)
        self._flows(name)

    def flatten(self, name: str, rec: ir.Flatten) -> None:
        src_shape = self.shape(self._flow_sources(name)[0])
        self.add(name, nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1),
                 name, rec.loc)
        self._flows(name)

    def sum(self, name: str, rec: ir.Sum) -> None:
        # NIR sums every edge arriving at a node; an identity Scale is the place where they meet.
        self.add(name, nir.Scale(scale=_full(self.shape(name), 1.0)), name, rec.loc)
        self._flows(name)

    def readout(self, name: str, rec: ir.Readout) -> None:
        # The mean over T steps is an integrator read after step T: v += dt * I / (T dt).
        self.add(name, nir.I(r=_full(self.shape(name), 1.0 / (self.T * self.dt))), name, rec.loc)
        self._flows(name)

    def _flow_sources(self, name: str) -> list[str]:
        return [src for src, _ in sorted(self.graph.in_edges(name, ir.Flow), key=lambda e: e[1].port)]

    def _flows(self, name: str) -> None:
        for src in self._flow_sources(name):
            self.edges.append((src, self.entry(name)))

    def population(self, name: str, rec: ir.Population) -> None:
        # I_int = g_E * (bn(sum_k W_k x_k + b_k) - W_EI s_I) + b_E: g_E and the BatchNorm scale multiply
        # the weights' rows, every constant gathers in one bias. (The E-I readout has no g_E, b_E.)
        graph, shape = self.graph, self.shape(name)
        step = self.pl.integrate(name)
        g_E, b_E = self._tensor(step.params.g_E), self._tensor(step.params.b_E)
        exc_scale, bias = g_E, torch.zeros(rec.size)
        if step.params.bn is not None:
            bn = self.net.tensor(step.params.bn)
            bn_scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            bn_shift = bn.bias.detach() - bn.running_mean * bn_scale
            exc_scale = bn_scale if g_E is None else g_E * bn_scale
            bias = bias + (bn_shift if g_E is None else g_E * bn_shift)
            self.notes.append(f"BatchNorm of '{name}' folded into its projections with its running statistics "
                              "(inference mode)")
        if b_E is not None:
            bias = bias + b_E
        weighted: list[str] = []
        entry = self.entry(name)

        for src, edge in graph.in_edges(name, ir.Projection):
            w_path, b_path, attrs = self.pl.projection(src, name)
            weight = _rows(self._tensor(w_path), exc_scale)
            if b_path is not None:
                bias = bias + _rows(self._tensor(b_path), exc_scale)
            node = self._weight_node(w_path, weight, attrs.op, attrs.stride, attrs.padding, src, name,
                                     edge.loc)
            weighted.append(node)
            self.edges.append((src, node))
            out = node
            if edge.delay:      # eidsl delays the projected current, bias included
                out = self.add(f"{node}.delay", nir.Delay(delay=_full(shape, edge.delay * self.dt)), name, edge.loc)
                self.edges.append((node, out))
            self.edges.append((out, entry))

        for (src, edge), w_paths in zip(graph.in_edges(name, ir.Inhibition), step.params.W_EI):
            if not edge.subtractive:
                continue        # divisive only: a blocking loss, dropped under --lossy
            # The source is inhibitory, so its NIR weight carries the minus sign: -g_E W_EI.
            weight = -_rows(self._tensor(w_paths[0]), g_E)
            conv = len(shape) > 1
            node = self._weight_node(w_paths[0], weight[:, :, None, None] if conv else weight,
                                     "conv" if conv else "dense", 1, 0, src, name, edge.loc)
            weighted.append(node)
            source = src
            if edge.delay:      # eidsl delays the interneurons' output before W_EI
                source = self.add(f"{node}.delay", nir.Delay(delay=_full(self.shape(src), edge.delay * self.dt)),
                                  name, edge.loc)
                self.edges.append((src, source))
            self.edges.append((source, node))
            self.edges.append((node, entry))

        if torch.any(bias != 0):
            self._put_bias(weighted, bias)
        self._neuron(name, rec, shape)

    def _tensor(self, path: str | None) -> torch.Tensor | None:
        return None if path is None else self.net.value(path).detach()   # g_I = exp(alpha) where declared

    def _put_bias(self, weighted: list[str], bias: torch.Tensor) -> None:
        if not weighted:
            raise NIRExportError("a population with a bias but no weighted input cannot be exported")
        node_name = weighted[0]
        node = self.nodes[node_name]
        if isinstance(node, nir.Linear):
            node = nir.Affine(weight=node.weight, bias=_np(bias))
            node.metadata = self.nodes[node_name].metadata
            self.nodes[node_name] = node
        else:
            node.bias = node.bias + _np(bias)

    def _weight_node(self, path: str, weight: torch.Tensor, op: str, stride: int, padding: int, src: str,
                     dst: str, loc) -> str:
        if op == "conv":
            node = nir.Conv2d(input_shape=self.shape(src)[1:], weight=_np(weight), stride=stride, padding=padding,
                              dilation=1, groups=1, bias=np.zeros(weight.shape[0], dtype=np.float32))
        else:
            node = nir.Linear(weight=_np(weight))
        return self.add(path, node, f"{src}->{dst}", loc)

    def _neuron(self, name: str, rec: ir.Population, shape) -> None:
        if rec.model != "lif":
            # relu (proven or, with --lossy, assumed to be the identity) and currents: where inputs meet.
            self.add(name, nir.Scale(scale=_full(shape, 1.0)), name, rec.loc)
            return
        nodes, edges = lif_nodes(name, shape, rec.tau, rec.theta, rec.reset, rec.v_reset, self.dt)
        for key, node in nodes.items():
            self.add(key, node, name, rec.loc)
        self.edges += edges

    # -- whole graph

    def build(self) -> None:
        handlers = {ir.Input: self.input, ir.Population: self.population, ir.Pool: self.pool,
                    ir.Flatten: self.flatten, ir.Sum: self.sum, ir.Readout: self.readout}
        for name in time_order(self.graph):
            rec = self.graph.node(name)
            handlers[type(rec)](name, rec)
        out = "output"
        while out in self.nodes:
            out = "_" + out
        output = self.graph.output
        self.add(out, nir.Output(output_type=np.array(self.shape(output))), output, self.graph.loc)
        self.edges.append((output, out))
        self._prune(out)

    def _prune(self, out: str) -> None:
        """Drop nodes whose signal no longer reaches the output (a divisive-only interneuron)."""
        keep, frontier = {out}, [out]
        while frontier:
            node = frontier.pop()
            for a, b in self.edges:
                if b == node and a not in keep:
                    keep.add(a)
                    frontier.append(a)
        self.nodes = {k: v for k, v in self.nodes.items() if k in keep}
        self.edges = [(a, b) for a, b in self.edges if a in keep and b in keep]


EXTENSION = "eidsl-ei/1"


def extension_metadata(graph: ir.Graph, net: Network) -> dict:
    """The eidsl-ei/1 extension (docs/interop.md): the circuit and its unfolded values, for eidsl to read back.

    NIR consumers that do not know it see graph metadata and ignore it; the NIR nodes stay the
    honest (possibly lossy) graph. Every tensor of the state dict is stored under `eidsl.state.KEY`
    as written, so the divisive circuit, g_E and b_E come back bit for bit."""
    meta = {"eidsl.extension": EXTENSION, "eidsl.ir": graph.dumps()}
    for key, value in net.state_dict().items():
        meta[f"eidsl.state.{key}"] = np.ascontiguousarray(value.detach().cpu().numpy())
    return meta


def divisive_note(graph: ir.Graph, net: Network, name: str) -> str | None:
    """What a divisively inhibited population computes, in words and state-dict keys (per-node metadata)."""
    pl = _PlanIndex(net)
    step = pl.integrate(name)
    parts = []
    for (src, edge), w_paths, g_I in zip(graph.in_edges(name, ir.Inhibition), step.params.W_EI,
                                         step.params.g_I):
        if edge.divisive:
            parts.append({"source": src, "W_EI": w_paths[-1], "g_I": g_I, "subtractive": edge.subtractive,
                          "stabilize": edge.stabilize, "epsilon": edge.epsilon, "delay": edge.delay})
    if not parts:
        return None
    return json.dumps({"equation": "I_int = g_E (sum_k W_k x_k - W_EI s_I) / D + b_E, "
                                   "D = stabilize(W_EI (g_I s_I))", "divisors": parts,
                       "g_E": step.params.g_E, "b_E": step.params.b_E})


def export(graph: ir.Graph, net: Network, *, trained: bool, weights: str, lossy: bool = False,
           dt: float = 1.0, source: str = "", extension: bool = True) -> Export:
    """The NIR graph of `net` (built from `graph`), and everything it cannot carry.

    Raises NIRExportError listing the blocking losses unless `lossy`."""
    if nir is None:
        raise NIRExportError("NIR export needs the 'nir' package: pip install 'eidsl[nir]'")
    if not dt > 0:
        raise NIRExportError(f"--dt must be positive, got {dt}")
    found = losses(graph, net, trained)
    blocking = [x for x in found if x.blocking]
    if blocking and not lossy:
        raise LossyExport(blocking)
    b = _Builder(graph, net, dt)
    with torch.no_grad():
        b.build()
    notes = [f"weights: {weights}"] + b.notes
    rectifying = {x.what for x in blocking}
    for name, rec in graph.nodes(ir.Population):
        if rec.model == "relu" and f"rectifying interneurons '{name}' (relu)" not in rectifying:
            notes.append(f"ReLU of '{name}' written as the identity: its current cannot be negative "
                         "(non-negative sources and weights, no negative bias)")
    for x in blocking:
        notes.append(f"substituted at {where(x.loc)}: {x.substitute}")
    meta = {
        "generator": "eidsl",
        "network": graph.name,
        "spec": source,
        "params": json.dumps(graph.params),
        "T": str(b.T),
        "dt": repr(dt),
        "time": ("forward-Euler steps of dt; present the input at each of T steps (static images) or frame t "
                 f"at step t (events); read the output after step T ({graph.output} = mean over T)"),
        "weights": weights,
        "lossiness": "\n".join(x.line() for x in found),
        "substituted": "\n".join(f"{where(x.loc)}: {x.substitute}" for x in blocking),
    }
    if extension:
        meta.update(extension_metadata(graph, net))
        for name, rec in graph.nodes(ir.Population):
            note = divisive_note(graph, net, name)
            entry = b.entry(name)
            if note and entry in b.nodes:
                b.nodes[entry].metadata["eidsl.divisive"] = note
    try:
        g = nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as exc:  # a converter bug, never the user's input
        raise RuntimeError(f"NIR rejected the exported graph: {exc}") from exc
    return Export(g, found, notes)


class LossyExport(NIRExportError):
    """Refusal: constructs NIR cannot express; every line located in the spec."""

    def __init__(self, blocking: list[Loss]):
        self.blocking = blocking
        super().__init__(f"{len(blocking)} construct(s) not expressible in NIR")

    def render(self) -> str:
        lines = [x.line() for x in self.blocking]
        lines.append(f"error: {len(self.blocking)} construct(s) above are not expressible in NIR; nothing written")
        lines.append("hint: pass --lossy to write the closest graph (each substitution is stated)")
        return "\n".join(lines)


# ---------------------------------------------------------------- weights


def newest_checkpoint(run_dir: Path) -> Path:
    found = sorted((run_dir / "checkpoints").glob("*.safetensors"), key=lambda p: (p.stat().st_mtime, p.name))
    if not found:
        raise NIRExportError(f"{run_dir}: no checkpoints/*.safetensors in this run folder")
    return found[-1]


def load_weights(net: Network, path: Path) -> str:
    """Load an eidsl state dict (a .safetensors file, or a run folder's newest checkpoint); describe it."""
    path = Path(path)
    if path.is_dir():
        path = newest_checkpoint(path)
    if not path.is_file():
        raise NIRExportError(f"no such weights file or run folder: {path}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NIRExportError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = set(net.state_dict())
    for prefix in ("", "model.", "_orig_mod.", "module."):
        trimmed = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        params = {k for k in trimmed if k in expected}
        if params and all(k in trimmed for k in expected if not k.endswith("num_batches_tracked")):
            state = trimmed
            break
    else:
        missing = sorted(k for k in expected if k not in state)[:3]
        raise NIRExportError(f"{path}: not a state dict of this network (missing {', '.join(missing)}, ...)")
    current = net.state_dict()
    for key in expected & set(state):
        if tuple(state[key].shape) != tuple(current[key].shape):
            raise NIRExportError(f"{path}: '{key}' has shape {tuple(state[key].shape)}, this network needs "
                                 f"{tuple(current[key].shape)} (was it trained with other --set values?)")
    net.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return f"trained values from {path}"


def write(export_: Export, out: Path) -> None:
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    nir.write(str(tmp), export_.graph)
    os.replace(tmp, out)


def initial_weights_note(seed: int) -> str:
    return (f"data-free initial values (seed {seed}): E-I Init's data-dependent values need a training batch, "
            "so ei_balanced weights hold their data-free placeholder and gain_control gains the binary-input "
            "value; pass --weights CKPT|RUN_DIR for trained values")


