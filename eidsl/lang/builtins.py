"""The language's vocabulary: every built-in word a spec can use, in one place.

- population models (`lif`, `relu`, `current`, `linear`) and their arguments with defaults,
- projection kinds per arrow (`->`: `dense`, `conv`; `-|`: `inhibit`) and their arguments,
- init rules (`ei_balanced`, `gain_control`, ..., and the `uniform`/`normal`/`constant` functions),
- functions over values (`min`, `sqrt`, `range`, ...) and formulas over the circuit's sizes
  (`fan_in`, `n_E`, `n_I` with `sqrt`, `log`, `exp`: the "rules" block),
- parameter forms (`param(init, transform, grad, clamp)`),
- graph builders (`image`, `events`, `avgpool`, `flatten`, `readout`, `add`, ...).

The interpreter (elaborate.py) looks words up here and never names one itself; adding a word is an
entry here plus, where it computes something new, its IR field and its lowering in the compiler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, get_args, get_origin

from eidsl import ir
from eidsl.errors import SpecError, Span, did_you_mean
from eidsl.lang import syntax as S
from eidsl.limits import MAX_INPUT_RANK
from eidsl.lang.values import (MAX_LIST, REQUIRED, Formula, InitValue, NodeRef, Sym, is_int, is_number, kind_of,
                               show)

if TYPE_CHECKING:
    from eidsl.lang.elaborate import Elaborator

# Bare words a spec may use as values: rule and option names.
SYMBOLS = {
    "ei_balanced", "gain_control", "unit_std", "zero_mean", "default", "abs_default", "kaiming", "zeros", "ones",
    "sigmoid", "atan", "triangle", "rectangle", "soft", "hard", "batchnorm", "none",
    "min_positive", "epsilon", "static", "events", "exc", "inh", "free",
    "exp", "nonneg",   # rules section: param(transform = exp, clamp = nonneg)
}


def from_python(v):
    """A Python value given to `eidsl.build(...)` as the value a spec would have written."""
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return [from_python(x) for x in v]
    if isinstance(v, str) and v in SYMBOLS:
        return Sym(v)
    return v


def callable_words() -> set[str]:
    """Every name a spec may call: graph builders, population models, projection kinds, functions."""
    names = set(GRAPH_BUILTINS) | set(POPULATION_MODELS) | set(FUNCTIONS)
    for kinds in PROJECTION_KINDS.values():
        names |= set(kinds)
    return names


INIT_RULES = {"ei_balanced", "gain_control", "unit_std", "zero_mean", "default", "abs_default", "kaiming", "zeros", "ones"}

_NEURON = {"tau": 2.0, "theta": 1.0, "reset": "soft", "v_reset": 0.0, "detach_reset": True,
           "surrogate": "sigmoid", "alpha": 4.0}
POPULATION_MODELS: dict[str, dict[str, Any]] = {
    "lif": {"n": REQUIRED, **_NEURON, "norm": None, "gain": None, "bias": None, "dale": True},
    "relu": {"n": REQUIRED, "norm": None, "gain": None, "bias": None, "dale": True},
    "linear": {"n": REQUIRED, "norm": None, "gain": None, "bias": None, "dale": True},   # [rules]
    "current": {"n": REQUIRED, "norm": None, "gain": None, "bias": None, "dale": True},
}

PROJECTION_KINDS: dict[str, dict[str, dict[str, Any]]] = {
    "->": {
        "dense": {"init": "default", "bias": False, "delay": 0},
        "conv": {"k": 3, "stride": 1, "pad": 1, "init": "default", "bias": False, "delay": 0},
    },
    "-|": {
        "inhibit": {"sub": True, "div": True, "shared": True, "init": 0.0, "stabilize": "min_positive",
                    "epsilon": 1e-8, "ste": True, "grad_scale": True, "delay": 0},
        "shunt": {"sigma": 1.0, "init": 0.0, "grad_scale": True, "delay": 0},
    },
}


@dataclass(frozen=True)
class KindRecord:
    """How a projection kind's arguments become its IR record: the record type, the arguments
    whose IR field has another name, and the fields the kind itself fixes."""
    record: type
    renames: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


KIND_RECORDS: dict[str, KindRecord] = {
    "dense": KindRecord(ir.Projection, fixed={"op": "dense"}),
    "conv": KindRecord(ir.Projection, {"k": "kernel", "pad": "padding"}, {"op": "conv"}),
    "inhibit": KindRecord(ir.Inhibition, {"sub": "subtractive", "div": "divisive"}),
    # Divisive normalisation with a semi-saturation constant (Carandini & Heeger 2012): the divisor
    # sigma + W_EI (g_I s_I) never reaches 0, so it needs no stabiliser of its own.
    "shunt": KindRecord(ir.Inhibition, {"sigma": "epsilon"},
                        {"subtractive": False, "divisive": True, "stabilize": "epsilon"}),
}


class Misuse(Exception):
    """A builtin function called with values it does not accept; the message follows `name()`."""


def _num(name: str) -> Callable:
    def check(v):
        if not is_number(v):
            raise Misuse(f"needs a number, got {kind_of(v)}")
        return v
    return check


def _range(start, stop=None, step=1):
    if stop is None:
        start, stop = 0, start
    for v in (start, stop, step):
        if not is_int(v):
            raise Misuse(f"needs whole numbers, got {kind_of(v)}")
    if step == 0:
        raise Misuse("needs a step other than zero")
    if len(range(start, stop, step)) > MAX_LIST:
        raise Misuse(f"would make more than {MAX_LIST:,} items")
    return list(range(start, stop, step))


def _len(x):
    if not isinstance(x, (list, dict, str)):
        raise Misuse(f"needs a list, dictionary or string, got {kind_of(x)}")
    return len(x)


def _whole_of(name: str, fn: Callable) -> Callable:
    def convert(x):
        x = _num(name)(x)
        if isinstance(x, float) and not math.isfinite(x):
            raise Misuse(f"needs a finite number, got {x}")
        return fn(x)
    return convert


def _sqrt(x):
    if isinstance(x, Formula):
        return Formula(f"sqrt({x})")
    if _num("sqrt")(x) < 0:
        raise Misuse(f"needs a number >= 0, got {show(x)}")
    return math.sqrt(x)


def _finite(name: str, v) -> float:
    v = _num(name)(v)
    if not math.isfinite(v):
        raise Misuse(f"needs finite numbers, got {v}")
    return float(v)


def _uniform(low, high):
    if isinstance(low, Formula) or isinstance(high, Formula):   # checked once the sizes are known
        return InitValue(ir.Init(rule="uniform", low=_deferred("uniform", low), high=_deferred("uniform", high)))
    low, high = _finite("uniform", low), _finite("uniform", high)
    if not low < high:
        raise Misuse(f"needs low < high, got low {low:g} and high {high:g}")
    return InitValue(ir.Init(rule="uniform", low=low, high=high))


def _normal(mean, std):
    if isinstance(mean, Formula) or isinstance(std, Formula):
        return InitValue(ir.Init(rule="normal", mean=_deferred("normal", mean), std=_deferred("normal", std)))
    mean, std = _finite("normal", mean), _finite("normal", std)
    if not std > 0:
        raise Misuse(f"needs a positive standard deviation, got {std:g}")
    return InitValue(ir.Init(rule="normal", mean=mean, std=std))


def _deferred(name: str, v):
    return str(v) if isinstance(v, Formula) else _finite(name, v)


def _constant(value):
    return InitValue(ir.Init(rule="constant", value=_deferred("constant", value)))


# ================================================================ rules: formulas, parameter forms, init rules
# The words DANN (Cornford et al. 2021) needed, kept together so the table can move as one block.
# Formulas: `fan_in`, `n_E` and `n_I` stand for sizes the circuit learns only after shape inference;
# arithmetic on them builds text that lowering evaluates per parameter (ir.eval_formula).

NAMED_VALUES: dict[str, Any] = {**{v: Formula(v) for v in ir.FORMULA_VARS}, "pi": math.pi}
_FORMULA_OPS = {"+", "-", "*", "/", "**"}


def formula_op(op: str, left, right, expr) -> Formula:
    for side, v in ((expr.left, left), (expr.right, right)):
        if not (isinstance(v, Formula) or is_number(v)):
            raise SpecError(f"cannot apply '{op}' to {kind_of(left)} and {kind_of(right)}", side.span,
                            hint="formulas combine numbers with fan_in, n_E and n_I")
    if op not in _FORMULA_OPS:
        raise SpecError(f"'{op}' is not available in a formula over fan_in, n_E, n_I", expr.span,
                        hint="formulas take + - * / ** and sqrt, log, exp")
    text = lambda v: str(v) if isinstance(v, Formula) else repr(float(v))   # noqa: E731
    return Formula(f"({text(left)} {op} {text(right)})")


def _math_fn(name: str, fn: Callable, ok: Callable[[float], bool], rule: str) -> Callable:
    def apply(x):
        if isinstance(x, Formula):
            return Formula(f"{name}({x})")
        x = _num(name)(x)
        if not ok(x):
            raise Misuse(f"needs a number {rule}, got {show(x)}")
        return fn(x)
    return apply


def _exponential(scale):
    if isinstance(scale, Formula):
        return InitValue(ir.Init(rule="exponential", scale=str(scale)))
    scale = _finite("exponential", scale)
    if not scale > 0:
        raise Misuse(f"needs a positive scale, got {scale:g}")
    return InitValue(ir.Init(rule="exponential", scale=scale))


_TRANSFORMS = {"none", "exp"}
_CLAMPS = {"dale", "nonneg", "none"}


def _param(init, transform="none", grad=1, clamp="dale", decay=1):
    """A parameter declaration: its init, the form the circuit uses it in, its gradient factor, the
    projection applied after each optimiser step and its share of the training's weight decay."""
    if isinstance(init, InitValue):
        rule = init.init
    elif isinstance(init, Formula):
        rule = ir.Init(rule="constant", value=str(init))
    elif is_number(init):
        rule = ir.Init(rule="constant", value=_finite("param", init))
    elif isinstance(init, str) and init in INIT_RULES:
        rule = ir.Init(rule=init)
    else:
        raise Misuse(f"needs an init rule first, got {kind_of(init)}")
    if transform not in _TRANSFORMS:
        raise Misuse(f"transform must be one of {', '.join(sorted(_TRANSFORMS))}, got {kind_of(transform)}")
    if clamp not in _CLAMPS:
        raise Misuse(f"clamp must be one of {', '.join(sorted(_CLAMPS))}, got {kind_of(clamp)}")
    if isinstance(grad, bool) or not (isinstance(grad, Formula) or is_number(grad)):
        raise Misuse(f"grad must be a number or a formula over fan_in, n_E, n_I, got {kind_of(grad)}")
    if isinstance(decay, bool) or not is_number(decay) or not 0 <= decay < math.inf:
        raise Misuse(f"decay must be a number >= 0 (a factor on the weight decay), got {show(decay)}")
    return InitValue(rule.model_copy(update={"transform": str(transform), "clamp": str(clamp),
                                             "grad": str(grad) if isinstance(grad, Formula) else float(grad),
                                             "decay": float(decay)}))


