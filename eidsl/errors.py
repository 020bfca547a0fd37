"""User-facing errors: every one carries where it happened and, when we can, how to fix it.

The format is the one compilers and editors share: ``FILE:LINE:COL: error: MESSAGE``,
then the offending source line with a caret under the column, then a hint.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

# Text of every spec file read in this process, so an error raised far from the
# parser can still quote its line.
_SOURCES: dict[str, str] = {}


def remember_source(path: str, text: str) -> None:
    _SOURCES[path] = text
    _LINES.pop(path, None)


# Each file's lines, split once: errors and size messages quote them per population.
_LINES: dict[str, list[str]] = {}


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0
    # The motif calls (innermost first) that produced the text here, when known (spans of IR
    # records carry them): an error at this span is then reported at the user's call.
    via: tuple["Span", ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column,
                "end_line": self.end_line, "end_column": self.end_column}


class EidslError(Exception):
    """Base of every error eidsl reports to a user; the CLI prints it and exits 2."""

    exit_code = 2

    def render(self) -> str:
        return f"error: {self}"


class HintedError(EidslError):
    """An error about a file or setting rather than spec text: one line, then an optional hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def render(self) -> str:
        return f"error: {self}" + (f"\nhint: {self.hint}" if self.hint else "")


@dataclass
class SpecError(EidslError):
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[tuple[Span, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.span is not None and self.span.via:
            place(self, self.span.via)

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        where = f"{self.span}: " if self.span else ""
        lines = [f"{where}error: {self.message}"]
        if self.span:
            lines += _quote(self.span)
        for span, text in self.notes:
            lines.append(f"{span}: note: {text}")
            lines += _quote(span)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class SpecErrors(EidslError):
    """Several independent errors found in one pass."""

    def __init__(self, errors: Iterable[SpecError]):
        from eidsl.limits import MAX_ERRORS
        errors = list(errors)
        # The rest of thousands of errors (a loop of broken layers) would only bury the first.
        self.errors, self.more = errors[:MAX_ERRORS], max(len(errors) - MAX_ERRORS, 0)
        super().__init__("; ".join(e.message for e in self.errors))

    def render(self) -> str:
        more = [f"... and more errors (only the first {len(self.errors)} are shown)"] if self.more else []
        return "\n".join([*(e.render() for e in self.errors), *more])


def source_text(span: Span) -> str | None:
    """The spec text a one-line span covers, if the file is known."""
    text = _SOURCES.get(span.file)
    if text is None or span.end_line != span.line or span.end_column <= span.column:
        return None
    lines = _LINES.get(span.file)
    if lines is None:
        lines = _LINES[span.file] = source_lines(text)
    if not 1 <= span.line <= len(lines):
        return None
    return lines[span.line - 1][span.column - 1: span.end_column - 1]


def source_lines(text: str) -> list[str]:
    """Lines as the parser counts them: ended by '\n' only. `str.splitlines` also breaks at form
    feeds, U+2028 and other separators, and then quoted the wrong line after one."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines[-1] == "":    # after the last newline: no line, as for splitlines
        lines.pop()
    return lines


def _quote(span: Span) -> list[str]:
    text = _SOURCES.get(span.file)
    if text is None:
        try:
            text = Path(span.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError):
            return []
    lines = source_lines(text)
    if not 1 <= span.line <= len(lines):
        return []
    # Tabs count as one column, like any character; unprintable ones are shown as '?'.
    src = "".join(c if c.isprintable() else "?" for c in lines[span.line - 1].replace("\t", " "))
    col = min(max(span.column, 1), len(src) + 1)
    width = 1
    if span.end_line == span.line and span.end_column > col:
        width = span.end_column - col
    width = max(1, min(width, len(src) - col + 1))
    # A very long line (minified or generated text) is shown as a window around the column.
    if len(src) > QUOTE_WIDTH:
        start = max(0, min(col - 1 - QUOTE_WIDTH // 3, len(src) - QUOTE_WIDTH))
        shown = src[start:start + QUOTE_WIDTH]
        prefix = "..." if start > 0 else ""
        suffix = "..." if start + QUOTE_WIDTH < len(src) else ""
        src = prefix + shown + suffix
        col = col - start + len(prefix)
        width = max(1, min(width, QUOTE_WIDTH - (col - len(prefix) - 1)))
    return [f"    {src}", "    " + " " * (col - 1) + "^" * width]


QUOTE_WIDTH = 100


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def raise_all(errors: list[SpecError]) -> None:
    """Raise what was found; the same message at the same place is reported once."""
    unique = list({(e.span, e.message): e for e in errors}.values())
    if len(unique) == 1:
        raise unique[0]
    if unique:
        raise SpecErrors(unique)


# Folders whose spec text users do not edit (the standard library): an error found
# there is reported at the user's call into it.
LIBRARY_DIRS: list[Path] = []


def in_library(span: Span | None) -> bool:
    return span is not None and _in_library(span.file, len(LIBRARY_DIRS))


@lru_cache(maxsize=256)
def _in_library(file: str, _dirs: int) -> bool:
    """Cached per file (and per length of LIBRARY_DIRS, which only grows): resolving the path
    for every error of a large graph cost seconds."""
    try:
        path = Path(file).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(d) for d in LIBRARY_DIRS)


MAX_CALL_NOTES = 4


def place(err: SpecError, calls: Iterable[Span]) -> SpecError:
    """Attach the chain of motif calls (innermost first) that led to `err`.

    An error inside the standard library moves to the innermost call written by the
    user, with a note pointing into the library; an error in a user's motif keeps its
    place and gains notes for the calls that reached it.
    """
    if getattr(err, "placed", False):
        return err
    calls = list(dict.fromkeys(c for c in calls if c is not None))   # a recursive call repeats its site
    notes = list(err.notes)
    if in_library(err.span):
        user = next((c for c in calls if not in_library(c)), None)
        if user is not None:
            notes.insert(0, (err.span, "inside the standard library, here"))
            err.span = user
            calls = calls[calls.index(user) + 1:]
    user_calls = [c for c in calls if not in_library(c) and c != err.span]
    shown = user_calls[:MAX_CALL_NOTES]
    notes += [(c, "in the motif called here") for c in shown]
    if len(user_calls) > len(shown):
        notes.append((user_calls[-1], f"... {len(user_calls) - len(shown)} more calls, the outermost here"))
    err.notes = notes
    err.placed = True
    return err
