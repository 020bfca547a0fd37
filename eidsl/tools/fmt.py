"""`eidsl fmt`: one canonical layout for .ei files, comments kept.

Layout: 4-space indentation; one statement per line; spaces around binary
operators, `=`, arrows and a projection's `:`; `key: value` in dictionaries; one
blank line between top-level items (imports may stay together), at most one
blank line kept inside blocks. A call or parameter list longer than WIDTH is
filled and continued under its opening parenthesis; a list or dictionary literal
that does not fit (or ends with a comma) gets one item per line. Parentheses are
kept as written: meaning never depends on the formatter.

Lark drops comments, so they are collected from the lexer and put back by line:
own-line comments above the statement that follows them, end-of-line comments
after the line's last token (two spaces, or the wider gap the author chose), and
comments inside a list, dictionary, call or parameter list after their item. A
statement with a comment anywhere else keeps its original text, re-indented.
The result is checked: it must parse to the same syntax tree with the same
comments, or the file is left alone.
"""
from __future__ import annotations

import dataclasses
import difflib
from functools import lru_cache

from lark import Lark, Token, Tree

from eidsl.lang import parser as P
from eidsl.errors import EidslError, Span, SpecError

WIDTH = 100
INDENT = "    "

_BINARY = {"or_expr", "and_expr", "comparison", "sum", "product", "power"}

# Filled by the lexer while _lark() parses: Lark hands ignored COMMENT tokens to this callback.
_comment_sink: list[Token] = []


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(P.GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                keep_all_tokens=True, start="start", lexer_callbacks={"COMMENT": _comment_sink.append})


def read_spec(path) -> str:
    """A spec's text; unreadable or non-text files give the located errors `eidsl check` gives."""
    data = P.read_spec_bytes(path)     # sized before reading, as for `eidsl check`
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"not a text file: byte {exc.start} is not UTF-8", Span(str(path), line, 1)) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError("not a text file: it contains NUL bytes", Span(str(path), line, 1))
    return text


def format_text(text: str, path: str = "<string>") -> str:
    """The canonical form of a spec. A spec that does not parse raises its located SpecError."""
    before = P.parse(text, path)           # the located syntax error, as `eidsl check` reports it
    _comment_sink.clear()
    tree = _lark().parse(text)
    comments = list(_comment_sink)
    out = _Printer(text, comments).module(tree)
    _verify(before, comments, out, path)
    return out


def _verify(before, comments: list[Token], out: str, path: str) -> None:
    try:
        after = P.parse(out, path)
    except EidslError:
        after = None
    _comment_sink.clear()
    if after is not None:
        _lark().parse(out)
    kept = [str(c).rstrip() for c in _comment_sink]
    if after is None or _shape(after) != _shape(before) or kept != [str(c).rstrip() for c in comments]:
        raise RuntimeError(f"{path}: the formatter would change this file's meaning or comments; left untouched")


