"""Text to syntax tree: Lark does the parsing, this module turns its tree and its errors into ours."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Transformer, v_args

from eidsl.lang import syntax as S
from eidsl.errors import Span, SpecError, did_you_mean, raise_all, remember_source, source_lines
from eidsl.limits import (MAX_ERRORS, MAX_NESTING, MAX_PARSE_DEPTH, MAX_SET_CHARS, MAX_SPEC_BYTES, MAX_STRING,
                          MAX_TOKENS)

GRAMMAR = Path(__file__).with_name("grammar.lark")

MAX_REPORTED = MAX_ERRORS   # independent errors reported from one file

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
def keywords() -> frozenset[str]:
    """Reserved words of the language, read from the grammar so tools cannot drift from it."""
    words = set()
    for term in _lark().terminals:
        pattern = term.pattern
        if pattern.type == "str" and pattern.value.isidentifier():
            words.add(pattern.value)
        elif pattern.type == "re" and pattern.value.startswith("\\b"):
            words.update(pattern.value.strip("\\b()").split("|"))
    return frozenset(words)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                start=["start", "expr"])


def terminal_words(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    term = _lark().get_terminal(name)
    return f"'{term.pattern.value}'"


def parse(text: str, path: str = "<string>") -> S.Module:
    remember_source(path, text)
    return _parse_cached(text, path)


@lru_cache(maxsize=64)
def _parse_cached(text: str, path: str) -> S.Module:
    """Syntax trees are immutable, so a file read again (the standard library, by every spec) is parsed once."""
    if not text.strip():
        raise SpecError("empty spec: nothing to compile", Span(path, 1, 1),
                        hint="a spec defines at least one network, e.g. `network net() { ... }`")
    tree = _parse(text, path, "start")
    items = _transform(tree, path).children
    imports = tuple(i for i in items if isinstance(i, S.Import))
    motifs = tuple(i for i in items if isinstance(i, S.Motif))
    trains = [i for i in items if isinstance(i, S.TrainBlock)]
    if len(trains) > 1:
        raise SpecError("more than one train block", trains[1].span, hint="merge the settings into one `train { }` block",
                        notes=[(trains[0].span, "the first one")])
    module = S.Module(path, imports, motifs, trains[0] if trains else None)
    _check_nesting(module)
    return module


def parse_expr(text: str, where: str = "<--set>"):
    """One expression, as given on the command line (`--set depth=8`)."""
    remember_source(where, text)
    if not text.strip():
        raise SpecError("empty value", Span(where, 1, 1), hint="give a value, e.g. --set T=8")
    if len(text) > MAX_SET_CHARS:
        raise SpecError(f"a --set value of {len(text):,} characters is longer than the limit of "
                        f"{MAX_SET_CHARS:,}", Span(where, 1, 1), hint="put long values in the spec")
    try:
        expr = _transform(_parse(text, where, "expr"), where)
        _check_nesting(expr)
    except SpecError as err:
        err.hint = err.hint or "a --set value is an expression: --set T=8, --set family=bn, --set input=[3,32,32]"
        raise
    return expr


# Roughly the grammar's tokens, for counting them before parsing (a C-speed scan).
_ROUGH_TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[A-Za-z0-9_.]+|\S')


def _check_token_count(text: str, path: str) -> None:
    count = 0
    for match in _ROUGH_TOKEN.finditer(text):
        if match.group().startswith("#"):
            continue
        count += 1
        if count > MAX_TOKENS:
            at = match.start()
            line = text.count("\n", 0, at) + 1
            column = at - (text.rfind("\n", 0, at) + 1) + 1
            raise SpecError(f"the spec has more than {MAX_TOKENS:,} tokens (names, numbers, symbols), the limit "
                            "for one file", Span(path, line, column),
                            hint="split it into files that import each other, or use loops and motifs")


def _parse(text: str, path: str, start: str) -> lark.Tree:
    _check_token_count(text, path)
    try:
        tree = _lark().parse(text, start=start)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    _check_tree_depth(tree, path)
    words = keywords()
    # The contextual lexer lets `network for()` through; keep reserved words reserved everywhere.
    # Each misuse is independent of the others: all are reported (up to a limit).
    misused = [SpecError(f"'{token}' is a reserved word and cannot be used as a name", _token_span(path, token),
                         hint=_reserved_hint(str(token)))
               for token in tree.scan_values(lambda v: isinstance(v, lark.Token) and v.type == "NAME" and v in words)]
    raise_all(misused[:MAX_REPORTED])
    return tree


def _transform(tree: lark.Tree, path: str):
    try:
        return _Build(path).transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, SpecError):
            raise exc.orig_exc from None
        raise


def _check_tree_depth(tree: lark.Tree, path: str) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PARSE_DEPTH:
            raise SpecError(f"the text nests more than {MAX_PARSE_DEPTH} levels deep", _tree_span(path, node),
                            hint="split deep expressions or blocks into named steps")
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))


def _tree_span(path: str, node: lark.Tree) -> Span:
    meta = node.meta
    if getattr(meta, "empty", True):
        return Span(path, 1, 1)
    return _span(path, meta)


def _check_nesting(root) -> None:
    """Bound the syntax tree's depth: the evaluator walks it recursively."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, tuple):
            stack.extend((c, depth) for c in node)
            continue
        if not dataclasses.is_dataclass(node) or isinstance(node, Span):
            continue
        if depth > MAX_NESTING:
            raise SpecError(f"the spec nests more than {MAX_NESTING} levels deep here", node.span,
                            hint="split long chains like a + b + c + ... or deep blocks into named steps")
        stack.extend((value, depth + 1) for value in vars(node).values())


