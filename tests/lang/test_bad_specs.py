"""The error corpus: every spec in tests/bad_specs/ must fail with exactly its golden message.

Each NAME.ei has NAME.expected: the rendered error (`FILE:LINE:COL: error: ...`, source line,
caret, notes, hint) with paths shortened — the corpus folder to nothing, the standard
library to `<std>/`, the repository to `<root>/`. A first line `# args: --set k=v ...` passes
command-line overrides. Run with EIDSL_REGOLD=1 to rewrite the golden files after an
intended change of wording, then read the diff.
"""
import os
import shlex
import time
import tracemalloc

import pytest

from eidsl.api import load_graph
from eidsl.cli import parse_sets
from eidsl.lang.elaborate import STDLIB
from eidsl.errors import EidslError, SpecError, SpecErrors

from conftest import ROOT

BAD = ROOT / "tests" / "bad_specs"
CASES = sorted(p.stem for p in BAD.glob("*.ei"))


# The size check compares with the machine's free memory; golden messages need one number.
LIMIT = 16 * 2**30


def normalise(text: str) -> str:
    return (text.replace(str(BAD) + "/", "")
            .replace(str(STDLIB.resolve()) + "/", "<std>/")
            .replace(str(ROOT), "<root>"))


def sets_of(path) -> dict[str, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    if not first.startswith("# args:"):
        return {}
    words = shlex.split(first[len("# args:"):])
    return parse_sets([v for k, v in zip(words, words[1:]) if k == "--set"])


def rendered_error(name: str) -> str:
    path = BAD / f"{name}.ei"
    with pytest.raises(EidslError) as info:
        load_graph(path, sets=sets_of(path), memory_limit=LIMIT)
    return normalise(info.value.render()) + "\n"


def test_the_corpus_is_large():
    assert len(CASES) >= 35


@pytest.mark.parametrize("name", CASES)
def test_bad_spec_gives_its_golden_message(name):
    text = rendered_error(name)
    golden = BAD / f"{name}.expected"
    if os.environ.get("EIDSL_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("name", CASES)
def test_every_error_is_located_in_a_real_file(name):
    """FILE:LINE:COL for every error and note, inside a file that exists, with its line quoted."""
    path = BAD / f"{name}.ei"
    with pytest.raises(EidslError) as info:
        load_graph(path, sets=sets_of(path), memory_limit=LIMIT)
    errors = info.value.errors if isinstance(info.value, SpecErrors) else [info.value]
    for err in errors:
        assert isinstance(err, SpecError) and err.span is not None, err
        spans = [err.span, *(span for span, _ in err.notes)]
        for span in spans:
            if span.file.startswith("--set"):
                continue
            assert os.path.exists(span.file), span
            assert span.line >= 1 and span.column >= 1
        # Errors never point into the standard library first: the user's call site comes first.
        assert not err.span.file.startswith(str(STDLIB.resolve())), err.render()


def test_golden_files_have_no_strays():
    assert sorted(p.stem for p in BAD.glob("*.expected")) == CASES


def test_huge_network_is_refused_before_anything_is_allocated():
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_graph(BAD / "huge_network.ei")              # against the memory available now
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.message.startswith("network too large: a training step at batch 1 and T = 4 needs about ")
    assert "TiB" in info.value.message                  # 10^12 neurons: the estimate, not a failed allocation
    assert peak < 50 * 2**20
    assert time.perf_counter() - start < 10


def test_import_through_a_symlink_cannot_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.ei").write_text("motif leak(x) {\n    return x\n}\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "linked.ei").symlink_to(outside / "secret.ei")
    spec = project / "net.ei"
    spec.write_text('import "linked"\n\nnetwork net(T = 4) {\n    return readout(leak(flatten(image([1, 4, 4]))))\n}\n')
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    real = (outside / "secret.ei").resolve()
    assert info.value.render().splitlines()[:3] == [
        f"{spec}:1:1: error: import 'linked' leaves the allowed folders (it resolves to {real})",
        '    import "linked"',
        "    ^^^^^^^^^^^^^^^",
    ]
    # The same file is fine when its folder is allowed explicitly.
    assert load_graph(spec, include=[outside]).output == "readout_1"


def test_import_through_a_symlinked_folder_cannot_escape(tmp_path):
    outside = tmp_path / "outside"
    (outside / "lib").mkdir(parents=True)
    (outside / "lib" / "m.ei").write_text("motif leak(x) {\n    return x\n}\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "lib").symlink_to(outside / "lib", target_is_directory=True)
    spec = project / "net.ei"
    spec.write_text('import "lib/m"\n\nnetwork net(T = 4) {\n    return readout(leak(flatten(image([1, 4, 4]))))\n}\n')
    with pytest.raises(SpecError, match="leaves the allowed folders"):
        load_graph(spec)


def test_cli_check_prints_the_golden_message_and_exits_2():
    from typer.testing import CliRunner

    from eidsl.cli import app
    name = "ratio_does_not_divide"
    result = CliRunner().invoke(app, ["check", str(BAD / f"{name}.ei"), str(ROOT / "specs" / "mlp.ei")])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert normalise(result.stderr) == (BAD / f"{name}.expected").read_text()
    assert "mlp.ei: ok" in result.stdout          # the other file is still checked
