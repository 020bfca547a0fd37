"""A Pygments lexer for .ei specs (for the docs, `pygmentize -l ei`, and anything using Pygments).

Its vocabulary comes from ``highlight.py``, which reads the Lark grammar, so a new
keyword or operator reaches this lexer without editing it. Registered under the
`pygments.lexers` entry point as `ei` / `eidsl`.
"""
from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from eidsl.tools import highlight as H

_TOKENS = {
    "keyword.control.ei": Keyword,
    "keyword.other.ei": Keyword.Namespace,
    "storage.type.ei": Keyword.Declaration,
    "storage.modifier.sign.ei": Keyword.Type,
    "constant.language.boolean.ei": Keyword.Constant,
    "keyword.operator.logical.ei": Operator.Word,
}


def _ops(ops) -> str:
    return "|".join(re.escape(o) for o in sorted(ops, key=lambda o: (-len(o), o)))


class EiLexer(RegexLexer):
    name = "eidsl"
    aliases = ["ei", "eidsl"]
    filenames = ["*.ei"]
    mimetypes = ["text/x-eidsl"]

    KEYWORDS = {_TOKENS[scope]: sorted(ws) for scope, ws in H.KEYWORD_SCOPES.items()}
    OPERATORS = sorted(H.operators() - H.PUNCTUATION)
    PUNCTUATION = sorted(H.operators() & H.PUNCTUATION)

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            (H.number_regex(), Number),
            (r"\b(motif|network)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"\b(exc|inh|pop)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Type, Whitespace, Name.Variable)),
            *[(words(ws, prefix=r"\b", suffix=r"\b"), token) for token, ws in KEYWORDS.items()],
            (words(sorted(H.builtins()), prefix=r"\b", suffix=r"\b(?=\s*\()"), Name.Builtin),
            (words(sorted(H.constants()), prefix=r"\b", suffix=r"\b"), Name.Constant),
            (r"[A-Za-z_]\w*", Name),
            (_ops(OPERATORS), Operator),
            (_ops(PUNCTUATION), Punctuation),
            (r".", Text),
        ]
    }
