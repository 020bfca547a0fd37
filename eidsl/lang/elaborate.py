"""Syntax tree to graph IR: resolve imports, expand motifs and loops, evaluate parameters.

Specs are data. Expressions are evaluated by the small interpreter below, over a
closed set of operators and builtins; nothing in a spec ever reaches Python's
``eval``/``exec``. Expansion is bounded (nodes, loop iterations, list sizes,
recursion) so a hostile spec cannot exhaust the machine.
"""
from __future__ import annotations

import math
import stat

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eidsl import ir
from eidsl.lang import syntax as S
from eidsl import errors
from eidsl.errors import SpecError, Span, did_you_mean, place, raise_all
from eidsl.lang.parser import parse_expr, parse_file
from eidsl.lang.syntax import MAX_INT
from eidsl.lang.builtins import (FUNCTIONS, GRAPH_BUILTINS, INIT_RULES, KIND_RECORDS, NAMED_VALUES,
                                 POPULATION_MODELS, PROJECTION_KINDS, SYMBOLS, Misuse, a_kind, check_field,
                                 formula_op, from_python, grad_factor, resolve_refs)
from eidsl.limits import (MAX_DEPTH, MAX_ERRORS, MAX_LIST, MAX_MADE, MAX_NODES,  # noqa: F401
                          MAX_SPEC_BYTES, MAX_STEPS, MAX_STRING)
from eidsl.lang.values import (COMPARE, REQUIRED, Formula, InitValue, Instance, NodeRef, Quotient, Sym, arith,
                               check_exportable, count_items, is_int, is_node, is_number, kind_of, op_hint, plain, show)

STDLIB = Path(__file__).with_name("stdlib")
errors.LIBRARY_DIRS.append(STDLIB.resolve())

class _Return(Exception):
    def __init__(self, value, span: Span):
        self.value = value
        self.span = span


@dataclass
class Program:
    """Every motif visible from the root file, with where it came from."""
    motifs: dict[str, S.Motif] = field(default_factory=dict)
    networks: list[S.Motif] = field(default_factory=list)
    imported_networks: dict[str, S.Motif] = field(default_factory=dict)
    train: S.TrainBlock | None = None


# ---------------------------------------------------------------- imports

def load_program(path: str | Path, include: list[str | Path] = ()) -> Program:
    root = Path(path)
    program = Program()
    roots = [_real(root).parent, STDLIB.resolve(), *[_real(Path(p)) for p in include]]
    loaded: set[Path] = set()
    errors: list[SpecError] = []
    builtins = {**FUNCTIONS, **GRAPH_BUILTINS, **POPULATION_MODELS, **PROJECTION_KINDS["->"], **PROJECTION_KINDS["-|"]}

    def visit(file: Path, chain: tuple[Path, ...], is_root: bool) -> None:
        module = parse_file(file)
        for imp in module.imports:
            try:
                if not imp.path.strip() or "\x00" in imp.path:
                    raise SpecError(f"import {imp.path!r} is not a file name", imp.span, hint='e.g. import "std"')
                target = _resolve_import(imp, file, roots)
            except SpecError as err:
                errors.append(err)
                continue
            if target in chain or target == _real(file):
                cycle = " -> ".join(p.name for p in (*chain, _real(file), target))
                errors.append(SpecError(f"import cycle: {cycle}", imp.span,
                                        hint="move the shared motifs into a file both can import"))
                continue
            if target not in loaded:
                loaded.add(target)
                try:
                    visit(target, (*chain, _real(file)), False)
                except SpecError as err:
                    # A broken imported file: say which import brought it in.
                    err.notes.append((imp.span, "imported here"))
                    errors.append(err)
        for motif in module.motifs:
            if motif.name in builtins or motif.name in SYMBOLS:
                what = "a value" if motif.name in SYMBOLS else "a built-in"
                errors.append(SpecError(f"'{motif.name}' is {what} of the language and cannot name a "
                                        f"{'network' if motif.is_network else 'motif'}", motif.span,
                                        hint="choose another name"))
                continue
            if motif.is_network:
                if is_root:
                    program.networks.append(motif)
                else:
                    program.imported_networks[motif.name] = motif
                continue
            previous = program.motifs.get(motif.name)
            if previous is not None and previous.span != motif.span:
                errors.append(SpecError(f"motif '{motif.name}' is defined twice", motif.span,
                                        notes=[(previous.span, "first defined here")],
                                        hint="rename one of them"))
                continue
            program.motifs[motif.name] = motif
        if is_root:
            program.train = module.train

    loaded.add(_real(root))
    visit(root, (), True)
    for net in program.networks:
        if net.name in program.motifs:
            errors.append(SpecError(f"'{net.name}' names both a network and a motif", net.span,
                                    notes=[(program.motifs[net.name].span, "the motif")], hint="rename one"))
    raise_all(errors)
    return program


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):   # a symlink loop
        return path.absolute()


