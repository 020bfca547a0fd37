"""`eidsl fmt`: shipped specs are formatted, formatting keeps the IR and every comment, and is idempotent."""
import random
import re

import pytest
from typer.testing import CliRunner

from eidsl.api import load_graph
from eidsl.cli import app
from eidsl.errors import SpecError
from eidsl.tools.fmt import WIDTH, format_text

from conftest import ROOT

runner = CliRunner()
SHIPPED = sorted([*ROOT.glob("specs/*.ei"), *ROOT.glob("specs/motifs/*.ei"), *ROOT.glob("eidsl/lang/stdlib/*.ei"),
                  *ROOT.glob("tests/specs/*.ei")])
NETWORKS = [p for p in SHIPPED if re.search(r"^network ", p.read_text(), re.M)]


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_shipped_specs_are_formatted(path):
    text = path.read_text()
    assert format_text(text, str(path)) == text
    assert all(len(line) <= WIDTH for line in text.splitlines() if "#" not in line)


TWO_CHAR_OPERATORS = {"->", "-|", "**", "//", "<=", ">=", "!=", "=="}


def _mess(text: str, seed: int) -> str:
    """The same spec with other indentation, spacing and line breaks (comments left as they are)."""
    rng = random.Random(seed)
    out = []
    for line in text.splitlines():
        code, hash_, comment = line.partition("#")
        body = code.rstrip()
        gap = code[len(body):]
        body = re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\t"]), body.strip())
        body = re.sub(r"\s*([=,:\[\]()*/]|(?<![0-9][eE])[-+])\s*",
                      lambda m: rng.choice(["", " "]) + m.group(1) + rng.choice(["", " "]), body)
        body = re.sub(r",", lambda m: rng.choice([",", ",\n      "]), body)
        body = re.sub(r"([-*/<>!=])\s+([>|*/=])",
                      lambda m: m[1] + m[2] if m[1] + m[2] in TWO_CHAR_OPERATORS else m[0], body)
        out.append(rng.choice(["", "  ", "\t", "        "]) + body + (gap + hash_ + comment if hash_ else ""))
    return "\n".join(out) + "\n"


def _ir_without_locations(path):
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "loc"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(load_graph(path).to_json())


@pytest.mark.parametrize("path", NETWORKS, ids=_ids(NETWORKS))
def test_formatting_a_messy_copy_gives_the_spec_back_and_the_same_ir(tmp_path, path):
    text = path.read_text()
    messy = _mess(text, seed=len(text))
    assert messy != text
    copy = tmp_path / path.name
    copy.write_text(messy)
    assert _ir_without_locations(copy) == _ir_without_locations(path)     # the mess itself means the same
    formatted = format_text(messy, str(copy))
    assert formatted == text
    copy.write_text(formatted)
    assert _ir_without_locations(copy) == _ir_without_locations(path)


COMMENTED = '''

# header comment

import "std"
import "other"   # trailing on import
# attached to motif
motif m(x,n,ratio=4,) {  # header trailing
  exc E=lif(n,gain=1,bias=0)   # pop comment


  # own line before proj


  x->E:dense(init=abs_default)
  w = {   # table
     1: [1,2,3],  # one
     # before two
     2: [4, 5,
         6],
  }
  v=[1,2,]
  y = -x ** 2 + (a+b)*c - not_a
  z = f(a,   # first arg
        b, c)
  if n==1 and not false {return E}else if n>2{ return E } else {
    q = 1
    # end of else
  }   # after if
  for i in range(3) { r = i }
  total = 1 +  # a comment inside an expression
        2
  return E
  # last in block
}
train { epochs=3 lr = 0.1 }
# end of file comment


'''

EXPECTED = '''# header comment

import "std"
import "other"   # trailing on import

# attached to motif
motif m(x, n, ratio = 4) {  # header trailing
    exc E = lif(n, gain = 1, bias = 0)   # pop comment

    # own line before proj

    x -> E : dense(init = abs_default)
    w = {   # table
        1: [1, 2, 3],  # one
        # before two
        2: [4, 5, 6],
    }
    v = [
        1,
        2,
    ]
    y = -x ** 2 + (a + b) * c - not_a
    z = f(a,   # first arg
          b,
          c)
    if n == 1 and not false {
        return E
    } else if n > 2 {
        return E
    } else {
        q = 1
        # end of else
    }   # after if
    for i in range(3) {
        r = i
    }
    total = 1 +  # a comment inside an expression
          2
    return E
    # last in block
}

train {
    epochs = 3
    lr = 0.1
}
# end of file comment
'''


