"""Typed syntax tree of a .ei file: what the text says, before any name is resolved."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from eidsl.errors import Span

# Whole numbers beyond MAX_INT are refused (as literals and as arithmetic results): no size or
# setting needs more, and unbounded integers would let a loop of squarings eat the machine.
from eidsl.limits import MAX_INT  # noqa: F401


@dataclass(frozen=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True)
class Str:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class DictExpr:
    pairs: tuple[tuple[Expr, Expr], ...]
    span: Span


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    span: Span
    func_span: Span


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # "-" or "not"
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Index:
    target: Expr
    index: Expr
    span: Span


@dataclass(frozen=True)
class Attr:
    target: Expr
    name: str
    span: Span


Expr = Union[Num, Str, Bool, Var, ListExpr, DictExpr, Call, BinOp, UnaryOp, Index, Attr]


@dataclass(frozen=True)
class Ref:
    parts: tuple[str, ...]
    span: Span

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class PopStmt:
    sign: str  # "exc" | "inh" | "pop"
    name: str
    call: Call
    span: Span


@dataclass(frozen=True)
class Bind:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Projection:
    source: Ref
    arrow: str  # "->" excitatory, "-|" inhibitory
    target: Ref
    call: Call
    span: Span


@dataclass(frozen=True)
class For:
    var: str
    iterable: Expr
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class If:
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span


Stmt = Union[PopStmt, Bind, Projection, For, If, Return]


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Motif:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    is_network: bool = False


@dataclass(frozen=True)
class Import:
    path: str
    span: Span


@dataclass(frozen=True)
class Setting:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class TrainBlock:
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True)
class Module:
    """One parsed .ei file."""
    path: str
    imports: tuple[Import, ...]
    motifs: tuple[Motif, ...]   # networks included, flagged is_network
    train: TrainBlock | None
