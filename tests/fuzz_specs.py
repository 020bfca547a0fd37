"""Generators of hostile .ei input for the front-end fuzz tests and `bench/fuzz_frontend.py`.

Three families: arbitrary text/bytes, byte-level mutations of the shipped specs, and
grammar-shaped specs (token soup from the grammar's vocabulary, and structured
programs whose statements and expressions follow the grammar but whose names,
values and wiring are random). `run_frontend` is the property: parsing,
elaboration and checking may fail only with eidsl's own error type.
"""
from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

from eidsl.lang.elaborate import elaborate
from eidsl.errors import EidslError
from eidsl.lang.parser import keywords
from eidsl.lang.checks import check

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*(ROOT / "specs").glob("*.ei"), *(ROOT / "specs" / "motifs").glob("*.ei"),
                  ROOT / "eidsl" / "lang" / "stdlib" / "std.ei"])

NAMES = ["x", "h", "y", "E", "I", "O", "n", "k", "T", "ratio", "depth", "family", "input", "classes",
         "widths", "w", "a", "b", "i"]
CALLABLES = ["image", "events", "flatten", "readout", "avgpool", "global_avgpool", "add", "layer",
             "ei_layer", "ei_readout", "bn_layer", "plain_layer", "plain_readout", "classifier", "min", "max",
             "abs", "int", "floor", "ceil", "sqrt", "len", "range", "uniform", "normal", "constant", "m", "mm"]
SYMBOLS = ["ei_balanced", "gain_control", "default", "kaiming", "zeros", "ones", "sigmoid", "atan", "soft",
           "hard", "batchnorm", "none", "min_positive", "epsilon"]
KWARGS = ["n", "op", "k", "stride", "pad", "ratio", "init", "gain", "bias", "dale", "tau", "theta", "reset",
          "surrogate", "alpha", "norm", "sub", "div", "shared", "delay", "ste", "grad_scale", "stabilize",
          "shape", "T", "x", "classes", "family", "zz"]
PUNCTUATION = ["(", ")", "[", "]", "{", "}", "=", ",", ":", ".", "->", "-|", "+", "-", "*", "/", "//", "%",
               "**", "==", "!=", "<", "<=", ">", ">="]
NUMBERS = ["0", "1", "2", "3", "4", "10", "28", "-1", "0.5", "1e3", "1e308", "4096", "1000000", "1e-9"]
STRINGS = ['"ei"', '"bn"', '"plain"', '"conv"', '"dense"', '"std"', '""', '"P"']


# ---------------------------------------------------------------- (a) arbitrary input

arbitrary_text = st.text(max_size=400)
arbitrary_bytes = st.binary(max_size=400)


# ---------------------------------------------------------------- (b) mutations of shipped specs

@st.composite
def mutated_spec(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SHIPPED)).read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "token"]))
        if op == "delete" and data:
            del data[at:at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "duplicate" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start:start + draw(st.integers(1, 200))]
        elif op == "token":
            data[at:at] = (" " + draw(st.sampled_from(_VOCABULARY)) + " ").encode()
    return bytes(data)


# ---------------------------------------------------------------- (c) grammar-shaped input

_VOCABULARY = sorted(keywords()) + PUNCTUATION + NAMES + CALLABLES + SYMBOLS + NUMBERS + STRINGS + ["\n", "#"]

token_soup = st.lists(st.sampled_from(_VOCABULARY), max_size=80).map(" ".join)


def _join(parts) -> str:
    return ", ".join(parts)


atoms = st.one_of(st.sampled_from(NAMES), st.sampled_from(NUMBERS), st.sampled_from(STRINGS),
                  st.sampled_from(SYMBOLS), st.sampled_from(["true", "false"]))


def _extend(inner):
    args = st.lists(inner, max_size=3)
    kwargs = st.lists(st.tuples(st.sampled_from(KWARGS), inner).map(lambda kv: f"{kv[0]} = {kv[1]}"), max_size=2)
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "==", "<", "and", "or"]), inner)
        .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"-({e})"), inner.map(lambda e: f"(not {e})"),
        st.lists(inner, max_size=4).map(lambda xs: f"[{_join(xs)}]"),
        st.lists(st.tuples(inner, inner), max_size=3).map(lambda ps: "{" + _join(f"{k}: {v}" for k, v in ps) + "}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from(NAMES + ["n", "size"])).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(st.sampled_from(CALLABLES), args, kwargs).map(lambda t: f"{t[0]}({_join(t[1] + t[2])})"),
    )


