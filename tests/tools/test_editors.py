"""Editor support cannot drift from the grammar: TextMate grammar, Pygments lexer, VS Code manifest."""
import json
import re

import pytest
from pygments.token import Comment, Error, Keyword, Name, Operator, Punctuation

from eidsl.tools import highlight as H
from eidsl.lang.parser import keywords
from eidsl.tools.pygments_lexer import EiLexer

from conftest import ROOT

GRAMMARS = [ROOT / "editors" / "ei.tmLanguage.json", ROOT / "editors" / "vscode" / "syntaxes" / "ei.tmLanguage.json"]
SPECS = sorted([*ROOT.glob("specs/*.ei"), *ROOT.glob("specs/motifs/*.ei"), *ROOT.glob("eidsl/lang/stdlib/*.ei")])


def _alternatives(regex: str) -> set[str]:
    """The literal words or operators of `\\b(?:a|b)\\b` or `(?:\\-\\>|\\*\\*)`."""
    body = re.fullmatch(r"(?:\\b)?\(\?:(.*)\)(?:\\b)?", regex).group(1)
    return {re.sub(r"\\(.)", r"\1", alt) for alt in re.split(r"(?<!\\)\|", body)}


def test_grammar_vocabulary_is_what_the_parser_accepts():
    words = keywords()
    assert {"motif", "network", "import", "train", "for", "in", "if", "else", "return",
            "exc", "inh", "pop", "true", "false", "and", "or", "not"} == words
    ops = H.operators()
    assert {"->", "-|", "**", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "//", "%", "=", ":",
            ",", ".", "(", ")", "[", "]", "{", "}"} == ops
    classified = [w for group in H.KEYWORD_SCOPES.values() for w in group]
    assert sorted(classified) == sorted(words)          # every keyword shown exactly once


@pytest.mark.parametrize("path", GRAMMARS, ids=lambda p: str(p.relative_to(ROOT)))
def test_textmate_grammar_is_generated_and_matches_the_grammar(path):
    assert path.read_text() == H.render(), "regenerate with: python3 -m eidsl.tools.highlight"
    tm = json.loads(path.read_text())
    assert tm["scopeName"] == "source.ei"
    repo = tm["repository"]
    words = set().union(*(_alternatives(p["match"]) for p in repo["keywords"]["patterns"]))
    assert words == keywords()
    ops = set().union(*(_alternatives(p["match"]) for p in repo["operators"]["patterns"]))
    assert ops == H.operators()
    for rule in repo["keywords"]["patterns"]:
        pattern = re.compile(rule["match"])
        for word in _alternatives(rule["match"]):
            assert pattern.fullmatch(word)
            assert not pattern.fullmatch(word + "x") and not pattern.search("my_" + word + "_1")
    operator = re.compile("|".join(p["match"] for p in repo["operators"]["patterns"]))
    assert operator.match("-|").group() == "-|" and operator.match("**").group() == "**"
    assert operator.match("//").group() == "//" and operator.match("->").group() == "->"
    assert re.compile(repo["number"]["match"]).fullmatch("5e-4") and not re.search(repo["number"]["match"], "W_2")
    builtins = _alternatives(repo["builtins"]["match"].split("(?=")[0])
    assert {"lif", "relu", "dense", "conv", "inhibit", "image", "avgpool", "readout"} <= builtins


def test_vscode_manifest_points_at_the_grammar():
    manifest = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    grammar = manifest["contributes"]["grammars"][0]
    assert grammar["scopeName"] == "source.ei"
    assert (ROOT / "editors" / "vscode" / grammar["path"]).resolve() == GRAMMARS[1].resolve()
    language = manifest["contributes"]["languages"][0]
    assert language["extensions"] == [".ei"] and language["id"] == grammar["language"]
    config = json.loads((ROOT / "editors" / "vscode" / language["configuration"]).read_text())
    assert config["comments"]["lineComment"] == "#"


def _tokens(text):
    return [(t, v) for t, v in EiLexer().get_tokens(text) if v.strip()]


def test_pygments_lexer_vocabulary_is_the_grammars():
    assert set().union(*map(set, EiLexer.KEYWORDS.values())) == keywords()
    assert set(EiLexer.OPERATORS) | set(EiLexer.PUNCTUATION) == H.operators()
    for word in keywords():
        (token, value), = _tokens(word)
        assert value == word and (token in Keyword or token is Operator.Word), word
    for op in H.operators():
        (token, value), = _tokens(op)
        assert value == op and (token in Operator or token in Punctuation), op
    for name in ("format", "important", "inhibitory", "nothing", "true_rate"):
        assert _tokens(name) == [(Name, name)]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pygments_lexes_the_shipped_specs(path):
    text = path.read_text()
    tokens = list(EiLexer().get_tokens(text))
    assert "".join(v for _, v in tokens) == text if text.endswith("\n") else text + "\n"
    assert not [v for t, v in tokens if t in Error]
    comments = [v for t, v in tokens if t in Comment]
    assert comments == re.findall(r"#[^\n]*", text)
    assert any(t is Name.Builtin for t, _ in tokens)


def test_pygments_finds_the_lexer_by_alias():
    from pygments.lexers import find_lexer_class_by_name
    try:
        assert find_lexer_class_by_name("ei").__name__ == "EiLexer"
    except Exception:   # the entry point is registered once the package is installed
        pytest.skip("eidsl is not installed, so its pygments entry point is not registered")
