"""NIR -> a readable `.ei` spec plus its weights (`eidsl import nir`).

Two kinds of file arrive here:

* a graph written by eidsl with the eidsl-ei/1 extension (docs/interop.md): the circuit
  (divisive inhibition included) and its unfolded values are read from the extension, after
  checking that the NIR nodes are still the ones eidsl would write for them, so the
  round trip eidsl -> NIR -> eidsl gives the same outputs bit for bit;
* any other NIR graph (snnTorch, Norse, SpikingJelly, sinabs exports): its nodes are
  mapped one by one onto eidsl populations and projections, under NIR's own
  definitions integrated by forward Euler with step dt (the same discretisation
  nir_export writes). Node types eidsl has no counterpart for are refused by name.

Mapping (NIR, one Euler step of dt -> eidsl, which steps v <- v (1 - 1/tau) + I):

    LIF   tau_N dv/dt = (v_leak - v) + r I, z = [v > v_thr], v <- v_reset
          -> lif(tau = tau_N/dt, theta = v_thr one float32 above, reset = hard, v_reset);
             the input weight dt r/tau_N and the drive (dt/tau_N) v_leak go into the
             projections' weights and bias
    IF    dv/dt = r I  -> lif with no leak (tau so large that 1 - 1/tau is 1 in float32)
    Threshold  z = [x > thr] -> lif(tau = 1): the membrane forgets each step
    Linear / Affine / Conv2d -> dense / conv projections (bias = true for Affine)
    Scale -> folded into the weights next to it; SumPool2d -> avgpool with k*k folded
    Delay after a weight -> the projection's delay (whole steps of dt)
    I at the output (integrator read after step T) -> readout (mean over T) with
          dt r T folded into its weights; a population at the output -> readout of its spikes
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eidsl import ir
from eidsl.errors import EidslError

from eidsl.interop import spec_writer

try:
    import nir
except ModuleNotFoundError:  # the optional extra is not installed
    nir = None

EXTENSION = "eidsl-ei/1"
IF_TAU = 1e12    # 1 - 1/tau rounds to exactly 1 in float32: no leak


class NIRImportError(EidslError):
    pass


@dataclass
class Imported:
    text: str                               # the .ei spec
    state: dict[str, torch.Tensor]          # its weights, keyed as the spec names them
    graph: ir.Graph                         # what the spec elaborates to
    notes: list[str] = field(default_factory=list)
    exact: bool = False                     # read from the eidsl extension

    def network(self):
        from eidsl_compiler.lower import lower
        from eidsl_compiler.network import Network
        net = Network(lower(self.graph), self.graph)
        net.load_state_dict(self.state, strict=True)
        net.eval()
        return net


def read(path: str | Path) -> "nir.NIRGraph":
    if nir is None:
        raise NIRImportError("NIR import needs the 'nir' package: pip install 'eidsl[nir]'")
    path = Path(path)
    if not path.is_file():
        raise NIRImportError(f"{path}: " + ("not a file" if path.exists() else "no such NIR file"))
    try:
        return nir.read(str(path))
    except Exception as exc:  # h5py and nir raise many types for files that are not NIR
        raise NIRImportError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc})") from None


def import_graph(g: "nir.NIRGraph", *, dt: float | None = None, T: int | None = None, name: str = "imported",
                 plain: bool = False, source: str = "") -> Imported:
    meta = g.metadata or {}
    if not plain and _text(meta.get("eidsl.extension")) is not None:
        return _from_extension(g, meta, source)
    return _from_nodes(g, dt=dt, T=T, name=name, source=source)


def _text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return value.item().decode() if isinstance(value.item(), bytes) else str(value.item())
    return str(value)


# ---------------------------------------------------------------- eidsl's own circuits (the extension)


def _from_extension(g, meta: dict, source: str) -> Imported:
    from eidsl_compiler.lower import lower
    from eidsl_compiler.network import Network
    from eidsl.interop import nir_export as NX
    version = _text(meta["eidsl.extension"])
    if version != EXTENSION:
        raise NIRImportError(f"{source}: eidsl extension {version!r} is not one this eidsl reads ({EXTENSION}); "
                             "pass --plain to import the NIR nodes alone")
    try:
        graph = ir.Graph.loads(_text(meta["eidsl.ir"]))
    except (KeyError, ValueError) as exc:
        raise NIRImportError(f"{source}: the eidsl extension's circuit is damaged ({exc})") from None
    state = {k.removeprefix("eidsl.state."): torch.from_numpy(np.array(v)) for k, v in meta.items()
             if k.startswith("eidsl.state.")}
    net = Network(lower(graph), graph)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NIRImportError(f"{source}: the eidsl extension's values do not fit its circuit ({exc})") from None
    net.eval()
    # The NIR nodes are what other tools run; if someone changed them after the export, the
    # extension no longer describes the file, and reading it back would silently undo their edit.
    dt = float(_text(meta.get("dt")) or 1.0)
    again = NX.export(graph, net, trained=True, weights="", lossy=True, dt=dt, extension=False).graph
    for key, node in g.nodes.items():
        ref = again.nodes.get(key)
        if ref is None or type(ref) is not type(node) or not _same_arrays(ref, node):
            raise NIRImportError(f"{source}: NIR node '{key}' differs from what its eidsl-ei/1 extension describes "
                                 "(was the graph edited after export?); pass --plain to import the NIR nodes alone")
    if set(g.nodes) != set(again.nodes):
        missing = sorted(set(again.nodes) - set(g.nodes))[:1]
        raise NIRImportError(f"{source}: NIR node '{missing[0]}' of the eidsl-ei/1 extension's circuit is missing; "
                             "pass --plain to import the NIR nodes alone")
    header = (f"# Imported from {source or 'a NIR graph'}: eidsl's own circuit, read from the eidsl-ei/1 "
              "extension\n# (exact: divisive inhibition, gains and biases as they were exported).")
    return _written(graph, state_by_node(graph, state), header, graph.name, exact=True,
                    notes=[f"read the exact circuit from the {EXTENSION} extension (network {graph.name})"])


def _same_arrays(a, b) -> bool:
    for key, value in a.__dict__.items():
        if key in ("metadata", "input_type", "output_type") or not isinstance(value, np.ndarray):
            continue
        other = getattr(b, key, None)
        if other is None or np.shape(other) != value.shape or not np.array_equal(np.asarray(other), value):
            return False
    return True


def state_by_node(graph: ir.Graph, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split state-dict keys into (owning IR node, rest): keys are `NODE.ROLE` with dots inside NODE."""
    nodes = sorted((n for n, _ in graph.nodes()), key=len, reverse=True)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        owner = next((n for n in nodes if key.startswith(n + ".")), None)
        if owner is None:
            raise NIRImportError(f"state key '{key}' belongs to no node of the circuit")
        out.setdefault(owner, {})[key[len(owner) + 1:]] = value
    return out


