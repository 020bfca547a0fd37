"""Fuzzing `check`, `describe` and compile with generated and mutated specs.

Three generators, each a function of a random.Random (so every case replays from its seed, and
hypothesis can drive them in the CI test through ``st.randoms()``):

- ``grammar``: random derivations of eidsl/lang/grammar.lark, with names, numbers and strings drawn
  mostly from the language's own vocabulary so the text gets past the parser;
- ``network``: plausible networks (std layers, hand-written E-I circuits with every option,
  pools, flattens, residual sums, delayed recurrences) with occasional bad values;
- ``mutation``: byte- and token-level mutations of the shipped specs and of the standard library
  (a mutated std.ei placed next to the spec shadows the real one).

Each case is checked (parse, elaborate, passes), described, and when small enough lowered,
built, initialised (data-free and E-I Init), run forward and backward on a random batch of two.
The only acceptable failure is an EidslError that points into the spec; anything else, an
error without a location, a wrong output batch, or a case running past the time limit is a crash.

    python3 bench/fuzz.py                       # 10,000 cases on 2 processes
    python3 bench/fuzz.py --cases 500 --workers 1
    python3 bench/fuzz.py --replay network 1234 # print one case and its full traceback
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import eidsl  # noqa: E402,F401
from eidsl_compiler.init import ei_init  # noqa: E402
from eidsl_compiler.lower import lower  # noqa: E402
from eidsl_compiler.init import initialise  # noqa: E402
from eidsl_compiler.network import Network  # noqa: E402
from eidsl import ir  # noqa: E402
from eidsl.api import load_graph  # noqa: E402
from eidsl.tools.describe import summarize  # noqa: E402
from eidsl.errors import EidslError, SpecError, SpecErrors  # noqa: E402
from eidsl.lang.checks import estimate_bytes  # noqa: E402

SHIPPED = {p.name: p.read_text() for p in sorted((ROOT / "specs").rglob("*.ei"))}
STD = (ROOT / "eidsl" / "lang" / "stdlib" / "std.ei").read_text()

# Networks larger than this are checked and described but not built.
COMPILE_PARAMS = 2_000_000
COMPILE_FLOPS = 300_000_000
COMPILE_BYTES = 256 * 2**20
BATCH = 2
CASE_SECONDS = 60


@dataclass
class Case:
    kind: str
    seed: int
    files: dict[str, str]                     # written into one folder; "net.ei" is the root
    sets: dict[str, str] = field(default_factory=dict)


class Crash(Exception):
    """Anything but a located EidslError."""


# ---------------------------------------------------------------- vocabulary

NAMES = ["x", "h", "y", "E", "I", "O", "n", "k", "T", "c", "s", "b", "layer", "ei_layer", "ei_readout", "bn_layer",
         "plain_layer", "plain_readout", "classifier", "lif", "relu", "current", "dense", "conv", "inhibit", "image",
         "events", "flatten", "readout", "avgpool", "global_avgpool", "add", "range", "len", "min", "max", "abs",
         "int", "floor", "ceil", "sqrt", "uniform", "normal", "constant", "ratio", "gain", "bias", "init", "norm",
         "dale", "ei_balanced", "gain_control", "kaiming", "default", "abs_default", "zeros", "ones", "sub", "div",
         "shared", "delay", "shape", "stride", "pad", "op", "family", "depth", "classes", "input", "tau", "theta",
         "reset", "soft", "hard", "surrogate", "sigmoid", "atan", "triangle", "rectangle", "alpha", "batchnorm",
         "none", "stabilize", "min_positive", "epsilon", "ste", "grad_scale", "ei_init", "static", "size", "net"]
NUMBERS = ["0", "1", "2", "3", "4", "8", "10", "16", "0.5", "1.5", "1e-8", "1e9", "10", "64", "100", "1e308",
           "999999999999", ".5", "2e3"]
STRINGS = ['"std"', '"ei"', '"bn"', '"plain"', '"conv"', '"dense"', '"x"', '""', '"P"', '"mnist5k"', '"../x"']
TERMINALS = {"ARROW": ["->", "-|"], "COMPARE": ["==", "!=", "<=", ">=", "<", ">"], "ADD_OP": ["+", "-"],
             "MUL_OP": ["*", "/", "//", "%"], "TRUE": ["true"], "FALSE": ["false"], "_OR": ["or"],
             "_AND": ["and"], "_NOT": ["not"], "SIGN": ["exc", "inh", "pop"], "POW": ["**"]}


def _token(rng: random.Random, name: str, pattern) -> str:
    if name == "NAME":
        if rng.random() < 0.9:
            return rng.choice(NAMES)
        return rng.choice("abcdefghijklmnopqrstuvwxyz_") + "".join(rng.choice("az_09") for _ in range(rng.randint(0, 6)))
    if name == "NUMBER":
        return rng.choice(NUMBERS) if rng.random() < 0.9 else str(rng.randint(0, 10**rng.randint(1, 15)))
    if name == "STRING":
        return rng.choice(STRINGS)
    if name in TERMINALS:
        return rng.choice(TERMINALS[name])
    return pattern.value


# ---------------------------------------------------------------- grammar generator

class Grammar:
    """Random derivations of the Lark grammar, with a depth bound past which the cheapest
    expansion of every rule is taken, so derivations always end."""

    def __init__(self):
        from eidsl.lang.parser import _lark
        lark = _lark()
        self.rules: dict[str, list] = collections.defaultdict(list)
        for rule in lark.rules:
            self.rules[rule.origin.name].append(rule.expansion)
        self.patterns = {t.name: t.pattern for t in lark.terminals}
        self.cost = self._costs()

    def _costs(self) -> dict[str, int]:
        cost = {name: math.inf for name in self.rules}
        changed = True
        while changed:
            changed = False
            for name, options in self.rules.items():
                best = min(sum(1 if s.is_term else cost[s.name] for s in option) + 1 for option in options)
                if best < cost[name]:
                    cost[name], changed = best, True
        return cost

    def derive(self, rng: random.Random, start: str = "start", budget: int = 12) -> str:
        out: list[str] = []

        def expand(name: str, depth: int) -> None:
            options = self.rules[name]
            if depth > budget:
                option = min(options, key=lambda o: sum(1 if s.is_term else self.cost[s.name] for s in o))
            else:
                option = rng.choice(options)
            for sym in option:
                if sym.is_term:
                    out.append(_token(rng, sym.name, self.patterns.get(sym.name)))
                else:
                    expand(sym.name, depth + 1)

        expand(start, 0)
        return " ".join(out)


_GRAMMAR: Grammar | None = None


def grammar_case(rng: random.Random, seed: int = 0) -> Case:
    global _GRAMMAR
    _GRAMMAR = _GRAMMAR or Grammar()
    text = ""
    while not text.strip():
        text = _GRAMMAR.derive(rng, budget=rng.randint(4, 14))
    if rng.random() < 0.5:
        # Derived statements inside a network that has an input and returns a readout, so they
        # reach elaboration with names (h, x) bound.
        body = "\n".join(_GRAMMAR.derive(rng, "_stmt", budget=rng.randint(3, 10)) for _ in range(rng.randint(1, 6)))
        ret = rng.choice(["h", "layer(flatten(h), 4)", _GRAMMAR.derive(rng, "expr", budget=6)])
        text = (f'import "std"\n{text}\nnetwork fuzz(T = 2) {{\n    x = image([1, 4, 4])\n    h = x\n'
                f'{body}\n    return readout({ret})\n}}\n')
    return Case("grammar", seed, {"net.ei": text})


# ---------------------------------------------------------------- network generator

def rare(rng: random.Random, p: float) -> bool:
    """True with probability p, at the top end of random(): hypothesis's randoms lean to small
    draws early on, which should pick the common case."""
    return rng.random() > 1 - p


def _odd(rng: random.Random, good, bad, p: float = 0.06):
    """Mostly a valid value, sometimes an invalid one."""
    return rng.choice(bad) if rare(rng, p) else (good() if callable(good) else rng.choice(good))


def network_case(rng: random.Random, seed: int = 0) -> Case:
    size = lambda: rng.choice([1, 2, 3, 4, 5, 8, 12, 16])           # noqa: E731
    bad_size = ["0", "-3", "2.5", '"n"', "true", "1e9", "[2]"]
    T = _odd(rng, lambda: rng.randint(1, 4), ["0", "-1", "1.5", '"x"', "1e6"], 0.03)
    events = rng.random() < 0.15
    flat = rng.random() < 0.35
    shape = [rng.randint(1, 12)] if flat else [rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9)]
    family = _odd(rng, ["ei", "ei", "bn", "plain"], ["bad"], 0.03)
    ratio = _odd(rng, [1, 2, 4], ["0", "3", "-1"], 0.04)
    lines = [f'    h = {"events" if events else "image"}({"[0, 1]" if rare(rng, 0.02) else shape})']
    spatial = not flat
    saved: list[tuple[str, bool]] = []                 # names a residual sum can read, with spatial-ness
    bools = ["true", "false"]
    for i in range(rng.randint(0, 5)):
        choice = rng.choice(["std", "std", "circuit", "circuit", "pool", "flatten", "residual", "plain", "wiring"])
        if choice == "flatten" or (spatial and choice in ("std", "circuit") and rng.random() < 0.25):
            lines.append("    h = flatten(h)")
            spatial = False
            if choice == "flatten":
                continue
        if choice == "pool":
            if rng.random() < 0.3:
                lines.append("    h = global_avgpool(h)")
            else:
                lines.append(f"    h = avgpool(h, {_odd(rng, [1, 2, 3], ['0', '-1', '1.5'])}"
                             f"{', ' + str(rng.randint(1, 3)) if rng.random() < 0.3 else ''})")
        elif choice == "std":
            motif = rng.choice(["layer", "ei_layer", "bn_layer", "plain_layer"])
            args = [f"{_odd(rng, size, bad_size)}"]
            if spatial or rare(rng, 0.05):
                args.append('op = "conv"')
                args.append(f"k = {_odd(rng, [1, 3], ['0', '5', '-1'])}")
                args.append(f"stride = {_odd(rng, [1, 2], ['0'])}")
                args.append(f"pad = {_odd(rng, [0, 1], ['-1', '9'])}")
            if motif == "ei_layer":
                args += [f"ratio = {ratio}", f"ei_init = {rng.choice(bools)}",
                         f"stabilize = {rng.choice(['min_positive', 'epsilon', 'none'])}",
                         f"ste = {rng.choice(bools)}", f"grad_scale = {rng.choice(bools)}", f"dale = {rng.choice(bools)}"]
            rng.shuffle(args[1:]) if rare(rng, 0.2) else None
            lines.append(f"    h = {motif}(h, {', '.join(args)})")
        elif choice == "plain":
            lines.append(f"    pop P{i} = {rng.choice(['lif', 'relu', 'current'])}({_odd(rng, size, bad_size)})")
            lines.append(f"    h -> P{i} : {_projection(rng, spatial)}")
            lines.append(f"    h = P{i}")
        elif choice == "circuit":
            lines += _circuit(rng, i, spatial, size, bad_size, bools)
        elif choice == "wiring":
            lines += _wiring(rng, i, spatial, saved, size)
        elif choice == "residual":
            if saved and rng.random() < 0.7:
                name, _ = rng.choice(saved)
                lines.append(rng.choice([f"    h = h + {name}", f"    h = add(h, {name})", f"    h = {name} + h"]))
            else:
                lines.append(f"    r{i} = h")
                saved.append((f"r{i}", spatial))
    if spatial and rare(rng, 0.05):
        readout = "readout(h)"                   # a spatial readout
    else:
        head = "h" if not spatial or rare(rng, 0.1) else "flatten(h)"
        classes = _odd(rng, [2, 3, 10], ["0", "1.5"], 0.03)
        readout = rng.choice([f"readout(classifier({head}, {classes}))", f"readout(ei_readout({head}, {classes}))",
                              f"readout(plain_readout({head}, {classes}))"])
    text = (f'import "std"\nnetwork fuzz(T = {T}, ratio = {ratio}, family = "{family}") {{\n'
            + "\n".join(lines) + f"\n    return {readout}\n}}\n")
    return Case("network", seed, {"net.ei": text})


def _projection(rng: random.Random, spatial: bool, init: str | None = None, delay=None) -> str:
    init = init or rng.choice(["default", "kaiming", "ei_balanced", "abs_default", "zeros", "0.1", "uniform(0, 0.1)",
                               "normal(0, 0.1)", "constant(0.2)", "gain_control", "bogus", "1e39", "uniform(0, 1e300)"])
    delay = delay if delay is not None else _odd(rng, [0, 0, 0, 1], ["-1", "2", "1.5"], 0.05)
    if spatial:
        k = _odd(rng, [1, 3], ["0", "7"])
        pad = (k - 1) // 2 if isinstance(k, int) else 0
        return f"conv({k}, {_odd(rng, [1, 1, 2], ['0'])}, {pad}, init = {init}, bias = {rng.choice(['true', 'false'])}" \
               f"{', delay = ' + str(delay) if delay != 0 else ''})"
    return f"dense(init = {init}, bias = {rng.choice(['true', 'false'])}{', delay = ' + str(delay) if delay != 0 else ''})"


def _circuit(rng, i, spatial, size, bad_size, bools) -> list[str]:
    """A hand-written E-I circuit with random options; a few leave parts out."""
    n = _odd(rng, size, bad_size)
    m = _odd(rng, size, bad_size)
    neuron = (f"tau = {_odd(rng, [2.0, 1.5, 4], ['0', '-1'])}, theta = {rng.choice([1.0, 0.5])}, "
              f"reset = {rng.choice(['soft', 'hard'])}, surrogate = {rng.choice(['sigmoid', 'atan', 'triangle', 'rectangle'])}, "
              f"alpha = {rng.choice([4.0, 2, 0.5])}, detach_reset = {rng.choice(bools)}")
    gain = rng.choice(["1", "gain_control", "none_given", "0.5"])
    e_model = rng.choice(["lif", "lif", "lif", "current", "relu"])
    extra = neuron if e_model == "lif" else ""
    norm = ", norm = batchnorm" if rare(rng, 0.1) else ""
    out = [f"    exc E{i} = {e_model}({n}, gain = {rng.choice(['1', 'ones'])}, bias = {rng.choice(['0', 'zeros'])}"
           f"{', ' + extra if extra else ''}{norm}, dale = {rng.choice(bools)})",
           f"    inh I{i} = relu({m}{'' if gain == 'none_given' else ', gain = ' + gain})"]
    w = rng.choice(["ei_balanced", "abs_default", "default"])
    out.append(f"    h -> E{i} : {_projection(rng, spatial, w)}")
    if not rare(rng, 0.05):
        out.append(f"    h -> I{i} : {_projection(rng, spatial, w)}")
    if not rare(rng, 0.05):
        sub, div = _odd(rng, [("true", "true"), ("true", "true"), ("true", "false"), ("false", "true")],
                        [("false", "false")], 0.05)
        out.append(f"    I{i} -| E{i} : inhibit(sub = {sub}, div = {div}, shared = {rng.choice(bools)}, "
                   f"init = {rng.choice(['0', '0.25', 'ei_balanced', 'uniform(0, 1)'])}, "
                   f"stabilize = {rng.choice(['min_positive', 'epsilon', 'none'])}, epsilon = {_odd(rng, ['1e-8', '1e-3'], ['0'])}, "
                   f"ste = {rng.choice(bools)}, grad_scale = {rng.choice(bools)}"
                   f"{', delay = 1' if rare(rng, 0.05) else ''})")
    if rare(rng, 0.08):     # recurrence through a delay
        out.append(f"    E{i} -> E{i} : {_projection(rng, spatial, 'default', delay=1)}")
    out.append(f"    h = E{i}")
    return out


def _wiring(rng, i, spatial, saved, size) -> list[str]:
    """Unusual topologies: several inhibitors, inhibition from pools or into interneurons, a
    population fed by two sources or by inhibition alone."""
    proj = lambda: _projection(rng, spatial)            # noqa: E731
    other = rng.choice(saved)[0] if saved and rng.random() < 0.5 else "h"
    n, m = size(), size()
    sign = rng.choice(["exc", "exc", "pop", "inh"])
    model = rng.choice(["lif", "relu", "current"])
    out = [f"    {sign} W{i} = {model}({n}, gain = {rng.choice(['1', 'gain_control'])}, bias = 0"
           f"{', norm = batchnorm' if rare(rng, 0.1) else ''})",
           f"    inh J{i} = relu({m}, gain = {rng.choice(['1', 'gain_control'])})",
           f"    inh K{i} = relu({size()}, gain = 1)"]
    if rng.random() < 0.8:
        out.append(f"    h -> W{i} : {proj()}")
    if other != "h" and rng.random() < 0.5:
        out.append(f"    {other} -> W{i} : {proj()}")
    out.append(f"    h -> J{i} : {proj()}")
    out.append(f"    h -> K{i} : {proj()}")
    source = rng.choice([f"J{i}", f"J{i}", f"avgpool(J{i}, 1)", f"flatten(J{i})"]) if rare(rng, 0.2) else f"J{i}"
    if source != f"J{i}":
        out.append(f"    q{i} = {source}")
        source = f"q{i}"
    out.append(f"    {source} -| W{i} : inhibit(shared = {rng.choice(['true', 'false'])})")
    if rng.random() < 0.5:
        out.append(f"    K{i} -| {rng.choice([f'W{i}', f'J{i}'])} : inhibit(div = {rng.choice(['true', 'false'])})")
    out.append(f"    h = W{i}")
    return out


# ---------------------------------------------------------------- mutation generator

_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\"[^\"\n]*\"|\*\*|//|->|-\||==|!=|<=|>=|\S")


def mutate(rng: random.Random, text: str, rounds: int) -> bytes:
    data = bytearray(text.encode())
    for _ in range(rounds):
        if not data:
            data = bytearray(b"x")
        how = rng.choice(["flip", "insert", "delete", "duplicate", "token", "token", "token", "number", "splice"])
        at = rng.randrange(len(data))
        if how == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif how == "insert":
            data[at:at] = bytes([rng.choice([rng.randrange(256), *b"{}()[],.=:\"#-|>\n"])])
        elif how == "delete":
            del data[at:at + rng.randint(1, 40)]
        elif how == "duplicate":
            chunk = data[at:at + rng.randint(1, 80)]
            where = rng.randrange(len(data))
            data[where:where] = chunk
        elif how == "splice":
            other = rng.choice([*SHIPPED.values(), STD]).encode()
            start = rng.randrange(len(other))
            data[at:at + rng.randint(0, 60)] = other[start:start + rng.randint(1, 120)]
        else:
            tokens = list(_TOKEN.finditer(data.decode(errors="replace")))
            if not tokens:
                continue
            tok = rng.choice(tokens)
            if how == "number" or tok.group().replace(".", "").isdigit():
                new = rng.choice(NUMBERS + ["-1", "0", "3", "7", "1e400", "2**62"])
            else:
                new = rng.choice(NAMES + STRINGS + ["->", "-|", "(", ")", "{", "}", "[", "]", ",", "=", "exc", "inh",
                                                    "pop", "motif", "network", "import", "for", "if", "return"])
            text_now = data.decode(errors="replace")
            data = bytearray((text_now[:tok.start()] + new + text_now[tok.end():]).encode())
    return bytes(data)


SMALL_SETS = {
    "mlp.ei": lambda rng: {"input": rng.choice(["[1, 4, 4]", "[1, 8, 8]", "[1, 28, 28]", "[2, 3, 3]"]),
                           "depth": rng.choice(["2", "4", "6", "8", "3", "12"]), "T": rng.choice(["1", "2", "4"])},
    "vgg.ei": lambda rng: {"depth": rng.choice(["8", "11", "9"]), "input": rng.choice(["[3, 32, 32]", "[1, 32, 32]"]),
                           "T": rng.choice(["1", "2"])},
    "resnet.ei": lambda rng: {"input": rng.choice(["[3, 32, 32]", "[3, 8, 8]", "[1, 16, 16]"]), "T": "1"},
    "convnet.ei": lambda rng: {"input": rng.choice(["[1, 28, 28]", "[1, 8, 8]", "[3, 4, 4]"]),
                               "width": rng.choice(["4", "8", "0"]), "T": rng.choice(["1", "2"])},
}


def small_sets(rng: random.Random, name: str) -> dict[str, str]:
    """Overrides that make a shipped network small enough to build, for the parameters it has."""
    if name in SMALL_SETS:
        return SMALL_SETS[name](rng)
    options = {"T": ["1", "2"], "input": ["[1, 8, 8]", "[1, 12, 12]"], "width": ["4", "8"],
               "widths": ["[16, 8]", "[8]"], "hidden": ["[16, 8]"], "n1": ["16"], "n2": ["8"]}
    return {k: rng.choice(v) for k, v in options.items() if re.search(rf"\b{k}\s*=", SHIPPED[name])}


def mutation_case(rng: random.Random, seed: int = 0) -> Case:
    target = rng.choice([*SHIPPED, "std.ei"])
    rounds = rng.choice([1, 1, 2, 3, 5])
    root = target if target != "std.ei" else rng.choice(list(SHIPPED))
    sets = {}
    if rng.random() < 0.6:
        sets = small_sets(rng, root)
        if "family" in SHIPPED[root]:
            sets["family"] = rng.choice(["ei", "ei", "bn", "plain"])
        sets = {k: v for k, v in sets.items() if rng.random() < 0.8}
    files = {"net.ei": SHIPPED[root]}
    if target == "std.ei":
        files["std.ei"] = mutate(rng, STD, rounds)       # shadows the standard library
    else:
        files["net.ei"] = mutate(rng, SHIPPED[root], rounds)
    return Case("mutation", seed, files, sets)


GENERATORS = {"grammar": grammar_case, "network": network_case, "mutation": mutation_case}


# ---------------------------------------------------------------- running a case

def located(err: EidslError) -> bool:
    if isinstance(err, SpecErrors):
        return bool(err.errors) and all(e.span is not None for e in err.errors)
    return isinstance(err, SpecError) and err.span is not None


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_case(case: Case, folder: Path) -> str:
    """The case's outcome: 'compiled', 'checked' (valid, too large to build here) or
    'error:<stage>' (a located EidslError). Raises Crash for anything else."""
    for old in folder.iterdir():
        old.unlink()
    for name, content in case.files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    stage = "check"
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        graph = load_graph(folder / "net.ei", sets=case.sets)
        stage = "describe"
        summary = summarize(graph)
        json.dumps(summary)
        inp = graph.node(graph.input_name)
        est = estimate_bytes(graph, BATCH)
        if (summary["parameters"] > COMPILE_PARAMS or est["total_bytes"] > COMPILE_BYTES
                or summary["flops_per_step"] * inp.T * BATCH > COMPILE_FLOPS):
            return "checked"
        stage = "lower"
        plan = lower(graph)
        stage = "build"
        net = Network(plan, graph)
        initialise(net, seed=case.seed)
        gen = torch.Generator().manual_seed(case.seed)
        x = torch.rand(BATCH, *inp.shape, generator=gen) if inp.encoding == "static" else \
            torch.rand(BATCH, inp.T, *inp.shape, generator=gen)
        stage = "ei_init"
        ei_init(net, x, seed=case.seed)
        stage = "forward"
        out = net(x)
        if out.shape[0] != BATCH:
            raise Crash(f"output batch {tuple(out.shape)} for an input batch of {BATCH}")
        stage = "backward"
        if out.requires_grad:          # a network with no trainable path has nothing to run backward
            out.float().sum().backward()
        return "compiled"
    except EidslError as err:
        if located(err):
            return f"error:{stage}"
        raise Crash(f"{stage}: unlocated {type(err).__name__}: {err}") from err
    except _Timeout:
        raise Crash(f"{stage}: still running after {CASE_SECONDS} s") from None
    except Crash:
        raise
    except Exception as exc:
        raise Crash(f"{stage}: {type(exc).__name__}: {exc}") from exc
    finally:
        signal.alarm(0)


def make_case(kind: str, seed: int) -> Case:
    return GENERATORS[kind](random.Random(f"{kind}:{seed}"), seed)


def _where(exc: BaseException) -> str:
    """The innermost frame in eidsl's own code: crashes with the same one are the same bug."""
    cause = exc.__cause__ or exc
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if str(ROOT) in f.filename
              and "bench/" not in f.filename]
    if not frames:
        return str(exc).split(":")[0]
    f = frames[-1]
    return f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {type(cause).__name__}"


