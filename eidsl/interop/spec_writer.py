"""Graph IR -> readable `.ei` text, and the names the written spec gives each node.

Used by `eidsl import nir`: whatever the IR came from (a NIR graph of another
library, or eidsl's own circuit carried through NIR), the user gets a spec they
can read, edit and train. A population together with the interneurons that only
inhibit it is one *unit*; a unit fed by one value becomes a motif call, and units
of the same structure share one motif (sizes become its arguments), so a stack of
layers reads as a loop of calls rather than a wall of declarations.

The writer does not trust itself: `written_names` elaborates the text again and
matches it against the IR record by record (the caller refuses on a mismatch).
"""
from __future__ import annotations

import json
import math
import re

from eidsl import ir

RESERVED = {"import", "motif", "network", "train", "for", "in", "if", "else", "return", "exc", "inh", "pop",
            "true", "false", "and", "or", "not"}
_SIGN = {"exc": "exc", "inh": "inh", "free": "pop"}
_POP_DEFAULTS = {"tau": 2.0, "theta": 1.0, "reset": "soft", "v_reset": 0.0, "detach_reset": True,
                 "surrogate": "sigmoid", "alpha": 4.0, "norm": "none", "gain": None, "bias": None, "dale": True}
_PROJ_DEFAULTS = {"init": ir.Init(rule="default"), "bias": False, "delay": 0}
_INH_DEFAULTS = {"subtractive": True, "divisive": True, "shared": True, "init": ir.Init(rule="constant", value=0.0),
                 "stabilize": "min_positive", "epsilon": 1e-8, "ste": True, "grad_scale": True, "delay": 0}
_INH_WORDS = {"subtractive": "sub", "divisive": "div"}
# Fields the checks fill in; they follow from the rest, so they are not written.
DERIVED = {"loc", "shape", "fan_in", "nonneg"}


class SpecWriteError(ValueError):
    pass