def _written(graph: ir.Graph, by_node: dict, header: str, name: str, *, exact: bool, notes: list[str],
             edge_values: dict | None = None, comments: dict | None = None) -> Imported:
    """Write the spec, read it back, and key the values by the names it gives."""
    from eidsl.api import load_graph

    from eidsl_compiler.lower import lower
    from eidsl_compiler.network import Network
    from eidsl.interop.nir_export import _PlanIndex
    try:
        text, emitted = spec_writer.write_spec(graph, header, name, comments=comments)
    except spec_writer.SpecWriteError as exc:
        raise NIRImportError(f"cannot write this graph as a spec: {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.ei"
        path.write_text(text)
        try:
            written = load_graph(path, memory_limit=math.inf)
        except EidslError as exc:
            raise NIRImportError(f"the written spec does not check (a bug in eidsl import): {exc}") from None
    names = spec_writer.written_names(graph, written, emitted)
    state = {}
    for node, values in by_node.items():
        for rest, value in values.items():
            state[f"{names[node]}.{rest}"] = value
    if edge_values:
        net = Network(lower(written), written)
        pl = _PlanIndex(net)
        for (src, dst), (w, b) in edge_values.items():
            w_path, b_path, _ = pl.projection(names[src], names[dst])
            state[w_path] = w
            if b is not None:
                state[b_path] = b
        expected = net.state_dict()
        for key, value in expected.items():
            if key not in state:
                raise NIRImportError(f"the written spec has '{key}', which no NIR node fills (a bug in eidsl import)")
            if tuple(state[key].shape) != tuple(value.shape):
                raise NIRImportError(f"'{key}': NIR gives shape {tuple(state[key].shape)}, the spec needs "
                                     f"{tuple(value.shape)}")
    return Imported(text, {k: v.contiguous() for k, v in state.items()}, written, notes, exact)


# ---------------------------------------------------------------- other libraries' graphs


_SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d", "SumPool2d", "Scale", "LIF",
              "IF", "I", "Threshold", "Delay")