expressions = st.recursive(atoms, _extend, max_leaves=12)


@st.composite
def statement(draw, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["bind", "bind", "pop", "proj", "proj", "for", "if", "return"]
                                if depth < 2 else ["bind", "pop", "proj", "return"]))
    name = draw(st.sampled_from(NAMES))
    if kind == "bind":
        return f"{name} = {draw(expressions)}"
    if kind == "pop":
        sign = draw(st.sampled_from(["exc", "inh", "pop"]))
        model = draw(st.sampled_from(["lif", "relu", "current", "dense", "layer"]))
        args = draw(st.lists(expressions, min_size=0, max_size=2))
        return f"{sign} {name} = {model}({_join(args)})"
    if kind == "proj":
        src, dst = draw(st.sampled_from(NAMES)), draw(st.sampled_from(NAMES))
        arrow = draw(st.sampled_from(["->", "-|"]))
        func = draw(st.sampled_from(["dense", "conv", "inhibit", "relu"]))
        kwargs = draw(st.lists(st.tuples(st.sampled_from(KWARGS), expressions), max_size=2))
        return f"{src} {arrow} {dst} : {func}({_join(f'{k} = {v}' for k, v in kwargs)})"
    if kind == "for":
        body = draw(st.lists(statement(depth + 1), max_size=3))
        return f"for {name} in {draw(expressions)} {{\n" + "\n".join(body) + "\n}"
    if kind == "if":
        then = draw(st.lists(statement(depth + 1), max_size=3))
        orelse = draw(st.lists(statement(depth + 1), max_size=2))
        return f"if {draw(expressions)} {{\n" + "\n".join(then) + "\n} else {\n" + "\n".join(orelse) + "\n}"
    return f"return {draw(expressions)}"


# A valid E-I skeleton: random statements are spliced into it, so elaboration gets far.
_SKELETON = [
    "x = image(input)", "h = flatten(x)", "exc E = lif(n)", "inh I = relu(n // ratio, gain = gain_control)",
    "h -> E : dense(init = ei_balanced)", "h -> I : dense(init = ei_balanced)", "I -| E : inhibit()",
    "y = layer(E, n)", "O = classifier(y, classes)",
]


@st.composite
def structured_spec(draw) -> str:
    params = draw(st.lists(st.tuples(st.sampled_from(["T", "n", "ratio", "classes", "input", "depth", "family"]),
                                     expressions), max_size=3, unique_by=lambda p: p[0]))
    defaults = {"T": "4", "n": "8", "ratio": "4", "classes": "10", "input": "[1, 6, 6]"}
    for name, value in params:
        defaults[name] = value
    body = list(_SKELETON)
    for _ in range(draw(st.integers(0, 6))):
        body.insert(draw(st.integers(0, len(body))), draw(statement()))
    if draw(st.booleans()):
        del body[draw(st.integers(0, len(body) - 1))]
    body.append("return " + draw(st.sampled_from(["readout(O)", "readout(y)", "O", "readout(E)", "y + E"])))
    motif = ""
    if draw(st.booleans()):
        motif_body = draw(st.lists(statement(1), max_size=4))
        motif = "motif m(x, n = 4) {\n" + "\n".join(motif_body) + "\n}\n"
    header = ", ".join(f"{k} = {v}" for k, v in defaults.items())
    imports = draw(st.sampled_from(['import "std"\n', 'import "std"\n', "", 'import "nope"\n']))
    return imports + motif + f"network net({header}) {{\n" + "\n".join(body) + "\n}\n"


