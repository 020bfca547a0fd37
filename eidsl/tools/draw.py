"""The circuit of a checked IR graph as a picture: Graphviz text, or PNG/SVG drawn by matplotlib.

Encoding (the same in every format):
- excitatory projections (``->``): red, pointed arrowhead;
- inhibition (``-|``): blue, flat bar head; subtractive paths solid and labelled "−",
  divisive paths dashed and labelled "÷" (an inhibition doing both draws both);
- unweighted data flow (into pools, flatten, sums, the readout): grey;
- a projection with a time delay carries "t-1" (or t-k) in its label;
- populations: excitatory red, inhibitory blue, sign-free grey; motif instances are
  boxes (clusters in Graphviz) named by their instance path.
``depth`` collapses every node to the first `depth` parts of its instance path, so
``depth=1`` shows one box per top-level motif call with the connections between them.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from eidsl import ir
from eidsl.errors import EidslError
from eidsl.ir import node_sign

EXC, INH, FLOW, FREE = "#c0392b", "#2c7bb6", "#888888", "#555555"
FILL = {"exc": "#f6d5d1", "inh": "#d3e4f3", "free": "#e6e6e6", "input": "#ffffff", "group": "#fbf3e4",
        "op": "#f2f2f2"}
FORMATS = ("dot", "png", "svg")


@dataclass
class Node:
    id: str
    label: str
    kind: str                   # exc | inh | free | input | op | group
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str                   # exc | inh | flow
    mode: str = ""              # sub | div, for inhibition
    delay: int = 0

    @property
    def label(self) -> str:
        parts = [{"sub": "−", "div": "÷"}.get(self.mode, "")]
        if self.delay:
            parts.append(f"t-{self.delay}")
        return " ".join(p for p in parts if p)


@dataclass
class Drawing:
    name: str
    nodes: dict[str, Node]
    edges: list[Edge]
    layer: dict[str, int]       # column in time order


def group_of(name: str, depth: int | None) -> str:
    if depth is None or depth <= 0:
        return name
    return ".".join(name.split(".")[:depth])


def drawing(graph: ir.Graph, depth: int | None = None) -> Drawing:
    """Nodes and edges to draw, collapsed to `depth` levels of instance path."""
    members: dict[str, list[str]] = {}
    for name, _ in graph.nodes():
        members.setdefault(group_of(name, depth), []).append(name)
    nodes = {}
    for key, names in members.items():
        if len(names) == 1 and names[0] == key:
            nodes[key] = _node(key, graph.node(key))
        else:
            nodes[key] = Node(key, _group_label(graph, key, names), "group", names)
    edges: list[Edge] = []
    for src, dst, rec in graph.edges():
        a, b = group_of(src, depth), group_of(dst, depth)
        if a == b:
            continue
        delay = getattr(rec, "delay", 0)
        if isinstance(rec, ir.Inhibition):
            modes = [m for m, on in (("sub", rec.subtractive), ("div", rec.divisive)) if on]
            new = [Edge(a, b, "inh", m, delay) for m in modes]
        elif isinstance(rec, ir.Projection):
            new = [Edge(a, b, "inh" if node_sign(graph, src) == "inh" else "exc", "", delay)]
        else:
            new = [Edge(a, b, "flow")]
        edges += [e for e in new if e not in edges]
    return Drawing(graph.name, nodes, edges, _layers(graph, members))


LABEL_LINE = 26     # a label longer than this puts its description on a second line


def _join(name: str, what: str) -> str:
    """`layer_3.E · LIF 500`: the full path names the layer, so every box (every residual sum) is distinct."""
    one = f"{name} · {what}"
    return one if len(one) <= LABEL_LINE else f"{name}\n{what}"


def _node(name: str, rec) -> Node:
    if isinstance(rec, ir.Population):
        model = {"lif": "LIF", "relu": "ReLU", "current": "current", "linear": "linear"}[rec.model]
        shape = "×".join(map(str, rec.shape or (rec.size,)))
        return Node(name, _join(name, f"{model} {shape}"), rec.sign)
    if isinstance(rec, ir.Input):
        return Node(name, _join(name, f"{rec.encoding} {'×'.join(map(str, rec.shape))}, T={rec.T}"), "input")
    if isinstance(rec, ir.Pool):
        what = "global avg pool" if rec.global_pool else f"avg pool {rec.kernel}"
        return Node(name, _join(name, what), "op")
    if isinstance(rec, ir.Sum):
        return Node(name, _join(name, "spike sum +"), "op")
    return Node(name, name, "op")


def _group_label(graph: ir.Graph, key: str, names: list[str]) -> str:
    pops = [graph.node(n) for n in names if isinstance(graph.node(n), ir.Population)]
    e = sum(r.size for r in pops if r.sign != "inh")
    i = sum(r.size for r in pops if r.sign == "inh")
    parts = [f"E {e:,}"] if e else []
    parts += [f"I {i:,}"] if i else []
    return key + ("\n" + " · ".join(parts) if parts else "")


def _layers(graph: ir.Graph, members: dict[str, list[str]]) -> dict[str, int]:
    """Column of each drawn node: its earliest member's generation in one time step's feed-forward
    order. Inhibition is left out of that order, so a layer's E and I share a column."""
    forward = nx.DiGraph()
    forward.add_nodes_from(graph.g.nodes)
    forward.add_edges_from((s, d) for s, d, r in graph.edges()
                           if not isinstance(r, ir.Inhibition) and getattr(r, "delay", 0) == 0)
    generation = {n: depth for depth, names in enumerate(nx.topological_generations(forward)) for n in names}
    for n in graph.g.nodes:
        # Fed only through a delay (recurrent inhibition): stand with what it feeds, not with the input.
        if forward.in_degree(n) == 0 and not isinstance(graph.node(n), ir.Input) and graph.g.out_degree(n):
            generation[n] = min(generation[m] for m in graph.g.successors(n))
    first = {key: min(generation[n] for n in names) for key, names in members.items()}
    columns = {g: i for i, g in enumerate(sorted(set(first.values())))}
    return {key: columns[g] for key, g in first.items()}