def _shape(node):
    """A syntax record without its spans, for comparing meaning."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,) + tuple(_shape(getattr(node, f.name)) for f in dataclasses.fields(node)
                                              if f.name not in ("span", "func_span", "path"))
    if isinstance(node, (tuple, list)):
        return tuple(_shape(x) for x in node)
    return node


def unified_diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"{path}", f"{path} (formatted)"))


# ---------------------------------------------------------------- printing


def _trees(t: Tree) -> list[Tree]:
    return [c for c in t.children if isinstance(c, Tree)]


def _end(t) -> tuple[int, int]:
    """(line, column just after) of the last character of a tree or token."""
    if isinstance(t, Token):
        return t.end_line, t.end_column
    return t.meta.end_line, t.meta.end_column


def _magic_comma(t: Tree) -> bool:
    """A list or dict literal its author ended with a comma: kept one item per line."""
    toks = [c for c in t.children if c is not None]
    return t.data in ("list", "dict") and len(toks) >= 3 and isinstance(toks[-2], Token) and toks[-2] == ","


class _Fallback(Exception):
    """A comment the layout cannot place: the statement is printed as written."""


class _Printer:
    def __init__(self, text: str, comments: list[Token]):
        self.src = text.split("\n")      # as Lark counts lines (splitlines would also split at \f, \u2028...)
        self.comments = {c.line: c for c in comments}
        self.used: set[int] = set()

    # -- comments and blank lines

    def _text(self, line: int) -> str:
        return str(self.comments[line]).rstrip()

    def own_line(self, line: int) -> bool:
        c = self.comments.get(line)
        return c is not None and not self.src[line - 1][: c.column - 1].strip()

    def trailing(self, line: int, after: int, between: str = "") -> str:
        """The comment ending `line` when only whitespace (or `between` characters) separates it from
        column `after`; returned with its gap (two spaces or the author's wider one), '' if none."""
        c = self.comments.get(line)
        if c is None or line in self.used or self.own_line(line):
            return ""
        if self.src[line - 1][after - 1: c.column - 1].strip(" \t" + between):
            return ""
        self.used.add(line)
        code = self.src[line - 1][: c.column - 1]
        return " " * max(2, len(code) - len(code.rstrip())) + self._text(line)

    def gap_lines(self, start: int, end: int, indent: str, leading_blank: bool) -> list[str]:
        """Own-line comments strictly between lines start and end; runs of blank lines become one."""
        out: list[str] = []
        blank = False
        for line in range(start + 1, end):
            if self.own_line(line):
                if blank and (out or leading_blank):
                    out.append("")
                blank = False
                self.used.add(line)
                out.append(indent + self._text(line))
            elif not self.src[line - 1].strip():
                blank = True
        if blank and (out or leading_blank):
            out.append("")
        return out

    def unplaced(self, first: int, last: int) -> bool:
        return any(line in self.comments and line not in self.used for line in range(first, last))

    # -- module and blocks

    def module(self, tree: Tree) -> str:
        lines: list[str] = []
        prev_end, prev_kind = 0, None
        for item in _trees(tree):
            gap = self.gap_lines(prev_end, item.meta.line, "", leading_blank=prev_kind is not None)
            if prev_kind is not None and not (prev_kind == item.data == "import_stmt") and gap[:1] != [""]:
                gap.insert(0, "")
            lines += gap + self.statement(item, "")
            prev_end, prev_kind = item.meta.end_line, item.data
        lines += self.gap_lines(prev_end, len(self.src) + 1, "", leading_blank=prev_kind is not None)
        while lines and lines[-1] == "":
            lines.pop()
        return "\n".join(lines) + "\n" if lines else ""

    def block(self, open_tok: Token, stmts: list[Tree], close_tok: Token, indent: str) -> list[str]:
        """The lines between a block's `{` line and its `}` line."""
        inner = indent + INDENT
        lines: list[str] = []
        prev = open_tok.line
        for i, stmt in enumerate(stmts):
            lines += self.gap_lines(prev, stmt.meta.line, inner, leading_blank=i > 0)
            lines += self.statement(stmt, inner)
            prev = stmt.meta.end_line
        lines += self.gap_lines(prev, close_tok.line, inner, leading_blank=bool(stmts))
        while lines and lines[-1] == "":
            lines.pop()
        return lines

    def braced(self, head: list[str], open_tok: Token, stmts: list[Tree], close_tok: Token, indent: str,
               t: Tree) -> list[str]:
        """head + ` {`, the block, `}`; every comment inside the head must have found its place."""
        if self.unplaced(t.meta.line, open_tok.line):
            raise _Fallback
        head = self.add(head, " {", open_tok.line, open_tok.end_column)
        inner = self.block(open_tok, stmts, close_tok, indent)
        return head + inner

    def closing(self, indent: str, close_tok: Token, text: str = "}") -> list[str]:
        return self.add([indent], text, close_tok.line, close_tok.end_column)

    def add(self, lines: list[str], text: str, line: int, after: int) -> list[str]:
        return lines[:-1] + [lines[-1] + text + self.trailing(line, after)]

    # -- statements

    def statement(self, t: Tree, indent: str) -> list[str]:
        used = set(self.used)
        try:
            return self._statement(t, indent)
        except _Fallback:
            self.used = used
            return self.verbatim(t, indent)

    def _statement(self, t: Tree, indent: str) -> list[str]:
        kind, c = t.data, t.children
        if kind in ("motif_def", "network_def"):
            kw, name, open_tok, params, close_tok, block = c
            items = [] if params is None else _trees(params)
            head = self.sequence(open_tok, items, close_tok, indent, len(indent), 2, "align", f"{kw} {name}(")
            head[0] = indent + head[0]
            return self.braced(head, block.children[0], _trees(block), block.children[-1], indent, t) + \
                self.closing(indent, block.children[-1])
        if kind == "train_block":
            return self.braced([indent + "train"], c[1], _trees(t), c[-1], indent, t) + self.closing(indent, c[-1])
        if kind == "for_stmt":
            _, var, _, iterable, block = c
            head = self.expr_lines(iterable, indent, f"{indent}for {var} in ", 2)
            return self.braced(head, block.children[0], _trees(block), block.children[-1], indent, t) + \
                self.closing(indent, block.children[-1])
        if kind == "if_stmt":
            return self.if_chain(t, indent, f"{indent}if ")
        lead, value = self.simple_head(t)
        lines = [indent + lead] if value is None else self.expr_lines(value, indent, indent + lead, 0)
        line, col = _end(t)
        if self.unplaced(t.meta.line, line):
            raise _Fallback
        return self.add(lines, "", line, col)

    def simple_head(self, t: Tree):
        c = [x for x in t.children if x is not None]
        kind = t.data
        if kind == "import_stmt":
            return f"import {c[1]}", None
        if kind in ("setting", "bind_stmt"):
            return f"{c[0]} = ", c[2]
        if kind == "pop_stmt":
            return f"{c[0]} {c[1]} = ", c[3]
        if kind == "proj_stmt":
            return f"{self.flat(c[0])} {c[1]} {self.flat(c[2])} : ", c[4]
        if kind == "return_stmt":
            return "return ", c[1]
        raise AssertionError(kind)

    def if_chain(self, t: Tree, indent: str, lead: str) -> list[str]:
        c = t.children
        cond, block = c[1], c[2]
        orelse = c[4] if len(c) > 4 else None
        head = self.expr_lines(cond, indent, lead, 2)
        lines = self.braced(head, block.children[0], _trees(block), block.children[-1], indent, t)
        close = block.children[-1]
        if orelse is None:
            return lines + self.closing(indent, close)
        if self.trailing(close.line, close.end_column):
            raise _Fallback      # a comment after `}` when `else` is on a later line
        if orelse.data == "if_stmt":
            return lines + self.if_chain(orelse, indent, f"{indent}}} else if ")
        return lines + self.braced([f"{indent}}} else"], orelse.children[0], _trees(orelse),
                                   orelse.children[-1], indent, t) + self.closing(indent, orelse.children[-1])

    def verbatim(self, t: Tree, indent: str) -> list[str]:
        """The statement as written, re-indented, with every comment it holds."""
        first, last = t.meta.line, t.meta.end_line
        col = t.meta.column - 1
        text = self.src[first - 1: last]
        text[-1] = text[-1][: t.meta.end_column - 1]
        text[0] = text[0][col:]
        shift = len(indent) - col
        out = [indent + text[0].rstrip()]
        for line in text[1:]:
            stripped = line.lstrip(" ")
            out.append(" " * max(0, len(line) - len(stripped) + shift) + stripped.rstrip() if stripped else "")
        for line in range(first, last):
            self.used.add(line)
        return self.add(out, "", last, t.meta.end_column)

    # -- expressions

    def expr_lines(self, t, indent: str, lead: str, tail: int) -> list[str]:
        lines = self.expr(t, len(lead), indent, tail)
        lines[0] = lead + lines[0]
        return lines

    def must_break(self, t) -> bool:
        """A comment inside, or a list or dict ending with a comma: never on one line."""
        if not isinstance(t, Tree):
            return False
        if self.unplaced(t.meta.line, t.meta.end_line):
            return True
        return any(_magic_comma(sub) for sub in t.iter_subtrees())

    def expr(self, t, col: int, indent: str, tail: int) -> list[str]:
        """Lines of t starting at column col (the first line without its indentation, later ones with
        theirs), leaving `tail` columns free after it."""
        flat = self.flat(t)
        if col + len(flat) + tail <= WIDTH and not self.must_break(t):
            return [flat]
        kind = t.data if isinstance(t, Tree) else None
        c = [x for x in t.children if x is not None] if kind else []
        if kind in ("list", "dict"):
            return self.sequence(t.children[0], _trees(t), t.children[-1], indent, col, tail, "explode",
                                 magic=_magic_comma(t))
        if kind == "call":
            args = [] if t.children[2] is None else _trees(t.children[2])
            return self.sequence(t.children[1], args, t.children[3], indent, col, tail, "align", f"{c[0]}(")
        if kind in _BINARY:
            lines = self.expr(c[0], col, indent, 0)
            for op, operand in zip(c[1::2], c[2::2]):
                lines = self.then(lines, col, f" {op} ", operand, indent, tail if operand is c[-1] else 0)
            return lines
        if kind == "index":
            return self.then(self.expr(c[0], col, indent, 0), col, "[", c[2], indent, tail + 1, "]")
        if kind == "attr":
            lines = self.expr(c[0], col, indent, tail + 1 + len(c[2]))
            lines[-1] += "." + str(c[2])
            return lines
        if kind == "atom":
            return self.then(["("], col, "", c[1], indent, tail + 1, ")")
        if kind in ("neg", "not_op"):
            return self.then([""], col, "-" if kind == "neg" else "not ", c[1], indent, tail)
        if kind in ("kwarg", "param", "pair"):
            sep = ": " if kind == "pair" else " = "
            return self.then([self.flat(c[0])], col, sep, c[2], indent, tail) if len(c) > 1 else [flat]
        return [flat]

    def then(self, lines: list[str], col: int, text: str, t, indent: str, tail: int, suffix: str = "") -> list[str]:
        """lines, then text and t on the same line, then suffix."""
        at = (col if len(lines) == 1 else 0) + len(lines[-1]) + len(text)
        if len(lines) > 1:
            indent = " " * (len(lines[-1]) - len(lines[-1].lstrip(" ")))
        more = self.expr(t, at, indent, tail)
        out = lines[:-1] + [lines[-1] + text + more[0]] + more[1:]
        out[-1] += suffix
        return out

    def sequence(self, open_tok: Token, items: list, close_tok: Token, indent: str, col: int, tail: int,
                 mode: str, open_text: str | None = None, magic: bool = False) -> list[str]:
        """( items ): on one line when it fits, else filled under the opening bracket ("align", for calls
        and parameters) or one item per line with a trailing comma ("explode", for literals, and for any
        literal its author ended with a comma)."""
        open_ = open_text or str(open_tok)
        close = str(close_tok)
        flat = open_ + ", ".join(self.flat(x) for x in items) + close
        breaks = magic or self.unplaced(open_tok.line, close_tok.line) or any(self.must_break(x) for x in items)
        if col + len(flat) + tail <= WIDTH and not breaks:
            return [flat]
        if mode == "align":
            return self.aligned(open_, items, close, col, indent, tail, open_tok, close_tok)
        return self.exploded(open_, items, close, indent, open_tok, close_tok)

    def aligned(self, open_, items, close, col, indent, tail, open_tok, close_tok) -> list[str]:
        start = col + len(open_)
        pad = " " * start
        notes = self.item_comments(items, open_tok, close_tok)
        if notes["end"] or 0 in notes["before"] or self.unplaced(open_tok.line, open_tok.line + 1):
            raise _Fallback
        lines, fresh, new_line = [open_], True, False
        for i, item in enumerate(items):
            last = i == len(items) - 1
            end = close if last else ","
            width = len(end) + (tail if last else 0)
            if not fresh and (new_line or notes["any"]):
                lines.append(pad)
                fresh = True
            for text in notes["before"].get(i, []):
                lines[-1] = pad + text
                lines.append(pad)
            sep = "" if fresh else " "
            at = (col if len(lines) == 1 else 0) + len(lines[-1]) + len(sep)
            used = set(self.used)
            text = self.expr(item, at, indent, width)
            # An item that would overflow or wrap starts a fresh line, where it may fit whole.
            if not fresh and (len(text) > 1 or at + len(text[0]) + width > WIDTH):
                lines.append(pad)
                sep, at = "", start
                self.used = used
                text = self.expr(item, at, indent, width)
            lines[-1] += sep + text[0]
            lines += text[1:]
            lines[-1] += end
            fresh, new_line = False, len(text) > 1
            after = notes["after"].get(i)
            if after:
                if last:
                    raise _Fallback     # between the last item and the closing parenthesis
                lines[-1] += after
                new_line = True
        if not items:
            lines[-1] += close
        return lines

    def exploded(self, open_, items, close, indent, open_tok, close_tok) -> list[str]:
        inner = indent + INDENT
        first = open_
        if open_tok.line < close_tok.line:
            first += self.trailing(open_tok.line, open_tok.end_column)
        lines = [first]
        notes = self.item_comments(items, open_tok, close_tok)
        for i, item in enumerate(items):
            lines += [inner + text for text in notes["before"].get(i, [])]
            text = self.expr(item, len(inner), inner, 1)
            lines.append(inner + text[0])
            lines += text[1:]
            lines[-1] += "," + notes["after"].get(i, "")
        lines += [inner + text for text in notes["end"]]
        lines.append(indent + close)
        return lines

    def item_comments(self, items: list, open_tok: Token, close_tok: Token) -> dict:
        """Comments inside a bracketed sequence: above an item, after it, or before the closing bracket."""
        before: dict[int, list[str]] = {}
        after: dict[int, str] = {}
        end: list[str] = []
        prev = open_tok.line
        for i, item in enumerate(items):
            for line in range(prev + 1, item.meta.line):
                if self.own_line(line):
                    self.used.add(line)
                    before.setdefault(i, []).append(self._text(line))
            line, col = _end(item)
            if line < close_tok.line:
                text = self.trailing(line, col, between=",")
                if text:
                    after[i] = text
            prev = line
        for line in range(prev + 1, close_tok.line):
            if self.own_line(line):
                self.used.add(line)
                end.append(self._text(line))
        return {"before": before, "after": after, "end": end, "any": bool(before or after or end)}

    def flat(self, t) -> str:
        """One-line text of an expression, ref, argument, parameter or pair, in canonical spacing."""
        if isinstance(t, Token):
            return str(t)
        kind = t.data
        c = [x for x in t.children if x is not None]
        if kind in ("number", "string", "true", "false", "var"):
            return str(c[0])
        if kind == "ref":
            return ".".join(str(x) for x in c if x != ".")
        if kind in _BINARY:
            return " ".join(self.flat(x) for x in c)
        if kind == "neg":
            return "-" + self.flat(c[1])
        if kind == "not_op":
            return "not " + self.flat(c[1])
        if kind == "index":
            return f"{self.flat(c[0])}[{self.flat(c[2])}]"
        if kind == "attr":
            return f"{self.flat(c[0])}.{c[2]}"
        if kind == "atom":
            return f"({self.flat(c[1])})"
        if kind in ("list", "dict"):
            o, e = ("[", "]") if kind == "list" else ("{", "}")
            return o + ", ".join(self.flat(x) for x in _trees(t)) + e
        if kind == "pair":
            return f"{self.flat(c[0])}: {self.flat(c[2])}"
        if kind == "call":
            args = [] if t.children[2] is None else _trees(t.children[2])
            return f"{c[0]}(" + ", ".join(self.flat(x) for x in args) + ")"
        if kind in ("kwarg", "param"):
            return str(c[0]) if len(c) == 1 else f"{c[0]} = {self.flat(c[2])}"
        raise AssertionError(kind)