_SIZES = st.sampled_from(["1", "2", "3", "4", "8", "16", "0", "-2", "5 / 2", "8 / ratio", "8 // ratio", "n", "2.0"])
_PROJ = st.sampled_from(["dense()", "dense(init = ei_balanced)", "conv()", "conv(k = 1, pad = 0)",
                         "conv(k = 3, stride = 2)", "conv(k = 5, pad = 0)", "dense(delay = 1)", "conv(delay = 1)",
                         "dense(bias = true)", "conv(k = 7, pad = 0)", "dense(delay = 9)"])
_INHIBIT = st.sampled_from(["inhibit()", "inhibit(div = false)", "inhibit(sub = false)", "inhibit(shared = false)",
                            "inhibit(delay = 1)", "inhibit(stabilize = epsilon)", "inhibit(init = 0.5)"])


@st.composite
def circuit_spec(draw) -> str:
    """Mostly well-formed circuits with random sizes, geometry, wiring, signs and delays: these get
    through elaboration and exercise the checking passes (shapes, Dale's law, cycles, reachability)."""
    T = draw(st.sampled_from(["4", "1", "2"]))
    ratio = draw(st.sampled_from(["4", "2", "1", "3"]))
    shape = draw(st.sampled_from(["[1, 8, 8]", "[2, 6, 6]", "[1, 4, 4]", "[16]", "[3, 5, 7]"]))
    lines = ["x = image(input)", draw(st.sampled_from(["h = x", "h = flatten(x)"]))]
    made: list[str] = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["ei", "ei", "ei", "pool", "flatten", "sum", "std", "recurrent", "cross"]))
        if kind == "ei" or not made and kind in ("sum", "recurrent", "cross"):
            n = draw(_SIZES)
            e_sign, i_sign = draw(st.sampled_from([("exc", "inh")] * 4 + [("pop", "pop"), ("inh", "exc")]))
            lines += [f"{e_sign} E{i} = lif({n}, gain = 1, bias = 0)",
                      f"{i_sign} I{i} = relu(max(1, {n} // ratio), gain = gain_control)",
                      f"h -> E{i} : {draw(_PROJ)}", f"h -> I{i} : {draw(_PROJ)}", f"I{i} -| E{i} : {draw(_INHIBIT)}",
                      f"h = E{i}"]
            made.append(f"E{i}")
        elif kind == "pool":
            lines.append(f"h = {draw(st.sampled_from(['avgpool(h, 2)', 'avgpool(h, 3, 1)', 'global_avgpool(h)']))}")
        elif kind == "flatten":
            lines.append("h = flatten(h)")
        elif kind == "sum":
            lines.append(f"h = h + {draw(st.sampled_from(made))}")
        elif kind == "std":
            op = draw(st.sampled_from(['"dense"', '"conv"']))
            family = draw(st.sampled_from(["family", '"bn"']))
            lines.append(f"h = layer(h, {draw(_SIZES)}, op = {op}, family = {family})")
        elif kind == "recurrent":
            src, dst = draw(st.sampled_from(made)), draw(st.sampled_from(made))
            lines.append(f"{src} -> {dst} : {draw(_PROJ)}")
        else:
            lines.append(f"{draw(st.sampled_from(made)).replace('E', 'I')} -> {draw(st.sampled_from(made))} : dense()")
    if len(lines) > 2 and draw(st.booleans()):
        del lines[draw(st.integers(2, len(lines) - 1))]
    out = draw(st.sampled_from(["readout(classifier(flatten(h), classes))", "readout(classifier(h, classes))",
                                "readout(h)", "readout(flatten(h))"]))
    family = draw(st.sampled_from(['"ei"', '"bn"', '"plain"']))
    return ('import "std"\n'
            f"network net(T = {T}, ratio = {ratio}, classes = 10, input = {shape}, n = 4, family = {family}) {{\n    "
            + "\n    ".join(lines) + f"\n    return {out}\n}}\n")


# ---------------------------------------------------------------- the property

def run_frontend(source: bytes | str, folder: Path, sets: dict[str, str] | None = None) -> str:
    """Parse, elaborate and check `source` as a spec file; "ok" or "error", or the unexpected exception."""
    path = folder / "fuzz.ei"
    path.write_bytes(source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source)
    try:
        check(elaborate(path, sets or {}))
    except EidslError as exc:
        exc.render()          # rendering must not fail either
        return "error"
    return "ok"