def parse_file(path: str | Path) -> S.Module:
    path = Path(path)
    return parse(spec_text(path, read_spec_bytes(path)), str(path))


def read_spec_bytes(path: Path) -> bytes:
    """A spec file's bytes, sized before reading: the read must neither block (a FIFO) nor fill
    memory (3.5 MB of spec took 46 s and 1.4 GB to parse)."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SpecError("not a regular file", Span(str(path), 1, 1), hint="a spec is a .ei text file")
            if info.st_size > MAX_SPEC_BYTES:
                raise SpecError(f"the spec is {info.st_size:,} bytes, more than the limit of {MAX_SPEC_BYTES:,} "
                                "bytes for one spec file", Span(str(path), 1, 1),
                                hint="split it into files that import each other")
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", Span(str(path), 1, 1)) from None
    if len(data) > MAX_SPEC_BYTES:   # it grew while being read
        raise SpecError(f"the spec is more than the limit of {MAX_SPEC_BYTES:,} bytes for one spec file",
                        Span(str(path), 1, 1))
    return data


def spec_text(path: Path, data: bytes) -> str:
    """UTF-8 text without NUL bytes, or a located error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"not a text file: byte {exc.start} (0x{data[exc.start]:02x}) is not UTF-8",
                        Span(str(path), line, column), hint="a .ei spec is UTF-8 text") from None
    if "\x00" in text:
        at = text.index("\x00")
        line = text[:at].count("\n") + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        remember_source(str(path), text)
        raise SpecError("not a text file: it contains NUL bytes", Span(str(path), line, column),
                        hint="a .ei spec is UTF-8 text")
    return text


def _syntax_error(exc: lark.exceptions.UnexpectedInput, text: str, path: str) -> SpecError:
    line, col = max(exc.line, 1), max(exc.column, 1)
    span = Span(path, line, col, line, col + 1)
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if char == '"':
            return SpecError("string is not closed on this line", span,
                             hint='strings are written in double quotes on one line: "dense"')
        allowed = _expected(exc.allowed)
        # The lexer allows many tokens at most places; a long list hides more than it helps.
        return SpecError(f"unexpected character {char!r}", span,
                         hint=allowed if allowed and allowed.count(",") < 5 else None)
    if isinstance(exc, lark.exceptions.UnexpectedEOF) or getattr(exc.token, "type", "") == "$END":
        last = source_lines(text.rstrip()) or [""]
        span = Span(path, len(last), len(last[-1]) + 1)
        opener = _unclosed(text)
        notes = [(Span(path, *opener[1:]), f"this '{opener[0]}' is not closed")] if opener else []
        return SpecError("unexpected end of file", span, hint=_expected(exc.expected), notes=notes)
    token = exc.token
    span = Span(path, line, col, token.end_line or line, token.end_column or col + 1)
    words = keywords()
    if token.value in words and "NAME" in exc.expected and token.value not in ("not", "and", "or", "in"):
        return SpecError(f"'{token}' is a reserved word and cannot be used here", span,
                         hint=_reserved_hint(token.value) + "; " + (_expected(exc.expected) or ""))
    before = _word_before(text, token.start_pos or 0)
    if before and before[0] in words and token.type in ("EQUAL", "LPAR", "DOT", "ARROW", "COLON"):
        word, start = before
        w_line = text.count("\n", 0, start) + 1
        w_col = start - (text.rfind("\n", 0, start) + 1) + 1
        return SpecError(f"'{word}' is a reserved word and cannot be used as a name",
                         Span(path, w_line, w_col, w_line, w_col + len(word)), hint=_reserved_hint(word))
    notes = []
    closers = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}
    opener = _unclosed(text[: token.start_pos or 0])
    if opener and closers.get(next((n for n in exc.expected if n in closers), ""), None) == opener[0]:
        notes = [(Span(path, *opener[1:]), f"this '{opener[0]}' is not closed")]
    hint = _expected(exc.expected)
    if token.type == "NAME":
        expected_words = [w for w in (terminal_words(n).strip("'") for n in exc.expected) if w in words]
        close = did_you_mean(token.value, expected_words)
        hint = f"{close} ({hint})" if close else hint
    if before and before[0] not in words:
        # `fro i in x`, `retrun y`: a misspelt statement keyword reads as a name.
        close = did_you_mean(before[0], ["for", "if", "return", "exc", "inh", "pop", "import"])
        if close:
            hint = f"{close} '{before[0]}' is not a keyword" + (f" ({hint})" if hint else "")
    return SpecError(f"unexpected {token.value!r}", span, hint=hint, notes=notes)


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LONGEST_KEYWORD = 16


