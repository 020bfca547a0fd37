"""User-facing errors: every one carries where it happened and, when we can, how to fix it.

The format is the one compilers and editors share: ``FILE:LINE:COL: error: MESSAGE``,
then the offending source line with a caret under the column, then a hint.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# Text of every spec file read in this process, so an error raised far from the
# parser can still quote its line.
_SOURCES: dict[str, str] = {}


def remember_source(path: str, text: str) -> None:
    _SOURCES[path] = text


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0

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


@dataclass
class SpecError(EidslError):
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: list[tuple[Span, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

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
        self.errors = list(errors)
        super().__init__("; ".join(e.message for e in self.errors))

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


def _quote(span: Span) -> list[str]:
    text = _SOURCES.get(span.file)
    if text is None:
        try:
            text = Path(span.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return []
    lines = text.splitlines()
    if not 1 <= span.line <= len(lines):
        return []
    src = lines[span.line - 1].replace("\t", " ")
    width = 1
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    return [f"    {src}", "    " + " " * (span.column - 1) + "^" * max(1, min(width, len(src) - span.column + 1))]


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def raise_all(errors: list[SpecError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SpecErrors(errors)