_WHY_NOT = {
    "LI": "a leaky integrator whose output is its membrane; eidsl's populations spike (LIF), rectify "
          "(ReLU) or are the readout's current",
    "CubaLIF": "a current-based LIF has a synaptic-current state (tau_syn) that eidsl's LIF does not have",
    "CubaLI": "a current-based leaky integrator has no eidsl counterpart",
    "Conv1d": "eidsl convolutions are 2-D",
    "NIRGraph": "a sub-graph (recurrent layers are exported this way) is not imported",
}


def _uniform(node_name: str, what: str, value) -> float:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise NIRImportError(f"NIR node '{node_name}': {what} is empty")
    if not np.all(arr == arr[0]):
        raise NIRImportError(f"NIR node '{node_name}': {what} differs between neurons "
                             f"({arr.min():g} to {arr.max():g}); an eidsl population has one value")
    return float(arr[0])


def _f32_above(x: float) -> float:
    """eidsl fires on v >= theta, NIR on v > v_thr: the next float32 above v_thr fires on the same values."""
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def _tau_for(decay: np.float32) -> float:
    """An eidsl tau whose decay 1 - 1/tau is `decay` in float32."""
    if decay >= 1:
        return IF_TAU
    if decay <= 0:
        return 1.0
    tau = 1.0 / (1.0 - float(decay))
    if np.float32(1.0 - 1.0 / tau) != decay:      # not reached for the decays tried; checked all the same
        raise NIRImportError(f"no eidsl tau gives the decay {float(decay)!r} exactly")
    return tau


def _ints(node_name: str, what: str, value) -> int:
    arr = np.atleast_1d(np.asarray(value)).reshape(-1)
    if not np.all(arr == arr[0]):
        raise NIRImportError(f"NIR node '{node_name}': {what} {arr.tolist()} differs between the axes; "
                             "eidsl's are square")
    return int(arr[0])


def infer_dt(g) -> float | None:
    """snnTorch and Norse write r = tau/dt (unit input weight); a file gives dt only that way."""
    found = []
    for key, node in g.nodes.items():
        if isinstance(node, nir.LIF):
            tau = np.asarray(node.tau, dtype=np.float64).reshape(-1)
            r = np.asarray(node.r, dtype=np.float64).reshape(-1)
            if np.all(r != 1):
                found.append(np.median(tau / r))
    if not found:
        return None
    dt = float(found[0])
    if any(abs(d - dt) > 1e-6 * abs(dt) for d in found):
        return None
    return float(np.float32(dt))


class _Value:
    """What a NIR node's output is in eidsl terms."""

    def __init__(self, kind: str, node: str | None = None, shape=None, contributions=None, scale=None, delay=0):
        self.kind = kind                       # "node" (an eidsl node) or "current" (weighted, not yet summed)
        self.node = node
        self.shape = shape
        self.contributions = contributions or []   # [(src _Value, op dict, weight, bias, delay)]
        self.scale = scale                     # element-wise factor on a node's output, folded into the next weight