def _word_before(text: str, end: int) -> tuple[str, int] | None:
    """The name (and where it starts) that ends right before `end`, spaces skipped. A scan from
    the end: a regex search for `name\\s*$` retried at every start, quadratic in a long word
    (20k characters took 20 s). Only short words can be keywords, so longer ones are not read."""
    i = end
    while i > 0 and text[i - 1] in " \t\r\n\f":
        i -= 1
    stop = i
    while i > 0 and text[i - 1] in _NAME_CHARS and stop - i <= _LONGEST_KEYWORD:
        i -= 1
    if i == stop or text[i] not in _NAME_CHARS or text[i].isdigit():
        return None
    if i > 0 and text[i - 1] in _NAME_CHARS:   # a long word: not a keyword, not a misspelt one
        return None
    return text[i:stop], i


def _reserved_hint(word: str) -> str:
    if word in ("exc", "inh", "pop"):
        return f"'{word}' declares a population's sign (`{word} E = lif(n)`); choose another name"
    return f"choose another name than '{word}'"


def _unclosed(text: str) -> tuple[str, int, int] | None:
    """The last bracket left open, skipping strings and comments."""
    stack: list[tuple[str, int, int]] = []
    line, col, i = 1, 1, 0
    pairs = {")": "(", "]": "[", "}": "{"}
    while i < len(text):
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            col += end - i
            i = end
            continue
        if ch == '"':
            end = text.find('"', i + 1)
            newline = text.find("\n", i + 1)
            if end < 0 or (0 <= newline < end):
                end = len(text) if newline < 0 else newline
            else:
                end += 1
            col += end - i
            i = end
            continue
        if ch in "([{":
            stack.append((ch, line, col))
        elif ch in pairs and stack and stack[-1][0] == pairs[ch]:
            stack.pop()
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        i += 1
    return stack[-1] if stack else None


# Tokens that can start an expression: listed one by one they bury the useful part of a hint.
_EXPRESSION_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "LBRACE", "MINUS", "TRUE", "FALSE", "_NOT"}


def _expected(names) -> str | None:
    names = {n for n in names if not n.startswith("__")}
    words = set()
    if {"NAME", "NUMBER", "STRING"} <= names:
        words.add("an expression")
        names -= _EXPRESSION_START
    words = sorted(words | {terminal_words(n) for n in names})
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
        seen: dict[str, S.Setting] = {}
        for setting in c:
            if setting.name in seen:
                raise SpecError(f"training setting '{setting.name}' is given twice", setting.span,
                                notes=[(seen[setting.name].span, "first given here")], hint="keep one")
            seen[setting.name] = setting
        return S.TrainBlock(tuple(c), self._s(meta))

    def setting(self, meta, c):
        return S.Setting(str(c[0]), c[1], self._s(meta))

    def params(self, meta, c):
        params = [p for p in c if p is not None]
        seen: dict[str, S.Param] = {}
        for p in params:
            if p.name in seen:
                raise SpecError(f"parameter '{p.name}' is listed twice", p.span,
                                notes=[(seen[p.name].span, "first listed here")], hint="rename or remove one")
            seen[p.name] = p
        return params

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
        if any(ch in text for ch in ".eE"):
            value = float(text)
            if not math.isfinite(value):
                raise SpecError(f"number {text} is too large", self._s(meta), hint="numbers are 64-bit floats")
        else:
            if len(text) > 20 or int(text) > S.MAX_INT:
                raise SpecError(f"number {text} is too large", self._s(meta),
                                hint=f"whole numbers are limited to {S.MAX_INT:,}")
            value = int(text)
        return S.Num(value, self._s(meta))

    def string(self, meta, c):
        value = _unquote(c[0])
        if len(value) > MAX_STRING:
            raise SpecError(f"a string of {len(value):,} characters is longer than the limit of {MAX_STRING:,}",
                            self._s(meta), hint="strings name things (a family, an op); keep them short")
        return S.Str(value, self._s(meta))

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