def grad_factor(value, span: Span):
    """inhibit's grad_scale: true is DeepEISNN's 1 / fan_in, false is 1, else a number or formula."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Formula):
        return str(value)
    if is_number(value):
        return float(value)
    raise SpecError(f"grad_scale must be true, false, a number or a formula, got {kind_of(value)}", span,
                    hint="e.g. grad_scale = 1 / fan_in")


RULE_FUNCTIONS: dict[str, tuple[dict, Callable]] = {
    "exp": ({"x": REQUIRED}, _math_fn("exp", math.exp, lambda x: x < 700, "below 700")),
    "log": ({"x": REQUIRED}, _math_fn("log", math.log, lambda x: x > 0, "> 0")),
    "exponential": ({"scale": REQUIRED}, _exponential),
    "param": ({"init": REQUIRED, "transform": "none", "grad": 1, "clamp": "dale", "decay": 1}, _param),
}


def _mean_of(el: Elaborator, call: S.Call, scope: dict, path: str) -> InitValue:
    """Init rule: every row is the mean over output units of `pop`'s weight from the same source
    (DANN's single I unit starts as the average E unit). Resolved to a parameter when lowered."""
    args = el.bind_args(call, {"pop": REQUIRED}, scope, path)
    node = el.as_node(args["pop"], call.span)
    if not isinstance(el.graph.node(node), ir.Population):
        raise SpecError(f"mean_of() needs a population, got '{node}'", call.span)
    return InitValue(ir.Init(rule="mean_of", ref=node))


def _maxpool(el: Elaborator, call: S.Call, scope: dict, path: str):
    spans: dict[str, Span] = {}
    args = el.bind_args(call, {"x": REQUIRED, "k": 2, "stride": None}, scope, path, spans=spans)
    k = whole(args["k"], "pool size k", 1, spans.get("k", call.span))
    stride = k if args["stride"] is None else whole(args["stride"], "pool stride", 1, spans.get("stride", call.span))
    return el.unary_node("pool", ir.Pool(op="max", kernel=k, stride=stride, loc=el.loc(call.span)), args["x"],
                         call, path)


RULE_GRAPH_BUILTINS: dict[str, Callable] = {"mean_of": _mean_of, "maxpool": _maxpool}


def resolve_refs(el: Elaborator) -> None:
    """mean_of names a node as it was when called; motif collapsing may have renamed it since."""
    for src, dst, rec in list(el.graph.edges(ir.Projection)):
        if rec.init.rule == "mean_of":
            el.graph.replace_edge(src, dst, init=rec.init.model_copy(update={"ref": el.resolve(rec.init.ref)}))
# ================================================================ end of rules


FUNCTIONS: dict[str, tuple[dict, Callable]] = {
    "min": ({"a": REQUIRED, "b": REQUIRED}, lambda a, b: min(_num("min")(a), _num("min")(b))),
    "max": ({"a": REQUIRED, "b": REQUIRED}, lambda a, b: max(_num("max")(a), _num("max")(b))),
    "abs": ({"x": REQUIRED}, lambda x: abs(_num("abs")(x))),
    "int": ({"x": REQUIRED}, _whole_of("int", int)),
    "floor": ({"x": REQUIRED}, _whole_of("floor", math.floor)),
    "ceil": ({"x": REQUIRED}, _whole_of("ceil", math.ceil)),
    "sqrt": ({"x": REQUIRED}, _sqrt),
    **RULE_FUNCTIONS,
    "len": ({"x": REQUIRED}, _len),
    "range": ({"start": REQUIRED, "stop": None, "step": 1}, _range),
    "uniform": ({"low": REQUIRED, "high": REQUIRED}, _uniform),
    "normal": ({"mean": REQUIRED, "std": REQUIRED}, _normal),
    "constant": ({"value": REQUIRED}, _constant),
}


def whole(value, what: str, minimum: int, span: Span) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value) or value < minimum:
        rule = "a positive whole number" if minimum == 1 else f"a whole number >= {minimum}"
        raise SpecError(f"{what} must be {rule}, got {show(value) if is_number(value) else kind_of(value)}", span)
    return value