def _resolve_import(imp: S.Import, importer: Path, roots: list[Path]) -> Path:
    name = imp.path if imp.path.endswith(".ei") else imp.path + ".ei"
    if Path(name).is_absolute():
        raise SpecError(f"import '{imp.path}' is an absolute path", imp.span,
                        hint="import relative to the spec's folder, the standard library or an --include folder")
    searched = [importer.resolve().parent, *roots]
    for base in dict.fromkeys(searched):
        candidate = base / name
        # The check is on the real path (symlinks and `..` resolved), which is also the path then read.
        try:
            if not candidate.exists():
                continue
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError) as exc:   # name too long, symlink loop, permission denied
            raise SpecError(f"cannot read import '{imp.path}': {getattr(exc, 'strerror', None) or exc}",
                            imp.span) from None
        if not any(real.is_relative_to(r) for r in roots):
            raise SpecError(f"import '{imp.path}' leaves the allowed folders (it resolves to {real})",
                            imp.span, hint="imports may only reach the spec's folder, the standard "
                                           "library and folders given with --include")
        _check_spec_file(real, imp)
        return real
    raise SpecError(f"cannot find import '{imp.path}'", imp.span,
                    hint="looked in " + ", ".join(str(p) for p in dict.fromkeys(searched)))


def _check_spec_file(real: Path, imp: S.Import) -> None:
    """Only regular files of spec size: a FIFO or device would block or never end the read."""
    st = real.stat()
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(f"import '{imp.path}' is not a regular file ({real})", imp.span)
    if st.st_size > MAX_SPEC_BYTES:
        raise SpecError(f"import '{imp.path}' is {st.st_size:,} bytes, more than a spec may be "
                        f"({MAX_SPEC_BYTES:,})", imp.span)


# ---------------------------------------------------------------- elaboration

def elaborate(path: str | Path, overrides: dict[str, Any] | None = None,
              include: list[str | Path] = (), network: str | None = None) -> ir.Graph:
    """Overrides are text from the command line (`--set depth=8`, parsed as .ei expressions)
    or, wrapped in `Value`, Python values from the API."""
    program = load_program(path, include)
    return Elaborator(program, str(path)).run(overrides or {}, network)


@dataclass(frozen=True)
class Value:
    """A parameter override given as a Python value rather than as spec text."""
    value: Any