# ---------------------------------------------------------------- Graphviz text

def to_dot(d: Drawing) -> str:
    lines = [f"// {d.name}: excitatory red with arrowheads; inhibitory blue with flat bars,",
             "// subtractive solid (−), divisive dashed (÷); grey is unweighted data flow.",
             f"digraph {_q(d.name)} {{",
             "  rankdir=LR;",
             '  graph [fontname="Helvetica", fontsize=11, newrank=true];',
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    tree: dict[str, list[str]] = {}        # cluster path -> node ids directly inside
    for node_id in d.nodes:
        tree.setdefault(node_id.rsplit(".", 1)[0] if "." in node_id else "", []).append(node_id)
    clusters = sorted({".".join(p.split(".")[:i]) for p in tree if p for i in range(1, len(p.split(".")) + 1)})

    def emit(prefix: str, indent: str) -> None:
        for node_id in tree.get(prefix, []):
            lines.append(indent + _dot_node(d.nodes[node_id]))
        for child in clusters:
            if (child.rsplit(".", 1)[0] if "." in child else "") != prefix:
                continue
            lines.append(f"{indent}subgraph {_q('cluster_' + child)} {{")
            lines.append(f'{indent}  label={_q(child)}; style="rounded"; color="#bbbbbb"; fontcolor="#666666";')
            emit(child, indent + "  ")
            lines.append(indent + "}")

    emit("", "  ")
    for e in d.edges:
        lines.append(f"  {_q(e.src)} -> {_q(e.dst)} [{_dot_edge_attrs(e)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(n: Node) -> str:
    shape = {"exc": "ellipse", "inh": "ellipse", "free": "ellipse", "input": "box", "op": "box",
             "group": "box3d"}[n.kind]
    border = {"exc": EXC, "inh": INH}.get(n.kind, FREE)
    style = "filled,rounded" if n.kind in ("op", "input") else "filled"
    return (f"{_q(n.id)} [label={_q(n.label)}, shape={shape}, style={_q(style)}, "
            f"fillcolor={_q(FILL[n.kind])}, color={_q(border)}];")


def _dot_edge_attrs(e: Edge) -> str:
    if e.kind == "flow":
        attrs = {"color": FLOW, "arrowhead": "normal", "style": "solid"}
    elif e.kind == "exc":
        attrs = {"color": EXC, "arrowhead": "normal", "style": "solid", "penwidth": "1.4"}
    else:
        attrs = {"color": INH, "arrowhead": "tee", "style": "dashed" if e.mode == "div" else "solid",
                 "penwidth": "1.4"}
    if e.label:
        attrs["label"] = e.label
    if e.delay:
        attrs["constraint"] = "false"     # a delayed edge does not order the layout
    return ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ---------------------------------------------------------------- pictures

def render(d: Drawing, path: Path, engine: str = "auto") -> str:
    """Write `path` (.dot, .png or .svg); returns the engine used."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise EidslError(f"cannot draw to '{path.name}': use a .png, .svg or .dot file")
    if fmt == "dot":
        path.write_text(to_dot(d), encoding="utf-8")
        return "dot-text"
    if engine in ("auto", "graphviz") and shutil.which("dot"):
        run = subprocess.run(["dot", f"-T{fmt}", "-o", str(path)], input=to_dot(d), text=True,
                             capture_output=True, timeout=120)
        if run.returncode == 0:
            return "graphviz"
        if engine == "graphviz":
            raise EidslError(f"graphviz failed: {run.stderr.strip()}")
    elif engine == "graphviz":
        raise EidslError("the graphviz `dot` program is not installed")
    _draw_matplotlib(d, path, fmt)
    return "matplotlib"


CHAR_INCHES, ROW_GAP, COLUMN_PAD = 0.075, 1.3, 0.9     # 8 pt text


def label_width(label: str) -> float:
    """Inches a label takes at 8 pt, its widest line."""
    return max(len(line) for line in label.split("\n")) * CHAR_INCHES


def layout(d: Drawing) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Box centres in inches, and the canvas: one column per time-order layer, each as wide as its
    longest label plus a margin, rows a fixed gap apart, so no two boxes overlap at any size."""
    rank = {"input": 0, "exc": 1, "group": 1, "free": 2, "inh": 3, "op": 4}
    columns: dict[int, list[str]] = {}
    for node_id, col in sorted(d.layer.items(), key=lambda kv: (kv[1], rank[d.nodes[kv[0]].kind], kv[0])):
        columns.setdefault(col, []).append(node_id)
    # A layer's E and I stay next to each other (the inhibition bar then crosses no other box).
    for col, ids in columns.items():
        prefixes: list[str] = []
        for i in ids:
            if i.rsplit(".", 1)[0] not in prefixes:
                prefixes.append(i.rsplit(".", 1)[0])
        columns[col] = [i for p in prefixes for i in ids if i.rsplit(".", 1)[0] == p]
    # Each column as wide as its longest label line and each row a fixed gap apart, centred on one
    # axis: boxes cannot overlap, whatever the size of the network (inches; 8 pt text).
    rows = max(len(c) for c in columns.values())
    pos, x = {}, 0.0
    for col in sorted(columns):
        ids = columns[col]
        w = max(label_width(d.nodes[i].label) for i in ids) + COLUMN_PAD
        x += w / 2
        for i, node_id in enumerate(ids):
            pos[node_id] = (x, ((len(ids) - 1) / 2 - i) * ROW_GAP + (rows - 1) / 2 * ROW_GAP)
        x += w / 2
    width, height = max(x, 2.0), max(rows * ROW_GAP + 0.5, 1.5)

    return pos, width, height


def _draw_matplotlib(d: Drawing, path: Path, fmt: str) -> None:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import ArrowStyle, FancyArrowPatch

    pos, width, height = layout(d)

    fig = Figure(figsize=(width, height + 0.8))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_title(d.name, fontsize=12)
    boxes = {}
    for node_id, n in d.nodes.items():
        x, y = pos[node_id]
        box = "square,pad=0.45" if n.kind == "group" else "round,pad=0.35"
        edge = {"exc": EXC, "inh": INH}.get(n.kind, FREE)
        boxes[node_id] = ax.text(x, y, n.label, ha="center", va="center", fontsize=8, zorder=2,
                                 bbox=dict(boxstyle=box, fc=FILL[n.kind], ec=edge,
                                           lw=1.5 if n.kind == "group" else 1.0))
    seen: dict[frozenset, int] = {}
    for e in d.edges:
        pair = frozenset((e.src, e.dst))
        k = seen.get(pair, 0)
        seen[pair] = k + 1
        # The first edge of a pair is straight, the next ones bend alternately to either side.
        rad = 0.0 if k == 0 else 0.3 * ((k + 1) // 2) * (-1) ** k
        if e.kind == "inh":
            style, color, ls = ArrowStyle("-[", widthB=0.9, lengthB=0.0), INH, "--" if e.mode == "div" else "-"
        else:
            style, color, ls = ArrowStyle("-|>", head_length=0.8, head_width=0.35), EXC if e.kind == "exc" else FLOW, "-"
        a, b = boxes[e.src], boxes[e.dst]
        # Drawn after the boxes (zorder 3), so the arrows are clipped to their current outlines.
        ax.annotate("", xy=(0.5, 0.5), xycoords=b, xytext=(0.5, 0.5), textcoords=a, zorder=3,
                    arrowprops=dict(arrowstyle=style, connectionstyle=f"arc3,rad={rad}", color=color,
                                    linestyle=ls, linewidth=1.6 if e.kind != "flow" else 1.0,
                                    patchA=a.get_bbox_patch(), patchB=b.get_bbox_patch(),
                                    shrinkA=2, shrinkB=2, mutation_scale=10))
        if e.label:
            (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
            mx, my = (x0 + x1) / 2 + rad * (y1 - y0) / 2, (y0 + y1) / 2 - rad * (x1 - x0) / 2
            ax.text(mx + 0.12, my, e.label, color=color, fontsize=9, ha="left", va="center", zorder=4)
    ax.set_xlim(0, width)
    ax.set_ylim(-0.6, height - 0.4)
    legend = [Line2D([], [], color=EXC, marker=">", label="excitatory ->"),
              Line2D([], [], color=INH, marker="|", markersize=10, label="inhibitory -| subtractive (−)"),
              Line2D([], [], color=INH, ls="--", marker="|", markersize=10, label="inhibitory -| divisive (÷)"),
              Line2D([], [], color=FLOW, marker=">", label="data flow")]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8, frameon=False)
    kwargs = {"metadata": {"Date": None}} if fmt == "svg" else {"dpi": 110}
    fig.savefig(path, format=fmt, bbox_inches="tight", **kwargs)


def depth_of(graph: ir.Graph) -> int:
    """The deepest instance path, for `--depth` validation."""
    return max((len(n.split(".")) for n, _ in graph.nodes()), default=1)