# What users call IR fields, and the range each must lie in: (argument name, test, rule in words).
_FIELD_RULES: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "kernel": ("k", lambda v: v >= 1, "at least 1"),
    "stride": ("stride", lambda v: v >= 1, "at least 1"),
    "padding": ("pad", lambda v: v >= 0, "0 or more"),
    "delay": ("delay", lambda v: v >= 0, "0 or more time steps"),
    "tau": ("tau", lambda v: v >= 1, "at least 1 (the leak keeps 1 - 1/tau of the potential per step)"),
    "theta": ("theta", lambda v: v > 0, "positive"),
    "alpha": ("alpha", lambda v: v > 0, "positive (the surrogate's sharpness)"),
    "epsilon": ("epsilon", lambda v: v > 0, "positive"),
    "size": ("n", lambda v: v >= 1, "at least 1"),
    "subtractive": ("sub", lambda v: True, ""),
    "divisive": ("div", lambda v: True, ""),
}


def check_field(cls, name: str, value, span: Span):
    """Strict types (no `k = true`, no `sub = "yes"`) and ranges, with the user's argument name."""
    info = cls.model_fields.get(name)
    if info is None:
        return value
    arg = _FIELD_RULES.get(name, (name,))[0]
    given = value
    kind = info.annotation
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{arg} must be true or false, got {kind_of(value)}", span)
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not is_int(value):
            raise SpecError(f"{arg} must be a whole number, got {kind_of(value)}", span)
    elif kind is float:
        if not is_number(value):
            raise SpecError(f"{arg} must be a number, got {kind_of(value)}", span)
        value = float(value)
    elif get_origin(kind) is Literal:
        options = get_args(kind)
        if not isinstance(value, str) or value not in options:
            hint = did_you_mean(value, options) if isinstance(value, str) else None
            raise SpecError(f"{arg} must be one of {', '.join(options)}; got {kind_of(value)}", span,
                            hint=hint)
        return str(value)
    else:
        return value
    if name in _FIELD_RULES:
        _, ok, rule = _FIELD_RULES[name]
        if not ok(value):
            raise SpecError(f"{arg} must be {rule}, got {show(given)}", span)
    return value


