"""The values a spec computes with, and the limits on how much it may compute.

Numbers, strings, lists and dictionaries are Python's; bare words are `Sym`, layers are `NodeRef`,
motif instances `Instance`, init rules `InitValue`, formulas over the circuit's sizes `Formula`.
Everything here is shared by the interpreter (elaborate.py) and the vocabulary (builtins.py).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from eidsl import ir
from eidsl.errors import SpecError, Span
from eidsl.limits import MAX_LIST, MAX_STEPS


class Sym(str):
    """A bare word such as ``ei_balanced``: compares equal to the string of the same text."""


@dataclass(frozen=True)
class NodeRef:
    name: str


@dataclass
class Instance:
    """A motif instance: its return value, and its locals reachable as ``inst.E``."""
    motif: str
    path: str
    scope: dict[str, Any]
    result: Any = None


@dataclass(frozen=True)
class InitValue:
    init: ir.Init


class Formula:
    """An expression over fan_in, n_E, n_I, kept as text until the compiler knows the sizes
    (ir.eval_formula evaluates it per parameter when the network is lowered)."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self):
        return self.text

    def __repr__(self):
        return self.text

    def __eq__(self, other):
        return isinstance(other, Formula) and other.text == self.text

    def __hash__(self):
        return hash(self.text)


class Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = Required()


class Quotient(float):
    """The float result of `a / b`, remembering its operands so a size error can show the division."""

    def __new__(cls, value: float, a, b):
        self = super().__new__(cls, value)
        self.operands = (a, b)
        return self


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_node(v) -> bool:
    return isinstance(v, (NodeRef, Instance))


COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def arith(op: str, a, b):
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        # Exact division stays an integer so sizes like n / ratio are whole when they should be.
        if is_int(a) and is_int(b) and b != 0 and a % b == 0:
            return a // b
        return Quotient(a / b, a, b)
    if op == "//":
        return a // b
    if op == "%":
        return a % b
    if op == "**":
        if is_int(a) and is_int(b) and abs(a) > 1 and b > 64:
            raise OverflowError   # before Python builds the huge integer
        return a ** b
    raise ValueError(op)


def op_hint(op: str, left, right) -> str | None:
    if op == "+" and (is_node(left) or is_node(right)):
        return "`a + b` of two layers is a residual (spike) sum; both sides must be layers"
    if isinstance(left, list) and op == "*":
        return "repeat a list with a whole number: [64] * 3"
    return None


def kind_of(v) -> str:
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return f"the number {v:g}" if isinstance(v, float) else f"the number {v}"
    if isinstance(v, Sym):
        return f"the word '{v}'"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a dictionary"
    if isinstance(v, NodeRef):
        return f"the layer '{v.name}'"
    if isinstance(v, Instance):
        return f"the motif instance '{v.path}'"
    if isinstance(v, InitValue):
        return "an init rule"
    if isinstance(v, Formula):
        return f"the formula {v}"
    return type(v).__name__


def count_items(v, cap: int = MAX_STEPS + 1) -> int:
    """Values inside lists and dictionaries, nested ones included, counted up to `cap`."""
    count, stack = 0, [v]
    while stack and count < cap:
        x = stack.pop()
        if isinstance(x, (list, dict)):
            count += len(x)
            stack.extend(x.values() if isinstance(x, dict) else x)
    return count


def check_exportable(value, span: Span):
    """Parameters and settings are written out as JSON: a list holding one long list many times
    (`[range(100000)] * 100000`, ten billion values once expanded) must be refused first."""
    if count_items(value, MAX_LIST + 1) > MAX_LIST:
        raise SpecError(f"this value holds more than {MAX_LIST:,} items in all (nested lists counted each time "
                        f"they appear)", span, hint="network parameters and training settings are small values")
    return value


def show(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)) and count_items(v, 64) >= 64:
        # Printing a list that holds a long one many times would write billions of values.
        return f"a {'list' if isinstance(v, list) else 'dictionary'} of {len(v):,} items"
    return f'"{v}"' if isinstance(v, str) and not isinstance(v, Sym) else str(v)


def plain(v):
    """Parameters as JSON-friendly values."""
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (NodeRef, Instance, InitValue)):
        return repr(v)
    if isinstance(v, Formula):
        return str(v)
    return v