def test_layout_and_comments():
    out = format_text(COMMENTED)
    assert out == EXPECTED
    comments = re.findall(r"#.*", COMMENTED)
    assert re.findall(r"#.*", out) == comments                 # every comment, in order, unchanged


@pytest.mark.parametrize("text", [COMMENTED, EXPECTED] + [p.read_text() for p in SHIPPED])
def test_formatting_is_idempotent(text):
    once = format_text(text)
    assert format_text(once) == once


def test_long_calls_fill_under_the_parenthesis_and_long_literals_explode():
    args = ", ".join(f"p{i} = {i}" for i in range(30))
    items = ", ".join(f'"key_{i}": {i}' for i in range(12))
    out = format_text(f"network n({args}) {{\n h = call_me({args})\n d = {{{items}}}\n return h\n}}\n")
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[0].startswith("network n(p0 = 0, ") and lines[1].startswith(" " * len("network n(") + "p")
    call = next(i for i, line in enumerate(lines) if "call_me(" in line)
    assert lines[call + 1].startswith(" " * len("    h = call_me(") + "p")
    assert '    d = {' in lines and '        "key_0": 0,' in lines and "    }" in lines


BAD = {
    "unbalanced.ei": ("network n() {\n    h = f(1\n}\n", 3, 1),
    "reserved.ei": ("network n() {\n    exc = 1\n}\n", 2, 5),
    "stray.ei": ("network n() {\n    h = 1 $ 2\n}\n", 2, 11),
    "eof.ei": ("motif m(x) {\n    return x\n", 2, 13),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("flags", [[], ["--check"], ["--diff"]])
def test_a_file_that_does_not_parse_is_left_untouched(tmp_path, name, flags):
    text, line, col = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError):
        format_text(text, str(path))
    res = runner.invoke(app, ["fmt", *flags, str(path)])
    assert res.exit_code == 2
    assert f"{path}:{line}:{col}: error:" in " ".join(res.output.split())
    assert path.read_text() == text


def test_non_text_files_are_left_untouched(tmp_path):
    for name, data, message in [("latin.ei", b"network n() {\n  # caf\xe9\n}\n", "not a text file"),
                                ("nul.ei", b"network n() {\x00}\n", "NUL bytes"),
                                ("empty.ei", b"   \n", "empty spec")]:
        path = tmp_path / name
        path.write_bytes(data)
        res = runner.invoke(app, ["fmt", str(path)])
        assert res.exit_code == 2 and message in res.output
        assert path.read_bytes() == data


def test_check_diff_and_rewrite(tmp_path):
    good = tmp_path / "good.ei"
    good.write_text(EXPECTED)
    messy = tmp_path / "messy.ei"
    messy.write_text(COMMENTED)
    bad = tmp_path / "bad.ei"
    bad.write_text(BAD["stray.ei"][0])

    res = runner.invoke(app, ["fmt", "--check", str(good)])
    assert res.exit_code == 0 and res.output == ""
    res = runner.invoke(app, ["fmt", "--check", str(good), str(messy)])
    assert res.exit_code == 1
    assert f"would reformat {messy}" in res.output and str(good) not in res.output
    assert messy.read_text() == COMMENTED

    res = runner.invoke(app, ["fmt", "--diff", str(messy)])
    assert res.exit_code == 0
    assert f"--- {messy}" in res.output and "+motif m(x, n, ratio = 4) {  # header trailing" in res.output
    assert messy.read_text() == COMMENTED

    # A folder: every .ei below it; one bad file does not stop the others being formatted.
    res = runner.invoke(app, ["fmt", str(tmp_path)])
    assert res.exit_code == 2
    assert messy.read_text() == EXPECTED and good.read_text() == EXPECTED
    assert bad.read_text() == BAD["stray.ei"][0]
    assert f"reformatted {messy}" in res.output