def a_kind(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _shape(value, span: Span) -> tuple[int, ...]:
    if isinstance(value, list):
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    if isinstance(value, list) and len(value) > MAX_INPUT_RANK:
        # Before showing it: a long list of 20-digit sizes would print for ever (or past Python's
        # limit on the digits of one integer, once multiplied).
        raise SpecError(f"an input shape has at most {MAX_INPUT_RANK} dimensions, got {len(value):,}", span,
                        hint="e.g. [1, 28, 28] for MNIST or [3, 32, 32] for CIFAR-10")
    if not isinstance(value, list) or not value or not all(is_int(v) and v > 0 for v in value):
        raise SpecError(f"an input shape is a list of positive whole numbers, got {show(value)}", span,
                        hint="e.g. [1, 28, 28] for MNIST or [3, 32, 32] for CIFAR-10")
    return tuple(value)


def _input(encoding: str):
    def build(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
        spans: dict[str, Span] = {}
        args = el.bind_args(call, {"shape": REQUIRED, "T": REQUIRED}, scope, path, ambient=True, spans=spans)
        first = next((r for _, r in el.graph.nodes(ir.Input)), None)
        if first is not None:
            raise SpecError("a network has one input", call.span, notes=[(first.loc.span(), "the input")],
                            hint="reuse it: bind it to a name, `x = image(input)`, and read x twice")
        T = whole(args["T"], "T (time steps)", 1, spans.get("T", call.span))
        record = ir.Input(shape=_shape(args["shape"], spans.get("shape", call.span)), encoding=encoding, T=T,
                          loc=el.loc(call.span))
        return el._add_node(el._node_name(path, "input"), record, call.span)
    return build


def _pool(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
    spans: dict[str, Span] = {}
    args = el.bind_args(call, {"x": REQUIRED, "k": 2, "stride": None}, scope, path, spans=spans)
    k = whole(args["k"], "pool size k", 1, spans.get("k", call.span))
    stride = k if args["stride"] is None else whole(args["stride"], "pool stride", 1, spans.get("stride", call.span))
    return el.unary_node("pool", ir.Pool(kernel=k, stride=stride, loc=el.loc(call.span)), args["x"], call, path)


def _global_pool(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
    args = el.bind_args(call, {"x": REQUIRED}, scope, path)
    return el.unary_node("pool", ir.Pool(global_pool=True, loc=el.loc(call.span)), args["x"], call, path)


def _flatten(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
    args = el.bind_args(call, {"x": REQUIRED}, scope, path)
    return el.unary_node("flatten", ir.Flatten(loc=el.loc(call.span)), args["x"], call, path)


def _readout(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
    args = el.bind_args(call, {"x": REQUIRED}, scope, path)
    return el.unary_node("readout", ir.Readout(loc=el.loc(call.span)), args["x"], call, path)


def _add(el: Elaborator, call: S.Call, scope: dict, path: str) -> NodeRef:
    args = el.bind_args(call, {"a": REQUIRED, "b": REQUIRED}, scope, path)
    return el.spike_sum([args["a"], args["b"]], call, path)


GRAPH_BUILTINS: dict[str, Callable] = {
    "image": _input("static"),
    "events": _input("events"),
    "avgpool": _pool,
    **RULE_GRAPH_BUILTINS,
    "global_avgpool": _global_pool,
    "flatten": _flatten,
    "readout": _readout,
    "add": _add,
}


# What each word means, as `eidsl describe`, the docs and editors show it. Equations use the paper's
# symbols (docs/science.md §1.2); tests/lang/test_builtins.py checks that no word goes undocumented.
WORDS: dict[str, str] = {
    # population models
    "lif": "leaky integrate-and-fire neurons: v <- v(1 - 1/tau) + I, spike s = [v >= theta], soft or hard reset; "
           "surrogate gradient of the given shape and sharpness alpha",
    "relu": "rate neurons s = max(0, I): the paper's fast-spiking interneurons",
    "current": "no nonlinearity: the population passes its integrated current on (readouts, classifiers)",
    "linear": "no nonlinearity: h = I_int, the integrated current passed on as the activity (DANN's linear I "
              "units and output layer, docs/science.md §9)",
    # projection kinds
    "dense": "x -> P: a full weight matrix W (n_P x fan-in) applied at every time step; W_EE or W_IE in an E-I layer",
    "conv": "x -> P: a k x k convolution with stride and padding, no bias unless bias = true",
    "shunt": "I -| E: shunting inhibition, I_int = g_E I_EE / (sigma + W_EI (g_I s_I)) + b_E: divisive "
             "normalisation with the semi-saturation constant sigma (> 0)",
    "inhibit": "I -| E: W_EI s_I subtracted (sub) and/or W_EI (g_I s_I) dividing (div) the excitatory current; "
               "I_int = g_E (I_EE - I_sub) / stabilise(I_div) + b_E",
    # init rules
    "ei_balanced": "E-I Init: exponential weights at the data-dependent balanced scale sigma_w (Eq. 53)",
    "gain_control": "E-I Init: the interneurons' gain g_I from the first batch's statistics (Eq. 54)",
    "unit_std": "a gain g_E set on the first batch so that each neuron's (conv: channel's) integrated current has "
                "std 1, as BatchNorm's would at init; data-dependent like E-I Init, then learnt freely",
    "zero_mean": "a bias b_E set on the first batch so that each neuron's (conv: channel's) integrated current has "
                 "mean 0 (after its unit_std gain, if any)",
    "default": "PyTorch's default for the layer type (Kaiming-uniform with a = sqrt(5))",
    "abs_default": "|default|: PyTorch's default made non-negative for Dale-constrained weights",
    "kaiming": "Kaiming-normal in fan-out mode: N(0, 2 / fan_out)",
    "zeros": "all zeros",
    "ones": "all ones",
    "uniform": "uniform(low, high): weights drawn uniformly from [low, high)",
    "normal": "normal(mean, std): weights drawn from a normal distribution",
    "constant": "constant(value): every entry the same value",
    "exponential": "exponential(scale): weights drawn from an exponential distribution with mean (= std) scale, "
                   "which may be a formula over fan_in, n_E, n_I (DANN's W_EE, docs/science.md §9)",
    "mean_of": "mean_of(pop): every row the mean over pop's units of pop's weight from the same source "
               "(DANN's W_IE starts as the average E unit)",
    "param": "param(init, transform, grad, clamp, decay): a parameter stored under `init`, used as exp(stored) "
             "when transform = exp, its gradient multiplied by grad (a number or a formula), after each step "
             "projected by clamp (dale: >= 0 for Dale-constrained weights, nonneg, none), and decayed at decay "
             "times the training's weight_decay (0: no decay, as for gains and biases)",
    # functions over values
    "min": "min(a, b): the smaller number",
    "max": "max(a, b): the larger number",
    "abs": "abs(x): the absolute value",
    "int": "int(x): x truncated towards zero",
    "floor": "floor(x): the largest whole number <= x",
    "ceil": "ceil(x): the smallest whole number >= x",
    "sqrt": "sqrt(x): the square root of a number >= 0 (or of a formula over fan_in, n_E, n_I)",
    "exp": "exp(x): e to the power x (of a number below 700, or of a formula)",
    "log": "log(x): the natural logarithm of a number > 0 (or of a formula)",
    "len": "len(x): the length of a list, dictionary or string",
    "range": "range(start, stop, step): a list of whole numbers, as Python's",
    # graph builders
    "image": "image(shape, T): a static input shown at every one of T time steps (direct encoding)",
    "events": "events(shape, T): an event-camera input already framed into T time steps",
    "avgpool": "avgpool(x, k, stride): average pooling over k x k windows",
    "maxpool": "maxpool(x, k, stride): max pooling over k x k windows (DANN's convolutional networks)",
    "global_avgpool": "global_avgpool(x): the mean over all positions of each channel",
    "flatten": "flatten(x): (C, H, W) -> C*H*W features",
    "readout": "readout(x): the mean of x over the T time steps; the network's logits",
    "add": "add(a, b): the spike sum of two layers of the same shape (residual connections)",
}