def literal(value) -> str:
    """A Python value as `.ei` source that elaborates back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecWriteError(f"{value} has no .ei spelling")
        text = repr(value)       # the shortest text that reads back to the same double
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        if '"' in value or "\n" in value:
            raise SpecWriteError(f"the string {value!r} has no .ei spelling")
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise SpecWriteError(f"a {type(value).__name__} has no .ei spelling")


def _number(v) -> str:
    """A number, or a formula over fan_in, n_E, n_I as the IR keeps it (already valid .ei text)."""
    return v if isinstance(v, str) else literal(float(v))


def init_text(init: ir.Init | None) -> str:
    if init is None:
        return "none"
    if init.rule == "constant":
        text = _number(init.value)
    elif init.rule == "uniform":
        text = f"uniform({_number(init.low)}, {_number(init.high)})"
    elif init.rule == "normal":
        text = f"normal({_number(init.mean)}, {_number(init.std)})"
    elif init.rule == "exponential":
        text = f"exponential({_number(init.scale)})"
    elif init.rule == "mean_of":
        raise SpecWriteError(f"mean_of({init.ref}) ties a weight to another population's; the spec writer "
                             "cannot name that population from outside its motif yet")
    else:
        text = init.rule
    if init.transform == "none" and init.grad == 1.0 and init.clamp == "dale":
        return text
    return (f"param({text}, transform = {init.transform}, grad = {_number(init.grad)}, "
            f"clamp = {init.clamp if init.clamp != 'dale' else literal('dale')})")


def _value(key: str, value) -> str:
    if key in ("gain", "bias", "init") and not isinstance(value, bool):
        return init_text(value)
    if key in ("reset", "surrogate", "norm", "stabilize"):
        return value           # bare words
    if key == "grad_scale" and isinstance(value, str):
        return value           # a formula over fan_in, n_E, n_I
    return literal(value)


def population_text(rec: ir.Population, size: str) -> str:
    args = [size]
    for key, default in _POP_DEFAULTS.items():
        if key in ("tau", "theta", "reset", "v_reset", "detach_reset", "surrogate", "alpha") and rec.model != "lif":
            continue
        value = getattr(rec, key)
        if value != default:
            args.append(f"{key} = {_value(key, value)}")
    return f"{rec.model}({', '.join(args)})"


def edge_text(edge) -> str:
    if isinstance(edge, ir.Inhibition):
        args = [f"{_INH_WORDS.get(k, k)} = {_value(k, getattr(edge, k))}" for k, d in _INH_DEFAULTS.items()
                if getattr(edge, k) != d]
        return f"inhibit({', '.join(args)})"
    args = []
    if edge.op == "conv":
        args = [str(edge.kernel), str(edge.stride), str(edge.padding)]
    args += [f"{k} = {_value(k, getattr(edge, k))}" for k, d in _PROJ_DEFAULTS.items() if getattr(edge, k) != d]
    return f"{edge.op}({', '.join(args)})"


def _ident(text: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", text).strip("_") or "x"
    if base[0].isdigit():
        base = "n" + base
    name, k = base, 2
    while name in taken or name in RESERVED:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


class _Unit:
    def __init__(self, main: str, members: list[str]):
        self.main, self.members = main, members


def _units(graph: ir.Graph, order: list[str]) -> dict[str, _Unit]:
    """Each population's unit: itself plus the interneurons that inhibit it alone and read only its sources."""
    absorbed: dict[str, str] = {}
    for name, rec in graph.nodes(ir.Population):
        outs = list(graph.out_edges(name))
        if len(outs) != 1 or not isinstance(outs[0][1], ir.Inhibition):
            continue
        target = outs[0][0]
        sources = {s for s, _ in graph.in_edges(name)}
        target_sources = {s for s, _ in graph.in_edges(target)} - {name}
        if sources and (sources <= target_sources or sources == {target}) and target != name:
            absorbed[name] = target
    units = {}
    for name in order:
        rec = graph.node(name)
        if isinstance(rec, ir.Population) and name not in absorbed:
            members = [name] + [i for i in order if absorbed.get(i) == name]
            units[name] = _Unit(name, sorted(members, key=order.index))
    return units


def _strip(rec) -> dict:
    return {k: v for k, v in rec.model_dump().items() if k not in DERIVED}


def _records(graph: ir.Graph, unit: _Unit):
    """The unit's records in writing order: its populations, then each member's incoming edges."""
    out = [("pop", m, None, graph.node(m)) for m in unit.members]
    for m in unit.members:
        out += [("edge", m, src, e) for src, e in graph.in_edges(m)]
    return out