class Elaborator:
    def __init__(self, program: Program, path: str):
        self.program = program
        self.path = path
        self.graph: ir.Graph | None = None
        self.network_params: dict[str, Any] = {}
        self.counters: dict[tuple[str, str], int] = {}
        self.steps = 0
        self.made = 0                    # list items and string characters made so far
        self.created: list[str] = []     # graph nodes in the order they were added
        self.overflow_at: list[Span] | None = None
        self.depth = 0
        self.errors: list[SpecError] = []
        self.renames: dict[str, str] = {}
        self.calls: list[Span] = []      # the motif calls being expanded, outermost first
        self.motifs_open: list[str] = []  # their motifs' names, in the same order

    # entry
    def run(self, overrides: dict[str, str], network: str | None) -> ir.Graph:
        net = self._pick_network(network)
        try:
            return self._run(net, overrides)
        except _Fatal as err:
            self.errors.append(self.placed(err))
            raise_all(self.errors)
        except RecursionError:
            # Nesting is bounded piecewise (syntax depth, motif depth); together they can
            # still outgrow Python's stack, and that must read as a spec error too, at the
            # innermost call (recorded on the way out: the stack of calls is unwound by now).
            calls = self.overflow_at or []
            err = SpecError("the spec nests too deeply to expand (motif calls inside deep expressions)",
                            calls[-1] if calls else net.span,
                            hint=f"reduce nesting; motifs may nest at most {MAX_DEPTH} deep")
            raise place(err, reversed(calls[:-1])) from None

    def _run(self, net: S.Motif, overrides: dict[str, str]) -> ir.Graph:
        params = {}
        names = [p.name for p in net.params]
        for key in overrides:
            if key not in names:
                hint = did_you_mean(key, names) or ("parameters: " + ", ".join(names) if names else
                                                    "this network takes no parameters")
                raise SpecError(f"network '{net.name}' has no parameter '{key}' (given with --set {key}=...)",
                                net.span, hint=hint)
        for p in net.params:
            try:
                if p.name in overrides:
                    params[p.name] = self._override(p.name, overrides[p.name])
                elif p.default is not None:
                    params[p.name] = self.eval(p.default, {})
                else:
                    raise SpecError(f"network parameter '{p.name}' has no default", p.span,
                                    hint=f"give it one (`{p.name} = ...`) or pass --set {p.name}=...")
            except SpecError as err:
                self.errors.append(err)
                params[p.name] = _Poison()
        if self.errors:
            raise_all(self.errors)
        self.network_params = params
        for p in net.params:
            check_exportable(params[p.name], p.span)
        self.graph = ir.Graph(net.name, plain(params), loc=ir.Loc.of(net.span))
        scope = dict(params)
        result_span = net.span
        try:
            self.exec_block(net.body, scope, "")
            result = None
        except _Return as r:
            result, result_span = r.value, r.span
        if self.errors:
            raise_all(self.errors)
        if result is None:
            raise SpecError(f"network '{net.name}' returns nothing", net.span,
                            hint="end the network with `return readout(y)`")
        node = self.as_node(result, result_span)
        if not isinstance(self.graph.node(node), ir.Readout):
            raise SpecError(f"network '{net.name}' must return a readout, not {kind_of(result)}", result_span,
                            hint="wrap the output population: `return readout(y)`")
        self.graph.output = node
        resolve_refs(self)
        if self.program.train is not None:
            train = {}
            for setting in self.program.train.settings:
                try:
                    value = check_exportable(self.eval(setting.value, dict(params)), setting.value.span)
                    train[setting.name] = _check_setting(setting, plain(value))
                except SpecError as err:
                    self.errors.append(err)
            raise_all(self.errors)
            self.graph.train = train
        return self.graph

    def placed(self, err: SpecError) -> SpecError:
        """Point an error at the user's own text: see `errors.place`."""
        return place(err, reversed(self.calls))

    def loc(self, span: Span) -> ir.Loc:
        """Where an IR record came from, with the motif calls that produced it."""
        return ir.Loc.of(span, tuple(reversed(self.calls)))

    def _pick_network(self, name: str | None) -> S.Motif:
        nets = self.program.networks
        if not nets:
            raise SpecError("no network in this spec", Span(self.path, 1, 1),
                            hint="define one: `network net(T = 4) { ... return readout(y) }`")
        if name is None:
            return nets[-1]
        for net in nets:
            if net.name == name:
                return net
        raise SpecError(f"no network named '{name}'", Span(self.path, 1, 1),
                        hint=did_you_mean(name, [n.name for n in nets]))

    def _override(self, name: str, text) -> Any:
        if isinstance(text, Value):
            return from_python(text.value)
        expr = parse_expr(text, f"--set {name}")
        if isinstance(expr, S.Var) and expr.name not in SYMBOLS:
            return expr.name  # --set family=bn: a bare word is a string
        return self.eval(expr, {})

    # statements
    def exec_block(self, body, scope: dict, path: str) -> None:
        for stmt in body:
            self._tick(stmt.span)
            try:
                self.exec_stmt(stmt, scope, path)
            except _Fatal:
                raise
            except SpecError as err:
                # Independent statements fail independently: report them all, but not
                # the echoes of an earlier failure.
                if not isinstance(err, _Cascade):
                    self.errors.append(self.placed(err))
                if len(self.errors) >= MAX_ERRORS:
                    raise_all(self.errors)
                if isinstance(stmt, (S.Bind, S.PopStmt)):
                    scope[stmt.name] = _Poison()
                elif isinstance(stmt, S.For):
                    scope[stmt.var] = _Poison()

    def exec_stmt(self, stmt, scope: dict, path: str) -> None:
        if isinstance(stmt, S.Bind):
            scope[stmt.name] = self.eval(stmt.value, scope, path, bind=stmt.name)
        elif isinstance(stmt, S.PopStmt):
            scope[stmt.name] = self.population(stmt, scope, path)
        elif isinstance(stmt, S.Projection):
            self.projection(stmt, scope, path)
        elif isinstance(stmt, S.For):
            items = self.eval(stmt.iterable, scope, path)
            if not isinstance(items, (list, tuple)):
                raise SpecError(f"`for` needs a list, got {kind_of(items)}", stmt.iterable.span)
            for item in items:
                scope[stmt.var] = item
                self.exec_block(stmt.body, scope, path)
        elif isinstance(stmt, S.If):
            cond = self.eval(stmt.cond, scope, path)
            if not isinstance(cond, bool):
                raise SpecError(f"`if` needs true or false, got {kind_of(cond)}", stmt.cond.span,
                                hint="compare explicitly, e.g. `if family == \"ei\" { ... }`")
            self.exec_block(stmt.then if cond else stmt.orelse, scope, path)
        elif isinstance(stmt, S.Return):
            raise _Return(self.eval(stmt.value, scope, path), stmt.span)

    def _tick(self, span: Span) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Fatal(f"the spec takes more than {MAX_STEPS:,} elaboration steps (statements and "
                         f"expressions evaluated) to expand", span,
                         hint="check loop bounds and the size of what each iteration computes")

    def _charge(self, steps: int, span: Span) -> None:
        self.steps += steps
        self._tick(span)

    def _make(self, value, span: Span):
        """Charge a new list, dictionary or string to the budget of values made (MAX_MADE)."""
        if isinstance(value, (list, dict, str)):
            if isinstance(value, (list, dict)) and len(value) > MAX_LIST:
                raise SpecError(f"list would have {len(value):,} items (limit {MAX_LIST:,})", span)
            self.made += len(value)
            if self.made > MAX_MADE:
                raise _Fatal(f"the spec makes more than {MAX_MADE:,} list items and string characters in "
                             f"total while expanding", span, hint="check loop bounds and what each iteration keeps")
        return value

    def _node_name(self, path: str, name: str) -> str:
        return f"{path}.{name}" if path else name

    def _add_node(self, name: str, record, span: Span) -> NodeRef:
        if name in self.graph.g:
            first = self.graph.node(name).loc
            raise SpecError(f"population '{name}' is already defined", span,
                            notes=[(first.span(), "first defined here")] if first else [],
                            hint="give it another name; to make one per loop iteration, declare it inside "
                                 "a motif and call the motif in the loop (each call gets its own path)")
        if self.graph.g.number_of_nodes() >= MAX_NODES:
            raise _Fatal(f"the spec expands to more than {MAX_NODES:,} graph nodes", span,
                         hint="check loop bounds; a network this large would not fit in memory anyway")
        self.graph.add_node(name, record)
        self.created.append(name)
        return NodeRef(name)

    # populations and projections
    def population(self, stmt: S.PopStmt, scope: dict, path: str) -> NodeRef:
        call = stmt.call
        if call.func not in POPULATION_MODELS:
            hint = did_you_mean(call.func, POPULATION_MODELS) or "neuron models: " + ", ".join(POPULATION_MODELS)
            if call.func in self.program.motifs:
                hint = f"'{call.func}' is a motif: bind its result instead, `{stmt.name} = {call.func}(...)`"
            raise SpecError(f"'{call.func}' is not a neuron model", call.func_span, hint=hint)
        spans: dict[str, Span] = {}
        args = self.bind_args(call, POPULATION_MODELS[call.func], scope, path, spans=spans)
        size = self.size(args.pop("n"), spans.get("n", call.span))
        sign = {"exc": "exc", "inh": "inh", "pop": "free"}[stmt.sign]
        fields = {"model": call.func, "sign": sign, "size": size}
        for key, value in args.items():
            if key in ("gain", "bias"):
                absent = value is None or (isinstance(value, Sym) and value == "none")   # `gain = none`
                fields[key] = None if absent else self.init_rule(value, spans.get(key, call.span))
            elif key == "norm":
                fields[key] = "none" if value is None else value
            else:
                fields[key] = value
        record = self.record(ir.Population, fields, spans, call.span, stmt.span)
        return self._add_node(self._node_name(path, stmt.name), record, stmt.span)

    def projection(self, stmt: S.Projection, scope: dict, path: str) -> None:
        src = self.as_node(self.resolve_ref(stmt.source, scope), stmt.source.span)
        dst = self.as_node(self.resolve_ref(stmt.target, scope), stmt.target.span)
        target = self.graph.node(dst)
        if not isinstance(target, ir.Population):
            raise SpecError(f"a projection must end on a population, but '{dst}' is {a_kind(target.kind)}",
                            stmt.target.span, hint="project into a population declared with exc, inh or pop")
        if isinstance(self.graph.node(src), ir.Readout):
            raise SpecError(f"'{src}' is a readout, which ends the network; nothing can read from it",
                            stmt.source.span, hint="project from the population the readout reads")
        if stmt.arrow == "-|" and not isinstance(self.graph.node(src), ir.Population):
            raise SpecError(f"inhibition must come from a population, but '{src}' is {a_kind(self.graph.node(src).kind)}",
                            stmt.source.span, hint="inhibit from an `inh` population")
        call = stmt.call
        kinds = PROJECTION_KINDS["->" if stmt.arrow == "->" else "-|"]
        if call.func not in kinds:
            raise SpecError(f"'{call.func}' cannot follow '{stmt.arrow}'", call.func_span,
                            hint=f"'{stmt.arrow}' takes " + " or ".join(f"{k}(...)" for k in kinds))
        spans: dict[str, Span] = {}
        args = self.bind_args(call, kinds[call.func], scope, path, spans=spans)
        kind = KIND_RECORDS[call.func]
        fields = {kind.renames.get(name, name): value for name, value in args.items()}
        for arg, name in kind.renames.items():
            spans[name] = spans.get(arg, call.span)
        fields.update(kind.fixed)
        if "grad_scale" in fields:
            fields["grad_scale"] = grad_factor(fields["grad_scale"], spans.get("grad_scale", call.span))
        fields["init"] = self.init_rule(fields["init"], spans.get("init", call.span))
        cls = kind.record
        record = self.record(cls, fields, spans, call.span, stmt.span)
        if isinstance(record, ir.Inhibition) and not (record.subtractive or record.divisive):
            raise SpecError("this inhibition is neither subtractive nor divisive, so it does nothing", call.span,
                            hint="set sub = true, div = true, or both")
        if self.graph.g.has_edge(src, dst):
            raise SpecError(f"there is already a projection from '{src}' to '{dst}'", stmt.span,
                            notes=[(self.graph.edge(src, dst).loc.span(), "the first one")],
                            hint="merge them into one projection")
        self.graph.add_edge(src, dst, record)

    def record(self, cls, fields: dict, spans: dict[str, Span], span: Span, stmt_span: Span):
        """Build an IR record, checking each argument's type and range here, where it can be located."""
        from pydantic import ValidationError
        for name, value in list(fields.items()):
            fields[name] = check_field(cls, name, value, spans.get(name, span))
        try:
            return cls(**fields, loc=self.loc(stmt_span))
        except ValidationError as exc:   # a field check_field does not know yet
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise SpecError(f"bad value for '{where}': {err['msg']}", span,
                            hint=f"got {err.get('input')!r}") from None

    def init_rule(self, value, span: Span) -> ir.Init:
        if isinstance(value, InitValue):
            return value.init
        if isinstance(value, Formula):
            return ir.Init(rule="constant", value=str(value))
        if isinstance(value, bool):
            raise SpecError("an init rule cannot be true/false", span)
        if isinstance(value, (int, float)):
            return ir.Init(rule="constant", value=float(value))
        if isinstance(value, str) and value in INIT_RULES:
            return ir.Init(rule=value)
        shown = repr(value) if isinstance(value, (str, int, float)) else show(value)
        close = did_you_mean(value, INIT_RULES) if isinstance(value, str) else None
        raise SpecError(f"unknown init rule {shown}", span,
                        hint=close or "rules: " + ", ".join(sorted(INIT_RULES)) +
                        ", uniform(low, high), normal(mean, std), constant(v), or a number")

    def size(self, value, span: Span) -> int:
        text = errors.source_text(span)
        shown = f"`{text}` = " if text and text != show(value) else ""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"a population size must be a number, got {kind_of(value)}", span)
        if isinstance(value, float) and not value.is_integer():
            if isinstance(value, Quotient):
                a, b = value.operands
                raise SpecError(f"population size {show(a)} / {show(b)} = {value:g} is not a whole number: "
                                f"'/' must divide exactly", span,
                                hint=f"choose sizes that {show(b)} divides, or round down with '//'")
            raise SpecError(f"population size {shown}{value:g} is not a whole number", span,
                            hint="sizes count neurons or channels; round down with '//' if that is meant")
        if value <= 0:
            raise SpecError(f"population size {shown}{show(value)} must be at least 1", span)
        return int(value)

    # motif calls and builtins
    def bind_args(self, call: S.Call, signature: dict[str, Any], scope: dict, path: str,
                  ambient: bool = False, spans: dict[str, Span] | None = None) -> dict[str, Any]:
        """Match a call's arguments to a signature (name -> default, REQUIRED for none).
        `spans`, when given, receives where each explicit argument was written."""
        names = list(signature)
        spans = {} if spans is None else spans
        if len(call.args) > len(names):
            raise SpecError(f"{call.func}() takes {len(names)} argument{'s' * (len(names) != 1)}, "
                            f"got {len(call.args)}", call.args[len(names)].span,
                            hint=f"{call.func}({', '.join(names)})")
        # Unknown keywords do not depend on any value (an argument may itself be broken): all of
        # them are reported, before the arguments are evaluated.
        unknown = [SpecError(f"{call.func}() has no argument '{kw.name}'", kw.span,
                             hint=did_you_mean(kw.name, names) or f"arguments: {', '.join(names)}")
                   for kw in call.kwargs if kw.name not in signature]
        if unknown:
            self.errors.extend(self.placed(err) for err in unknown[:-1])
            raise unknown[-1]
        values: dict[str, Any] = {}
        for name, expr in zip(names, call.args):
            values[name] = self.eval(expr, scope, path)
            spans[name] = expr.span
        for kw in call.kwargs:
            if kw.name in values:
                raise SpecError(f"argument '{kw.name}' given twice", kw.span,
                                notes=[(spans[kw.name], "first given here")])
            values[kw.name] = self.eval(kw.value, scope, path)
            spans[kw.name] = kw.value.span
        for name in names:
            if name in values:
                continue
            if ambient and name in self.network_params:
                values[name] = self.network_params[name]
            elif signature[name] is not REQUIRED:
                default = signature[name]
                values[name] = self.eval(default.expr, {**self.network_params, **values}, path) \
                    if isinstance(default, _SyntaxDefault) else default
            else:
                hint = f"{call.func}({', '.join(names)})"
                if ambient:
                    hint += f"; or give the network a parameter named '{name}'"
                raise SpecError(f"{call.func}() is missing argument '{name}'", call.span, hint=hint)
        return values

    def call(self, call: S.Call, scope: dict, path: str, bind: str | None) -> Any:
        if self.graph is None or self.graph.output is not None:
            # Network parameters (and --set values) are computed before the circuit exists, the
            # train block after it is complete: there, calls are plain functions only.
            if call.func in self.program.motifs or call.func in GRAPH_BUILTINS:
                where = "network parameters" if self.graph is None else "the train block"
                raise SpecError(f"'{call.func}' builds part of the circuit, which {where} cannot do", call.span,
                                hint="parameters and training settings are plain values; build layers in the "
                                     "network's body")
        if call.func in self.program.motifs:
            return self.call_motif(self.program.motifs[call.func], call, scope, path, bind)
        if call.func in FUNCTIONS:
            signature, fn = FUNCTIONS[call.func]
            args = self.bind_args(call, signature, scope, path)
            try:
                return self._make(fn(**args), call.span)
            except Misuse as exc:
                raise SpecError(f"{call.func}() {exc}", call.span) from None
            except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
                raise SpecError(f"{call.func}(): {exc}", call.span) from None
        if call.func in GRAPH_BUILTINS:
            return GRAPH_BUILTINS[call.func](self, call, scope, path)
        if call.func in POPULATION_MODELS:
            raise SpecError(f"'{call.func}' makes a population: declare it with a sign", call.span,
                            hint=f"`exc E = {call.func}(...)`, `inh I = ...` or sign-free `pop P = ...`")
        if call.func in PROJECTION_KINDS["->"] or call.func in PROJECTION_KINDS["-|"]:
            raise SpecError(f"'{call.func}' describes a projection", call.span,
                            hint=f"use it after an arrow: `x -> E : {call.func}(...)`")
        networks = {n.name for n in self.program.networks} | set(self.program.imported_networks)
        if call.func in networks:
            raise SpecError(f"'{call.func}' is a network, and networks cannot be called", call.func_span,
                            hint="turn the reusable part into a `motif` and call that from both")
        known = [*self.program.motifs, *FUNCTIONS, *GRAPH_BUILTINS]
        raise SpecError(f"unknown motif or function '{call.func}'", call.func_span,
                        hint=did_you_mean(call.func, known) or "is an `import` missing?")

    def call_motif(self, motif: S.Motif, call: S.Call, scope: dict, path: str, bind: str | None) -> Instance:
        signature = {p.name: (_SyntaxDefault(p.default) if p.default is not None else REQUIRED)
                     for p in motif.params}
        args = self.bind_args(call, signature, scope, path, ambient=True)
        if motif.name in self.motifs_open:
            # Caught at the first repeated call, while the chain is short enough to read.
            first = self.motifs_open.index(motif.name)
            chain = " -> ".join([*self.motifs_open[first:], motif.name])
            raise SpecError(f"motif '{motif.name}' calls itself: {chain}", call.span,
                            hint="a motif cannot call itself, directly or through others; repeat layers "
                                 "with a `for` loop instead")
        if self.depth >= MAX_DEPTH:
            raise SpecError(f"motifs nest deeper than {MAX_DEPTH} (is '{motif.name}' recursive?)", call.span,
                            hint="a motif cannot call itself, directly or through others")
        key = (path, motif.name)
        self.counters[key] = self.counters.get(key, 0) + 1
        inst_path = self._node_name(path, f"{motif.name}_{self.counters[key]}")
        inst = Instance(motif.name, inst_path, dict(args))
        errors_before = len(self.errors)
        first_node = len(self.created)
        self.depth += 1
        self.calls.append(call.span)
        self.motifs_open.append(motif.name)
        try:
            self.exec_block(motif.body, inst.scope, inst_path)
        except _Return as r:
            inst.result = r.value
        except RecursionError:
            if self.overflow_at is None:
                self.overflow_at = list(self.calls)
            raise
        finally:
            self.depth -= 1
            self.calls.pop()
            self.motifs_open.pop()
        if len(self.errors) > errors_before:
            # Its own errors are reported; whatever uses this instance would only echo them.
            raise _Cascade(f"motif '{motif.name}' failed", call.span)
        self._collapse(inst_path, first_node)
        return inst

    def _collapse(self, path: str, first_node: int) -> None:
        """A motif that only wraps one other (std's `layer` choosing `ei_layer`) adds no name level:
        `layer_1.ei_layer_1.E` becomes `layer_1.E`. Only the nodes this call made are looked at
        (`created` from `first_node` on, under their current names): scanning the whole graph
        made N motif calls cost N² (25 minutes for a loop of calls)."""
        prefix = path + "."
        own = [n for n in (self.resolve(m) for m in self.created[first_node:]) if n.startswith(prefix)]
        rests = [n[len(prefix):] for n in own]
        children = {r.split(".", 1)[0] for r in rests}
        if len(children) != 1 or not all("." in r for r in rests):
            return
        mapping = {n: prefix + r.split(".", 1)[1] for n, r in zip(own, rests)}
        import networkx as nx   # at use: see eidsl/ir.py
        nx.relabel_nodes(self.graph.g, mapping, copy=False)
        self.renames.update(mapping)

    def resolve(self, name: str) -> str:
        while name in self.renames:
            name = self.renames[name]
        return name

    # names and values
    def resolve_ref(self, ref: S.Ref, scope: dict):
        value = self.lookup(ref.parts[0], scope, ref.span)
        for part in ref.parts[1:]:
            value = self.attribute(value, part, ref.span)
        return value

    def lookup(self, name: str, scope: dict, span: Span):
        if name in scope:
            value = scope[name]
        elif name in self.network_params:
            value = self.network_params[name]
        elif name in SYMBOLS:
            return Sym(name)
        elif name in NAMED_VALUES:
            return NAMED_VALUES[name]
        else:
            hint = did_you_mean(name, [*scope, *self.network_params, *SYMBOLS, *NAMED_VALUES])
            raise SpecError(f"unknown name '{name}'", span, hint=hint)
        if isinstance(value, _Poison):
            raise _Cascade(f"'{name}' could not be defined", span)
        return value

    def attribute(self, value, name: str, span: Span):
        if isinstance(value, Instance):
            if name not in value.scope:
                raise SpecError(f"motif instance '{value.path}' has no '{name}'", span,
                                hint=did_you_mean(name, value.scope))
            return value.scope[name]
        if isinstance(value, NodeRef) and name in ("n", "size"):
            rec = self.graph.node(self.resolve(value.name))
            if not isinstance(rec, ir.Population):      # shapes of inputs, pools, sums come later
                raise SpecError(f"the {rec.kind} '{value.name}' has no size '{name}': only populations do", span)
            return rec.size
        raise SpecError(f"{kind_of(value)} has no attribute '{name}'", span)

    def as_node(self, value, span: Span) -> str:
        if isinstance(value, Instance):
            if value.result is None:
                raise SpecError(f"motif '{value.motif}' returns nothing, so it cannot be used as a layer",
                                span, hint="end the motif with `return E`")
            return self.as_node(value.result, span)
        if isinstance(value, NodeRef):
            return self.resolve(value.name)
        raise SpecError(f"expected a population or layer, got {kind_of(value)}", span)

    def eval(self, expr, scope: dict, path: str = "", bind: str | None = None) -> Any:
        self._tick(expr.span)
        if isinstance(expr, (S.Num, S.Str, S.Bool)):
            return expr.value
        if isinstance(expr, S.Var):
            return self.lookup(expr.name, scope, expr.span)
        if isinstance(expr, S.ListExpr):
            return self._make([self.eval(e, scope, path) for e in expr.items], expr.span)
        if isinstance(expr, S.DictExpr):
            out = _Dict()
            for k, v in expr.pairs:
                key = self.eval(k, scope, path)
                if not isinstance(key, (int, float, str, bool)):
                    raise SpecError(f"a dictionary key must be a number or string, got {kind_of(key)}", k.span)
                if is_number(key) or isinstance(key, bool):
                    kind = "truth" if isinstance(key, bool) else "number"
                    if out.numeric_keys not in (None, kind):
                        # Python would merge true with 1; the language keeps truth values apart from numbers.
                        raise SpecError(f"a dictionary cannot mix true/false keys with number keys ({show(key)} here)",
                                        k.span, hint="true/false are not the numbers 1 and 0")
                    out.numeric_keys = kind
                out[key] = self.eval(v, scope, path)
            return self._make(out, expr.span)
        if isinstance(expr, S.Call):
            return self.call(expr, scope, path, bind)
        if isinstance(expr, S.Attr):
            return self.attribute(self.eval(expr.target, scope, path), expr.name, expr.span)
        if isinstance(expr, S.Index):
            return self.index(expr, scope, path)
        if isinstance(expr, S.UnaryOp):
            value = self.eval(expr.operand, scope, path)
            if expr.op == "not":
                if not isinstance(value, bool):
                    raise SpecError(f"`not` needs true or false, got {kind_of(value)}", expr.span)
                return not value
            if isinstance(value, Formula):
                return Formula(f"(-{value})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"cannot negate {kind_of(value)}", expr.span)
            return -value
        if isinstance(expr, S.BinOp):
            return self.binop(expr, scope, path)
        raise SpecError("unsupported expression", getattr(expr, "span", None))

    def index(self, expr: S.Index, scope: dict, path: str):
        target = self.eval(expr.target, scope, path)
        key = self.eval(expr.index, scope, path)
        if isinstance(target, dict):
            # `{true: a}[1]`: Python finds True under 1; truth values are not numbers here.
            if not isinstance(key, (int, float, str)) or key not in target or \
                    (isinstance(key, bool) or is_number(key)) and _numeric_keys(target) != \
                    ("truth" if isinstance(key, bool) else "number"):
                options = ", ".join(map(show, list(target)[:12])) + (", ..." if len(target) > 12 else "")
                what = f"{expr.index.name} = {show(key)}" if isinstance(expr.index, S.Var) else show(key)
                raise SpecError(f"{what} is not one of {options}", expr.index.span,
                                hint=f"choose one of {options}")
            return target[key]
        if isinstance(target, list):
            if isinstance(key, bool) or not isinstance(key, int):
                raise SpecError(f"a list index must be a whole number, got {kind_of(key)}", expr.index.span)
            if not -len(target) <= key < len(target):
                raise SpecError(f"index {key} is out of range for a list of {len(target)}", expr.index.span)
            return target[key]
        raise SpecError(f"cannot index {kind_of(target)}", expr.span)

    def binop(self, expr: S.BinOp, scope: dict, path: str):
        op = expr.op
        if op in ("and", "or"):
            left = self.eval(expr.left, scope, path)
            if not isinstance(left, bool):
                raise SpecError(f"`{op}` needs true or false, got {kind_of(left)}", expr.left.span)
            if (op == "and" and not left) or (op == "or" and left):
                return left
            right = self.eval(expr.right, scope, path)
            if not isinstance(right, bool):
                raise SpecError(f"`{op}` needs true or false, got {kind_of(right)}", expr.right.span)
            return right
        left = self.eval(expr.left, scope, path)
        right = self.eval(expr.right, scope, path)
        if op == "+" and is_node(left) and is_node(right):
            return self.spike_sum([left, right], expr, path)
        if op in ("==", "!="):
            # Comparing lists walks them: charge the walk, or a loop of `l == l` on long lists
            # would cost steps times items.
            self._charge(min(count_items(left), count_items(right)), expr.span)
            same = isinstance(left, bool) == isinstance(right, bool) and left == right
            return same if op == "==" else not same
        if op in ("<", "<=", ">", ">="):
            if not (is_number(left) and is_number(right)):
                raise SpecError(f"cannot compare {kind_of(left)} with {kind_of(right)}", expr.span)
            return COMPARE[op](left, right)
        if isinstance(left, Formula) or isinstance(right, Formula):
            return formula_op(op, left, right, expr)
        if isinstance(left, list) and op == "+" and isinstance(right, list):
            return self._make(self._bounded_list(left + right, expr.span), expr.span)
        if isinstance(left, list) and op == "*" and is_int(right):
            # The count is checked on its own too: `[] * 2**63` is empty but Python cannot repeat it.
            if len(left) * max(right, 0) > MAX_LIST or right > MAX_LIST:
                raise SpecError(f"list would have {len(left) * right:,} items, or is repeated {right:,} times "
                                f"(limit {MAX_LIST:,})", expr.span)
            return self._make(left * right, expr.span)
        if isinstance(left, str) and op == "+" and isinstance(right, str):
            if len(left) + len(right) > MAX_STRING:
                raise SpecError(f"string would have {len(left) + len(right):,} characters (limit {MAX_STRING:,})",
                                expr.span)
            return self._make(left + right, expr.span)
        if not (is_number(left) and is_number(right)):
            raise SpecError(f"cannot apply '{op}' to {kind_of(left)} and {kind_of(right)}", expr.span,
                            hint=op_hint(op, left, right))
        try:
            value = arith(op, left, right)
        except ZeroDivisionError:
            hint = f"'{expr.right.name}' is 0 here" if isinstance(expr.right, S.Var) else None
            raise SpecError("division by zero", expr.right.span, hint=hint) from None
        except OverflowError:
            raise SpecError("number too large", expr.span) from None
        if isinstance(value, complex):
            raise SpecError(f"{show(left)} {op} {show(right)} is not a real number", expr.span)
        if isinstance(value, float) and not math.isfinite(value) and math.isfinite(left) and math.isfinite(right):
            raise SpecError("number too large", expr.span, hint="the result overflows a 64-bit float")
        if is_int(value) and abs(value) > MAX_INT:
            raise SpecError("number too large", expr.span, hint=f"whole numbers are limited to {MAX_INT:,}")
        return value

    def _bounded_list(self, items: list, span: Span) -> list:
        if len(items) > MAX_LIST:
            raise SpecError(f"list would have {len(items):,} items (limit {MAX_LIST:,})", span)
        return items

    def spike_sum(self, values: list, expr, path: str) -> NodeRef:
        names = [self.as_node(v, expr.span) for v in values]
        if len(set(names)) != len(names):
            raise SpecError("a residual sum adds a layer to itself", expr.span,
                            hint="sum two different layers")
        for name in names:
            self._readable(name, expr.span)
        key = (path, "sum")
        self.counters[key] = self.counters.get(key, 0) + 1
        node = self._add_node(self._node_name(path, f"sum_{self.counters[key]}"), ir.Sum(loc=self.loc(expr.span)),
                              expr.span)
        for port, name in enumerate(names):
            self.graph.add_edge(name, node.name, ir.Flow(port=port, loc=self.loc(expr.span)))
        return node

    def unary_node(self, kind: str, record, source, call: S.Call, path: str) -> NodeRef:
        src = self.as_node(source, call.args[0].span if call.args else call.span)
        self._readable(src, call.span)
        key = (path, kind)
        self.counters[key] = self.counters.get(key, 0) + 1
        node = self._add_node(self._node_name(path, f"{kind}_{self.counters[key]}"), record, call.span)
        self.graph.add_edge(src, node.name, ir.Flow(loc=record.loc))
        return node

    def _readable(self, name: str, span: Span) -> None:
        if isinstance(self.graph.node(name), ir.Readout):
            raise SpecError(f"'{name}' is a readout, which ends the network; nothing can read from it", span,
                            hint="use the population the readout reads")


def _check_setting(setting: S.Setting, value):
    """A train block's setting, validated as `eidsl train` will (config.TrainConfig), so that
    `epochs = -1` fails `check` at its line rather than `train` later without one."""
    from eidsl.lang.settings import FIELDS, setting_error
    if setting.name not in FIELDS:
        raise SpecError(f"unknown training setting '{setting.name}'", setting.span,
                        hint=did_you_mean(setting.name, FIELDS) or "settings: " + ", ".join(FIELDS))
    why = setting_error(setting.name, value)
    if why is not None:
        raise SpecError(f"training setting {setting.name} = {show(value)}: {why}", setting.value.span)
    return value


class _Dict(dict):
    """A dictionary made by a spec, knowing whether its number-like keys are truth values or
    numbers (never both), so a look-up can tell `true` from 1 in constant time."""
    numeric_keys: str | None = None


def _numeric_keys(d: dict) -> str | None:
    if isinstance(d, _Dict):
        return d.numeric_keys
    kinds = {"truth" if isinstance(k, bool) else "number" for k in d if isinstance(k, (int, float))}
    return kinds.pop() if len(kinds) == 1 else None


class _Cascade(SpecError):
    """An error caused by an earlier one; it stops the statement without being reported."""


class _Fatal(SpecError):
    """A limit on the expansion: reported at once, elaboration stops."""


class _Poison:
    """Stands for a name whose definition failed, so one error does not cascade."""


@dataclass(frozen=True)
class _SyntaxDefault:
    expr: Any


