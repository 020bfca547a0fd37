"""The graph IR: a networkx DiGraph whose nodes and edges are typed records.

One record type per concept (populations, projections, inhibition, pools...), in the
spirit of NIR. Nodes are keyed by their hierarchical path (``ei_conv_2.E``); every
record keeps the span of spec text that produced it, so any later stage can point
back at the spec. Lowering to PyTorch lives in ``compiler/``, never here.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from eidsl.errors import Span, SpecError

if TYPE_CHECKING:
    import networkx as nx
# networkx is imported where a graph is made, not here: importing it costs ~0.2 s, half of
# `import eidsl` (tests/test_startup.py).

Sign = Literal["exc", "inh", "free"]
Shape = tuple[int, ...]


class Loc(BaseModel):
    """Where in the spec text a record came from."""
    model_config = ConfigDict(frozen=True)
    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0
    via: tuple["Loc", ...] = ()       # the motif calls that produced it, innermost first

    @classmethod
    def of(cls, span: Span | None, via: tuple[Span, ...] = ()) -> "Loc | None":
        if span is None:
            return None
        return cls(**span.to_json(), via=tuple(cls(**s.to_json()) for s in via))

    def span(self) -> Span:
        return Span(self.file, self.line, self.column, self.end_line, self.end_column,
                    tuple(loc.span() for loc in self.via))


DATA_DEPENDENT = ("ei_balanced", "gain_control", "unit_std", "zero_mean")   # set from the first batch


class Init(BaseModel):
    """An initialisation rule for one parameter tensor.

    ``ei_balanced`` and ``gain_control`` are the paper's data-dependent E-I Init
    (docs/science.md §2.2, "Eq. 53" and "Eq. 54"). ``unit_std`` (a gain g_E) and ``zero_mean`` (a bias
    b_E) are data-dependent too: on the first batch, per neuron (per channel for a conv),
    g_E <- g_E / std(I_int) and b_E <- b_E - mean(I_int), so every neuron starts where BatchNorm
    would put it (mean 0, std 1) and keeps its own offset afterwards. The others are data-free.
    """
    model_config = ConfigDict(frozen=True)
    rule: Literal["ei_balanced", "gain_control", "unit_std", "zero_mean", "constant", "default", "abs_default",
                  "kaiming", "uniform", "normal", "zeros", "ones", "exponential", "mean_of"]
    # Numbers may be formulas (text over fan_in, n_E, n_I; see `eval_formula`), resolved per
    # parameter when the network is lowered, where the circuit's sizes are known.
    value: float | str | None = None      # constant
    low: float | str | None = None        # uniform
    high: float | str | None = None
    mean: float | str | None = None       # normal
    std: float | str | None = None
    scale: float | str | None = None      # exponential: mean (= std) of the distribution
    ref: str | None = None                # mean_of: the population whose weight from the same source is copied
    # How the parameter lives and learns (the `param(...)` wrapper of the language):
    transform: Literal["none", "exp"] = "none"   # the circuit uses exp(stored value), e.g. g_I = exp(alpha)
    grad: float | str = 1.0                      # gradient scale factor (a number or a formula)
    clamp: Literal["dale", "nonneg", "none"] = "dale"   # projection after each step: Dale's rule, >= 0, none
    decay: float = 1.0                           # factor on the training's weight decay (0: none)

    @property
    def data_dependent(self) -> bool:
        return self.rule in DATA_DEPENDENT


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    loc: Loc | None = None


class Input(_Record):
    """The network's input x[t]: a static image shown at every t = 1..T (x[t] = x, direct encoding),
    or event frames already over T."""
    kind: Literal["input"] = "input"
    shape: Shape                      # per sample, without T
    encoding: Literal["static", "events"] = "static"
    T: int
    sign: Sign = "exc"               # pixel intensities and event counts are non-negative


class Population(_Record):
    """A group of neurons and the current they integrate (docs/science.md §1.2):

        I_int = g_E ⊙ (I_EE − I_sub) / stabilise(I_div) + b_E       (I_sub, I_div from its Inhibition edges)
        lif:     v[t] = v[t−1] (1 − 1/τ) + I_int[t],  s[t] = H(v[t] − θ),  v[t] ← v[t] − θ s[t] (soft reset)
        relu:    s = max(0, I_int)      (the paper's fast-spiking interneurons, s_I = ReLU(W_IE x))
        current: s = I_int              (readouts; with inhibition, the output layer's I_EE − W_EI s_I)

    An inhibitory population's `gain` is g_I, which scales its divisive effect on its targets."""
    kind: Literal["population"] = "population"
    model: Literal["lif", "relu", "current", "linear"]
    sign: Sign
    size: int                         # neurons (dense) or channels (conv)
    tau: float = 2.0
    theta: float = 1.0
    reset: Literal["soft", "hard"] = "soft"
    v_reset: float = 0.0
    detach_reset: bool = True
    surrogate: Literal["sigmoid", "atan", "triangle", "rectangle"] = "sigmoid"
    alpha: float = 4.0
    norm: Literal["none", "batchnorm"] = "none"
    gain: Init | None = None          # g_E scales an E population's own current; an I population's
                                      # gain is g_I, which scales its divisive effect on its targets
    bias: Init | None = None          # b_E
    dale: bool = True                 # clamp this population's sign-constrained parameters
    shape: Shape | None = None        # inferred: (size,) or (size, H, W)


class Pool(_Record):
    """Average pooling: y = mean of x over k × k windows with the given stride, or over every
    position (`global_pool`)."""
    kind: Literal["pool"] = "pool"
    op: Literal["avg", "max"] = "avg"
    kernel: int = 2
    stride: int = 2
    global_pool: bool = False
    shape: Shape | None = None


class Flatten(_Record):
    """(C, H, W) → C·H·W features, per time step."""
    kind: Literal["flatten"] = "flatten"
    shape: Shape | None = None


class Sum(_Record):
    """Spike-sum residual (SEW ResNet): y[t] = Σ_k x_k[t], the element-wise sum of its inputs."""
    kind: Literal["sum"] = "sum"
    shape: Shape | None = None


class Readout(_Record):
    """The network's output: logits = (1/T) Σ_t x[t], the mean over T of its input current."""
    kind: Literal["readout"] = "readout"
    mode: Literal["mean"] = "mean"
    shape: Shape | None = None


Node = Annotated[Union[Input, Population, Pool, Flatten, Sum, Readout], Field(discriminator="kind")]


class Projection(_Record):
    """A weighted excitatory (``->``) projection, I_PE = W x (dense) or W ∗ x (convolution, kernel,
    stride, padding): W_EE into an E population, W_IE into an I population (docs/science.md §1.2
    item 1). `delay` reads x[t − delay]; `nonneg` keeps W ≥ 0 (Dale's law)."""
    kind: Literal["projection"] = "projection"
    op: Literal["dense", "conv"]
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    bias: bool = False
    init: Init = Init(rule="default")
    delay: int = 0
    nonneg: bool = False              # set by the sign pass: Dale's law on this weight
    fan_in: int | None = None         # inferred: d of docs/science.md §1.1


class Inhibition(_Record):
    """I -| E: subtractive and/or divisive inhibition through W_EI (docs/science.md §1.2 items 3-5):

        I_sub = W_EI s_I,   I_div = W_EI (g_I ⊙ s_I),   into  g_E ⊙ (I_EE − I_sub) / stabilise(I_div) + b_E

    `stabilize`: min_positive (zeros → the smallest positive entry of the sample; with `ste`, an
    identity gradient: E-I Prop, §3) or I_div + ε. `grad_scale`: W_EI's gradient × 1/d (§3) when
    true, or × a number or formula (DANN's cSGD, §9.5)."""
    kind: Literal["inhibition"] = "inhibition"
    subtractive: bool = True
    divisive: bool = True
    shared: bool = True               # one W_EI for both paths, or two
    init: Init = Init(rule="constant", value=0.0)
    stabilize: Literal["min_positive", "epsilon", "none"] = "min_positive"
    epsilon: float = 1e-8
    ste: bool = True
    grad_scale: bool | float | str = True   # W_EI gradient factor: true = 1/d, false = 1, or a formula
    delay: int = 0
    nonneg: bool = False
    fan_in: int | None = None         # d used for the gradient scale


# ---------------------------------------------------------------- formulas
# Init values and gradient factors may depend on the circuit's sizes, which are known only after
# shape inference. The spec writes them as expressions over these names; elaboration keeps them as
# text and lowering evaluates them per parameter.
FORMULA_VARS = ("fan_in", "n_E", "n_I")
_FORMULA_FUNCS = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp}


def eval_formula(text: float | str, env: dict[str, float]) -> float:
    """Evaluate a formula (numbers, + - * / **, sqrt/log/exp, the FORMULA_VARS) with `env`."""
    if not isinstance(text, str):
        return float(text)
    import ast

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"'{node.id}' is not defined for this parameter "
                                 f"(known here: {', '.join(sorted(env)) or 'none'})")
            return float(env[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FORMULA_FUNCS \
                and len(node.args) == 1 and not node.keywords:
            return _FORMULA_FUNCS[node.func.id](ev(node.args[0]))
        raise ValueError(f"not a formula: {text!r}")

    value = ev(ast.parse(text, mode="eval"))
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"{text} is not a finite real number here")
    return value


class Flow(_Record):
    """Unweighted data flow into pools, flatten, sums and the readout: y = x."""
    kind: Literal["flow"] = "flow"
    port: int = 0


Edge = Annotated[Union[Projection, Inhibition, Flow], Field(discriminator="kind")]

_node_adapter = TypeAdapter(Node)
_edge_adapter = TypeAdapter(Edge)


class Graph:
    """A network: the DiGraph plus its name, resolved parameters and training settings."""

    def __init__(self, name: str, params: dict[str, Any] | None = None,
                 train: dict[str, Any] | None = None, output: str | None = None,
                 loc: Loc | None = None):
        self.name = name
        self.params = dict(params or {})
        self.train = dict(train or {})
        self.output = output
        self.loc = loc
        import networkx
        self.g = networkx.DiGraph()

    # building
    def add_node(self, name: str, record) -> None:
        self.g.add_node(name, rec=record)

    def add_edge(self, src: str, dst: str, record) -> None:
        self.g.add_edge(src, dst, rec=record)

    def node(self, name: str):
        return self.g.nodes[name]["rec"]

    def edge(self, src: str, dst: str):
        return self.g.edges[src, dst]["rec"]

    def replace_node(self, name: str, **changes) -> None:
        self.g.nodes[name]["rec"] = self.node(name).model_copy(update=changes)

    def replace_edge(self, src: str, dst: str, **changes) -> None:
        self.g.edges[src, dst]["rec"] = self.edge(src, dst).model_copy(update=changes)

    def nodes(self, kind: type | None = None):
        for name, data in self.g.nodes(data=True):
            if kind is None or isinstance(data["rec"], kind):
                yield name, data["rec"]

    def edges(self, kind: type | None = None):
        for src, dst, data in self.g.edges(data=True):
            if kind is None or isinstance(data["rec"], kind):
                yield src, dst, data["rec"]

    def in_edges(self, name: str, kind: type | None = None):
        for src, _, data in self.g.in_edges(name, data=True):
            if kind is None or isinstance(data["rec"], kind):
                yield src, data["rec"]

    def out_edges(self, name: str, kind: type | None = None):
        for _, dst, data in self.g.out_edges(name, data=True):
            if kind is None or isinstance(data["rec"], kind):
                yield dst, data["rec"]

    @property
    def input_name(self) -> str:
        return next(name for name, _ in self.nodes(Input))

    # serialisation
    def to_json(self) -> dict:
        return {
            "format": "eidsl-ir/1",
            "name": self.name,
            "params": self.params,
            "train": self.train,
            "output": self.output,
            "loc": self.loc.model_dump() if self.loc else None,
            "nodes": [{"id": n, **r.model_dump(mode="json")} for n, r in self.nodes()],
            "edges": [{"source": s, "target": t, **r.model_dump(mode="json")} for s, t, r in self.edges()],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def from_json(cls, data: dict) -> "Graph":
        if data.get("format") != "eidsl-ir/1":
            raise ValueError(f"not an eidsl IR document (format {data.get('format')!r})")
        g = cls(data["name"], data["params"], data["train"], data["output"],
                Loc(**data["loc"]) if data.get("loc") else None)
        for item in data["nodes"]:
            item = dict(item)
            name = item.pop("id")
            g.add_node(name, _node_adapter.validate_python(item))
        for item in data["edges"]:
            item = dict(item)
            src, dst = item.pop("source"), item.pop("target")
            g.add_edge(src, dst, _edge_adapter.validate_python(item))
        return g

    @classmethod
    def loads(cls, text: str) -> "Graph":
        return cls.from_json(json.loads(text))

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and self.to_json() == other.to_json()


# ---------------------------------------------------------------- queries every stage asks

def instantaneous(graph: Graph) -> nx.DiGraph:
    """The graph without edges that carry a time delay: what one time step computes."""
    import networkx as nx
    g = nx.DiGraph()
    g.add_nodes_from(graph.g.nodes)
    for src, dst, rec in graph.edges():
        if getattr(rec, "delay", 0) == 0:
            g.add_edge(src, dst)
    return g


def time_order(graph: Graph) -> list[str]:
    import networkx as nx
    g = instantaneous(graph)
    try:
        return list(nx.lexicographical_topological_sort(g, key=_creation_index(graph)))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        names = [a for a, _ in cycle] + [cycle[0][0]]
        first = graph.edge(*cycle[0])
        raise SpecError("cycle without a time delay: " + " -> ".join(names), first.loc.span() if first.loc else None,
                        hint="give one projection in the loop `delay = 1` (it then reads the previous time step)") \
            from None


def _creation_index(graph: Graph):
    index = {name: i for i, name in enumerate(graph.g.nodes)}
    return lambda name: f"{index[name]:09d}"


def node_sign(graph: Graph, name: str, memo: dict[str, str] | None = None) -> str:
    """Declared for populations and the input; pools, flattens and sums carry their inputs' sign
    (when those all agree, else they are sign-free). `memo` keeps the signs found between calls:
    without it, projections from every node of a long chain of pools walked the chain each time."""
    memo = {} if memo is None else memo
    stack, opened = [name], set()
    while stack:   # iterative: a chain of thousands of pools must not exhaust the stack
        node = stack[-1]
        if node in memo:
            stack.pop()
            continue
        rec = graph.node(node)
        if isinstance(rec, (Population, Input)):
            memo[node] = rec.sign
            stack.pop()
            continue
        # Flow edges only point back at nodes made before, so this walk has no cycle; `opened`
        # makes sure of it all the same.
        sources = [src for src, _ in graph.in_edges(node)]
        todo = [src for src in sources if src not in memo and src not in opened]
        if todo and node not in opened:
            opened.add(node)
            stack.extend(todo)
            continue
        signs = {memo[src] for src in sources if src in memo}
        memo[node] = signs.pop() if len(signs) == 1 else "free"
        stack.pop()
    return memo[name]