def _numbers(rec) -> dict[str, float]:
    """The numeric leaves of a record a motif may take as arguments (path -> value)."""
    found = {}
    for key, value in _strip(rec).items():
        if key in ("size", "kernel", "stride", "padding"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[key] = value
        elif isinstance(value, dict):      # an init rule
            for k, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    found[f"{key}.{k}"] = v
    return found


def _signature(graph: ir.Graph, unit: _Unit, inputs: list[str]) -> str:
    """The structure of a unit, sizes and numbers left out: units with equal signatures share a motif."""
    pos = {m: i for i, m in enumerate(unit.members)}
    parts = []
    for kind, m, src, rec in _records(graph, unit):
        d = {k: v for k, v in _strip(rec).items() if k != "size"}
        for path in _numbers(rec):
            key, _, sub = path.partition(".")
            if sub:
                d[key] = {**d[key], sub: "#"}
            else:
                d[key] = "#"
        parts.append((kind, pos[m], pos.get(src, "x") if src else None, d))
    return json.dumps(parts, sort_keys=True, default=str)


_SENTINEL = 987654.0   # stands for a motif argument while a record is written, then replaced by its name


def _with(rec, path: str, value):
    key, _, sub = path.partition(".")
    if sub:
        return rec.model_copy(update={key: getattr(rec, key).model_copy(update={sub: value})})
    return rec.model_copy(update={key: value})


_ARG_NAMES = {"tau": "tau", "theta": "theta", "v_reset": "v_reset", "alpha": "alpha", "epsilon": "eps",
              "delay": "delay", "init.value": "w", "gain.value": "g", "bias.value": "b"}


def write_spec(graph: ir.Graph, header: str = "", name: str | None = None,
               comments: dict[str, list[str]] | None = None) -> tuple[str, list[str]]:
    """The `.ei` text of `graph`, and the IR node names in the order the text creates them.
    `comments` adds an end-of-line note to the line that creates a population (its origin)."""
    from eidsl.ir import time_order
    comments = comments or {}

    def note(node: str) -> str:
        return f"  # NIR: {', '.join(comments[node])}" if comments.get(node) else ""

    order = list(graph.g.nodes)       # creation order: the order the lowering breaks ties in
    try:
        time_order(graph)
    except Exception as exc:  # noqa: BLE001 - the graph is not a valid network
        raise SpecWriteError(str(exc)) from None
    units = _units(graph, order)
    unit_of = {m: u for u in units.values() for m in u.members}

    # Which units become motif calls: every member's outside sources are one and the same value.
    motifs: dict[str, dict] = {}          # signature -> {"name", "sizes", "members"}
    motif_names: set[str] = set()
    unit_motif: dict[str, tuple[str, str]] = {}
    for main, unit in units.items():
        outside = []
        for m in unit.members:
            for src, _ in graph.in_edges(m):
                if src not in unit.members and src not in outside:
                    outside.append(src)
        internal_ok = all(dst in unit.members or m == main for m in unit.members for dst, _ in graph.out_edges(m))
        if len(outside) != 1 or not internal_ok:
            continue
        sig = _signature(graph, unit, outside)
        if sig not in motifs:
            stem = re.sub(r"_\d+$", "", main.rsplit(".", 1)[0]) if "." in main else "layer"
            stem = stem.rsplit(".", 1)[-1]
            motifs[sig] = {"name": _ident(stem, motif_names), "unit": unit, "source": outside[0], "units": []}
        motifs[sig]["units"].append(unit)
        unit_motif[main] = (sig, outside[0])
    for m in motifs.values():
        # Numbers that differ between the calls of a motif become its arguments.
        first = [_numbers(r) for *_, r in _records(graph, m["unit"])]
        m["args"] = []          # (record index, path, arg name)
        for i, nums in enumerate(first):
            for path, value in nums.items():
                values = {_numbers(_records(graph, u)[i][3]).get(path) for u in m["units"]}
                if len(values) > 1:
                    m["args"].append((i, path, None))

    lines = [header.rstrip(), ""] if header else []
    for sig, m in motifs.items():
        unit = m["unit"]
        local: set[str] = {"x"}
        names = {mem: _ident(mem.rsplit(".", 1)[-1], local) for mem in unit.members}
        sizes = {mem: _ident("n" if mem == unit.main else "n_" + names[mem], local) for mem in unit.members}
        args = [(i, path, _ident(_ARG_NAMES.get(path, path.replace(".", "_")), local)) for i, path, _ in m["args"]]
        m["args"] = args
        params = [sizes[mem] for mem in unit.members] + [a for *_, a in args]
        lines.append(f"motif {m['name']}(x, {', '.join(params)}) {{")
        body = _unit_body(graph, unit, names, {m["source"]: "x"}, sizes, "    ", swap=args)
        lines += body
        lines.append(f"    return {names[unit.main]}")
        lines.append("}")
        lines.append("")

    params = ", ".join(f"{k} = {literal(v)}" for k, v in graph.params.items())
    lines.append(f"network {_ident(name or graph.name, set())}({params}) {{")
    taken: set[str] = set(graph.params) | {m["name"] for m in motifs.values()}
    var: dict[str, str] = {}
    emitted: list[str] = []
    done: set[str] = set()
    for node in order:
        if node in done:
            continue
        rec = graph.node(node)
        if isinstance(rec, ir.Population):
            unit = unit_of[node]
            if unit.main in unit_motif:
                sig, src = unit_motif[unit.main]
                v = _ident(unit.main.rsplit(".", 1)[0] if "." in unit.main else unit.main, taken)
                values = [str(graph.node(mem).size) for mem in unit.members]
                recs = _records(graph, unit)
                values += [literal(_numbers(recs[i][3])[path]) for i, path, _ in motifs[sig]["args"]]
                lines.append(f"    {v} = {motifs[sig]['name']}({var[src]}, {', '.join(values)}){note(unit.main)}")
                var[unit.main] = v
                for mem in unit.members:
                    var.setdefault(mem, f"{v}.{mem.rsplit('.', 1)[-1]}")
            else:
                names = {mem: _ident(mem, taken) for mem in unit.members}
                var.update(names)
                lines += _unit_body(graph, unit, names, var, None, "    ", edges=False)
            emitted += unit.members
            done.update(unit.members)
            # Edges into the unit's members whose sources all exist by now (units not written as motifs).
            if unit.main not in unit_motif:
                lines += _edges(graph, unit.members, var, "    ")
            lines += _late_edges(graph, done, unit.members, unit_motif, unit_of, var, "    ")
            continue
        if node == graph.output:
            continue
        v = _ident("x" if isinstance(rec, ir.Input) else node, taken)
        lines.append(f"    {v} = {_node_expr(graph, node, rec, var, graph.params)}")
        var[node] = v
        emitted.append(node)
        done.add(node)
    out_src = [s for s, _ in graph.in_edges(graph.output)][0]
    lines.append(f"    return readout({var[out_src]})")
    emitted.append(graph.output)
    lines.append("}")
    if graph.train:
        lines.append("")
        lines.append("train {")
        for k, v in graph.train.items():
            lines.append(f"    {k} = {literal(v)}")
        lines.append("}")
    from eidsl.tools.fmt import format_text
    return format_text("\n".join(lines) + "\n"), emitted


def _node_expr(graph: ir.Graph, node: str, rec, var: dict[str, str], params: dict) -> str:
    srcs = [s for s, e in sorted(graph.in_edges(node, ir.Flow), key=lambda x: x[1].port)]
    if isinstance(rec, ir.Input):
        fn = "image" if rec.encoding == "static" else "events"
        # Read the network's parameters when they hold these values, so --set input=/T= still reach it.
        shape = "input" if list(params.get("input") or []) == list(rec.shape) else literal(list(rec.shape))
        T = "T" if params.get("T") == rec.T else str(rec.T)
        return f"{fn}({shape}, {T})"
    if isinstance(rec, ir.Pool):
        if rec.global_pool:
            return f"global_avgpool({var[srcs[0]]})"
        return f"avgpool({var[srcs[0]]}, {rec.kernel}, {rec.stride})"
    if isinstance(rec, ir.Flatten):
        return f"flatten({var[srcs[0]]})"
    if isinstance(rec, ir.Sum):
        if len(srcs) != 2:
            raise SpecWriteError(f"'{node}' sums {len(srcs)} inputs; .ei sums two at a time")
        return f"{var[srcs[0]]} + {var[srcs[1]]}"
    raise SpecWriteError(f"'{node}' ({rec.kind}) has no .ei spelling here")


def _unit_body(graph, unit, names, var, sizes, indent, edges=True, swap=()) -> list[str]:
    """Declarations (and edges) of a unit; in a motif, `swap` names the numbers that are arguments."""
    recs = _records(graph, unit)
    swapped = {}
    for k, (i, path, arg) in enumerate(swap):
        value = _SENTINEL + k
        if path.endswith(("delay",)):
            value = int(value)
        swapped[i] = _with(swapped.get(i, recs[i][3]), path, value)
        swapped.setdefault("names", {})[literal(value)] = arg
        swapped.setdefault("names", {})[f"constant({literal(float(value))})"] = arg
    subs = swapped.pop("names", {})

    def text(t: str) -> str:
        for k in sorted(subs, key=len, reverse=True):
            t = t.replace(k, subs[k])
        return t

    lines = []
    for i, (kind, mem, src, rec) in enumerate(recs):
        rec = swapped.get(i, rec)
        if kind == "pop":
            size = sizes[mem] if sizes else str(rec.size)
            lines.append(text(f"{indent}{_SIGN[rec.sign]} {names[mem]} = {population_text(rec, size)}"))
        elif edges:
            local = {**var, **names}
            if src in local and isinstance(rec, (ir.Projection, ir.Inhibition)):
                arrow = "-|" if isinstance(rec, ir.Inhibition) else "->"
                lines.append(text(f"{indent}{local[src]} {arrow} {local[mem]} : {edge_text(rec)}"))
    return lines


def _edges(graph, members, var, indent) -> list[str]:
    # Per target, in the order its inputs arrived: the order in which the lowering sums them.
    lines = []
    for dst in members:
        for src, e in graph.in_edges(dst):
            if src in var and isinstance(e, (ir.Projection, ir.Inhibition)):
                arrow = "-|" if isinstance(e, ir.Inhibition) else "->"
                lines.append(f"{indent}{var[src]} {arrow} {var[dst]} : {edge_text(e)}")
    return lines


def _late_edges(graph, done, just, unit_motif, unit_of, var, indent) -> list[str]:
    """Edges from the members just written into inline units written earlier (loops through a delay)."""
    lines = []
    for src, dst, e in graph.edges():
        if src in just and dst in done and dst not in just and isinstance(e, (ir.Projection, ir.Inhibition)):
            if unit_of.get(dst) and unit_of[dst].main not in unit_motif:
                arrow = "-|" if isinstance(e, ir.Inhibition) else "->"
                lines.append(f"{indent}{var[src]} {arrow} {var[dst]} : {edge_text(e)}")
    return lines


def written_names(graph: ir.Graph, written: ir.Graph, emitted: list[str]) -> dict[str, str]:
    """Original node name -> name in the written spec, checked record by record and edge by edge."""
    new = list(written.g.nodes)
    if len(new) != len(emitted):
        raise SpecWriteError(f"the written spec has {len(new)} nodes, the graph {len(emitted)}")
    names = dict(zip(emitted, new))
    for old, nw in names.items():
        a, b = _strip(graph.node(old)), _strip(written.node(nw))
        if a != b:
            diff = {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)}
            raise SpecWriteError(f"'{old}' reads back as '{nw}' with other values: {diff}")
    for src, dst, e in graph.edges():
        if not written.g.has_edge(names[src], names[dst]):
            raise SpecWriteError(f"the edge '{src}' -> '{dst}' is missing from the written spec")
        if _strip(e) != _strip(written.edge(names[src], names[dst])):
            raise SpecWriteError(f"the edge '{src}' -> '{dst}' reads back with other values")
        # A population sums its inputs in the order they arrived; flows carry their port in the record.
        order_old = [names[s] for s, _ in graph.in_edges(dst)]
        order_new = [s for s, _ in written.in_edges(names[dst])]
        if isinstance(graph.node(dst), ir.Population) and order_old != order_new:
            raise SpecWriteError(f"the inputs of '{dst}' read back in another order")
    if written.g.number_of_edges() != graph.g.number_of_edges():
        raise SpecWriteError("the written spec has edges the graph has not")
    for what in ("params", "train"):
        if getattr(written, what) != getattr(graph, what):
            raise SpecWriteError(f"the written spec's {what} read back as {getattr(written, what)}, "
                                 f"not {getattr(graph, what)}")
    return names
