"""Text to syntax tree: Lark does the parsing, this module turns its tree and its errors into ours."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Transformer, v_args

from . import syntax as S
from .errors import Span, SpecError, remember_source

GRAMMAR = Path(__file__).with_name("grammar.lark")

# How each named terminal reads in an error message; anonymous ones ("(", "=") read as themselves.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a string in double quotes',
    "SIGN": "'exc', 'inh' or 'pop'",
    "ARROW": "'->' or '-|'",
    "COMPARE": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//' or '%'",
    "POW": "'**'",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
    "$END": "end of file",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                start=["start", "expr"])


def terminal_words(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    term = _lark().get_terminal(name)
    return f"'{term.pattern.value}'"


def keywords() -> set[str]:
    """Reserved words of the language, read from the grammar so tools cannot drift from it."""
    words = set()
    for term in _lark().terminals:
        pattern = term.pattern
        if pattern.type == "str" and pattern.value.isidentifier():
            words.add(pattern.value)
        elif pattern.type == "re" and pattern.value.startswith("\\b"):
            words.update(pattern.value.strip("\\b()").split("|"))
    return words


def parse(text: str, path: str = "<string>") -> S.Module:
    remember_source(path, text)
    if not text.strip():
        raise SpecError("empty spec: nothing to compile", Span(path, 1, 1),
                        hint="a spec defines at least one network, e.g. `network net() { ... }`")
    try:
        tree = _lark().parse(text, start="start")
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    items = _Build(path).transform(tree).children
    imports = tuple(i for i in items if isinstance(i, S.Import))
    motifs = tuple(i for i in items if isinstance(i, S.Motif))
    trains = [i for i in items if isinstance(i, S.TrainBlock)]
    if len(trains) > 1:
        raise SpecError("more than one train block", trains[1].span, hint="merge the settings into one `train { }` block")
    return S.Module(path, imports, motifs, trains[0] if trains else None)


def parse_expr(text: str, where: str = "<--set>"):
    """One expression, as given on the command line (`--set depth=8`)."""
    remember_source(where, text)
    try:
        tree = _lark().parse(text, start="expr")
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, where) from None
    return _Build(where).transform(tree)


def parse_file(path: str | Path) -> S.Module:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror}", Span(str(path), 1, 1)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"not a text file: byte {exc.start} is not UTF-8", Span(str(path), line, 1),
                        hint="a .ei spec is UTF-8 text") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError("not a text file: it contains NUL bytes", Span(str(path), line, 1),
                        hint="a .ei spec is UTF-8 text")
    return parse(text, str(path))


def _syntax_error(exc: lark.exceptions.UnexpectedInput, text: str, path: str) -> SpecError:
    line, col = max(exc.line, 1), max(exc.column, 1)
    span = Span(path, line, col, line, col + 1)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        return SpecError(f"unexpected character {char!r}", span, hint=_expected(exc.allowed))
    if isinstance(exc, lark.exceptions.UnexpectedEOF) or getattr(exc.token, "type", "") == "$END":
        last = text.rstrip().splitlines() or [""]
        span = Span(path, len(last), len(last[-1]) + 1)
        return SpecError("unexpected end of file", span, hint=_expected(exc.expected))
    token = exc.token
    span = Span(path, line, col, token.end_line or line, token.end_column or col + 1)
    hint = _expected(exc.expected)
    if token.type == "SIGN":
        hint = f"'{token}' is a reserved word (population sign); choose another name"
    elif token.type in ("TRUE", "FALSE", "_OR", "_AND", "_NOT"):
        hint = f"'{token}' is a reserved word; choose another name"
    return SpecError(f"unexpected {token.value!r}", span, hint=hint)


def _expected(names) -> str | None:
    words = sorted({terminal_words(n) for n in names if not n.startswith("__")})
    if not words:
        return None
    if len(words) > 8:
        words = words[:8] + ["..."]
    return "expected " + ", ".join(words)


def _span(path: str, meta) -> Span:
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(path: str, tok) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _Build(Transformer):
    """Lark parse tree -> syntax records, each with its span."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _s(self, meta) -> Span:
        return _span(self.path, meta)

    # items
    def import_stmt(self, meta, c):
        return S.Import(_unquote(c[0]), self._s(meta))

    def _motif(self, meta, c, is_network):
        name, params, body = c
        return S.Motif(str(name), tuple(params or ()), body, self._s(meta), is_network)

    def motif_def(self, meta, c):
        return self._motif(meta, c, False)

    def network_def(self, meta, c):
        return self._motif(meta, c, True)

    def train_block(self, meta, c):
        return S.TrainBlock(tuple(c), self._s(meta))

    def setting(self, meta, c):
        return S.Setting(str(c[0]), c[1], self._s(meta))

    def params(self, meta, c):
        return [p for p in c if p is not None]

    def param(self, meta, c):
        return S.Param(str(c[0]), c[1], self._s(meta))

    def block(self, meta, c):
        return tuple(c)

    # statements
    def pop_stmt(self, meta, c):
        return S.PopStmt(str(c[0]), str(c[1]), c[2], self._s(meta))

    def bind_stmt(self, meta, c):
        return S.Bind(str(c[0]), c[1], self._s(meta))

    def proj_stmt(self, meta, c):
        return S.Projection(c[0], str(c[1]), c[2], c[3], self._s(meta))

    def for_stmt(self, meta, c):
        return S.For(str(c[0]), c[1], c[2], self._s(meta))

    def if_stmt(self, meta, c):
        orelse = c[2]
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, S.If):
            orelse = (orelse,)
        return S.If(c[0], c[1], orelse, self._s(meta))

    def return_stmt(self, meta, c):
        return S.Return(c[0], self._s(meta))

    def ref(self, meta, c):
        return S.Ref(tuple(str(t) for t in c), self._s(meta))

    def call(self, meta, c):
        name, args = c
        args = args or ((), ())
        return S.Call(str(name), args[0], args[1], self._s(meta), _token_span(self.path, name))

    def args(self, meta, c):
        pos = tuple(a for a in c if a is not None and not isinstance(a, S.Kwarg))
        kw = tuple(a for a in c if isinstance(a, S.Kwarg))
        return pos, kw

    def kwarg(self, meta, c):
        return S.Kwarg(str(c[0]), c[1], self._s(meta))

    # expressions
    def _fold(self, meta, c):
        left = c[0]
        for i in range(1, len(c), 2):
            left = S.BinOp(str(c[i]), left, c[i + 1], self._s(meta))
        return left

    def or_expr(self, meta, c):
        return self._chain(meta, c, "or")

    def and_expr(self, meta, c):
        return self._chain(meta, c, "and")

    def _chain(self, meta, c, op):
        left = c[0]
        for right in c[1:]:
            left = S.BinOp(op, left, right, self._s(meta))
        return left

    sum = _fold
    product = _fold
    comparison = _fold

    def power(self, meta, c):
        return S.BinOp("**", c[0], c[2], self._s(meta))

    def not_op(self, meta, c):
        return S.UnaryOp("not", c[0], self._s(meta))

    def neg(self, meta, c):
        return S.UnaryOp("-", c[0], self._s(meta))

    def index(self, meta, c):
        return S.Index(c[0], c[1], self._s(meta))

    def attr(self, meta, c):
        return S.Attr(c[0], str(c[1]), self._s(meta))

    def number(self, meta, c):
        text = str(c[0])
        value = float(text) if any(ch in text for ch in ".eE") else int(text)
        return S.Num(value, self._s(meta))

    def string(self, meta, c):
        return S.Str(_unquote(c[0]), self._s(meta))

    def true(self, meta, c):
        return S.Bool(True, self._s(meta))

    def false(self, meta, c):
        return S.Bool(False, self._s(meta))

    def var(self, meta, c):
        return S.Var(str(c[0]), self._s(meta))

    def list(self, meta, c):
        return S.ListExpr(tuple(x for x in c if x is not None), self._s(meta))

    def dict(self, meta, c):
        return S.DictExpr(tuple(x for x in c if x is not None), self._s(meta))

    def pair(self, meta, c):
        return (c[0], c[1])


def _unquote(token) -> str:
    return str(token)[1:-1]