def soft_resets(g) -> dict[str, tuple[str, str]]:
    """LI -> Threshold -> Scale -> back to the LI: a LIF with reset by subtraction, the only way NIR can
    say it (eidsl's export writes it so). {LI node: (Threshold node, Scale node)}."""
    preds: dict[str, list[str]] = {k: [] for k in g.nodes}
    succs: dict[str, list[str]] = {k: [] for k in g.nodes}
    for a, b in g.edges:
        if a in preds and b in preds:
            preds[b].append(a)
            succs[a].append(b)
    found = {}
    for key, node in g.nodes.items():
        if not isinstance(node, nir.LI):
            continue
        for s in preds[key]:
            if not isinstance(g.nodes[s], nir.Scale) or succs[s] != [key] or len(preds[s]) != 1:
                continue
            t = preds[s][0]
            if isinstance(g.nodes[t], nir.Threshold) and preds[t] == [key]:
                found[key] = (t, s)
    return found


def _from_nodes(g, *, dt, T, name, source) -> Imported:
    notes = []
    soft = soft_resets(g)
    feedback = {s: (li, t) for li, (t, s) in soft.items()}
    for key, node in g.nodes.items():
        kind = type(node).__name__
        if kind not in _SUPPORTED and key not in soft:
            why = _WHY_NOT.get(kind, "eidsl has no counterpart for it")
            raise NIRImportError(f"NIR node '{key}' ({kind}) cannot be imported: {why}")
    meta = g.metadata or {}
    if dt is None and _text(meta.get("dt")):
        dt = float(_text(meta.get("dt")))
    if dt is None:
        dt = infer_dt(g)
        if dt is not None:
            notes.append(f"dt = {dt:g}: inferred from r = tau/dt of the LIF nodes (unit input weight, as snnTorch "
                         "and Norse write it); pass --dt to set it")
        elif any(isinstance(n, (nir.LIF, nir.IF, nir.I, nir.Delay)) for n in g.nodes.values()):
            raise NIRImportError("this graph does not say its time step: pass --dt (the Euler step of one eidsl "
                                 "time step, in the graph's time unit)")
        else:
            dt = 1.0
    if not dt > 0:
        raise NIRImportError(f"--dt must be positive, got {dt}")
    if T is None:
        T = int(_text(meta.get("T")) or 0) or 4
        if not _text(meta.get("T")):
            notes.append(f"T = {T} time steps (NIR does not store it); --set T=... changes it")

    preds: dict[str, list[str]] = {k: [] for k in g.nodes}
    succs: dict[str, list[str]] = {k: [] for k in g.nodes}
    edges = []
    for a, b in g.edges:
        if a not in g.nodes or b not in g.nodes:
            raise NIRImportError(f"NIR edge {a!r} -> {b!r} names a node the graph does not have")
        if a in feedback and feedback[a][0] == b:
            continue        # the reset feedback: part of the soft-reset population, not a current
        edges.append((a, b))
        preds[b].append(a)
        succs[a].append(b)
    import networkx as nx
    dg = nx.DiGraph()
    dg.add_nodes_from(g.nodes)
    dg.add_edges_from(edges)
    try:
        order = list(nx.topological_sort(dg))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dg)
        raise NIRImportError(f"NIR node '{cycle[0][0]}' is on a cycle ({' -> '.join(a for a, _ in cycle)}); "
                             "recurrent NIR graphs are not imported") from None
    inputs = [k for k, n in g.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in g.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRImportError(f"an eidsl network has one input and one output; this graph has {len(inputs)} Input "
                             f"and {len(outputs)} Output nodes")

    graph = ir.Graph(name, {"T": T}, {}, None, None)
    values: dict[str, _Value] = {}
    edge_values: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None]] = {}
    comments: dict[str, str] = {}
    counters: dict[str, int] = {}

    def fresh(stem: str) -> str:
        counters[stem] = counters.get(stem, 0) + 1
        return f"{stem}_{counters[stem]}"

    def one_input(key) -> _Value:
        if len(preds[key]) != 1:
            raise NIRImportError(f"NIR node '{key}' ({type(g.nodes[key]).__name__}) has {len(preds[key])} inputs; "
                                 "eidsl sums inputs only where a population integrates them")
        return values[preds[key][0]]

    def summed(key) -> _Value:
        """A neuron adds up what arrives: the weighted inputs of all its edges."""
        if len(preds[key]) == 1:
            return values[preds[key][0]]
        parts = [values[p] for p in preds[key]]
        if not all(p.kind == "current" for p in parts):
            raise NIRImportError(f"NIR node '{key}' ({type(g.nodes[key]).__name__}) has an unweighted input "
                                 "among several; eidsl populations receive projections")
        return _Value("current", contributions=[c for p in parts for c in p.contributions])

    def as_node(key, v: _Value) -> _Value:
        if v.kind != "node":
            raise NIRImportError(f"NIR node '{key}' ({type(g.nodes[key]).__name__}) reads a weighted current that "
                                 "no neuron integrates; eidsl applies it only after a population")
        if v.scale is not None:
            raise NIRImportError(f"NIR node '{key}' follows a Scale that no weight can absorb")
        return v

    def flow(key, rec, v: _Value, stem: str) -> _Value:
        # A factor that is one number commutes with pooling and flattening: it waits for the next weight.
        carried = v.scale if v.scale is not None and np.size(v.scale) == 1 else None
        v = as_node(key, _Value(v.kind, v.node, v.shape, v.contributions, None if carried is not None else v.scale))
        node = fresh(stem)
        graph.add_node(node, rec)
        graph.add_edge(v.node, node, ir.Flow(port=0))
        return _Value("node", node, scale=carried)

    for key in order:
        n = g.nodes[key]
        kind = type(n).__name__
        if kind == "Input":
            shape = tuple(int(s) for s in np.asarray(n.input_type["input"]).reshape(-1))
            graph.add_node("input", ir.Input(shape=shape, T=T))
            graph.params["input"] = list(shape)
            values[key] = _Value("node", "input", shape)
        elif kind in ("Linear", "Affine", "Conv2d"):
            src = one_input(key)
            if src.kind != "node":
                raise NIRImportError(f"NIR node '{key}' ({kind}) follows another weight with no neuron between; "
                                     "eidsl projections end on a population")
            w = torch.from_numpy(np.array(n.weight, dtype=np.float32))
            b = None if kind == "Linear" else torch.from_numpy(np.array(n.bias, dtype=np.float32)).reshape(-1)
            if kind == "Conv2d":
                if w.ndim != 4 or w.shape[2] != w.shape[3]:
                    raise NIRImportError(f"NIR node '{key}' (Conv2d): kernel {tuple(w.shape[2:])} is not square")
                if isinstance(n.padding, str):
                    raise NIRImportError(f"NIR node '{key}' (Conv2d): padding '{n.padding}' is not imported; "
                                         "give it in numbers")
                if _ints(key, "dilation", n.dilation) != 1 or int(n.groups) != 1:
                    raise NIRImportError(f"NIR node '{key}' (Conv2d): dilation and groups other than 1 have no "
                                         "eidsl counterpart")
                op = {"op": "conv", "kernel": int(w.shape[2]), "stride": _ints(key, "stride", n.stride),
                      "padding": _ints(key, "padding", n.padding)}
                if b is not None and not torch.any(b != 0):
                    b = None
            else:
                op = {"op": "dense"}
            if src.scale is not None and np.size(src.scale) == 1:
                w = w * float(np.asarray(src.scale).reshape(-1)[0])
            elif src.scale is not None:       # a Scale before the weight: scale its columns
                s = torch.from_numpy(np.array(src.scale, dtype=np.float32))
                if op["op"] == "conv":
                    s = s.reshape(s.shape[0], -1) if s.ndim > 1 else s.reshape(-1, 1)
                    if not torch.all(s == s[:, :1]):
                        raise NIRImportError(f"NIR node '{key}': the Scale before it varies within a channel")
                    w = w * s[:, 0].view(1, -1, 1, 1)
                else:
                    w = w * s.reshape(1, -1)
                notes.append(f"the Scale before '{key}' is folded into its weights")
            values[key] = _Value("current", contributions=[[_Value("node", src.node), op, w, b, 0, key]])
        elif key in feedback:
            values[key] = None      # read by nothing else: its LI took the reset in
        elif key in soft:
            v = summed(key)
            if v.kind != "current":
                raise NIRImportError(f"NIR node '{key}' (LI) is not driven through a weight; eidsl populations "
                                     "receive projections")
            t, fb = soft[key]
            values[key] = _population(key, n, "SoftLIF", v, dt, T, graph, edge_values, comments, fresh, notes,
                                      soft=(t, g.nodes[t], fb, g.nodes[fb]))
        elif kind == "Threshold" and preds[key] and preds[key][0] in soft:
            values[key] = values[preds[key][0]]       # the population's spikes
        elif kind == "Scale" and len(preds[key]) > 1:
            parts = [values[p] for p in preds[key]]
            s = np.array(n.scale, dtype=np.float32)
            if all(p.kind == "current" for p in parts):
                v = summed(key)
                for c in v.contributions:
                    c[2], c[3] = _rows(c[2], s, key), None if c[3] is None else c[3] * _per_row(s, c[2].shape[0], key)
                values[key] = v
            elif len(parts) == 2 and all(p.kind == "node" and p.scale is None for p in parts) and np.all(s == 1):
                node = fresh("sum")     # spikes meeting at an identity Scale: a spike-sum residual
                graph.add_node(node, ir.Sum())
                for port, p in enumerate(parts):
                    graph.add_edge(p.node, node, ir.Flow(port=port))
                values[key] = _Value("node", node)
            else:
                raise NIRImportError(f"NIR node '{key}' (Scale) sums {len(parts)} inputs; eidsl sums two spike "
                                     "trains at an identity Scale, or weighted currents at a population")
        elif kind == "Scale":
            v = one_input(key)
            s = np.array(n.scale, dtype=np.float32)
            if v.kind == "current":
                for c in v.contributions:
                    c[2], c[3] = _rows(c[2], s, key), None if c[3] is None else c[3] * _per_row(s, c[2].shape[0], key)
                notes.append(f"Scale '{key}' is folded into the weights before it")
                values[key] = v
            else:
                values[key] = _Value("node", v.node, scale=s if v.scale is None else v.scale * s)
        elif kind == "Delay":
            v = one_input(key)
            if v.kind != "current":
                raise NIRImportError(f"NIR node '{key}' (Delay) is not after a weight; eidsl delays a projection")
            steps = np.asarray(n.delay, dtype=np.float64).reshape(-1) / dt
            k = int(round(steps[0]))
            if not np.allclose(steps, k, rtol=0, atol=1e-6) or k < 0:
                raise NIRImportError(f"NIR node '{key}' (Delay): {np.unique(n.delay).tolist()} is not one whole "
                                     f"number of steps of dt = {dt:g}")
            if not 0 < k < T:
                raise NIRImportError(f"NIR node '{key}' (Delay): {k} steps; eidsl needs 0 < delay < T = {T}")
            for c in v.contributions:
                c[4] += k
            values[key] = v
        elif kind in ("Flatten",):
            v = one_input(key)
            if n.start_dim not in (0,) or n.end_dim not in (-1,):
                shape = np.asarray(n.input_type["input"]).reshape(-1) if n.input_type.get("input") is not None else []
                if not (n.start_dim == 0 and len(shape) and n.end_dim == len(shape) - 1):
                    raise NIRImportError(f"NIR node '{key}' (Flatten) flattens dimensions {n.start_dim}..{n.end_dim} "
                                         "of a sample; eidsl flattens all of them")
            values[key] = flow(key, ir.Flatten(), v, "flatten")
        elif kind in ("AvgPool2d", "SumPool2d"):
            v = one_input(key)
            k = _ints(key, "kernel", n.kernel_size)
            stride = _ints(key, "stride", n.stride)
            if _ints(key, "padding", n.padding) != 0:
                raise NIRImportError(f"NIR node '{key}' ({kind}): padding has no eidsl counterpart")
            out = flow(key, ir.Pool(kernel=k, stride=stride), v, "pool")
            if kind == "SumPool2d":     # the sum is k*k times the mean: the next weight takes the factor
                out.scale = np.float32(k * k) * (1 if out.scale is None else out.scale)
                notes.append(f"SumPool2d '{key}' is avgpool with its k*k = {k * k} folded into the next weights")
            values[key] = out
        elif kind in ("LIF", "IF", "Threshold", "I"):
            v = summed(key)
            if v.kind != "current":
                raise NIRImportError(f"NIR node '{key}' ({kind}) is not driven through a weight; eidsl populations "
                                     "receive projections")
            if kind == "I" and succs[key] != outputs:
                raise NIRImportError(f"NIR node '{key}' (I): an integrator is imported only as the readout, "
                                     "right before the Output")
            values[key] = _population(key, n, kind, v, dt, T, graph, edge_values, comments, fresh, notes)
        elif kind == "Output":
            v = one_input(key)
            if v.kind == "current":       # weights straight into the output: a current population
                v = _population(key, None, "current", v, dt, T, graph, edge_values, comments, fresh, notes)
            v = as_node(key, v)
            graph.add_node("readout_1", ir.Readout())
            graph.add_edge(v.node, "readout_1", ir.Flow(port=0))
            graph.output = "readout_1"
            rec = graph.node(v.node)
            if isinstance(rec, ir.Population) and rec.model == "lif":
                notes.append("the output is the mean over T of the last population's spikes (eidsl's readout); "
                             "per-step spikes are in Network.run(x, keep=True)")
    header = (f"# Imported from {source or 'a NIR graph'} by `eidsl import nir` (dt = {dt:g} per step).\n"
              "# NIR's continuous-time nodes are integrated by forward Euler; docs/interop.md has the mapping.")
    return _written(graph, {}, header, name, exact=False, notes=notes, edge_values=edge_values, comments=comments)