def _worker(job: tuple[list[tuple[str, int]], str]) -> list[tuple[str, int, str, str | None, str | None]]:
    cases, out_dir = job
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="eidsl-fuzz-") as tmp:
        folder = Path(tmp)
        for kind, seed in cases:
            case = make_case(kind, seed)
            try:
                results.append((kind, seed, run_case(case, folder), None, None))
            except Crash as crash:
                results.append((kind, seed, "crash", _where(crash), str(crash)[:300]))
    return results


def campaign(cases: int, seed: int, workers: int, out_dir: Path, seconds: float) -> dict:
    kinds = list(GENERATORS)
    todo = [(kinds[i % len(kinds)], seed + i) for i in range(cases)]
    chunks = [(todo[i:i + 50], str(out_dir)) for i in range(0, len(todo), 50)]
    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in kinds}
    crashes: dict[str, list] = collections.defaultdict(list)
    start = time.perf_counter()
    done = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for results in pool.imap_unordered(_worker, chunks):
            for kind, case_seed, outcome, where, message in results:
                counts[kind][outcome] += 1
                done += 1
                if outcome == "crash":
                    crashes[where].append((kind, case_seed, message))
            if time.perf_counter() - start > seconds:
                pool.terminate()
                break
    elapsed = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    for where, items in crashes.items():
        kind, case_seed, _ = items[0]
        case = make_case(kind, case_seed)
        stem = re.sub(r"\W+", "_", where)
        for name, content in case.files.items():
            (out_dir / f"{stem}.{name}").write_bytes(content if isinstance(content, bytes) else content.encode())
    return {"cases": done, "seconds": round(elapsed, 1), "workers": workers,
            "outcomes": {k: dict(sorted(c.items())) for k, c in counts.items()},
            "crashes": {w: {"count": len(v), "first": v[0]} for w, v in crashes.items()}}


def replay(kind: str, seed: int) -> None:
    case = make_case(kind, seed)
    for name, content in case.files.items():
        print(f"==== {name}" + (f"  (--set {case.sets})" if case.sets and name == "net.ei" else ""))
        print(content.decode(errors="replace") if isinstance(content, bytes) else content)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            print("outcome:", run_case(case, Path(tmp)))
        except Crash as crash:
            traceback.print_exception(crash.__cause__ or crash)
            print("CRASH:", crash)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--minutes", type=float, default=10.0, help="stop early after this long")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "eidsl-fuzz",
                    help="where the first spec of each crash is written")
    ap.add_argument("--replay", nargs=2, metavar=("KIND", "SEED"))
    args = ap.parse_args(argv)
    if args.replay:
        replay(args.replay[0], int(args.replay[1]))
        return 0
    report = campaign(args.cases, args.seed, args.workers, args.out, args.minutes * 60)
    print(json.dumps(report, indent=1))
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
