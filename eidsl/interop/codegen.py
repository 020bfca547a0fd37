"""Plan -> readable PyTorch source: one module class that a person can read top to bottom.

The generated file imports only torch and ``eidsl_compiler.ops`` (the runtime's paper
math), builds the same parameter tree as ``Network`` (so the two share state
dicts key for key) and spells out the forward with the paper's names: I_EE,
I_IE, s_I, I_sub, I_div, I_int, s_E. It calls the same ops in the same order as
the interpreter in ``network.py``, so logits and gradients agree bit for bit.
"""
from __future__ import annotations

import dataclasses
import keyword
import re
from pathlib import Path

from eidsl import ir
from eidsl.ir import node_sign

from eidsl_compiler.lower import python_name
from eidsl_compiler.plan import Plan, Step, fusible_circuits, static_input

RESERVED = {"self", "x", "T", "t", "batch", "torch", "nn", "ops", "Scope"}


def class_name(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    return text if text[0].isalpha() else "Net" + text


def where(loc: ir.Loc | None) -> str:
    """A spec location as FILE:LINE, relative to the working folder when it is inside it."""
    if loc is None:
        return "?"
    path = Path(loc.file).resolve()
    for base in (Path.cwd().resolve(), Path(__file__).resolve().parents[2]):   # the user's folder, eidsl's
        if path.is_relative_to(base):
            path = path.relative_to(base)
            break
    return f"{path}:{loc.line}"


def _ref(path: str) -> str:
    """Attribute access from `self` to a parameter or module of the tree."""
    expr = "self"
    for part in path.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() and not keyword.iskeyword(part) else \
            f"getattr({expr}, {part!r})"
    return expr


def _literal(value) -> str:
    return repr(value)


def _inert(text: str) -> str:
    """One generated line with every character that could end it escaped.

    User text (a spec path, a folder name) reaches comments; a newline, carriage return, form feed
    or U+2028 in it would end the comment and turn the rest into code. Code and repr literals never
    hold such characters, so escaping them anywhere in a line changes only comments."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _doc_text(text: str) -> str:
    """User text inside the module's triple-quoted docstring: quotes and backslashes escaped too,
    so that no spec path or --set value can close the string."""
    return _inert(text.replace("\\", "\\\\").replace('"', '\\"'))


def _scale(value: float) -> str:
    """1 / d written as such when it is exactly that float."""
    if value > 0:
        d = round(1.0 / value)
        if d > 0 and 1 / d == value:
            return f"1 / {d}"
    return repr(value)


class _Names:
    """Fresh, readable Python identifiers."""

    def __init__(self):
        self.taken = set(RESERVED)

    def fresh(self, preferred: str) -> str:
        base = re.sub(r"\W+", "_", preferred).strip("_") or "v"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = "v_" + base
        name, k = base, 2
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


class _Gen:
    def __init__(self, plan: Plan, graph: ir.Graph | None):
        self.plan, self.graph = plan, graph
        self.specs = {p.path: p for p in plan.params}
        self.names = _Names()
        self.var: dict[str, str] = {"input": "x"}
        self.lines: list[str] = []
        self.indent = 2
        self.suffix = ""          # "_t" inside a loop's body
        self.layer: str | None = None
        self.static = static_input(plan)   # hoisted as Network.run hoists it
        self.raw: dict[str, str] = {}      # static tensor -> the variable holding it before the repeat

    # ------------------------------------------------------------ helpers

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.indent + text if text else "")

    def scope(self, node: str) -> str:
        return python_name(node.rsplit(".", 1)[0]) if "." in node else ""

    def pop(self, node: str) -> str:
        return node.rsplit(".", 1)[-1]

    def new(self, node: str, term: str) -> str:
        """`<layer>_<term>`; a population not called E, I or O adds its name (`layer_1_I_int_F`)."""
        scope, pop = self.scope(node), self.pop(node)
        if pop not in ("E", "I", "O") and not term.endswith(f"_{pop}"):
            term = f"{term}_{pop}"
        return self.names.fresh(f"{scope}_{term}{self.suffix}" if scope else f"{term}{self.suffix}")

    def current(self, name: str, weight: str) -> str:
        """The paper's name of a projection's current: I_EE for W_EE, I_IE for W_IE; with the source
        when the population has several projections of that kind."""
        dst, src = name.split("<-")
        role = self.specs[weight].role
        term = f"I_{role[2:]}" if role.startswith("W_") and len(role) == 4 else "I"
        if self.graph is not None and dst in self.graph.g:
            signs = [node_sign(self.graph, s) for s, _ in self.graph.in_edges(dst, ir.Projection)]
            if signs.count(node_sign(self.graph, src)) > 1:
                term += f"_from_{python_name(src)}"
        return term

    def param(self, path: str | None) -> str:
        """A parameter as the circuit uses it: its declared gradient factor, then its transform."""
        if path is None:
            return "None"
        expr, spec = _ref(path), self.specs.get(path)
        if spec is not None and spec.grad_scale != 1.0:
            expr = f"ops.scale_grad({expr}, {_scale(spec.grad_scale)})"
        if spec is not None and spec.transform == "exp":
            expr = f"torch.exp({expr})"
        return expr

    def header(self, step: Step) -> None:
        """One comment per layer, pointing at the spec line that declares it."""
        layer = step.node.rsplit(".", 1)[0] if "." in step.node else step.node
        if layer == self.layer:
            return
        self.layer = layer
        rec = self.graph.node(step.node) if self.graph is not None and step.node in self.graph.g else None
        text, loc = self.describe(layer, step, rec)
        self.line()
        self.line(f"# {layer}: {text}  ({where(loc)})")

    def describe(self, layer: str, step: Step, rec) -> tuple[str, ir.Loc | None]:
        if self.graph is None or rec is None:
            return step.op, step.loc
        if not isinstance(rec, ir.Population):
            return {"input": "input", "pool": "average pooling", "flatten": "flatten", "sum": "spike-sum residual",
                    "readout": "readout: logits = mean over T of the output current"}.get(rec.kind, rec.kind), rec.loc
        pops = [r for n, r in self.graph.nodes(ir.Population) if (n.rsplit(".", 1)[0] if "." in n else n) == layer]
        main = next((r for r in pops if r.sign != "inh"), rec)
        exc = sum(r.size for r in pops if r.sign != "inh")
        inh = sum(r.size for r in pops if r.sign == "inh")
        if step.op == "loop":
            text = "recurrent loop through a delay, run one time step at a time"
        elif inh:
            text = "E-I output layer" if main.model == "current" else "E-I layer"
        else:
            norm = "BatchNorm" if main.norm == "batchnorm" else "plain"
            text = f"{norm} {'readout' if main.model == 'current' else 'layer'}"
        sizes = f"{exc} E / {inh} I" if inh else f"{exc} neurons"
        return f"{text}, {sizes}", main.loc

    # ------------------------------------------------------------ parameter tree

    def init_lines(self) -> list[str]:
        out, made = [], set()
        spatial = {s.node for s in _walk(self.plan.steps) if s.op == "integrate" and s.attrs.spatial}

        def ensure(path: str) -> None:
            parts = path.split(".")
            for i in range(1, len(parts)):
                scope = ".".join(parts[:i])
                if scope not in made:
                    made.add(scope)
                    out.append(_assign(scope, "Scope()"))

        for spec in self.plan.params:
            ensure(spec.path)
            note = [spec.role]
            if spec.nonneg:
                note.append(">= 0")
            note.append(spec.init.rule)
            if not spec.used:
                note.append("unused, kept for the reference layout")
            out.append(_assign(spec.path, f"nn.Parameter(torch.empty{tuple(spec.shape)!r})") + "  # " + ", ".join(note))
        for spec in self.plan.buffers:
            ensure(spec.path)
            kind = "BatchNorm2d" if spec.node in spatial else "BatchNorm1d"
            out.append(_assign(spec.path, f"nn.{kind}({spec.shape[0]})"))
        return out

    # ------------------------------------------------------------ steps

    def step(self, step: Step) -> None:
        # A delayed read names a value that this time step has not made yet: it is read from the history.
        EMITTERS[step.op](self, step, [self.var.get(i, "") for i in step.ins])

    def out(self, step: Step, value: str, index: int = 0) -> None:
        self.var[step.outs[index]] = value


def _assign(path: str, value: str) -> str:
    *parents, name = path.split(".")
    owner = _ref(".".join(parents)) if parents else "self"
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{owner}.{name} = {value}"
    return f"setattr({owner}, {name!r}, {value})"


def _walk(steps):
    for step in steps:
        yield step
        if step.op == "loop":
            yield from _walk(step.attrs.body)


# ---------------------------------------------------------------- one emitter per plan op


def _repeat_static(g: _Gen, step: Step, ins):
    out = step.outs[0]
    if out not in g.static:
        g.line(f"x = ops.repeat_static({ins[0]}, T)  # a static image at every step: (B, ...) -> (T*B, ...)")
        g.out(step, "x")
        return
    g.line("# a static image at every step: its projections run once per sample (ops.project_static)")
    g.raw[out] = ins[0]
    _materialise(g, step)


def _static_flatten(g: _Gen, step: Step, ins):
    if step.ins[0] not in g.raw or g.suffix:
        return _simple("flatten")(g, step, ins)
    name = g.names.fresh(python_name(step.node))
    g.line(f"{name} = ops.flatten({g.raw[step.ins[0]]})  # one image per sample")
    g.raw[step.outs[0]] = name
    _materialise(g, step)


def _materialise(g: _Gen, step: Step):
    """The (T*B, ...) repeat of a static tensor, where something other than a projection reads it."""
    if g.static[step.outs[0]]:
        name = g.names.fresh("x_steps")
        g.line(f"{name} = ops.repeat_static({g.raw[step.outs[0]]}, T)  # (B, ...) -> (T*B, ...)")
        g.out(step, name)


def _fold_events(g: _Gen, step: Step, ins):
    g.line(f"x = ops.fold_events({ins[0]})  # event frames (B, T, ...) -> time-major (T*B, ...)")
    g.out(step, "x")


def _project(g: _Gen, step: Step, ins):
    outs = [g.new(out.split("<-")[0], g.current(out, path)) for out, path in zip(step.outs, step.params.weights)]
    weights = ", ".join(g.param(p) for p in step.params.weights)
    biases = ", ".join(g.param(b) for b in step.params.biases)
    a = step.attrs
    geometry = f", stride={a.stride}, padding={a.padding}" if a.op == "conv" else ""
    roles = " and ".join(g.specs[p].role for p in step.params.weights)
    what = f"{roles} in one {a.op} product" if len(outs) > 1 else roles
    call = f"ops.project({ins[0]}, [{weights}], [{biases}], {a.op!r}{geometry})"
    if step.ins[0] in g.raw and not g.suffix:
        call = f"ops.project_static({g.raw[step.ins[0]]}, T, [{weights}], [{biases}], {a.op!r}{geometry})"
    if len(outs) == 1:
        g.line(f"{outs[0]} = {call}[0]  # {what}")
    else:
        g.line(f"{', '.join(outs)} = {call}  # {what}")
    for i, name in enumerate(outs):
        g.out(step, name, i)


def _integrate(g: _Gen, step: Step, ins):
    a, p = step.attrs, step.params
    node = step.node
    excitation, inhibitors = ins[:a.n_exc], ins[a.n_exc:]
    I_EE = excitation[0] if len(excitation) == 1 else None
    if len(excitation) > 1:
        I_EE = g.new(node, "I_EE_sum")
        g.line(f"{I_EE} = ops.spike_sum({', '.join(excitation)})")
    if p.bn is not None:
        normed = g.new(node, "I_bn")
        g.line(f"{normed} = {_ref(p.bn)}({I_EE})  # BatchNorm")
        I_EE = normed
    if not inhibitors:
        if p.g_E is None and p.b_E is None:
            g.out(step, I_EE)      # nothing to integrate: the input current itself
            return
        out = g.new(node, "I_int")
        g.line(f"{out} = ops.integrate({I_EE}, None, None, {g.param(p.g_E)}, {g.param(p.b_E)})  # g_E * I_EE + b_E")
        g.out(step, out)
        return
    # The runtime's own functions (ops.inhibition, ops.integrate_terms), so the values stay bit-identical.
    weights = ", ".join("[" + ", ".join(g.param(w) for w in paths) + "]" for paths in p.W_EI)
    gains = ", ".join(g.param(path) for path in p.g_I)
    modes = ", ".join(_mode(m) for m in a.modes)
    sub, div = g.new(node, "I_sub"), g.new(node, "I_div")
    factors = [g.specs[paths[0]].grad_scale for paths in p.W_EI]
    g.line("# I_sub = sum W_EI s_I, I_div = sum W_EI (g_I * s_I) over the inhibitors"
           + "".join(f"; W_EI's gradient times {_scale(f)}" for f in factors if f != 1.0))
    g.line(f"{sub}, {div}, rule = ops.inhibition([{', '.join(inhibitors)}], [{weights}], [{gains}], [{modes}])")
    out = g.new(node, "I_out" if a.balanced_only else "I_int")
    what = "output layer: the balanced current I_EE - I_sub" if a.balanced_only else \
        "g_E * (I_EE - I_sub) / stabilise(I_div) + b_E"
    g.line(f"{out} = ops.integrate_terms({I_EE or 'None'}, {sub}, {div}, rule, {g.param(p.g_E)}, "
           f"{g.param(p.b_E)}, {a.balanced_only})  # {what}")
    g.out(step, out)


def _mode(m) -> str:
    # Every field, whatever an inhibition kind adds to plan.Inhibitor, as a keyword argument.
    return "Inhibitor(" + ", ".join(f"{f.name}={getattr(m, f.name)!r}" for f in dataclasses.fields(m)) + ")"


def _circuit_lif(g: _Gen, circuit: Step, lif: Step, ins):
    a, p = circuit.attrs, circuit.params
    excitation, s_I = ins[:a.n_exc], ins[a.n_exc]
    I_EE = excitation[0]
    if len(excitation) > 1:
        I_EE = g.new(circuit.node, "I_EE_sum")
        g.line(f"{I_EE} = ops.spike_sum({', '.join(excitation)})")
    W_EI = g.param(p.W_EI[0][0])
    gs = g.specs[p.W_EI[0][0]].grad_scale
    scaled = f"; W_EI's gradient times {_scale(gs)}" if gs != 1.0 else ""
    s = g.new(lif.node, f"s_{g.pop(lif.node)}")
    g.line("# I_int = g_E (I_EE - W_EI s_I) / min_positive(W_EI (g_I * s_I)) + b_E, identity gradient through the")
    g.line(f"# divisor{scaled}; then the LIF. One fused op: I_int itself is never stored")
    g.line(f"{s} = ops.ei_circuit_lif({I_EE}, {s_I}, {W_EI}, {g.param(p.g_I[0])}, {g.param(p.g_E)}, "
           f"{g.param(p.b_E)}, T, {_neuron_args(lif.attrs)})")
    g.out(lif, s)


def _neuron_args(a) -> str:
    return (f"tau={a.tau!r}, theta={a.theta!r}, reset={a.reset!r}, v_reset={a.v_reset!r}, "
            f"detach_reset={a.detach_reset}, surrogate={a.surrogate!r}, alpha={a.alpha!r}")


def _lif(g: _Gen, step: Step, ins):
    s = g.new(step.node, f"s_{g.pop(step.node)}")
    g.line(f"{s} = ops.lif({ins[0]}, T, {_neuron_args(step.attrs)})  # LIF spikes, v starts at 0")
    g.out(step, s)


def _lif_step(g: _Gen, step: Step, ins):
    v = g.loop_state[step.outs[0]]
    s = g.new(step.node, f"s_{g.pop(step.node)}")
    a = step.attrs
    g.line(f"{v}, {s} = ops.lif_step(torch.zeros_like({ins[0]}) if {v} is None else {v}, {ins[0]}, "
           f"{a.tau!r}, {a.theta!r}, {a.reset!r}, {a.v_reset!r}, {a.detach_reset}, "
           f"{a.surrogate!r}, {a.alpha!r})")
    g.out(step, s)


def _relu(g: _Gen, step: Step, ins):
    s = g.new(step.node, f"s_{g.pop(step.node)}")
    g.line(f"{s} = ops.relu({ins[0]})  # fast-spiking interneurons: s_I = max(0, I_IE)")
    g.out(step, s)


def _identity(g: _Gen, step: Step, ins):
    g.out(step, ins[0])


def _delay(g: _Gen, step: Step, ins):
    out = g.names.fresh(f"{ins[0]}_delayed")
    g.line(f"{out} = ops.delay({ins[0]}, T, {step.attrs.steps})  # {step.attrs.steps} step(s) earlier, 0 before")
    g.out(step, out)


def _delay_step(g: _Gen, step: Step, ins):
    k = step.attrs.steps
    history = g.loop_history[step.ins[0]]
    out = g.names.fresh(f"{g.loop_base[step.ins[0]]}_prev")
    shape = ", ".join(["batch", *map(str, step.attrs.shape)])
    g.line(f"{out} = {history}[t - {k}] if t >= {k} else {g.loop_zeros}(({shape}))  # step t-{k}, 0 before")
    g.out(step, out)


def _simple(fn: str, term: str | None = None, extra: str = "", comment: str = ""):
    def emit(g: _Gen, step: Step, ins):
        out = g.names.fresh((term or python_name(step.node)) + g.suffix)
        args = ", ".join(ins) + extra.format(**vars(step.attrs))
        g.line(f"{out} = ops.{fn}({args})" + (f"  # {comment}" if comment else ""))
        g.out(step, out)
    return emit


def _loop(g: _Gen, step: Step, ins):
    body, T = step.attrs.body, step.attrs.T
    delayed = [f"{s.node.rsplit('.', 1)[-1]} reads {g.pop(s.ins[0].split('<-')[-1])} of step t-{s.attrs.steps}"
               for s in body if s.op == "delay_step"]
    g.line(f"# the loop {' -> '.join(g.pop(m) for m in step.outs)} closes through a delay "
           f"({', '.join(delayed)}): run it one time step at a time")
    seqs = []
    for name, var in zip(step.ins, ins):
        seq = g.names.fresh(f"{var}_seq")
        g.line(f"{seq} = ops.unfold_time({var}, T)")
        seqs.append((name, seq))
    g.line(f"batch = {seqs[0][1]}.shape[1]")
    g.loop_zeros = f"{seqs[0][1]}.new_zeros"
    # One list per value that is read a step later or leaves the loop.
    kept = list(dict.fromkeys([*step.attrs.history, *step.outs]))
    g.loop_base = {name: _predict(g, name, body) for inner in body for name in inner.outs}
    lists = {name: g.names.fresh(f"{g.loop_base[name]}_steps") for name in kept}
    g.loop_history = lists
    g.loop_state = {}
    for inner in body:
        if inner.op == "lif_step":
            g.loop_state[inner.outs[0]] = g.names.fresh(f"{g.scope(inner.node)}_v_{g.pop(inner.node)}".strip("_"))
    g.line(", ".join(lists.values()) + " = " + ", ".join("[]" for _ in lists) + "  # values over the steps")
    for v in g.loop_state.values():
        g.line(f"{v} = None  # membrane potential, carried from step to step")
    g.line(f"for t in range(T):  # T = {T}")
    g.indent += 1
    g.suffix = "_t"
    for name, seq in seqs:
        var = g.names.fresh(f"{g.var[name]}_t")
        g.line(f"{var} = {seq}[t]")
        g.var[name] = var
    for inner in body:
        g.step(inner)
    for name, lst in lists.items():
        g.line(f"{lst}.append({g.var[name]})")
    g.indent -= 1
    g.suffix = ""
    for name in step.outs:
        out = g.names.fresh(g.loop_base[name])
        g.line(f"{out} = ops.fold_time(torch.stack({lists[name]}))")
        g.var[name] = out


def _predict(g: _Gen, name: str, body: list[Step]) -> str:
    """The paper's name of a loop value, for the helper variables made before the body is written."""
    producer = next(s for s in body if name in s.outs)
    node = producer.node
    if producer.op == "project":
        node = name.split("<-")[0]
        term = g.current(name, producer.params.weights[producer.outs.index(name)])
    elif producer.op in ("lif_step", "relu"):
        term = f"s_{g.pop(node)}"
    elif producer.op == "integrate":
        term = "I_int"
    else:
        return python_name(name)
    scope, pop = g.scope(node), g.pop(node)
    if pop not in ("E", "I", "O") and not term.endswith(f"_{pop}"):
        term = f"{term}_{pop}"
    return f"{scope}_{term}" if scope else term


EMITTERS = {
    "repeat_static": _repeat_static,
    "fold_events": _fold_events,
    "project": _project,
    "integrate": _integrate,
    "lif": _lif,
    "lif_step": _lif_step,
    "relu": _relu,
    "identity": _identity,
    "delay": _delay,
    "delay_step": _delay_step,
    "avgpool": _simple("avgpool", extra=", {kernel}, {stride}"),
    "maxpool": _simple("maxpool", extra=", {kernel}, {stride}"),
    "global_avgpool": _simple("global_avgpool"),
    "flatten": _static_flatten,
    "spike_sum": _simple("spike_sum", comment="spike-sum residual"),
    "readout_mean": _simple("readout_mean", "logits", extra=", T", comment="mean over the T steps"),
    "loop": _loop,
}


def generate(plan: Plan, graph: ir.Graph | None = None, spec: str | None = None,
             sets: dict[str, str] | None = None) -> str:
    """The generated module's source text."""
    g = _Gen(plan, graph)
    init = g.init_lines()
    fused = fusible_circuits(plan)      # the runtime's fusion, so that the values stay bit-identical
    for i, step in enumerate(plan.steps):
        if step.op == "delay_step" or step.op == "lif_step":
            raise ValueError(f"{step.op} outside a loop")
        if i - 1 in fused:
            continue
        g.header(step)
        if i in fused:
            _circuit_lif(g, step, plan.steps[i + 1], [g.var.get(n, "") for n in step.ins])
        else:
            g.step(step)
    origin = f" from {spec}" if spec else ""
    if sets:
        origin += " (" + ", ".join(f"--set {k}={v}" for k, v in sets.items()) + ")"
    origin = _doc_text(origin)
    cls = class_name(plan.name)
    shape = tuple(plan.input.shape)
    source = [
        f'"""E-I network `{_doc_text(plan.name)}`, generated by eidsl{origin}.',
        "",
        "Regenerate it with `eidsl compile` rather than editing it. The forward follows",
        "DeepEISNN (docs/science.md §1.2); one E-I layer reads",
        "    I_EE, I_IE = W_EE x, W_IE x                one fused product",
        "    s_I = max(0, I_IE)                         fast-spiking interneurons",
        "    I_sub, I_div = W_EI s_I, W_EI (g_I * s_I)  one product for both",
        "    I_int = g_E * (I_EE - I_sub) / I_div + b_E",
        "    s_E = LIF(I_int)",
        "and the output layer returns I_EE - I_sub, averaged over T. Time is folded into",
        "the batch: tensors are (T*B, ...). Parameters are named by their spec paths, so",
        "`load_state_dict` takes an eidsl checkpoint of the same spec as it is.",
        '"""',
        "import torch",
        "from torch import nn",
        "",
        "from eidsl_compiler import ops",
        "from eidsl_compiler.plan import Inhibitor",
        "",
        f"T = {plan.T}  # time steps",
        f"INPUT = {plan.input.encoding!r}, {shape!r}  # encoding, shape of one sample",
        "",
        "",
        "class Scope(nn.Module):",
        '    """One level of the spec\'s hierarchy: a motif instance or a population."""',
        "",
        "",
        f"class {cls}(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *("        " + _inert(line) for line in init),
        "",
        "    def forward(self, x):",
        f'        """{"(B, T, ...) event frames" if plan.input.encoding == "events" else "(B, ...) images"}'
        ' -> logits (B, classes)."""',
        *[_inert(line) for line in g.lines[1:]],
        f"        return {g.var[plan.output]}",
        "",
        "",
        f"Model = {cls}",
        "",
    ]
    text = "\n".join(source)
    compile(text, "model.py", "exec")   # a generator bug surfaces here, not when the file is imported
    return text