def _per_row(s, rows: int, key: str) -> torch.Tensor:
    """A Scale after a weight as one factor per output row (channel): constant over a channel's pixels."""
    s = torch.from_numpy(np.asarray(s, dtype=np.float32).reshape(-1))
    if s.numel() == 1:
        return s.expand(rows)
    if s.numel() % rows:
        raise NIRImportError(f"NIR node '{key}' (Scale): {s.numel()} factors do not fit {rows} outputs")
    s = s.view(rows, -1)
    if not torch.all(s == s[:, :1]):
        raise NIRImportError(f"NIR node '{key}' (Scale) varies within a channel; an eidsl convolution has one "
                             "weight per channel")
    return s[:, 0].contiguous()


def _rows(w: torch.Tensor, s, key: str) -> torch.Tensor:
    s = _per_row(s, w.shape[0], key)
    if w.ndim == 4:
        return w * s.view(-1, 1, 1, 1)
    return w * s.view(-1, 1)


def _population(key, n, kind, v: _Value, dt, T, graph, edge_values, comments, fresh, notes, soft=None) -> _Value:
    first_w = v.contributions[0][2]
    size = int(first_w.shape[0])
    conv = first_w.ndim == 4
    gain, drive = None, None
    fields = {}
    if kind == "LIF":
        tau_n = _uniform(key, "tau", n.tau)
        decay = np.float32(1.0 - dt / tau_n)
        fields = {"model": "lif", "tau": _tau_for(decay), "theta": _f32_above(_uniform(key, "v_threshold",
                                                                                       n.v_threshold)),
                  "reset": "hard", "v_reset": _uniform(key, "v_reset", n.v_reset)}
        gain = dt * np.asarray(n.r, dtype=np.float64) / tau_n
        leak = dt * np.asarray(n.v_leak, dtype=np.float64) / tau_n
        drive = None if not np.any(leak) else leak
        stem = "lif"
    elif kind == "SoftLIF":
        t_key, t_node, fb_key, fb_node = soft
        tau_n = _uniform(key, "tau", n.tau)
        decay = np.float32(1.0 - dt / tau_n)
        theta = _f32_above(_uniform(t_key, "threshold", t_node.threshold))
        gain = dt * np.asarray(n.r, dtype=np.float64) / tau_n
        g1 = _uniform(key, "r", gain)
        # eidsl: v <- v (1 - 1/tau) + I, then v - theta s; carried into the next step that is a feedback
        # -(1 - 1/tau) theta of the previous spikes, entering the LI with its input weight dt r/tau.
        got = g1 * _uniform(fb_key, "scale", fb_node.scale)
        want = -float(decay) * theta
        if not np.isclose(got, want, rtol=1e-5, atol=1e-7):
            raise NIRImportError(f"NIR node '{fb_key}' (Scale): the feedback {got:.7g} into '{key}' is not a reset "
                                 f"by subtraction of the threshold ({want:.7g} = -(1 - dt/tau) theta)")
        fields = {"model": "lif", "tau": _tau_for(decay), "theta": theta, "reset": "soft"}
        leak = dt * np.asarray(n.v_leak, dtype=np.float64) / tau_n
        drive = None if not np.any(leak) else leak
        stem = "lif"
        notes.append(f"'{key}' -> '{t_key}' -> '{fb_key}' is a LIF with reset by subtraction (eidsl's soft reset)")
    elif kind == "IF":
        fields = {"model": "lif", "tau": IF_TAU, "theta": _f32_above(_uniform(key, "v_threshold", n.v_threshold)),
                  "reset": "hard", "v_reset": _uniform(key, "v_reset", n.v_reset)}
        gain = dt * np.asarray(n.r, dtype=np.float64)
        stem = "if"
    elif kind == "Threshold":
        fields = {"model": "lif", "tau": 1.0, "theta": _f32_above(_uniform(key, "threshold", n.threshold)),
                  "reset": "hard"}
        stem = "threshold"
    elif kind == "I":
        fields = {"model": "current"}
        gain = dt * np.asarray(n.r, dtype=np.float64) * T     # the integral after T steps is T times the mean
        stem = "readout"
    else:
        fields = {"model": "current"}
        stem = "current"
    if gain is not None:
        gain = np.broadcast_to(gain, (size,)) if np.ndim(gain) == 0 or np.size(gain) == 1 else gain
        if np.all(gain.astype(np.float32) == 1):     # r = tau/dt written in float32: 1 within rounding
            gain = None
        else:
            notes.append(f"the input weight of '{key}' ({'dt r' if kind == 'IF' else 'dt r/tau'}) is folded "
                         "into its incoming weights")
    # The leak's constant drive rides on the bias of an undelayed projection: a delayed one's bias is delayed too.
    carrier = next((i for i, c in enumerate(v.contributions) if c[4] == 0), None)
    if drive is not None and carrier is None:
        raise NIRImportError(f"NIR node '{key}' (LIF): its leak potential v_leak needs an undelayed input to carry "
                             "it in eidsl (a projection's bias is delayed with it)")
    name = f"{fresh(('conv_' if conv else 'dense_') + stem)}.E"
    graph.add_node(name, ir.Population(sign="free", size=size, **fields))
    for i, (src, op, w, b, delay, wkey) in enumerate(v.contributions):
        if graph.g.has_edge(src.node, name):
            raise NIRImportError(f"NIR node '{key}' receives two weights from the same node; eidsl has one "
                                 "projection between two nodes")
        if gain is not None:
            g32 = gain.astype(np.float32)
            w = _rows(w, g32, key)
            b = None if b is None else b * _per_row(g32, b.shape[0], key)
        if drive is not None and i == carrier:
            d = _per_row(drive, size, key)
            b = d if b is None else b + d
        rec = ir.Projection(op=op["op"], kernel=op.get("kernel", 1), stride=op.get("stride", 1),
                            padding=op.get("padding", 0), bias=b is not None, delay=delay)
        graph.add_edge(src.node, name, rec)
        edge_values[(src.node, name)] = (w.contiguous(), None if b is None else b.contiguous())
        comments.setdefault(name, [])
        comments[name].append(wkey)
    comments[name].append(key)
    return _Value("node", name)
